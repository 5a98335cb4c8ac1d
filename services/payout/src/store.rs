//! All of the payout service's SQL, in one place. Every function takes a connection, so
//! the caller decides the transaction; the SQL text is portable (PostgreSQL and SQLite).
//!
//! The ledger is three tables: `ledger_accounts` (the chart of accounts), `journal_entries`
//! and `postings` (append-only). `creator_balances` keeps each creator's pending,
//! available, held, lifetime-earned and paid-out diamonds next to it (and their clawback
//! debt, which is outside the ledger), updated in the same transaction as the
//! postings by conditional updates (`… WHERE available_diamonds >= $n`): that update is
//! what stops an overdraft under concurrency (I2), and CHECK constraints repeat it. System
//! accounts keep no balance row (it would be one hot row every credit writes); their
//! balances are the sums of their postings.
//!
//! Rows are ordered by (created_at_ms, id); pages continue after the last row's pair.

use std::collections::BTreeMap;

use ovation_store::StoreError;
use ovation_store::batch;
use ovation_store::db::Conn;
use ovation_store::sqlx::{self, Row, any::AnyRow};
use ovation_types::{Bps, Coins, Diamonds, Money, Name, ResourceId, Text, TimeWindow, UnixMillis};

use crate::domain::{
    AccountKind, AccountReference, Balance, BalanceMove, BalanceView,
    CREATOR_LIFETIME_DIAMONDS_MAX, Clawback, ClawbackCause, ClawbackId, ClawbackRequest, Creator,
    Credit, CreditRequest, CreditSums, JournalEntry, Maturity, Payout, PayoutAccount,
    PayoutDecision, PayoutRate, PayoutReview, PayoutState, PendingCredit, Review, Verification,
};

// ---- creators ----------------------------------------------------------------------

const CREATOR_COLUMNS: &str = "creator_id, display_name, state, suspended_by, suspend_reason, \
     suspended_at_ms, account_reference, holder_name, verification, reviewed_by, review_reason, \
     reviewed_at_ms, account_set_at_ms, account_version, account_set_by, created_at_ms, \
     updated_at_ms";

/// Inserts a new creator with its three ledger accounts and a zero balance; `false` if
/// the id is taken.
pub async fn insert_creator(conn: &mut Conn, creator: &Creator) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO creators (creator_id, display_name, state, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, 'ACTIVE', $3, $4) ON CONFLICT (creator_id) DO NOTHING",
    )
    .bind(creator.id.as_str())
    .bind(creator.display_name.as_str())
    .bind(creator.created_at.0)
    .bind(creator.updated_at.0)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(false);
    }
    for (prefix, kind) in [
        ("creator", AccountKind::Creator),
        ("creator_held", AccountKind::CreatorHeld),
        ("creator_pending", AccountKind::CreatorPending),
    ] {
        sqlx::query(
            "INSERT INTO ledger_accounts (account_id, kind, creator_id) VALUES ($1, $2, $3)",
        )
        .bind(format!("{prefix}:{}", creator.id))
        .bind(kind.as_str())
        .bind(creator.id.as_str())
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(
        "INSERT INTO creator_balances (creator_id, pending_diamonds, available_diamonds, \
         held_diamonds, lifetime_earned_diamonds, paid_out_diamonds, debt_diamonds, \
         clawed_back_diamonds) VALUES ($1, 0, 0, 0, 0, 0, 0, 0)",
    )
    .bind(creator.id.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// Takes the creator's row lock for the rest of the transaction (PostgreSQL; SQLite's
/// write transactions hold the database lock already), so a read-modify-write of the
/// creator cannot lose a concurrent change, and whatever depends on the creator's state
/// (a credit, a payout request, handing a payout to the provider, settling one) is
/// ordered against a suspension. Every write transaction that takes it takes it first
/// (before the creator's balance or payout rows), so they cannot deadlock; one that needs
/// several creators (a batch of credits) takes them all at once, in key order
/// ([`lock_creators`]). `false` if there is no such creator.
pub async fn lock_creator(conn: &mut Conn, id: &ResourceId) -> Result<bool, StoreError> {
    let done =
        sqlx::query("UPDATE creators SET updated_at_ms = updated_at_ms WHERE creator_id = $1")
            .bind(id.as_str())
            .execute(&mut *conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn get_creator(conn: &mut Conn, id: &ResourceId) -> Result<Option<Creator>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CREATOR_COLUMNS} FROM creators WHERE creator_id = $1"
    )))
    .bind(id.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(creator_from_row).transpose()
}

/// Writes every mutable field of `creator`.
pub async fn update_creator(conn: &mut Conn, creator: &Creator) -> Result<(), StoreError> {
    let suspension = creator.suspension.as_ref();
    let account = creator.account.as_ref();
    let review = account.and_then(|a| a.verification.review());
    sqlx::query(
        "UPDATE creators SET display_name = $2, state = $3, suspended_by = $4, \
         suspend_reason = $5, suspended_at_ms = $6, account_reference = $7, holder_name = $8, \
         verification = $9, reviewed_by = $10, review_reason = $11, reviewed_at_ms = $12, \
         account_set_at_ms = $13, updated_at_ms = $14, account_version = $15, \
         account_set_by = $16 WHERE creator_id = $1",
    )
    .bind(creator.id.as_str())
    .bind(creator.display_name.as_str())
    .bind(if suspension.is_some() {
        "SUSPENDED"
    } else {
        "ACTIVE"
    })
    .bind(suspension.map(|s| s.actor.as_str().to_owned()))
    .bind(suspension.map(|s| s.reason.as_str().to_owned()))
    .bind(suspension.map(|s| s.at.0))
    .bind(account.map(|a| a.reference.as_str().to_owned()))
    .bind(account.map(|a| a.holder_name.as_str().to_owned()))
    .bind(account.map(|a| a.verification.as_str()))
    .bind(review.map(|r| r.actor.as_str().to_owned()))
    .bind(review.map(|r| r.reason.as_str().to_owned()))
    .bind(review.map(|r| r.at.0))
    .bind(account.map(|a| a.set_at.0))
    .bind(creator.updated_at.0)
    .bind(account.map_or(0, |a| a.version))
    .bind(account.map(|a| a.set_by.clone()))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn creator_from_row(row: &AnyRow) -> Result<Creator, StoreError> {
    let review = |actor: Option<String>, reason: Option<String>, at: Option<i64>| match (
        actor, reason, at,
    ) {
        (Some(actor), Some(reason), Some(at)) => Ok(Review {
            actor: stored(Name::parse(&actor))?,
            reason: stored(Text::parse(&reason))?,
            at: UnixMillis(at),
        }),
        _ => stored(Err("a review or suspension is incomplete".into())),
    };
    let state: String = row.try_get("state")?;
    let suspension = match state.as_str() {
        "ACTIVE" => None,
        "SUSPENDED" => Some(review(
            row.try_get("suspended_by")?,
            row.try_get("suspend_reason")?,
            row.try_get("suspended_at_ms")?,
        )?),
        other => return stored(Err(format!("unknown creator state {other}"))),
    };
    let reference: Option<String> = row.try_get("account_reference")?;
    let account = match reference {
        None => None,
        Some(reference) => {
            let holder: Option<String> = row.try_get("holder_name")?;
            let verification: Option<String> = row.try_get("verification")?;
            let set_at: Option<i64> = row.try_get("account_set_at_ms")?;
            let version: i64 = row.try_get("account_version")?;
            let set_by: Option<String> = row.try_get("account_set_by")?;
            let reviewed = || {
                review(
                    row.try_get("reviewed_by")?,
                    row.try_get("review_reason")?,
                    row.try_get("reviewed_at_ms")?,
                )
            };
            let verification = match verification.as_deref() {
                Some("PENDING") => Verification::Pending,
                Some("VERIFIED") => Verification::Verified(reviewed()?),
                Some("REJECTED") => Verification::Rejected(reviewed()?),
                other => return stored(Err(format!("unknown verification {other:?}"))),
            };
            Some(PayoutAccount {
                reference: stored(AccountReference::parse(&reference))?,
                holder_name: stored(Name::parse(holder.as_deref().unwrap_or("")))?,
                verification,
                set_at: UnixMillis(stored(set_at.ok_or_else(|| "no account_set_at_ms".into()))?),
                version: stored(if version >= 1 {
                    Ok(version)
                } else {
                    Err(format!("account version {version}"))
                })?,
                set_by: stored(set_by.ok_or_else(|| "no account_set_by".into()))?,
            })
        }
    };
    Ok(Creator {
        id: stored(ResourceId::parse(&row.try_get::<String, _>("creator_id")?))?,
        display_name: stored(Name::parse(&row.try_get::<String, _>("display_name")?))?,
        suspension,
        account,
        created_at: UnixMillis(row.try_get("created_at_ms")?),
        updated_at: UnixMillis(row.try_get("updated_at_ms")?),
    })
}

/// One line of a creator's audit journal: what was done to the creator, by whom, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatorEvent {
    pub creator_id: ResourceId,
    /// REGISTER, SET_PAYOUT_ACCOUNT, VERIFY, REJECT, SUSPEND, REINSTATE.
    pub action: &'static str,
    /// The authenticated caller's subject (never a name the request supplied).
    pub actor: String,
    /// The authenticated caller (subject, and the gateway acting for it, if any).
    pub caller: String,
    pub reason: String,
    /// What the action was about (e.g. the account reference reviewed).
    pub detail: String,
    pub at: UnixMillis,
}

