//! All of the wallet's SQL, in one place. Functions take a connection so the caller
//! chooses the transaction; `ledger` and `purchases` compose them into operations.
//!
//! Concurrency: every operation on a user first takes the user's row ([`lock_account`]:
//! an UPDATE, so PostgreSQL holds the row lock until commit, and SQLite's write
//! transactions are serialized anyway; debits take all of a batch's users at once,
//! in user order, with [`lock_accounts`]). Checks that read other rows (caps, holds,
//! operation ids) are therefore consistent with the balance change that follows them.

use ovation_store::StoreError;
use ovation_store::batch;
use ovation_store::db::Conn;
use ovation_store::sqlx::{self, Row, any::AnyRow};
use ovation_types::{
    Coins, CurrencyCode, IdempotencyKey, ResourceId, Text, TimeWindow, UnixMillis,
};

use crate::domain::{
    AccountKind, AgeStatus, Attributed, Balance, Caps, ClawbackOrderState, HoldState, Limits,
    NextAction, PaymentProviderKind, PurchaseState, Reason, RecentPurchases, Usage, WalkedDebit,
};

/// Largest balance an account may reach: far above any real balance, far below overflow.
pub const BALANCE_COINS_MAX: i64 = 1_000_000_000_000_000;

/// A user's account row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRow {
    pub user_id: ResourceId,
    pub age: AgeStatus,
    pub balance: Balance,
    pub entry_count: i64,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

const ACCOUNT_COLUMNS: &str = "user_id, minor, adult_verified, balance_coins, held_coins, debt_coins, \
     entry_count, created_at_ms, updated_at_ms";

fn account_from_row(row: &AnyRow) -> Result<AccountRow, StoreError> {
    Ok(AccountRow {
        user_id: id(row, "user_id")?,
        age: AgeStatus {
            minor: row.try_get::<i64, _>("minor")? == 1,
            adult_verified: row.try_get::<i64, _>("adult_verified")? == 1,
        },
        balance: Balance {
            posted: row.try_get("balance_coins")?,
            held: row.try_get("held_coins")?,
            debt: row.try_get("debt_coins")?,
        },
        entry_count: row.try_get("entry_count")?,
        created_at: UnixMillis(row.try_get("created_at_ms")?),
        updated_at: UnixMillis(row.try_get("updated_at_ms")?),
    })
}

/// Opens an account; `None` if the user has one.
pub async fn create_account(
    conn: &mut Conn,
    user: &str,
    age: AgeStatus,
    now: UnixMillis,
) -> Result<Option<AccountRow>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES ($1, $2, $3, 0, 0, 0, 0, $4, $4) \
         ON CONFLICT (user_id) DO NOTHING RETURNING {ACCOUNT_COLUMNS}"
    )))
    .bind(user)
    .bind(i64::from(age.minor))
    .bind(i64::from(age.adult_verified))
    .bind(now.0)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(account_from_row).transpose()
}

pub async fn get_account(conn: &mut Conn, user: &str) -> Result<Option<AccountRow>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE user_id = $1"
    )))
    .bind(user)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(account_from_row).transpose()
}

/// Takes the user's row for the rest of the transaction and reads it.
pub async fn lock_account(
    conn: &mut Conn,
    user: &str,
    now: UnixMillis,
) -> Result<Option<AccountRow>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE accounts SET updated_at_ms = $2 WHERE user_id = $1 RETURNING {ACCOUNT_COLUMNS}"
    )))
    .bind(user)
    .bind(now.0)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(account_from_row).transpose()
}

/// Takes the rows of `users` (sorted, distinct) for the rest of the transaction, in one
/// statement and in user order, and reads them; users without an account are absent.
/// Locking one batch's users in one global order keeps two batches that share users, in
/// whatever order they name them, from deadlocking.
pub async fn lock_accounts(conn: &mut Conn, users: &[&str]) -> Result<Vec<AccountRow>, StoreError> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE user_id IN ({}) ORDER BY user_id{}",
        batch::placeholders(1, users.len()),
        batch::row_lock(conn)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for user in users {
        query = query.bind(*user);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    rows.iter().map(account_from_row).collect()
}

/// The new balances and entry counts of users a batch posts to, each guarded by the
/// values it was planned from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalanceMove<'a> {
    pub user_id: &'a str,
    pub posted_before: i64,
    pub posted_after: i64,
    pub entries_before: i64,
    pub entries_after: i64,
}

