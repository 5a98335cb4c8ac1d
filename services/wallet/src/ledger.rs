//! The wallet's operations on the coin ledger: each takes a connection inside a write
//! transaction, applies the domain's rules and the store's SQL, and either does all of
//! its writes or (by returning an error, which rolls the transaction back) none.
//!
//! Every operation on a user starts by locking the user's row, so concurrent operations
//! on one user are serialized and every check sees the state the change applies to.

use std::collections::HashMap;
use std::future::Future;

use ovation_proto::reasons;
use ovation_store::batch::distinct;
use ovation_store::db::Conn;
use ovation_store::{Db, StoreError};
use ovation_types::{Coins, ResourceId, Text, UnixMillis};

use crate::domain::{
    AgeRule, ClawbackOrderState, DebitPlan, DebitRefusal, DebitTerms, HoldState, Limits, PriorUse,
    PurchaseState, Reason, Refusal, Spender, Usage, VerifiedAge, attribute, check_caps,
    clawback_id, plan_debits, split_reversal,
};
use crate::store::{
    self, AccountRow, AttributionStep, BalanceMove, ClawbackOrderRow, DebitRow, EntryRefs,
    EntryRow, HoldRow, PurchaseRow, RefundRow, ReversalMarks,
};

/// Why an operation did not happen. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    /// The user has an account already.
    #[error("user {0} already has an account")]
    AccountExists(String),
    /// An operation id (or account) reused with other parameters.
    #[error("{0}")]
    Conflict(String),
    /// A provider's purchase (an App Store transaction) was credited already.
    #[error("{0}")]
    AlreadyRedeemed(String),
    /// A request field's value is refused on what it says (an App Store transaction not
    /// signed by Apple, or not this app's): INVALID_ARGUMENT naming the field.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// A dependency (the catalog) cannot answer now: retry.
    #[error("{0}")]
    Unavailable(String),
    /// The thing exists but is in the wrong state for this.
    #[error("{message}")]
    WrongState {
        reason: &'static str,
        message: String,
    },
    /// Rows changed under a lock that should have kept them still: a bug, reported as
    /// INTERNAL. Nothing was written.
    #[error("{0}")]
    Inconsistent(String),
}

impl WalletError {
    /// True when a debit lost a race to a concurrent twin: another transaction committed
    /// a debit under the same operation id between this one's check and its insert (the
    /// primary key refused it). Run again, the check sees the twin and answers it.
    pub fn lost_to_a_twin(&self) -> bool {
        matches!(self, WalletError::Store(e) if e.is_unique_violation())
    }
}

pub(crate) fn not_found(kind: &'static str, id: &str) -> WalletError {
    WalletError::NotFound {
        kind,
        id: id.to_owned(),
    }
}

/// A repeat of an operation id is answered with what it did, but only if it asks the
/// same; otherwise the id was reused for something else.
fn replay<T>(existing: T, same: bool, op: &ResourceId, what: &str) -> Result<T, WalletError> {
    if same {
        Ok(existing)
    } else {
        Err(other_terms(op, what))
    }
}

/// An operation id reused for another `what` (ALREADY_EXISTS).
fn other_terms(op: &ResourceId, what: &str) -> WalletError {
    WalletError::Conflict(format!(
        "operation {op} was already used for a different {what}"
    ))
}

/// An operation id taken by another kind of operation (they share one namespace).
fn taken(op: &ResourceId, by: &str) -> WalletError {
    WalletError::Conflict(format!("operation id {op} is taken by a {by}"))
}

/// Takes the user's row for the rest of the transaction (see the module doc) and reads it.
pub(crate) async fn lock_account(
    conn: &mut Conn,
    user: &str,
    now: UnixMillis,
) -> Result<AccountRow, WalletError> {
    store::lock_account(conn, user, now)
        .await?
        .ok_or_else(|| not_found("account", user))
}

/// Locks the user's account, refusing accounts the age rule excludes and accounts in
/// debt: the preconditions of every spend. Spends come from the gift saga, a service
/// call that carries no user claim, so the rule is judged by the age recorded on the
/// account (see [`record_verified_age`]).
async fn lock_spender(
    conn: &mut Conn,
    user: &ResourceId,
    age_rule: AgeRule,
    now: UnixMillis,
) -> Result<AccountRow, WalletError> {
    let user = user.as_str();
    let account = lock_account(conn, user, now).await?;
    age_rule.check(user, account.age)?;
    if account.balance.debt > 0 {
        return Err(Refusal::InDebt {
            user: user.to_owned(),
            debt: account.balance.debt,
        }
        .into());
    }
    Ok(account)
}

/// Refuses `coins` more spending if it would exceed the user's caps in force now.
async fn check_spend_caps(
    conn: &mut Conn,
    user: &ResourceId,
    coins: Coins,
    now: UnixMillis,
) -> Result<(), WalletError> {
    let caps = store::get_limits(conn, user.as_str())
        .await?
        .at(now)
        .effective;
    if caps.daily_spend.is_none() && caps.monthly_spend.is_none() {
        return Ok(());
    }
    let usage = store::usage(conn, user.as_str(), now, false).await?;
    check_caps(
        caps.daily_spend,
        caps.monthly_spend,
        usage,
        coins.get(),
        false,
    )?;
    Ok(())
}

