//! Accounts: opening one, the age an operator sets on it, its spending limits, and the
//! reads of one user's account and history. Writes run inside the caller's write
//! transaction and, as in `ledger`, lock the user's row before anything else.

use ovation_store::db::Conn;
use ovation_types::{ResourceId, Text, UnixMillis};

use crate::domain::{AgeStatus, Caps, Limits, LimitsStatus, PurchaseState, VerifiedAge};
use crate::ledger::{WalletError, lock_account, not_found};
use crate::store::{self, AccountRow, EntryRow, PurchaseRow};

/// Opening an account, validated.
#[derive(Clone, Debug)]
pub struct OpenAccountCmd {
    pub user_id: ResourceId,
    /// The opener asks for a minor's account: a restriction anyone may choose.
    pub minor: bool,
    /// The age the caller's token vouches for, about this user.
    pub verified_age: Option<VerifiedAge>,
}

/// Opens an account, at most one per user.
pub async fn open(
    conn: &mut Conn,
    cmd: &OpenAccountCmd,
    now: UnixMillis,
) -> Result<AccountRow, WalletError> {
    // `minor: false` is no proof of age: only a verified claim (or an operator) is.
    let age = AgeStatus::at_opening(cmd.minor, cmd.verified_age);
    store::create_account(conn, cmd.user_id.as_str(), age, now)
        .await?
        .ok_or_else(|| WalletError::AccountExists(cmd.user_id.to_string()))
}

/// An operator's decision on an account holder's age, validated.
#[derive(Clone, Debug)]
pub struct SetMinorCmd {
    pub user_id: ResourceId,
    pub minor: bool,
    /// The actor of record: the caller.
    pub actor: String,
    pub reason: Text,
}

/// Marks or unmarks a minor's account, journalled as an admin action.
pub async fn set_minor(
    conn: &mut Conn,
    cmd: &SetMinorCmd,
    now: UnixMillis,
) -> Result<AccountRow, WalletError> {
    let user = cmd.user_id.as_str();
    lock_account(conn, user, now).await?;
    // Unmarking a minor is an operator's verification of adulthood.
    store::set_age(conn, user, AgeStatus::set_by_operator(cmd.minor)).await?;
    let action = if cmd.minor {
        "MARK_MINOR"
    } else {
        "UNMARK_MINOR"
    };
    store::record_admin_action(conn, user, action, &cmd.actor, cmd.reason.as_str(), now).await?;
    account(conn, &cmd.user_id).await
}

/// New spending caps for a user, validated.
#[derive(Clone, Debug)]
pub struct SetLimitsCmd {
    pub user_id: ResourceId,
    /// The complete new set: an unset cap means none.
    pub caps: Caps,
    /// The actor of record: the caller.
    pub actor: String,
    pub reason: Text,
}

/// Sets a user's caps (stricter at once, looser after `cooling_off_ms`).
pub async fn set_limits(
    conn: &mut Conn,
    cmd: &SetLimitsCmd,
    cooling_off_ms: i64,
    now: UnixMillis,
) -> Result<LimitsStatus, WalletError> {
    let user = cmd.user_id.as_str();
    lock_account(conn, user, now).await?;
    let limits =
        store::get_limits(conn, user)
            .await?
            .set(cmd.caps, &cmd.actor, now, cooling_off_ms);
    store::put_limits(conn, user, &limits).await?;
    store::record_admin_action(
        conn,
        user,
        "SET_SPENDING_LIMITS",
        &cmd.actor,
        cmd.reason.as_str(),
        now,
    )
    .await?;
    limits_status(conn, &cmd.user_id, &limits, now).await
}

/// A user's account.
pub async fn account(conn: &mut Conn, user: &ResourceId) -> Result<AccountRow, WalletError> {
    store::get_account(conn, user.as_str())
        .await?
        .ok_or_else(|| not_found("account", user.as_str()))
}

/// A user's spending limits as of `now`, with what they used against them.
pub async fn limits(
    conn: &mut Conn,
    user: &ResourceId,
    now: UnixMillis,
) -> Result<LimitsStatus, WalletError> {
    account(conn, user).await?;
    let limits = store::get_limits(conn, user.as_str()).await?;
    limits_status(conn, user, &limits, now).await
}

async fn limits_status(
    conn: &mut Conn,
    user: &ResourceId,
    limits: &Limits,
    now: UnixMillis,
) -> Result<LimitsStatus, WalletError> {
    Ok(LimitsStatus {
        user_id: user.clone(),
        limits: limits.at(now),
        spent: store::usage(conn, user.as_str(), now, false).await?,
        bought: store::usage(conn, user.as_str(), now, true).await?,
        at: now,
    })
}

/// A user's journal entries with seq < `before` (or all), newest first.
pub async fn transactions(
    conn: &mut Conn,
    user: &ResourceId,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<EntryRow>, WalletError> {
    account(conn, user).await?;
    Ok(store::list_entries(conn, user.as_str(), before, limit).await?)
}

/// A user's purchases (in `state`, or all) older than (created_at, id) `before`, newest
/// first.
pub async fn purchases(
    conn: &mut Conn,
    user: &ResourceId,
    state: Option<PurchaseState>,
    before: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<PurchaseRow>, WalletError> {
    account(conn, user).await?;
    Ok(store::list_purchases(conn, user.as_str(), state, before, limit).await?)
}