/// Sets the balances and entry counts of several users in one statement, each only if
/// its row still holds the values it was planned from; `false` if any did not (nothing
/// should have changed them under the lock: the caller rolls back).
pub async fn move_balances(
    conn: &mut Conn,
    moves: &[BalanceMove<'_>],
    now: UnixMillis,
) -> Result<bool, StoreError> {
    if moves.is_empty() {
        return Ok(true);
    }
    // Per user: $u (user), then posted after, entries after, posted before, entries before.
    let rows = batch::KeyedRows {
        key_column: "user_id",
        first: 1,
        rows: moves.len(),
        per_row: 5,
    };
    let sql = format!(
        "UPDATE accounts SET balance_coins = {}, entry_count = {}, updated_at_ms = ${} \
         WHERE user_id IN ({}) AND balance_coins = {} AND entry_count = {}",
        rows.case(1),
        rows.case(2),
        rows.next(),
        rows.keys(),
        rows.case(3),
        rows.case(4),
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for m in moves {
        query = query
            .bind(m.user_id)
            .bind(m.posted_after)
            .bind(m.entries_after)
            .bind(m.posted_before)
            .bind(m.entries_before);
    }
    let done = query.bind(now.0).execute(&mut *conn).await?;
    Ok(done.rows_affected() == moves.len() as u64)
}

pub async fn set_age(conn: &mut Conn, user: &str, age: AgeStatus) -> Result<(), StoreError> {
    sqlx::query("UPDATE accounts SET minor = $2, adult_verified = $3 WHERE user_id = $1")
        .bind(user)
        .bind(i64::from(age.minor))
        .bind(i64::from(age.adult_verified))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Moves the user's held coins by `delta` (reserve: +, release/capture: −), only if the
/// result stays within 0..=posted − (what other holds need) — i.e. available ≥ 0.
pub async fn adjust_held(conn: &mut Conn, user: &str, delta: i64) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE accounts SET held_coins = held_coins + $2 \
         WHERE user_id = $1 AND held_coins + $2 >= 0 AND balance_coins - held_coins - $2 >= 0",
    )
    .bind(user)
    .bind(delta)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn adjust_debt(conn: &mut Conn, user: &str, delta: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE accounts SET debt_coins = debt_coins + $2 WHERE user_id = $1")
        .bind(user)
        .bind(delta)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// What a journal entry records besides the amount.
#[derive(Clone, Debug, Default)]
pub struct EntryRefs<'a> {
    pub purchase_id: Option<&'a ResourceId>,
    pub operation_id: Option<&'a ResourceId>,
    pub saga_id: Option<&'a ResourceId>,
    pub actor: &'a str,
    pub note: &'a str,
}

/// A posted entry: its place in the user's ledger and the user's balance after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Posted {
    pub seq: i64,
    pub posted_after: i64,
    pub available_after: i64,
}

/// Posts one balanced entry of `coins` (> 0) between the user and the reason's system
/// account. A debit applies only if the user's available coins cover it (`None`
/// otherwise, nothing written); with `release_held`, a capture also releases that many
/// held coins in the same statement.
pub async fn post(
    conn: &mut Conn,
    user: &str,
    reason: Reason,
    coins: i64,
    release_held: i64,
    refs: &EntryRefs<'_>,
    now: UnixMillis,
) -> Result<Option<Posted>, StoreError> {
    debug_assert!(coins > 0 && release_held >= 0);
    let delta = if reason.credits_user() { coins } else { -coins };
    let row = if reason.credits_user() {
        sqlx::query(
            "UPDATE accounts SET balance_coins = balance_coins + $2, entry_count = entry_count + 1, \
             updated_at_ms = $3 WHERE user_id = $1 AND balance_coins <= $4 - $2 \
             RETURNING balance_coins, held_coins, entry_count",
        )
        .bind(user)
        .bind(coins)
        .bind(now.0)
        .bind(BALANCE_COINS_MAX)
        .fetch_optional(&mut *conn)
        .await?
    } else {
        // The held coins being released are the ones being spent: available stays ≥ 0.
        sqlx::query(
            "UPDATE accounts SET balance_coins = balance_coins - $2, held_coins = held_coins - $3, \
             entry_count = entry_count + 1, updated_at_ms = $4 \
             WHERE user_id = $1 AND held_coins >= $3 AND balance_coins - (held_coins - $3) >= $2 \
             RETURNING balance_coins, held_coins, entry_count",
        )
        .bind(user)
        .bind(coins)
        .bind(release_held)
        .bind(now.0)
        .fetch_optional(&mut *conn)
        .await?
    };
    let Some(row) = row else {
        return Ok(None);
    };
    let posted_after: i64 = row.try_get(0)?;
    let held_after: i64 = row.try_get(1)?;
    let seq: i64 = row.try_get(2)?;
    let entry_id = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO journal_entries (entry_id, user_id, user_seq, reason, user_delta_coins, \
         balance_after_coins, purchase_id, operation_id, saga_id, actor, note, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(entry_id.as_str())
    .bind(user)
    .bind(seq)
    .bind(reason.code())
    .bind(delta)
    .bind(posted_after)
    .bind(or_empty(refs.purchase_id))
    .bind(or_empty(refs.operation_id))
    .bind(or_empty(refs.saga_id))
    .bind(refs.actor)
    .bind(refs.note)
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    for (account, amount) in [
        (crate::domain::user_account(user), delta),
        (reason.counterparty().system_account().to_owned(), -delta),
    ] {
        sqlx::query("INSERT INTO postings (entry_id, account, amount_coins) VALUES ($1, $2, $3)")
            .bind(entry_id.as_str())
            .bind(account.as_str())
            .bind(amount)
            .execute(&mut *conn)
            .await?;
    }
    Ok(Some(Posted {
        seq,
        posted_after,
        available_after: posted_after - held_after,
    }))
}

/// Writes journal entries and their postings (two each, +x and −x: I1) in two
/// statements. The caller moves the users' balances to match ([`move_balances`]).
pub async fn insert_entries(conn: &mut Conn, entries: &[EntryRow]) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO journal_entries (entry_id, user_id, user_seq, reason, user_delta_coins, \
         balance_after_coins, purchase_id, operation_id, saga_id, actor, note, created_at_ms) \
         VALUES {}",
        batch::rows(1, entries.len(), 12)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for e in entries {
        query = query
            .bind(e.entry_id.as_str())
            .bind(e.user_id.as_str())
            .bind(e.user_seq)
            .bind(e.reason.code())
            .bind(e.delta)
            .bind(e.posted_after)
            .bind(or_empty(e.purchase_id.as_ref()))
            .bind(or_empty(e.operation_id.as_ref()))
            .bind(or_empty(e.saga_id.as_ref()))
            .bind(e.actor.as_str())
            .bind(e.note.as_str())
            .bind(e.created_at.0);
    }
    query.execute(&mut *conn).await?;
    let sql = format!(
        "INSERT INTO postings (entry_id, account, amount_coins) VALUES {}",
        batch::rows(1, entries.len() * 2, 3)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for e in entries {
        query = query
            .bind(e.entry_id.as_str())
            .bind(crate::domain::user_account(e.user_id.as_str()))
            .bind(e.delta)
            .bind(e.entry_id.as_str())
            .bind(e.reason.counterparty().system_account())
            .bind(-e.delta);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

/// One journal entry as the user's history shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryRow {
    pub entry_id: String,
    pub user_id: ResourceId,
    pub user_seq: i64,
    pub reason: Reason,
    pub delta: i64,
    pub posted_after: i64,
    pub purchase_id: Option<ResourceId>,
    pub operation_id: Option<ResourceId>,
    pub saga_id: Option<ResourceId>,
    pub actor: String,
    pub note: String,
    pub created_at: UnixMillis,
}

/// The user's entries with seq < `before` (or all), newest first.
pub async fn list_entries(
    conn: &mut Conn,
    user: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<EntryRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT entry_id, user_id, user_seq, reason, user_delta_coins, balance_after_coins, \
         purchase_id, operation_id, saga_id, actor, note, created_at_ms FROM journal_entries \
         WHERE user_id = $1 AND user_seq < $2 ORDER BY user_seq DESC LIMIT $3",
    )
    .bind(user)
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(EntryRow {
                entry_id: r.try_get("entry_id")?,
                user_id: id(r, "user_id")?,
                user_seq: r.try_get("user_seq")?,
                reason: Reason::from_code(r.try_get("reason")?)
                    .ok_or_else(|| corrupt("journal entry reason"))?,
                delta: r.try_get("user_delta_coins")?,
                posted_after: r.try_get("balance_after_coins")?,
                purchase_id: optional_id(r, "purchase_id")?,
                operation_id: optional_id(r, "operation_id")?,
                saga_id: optional_id(r, "saga_id")?,
                actor: r.try_get("actor")?,
                note: r.try_get("note")?,
                created_at: UnixMillis(r.try_get("created_at_ms")?),
            })
        })
        .collect()
}

// ---- debits and refunds ---------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebitRow {
    pub operation_id: ResourceId,
    pub user_id: ResourceId,
    pub coins: Coins,
    pub saga_id: Option<ResourceId>,
    pub note: Text,
    pub from_hold: bool,
    pub available_after: i64,
    /// 0 until refunded.
    pub refunded_coins: i64,
    pub refund_operation_id: Option<ResourceId>,
    pub created_at: UnixMillis,
    pub refunded_at: Option<UnixMillis>,
}

const DEBIT_COLUMNS: &str = "operation_id, user_id, coins, saga_id, note, from_hold, available_after_coins, \
     refunded_coins, refund_operation_id, created_at_ms, refunded_at_ms";

fn debit_from_row(r: &AnyRow) -> Result<DebitRow, StoreError> {
    Ok(DebitRow {
        operation_id: id(r, "operation_id")?,
        user_id: id(r, "user_id")?,
        coins: coins(r, "coins")?,
        saga_id: optional_id(r, "saga_id")?,
        note: text(r, "note")?,
        from_hold: r.try_get::<i64, _>("from_hold")? == 1,
        available_after: r.try_get("available_after_coins")?,
        refunded_coins: r.try_get("refunded_coins")?,
        refund_operation_id: optional_id(r, "refund_operation_id")?,
        created_at: UnixMillis(r.try_get("created_at_ms")?),
        refunded_at: r
            .try_get::<Option<i64>, _>("refunded_at_ms")?
            .map(UnixMillis),
    })
}

pub async fn insert_debit(conn: &mut Conn, d: &DebitRow) -> Result<(), StoreError> {
    insert_debits(conn, std::slice::from_ref(d)).await
}