pub async fn insert_creator_event(conn: &mut Conn, event: &CreatorEvent) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO creator_journal (event_id, creator_id, action, actor, caller, reason, \
         detail, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(uuid::Uuid::now_v7().simple().to_string())
    .bind(event.creator_id.as_str())
    .bind(event.action)
    .bind(event.actor.as_str())
    .bind(event.caller.as_str())
    .bind(event.reason.as_str())
    .bind(event.detail.as_str())
    .bind(event.at.0)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A creator's journal, oldest first, at most `limit` lines.
pub async fn creator_events(
    conn: &mut Conn,
    creator_id: &ResourceId,
    limit: i64,
) -> Result<Vec<CreatorEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT creator_id, action, actor, caller, reason, detail, created_at_ms \
         FROM creator_journal WHERE creator_id = $1 ORDER BY created_at_ms, event_id LIMIT $2",
    )
    .bind(creator_id.as_str())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            let action: String = row.try_get("action")?;
            Ok(CreatorEvent {
                creator_id: stored(ResourceId::parse(&row.try_get::<String, _>("creator_id")?))?,
                action: stored(
                    [
                        "REGISTER",
                        "SET_PAYOUT_ACCOUNT",
                        "VERIFY",
                        "REJECT",
                        "SUSPEND",
                        "REINSTATE",
                    ]
                    .into_iter()
                    .find(|a| *a == action)
                    .ok_or_else(|| format!("unknown journal action {action}")),
                )?,
                actor: row.try_get("actor")?,
                caller: row.try_get("caller")?,
                reason: row.try_get("reason")?,
                detail: row.try_get("detail")?,
                at: UnixMillis(row.try_get("created_at_ms")?),
            })
        })
        .collect()
}

// ---- balances and the journal -------------------------------------------------------

const BALANCE_COLUMNS: &str = "b.pending_diamonds, b.available_diamonds, b.held_diamonds, \
     b.lifetime_earned_diamonds, b.paid_out_diamonds, b.debt_diamonds, b.clawed_back_diamonds";

fn balance_from_row(row: &AnyRow) -> Result<Balance, StoreError> {
    Ok(Balance {
        pending: row.try_get("pending_diamonds")?,
        available: row.try_get("available_diamonds")?,
        held: row.try_get("held_diamonds")?,
        lifetime_earned: row.try_get("lifetime_earned_diamonds")?,
        paid_out: row.try_get("paid_out_diamonds")?,
        debt: row.try_get("debt_diamonds")?,
        clawed_back: row.try_get("clawed_back_diamonds")?,
    })
}

/// A creator's balance row as stored (due credits not yet matured count as pending).
pub async fn get_balance(conn: &mut Conn, id: &ResourceId) -> Result<Option<Balance>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {BALANCE_COLUMNS} FROM creator_balances b WHERE b.creator_id = $1"
    )))
    .bind(id.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(balance_from_row).transpose()
}

/// A creator's balance as of `now` under `maturity`, in one statement (one snapshot):
/// the row, with the pending diamonds of credits due by then counted as available, and
/// when the next pending credit matures.
pub async fn balance_view(
    conn: &mut Conn,
    id: &ResourceId,
    maturity: Maturity,
    now: UnixMillis,
) -> Result<Option<BalanceView>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {BALANCE_COLUMNS}, \
         (SELECT CAST(COALESCE(SUM(c.pending_diamonds), 0) AS BIGINT) FROM credits c \
            WHERE c.creator_id = b.creator_id AND c.pending_diamonds > 0 \
            AND c.created_at_ms <= $2) AS due, \
         (SELECT MIN(c.created_at_ms) FROM credits c \
            WHERE c.creator_id = b.creator_id AND c.pending_diamonds > 0 \
            AND c.created_at_ms > $2) AS next_created \
         FROM creator_balances b WHERE b.creator_id = $1"
    )))
    .bind(id.as_str())
    .bind(maturity.due_cutoff(now).0)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| {
        let next_created: Option<i64> = row.try_get("next_created")?;
        Ok(BalanceView {
            balance: balance_from_row(&row)?.with_matured(row.try_get("due")?),
            next_maturity: next_created.map(|t| maturity.matures_at(UnixMillis(t))),
            as_of: now,
        })
    })
    .transpose()
}

/// Marks every credit of `creator` created at or before `cutoff` matured (pending 0);
/// the pending diamonds that matured. The caller holds the creator's lock and posts the
/// MATURE entry for them.
pub async fn mature_credits(
    conn: &mut Conn,
    creator: &ResourceId,
    cutoff: UnixMillis,
) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(pending_diamonds), 0) AS BIGINT) FROM credits \
         WHERE creator_id = $1 AND pending_diamonds > 0 AND created_at_ms <= $2",
    )
    .bind(creator.as_str())
    .bind(cutoff.0)
    .fetch_one(&mut *conn)
    .await?;
    let due: i64 = row.try_get(0)?;
    if due > 0 {
        sqlx::query(
            "UPDATE credits SET pending_diamonds = 0 \
             WHERE creator_id = $1 AND pending_diamonds > 0 AND created_at_ms <= $2",
        )
        .bind(creator.as_str())
        .bind(cutoff.0)
        .execute(&mut *conn)
        .await?;
    }
    Ok(due)
}

/// Up to `limit` of `creator`'s credits with pending diamonds, latest first, other than
/// `except`, before (created_at_ms, operation_id) `before`.
pub async fn pending_credits(
    conn: &mut Conn,
    creator: &ResourceId,
    except: &ResourceId,
    before: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<(PendingCredit, i64)>, StoreError> {
    let (at, id) = before.unwrap_or((i64::MAX, String::new()));
    let rows = sqlx::query(
        "SELECT operation_id, pending_diamonds, created_at_ms FROM credits \
         WHERE creator_id = $1 AND pending_diamonds > 0 AND operation_id <> $2 \
         AND (created_at_ms < $3 OR (created_at_ms = $3 AND operation_id < $4)) \
         ORDER BY created_at_ms DESC, operation_id DESC LIMIT $5",
    )
    .bind(creator.as_str())
    .bind(except.as_str())
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                PendingCredit {
                    operation_id: stored(ResourceId::parse(
                        &row.try_get::<String, _>("operation_id")?,
                    ))?,
                    pending: row.try_get("pending_diamonds")?,
                },
                row.try_get("created_at_ms")?,
            ))
        })
        .collect()
}