/// Records on the user's account the age their token vouches for (the identity
/// provider's or gateway's `age_verified_adult` claim); `None` if there is no account.
/// Its own transaction, so a verified minor stays recorded even though the request that
/// carried the claim is then refused.
pub async fn record_verified_age(
    conn: &mut Conn,
    user: &ResourceId,
    age: VerifiedAge,
    now: UnixMillis,
) -> Result<Option<AccountRow>, WalletError> {
    let Some(account) = store::lock_account(conn, user.as_str(), now).await? else {
        return Ok(None);
    };
    let verified = account.age.with_verified(age);
    if verified == account.age {
        return Ok(Some(account));
    }
    store::set_age(conn, user.as_str(), verified).await?;
    Ok(Some(AccountRow {
        age: verified,
        ..account
    }))
}

/// A debit request, already validated.
#[derive(Clone, Debug)]
pub struct DebitCmd {
    pub operation_id: ResourceId,
    pub user_id: ResourceId,
    pub coins: Coins,
    pub saga_id: Option<ResourceId>,
    pub note: Text,
    /// The actor of record: the caller.
    pub actor: String,
}

impl DebitCmd {
    fn terms(&self) -> DebitTerms {
        DebitTerms {
            user_id: self.user_id.clone(),
            coins: self.coins,
            saga_id: self.saga_id.clone(),
            note: self.note.clone(),
        }
    }
}

/// Spends coins, at most once per operation id: a batch of one.
pub async fn debit(
    conn: &mut Conn,
    cmd: &DebitCmd,
    age_rule: AgeRule,
    now: UnixMillis,
) -> Result<DebitRow, WalletError> {
    debit_batch(conn, std::slice::from_ref(cmd), age_rule, now)
        .await?
        .pop()
        .unwrap_or_else(|| {
            Err(WalletError::Inconsistent(
                "a batch of one gave no answer".into(),
            ))
        })
}