/// Records debits, in one statement. A debit's operation id is its primary key: a twin
/// committed concurrently under the same id fails this with a unique violation.
pub async fn insert_debits(conn: &mut Conn, debits: &[DebitRow]) -> Result<(), StoreError> {
    if debits.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO debits ({DEBIT_COLUMNS}) VALUES {}",
        batch::rows(1, debits.len(), 11)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for d in debits {
        query = query
            .bind(d.operation_id.as_str())
            .bind(d.user_id.as_str())
            .bind(d.coins.get())
            .bind(or_empty(d.saga_id.as_ref()))
            .bind(d.note.as_str())
            .bind(i64::from(d.from_hold))
            .bind(d.available_after)
            .bind(d.refunded_coins)
            .bind(or_empty(d.refund_operation_id.as_ref()))
            .bind(d.created_at.0)
            .bind(d.refunded_at.map(|t| t.0));
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

pub async fn get_debit(
    conn: &mut Conn,
    operation_id: &str,
) -> Result<Option<DebitRow>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {DEBIT_COLUMNS} FROM debits WHERE operation_id = $1"
    )))
    .bind(operation_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(debit_from_row).transpose()
}

/// Debits after (created_at, operation_id) `after`, oldest first, created in
/// `[start, end)` (an unset bound: no bound).
pub async fn list_debits(
    conn: &mut Conn,
    after: Option<(i64, String)>,
    window: TimeWindow,
    limit: i64,
) -> Result<Vec<DebitRow>, StoreError> {
    let (at, id) = after.unwrap_or((i64::MIN, String::new()));
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {DEBIT_COLUMNS} FROM debits \
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
    rows.iter().map(debit_from_row).collect()
}

/// Marks a debit refunded; `false` if it was refunded already (at most once).
pub async fn mark_refunded(
    conn: &mut Conn,
    debit_operation_id: &str,
    coins: i64,
    refund_operation_id: &str,
    now: UnixMillis,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE debits SET refunded_coins = $2, refund_operation_id = $3, refunded_at_ms = $4 \
         WHERE operation_id = $1 AND refunded_coins = 0 AND $2 <= coins",
    )
    .bind(debit_operation_id)
    .bind(coins)
    .bind(refund_operation_id)
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundRow {
    pub operation_id: ResourceId,
    pub debit_operation_id: ResourceId,
    pub user_id: ResourceId,
    pub coins: Coins,
    pub note: Text,
    pub available_after: i64,
    pub created_at: UnixMillis,
}

pub async fn insert_refund(conn: &mut Conn, r: &RefundRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO refunds (operation_id, debit_operation_id, user_id, coins, note, \
         available_after_coins, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(r.operation_id.as_str())
    .bind(r.debit_operation_id.as_str())
    .bind(r.user_id.as_str())
    .bind(r.coins.get())
    .bind(r.note.as_str())
    .bind(r.available_after)
    .bind(r.created_at.0)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn get_refund(
    conn: &mut Conn,
    operation_id: &str,
) -> Result<Option<RefundRow>, StoreError> {
    let row = sqlx::query(
        "SELECT operation_id, debit_operation_id, user_id, coins, note, available_after_coins, \
         created_at_ms FROM refunds WHERE operation_id = $1",
    )
    .bind(operation_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        Ok(RefundRow {
            operation_id: id(&r, "operation_id")?,
            debit_operation_id: id(&r, "debit_operation_id")?,
            user_id: id(&r, "user_id")?,
            coins: coins(&r, "coins")?,
            note: text(&r, "note")?,
            available_after: r.try_get("available_after_coins")?,
            created_at: UnixMillis(r.try_get("created_at_ms")?),
        })
    })
    .transpose()
}

// ---- holds ----------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRow {
    pub operation_id: ResourceId,
    pub user_id: ResourceId,
    pub coins: Coins,
    pub state: HoldState,
    /// 0 unless captured.
    pub captured_coins: i64,
    pub saga_id: Option<ResourceId>,
    pub note: Text,
    pub expire_at: UnixMillis,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

const HOLD_COLUMNS: &str = "operation_id, user_id, coins, state, captured_coins, saga_id, note, \
     expire_at_ms, created_at_ms, updated_at_ms";

fn hold_from_row(r: &AnyRow) -> Result<HoldRow, StoreError> {
    Ok(HoldRow {
        operation_id: id(r, "operation_id")?,
        user_id: id(r, "user_id")?,
        coins: coins(r, "coins")?,
        state: HoldState::from_code(r.try_get("state")?).ok_or_else(|| corrupt("hold state"))?,
        captured_coins: r.try_get("captured_coins")?,
        saga_id: optional_id(r, "saga_id")?,
        note: text(r, "note")?,
        expire_at: UnixMillis(r.try_get("expire_at_ms")?),
        created_at: UnixMillis(r.try_get("created_at_ms")?),
        updated_at: UnixMillis(r.try_get("updated_at_ms")?),
    })
}

pub async fn insert_hold(conn: &mut Conn, h: &HoldRow) -> Result<(), StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO holds ({HOLD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    )))
    .bind(h.operation_id.as_str())
    .bind(h.user_id.as_str())
    .bind(h.coins.get())
    .bind(h.state.code())
    .bind(h.captured_coins)
    .bind(or_empty(h.saga_id.as_ref()))
    .bind(h.note.as_str())
    .bind(h.expire_at.0)
    .bind(h.created_at.0)
    .bind(h.updated_at.0)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn get_hold(conn: &mut Conn, operation_id: &str) -> Result<Option<HoldRow>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {HOLD_COLUMNS} FROM holds WHERE operation_id = $1"
    )))
    .bind(operation_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(hold_from_row).transpose()
}

/// Moves an ACTIVE hold to `state`; `false` if it was not active any more.
pub async fn finish_hold(
    conn: &mut Conn,
    operation_id: &str,
    state: HoldState,
    captured: i64,
    now: UnixMillis,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE holds SET state = $2, captured_coins = $3, updated_at_ms = $4 \
         WHERE operation_id = $1 AND state = 1",
    )
    .bind(operation_id)
    .bind(state.code())
    .bind(captured)
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Active holds past their expiry, oldest first.
pub async fn expired_holds(
    conn: &mut Conn,
    now: UnixMillis,
    limit: i64,
) -> Result<Vec<HoldRow>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {HOLD_COLUMNS} FROM holds WHERE state = 1 AND expire_at_ms <= $1 \
         ORDER BY expire_at_ms LIMIT $2"
    )))
    .bind(now.0)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(hold_from_row).collect()
}

/// True when an operation id is taken by a debit or a hold (they share one namespace).
pub async fn operation_id_taken(conn: &mut Conn, operation_id: &str) -> Result<bool, StoreError> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM debits WHERE operation_id = $1) \
         + (SELECT COUNT(*) FROM holds WHERE operation_id = $1) \
         + (SELECT COUNT(*) FROM refunds WHERE operation_id = $1)",
    )
    .bind(operation_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get::<i64, _>(0)? > 0)
}

/// The operation ids among `ids` (distinct) already used: the debits they made, and
/// those used by holds and refunds. One statement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsedOperationIds {
    pub debits: Vec<DebitRow>,
    pub holds_and_refunds: Vec<ResourceId>,
}