/// Takes pending diamonds from credits (`takes`: distinct operation ids, each > 0) in one
/// statement, guarded by what each still has; [`Posted::Refused`] if any had less.
pub async fn take_pending(
    conn: &mut Conn,
    takes: &[(ResourceId, i64)],
) -> Result<Posted, StoreError> {
    if takes.is_empty() {
        return Ok(Posted::Yes);
    }
    let mut done = 0;
    // Bounded statements: at most this many credits per UPDATE.
    for chunk in takes.chunks(256) {
        let rows = batch::KeyedRows {
            key_column: "operation_id",
            first: 1,
            rows: chunk.len(),
            per_row: 2,
        };
        let take = rows.case(1);
        let sql = format!(
            "UPDATE credits SET pending_diamonds = pending_diamonds - {take} \
             WHERE operation_id IN ({}) AND pending_diamonds >= {take}",
            rows.keys()
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (id, diamonds) in chunk {
            query = query.bind(id.as_str()).bind(*diamonds);
        }
        done += query.execute(&mut *conn).await?.rows_affected();
    }
    Ok(if done == takes.len() as u64 {
        Posted::Yes
    } else {
        Posted::Refused
    })
}

/// Moves `creator`'s debt by `debt` and their clawed-back total by `clawed_back`,
/// guarded so neither goes negative; [`Posted::Refused`] otherwise.
pub async fn move_debt(
    conn: &mut Conn,
    creator: &ResourceId,
    debt: i64,
    clawed_back: i64,
) -> Result<Posted, StoreError> {
    let done = sqlx::query(
        "UPDATE creator_balances SET debt_diamonds = debt_diamonds + $2, \
         clawed_back_diamonds = clawed_back_diamonds + $3 \
         WHERE creator_id = $1 AND debt_diamonds + $2 >= 0 AND clawed_back_diamonds + $3 >= 0",
    )
    .bind(creator.as_str())
    .bind(debt)
    .bind(clawed_back)
    .execute(&mut *conn)
    .await?;
    Ok(if done.rows_affected() == 1 {
        Posted::Yes
    } else {
        Posted::Refused
    })
}

/// Whether an entry was posted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Posted {
    Yes,
    /// The creator's balance does not allow it (the conditional update matched no row):
    /// not enough available (hold) or held (capture, release) diamonds, or the lifetime
    /// limit (credit). Nothing was written; the caller must roll back anything else.
    Refused,
}

/// Posts `entry`: moves the creator's balances with a conditional update (the I2 guard),
/// then appends the entry and its postings.
pub async fn post_entry(conn: &mut Conn, entry: &JournalEntry) -> Result<Posted, StoreError> {
    if !entry.is_balanced() {
        return Err(StoreError::Database(sqlx::Error::Protocol(format!(
            "journal entry {} does not balance",
            entry.id
        ))));
    }
    let Ok(m) = BalanceMove::of(entry) else {
        return Err(StoreError::Database(sqlx::Error::Protocol(format!(
            "journal entry {} posts to another creator's account",
            entry.id
        ))));
    };
    let Ok(lifetime) = m.lifetime() else {
        return Ok(Posted::Refused);
    };
    // One conditional update for every kind of entry: each balance moves by what the
    // entry posts to it, lifetime earnings by their sum, and no balance may go below 0
    // nor lifetime past the limit (I2: the guard that stops concurrent overdrafts).
    let moved = sqlx::query(
        "UPDATE creator_balances SET pending_diamonds = pending_diamonds + $2, \
         available_diamonds = available_diamonds + $3, held_diamonds = held_diamonds + $4, \
         paid_out_diamonds = paid_out_diamonds + $5, \
         lifetime_earned_diamonds = lifetime_earned_diamonds + $6 \
         WHERE creator_id = $1 AND pending_diamonds + $2 >= 0 \
         AND available_diamonds + $3 >= 0 AND held_diamonds + $4 >= 0 \
         AND lifetime_earned_diamonds <= $7 - $6",
    )
    .bind(entry.creator_id.as_str())
    .bind(m.pending)
    .bind(m.available)
    .bind(m.held)
    .bind(m.paid_out)
    .bind(lifetime)
    .bind(CREATOR_LIFETIME_DIAMONDS_MAX)
    .execute(&mut *conn)
    .await?;
    if moved.rows_affected() != 1 {
        return Ok(Posted::Refused);
    }
    sqlx::query(
        "INSERT INTO journal_entries (entry_id, kind, creator_id, reference, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(entry.id.as_str())
    .bind(entry.kind.as_str())
    .bind(entry.creator_id.as_str())
    .bind(entry.reference.as_str())
    .bind(UnixMillis::now().0)
    .execute(&mut *conn)
    .await?;
    for posting in &entry.postings {
        sqlx::query(
            "INSERT INTO postings (entry_id, account_id, amount_diamonds) VALUES ($1, $2, $3)",
        )
        .bind(entry.id.as_str())
        .bind(posting.account.id())
        .bind(posting.amount)
        .execute(&mut *conn)
        .await?;
    }
    Ok(Posted::Yes)
}

/// Ledger-wide sums, read in one statement (one snapshot on both databases).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerSummary {
    /// (kind, account count, sum of postings), one per kind, in [`AccountKind::ALL`] order.
    pub kinds: Vec<(AccountKind, i64, i64)>,
    pub total: i64,
    pub unbalanced_entries: i64,
    pub negative_balances: i64,
    pub entries: i64,
    pub credits: i64,
    pub credited_diamonds: i64,
    /// Creator balance rows that disagree with the sums of their accounts' postings.
    pub balance_mismatches: i64,
    /// Creator balance rows whose lifetime differs from pending + available + held +
    /// paid out.
    pub lifetime_mismatches: i64,
    pub clawbacks: i64,
    pub clawed_back_diamonds: i64,
    /// Creator debt outstanding.
    pub debt_diamonds: i64,
    /// Payouts PAID, or HELD and sent, whose creator was in debt when they were sent.
    pub payouts_sent_in_debt: i64,
}