/// Spends coins for many operations in the caller's one write transaction, each item
/// applied or refused on its own as [`debit`] would (the rules are
/// [`crate::domain::plan_debits`]'s), at most once per operation id. Set-based: a fixed
/// number of statements whatever the batch's size (users locked, operation ids looked up,
/// caps read, then debits, entries, postings and balances written, each in one statement),
/// plus two usage reads per user with a spend cap in force.
///
/// `Err` fails the whole batch (the caller rolls back); a twin committed concurrently
/// under one of the operation ids fails it with [`WalletError::lost_to_a_twin`], and the
/// batch run again answers that item as a repeat.
pub async fn debit_batch(
    conn: &mut Conn,
    cmds: &[DebitCmd],
    age_rule: AgeRule,
    now: UnixMillis,
) -> Result<Vec<Result<DebitRow, WalletError>>, WalletError> {
    // 1. The users' rows, locked in user order (see store::lock_accounts). Every later
    //    read is under these locks, so a twin under the same operation id for the same
    //    user has either committed (and is seen) or waits for this transaction.
    let users = distinct(cmds.iter().map(|c| c.user_id.as_str()));
    let accounts = store::lock_accounts(conn, &users).await?;
    // 2. The operation ids already used.
    let used = store::used_operation_ids(
        conn,
        &distinct(cmds.iter().map(|c| c.operation_id.as_str())),
    )
    .await?;
    let mut stored: HashMap<ResourceId, DebitRow> = HashMap::new();
    let mut prior: HashMap<ResourceId, PriorUse> = HashMap::new();
    for row in used.debits {
        prior.insert(
            row.operation_id.clone(),
            PriorUse::Debit {
                terms: DebitTerms {
                    user_id: row.user_id.clone(),
                    coins: row.coins,
                    saga_id: row.saga_id.clone(),
                    note: row.note.clone(),
                },
                from_hold: row.from_hold,
            },
        );
        stored.insert(row.operation_id.clone(), row);
    }
    for id in used.holds_and_refunds {
        prior.entry(id).or_insert(PriorUse::HoldOrRefund);
    }
    // 3. Spend caps; what was spent is read only for users with a cap in force (rare).
    let locked: Vec<&str> = accounts.iter().map(|a| a.user_id.as_str()).collect();
    let limits: HashMap<ResourceId, Limits> =
        store::limits_of(conn, &locked).await?.into_iter().collect();
    let mut spenders = HashMap::with_capacity(accounts.len());
    for account in &accounts {
        let caps = limits
            .get(&account.user_id)
            .map(|l| l.at(now).effective)
            .unwrap_or_default();
        let capped = caps.daily_spend.is_some() || caps.monthly_spend.is_some();
        let spent = if capped {
            store::usage(conn, account.user_id.as_str(), now, false).await?
        } else {
            Usage::default()
        };
        spenders.insert(
            account.user_id.clone(),
            Spender {
                age: account.age,
                balance: account.balance,
                entry_count: account.entry_count,
                daily_cap: caps.daily_spend,
                monthly_cap: caps.monthly_spend,
                spent,
            },
        );
    }
    // 4. The plan, pure.
    let items: Vec<(ResourceId, DebitTerms)> = cmds
        .iter()
        .map(|c| (c.operation_id.clone(), c.terms()))
        .collect();
    let plans = plan_debits(&items, &prior, &spenders, age_rule);
    // 5. Its answers and its rows.
    let mut answers: Vec<Result<DebitRow, WalletError>> = Vec::with_capacity(cmds.len());
    let (mut debits, mut entries) = (Vec::new(), Vec::new());
    // Per user: (posted, entries) after its last posted item.
    let mut after: HashMap<&ResourceId, (i64, i64)> = HashMap::new();
    for (cmd, plan) in cmds.iter().zip(plans) {
        let answer = match plan {
            DebitPlan::Post {
                posted_after,
                available_after,
                user_seq,
            } => {
                let row = DebitRow {
                    operation_id: cmd.operation_id.clone(),
                    user_id: cmd.user_id.clone(),
                    coins: cmd.coins,
                    saga_id: cmd.saga_id.clone(),
                    note: cmd.note.clone(),
                    from_hold: false,
                    available_after,
                    refunded_coins: 0,
                    refund_operation_id: None,
                    created_at: now,
                    refunded_at: None,
                };
                entries.push(EntryRow {
                    entry_id: uuid::Uuid::now_v7().to_string(),
                    user_id: cmd.user_id.clone(),
                    user_seq,
                    reason: Reason::GiftDebit,
                    delta: -cmd.coins.get(),
                    posted_after,
                    purchase_id: None,
                    operation_id: Some(cmd.operation_id.clone()),
                    saga_id: cmd.saga_id.clone(),
                    actor: cmd.actor.clone(),
                    note: cmd.note.as_str().to_owned(),
                    created_at: now,
                });
                after.insert(&cmd.user_id, (posted_after, user_seq));
                debits.push(row.clone());
                Ok(row)
            }
            DebitPlan::Stored => stored
                .get(&cmd.operation_id)
                .cloned()
                .ok_or_else(|| WalletError::Inconsistent("a stored debit went missing".into())),
            DebitPlan::SameAs(earlier) => match answers.get(earlier) {
                Some(Ok(row)) => Ok(row.clone()),
                _ => Err(WalletError::Inconsistent(
                    "a repeated item's twin was not posted".into(),
                )),
            },
            DebitPlan::Refused(refusal) => Err(match refusal {
                DebitRefusal::NoAccount => not_found("account", cmd.user_id.as_str()),
                DebitRefusal::Refused(r) => r.into(),
                DebitRefusal::OtherTerms => other_terms(&cmd.operation_id, "debit"),
                DebitRefusal::TakenByHoldOrRefund => taken(&cmd.operation_id, "hold or refund"),
            }),
        };
        answers.push(answer);
    }
    if debits.is_empty() {
        return Ok(answers);
    }
    // 6. The writes. Debits first: their primary key is where a concurrent twin shows.
    store::insert_debits(conn, &debits).await?;
    store::insert_entries(conn, &entries).await?;
    let moves: Vec<BalanceMove<'_>> = accounts
        .iter()
        .filter_map(|a| {
            after
                .get(&a.user_id)
                .map(|&(posted_after, entries_after)| BalanceMove {
                    user_id: a.user_id.as_str(),
                    posted_before: a.balance.posted,
                    posted_after,
                    entries_before: a.entry_count,
                    entries_after,
                })
        })
        .collect();
    if !store::move_balances(conn, &moves, now).await? {
        return Err(WalletError::Inconsistent(
            "an account changed under its lock during a batch of debits".into(),
        ));
    }
    Ok(answers)
}

/// Runs [`debit_batch`] in a write transaction of its own and commits it; once more if
/// it lost a race to a concurrent twin.
pub async fn debit_batch_committed(
    db: &Db,
    cmds: &[DebitCmd],
    age_rule: AgeRule,
) -> Result<Vec<Result<DebitRow, WalletError>>, WalletError> {
    once_more_if_a_twin_won(|| async {
        let mut tx = db.begin_write().await?;
        match debit_batch(&mut tx, cmds, age_rule, UnixMillis::now()).await {
            Ok(answers) => {
                tx.commit().await.map_err(StoreError::from)?;
                Ok(answers)
            }
            Err(e) => {
                // At once, so a retry does not wait for this attempt's row locks. A failed
                // rollback leaves the connection to the pool, which discards it; the
                // batch's own error is the one to report.
                if let Err(rollback) = tx.rollback().await {
                    tracing::warn!(error = %rollback, "rolling back a batch of debits failed");
                }
                Err(e)
            }
        }
    })
    .await
}