pub async fn used_operation_ids(
    conn: &mut Conn,
    ids: &[&str],
) -> Result<UsedOperationIds, StoreError> {
    let mut used = UsedOperationIds::default();
    if ids.is_empty() {
        return Ok(used);
    }
    let list = batch::placeholders(1, ids.len());
    // The hold and refund branches fill the debit columns they lack with placeholders;
    // only their operation ids are read.
    let sql = format!(
        "SELECT CAST(1 AS BIGINT) AS used_by, {DEBIT_COLUMNS} FROM debits \
         WHERE operation_id IN ({list}) \
         UNION ALL SELECT CAST(2 AS BIGINT), operation_id, user_id, coins, saga_id, note, \
         CAST(0 AS BIGINT), CAST(0 AS BIGINT), CAST(0 AS BIGINT), '', created_at_ms, \
         CAST(NULL AS BIGINT) FROM holds WHERE operation_id IN ({list}) \
         UNION ALL SELECT CAST(3 AS BIGINT), operation_id, user_id, coins, '', note, \
         CAST(0 AS BIGINT), CAST(0 AS BIGINT), CAST(0 AS BIGINT), '', created_at_ms, \
         CAST(NULL AS BIGINT) FROM refunds WHERE operation_id IN ({list})"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in ids {
        query = query.bind(*id);
    }
    for row in query.fetch_all(&mut *conn).await? {
        if row.try_get::<i64, _>("used_by")? == 1 {
            used.debits.push(debit_from_row(&row)?);
        } else {
            used.holds_and_refunds.push(id(&row, "operation_id")?);
        }
    }
    Ok(used)
}

// ---- usage against caps ---------------------------------------------------------------

/// Coins spent by the user in [from, now]: debits net of refunds, plus active holds.
pub async fn spent_since(conn: &mut Conn, user: &str, from: UnixMillis) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE((SELECT SUM(coins - refunded_coins) FROM debits \
                          WHERE user_id = $1 AND created_at_ms >= $2), 0) \
              + COALESCE((SELECT SUM(coins) FROM holds \
                          WHERE user_id = $1 AND state = 1 AND created_at_ms >= $2), 0) AS BIGINT)",
    )
    .bind(user)
    .bind(from.0)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get::<i64, _>(0)?)
}

/// Package coins bought in [from, now] by purchases pending or completed.
pub async fn purchased_since(
    conn: &mut Conn,
    user: &str,
    from: UnixMillis,
) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(package_coins), 0) AS BIGINT) FROM purchases \
         WHERE user_id = $1 AND created_at_ms >= $2 AND state IN (1, 2)",
    )
    .bind(user)
    .bind(from.0)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get::<i64, _>(0)?)
}

pub async fn usage(
    conn: &mut Conn,
    user: &str,
    now: UnixMillis,
    purchases: bool,
) -> Result<Usage, StoreError> {
    let (day, _) = crate::domain::day_window(now);
    let (month, _) = crate::domain::month_window(now);
    Ok(if purchases {
        Usage {
            today: purchased_since(conn, user, day).await?,
            this_month: purchased_since(conn, user, month).await?,
        }
    } else {
        Usage {
            today: spent_since(conn, user, day).await?,
            this_month: spent_since(conn, user, month).await?,
        }
    })
}

// ---- spending limits ------------------------------------------------------------------

const LIMITS_COLUMNS: &str = "daily_spend_coins, monthly_spend_coins, daily_purchase_coins, \
     monthly_purchase_coins, has_pending, pending_daily_spend_coins, pending_monthly_spend_coins, \
     pending_daily_purchase_coins, pending_monthly_purchase_coins, pending_effective_at_ms, \
     updated_by, updated_at_ms";

pub async fn get_limits(conn: &mut Conn, user: &str) -> Result<Limits, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {LIMITS_COLUMNS} FROM spending_limits WHERE user_id = $1"
    )))
    .bind(user)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map_or(Ok(Limits::default()), limits_from_row)
}

/// The spending limits of those of `users` (distinct) who set any, in one statement.
pub async fn limits_of(
    conn: &mut Conn,
    users: &[&str],
) -> Result<Vec<(ResourceId, Limits)>, StoreError> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT user_id, {LIMITS_COLUMNS} FROM spending_limits WHERE user_id IN ({})",
        batch::placeholders(1, users.len())
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for user in users {
        query = query.bind(*user);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|r| Ok((id(r, "user_id")?, limits_from_row(r)?)))
        .collect()
}

fn limits_from_row(r: &AnyRow) -> Result<Limits, StoreError> {
    let caps = |prefix: &str| -> Result<Caps, StoreError> {
        Ok(Caps {
            daily_spend: r.try_get(format!("{prefix}daily_spend_coins").as_str())?,
            monthly_spend: r.try_get(format!("{prefix}monthly_spend_coins").as_str())?,
            daily_purchase: r.try_get(format!("{prefix}daily_purchase_coins").as_str())?,
            monthly_purchase: r.try_get(format!("{prefix}monthly_purchase_coins").as_str())?,
        })
    };
    let pending = if r.try_get::<i64, _>("has_pending")? == 1 {
        let at: Option<i64> = r.try_get("pending_effective_at_ms")?;
        Some((caps("pending_")?, UnixMillis(at.unwrap_or(0))))
    } else {
        None
    };
    Ok(Limits {
        effective: caps("")?,
        pending,
        updated_by: r.try_get("updated_by")?,
        updated_at: Some(UnixMillis(r.try_get("updated_at_ms")?)),
    })
}