/// The balance of every account kind (sum of its postings), in [`AccountKind::ALL`]
/// order. One scan of the postings.
pub async fn ledger_totals(conn: &mut Conn) -> Result<Vec<(AccountKind, i64)>, StoreError> {
    let rows = sqlx::query(
        "SELECT a.kind, CAST(COALESCE(SUM(p.amount_diamonds), 0) AS BIGINT) FROM postings p \
         JOIN ledger_accounts a ON a.account_id = p.account_id GROUP BY a.kind",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut totals: Vec<(AccountKind, i64)> = AccountKind::ALL.iter().map(|&k| (k, 0)).collect();
    for row in rows {
        let kind: String = row.try_get(0)?;
        let sum: i64 = row.try_get(1)?;
        let slot = totals
            .iter_mut()
            .find(|(k, _)| k.as_str() == kind)
            .ok_or_else(|| corrupt_kind(&kind))?;
        slot.1 = sum;
    }
    Ok(totals)
}

fn corrupt_kind(kind: &str) -> StoreError {
    StoreError::Database(sqlx::Error::Decode(
        format!("stored ledger account kind {kind:?} is unknown").into(),
    ))
}

pub async fn ledger_summary(conn: &mut Conn) -> Result<LedgerSummary, StoreError> {
    let mut columns = Vec::new();
    for kind in AccountKind::ALL {
        let k = kind.as_str();
        let alias = k.to_lowercase();
        columns.push(format!(
            "(SELECT COUNT(*) FROM ledger_accounts WHERE kind = '{k}') AS n_{alias}"
        ));
        columns.push(format!(
            "(SELECT CAST(COALESCE(SUM(p.amount_diamonds), 0) AS BIGINT) FROM postings p \
             JOIN ledger_accounts a ON a.account_id = p.account_id WHERE a.kind = '{k}') AS s_{alias}"
        ));
    }
    let sql = format!(
        "SELECT {}, \
         (SELECT CAST(COALESCE(SUM(amount_diamonds), 0) AS BIGINT) FROM postings) AS total, \
         (SELECT COUNT(*) FROM (SELECT entry_id FROM postings GROUP BY entry_id \
            HAVING SUM(amount_diamonds) <> 0) u) AS unbalanced, \
         (SELECT COUNT(*) FROM (SELECT p.account_id FROM postings p \
            JOIN ledger_accounts a ON a.account_id = p.account_id \
            WHERE a.kind IN ('CREATOR', 'CREATOR_HELD', 'CREATOR_PENDING') \
            GROUP BY p.account_id HAVING SUM(p.amount_diamonds) < 0) n) \
         + (SELECT COUNT(*) FROM creator_balances WHERE pending_diamonds < 0 \
            OR available_diamonds < 0 OR held_diamonds < 0 OR debt_diamonds < 0) AS negative, \
         (SELECT COUNT(*) FROM journal_entries) AS entries, \
         (SELECT COUNT(*) FROM credits) AS credits, \
         (SELECT CAST(COALESCE(SUM(diamonds), 0) AS BIGINT) FROM credits) AS credited, \
         (SELECT COUNT(*) FROM creator_balances b WHERE \
            b.available_diamonds <> (SELECT CAST(COALESCE(SUM(p.amount_diamonds), 0) AS BIGINT) \
              FROM postings p WHERE p.account_id = 'creator:' || b.creator_id) \
            OR b.held_diamonds <> (SELECT CAST(COALESCE(SUM(p.amount_diamonds), 0) AS BIGINT) \
              FROM postings p WHERE p.account_id = 'creator_held:' || b.creator_id) \
            OR b.pending_diamonds <> (SELECT CAST(COALESCE(SUM(p.amount_diamonds), 0) AS BIGINT) \
              FROM postings p WHERE p.account_id = 'creator_pending:' || b.creator_id)) \
            AS mismatches, \
         (SELECT COUNT(*) FROM creator_balances WHERE lifetime_earned_diamonds \
            <> pending_diamonds + available_diamonds + held_diamonds + paid_out_diamonds) \
            AS lifetime_mismatches, \
         (SELECT COUNT(*) FROM clawbacks) AS clawbacks, \
         (SELECT CAST(COALESCE(SUM(diamonds), 0) AS BIGINT) FROM clawbacks) AS clawed_back, \
         (SELECT CAST(COALESCE(SUM(debt_diamonds), 0) AS BIGINT) FROM creator_balances) AS debt, \
         (SELECT COUNT(*) FROM payouts WHERE sent_in_debt = 1 \
            AND (state = 'PAID' OR (state = 'HELD' AND sent_at_ms IS NOT NULL))) AS sent_in_debt",
        columns.join(", ")
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut *conn)
        .await?;
    let mut kinds = Vec::new();
    for kind in AccountKind::ALL {
        let alias = kind.as_str().to_lowercase();
        kinds.push((
            kind,
            row.try_get::<i64, _>(format!("n_{alias}").as_str())?,
            row.try_get::<i64, _>(format!("s_{alias}").as_str())?,
        ));
    }
    Ok(LedgerSummary {
        kinds,
        total: row.try_get("total")?,
        unbalanced_entries: row.try_get("unbalanced")?,
        negative_balances: row.try_get("negative")?,
        entries: row.try_get("entries")?,
        credits: row.try_get("credits")?,
        credited_diamonds: row.try_get("credited")?,
        balance_mismatches: row.try_get("mismatches")?,
        lifetime_mismatches: row.try_get("lifetime_mismatches")?,
        clawbacks: row.try_get("clawbacks")?,
        clawed_back_diamonds: row.try_get("clawed_back")?,
        debt_diamonds: row.try_get("debt")?,
        payouts_sent_in_debt: row.try_get("sent_in_debt")?,
    })
}

// ---- credits -----------------------------------------------------------------------

const CREDIT_COLUMNS: &str = "operation_id, creator_id, coins, creator_share_bps, diamonds, \
     sender_user_id, stream_id, gift_id, gift_version, created_at_ms, pending_diamonds, \
     debt_settled_diamonds";

/// A creator's credits, newest first, before (created_at_ms, operation_id) `before`,
/// optionally one stream's.
pub async fn list_earnings(
    conn: &mut Conn,
    creator_id: &ResourceId,
    stream_id: Option<&ResourceId>,
    before: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<Credit>, StoreError> {
    // First page: every row is before i64::MAX, whatever the id.
    let (at, id) = before.unwrap_or((i64::MAX, String::new()));
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CREDIT_COLUMNS} FROM credits WHERE creator_id = $1 \
         AND ($2 = '' OR stream_id = $2) \
         AND (created_at_ms < $3 OR (created_at_ms = $3 AND operation_id < $4)) \
         ORDER BY created_at_ms DESC, operation_id DESC LIMIT $5"
    )))
    .bind(creator_id.as_str())
    .bind(stream_id.map(ResourceId::as_str).unwrap_or(""))
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(credit_from_row).collect()
}

/// Every credit, oldest first, after (created_at_ms, operation_id) `after`.
pub async fn list_credits(
    conn: &mut Conn,
    after: Option<(i64, String)>,
    window: TimeWindow,
    limit: i64,
) -> Result<Vec<Credit>, StoreError> {
    let (at, id) = after.unwrap_or((i64::MIN, String::new()));
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CREDIT_COLUMNS} FROM credits \
         WHERE (created_at_ms > $1 OR (created_at_ms = $1 AND operation_id > $2)) \
         AND created_at_ms >= $3 AND created_at_ms < $4 \
         ORDER BY created_at_ms, operation_id LIMIT $5"
    )))
    .bind(at)
    .bind(id)
    .bind(window.start_ms())
    .bind(window.end_ms())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(credit_from_row).collect()
}

// ---- credits in batches -------------------------------------------------------------
//
// A batch of credits is a few statements whatever its size: each function below is one
// multi-row statement over the whole batch (`ovation_store::batch`). Batches are bounded
// (`BATCH_ITEMS_MAX`), so every statement stays far below the engines' parameter limits.

/// Locks the rows of creators `ids` (distinct) for the rest of the transaction, in one
/// statement and in key order (so two batches sharing creators cannot deadlock), and
/// reads them as locked: the registered ones, by id. The lock is the one
/// [`lock_creator`] takes, so a batch of credits serializes with suspensions, payout
/// requests and the worker's hand-over of each creator it credits.
pub async fn lock_creators(
    conn: &mut Conn,
    ids: &[&ResourceId],
) -> Result<Vec<Creator>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {CREATOR_COLUMNS} FROM creators WHERE creator_id IN ({}) \
         ORDER BY creator_id{}",
        batch::placeholders(1, ids.len()),
        batch::row_lock(conn)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in ids {
        query = query.bind(id.as_str());
    }
    let rows = query.fetch_all(&mut *conn).await?;
    rows.iter().map(creator_from_row).collect()
}

/// The lifetime earnings and debt of creators `ids` (those with a balance row), by id.
pub async fn lifetime_and_debt(
    conn: &mut Conn,
    ids: &[&ResourceId],
) -> Result<Vec<(ResourceId, i64, i64)>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT creator_id, lifetime_earned_diamonds, debt_diamonds FROM creator_balances \
         WHERE creator_id IN ({})",
        batch::placeholders(1, ids.len())
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in ids {
        query = query.bind(id.as_str());
    }
    let rows = query.fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|row| {
            Ok((
                stored(ResourceId::parse(&row.try_get::<String, _>("creator_id")?))?,
                row.try_get("lifetime_earned_diamonds")?,
                row.try_get("debt_diamonds")?,
            ))
        })
        .collect()
}