/// Runs `attempt` (a whole transaction that debits) and, if it lost a race to a
/// concurrent twin ([`WalletError::lost_to_a_twin`]), once more: the second run sees the
/// twin. Once is enough: the twin has committed by the time the first run fails.
pub async fn once_more_if_a_twin_won<T, F, Fut>(mut attempt: F) -> Result<T, WalletError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, WalletError>>,
{
    match attempt().await {
        Err(e) if e.lost_to_a_twin() => attempt().await,
        done => done,
    }
}

#[derive(Clone, Debug)]
pub struct RefundCmd {
    pub operation_id: ResourceId,
    pub debit_operation_id: ResourceId,
    /// `None`: the whole debit.
    pub coins: Option<Coins>,
    pub note: Text,
    /// The actor of record: the caller.
    pub actor: String,
}

/// Gives back (part of) a debit: once per debit, at most its amount.
pub async fn refund(
    conn: &mut Conn,
    cmd: &RefundCmd,
    now: UnixMillis,
) -> Result<RefundRow, WalletError> {
    if let Some(existing) = store::get_refund(conn, cmd.operation_id.as_str()).await? {
        let same = existing.debit_operation_id == cmd.debit_operation_id
            && cmd.coins.is_none_or(|c| c == existing.coins)
            && existing.note == cmd.note;
        return replay(existing, same, &cmd.operation_id, "refund");
    }
    if store::operation_id_taken(conn, cmd.operation_id.as_str()).await? {
        return Err(taken(&cmd.operation_id, "debit or hold"));
    }
    let debit = store::get_debit(conn, cmd.debit_operation_id.as_str())
        .await?
        .ok_or_else(|| not_found("debit", cmd.debit_operation_id.as_str()))?;
    let coins = cmd.coins.unwrap_or(debit.coins);
    if coins > debit.coins {
        return Err(WalletError::WrongState {
            reason: reasons::wallet::REFUND_EXCEEDS_DEBIT,
            message: format!(
                "cannot refund {} coins of a {}-coin debit",
                coins.get(),
                debit.coins.get()
            ),
        });
    }
    let account = lock_account(conn, debit.user_id.as_str(), now).await?;
    if !store::mark_refunded(
        conn,
        debit.operation_id.as_str(),
        coins.get(),
        cmd.operation_id.as_str(),
        now,
    )
    .await?
    {
        return Err(WalletError::WrongState {
            reason: reasons::wallet::ALREADY_REFUNDED,
            message: format!(
                "debit {} was already refunded by operation {}",
                debit.operation_id,
                debit
                    .refund_operation_id
                    .as_ref()
                    .map_or("", ResourceId::as_str)
            ),
        });
    }
    let refs = EntryRefs {
        operation_id: Some(&cmd.operation_id),
        saga_id: debit.saga_id.as_ref(),
        actor: &cmd.actor,
        note: cmd.note.as_str(),
        ..Default::default()
    };
    let posted = store::post(
        conn,
        debit.user_id.as_str(),
        Reason::GiftRefund,
        coins.get(),
        0,
        &refs,
        now,
    )
    .await?
    .ok_or_else(|| WalletError::WrongState {
        reason: reasons::wallet::BALANCE_LIMIT,
        message: "the refund would take the balance beyond its limit".into(),
    })?;
    // Coins coming back to a user in debt pay the debt first, as a purchase's do: a gift
    // reversal returning coins that a chargeback already counted as debt gives nothing back.
    let settled = settle_debt_from(
        conn,
        debit.user_id.as_str(),
        account.balance.debt,
        coins.get(),
        &refs,
        now,
    )
    .await?;
    let available_after = settled.map_or(posted.available_after, |s| s.available_after);
    let row = RefundRow {
        operation_id: cmd.operation_id.clone(),
        debit_operation_id: debit.operation_id,
        user_id: debit.user_id,
        coins,
        note: cmd.note.clone(),
        available_after,
        created_at: now,
    };
    store::insert_refund(conn, &row).await?;
    Ok(row)
}

#[derive(Clone, Debug)]
pub struct ReserveCmd {
    pub operation_id: ResourceId,
    pub user_id: ResourceId,
    pub coins: Coins,
    /// How long the hold lives: `HOLD_TTL_MS_MIN..=HOLD_TTL_MS_MAX`.
    pub ttl_ms: i64,
    pub saga_id: Option<ResourceId>,
    pub note: Text,
}