pub async fn put_limits(conn: &mut Conn, user: &str, limits: &Limits) -> Result<(), StoreError> {
    let (pending, at) = match limits.pending {
        Some((caps, at)) => (Some(caps), Some(at.0)),
        None => (None, None),
    };
    let p = pending.unwrap_or_default();
    sqlx::query(
        "INSERT INTO spending_limits (user_id, daily_spend_coins, monthly_spend_coins, \
         daily_purchase_coins, monthly_purchase_coins, has_pending, pending_daily_spend_coins, \
         pending_monthly_spend_coins, pending_daily_purchase_coins, pending_monthly_purchase_coins, \
         pending_effective_at_ms, updated_by, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (user_id) DO UPDATE SET daily_spend_coins = $2, monthly_spend_coins = $3, \
         daily_purchase_coins = $4, monthly_purchase_coins = $5, has_pending = $6, \
         pending_daily_spend_coins = $7, pending_monthly_spend_coins = $8, \
         pending_daily_purchase_coins = $9, pending_monthly_purchase_coins = $10, \
         pending_effective_at_ms = $11, updated_by = $12, updated_at_ms = $13",
    )
    .bind(user)
    .bind(limits.effective.daily_spend)
    .bind(limits.effective.monthly_spend)
    .bind(limits.effective.daily_purchase)
    .bind(limits.effective.monthly_purchase)
    .bind(i64::from(pending.is_some()))
    .bind(p.daily_spend)
    .bind(p.monthly_spend)
    .bind(p.daily_purchase)
    .bind(p.monthly_purchase)
    .bind(at)
    .bind(limits.updated_by.as_str())
    .bind(limits.updated_at.map_or(0, |t| t.0))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn record_admin_action(
    conn: &mut Conn,
    user: &str,
    action: &str,
    actor: &str,
    reason: &str,
    now: UnixMillis,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO admin_actions (action_id, user_id, action, actor, reason, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(user)
    .bind(action)
    .bind(actor)
    .bind(reason)
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

// ---- purchases ------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurchaseRow {
    pub purchase_id: ResourceId,
    pub idempotency_key: IdempotencyKey,
    pub fingerprint: String,
    pub user_id: ResourceId,
    pub package_id: ResourceId,
    pub package_version: i64,
    pub currency_code: CurrencyCode,
    pub amount_minor: i64,
    pub package_coins: Coins,
    pub bonus_coins: i64,
    pub promotion_id: String,
    pub promotion_version: i64,
    pub payment_token: String,
    pub state: PurchaseState,
    pub decline_reason: String,
    pub provider_reference: String,
    pub charge_attempts: i64,
    pub next_attempt_at: UnixMillis,
    pub reversal_actor: String,
    pub reversal_reason: String,
    pub reversal_clawed_back: i64,
    pub reversal_debt: i64,
    pub reversed_at: Option<UnixMillis>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    /// The purchase's credit entry in the buyer's ledger; `None` until credited.
    pub credited_seq: Option<i64>,
    /// A reversal's attribution of its debt coins (see `ledger::attribute_reversals`).
    pub attribution: AttributionRow,
    /// Who charges it (migration 104).
    pub payment_provider: PaymentProviderKind,
    /// What the customer must do while the charge waits for them; empty otherwise.
    pub next_action: NextAction,
}

/// Where a reversed purchase's attribution is; all zero until reversed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttributionRow {
    /// The walk is not finished: the worker goes on with it.
    pub pending: bool,
    /// The buyer's last entry before the reversal: the walk ends there.
    pub end_seq: i64,
    /// The walk has looked at the buyer's entries up to this one.
    pub cursor_seq: i64,
    /// Debt coins not attributed yet.
    pub left_coins: i64,
    /// Debt coins attributed to debits (gifts and others).
    pub attributed_coins: i64,
    /// Clawback orders made (one per gift debit reached).
    pub order_count: i64,
    /// Of those, orders payout answered (APPLIED or NO_CREDIT).
    pub orders_done_count: i64,
}

/// The columns a purchase is recorded with.
macro_rules! purchase_record_columns {
    () => {
        "purchase_id, idempotency_key, fingerprint, user_id, package_id, \
         package_version, currency_code, amount_minor, package_coins, bonus_coins, promotion_id, \
         promotion_version, payment_token, state, decline_reason, provider_reference, \
         charge_attempts, next_attempt_at_ms, reversal_actor, reversal_reason, \
         reversal_clawed_back_coins, reversal_debt_coins, reversed_at_ms, created_at_ms, \
         updated_at_ms"
    };
}

const PURCHASE_RECORD_COLUMNS: &str = purchase_record_columns!();

/// Every column of a purchase: the record's, then the credit's place in the ledger and
/// the reversal's attribution (migration 103).
const PURCHASE_COLUMNS: &str = concat!(
    purchase_record_columns!(),
    ", credited_seq, attribution_pending, attribution_end_seq, attribution_cursor_seq, \
     attribution_left_coins, attributed_coins, clawback_order_count, clawback_orders_done_count, \
     payment_provider, next_action_type, next_action_client_secret, next_action_redirect_url"
);

fn purchase_from_row(r: &AnyRow) -> Result<PurchaseRow, StoreError> {
    Ok(PurchaseRow {
        purchase_id: id(r, "purchase_id")?,
        idempotency_key: stored(IdempotencyKey::parse(
            &r.try_get::<String, _>("idempotency_key")?,
        ))?,
        fingerprint: r.try_get("fingerprint")?,
        user_id: id(r, "user_id")?,
        package_id: id(r, "package_id")?,
        package_version: r.try_get("package_version")?,
        currency_code: stored(CurrencyCode::parse(
            &r.try_get::<String, _>("currency_code")?,
        ))?,
        amount_minor: r.try_get("amount_minor")?,
        package_coins: coins(r, "package_coins")?,
        bonus_coins: r.try_get("bonus_coins")?,
        promotion_id: r.try_get("promotion_id")?,
        promotion_version: r.try_get("promotion_version")?,
        payment_token: r.try_get("payment_token")?,
        state: PurchaseState::from_code(r.try_get("state")?)
            .ok_or_else(|| corrupt("purchase state"))?,
        decline_reason: r.try_get("decline_reason")?,
        provider_reference: r.try_get("provider_reference")?,
        charge_attempts: r.try_get("charge_attempts")?,
        next_attempt_at: UnixMillis(r.try_get("next_attempt_at_ms")?),
        reversal_actor: r.try_get("reversal_actor")?,
        reversal_reason: r.try_get("reversal_reason")?,
        reversal_clawed_back: r.try_get("reversal_clawed_back_coins")?,
        reversal_debt: r.try_get("reversal_debt_coins")?,
        reversed_at: r
            .try_get::<Option<i64>, _>("reversed_at_ms")?
            .map(UnixMillis),
        created_at: UnixMillis(r.try_get("created_at_ms")?),
        updated_at: UnixMillis(r.try_get("updated_at_ms")?),
        credited_seq: r.try_get("credited_seq")?,
        attribution: AttributionRow {
            pending: r.try_get::<i64, _>("attribution_pending")? == 1,
            end_seq: r.try_get("attribution_end_seq")?,
            cursor_seq: r.try_get("attribution_cursor_seq")?,
            left_coins: r.try_get("attribution_left_coins")?,
            attributed_coins: r.try_get("attributed_coins")?,
            order_count: r.try_get("clawback_order_count")?,
            orders_done_count: r.try_get("clawback_orders_done_count")?,
        },
        payment_provider: PaymentProviderKind::parse(&r.try_get::<String, _>("payment_provider")?)
            .ok_or_else(|| corrupt("purchase payment provider"))?,
        next_action: NextAction {
            action_type: r.try_get("next_action_type")?,
            client_secret: r.try_get("next_action_client_secret")?,
            redirect_url: r.try_get("next_action_redirect_url")?,
        },
    })
}

/// Records a purchase; `false` if its buyer already used its idempotency key (a
/// concurrent duplicate). Keys are per buyer: another user's key never collides.
pub async fn insert_purchase(conn: &mut Conn, p: &PurchaseRow) -> Result<bool, StoreError> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO purchases ({PURCHASE_RECORD_COLUMNS}, payment_provider) VALUES ($1, $2, $3, $4, \
         $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, '', '', 0, 0, NULL, $19, \
         $19, $20) \
         ON CONFLICT (user_id, idempotency_key) DO NOTHING"
    )))
    .bind(p.purchase_id.as_str())
    .bind(p.idempotency_key.as_str())
    .bind(p.fingerprint.as_str())
    .bind(p.user_id.as_str())
    .bind(p.package_id.as_str())
    .bind(p.package_version)
    .bind(p.currency_code.as_str())
    .bind(p.amount_minor)
    .bind(p.package_coins.get())
    .bind(p.bonus_coins)
    .bind(p.promotion_id.as_str())
    .bind(p.promotion_version)
    .bind(p.payment_token.as_str())
    .bind(p.state.code())
    .bind(p.decline_reason.as_str())
    .bind(p.provider_reference.as_str())
    .bind(p.charge_attempts)
    .bind(p.next_attempt_at.0)
    .bind(p.created_at.0)
    .bind(p.payment_provider.name())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn get_purchase(
    conn: &mut Conn,
    purchase_id: &str,
) -> Result<Option<PurchaseRow>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PURCHASE_COLUMNS} FROM purchases WHERE purchase_id = $1"
    )))
    .bind(purchase_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(purchase_from_row).transpose()
}

/// The purchase `user` recorded under idempotency key `key`, if any.
pub async fn get_purchase_by_key(
    conn: &mut Conn,
    user: &str,
    key: &str,
) -> Result<Option<PurchaseRow>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PURCHASE_COLUMNS} FROM purchases WHERE user_id = $1 AND idempotency_key = $2"
    )))
    .bind(user)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(purchase_from_row).transpose()
}

/// A user's purchases older than (created_at, id) `before`, newest first.
pub async fn list_purchases(
    conn: &mut Conn,
    user: &str,
    state: Option<PurchaseState>,
    before: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<PurchaseRow>, StoreError> {
    let (at, id) = before.unwrap_or((i64::MAX, String::new()));
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PURCHASE_COLUMNS} FROM purchases WHERE user_id = $1 \
         AND ($2 = 0 OR state = $2) \
         AND (created_at_ms < $3 OR (created_at_ms = $3 AND purchase_id < $4)) \
         ORDER BY created_at_ms DESC, purchase_id DESC LIMIT $5"
    )))
    .bind(user)
    .bind(state.map_or(0, PurchaseState::code))
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(purchase_from_row).collect()
}