/// The credits recorded under operation ids `ids` (distinct; the ones that exist).
pub async fn get_credits(conn: &mut Conn, ids: &[&ResourceId]) -> Result<Vec<Credit>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {CREDIT_COLUMNS} FROM credits WHERE operation_id IN ({})",
        batch::placeholders(1, ids.len())
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in ids {
        query = query.bind(id.as_str());
    }
    let rows = query.fetch_all(&mut *conn).await?;
    rows.iter().map(credit_from_row).collect()
}

/// Records `credits` (distinct operation ids) in one statement, in operation-id order
/// (two batches inserting the same ids then queue instead of deadlocking); the operation
/// ids recorded. One missing was recorded already, by a concurrent transaction that
/// committed first (PostgreSQL waits for it, then skips the row).
pub async fn insert_credits(
    conn: &mut Conn,
    credits: &[&Credit],
) -> Result<Vec<String>, StoreError> {
    if credits.is_empty() {
        return Ok(Vec::new());
    }
    let mut sorted = credits.to_vec();
    sorted.sort_by(|a, b| a.request.operation_id.cmp(&b.request.operation_id));
    let sql = format!(
        "INSERT INTO credits (operation_id, creator_id, coins, creator_share_bps, diamonds, \
         sender_user_id, stream_id, gift_id, gift_version, created_at_ms, pending_diamonds, \
         debt_settled_diamonds) VALUES {} \
         ON CONFLICT (operation_id) DO NOTHING RETURNING operation_id",
        batch::rows(1, sorted.len(), 12)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for credit in sorted {
        let r = &credit.request;
        query = query
            .bind(r.operation_id.as_str())
            .bind(r.creator_id.as_str())
            .bind(r.coins.get())
            .bind(i64::from(r.share.get()))
            .bind(credit.diamonds)
            .bind(optional_id(&r.sender_user_id))
            .bind(optional_id(&r.stream_id))
            .bind(optional_id(&r.gift_id))
            .bind(r.gift_version)
            .bind(credit.created_at.0)
            .bind(credit.pending)
            .bind(credit.debt_settled);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
}

/// Appends credit entries (balanced; distinct ids) and their postings: two statements,
/// whatever the number of entries. The balances move separately
/// ([`add_credited_diamonds`]), once per creator.
pub async fn insert_credit_entries(
    conn: &mut Conn,
    entries: &[JournalEntry],
    at: UnixMillis,
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    if let Some(entry) = entries.iter().find(|e| !e.is_balanced()) {
        return Err(StoreError::Database(sqlx::Error::Protocol(format!(
            "journal entry {} does not balance",
            entry.id
        ))));
    }
    let sql = format!(
        "INSERT INTO journal_entries (entry_id, kind, creator_id, reference, created_at_ms) \
         VALUES {}",
        batch::rows(1, entries.len(), 5)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for entry in entries {
        query = query
            .bind(entry.id.as_str())
            .bind(entry.kind.as_str())
            .bind(entry.creator_id.as_str())
            .bind(entry.reference.as_str())
            .bind(at.0);
    }
    query.execute(&mut *conn).await?;
    let postings: Vec<(&str, String, i64)> = entries
        .iter()
        .flat_map(|e| {
            e.postings
                .iter()
                .map(|p| (e.id.as_str(), p.account.id(), p.amount))
        })
        .collect();
    let sql = format!(
        "INSERT INTO postings (entry_id, account_id, amount_diamonds) VALUES {}",
        batch::rows(1, postings.len(), 3)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (entry, account, amount) in postings {
        query = query.bind(entry).bind(account).bind(amount);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

/// Adds each creator's new credits (`sums`) to their balances: the pending diamonds to
/// pending and lifetime, the debt-settling ones off their debt. One UPDATE for every
/// creator of a batch, guarded by the lifetime limit and the debt. [`Posted::Refused`] if
/// any creator's row did not move (the limit, the debt, or no balance row): the caller
/// must roll back.
pub async fn add_credited_diamonds(
    conn: &mut Conn,
    sums: &BTreeMap<ResourceId, CreditSums>,
) -> Result<Posted, StoreError> {
    if sums.is_empty() {
        return Ok(Posted::Yes);
    }
    // $1 is the limit; then (creator, pending, debt settled) triples from $2.
    let rows = batch::KeyedRows {
        key_column: "creator_id",
        first: 2,
        rows: sums.len(),
        per_row: 3,
    };
    let pending = rows.case(1);
    let settled = rows.case(2);
    let sql = format!(
        "UPDATE creator_balances SET pending_diamonds = pending_diamonds + {pending}, \
         lifetime_earned_diamonds = lifetime_earned_diamonds + {pending}, \
         debt_diamonds = debt_diamonds - {settled} \
         WHERE creator_id IN ({}) AND lifetime_earned_diamonds <= $1 - {pending} \
         AND debt_diamonds >= {settled}",
        rows.keys()
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(CREATOR_LIFETIME_DIAMONDS_MAX);
    for (creator, sum) in sums {
        query = query
            .bind(creator.as_str())
            .bind(sum.pending)
            .bind(sum.debt_settled);
    }
    let moved = query.execute(&mut *conn).await?;
    Ok(if moved.rows_affected() == sums.len() as u64 {
        Posted::Yes
    } else {
        Posted::Refused
    })
}

fn credit_from_row(row: &AnyRow) -> Result<Credit, StoreError> {
    let optional = |column: &str| -> Result<Option<ResourceId>, StoreError> {
        let raw: String = row.try_get(column)?;
        if raw.is_empty() {
            Ok(None)
        } else {
            Ok(Some(stored(ResourceId::parse(&raw))?))
        }
    };
    Ok(Credit {
        request: CreditRequest {
            operation_id: stored(ResourceId::parse(
                &row.try_get::<String, _>("operation_id")?,
            ))?,
            creator_id: stored(ResourceId::parse(&row.try_get::<String, _>("creator_id")?))?,
            coins: stored(Coins::parse(row.try_get("coins")?))?,
            share: stored(Bps::parse(narrow(row.try_get("creator_share_bps")?)?))?,
            sender_user_id: optional("sender_user_id")?,
            stream_id: optional("stream_id")?,
            gift_id: optional("gift_id")?,
            gift_version: row.try_get("gift_version")?,
        },
        diamonds: row.try_get("diamonds")?,
        debt_settled: row.try_get("debt_settled_diamonds")?,
        pending: row.try_get("pending_diamonds")?,
        created_at: UnixMillis(row.try_get("created_at_ms")?),
    })
}

// ---- clawbacks ---------------------------------------------------------------------

const CLAWBACK_COLUMNS: &str = "clawback_id, operation_id, creator_id, cause, cause_id, \
     coins_requested, coins, creator_share_bps, diamonds, from_pending_diamonds, \
     from_available_diamonds, to_debt_diamonds, reason, created_at_ms";

/// Records a clawback; `false` if its id is recorded already (by a concurrent
/// transaction that committed first, on PostgreSQL).
pub async fn insert_clawback(conn: &mut Conn, c: &Clawback) -> Result<bool, StoreError> {
    let r = &c.request;
    let done = sqlx::query(
        "INSERT INTO clawbacks (clawback_id, operation_id, creator_id, cause, cause_id, \
         coins_requested, coins, creator_share_bps, diamonds, from_pending_diamonds, \
         from_available_diamonds, to_debt_diamonds, reason, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (clawback_id) DO NOTHING",
    )
    .bind(r.clawback_id.as_str())
    .bind(r.operation_id.as_str())
    .bind(c.creator_id.as_str())
    .bind(r.cause.as_str())
    .bind(r.cause_id.as_str())
    .bind(r.coins.get())
    .bind(c.coins)
    .bind(i64::from(c.share.get()))
    .bind(c.diamonds)
    .bind(c.from_pending)
    .bind(c.from_available)
    .bind(c.to_debt)
    .bind(r.reason.as_str())
    .bind(c.created_at.0)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn get_clawback(
    conn: &mut Conn,
    id: &ClawbackId,
) -> Result<Option<Clawback>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CLAWBACK_COLUMNS} FROM clawbacks WHERE clawback_id = $1"
    )))
    .bind(id.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(clawback_from_row).transpose()
}

/// Coins of credit `operation_id` that clawbacks took so far.
pub async fn clawed_coins(conn: &mut Conn, operation_id: &ResourceId) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(coins), 0) AS BIGINT) FROM clawbacks WHERE operation_id = $1",
    )
    .bind(operation_id.as_str())
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get(0)?)
}