/// Reserves coins until an expiry; the same refusals as a debit.
pub async fn reserve(
    conn: &mut Conn,
    cmd: &ReserveCmd,
    age_rule: AgeRule,
    now: UnixMillis,
) -> Result<HoldRow, WalletError> {
    if let Some(existing) = store::get_hold(conn, cmd.operation_id.as_str()).await? {
        let same = existing.user_id == cmd.user_id
            && existing.coins == cmd.coins
            && existing.saga_id == cmd.saga_id
            && existing.note == cmd.note;
        return replay(existing, same, &cmd.operation_id, "hold");
    }
    if store::operation_id_taken(conn, cmd.operation_id.as_str()).await? {
        return Err(taken(&cmd.operation_id, "debit or refund"));
    }
    let account = lock_spender(conn, &cmd.user_id, age_rule, now).await?;
    check_spend_caps(conn, &cmd.user_id, cmd.coins, now).await?;
    if !store::adjust_held(conn, cmd.user_id.as_str(), cmd.coins.get()).await? {
        return Err(Refusal::InsufficientCoins {
            available: account.balance.available(),
            wanted: cmd.coins.get(),
        }
        .into());
    }
    let hold = HoldRow {
        operation_id: cmd.operation_id.clone(),
        user_id: cmd.user_id.clone(),
        coins: cmd.coins,
        state: HoldState::Active,
        captured_coins: 0,
        saga_id: cmd.saga_id.clone(),
        note: cmd.note.clone(),
        expire_at: UnixMillis(now.0.saturating_add(cmd.ttl_ms)),
        created_at: now,
        updated_at: now,
    };
    store::insert_hold(conn, &hold).await?;
    Ok(hold)
}

/// A hold, in whatever state it is.
pub async fn hold(conn: &mut Conn, operation_id: &ResourceId) -> Result<HoldRow, WalletError> {
    store::get_hold(conn, operation_id.as_str())
        .await?
        .ok_or_else(|| not_found("hold", operation_id.as_str()))
}

/// Reads a hold for a change: a hold in a final state (captured, released, expired) is
/// returned as read, since nothing can change it any more; an active one is read again
/// after its user's row is locked, because a capture, release or expiry may have
/// committed while this transaction waited for the lock (READ COMMITTED on PostgreSQL).
async fn hold_for_change(
    conn: &mut Conn,
    operation_id: &str,
    now: UnixMillis,
) -> Result<HoldRow, WalletError> {
    let hold = store::get_hold(conn, operation_id)
        .await?
        .ok_or_else(|| not_found("hold", operation_id))?;
    if hold.state != HoldState::Active {
        return Ok(hold);
    }
    store::lock_account(conn, hold.user_id.as_str(), now).await?;
    store::get_hold(conn, operation_id)
        .await?
        .ok_or_else(|| not_found("hold", operation_id))
}

/// A hold left ACTIVE under its user's lock and yet not finished by the conditional
/// update: only possible if a writer changed it without that lock. Nothing is written.
fn hold_changed(operation_id: &str) -> WalletError {
    WalletError::WrongState {
        reason: reasons::wallet::HOLD_CHANGED,
        message: format!("hold {operation_id} changed during the request; read it and retry"),
    }
}

/// Capturing a hold, validated.
#[derive(Clone, Debug)]
pub struct CaptureCmd {
    /// The hold's operation id, which the debit it becomes keeps.
    pub operation_id: ResourceId,
    /// `None`: the whole hold.
    pub coins: Option<Coins>,
    /// The actor of record: the caller.
    pub actor: String,
}

/// A retry of the capture that happened: the same answer, if it asked the same.
async fn captured_before(
    conn: &mut Conn,
    hold: HoldRow,
    coins: Option<Coins>,
) -> Result<(HoldRow, DebitRow), WalletError> {
    let operation_id = hold.operation_id.as_str();
    let debit = store::get_debit(conn, operation_id)
        .await?
        .ok_or_else(|| not_found("debit", operation_id))?;
    if coins.is_none_or(|c| c.get() == hold.captured_coins) {
        return Ok((hold, debit));
    }
    Err(WalletError::WrongState {
        reason: reasons::wallet::HOLD_CAPTURED,
        message: format!(
            "hold {operation_id} was already captured for {} coins",
            hold.captured_coins
        ),
    })
}