/// How many of the user's purchases (pending or completed) got `promotion_id`.
pub async fn promotion_uses(
    conn: &mut Conn,
    user: &str,
    promotion_id: &str,
) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "SELECT COUNT(*) FROM purchases WHERE user_id = $1 AND promotion_id = $2 AND state IN (1, 2)",
    )
    .bind(user)
    .bind(promotion_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get::<i64, _>(0)?)
}

/// Pending purchases due for a charge attempt.
pub async fn due_purchases(
    conn: &mut Conn,
    now: UnixMillis,
    limit: i64,
) -> Result<Vec<PurchaseRow>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PURCHASE_COLUMNS} FROM purchases WHERE state = 1 AND next_attempt_at_ms <= $1 \
         ORDER BY next_attempt_at_ms LIMIT $2"
    )))
    .bind(now.0)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(purchase_from_row).collect()
}

/// Claims a pending purchase's next charge attempt until `lease_until`: `false` if it is
/// not pending or another worker claimed it first.
pub async fn claim_charge_attempt(
    conn: &mut Conn,
    purchase_id: &str,
    seen_attempts: i64,
    lease_until: UnixMillis,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE purchases SET charge_attempts = charge_attempts + 1, next_attempt_at_ms = $3 \
         WHERE purchase_id = $1 AND state = 1 AND charge_attempts = $2",
    )
    .bind(purchase_id)
    .bind(seen_attempts)
    .bind(lease_until.0)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn schedule_retry(
    conn: &mut Conn,
    purchase_id: &str,
    at: UnixMillis,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE purchases SET next_attempt_at_ms = $2 WHERE purchase_id = $1 AND state = 1",
    )
    .bind(purchase_id)
    .bind(at.0)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Moves a PENDING purchase to `state`; `false` if it was not pending any more.
pub async fn settle_purchase(
    conn: &mut Conn,
    purchase_id: &str,
    state: PurchaseState,
    provider_reference: &str,
    decline_reason: &str,
    now: UnixMillis,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE purchases SET state = $2, provider_reference = $3, decline_reason = $4, \
         updated_at_ms = $5, next_action_type = '', next_action_client_secret = '', \
         next_action_redirect_url = '' WHERE purchase_id = $1 AND state = 1",
    )
    .bind(purchase_id)
    .bind(state.code())
    .bind(provider_reference)
    .bind(decline_reason)
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A PENDING purchase waits for its customer: the provider's id for the charge, what the
/// customer must do, and when to look at the charge again. `false` if it is not pending.
pub async fn await_customer(
    conn: &mut Conn,
    purchase_id: &str,
    provider_reference: &str,
    action: &NextAction,
    recheck_at: UnixMillis,
    now: UnixMillis,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE purchases SET provider_reference = $2, next_action_type = $3, \
         next_action_client_secret = $4, next_action_redirect_url = $5, next_attempt_at_ms = $6, \
         updated_at_ms = $7 WHERE purchase_id = $1 AND state = 1",
    )
    .bind(purchase_id)
    .bind(provider_reference)
    .bind(action.action_type.as_str())
    .bind(action.client_secret.as_str())
    .bind(action.redirect_url.as_str())
    .bind(recheck_at.0)
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The purchase `provider` charged (or is charging) under `reference`, if any.
pub async fn get_purchase_by_provider_reference(
    conn: &mut Conn,
    provider: PaymentProviderKind,
    reference: &str,
) -> Result<Option<PurchaseRow>, StoreError> {
    if reference.is_empty() {
        return Ok(None);
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PURCHASE_COLUMNS} FROM purchases WHERE payment_provider = $1 \
         AND provider_reference = $2"
    )))
    .bind(provider.name())
    .bind(reference)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(purchase_from_row).transpose()
}

// ---- provider events ---------------------------------------------------------------------

/// Records that `provider`'s event `event_id` is being applied: `false` if it was already
/// (a redelivery). On PostgreSQL a concurrent duplicate waits here for the first to commit
/// and then finds its row; SQLite's write transactions are serialized.
pub async fn record_provider_event(
    conn: &mut Conn,
    provider: &str,
    event_id: &str,
    event_type: &str,
    now: UnixMillis,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO provider_events (provider, event_id, event_type, purchase_id, outcome, \
         received_at_ms) VALUES ($1, $2, $3, '', '', $4) ON CONFLICT (provider, event_id) DO NOTHING",
    )
    .bind(provider)
    .bind(event_id)
    .bind(event_type)
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What applying the event did.
pub async fn set_provider_event_outcome(
    conn: &mut Conn,
    provider: &str,
    event_id: &str,
    purchase_id: &str,
    outcome: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE provider_events SET purchase_id = $3, outcome = $4 \
         WHERE provider = $1 AND event_id = $2",
    )
    .bind(provider)
    .bind(event_id)
    .bind(purchase_id)
    .bind(outcome)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// How many events of `provider` were applied (tests and operators).
pub async fn count_provider_events(conn: &mut Conn, provider: &str) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT COUNT(*) FROM provider_events WHERE provider = $1")
        .bind(provider)
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get::<i64, _>(0)?)
}

/// What a reversal records besides who and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReversalMarks {
    pub clawed_back: i64,
    pub debt: i64,
    /// Where the attribution walk starts (the purchase's credit entry).
    pub walk_from_seq: i64,
    /// Where it ends (the buyer's last entry before the reversal).
    pub walk_end_seq: i64,
}

/// Marks a COMPLETED purchase reversed, its debt coins left to attribute; `false` if it
/// was not completed.
pub async fn mark_reversed(
    conn: &mut Conn,
    purchase_id: &str,
    actor: &str,
    reason: &str,
    marks: ReversalMarks,
    now: UnixMillis,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE purchases SET state = 4, reversal_actor = $2, reversal_reason = $3, \
         reversal_clawed_back_coins = $4, reversal_debt_coins = $5, reversed_at_ms = $6, \
         updated_at_ms = $6, attribution_pending = $7, attribution_cursor_seq = $8, \
         attribution_end_seq = $9, attribution_left_coins = $5 \
         WHERE purchase_id = $1 AND state = 2",
    )
    .bind(purchase_id)
    .bind(actor)
    .bind(reason)
    .bind(marks.clawed_back)
    .bind(marks.debt)
    .bind(now.0)
    .bind(i64::from(marks.debt > 0))
    .bind(marks.walk_from_seq)
    .bind(marks.walk_end_seq)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records where a purchase's credit entry is in its buyer's ledger.
pub async fn set_credited_seq(
    conn: &mut Conn,
    purchase_id: &str,
    seq: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE purchases SET credited_seq = $2 WHERE purchase_id = $1")
        .bind(purchase_id)
        .bind(seq)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

// ---- attribution and clawback orders --------------------------------------------------

/// The buyer's reversed purchases whose attribution is not finished, in the order they
/// were reversed (reversal time, then purchase id).
pub async fn pending_attributions(
    conn: &mut Conn,
    user: &str,
) -> Result<Vec<PurchaseRow>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PURCHASE_COLUMNS} FROM purchases WHERE attribution_pending = 1 AND user_id = $1 \
         ORDER BY reversed_at_ms, purchase_id"
    )))
    .bind(user)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(purchase_from_row).collect()
}