/// The clawbacks of credits `ids` (distinct), oldest first.
pub async fn clawbacks_of_credits(
    conn: &mut Conn,
    ids: &[&ResourceId],
) -> Result<Vec<Clawback>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {CLAWBACK_COLUMNS} FROM clawbacks WHERE operation_id IN ({}) \
         ORDER BY created_at_ms, clawback_id",
        batch::placeholders(1, ids.len())
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in ids {
        query = query.bind(id.as_str());
    }
    let rows = query.fetch_all(&mut *conn).await?;
    rows.iter().map(clawback_from_row).collect()
}

/// Clawbacks, oldest first, after (created_at_ms, clawback_id) `after`; one creator's
/// when given.
pub async fn list_clawbacks(
    conn: &mut Conn,
    creator_id: Option<&ResourceId>,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<Clawback>, StoreError> {
    let (at, id) = after.unwrap_or((i64::MIN, String::new()));
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CLAWBACK_COLUMNS} FROM clawbacks WHERE ($1 = '' OR creator_id = $1) \
         AND (created_at_ms > $2 OR (created_at_ms = $2 AND clawback_id > $3)) \
         ORDER BY created_at_ms, clawback_id LIMIT $4"
    )))
    .bind(creator_id.map(ResourceId::as_str).unwrap_or(""))
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(clawback_from_row).collect()
}

fn clawback_from_row(row: &AnyRow) -> Result<Clawback, StoreError> {
    let cause: String = row.try_get("cause")?;
    let id = |column: &str| -> Result<ResourceId, StoreError> {
        stored(ResourceId::parse(&row.try_get::<String, _>(column)?))
    };
    Ok(Clawback {
        request: ClawbackRequest {
            clawback_id: stored(ClawbackId::parse(&row.try_get::<String, _>("clawback_id")?))?,
            operation_id: id("operation_id")?,
            coins: stored(Coins::parse(row.try_get("coins_requested")?))?,
            cause: stored(
                ClawbackCause::parse(&cause).ok_or_else(|| format!("unknown cause {cause}")),
            )?,
            cause_id: id("cause_id")?,
            reason: stored(Text::parse(&row.try_get::<String, _>("reason")?))?,
        },
        creator_id: id("creator_id")?,
        coins: row.try_get("coins")?,
        share: stored(Bps::parse(narrow(row.try_get("creator_share_bps")?)?))?,
        diamonds: row.try_get("diamonds")?,
        from_pending: row.try_get("from_pending_diamonds")?,
        from_available: row.try_get("from_available_diamonds")?,
        to_debt: row.try_get("to_debt_diamonds")?,
        created_at: UnixMillis(row.try_get("created_at_ms")?),
    })
}

fn optional_id(id: &Option<ResourceId>) -> &str {
    id.as_ref().map(ResourceId::as_str).unwrap_or("")
}

// ---- payouts -----------------------------------------------------------------------

const PAYOUT_COLUMNS: &str = "payout_id, creator_id, diamonds, currency_code, amount_minor, \
     economy_version, rate_amount_minor, diamonds_per_payout_unit, minimum_diamonds, state, \
     account_reference, provider_reference, failure_reason, attempts, created_at_ms, \
     updated_at_ms, settled_at_ms, sent_at_ms, account_version, account_set_by, \
     account_verified_by, review_decision, reviewed_by, review_reason, reviewed_at_ms, \
     cancelled_by, cancel_reason, cancelled_at_ms";

/// Records a new payout (HELD: due for its first provider call at once; or in REVIEW,
/// which the worker does not claim), with the account version it goes to.
pub async fn insert_payout(conn: &mut Conn, payout: &Payout) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO payouts (payout_id, creator_id, diamonds, currency_code, amount_minor, \
         economy_version, rate_amount_minor, diamonds_per_payout_unit, minimum_diamonds, state, \
         account_reference, provider_reference, failure_reason, attempts, next_attempt_at_ms, \
         attention, last_error, created_at_ms, updated_at_ms, account_version, account_set_by, \
         account_verified_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, '', '', 0, $12, 0, '', $12, $12, \
         $13, $14, $15)",
    )
    .bind(payout.id.as_str())
    .bind(payout.creator_id.as_str())
    .bind(payout.diamonds.get())
    .bind(payout.amount.currency.as_str())
    .bind(payout.amount.amount_minor())
    .bind(payout.rate.economy_version)
    .bind(payout.rate.per_unit.amount_minor())
    .bind(payout.rate.diamonds_per_unit.get())
    .bind(payout.rate.minimum.get())
    .bind(payout.state.as_str())
    .bind(payout.account_reference.as_str())
    .bind(payout.created_at.0)
    .bind(payout.account_version)
    .bind(payout.account_set_by.as_str())
    .bind(payout.account_verified_by.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Diamonds of `creator_id`'s payouts created in [`from`, `until`) and not RELEASED: what
/// counts towards the daily cap (by the index on (creator_id, created_at_ms)).
pub async fn requested_between(
    conn: &mut Conn,
    creator_id: &ResourceId,
    from: UnixMillis,
    until: UnixMillis,
) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(diamonds), 0) AS BIGINT) FROM payouts \
         WHERE creator_id = $1 AND created_at_ms >= $2 AND created_at_ms < $3 \
         AND state <> 'RELEASED'",
    )
    .bind(creator_id.as_str())
    .bind(from.0)
    .bind(until.0)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get(0)?)
}

/// Approves a payout in REVIEW: HELD, due at once (at its `updated_at`), the review
/// recorded; compare-and-set on REVIEW. `false` if it was not in REVIEW.
pub async fn approve_payout(conn: &mut Conn, approved: &Payout) -> Result<bool, StoreError> {
    let review = approved.review.as_ref();
    let done = sqlx::query(
        "UPDATE payouts SET state = 'HELD', review_decision = $2, reviewed_by = $3, \
         review_reason = $4, reviewed_at_ms = $5, updated_at_ms = $6, next_attempt_at_ms = $6 \
         WHERE payout_id = $1 AND state = 'REVIEW'",
    )
    .bind(approved.id.as_str())
    .bind(review.map(|r| r.decision.as_str()))
    .bind(review.map(|r| r.review.actor.as_str().to_owned()))
    .bind(review.map(|r| r.review.reason.as_str().to_owned()))
    .bind(review.map(|r| r.review.at.0))
    .bind(approved.updated_at.0)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn get_payout(conn: &mut Conn, id: &str) -> Result<Option<Payout>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PAYOUT_COLUMNS} FROM payouts WHERE payout_id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref()
        .map(|r| payout_from_row(r).map(|(p, _)| p))
        .transpose()
}