/// Spends an active hold (all or `coins` of it) and releases the rest.
pub async fn capture(
    conn: &mut Conn,
    cmd: &CaptureCmd,
    now: UnixMillis,
) -> Result<(HoldRow, DebitRow), WalletError> {
    let (id, coins) = (&cmd.operation_id, cmd.coins);
    let operation_id = id.as_str();
    let hold = hold_for_change(conn, operation_id, now).await?;
    if hold.state == HoldState::Captured {
        return captured_before(conn, hold, coins).await;
    }
    if hold.state != HoldState::Active {
        return Err(WalletError::WrongState {
            reason: reasons::wallet::HOLD_NOT_ACTIVE,
            message: format!("hold {operation_id} is {:?}, not active", hold.state),
        });
    }
    if hold.expire_at <= now {
        expire(conn, &hold, now).await?;
        return Err(WalletError::WrongState {
            reason: reasons::wallet::HOLD_EXPIRED,
            message: format!("hold {operation_id} expired"),
        });
    }
    let captured = coins.unwrap_or(hold.coins);
    if captured > hold.coins {
        return Err(WalletError::WrongState {
            reason: reasons::wallet::CAPTURE_EXCEEDS_HOLD,
            message: format!(
                "cannot capture {} coins of a {}-coin hold",
                captured.get(),
                hold.coins.get()
            ),
        });
    }
    // The hold's move out of ACTIVE decides who acts on it: only then is anything posted.
    if !store::finish_hold(conn, operation_id, HoldState::Captured, captured.get(), now).await? {
        return Err(hold_changed(operation_id));
    }
    let refs = EntryRefs {
        operation_id: Some(id),
        saga_id: hold.saga_id.as_ref(),
        actor: &cmd.actor,
        note: hold.note.as_str(),
        ..Default::default()
    };
    // One statement spends `captured` and releases the whole hold.
    let posted = store::post(
        conn,
        hold.user_id.as_str(),
        Reason::HoldCapture,
        captured.get(),
        hold.coins.get(),
        &refs,
        now,
    )
    .await?
    .ok_or_else(|| WalletError::WrongState {
        reason: reasons::wallet::HOLD_INCONSISTENT,
        message: format!("hold {operation_id} is not covered by the account"),
    })?;
    let debit = DebitRow {
        operation_id: id.clone(),
        user_id: hold.user_id.clone(),
        coins: captured,
        saga_id: hold.saga_id.clone(),
        note: hold.note.clone(),
        from_hold: true,
        available_after: posted.available_after,
        refunded_coins: 0,
        refund_operation_id: None,
        created_at: now,
        refunded_at: None,
    };
    store::insert_debit(conn, &debit).await?;
    let hold = HoldRow {
        state: HoldState::Captured,
        captured_coins: captured.get(),
        updated_at: now,
        ..hold
    };
    Ok((hold, debit))
}

/// Cancels an active hold. Released or expired holds come back as they are; a captured
/// one is refused (HOLD_CAPTURED), whenever the capture happened.
pub async fn release(
    conn: &mut Conn,
    operation_id: &ResourceId,
    now: UnixMillis,
) -> Result<HoldRow, WalletError> {
    let operation_id = operation_id.as_str();
    let hold = hold_for_change(conn, operation_id, now).await?;
    match hold.state {
        HoldState::Released | HoldState::Expired => return Ok(hold),
        HoldState::Captured => {
            return Err(WalletError::WrongState {
                reason: reasons::wallet::HOLD_CAPTURED,
                message: format!("hold {operation_id} was captured; it cannot be released"),
            });
        }
        HoldState::Active => {}
    }
    let state = if hold.expire_at <= now {
        HoldState::Expired
    } else {
        HoldState::Released
    };
    if !store::finish_hold(conn, operation_id, state, 0, now).await? {
        return Err(hold_changed(operation_id));
    }
    if !store::adjust_held(conn, hold.user_id.as_str(), -hold.coins.get()).await? {
        return Err(WalletError::WrongState {
            reason: reasons::wallet::HOLD_INCONSISTENT,
            message: format!("hold {operation_id} is not covered by the account"),
        });
    }
    Ok(HoldRow {
        state,
        updated_at: now,
        ..hold
    })
}

async fn expire(conn: &mut Conn, hold: &HoldRow, now: UnixMillis) -> Result<(), WalletError> {
    if store::finish_hold(conn, hold.operation_id.as_str(), HoldState::Expired, 0, now).await? {
        store::adjust_held(conn, hold.user_id.as_str(), -hold.coins.get()).await?;
    }
    Ok(())
}

/// Expires up to `limit` holds past their time; returns how many.
pub async fn expire_holds(
    conn: &mut Conn,
    now: UnixMillis,
    limit: i64,
) -> Result<usize, WalletError> {
    let holds = store::expired_holds(conn, now, limit).await?;
    // One pass locks several users' rows: all at once, in the database's user order, as a
    // batch of debits does, so two passes (every replica's worker, an operator's) or a
    // pass and a batch cannot lock A then B against B then A (a deadlock PostgreSQL broke
    // by failing one, seen in concurrent_mixes).
    store::lock_accounts(conn, &distinct(holds.iter().map(|h| h.user_id.as_str()))).await?;
    for hold in &holds {
        expire(conn, hold, now).await?;
    }
    Ok(holds.len())
}

/// Credits a charged purchase: package coins, promotion bonus, then settles any debt.
/// Runs once per purchase: the PENDING → COMPLETED transition is conditional.
pub async fn complete_purchase(
    conn: &mut Conn,
    purchase: &PurchaseRow,
    provider_reference: &str,
    now: UnixMillis,
) -> Result<bool, WalletError> {
    let user = purchase.user_id.as_str();
    let account = lock_account(conn, user, now).await?;
    if !store::settle_purchase(
        conn,
        purchase.purchase_id.as_str(),
        PurchaseState::Completed,
        provider_reference,
        "",
        now,
    )
    .await?
    {
        return Ok(false);
    }
    let refs = EntryRefs {
        purchase_id: Some(&purchase.purchase_id),
        actor: user,
        ..Default::default()
    };
    let limit = || WalletError::WrongState {
        reason: reasons::wallet::BALANCE_LIMIT,
        message: "the purchase would take the balance beyond its limit".into(),
    };
    let credit = store::post(
        conn,
        user,
        Reason::Purchase,
        purchase.package_coins.get(),
        0,
        &refs,
        now,
    )
    .await?
    .ok_or_else(limit)?;
    // Where a reversal's attribution walk starts.
    store::set_credited_seq(conn, purchase.purchase_id.as_str(), credit.seq).await?;
    if purchase.bonus_coins > 0 {
        let bonus = EntryRefs {
            note: &purchase.promotion_id,
            ..refs.clone()
        };
        store::post(
            conn,
            user,
            Reason::PromotionBonus,
            purchase.bonus_coins,
            0,
            &bonus,
            now,
        )
        .await?
        .ok_or_else(limit)?;
    }
    let credited = purchase.package_coins.get() + purchase.bonus_coins;
    settle_debt_from(conn, user, account.balance.debt, credited, &refs, now).await?;
    Ok(true)
}