/// Up to `limit` buyers with an unfinished attribution, those reversed longest ago first.
pub async fn buyers_with_pending_attribution(
    conn: &mut Conn,
    limit: i64,
) -> Result<Vec<ResourceId>, StoreError> {
    let rows = sqlx::query(
        "SELECT user_id FROM purchases WHERE attribution_pending = 1 \
         GROUP BY user_id ORDER BY MIN(reversed_at_ms), user_id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|r| id(r, "user_id")).collect()
}

/// Up to `limit` of the buyer's debits (direct or hold captures) whose entries lie in
/// `(after_seq, end_seq]` of the buyer's ledger and that still have attributable coins
/// (coins − refunded − attributed > 0), in ledger order.
pub async fn attribution_walk(
    conn: &mut Conn,
    user: &str,
    after_seq: i64,
    end_seq: i64,
    limit: i64,
) -> Result<Vec<WalkedDebit>, StoreError> {
    let rows = sqlx::query(
        "SELECT d.operation_id, j.user_seq, d.coins, d.refunded_coins, d.attributed_coins, \
         d.saga_id FROM journal_entries j JOIN debits d ON d.operation_id = j.operation_id \
         WHERE j.user_id = $1 AND j.user_seq > $2 AND j.user_seq <= $3 AND j.reason IN ($4, $5) \
         AND d.user_id = $1 AND d.coins - d.refunded_coins - d.attributed_coins > 0 \
         ORDER BY j.user_seq LIMIT $6",
    )
    .bind(user)
    .bind(after_seq)
    .bind(end_seq)
    .bind(Reason::GiftDebit.code())
    .bind(Reason::HoldCapture.code())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(WalkedDebit {
                operation_id: id(r, "operation_id")?,
                seq: r.try_get("user_seq")?,
                coins: r.try_get("coins")?,
                refunded_coins: r.try_get("refunded_coins")?,
                attributed_coins: r.try_get("attributed_coins")?,
                gift: optional_id(r, "saga_id")?.is_some(),
            })
        })
        .collect()
}

/// Adds attributed coins to debits, in one statement, each only while its attributed
/// coins stay within its coins; `false` if any would not (the caller rolls back).
pub async fn add_attributed(conn: &mut Conn, taken: &[Attributed]) -> Result<bool, StoreError> {
    if taken.is_empty() {
        return Ok(true);
    }
    let rows = batch::KeyedRows {
        key_column: "operation_id",
        first: 1,
        rows: taken.len(),
        per_row: 2,
    };
    let sql = format!(
        "UPDATE debits SET attributed_coins = attributed_coins + {} \
         WHERE operation_id IN ({}) AND attributed_coins + {} <= coins",
        rows.case(1),
        rows.keys(),
        rows.case(1),
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for t in taken {
        query = query.bind(t.operation_id.as_str()).bind(t.coins);
    }
    let done = query.execute(&mut *conn).await?;
    Ok(done.rows_affected() == taken.len() as u64)
}

/// A reversal's attribution moved on: the walk's new place, the coins still left, whether
/// it is finished, and what this stretch attributed and ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttributionStep {
    pub cursor_seq: i64,
    pub left_coins: i64,
    pub pending: bool,
    pub attributed: i64,
    pub orders: i64,
}

pub async fn advance_attribution(
    conn: &mut Conn,
    purchase_id: &str,
    step: AttributionStep,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE purchases SET attribution_cursor_seq = $2, attribution_left_coins = $3, \
         attribution_pending = $4, attributed_coins = attributed_coins + $5, \
         clawback_order_count = clawback_order_count + $6 WHERE purchase_id = $1",
    )
    .bind(purchase_id)
    .bind(step.cursor_seq)
    .bind(step.left_coins)
    .bind(i64::from(step.pending))
    .bind(step.attributed)
    .bind(step.orders)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A clawback order as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClawbackOrderRow {
    pub clawback_id: String,
    pub purchase_id: ResourceId,
    pub operation_id: ResourceId,
    pub user_id: ResourceId,
    pub coins: i64,
    /// The reversal's reason, sent to payout with the order.
    pub reason: String,
    pub state: ClawbackOrderState,
    pub diamonds: i64,
    pub applied_coins: i64,
    pub attempts: i64,
    pub last_error: String,
    pub next_attempt_at: UnixMillis,
    pub created_at: UnixMillis,
    pub done_at: Option<UnixMillis>,
}

const CLAWBACK_ORDER_COLUMNS: &str = "clawback_id, purchase_id, operation_id, user_id, coins, \
     reason, state, diamonds, applied_coins, attempts, last_error, next_attempt_at_ms, \
     created_at_ms, done_at_ms";

fn clawback_order_from_row(r: &AnyRow) -> Result<ClawbackOrderRow, StoreError> {
    Ok(ClawbackOrderRow {
        clawback_id: r.try_get("clawback_id")?,
        purchase_id: id(r, "purchase_id")?,
        operation_id: id(r, "operation_id")?,
        user_id: id(r, "user_id")?,
        coins: r.try_get("coins")?,
        reason: r.try_get("reason")?,
        state: ClawbackOrderState::from_code(r.try_get("state")?)
            .ok_or_else(|| corrupt("clawback order state"))?,
        diamonds: r.try_get("diamonds")?,
        applied_coins: r.try_get("applied_coins")?,
        attempts: r.try_get("attempts")?,
        last_error: r.try_get("last_error")?,
        next_attempt_at: UnixMillis(r.try_get("next_attempt_at_ms")?),
        created_at: UnixMillis(r.try_get("created_at_ms")?),
        done_at: r.try_get::<Option<i64>, _>("done_at_ms")?.map(UnixMillis),
    })
}

/// Records clawback orders, in one statement.
pub async fn insert_clawback_orders(
    conn: &mut Conn,
    orders: &[ClawbackOrderRow],
) -> Result<(), StoreError> {
    if orders.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO clawback_orders ({CLAWBACK_ORDER_COLUMNS}) VALUES {}",
        batch::rows(1, orders.len(), 14)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for o in orders {
        query = query
            .bind(o.clawback_id.as_str())
            .bind(o.purchase_id.as_str())
            .bind(o.operation_id.as_str())
            .bind(o.user_id.as_str())
            .bind(o.coins)
            .bind(o.reason.as_str())
            .bind(o.state.code())
            .bind(o.diamonds)
            .bind(o.applied_coins)
            .bind(o.attempts)
            .bind(o.last_error.as_str())
            .bind(o.next_attempt_at.0)
            .bind(o.created_at.0)
            .bind(o.done_at.map(|t| t.0));
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

/// PENDING orders due for a delivery attempt, longest due first.
pub async fn due_clawback_orders(
    conn: &mut Conn,
    now: UnixMillis,
    limit: i64,
) -> Result<Vec<ClawbackOrderRow>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CLAWBACK_ORDER_COLUMNS} FROM clawback_orders \
         WHERE state = 1 AND next_attempt_at_ms <= $1 ORDER BY next_attempt_at_ms LIMIT $2"
    )))
    .bind(now.0)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(clawback_order_from_row).collect()
}

/// Claims a PENDING order's next delivery attempt until `lease_until`: `false` if it is
/// not pending any more or another worker claimed it first.
pub async fn claim_clawback_order(
    conn: &mut Conn,
    clawback_id: &str,
    seen_attempts: i64,
    lease_until: UnixMillis,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE clawback_orders SET attempts = attempts + 1, next_attempt_at_ms = $3 \
         WHERE clawback_id = $1 AND state = 1 AND attempts = $2",
    )
    .bind(clawback_id)
    .bind(seen_attempts)
    .bind(lease_until.0)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Moves the order, PENDING under the claim of attempt `attempts`, to APPLIED or