/// Payouts, newest first, before (created_at_ms, payout_id) `before`; one creator's
/// and/or one state's.
pub async fn list_payouts(
    conn: &mut Conn,
    creator_id: Option<&ResourceId>,
    state: Option<PayoutState>,
    before: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<Payout>, StoreError> {
    // First page: every row is before i64::MAX, whatever the id.
    let (at, id) = before.unwrap_or((i64::MAX, String::new()));
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PAYOUT_COLUMNS} FROM payouts WHERE ($1 = '' OR creator_id = $1) \
         AND ($2 = '' OR state = $2) \
         AND (created_at_ms < $3 OR (created_at_ms = $3 AND payout_id < $4)) \
         ORDER BY created_at_ms DESC, payout_id DESC LIMIT $5"
    )))
    .bind(creator_id.map(ResourceId::as_str).unwrap_or(""))
    .bind(state.map(PayoutState::as_str).unwrap_or(""))
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| payout_from_row(r).map(|(p, _)| p))
        .collect()
}

/// Claims the HELD payout that is due soonest and not leased, for `owner` until
/// `lease_until`, counting the attempt. `None` when nothing is due (or a concurrent
/// claimer won the race for it: the caller simply looks again later).
pub async fn claim_due_payout(
    conn: &mut Conn,
    owner: &str,
    now: UnixMillis,
    lease_until: UnixMillis,
) -> Result<Option<(Payout, i64)>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE payouts SET lease_owner = $1, lease_until_ms = $2, attempts = attempts + 1 \
         WHERE payout_id = (SELECT payout_id FROM payouts \
             WHERE state = 'HELD' AND next_attempt_at_ms <= $3 \
               AND (lease_until_ms IS NULL OR lease_until_ms < $3) \
             ORDER BY next_attempt_at_ms, payout_id LIMIT 1) \
           AND state = 'HELD' AND (lease_until_ms IS NULL OR lease_until_ms < $3) \
         RETURNING {PAYOUT_COLUMNS}"
    )))
    .bind(owner)
    .bind(lease_until.0)
    .bind(now.0)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(payout_from_row).transpose()
}

/// The outcome of [`settle_payout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    Yes,
    /// No longer HELD (or, for `unsent_only`, sent meanwhile): settled by someone else,
    /// nothing written.
    NotHeld,
    /// HELD, but the creator's held balance is short of it: a broken invariant; nothing
    /// written, the caller must roll back.
    HeldShort,
}

/// Settles a payout that holds diamonds: its new state (compare-and-set on `from`, HELD or
/// REVIEW, and on not yet sent when `unsent_only`), its review or cancellation if it has
/// one, its lease dropped, and `entry` (the capture or release, whose id
/// `settle:<payout>` refuses a second settlement) posted.
pub async fn settle_payout(
    conn: &mut Conn,
    settled: &Payout,
    entry: &JournalEntry,
    from: PayoutState,
    unsent_only: bool,
) -> Result<Settled, StoreError> {
    let review = settled.review.as_ref();
    let cancel = settled.cancellation.as_ref();
    let done = sqlx::query(
        "UPDATE payouts SET state = $2, provider_reference = $3, failure_reason = $4, \
         updated_at_ms = $5, settled_at_ms = $6, lease_owner = NULL, lease_until_ms = NULL, \
         last_error = '', review_decision = $9, reviewed_by = $10, review_reason = $11, \
         reviewed_at_ms = $12, cancelled_by = $13, cancel_reason = $14, cancelled_at_ms = $15 \
         WHERE payout_id = $1 AND state = $8 AND ($7 = 0 OR sent_at_ms IS NULL)",
    )
    .bind(settled.id.as_str())
    .bind(settled.state.as_str())
    .bind(settled.provider_reference.as_str())
    .bind(settled.failure_reason.as_str())
    .bind(settled.updated_at.0)
    .bind(settled.settled_at.map(|t| t.0))
    .bind(i64::from(unsent_only))
    .bind(from.as_str())
    .bind(review.map(|r| r.decision.as_str()))
    .bind(review.map(|r| r.review.actor.as_str().to_owned()))
    .bind(review.map(|r| r.review.reason.as_str().to_owned()))
    .bind(review.map(|r| r.review.at.0))
    .bind(cancel.map(|c| c.actor.as_str().to_owned()))
    .bind(cancel.map(|c| c.reason.as_str().to_owned()))
    .bind(cancel.map(|c| c.at.0))
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(Settled::NotHeld);
    }
    Ok(match post_entry(conn, entry).await? {
        Posted::Yes => Settled::Yes,
        Posted::Refused => Settled::HeldShort,
    })
}

/// A creator's payouts not yet handed to the provider, HELD or in REVIEW (what a
/// suspension, or clawback debt, releases).
pub async fn unsent_payouts(
    conn: &mut Conn,
    creator_id: &ResourceId,
) -> Result<Vec<Payout>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PAYOUT_COLUMNS} FROM payouts \
         WHERE creator_id = $1 AND state IN ('HELD', 'REVIEW') AND sent_at_ms IS NULL \
         ORDER BY created_at_ms, payout_id"
    )))
    .bind(creator_id.as_str())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| payout_from_row(r).map(|(p, _)| p))
        .collect()
}

/// The payout `id` if it is HELD and leased to `owner`; `None` otherwise (settled, or
/// taken over by another worker whose lease outlived ours).
pub async fn get_leased_payout(
    conn: &mut Conn,
    id: &str,
    owner: &str,
) -> Result<Option<Payout>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PAYOUT_COLUMNS} FROM payouts \
         WHERE payout_id = $1 AND state = 'HELD' AND lease_owner = $2"
    )))
    .bind(id)
    .bind(owner)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref()
        .map(|r| payout_from_row(r).map(|(p, _)| p))
        .transpose()
}

/// Records that `owner` hands HELD payout `id` to the provider at `at` (the first time
/// only), and whether its creator was in debt then (`in_debt`, kept from the first time
/// too); `false` if it is no longer HELD and leased to `owner`.
pub async fn mark_sent(
    conn: &mut Conn,
    id: &str,
    owner: &str,
    at: UnixMillis,
    in_debt: bool,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE payouts SET sent_in_debt = CASE WHEN sent_at_ms IS NULL THEN $4 \
         ELSE sent_in_debt END, sent_at_ms = COALESCE(sent_at_ms, $3) \
         WHERE payout_id = $1 AND state = 'HELD' AND lease_owner = $2",
    )
    .bind(id)
    .bind(owner)
    .bind(at.0)
    .bind(i64::from(in_debt))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// After an attempt without a definite answer: try again at `next_attempt_at`, drop the
/// lease, remember the error, and flag the payout for an operator once `attention`.
pub async fn schedule_retry(
    conn: &mut Conn,
    id: &str,
    owner: &str,
    next_attempt_at: UnixMillis,
    error: &str,
    attention: bool,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE payouts SET next_attempt_at_ms = $3, last_error = $4, \
         attention = CASE WHEN $5 = 1 THEN 1 ELSE attention END, \
         lease_owner = NULL, lease_until_ms = NULL \
         WHERE payout_id = $1 AND lease_owner = $2 AND state = 'HELD'",
    )
    .bind(id)
    .bind(owner)
    .bind(next_attempt_at.0)
    .bind(error.chars().take(500).collect::<String>())
    .bind(i64::from(attention))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Drops every lease `owner` holds (at shutdown), so a restart resumes at once.
pub async fn release_leases(conn: &mut Conn, owner: &str) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE payouts SET lease_owner = NULL, lease_until_ms = NULL \
         WHERE lease_owner = $1 AND state = 'HELD'",
    )
    .bind(owner)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// HELD payouts that ran out of their retry budget (they keep being retried slowly).
pub async fn count_attention(conn: &mut Conn) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT COUNT(*) FROM payouts WHERE state = 'HELD' AND attention = 1")
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get(0)?)
}

// ---- the provider's events ------------------------------------------------------------

/// Records event `event_id` as received; `false` if it was already (a duplicate
/// delivery). Inside the transaction that applies it, so its effect happens once: a
/// concurrent duplicate waits on the row (PostgreSQL) or the write lock (SQLite), then
/// finds it.
pub async fn insert_provider_event(
    conn: &mut Conn,
    event_id: &str,
    event_type: &str,
    at: UnixMillis,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO provider_events (event_id, event_type, outcome, detail, received_at_ms) \
         VALUES ($1, $2, 'IGNORED', '', $3) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event_id)
    .bind(event_type)
    .bind(at.0)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// What applying event `event_id` did (in the transaction that inserted it).