/// Settles the user's coin debt (from reversed purchases) out of coins just credited to
/// them (a purchase, or a refund): min(debt, credited) in one DEBT_SETTLEMENT entry. The
/// user's row is locked by the caller. Returns the entry if anything was settled.
async fn settle_debt_from(
    conn: &mut Conn,
    user: &str,
    debt: i64,
    credited: i64,
    refs: &EntryRefs<'_>,
    now: UnixMillis,
) -> Result<Option<store::Posted>, WalletError> {
    let (settled, _) = crate::domain::settle_debt(debt, credited);
    if settled == 0 {
        return Ok(None);
    }
    let note = format!("settles debt from a reversed purchase ({settled} of {debt} coins)");
    let settle = EntryRefs {
        note: &note,
        ..refs.clone()
    };
    let posted = store::post(conn, user, Reason::DebtSettlement, settled, 0, &settle, now)
        .await?
        .ok_or_else(|| WalletError::WrongState {
            reason: reasons::wallet::DEBT_SETTLEMENT,
            message: "debt settlement found too few coins".into(),
        })?;
    store::adjust_debt(conn, user, -settled).await?;
    Ok(Some(posted))
}

/// A purchase, in whatever state it is.
pub async fn purchase(
    conn: &mut Conn,
    purchase_id: &ResourceId,
) -> Result<PurchaseRow, WalletError> {
    store::get_purchase(conn, purchase_id.as_str())
        .await?
        .ok_or_else(|| not_found("purchase", purchase_id.as_str()))
}

/// An operator's reversal of a purchase (a chargeback), validated.
#[derive(Clone, Debug)]
pub struct ReverseCmd {
    pub purchase_id: ResourceId,
    /// The actor of record: the caller.
    pub actor: String,
    pub reason: Text,
}

/// Reverses a completed purchase: claws back what is available, the rest becomes debt.
/// At most once per purchase, however many reversals race for it.
pub async fn reverse_purchase(
    conn: &mut Conn,
    cmd: &ReverseCmd,
    now: UnixMillis,
) -> Result<PurchaseRow, WalletError> {
    let (purchase_id, actor, reason) = (
        cmd.purchase_id.as_str(),
        cmd.actor.as_str(),
        cmd.reason.as_str(),
    );
    let buyer = store::get_purchase(conn, purchase_id)
        .await?
        .ok_or_else(|| not_found("purchase", purchase_id))?
        .user_id;
    let account = lock_account(conn, buyer.as_str(), now).await?;
    // Read again under the buyer's lock: a reversal that committed while this one waited
    // for the lock is seen here (READ COMMITTED takes a new snapshot per statement).
    let purchase = store::get_purchase(conn, purchase_id)
        .await?
        .ok_or_else(|| not_found("purchase", purchase_id))?;
    let not_completed = |state: PurchaseState| WalletError::WrongState {
        reason: reasons::wallet::PURCHASE_NOT_COMPLETED,
        message: format!(
            "purchase {purchase_id} is {state:?}; only completed purchases can be reversed"
        ),
    };
    if purchase.state != PurchaseState::Completed {
        return Err(not_completed(purchase.state));
    }
    let credited = purchase.package_coins.get() + purchase.bonus_coins;
    let (clawed, debt) = split_reversal(credited, account.balance.available());
    let walk_from_seq = purchase.credited_seq.ok_or_else(|| {
        WalletError::Inconsistent(format!(
            "completed purchase {purchase_id} has no credit entry recorded"
        ))
    })?;
    let marks = ReversalMarks {
        clawed_back: clawed,
        debt,
        walk_from_seq,
        // The buyer's last entry before this reversal's own.
        walk_end_seq: account.entry_count,
    };
    // COMPLETED → REVERSED decides which reversal acts: only that one moves coins.
    if !store::mark_reversed(conn, purchase_id, actor, reason, marks, now).await? {
        return Err(not_completed(PurchaseState::Reversed));
    }
    if clawed > 0 {
        let refs = EntryRefs {
            purchase_id: Some(&cmd.purchase_id),
            actor,
            note: reason,
            ..Default::default()
        };
        store::post(
            conn,
            purchase.user_id.as_str(),
            Reason::PurchaseReversal,
            clawed,
            0,
            &refs,
            now,
        )
        .await?
        .ok_or_else(|| WalletError::WrongState {
            reason: reasons::wallet::REVERSAL_RACE,
            message: "the balance changed during the reversal; retry".into(),
        })?;
    }
    if debt > 0 {
        store::adjust_debt(conn, purchase.user_id.as_str(), debt).await?;
        // Under the buyer's lock, still: as far as one transaction's budget goes.
        attribute_reversals(conn, &purchase.user_id, now).await?;
    }
    store::get_purchase(conn, purchase_id)
        .await?
        .ok_or_else(|| not_found("purchase", purchase_id))
}