/// NO_CREDIT and counts it done on its purchase; `false` if it was not (another worker's
/// claim took it over).
pub async fn finish_clawback_order(
    conn: &mut Conn,
    order: &ClawbackOrderRow,
    attempts: i64,
    state: ClawbackOrderState,
    diamonds: i64,
    applied_coins: i64,
    now: UnixMillis,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE clawback_orders SET state = $3, diamonds = $4, applied_coins = $5, \
         done_at_ms = $6, last_error = '' WHERE clawback_id = $1 AND state = 1 AND attempts = $2",
    )
    .bind(order.clawback_id.as_str())
    .bind(attempts)
    .bind(state.code())
    .bind(diamonds)
    .bind(applied_coins)
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE purchases SET clawback_orders_done_count = clawback_orders_done_count + 1 \
         WHERE purchase_id = $1",
    )
    .bind(order.purchase_id.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// Schedules the order's next attempt (after attempt `attempts` failed with `error`).
pub async fn retry_clawback_order(
    conn: &mut Conn,
    clawback_id: &str,
    attempts: i64,
    at: UnixMillis,
    error: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE clawback_orders SET next_attempt_at_ms = $3, last_error = $4 \
         WHERE clawback_id = $1 AND state = 1 AND attempts = $2",
    )
    .bind(clawback_id)
    .bind(attempts)
    .bind(at.0)
    .bind(error)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Orders after (created_at, clawback id) `after`, oldest first, of one purchase or all,
/// in one state or all.
pub async fn list_clawback_orders(
    conn: &mut Conn,
    purchase_id: Option<&str>,
    state: Option<ClawbackOrderState>,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<ClawbackOrderRow>, StoreError> {
    let (at, after_id) = after.unwrap_or((i64::MIN, String::new()));
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CLAWBACK_ORDER_COLUMNS} FROM clawback_orders \
         WHERE ($1 = '' OR purchase_id = $1) AND ($2 = 0 OR state = $2) \
         AND (created_at_ms > $3 OR (created_at_ms = $3 AND clawback_id > $4)) \
         ORDER BY created_at_ms, clawback_id LIMIT $5"
    )))
    .bind(purchase_id.unwrap_or(""))
    .bind(state.map_or(0, ClawbackOrderState::code))
    .bind(at)
    .bind(after_id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(clawback_order_from_row).collect()
}

/// The buyer's purchases recorded after `since`: how many (every state), and the money of
/// those in `currency` that were not declined.
pub async fn recent_purchases(
    conn: &mut Conn,
    user: &str,
    currency: &str,
    since: UnixMillis,
) -> Result<RecentPurchases, StoreError> {
    let row = sqlx::query(
        "SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN currency_code = $2 AND state <> 3 \
         THEN amount_minor ELSE 0 END), 0) AS BIGINT) FROM purchases \
         WHERE user_id = $1 AND created_at_ms > $3",
    )
    .bind(user)
    .bind(currency)
    .bind(since.0)
    .fetch_one(&mut *conn)
    .await?;
    Ok(RecentPurchases {
        count: row.try_get(0)?,
        amount_minor: row.try_get(1)?,
    })
}

// ---- audit ----------------------------------------------------------------------------

/// Ledger-wide figures for I1 and I2.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerSummary {
    /// (kind, number of accounts, sum of postings).
    pub kinds: Vec<(AccountKind, i64, i64)>,
    pub total: i64,
    pub unbalanced_entries: i64,
    pub negative_balances: i64,
    pub entries: i64,
    pub total_debt: i64,
    /// User accounts whose materialized balance differs from the sum of their postings.
    pub balance_mismatches: i64,
}

/// The balance of every account kind, in [`AccountKind::ALL`] order: (kind, number of
/// accounts, sum of postings). The sums come from one statement, so they are one snapshot
/// of the ledger and add up to 0 even while gifts are being written (I1); one scan of the
/// postings.
pub async fn ledger_totals(conn: &mut Conn) -> Result<Vec<(AccountKind, i64, i64)>, StoreError> {
    let rows = sqlx::query(
        "SELECT CASE WHEN account LIKE 'user:%' THEN 'user:' ELSE account END AS kind, \
         CAST(SUM(amount_coins) AS BIGINT) FROM postings GROUP BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let users = sqlx::query("SELECT COUNT(*) FROM accounts")
        .fetch_one(&mut *conn)
        .await?
        .try_get::<i64, _>(0)?;
    let mut kinds: Vec<(AccountKind, i64, i64)> = AccountKind::ALL
        .iter()
        .map(|&k| (k, if k == AccountKind::User { users } else { 1 }, 0))
        .collect();
    for row in rows {
        let account: String = row.try_get(0)?;
        let kind = AccountKind::of_account(&account).ok_or_else(|| corrupt("posting account"))?;
        if let Some(slot) = kinds.iter_mut().find(|(k, _, _)| *k == kind) {
            slot.2 = row.try_get(1)?;
        }
    }
    Ok(kinds)
}

pub async fn ledger_summary(conn: &mut Conn) -> Result<LedgerSummary, StoreError> {
    let mut summary = LedgerSummary {
        kinds: ledger_totals(conn).await?,
        ..LedgerSummary::default()
    };
    summary.total = summary.kinds.iter().map(|k| k.2).sum();
    let row = sqlx::query(
        "SELECT \
           (SELECT COUNT(*) FROM (SELECT entry_id FROM postings GROUP BY entry_id \
                                  HAVING SUM(amount_coins) <> 0 OR COUNT(*) <> 2) u) \
             + (SELECT COUNT(*) FROM journal_entries e \
                WHERE NOT EXISTS (SELECT 1 FROM postings p WHERE p.entry_id = e.entry_id)), \
           (SELECT COUNT(*) FROM accounts WHERE balance_coins < 0 OR held_coins > balance_coins), \
           (SELECT COUNT(*) FROM journal_entries), \
           (SELECT CAST(COALESCE(SUM(debt_coins), 0) AS BIGINT) FROM accounts), \
           (SELECT COUNT(*) FROM accounts a WHERE a.balance_coins <> COALESCE((SELECT SUM(p.amount_coins) \
              FROM postings p WHERE p.account = 'user:' || a.user_id), 0))",
    )
    .fetch_one(&mut *conn)
    .await?;
    summary.unbalanced_entries = row.try_get(0)?;
    summary.negative_balances = row.try_get(1)?;
    summary.entries = row.try_get(2)?;
    summary.total_debt = row.try_get(3)?;
    summary.balance_mismatches = row.try_get(4)?;
    Ok(summary)
}

/// The id in `column`.
fn id(row: &AnyRow, column: &str) -> Result<ResourceId, StoreError> {
    stored(ResourceId::parse(&row.try_get::<String, _>(column)?))
}

/// The id in `column`, stored as "" when there is none.
fn optional_id(row: &AnyRow, column: &str) -> Result<Option<ResourceId>, StoreError> {
    let raw: String = row.try_get(column)?;
    if raw.is_empty() {
        return Ok(None);
    }
    stored(ResourceId::parse(&raw)).map(Some)
}

/// How an optional id is stored: "" when there is none.
fn or_empty(id: Option<&ResourceId>) -> &str {
    id.map_or("", ResourceId::as_str)
}

fn coins(row: &AnyRow, column: &str) -> Result<Coins, StoreError> {
    stored(Coins::parse(row.try_get(column)?))
}

fn text(row: &AnyRow, column: &str) -> Result<Text, StoreError> {
    stored(Text::parse(&row.try_get::<String, _>(column)?))
}

/// A stored value that no longer parses: only validated values are written, so this is
/// reported as a database error, not served.
fn stored<T>(parsed: Result<T, String>) -> Result<T, StoreError> {
    parsed.map_err(|e| {
        StoreError::Database(sqlx::Error::Decode(
            format!("stored wallet row is invalid: {e}").into(),
        ))
    })
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Database(sqlx::Error::Decode(
        format!("stored {what} is invalid").into(),
    ))
}