pub async fn set_provider_event_outcome(
    conn: &mut Conn,
    event_id: &str,
    outcome: &str,
    detail: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE provider_events SET outcome = $2, detail = $3 WHERE event_id = $1")
        .bind(event_id)
        .bind(outcome)
        .bind(detail)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The outcome recorded for event `event_id`, if it was received.
pub async fn provider_event_outcome(
    conn: &mut Conn,
    event_id: &str,
) -> Result<Option<(String, String)>, StoreError> {
    let row = sqlx::query("SELECT outcome, detail FROM provider_events WHERE event_id = $1")
        .bind(event_id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
}

/// Records that `amount_reversed_minor` (the transfer's cumulative figure) of payout
/// `payout_id`'s transfer came back; a figure lower than the one recorded changes nothing
/// (events out of order).
pub async fn record_payout_reversal(
    conn: &mut Conn,
    payout_id: &str,
    transfer_id: &str,
    currency: &str,
    amount_reversed_minor: i64,
    event_id: &str,
    at: UnixMillis,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO payout_reversals (payout_id, transfer_id, currency_code, \
         amount_reversed_minor, first_event_id, reported_at_ms) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (payout_id) DO UPDATE SET amount_reversed_minor = CASE \
         WHEN excluded.amount_reversed_minor > payout_reversals.amount_reversed_minor \
         THEN excluded.amount_reversed_minor ELSE payout_reversals.amount_reversed_minor END",
    )
    .bind(payout_id)
    .bind(transfer_id)
    .bind(currency)
    .bind(amount_reversed_minor)
    .bind(event_id)
    .bind(at.0)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The money recorded as reversed on payout `payout_id`'s transfer (minor units), if any.
pub async fn payout_reversed_minor(
    conn: &mut Conn,
    payout_id: &str,
) -> Result<Option<i64>, StoreError> {
    let row =
        sqlx::query("SELECT amount_reversed_minor FROM payout_reversals WHERE payout_id = $1")
            .bind(payout_id)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|r| Ok(r.try_get(0)?)).transpose()
}

/// A connected account's failed bank payout (`payout.failed`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BankPayoutFailure {
    pub event_id: String,
    pub account_reference: String,
    /// The creator whose current payout account it is ('' if none).
    pub creator_id: String,
    pub bank_payout_id: String,
    pub currency: String,
    pub amount_minor: i64,
    pub failure_code: String,
    pub failure_message: String,
    pub at: UnixMillis,
}

pub async fn insert_bank_payout_failure(
    conn: &mut Conn,
    f: &BankPayoutFailure,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO bank_payout_failures (event_id, account_reference, creator_id, \
         bank_payout_id, currency_code, amount_minor, failure_code, failure_message, \
         reported_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&f.event_id)
    .bind(&f.account_reference)
    .bind(&f.creator_id)
    .bind(&f.bank_payout_id)
    .bind(&f.currency)
    .bind(f.amount_minor)
    .bind(&f.failure_code)
    .bind(&f.failure_message)
    .bind(f.at.0)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The creator whose current payout account is `reference`, if any (the first by id).
pub async fn creator_with_account(
    conn: &mut Conn,
    reference: &str,
) -> Result<Option<String>, StoreError> {
    let row = sqlx::query(
        "SELECT creator_id FROM creators WHERE account_reference = $1 \
         ORDER BY creator_id LIMIT 1",
    )
    .bind(reference)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| Ok(r.try_get(0)?)).transpose()
}

/// (PAID payouts whose transfer Stripe reported reversed, failed bank payouts of
/// connected accounts): the provider's alerts an operator follows up.
pub async fn count_provider_alerts(conn: &mut Conn) -> Result<(i64, i64), StoreError> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM payout_reversals r JOIN payouts p \
         ON p.payout_id = r.payout_id WHERE p.state = 'PAID'), \
         (SELECT COUNT(*) FROM bank_payout_failures)",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

fn payout_from_row(row: &AnyRow) -> Result<(Payout, i64), StoreError> {
    let currency: String = row.try_get("currency_code")?;
    let money = |amount: i64| stored(Money::parse(&currency, amount).map_err(|(_, e)| e));
    let state: String = row.try_get("state")?;
    let settled_at: Option<i64> = row.try_get("settled_at_ms")?;
    let sent_at: Option<i64> = row.try_get("sent_at_ms")?;
    let review = match row.try_get::<Option<String>, _>("review_decision")? {
        None => None,
        Some(decision) => Some(PayoutReview {
            decision: stored(
                PayoutDecision::parse(&decision)
                    .ok_or_else(|| format!("unknown review decision {decision}")),
            )?,
            review: operator_action(row, "reviewed_by", "review_reason", "reviewed_at_ms")?,
        }),
    };
    let cancellation = match row.try_get::<Option<String>, _>("cancelled_by")? {
        None => None,
        Some(_) => Some(operator_action(
            row,
            "cancelled_by",
            "cancel_reason",
            "cancelled_at_ms",
        )?),
    };
    Ok((
        Payout {
            id: row.try_get("payout_id")?,
            creator_id: stored(ResourceId::parse(&row.try_get::<String, _>("creator_id")?))?,
            diamonds: stored(Diamonds::parse(row.try_get("diamonds")?))?,
            amount: money(row.try_get("amount_minor")?)?,
            rate: PayoutRate {
                economy_version: row.try_get("economy_version")?,
                per_unit: money(row.try_get("rate_amount_minor")?)?,
                diamonds_per_unit: stored(Diamonds::parse(
                    row.try_get("diamonds_per_payout_unit")?,
                ))?,
                minimum: stored(Diamonds::parse(row.try_get("minimum_diamonds")?))?,
            },
            state: stored(
                PayoutState::parse(&state).ok_or_else(|| format!("unknown payout state {state}")),
            )?,
            account_reference: stored(AccountReference::parse(
                &row.try_get::<String, _>("account_reference")?,
            ))?,
            account_version: row.try_get("account_version")?,
            account_set_by: row.try_get("account_set_by")?,
            account_verified_by: row.try_get("account_verified_by")?,
            review,
            cancellation,
            provider_reference: row.try_get("provider_reference")?,
            failure_reason: row.try_get("failure_reason")?,
            created_at: UnixMillis(row.try_get("created_at_ms")?),
            updated_at: UnixMillis(row.try_get("updated_at_ms")?),
            settled_at: settled_at.map(UnixMillis),
            sent_at: sent_at.map(UnixMillis),
        },
        row.try_get("attempts")?,
    ))
}

/// An operator's action recorded on a payout row (a review, a cancellation): who, why,
/// when, from the three named columns (set together, by CHECK).
fn operator_action(
    row: &AnyRow,
    actor: &str,
    reason: &str,
    at: &str,
) -> Result<Review, StoreError> {
    Ok(Review {
        actor: stored(Name::parse(&row.try_get::<String, _>(actor)?))?,
        reason: stored(Text::parse(&row.try_get::<String, _>(reason)?))?,
        at: UnixMillis(row.try_get(at)?),
    })
}

/// A stored value that no longer parses: the CHECK constraints should make this
/// impossible, so it is reported as a database error, not served.
fn stored<T>(parsed: Result<T, String>) -> Result<T, StoreError> {
    parsed.map_err(|e| {
        StoreError::Database(sqlx::Error::Decode(
            format!("stored payout row is invalid: {e}").into(),
        ))
    })
}

fn narrow(value: i64) -> Result<i32, StoreError> {
    stored(i32::try_from(value).map_err(|_| format!("{value} does not fit in 32 bits")))
}