/// Most debits one transaction attributes coins to, all of a buyer's reversals together;
/// a reversal that reaches more goes on in the worker's next transaction.
pub const ATTRIBUTION_DEBITS_MAX: i64 = 500;

/// Attributes the debt coins of the buyer's reversed purchases to the debits that spent
/// them, and orders payout to claw back what gifts minted. The caller holds the buyer's
/// lock (every debit, refund, capture and reversal of the buyer takes it too, so nothing
/// moves under the walk).
///
/// The rule (docs/economy.md): a reversal's spent coins — its `debt_coins`, what the
/// balance did not cover — were spent by the buyer's debits posted after the purchase's
/// credit and before the reversal. Walk those debits (direct debits and hold captures) in
/// the order the buyer's ledger recorded them (`journal_entries.user_seq`; exact where
/// milliseconds tie); each debit's attributable coins are its coins − refunded coins −
/// coins earlier reversals attributed to it; attribute min(left, attributable) to each in
/// turn until nothing is left or the walk ends (coins still held, or spent before a later
/// purchase refilled the balance, reach no debit: `attributed_coins ≤ debt_coins`). A debit
/// with a saga id (a gift) gets a clawback order for its coins
/// ("purchase:<purchase_id>:<operation_id>", PENDING); other debits (hold captures,
/// direct debits without a saga) take their coins but make no order. A buyer's reversals
/// attribute in the order they were made (reversal time, then purchase id): a later one
/// waits until every earlier one has finished its walk, so the outcome does not depend
/// on how the walks were cut into transactions.
///
/// Bounded: at most [`ATTRIBUTION_DEBITS_MAX`] debits per call; a walk not finished keeps
/// its place (`attribution_cursor_seq`) and stays pending for the worker.
pub async fn attribute_reversals(
    conn: &mut Conn,
    buyer: &ResourceId,
    now: UnixMillis,
) -> Result<(), WalletError> {
    let user = buyer.as_str();
    let mut budget = ATTRIBUTION_DEBITS_MAX;
    for purchase in store::pending_attributions(conn, user).await? {
        let walk = &purchase.attribution;
        let mut step = AttributionStep {
            cursor_seq: walk.cursor_seq,
            left_coins: walk.left_coins,
            pending: walk.left_coins > 0,
            attributed: 0,
            orders: 0,
        };
        if step.pending {
            // One read of up to the whole budget: the debits come back in ledger order,
            // each with attributable coins, so the walk is done if it came back short.
            let walked =
                store::attribution_walk(conn, user, walk.cursor_seq, walk.end_seq, budget).await?;
            let walked_count = walked.len() as i64;
            let (taken, left) = attribute(walk.left_coins, &walked);
            if !store::add_attributed(conn, &taken).await? {
                return Err(WalletError::Inconsistent(
                    "a debit changed under its buyer's lock during attribution".into(),
                ));
            }
            let orders: Vec<ClawbackOrderRow> = taken
                .iter()
                .filter(|t| t.gift)
                .map(|t| ClawbackOrderRow {
                    clawback_id: clawback_id(&purchase.purchase_id, &t.operation_id),
                    purchase_id: purchase.purchase_id.clone(),
                    operation_id: t.operation_id.clone(),
                    user_id: buyer.clone(),
                    coins: t.coins,
                    reason: purchase.reversal_reason.clone(),
                    state: ClawbackOrderState::Pending,
                    diamonds: 0,
                    applied_coins: 0,
                    attempts: 0,
                    last_error: String::new(),
                    next_attempt_at: now,
                    created_at: now,
                    done_at: None,
                })
                .collect();
            store::insert_clawback_orders(conn, &orders).await?;
            step = AttributionStep {
                cursor_seq: walked.last().map_or(walk.cursor_seq, |d| d.seq),
                left_coins: left,
                pending: left > 0 && walked_count == budget,
                attributed: walk.left_coins - left,
                orders: orders.len() as i64,
            };
            budget -= walked_count;
        }
        store::advance_attribution(conn, purchase.purchase_id.as_str(), step).await?;
        if step.pending || budget == 0 {
            // The budget ran out: later reversals wait for this one (or for the next
            // transaction).
            break;
        }
    }
    Ok(())
}
