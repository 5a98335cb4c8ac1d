//! The payout service's use cases. A write takes a domain command and a connection
//! inside its write transaction, applies the domain's rules and the store's SQL, and
//! either does all of its writes or (by returning a [`PayoutError`], which rolls the
//! transaction back) none; a read takes the database and uses one pooled connection.
//! The gRPC edge parses requests into these commands and maps the errors to the
//! contract's reasons; nothing here knows about proto types.
//!
//! - [`creators`]: registering creators, their payout accounts and the four-eyes review
//!   of them, suspension and reinstatement (each journaled).
//! - [`ledger`]: crediting diamonds (at most once per operation id; one gift or a batch
//!   of them, on one path), balances, earnings, credits and the ledger's summary.
//! - [`payouts`]: requesting a payout (the hold), reading payouts.
//! - [`webhooks`]: the payout provider's events, each applied once by its id.
//! - [`clawbacks`]: taking back a gift's diamonds (pending first, then available, then
//!   debt), at most once per clawback id; reading clawbacks.
//!
//! Time comes from the service's [`Clock`] (the system's in production), so the rules
//! that wait (diamond maturity) can be tested by moving a manual clock.
//!
//! Every write on a creator locks the creator's row first (`store::lock_creator`; a batch
//! of credits locks all of its creators in one statement, in key order,
//! `store::lock_creators`), so credits, payout requests, suspensions and the worker's
//! hand-over serialize per creator.

pub mod clawbacks;
pub mod creators;
pub mod ledger;
pub mod payouts;
pub mod webhooks;

use ovation_store::StoreError;
use ovation_store::db::Conn;
use ovation_types::{Clock, PageSize, PageToken, ResourceId, UnixMillis};

use crate::domain::{Creator, PayoutRule};
use crate::store;

/// Why an operation did not happen. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum PayoutError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A rule of the domain refused it.
    #[error(transparent)]
    Rule(#[from] PayoutRule),
    #[error("creator {0} not found")]
    CreatorNotFound(ResourceId),
    #[error("payout {0} not found")]
    PayoutNotFound(ResourceId),
    #[error("creator {0} is already registered")]
    CreatorExists(ResourceId),
    /// A credit for a creator that is not registered: refused for good, so the gift saga
    /// stops retrying it.
    #[error("creator {0} is not registered: the credit is refused for good")]
    CreditForUnknownCreator(ResourceId),
    /// A credit for a creator who may not receive one (suspended): refused for good.
    #[error("{0}: the credit is refused for good")]
    CreditRefused(PayoutRule),
    /// An operation id already credited with other parameters.
    #[error("operation {0} was already credited with other parameters")]
    OperationIdReused(ResourceId),
    /// A concurrent credit with the same operation id has not committed yet.
    #[error("a concurrent credit with this operation id is in progress; retry")]
    ConcurrentCredit,
    /// A clawback names a credit that does not exist.
    #[error("no credit with operation id {0}: nothing to claw back")]
    CreditNotFound(ResourceId),
    /// A clawback id already used with other parameters.
    #[error("clawback {0} was already applied with other parameters")]
    ClawbackIdReused(String),
    /// A concurrent clawback with the same id committed first (another creator's lock):
    /// run again, and it answers as a retry.
    #[error("a concurrent clawback with this id committed first; retry")]
    ConcurrentClawback,
    /// The stored ledger breaks an invariant: our bug, never the caller's.
    #[error("{0}")]
    Broken(String),
}

/// Who made a call, as authenticated: what the journal records. Never a request field.
#[derive(Clone, Debug)]
pub struct Who {
    /// The token's subject: the actor of record.
    pub subject: String,
    /// The subject, and the gateway that presented the token, if any.
    pub label: String,
}

/// Which page of a list: how many rows, continuing after the (instant, id) of the last
/// row of the page before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub size: PageSize,
    pub after: Option<(i64, String)>,
}

/// One page of a list and the token of the next page (empty on the last).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub rows: Vec<T>,
    pub next_page_token: String,
}

impl<T> Page<T> {
    /// Cuts rows fetched with `size.fetch_limit()` to one page; `key` is a row's
    /// (instant, id), what the next page continues after.
    fn cut(size: PageSize, mut rows: Vec<T>, key: impl Fn(&T) -> (i64, &str)) -> Page<T> {
        let next_page_token = size.cut(&mut rows, |row| {
            let (at, id) = key(row);
            PageToken::keyset_cursor(at, id)
        });
        Page {
            rows,
            next_page_token,
        }
    }
}

/// Refuses a read about a creator that is not registered (their balance row is made
/// with them).
async fn require_registered(conn: &mut Conn, id: &ResourceId) -> Result<(), PayoutError> {
    if store::get_balance(conn, id).await?.is_none() {
        return Err(PayoutError::CreatorNotFound(id.clone()));
    }
    Ok(())
}

/// A creator's row locked for a change, and the instant of the change: taken after the
/// lock, so whatever held the lock before (a credit, a payout request, a payout handed
/// to the provider, a suspension) happened before it.
async fn locked_creator(
    conn: &mut Conn,
    id: &ResourceId,
    clock: &Clock,
) -> Result<(Creator, UnixMillis), PayoutError> {
    let not_found = || PayoutError::CreatorNotFound(id.clone());
    if !store::lock_creator(conn, id).await? {
        return Err(not_found());
    }
    let creator = store::get_creator(conn, id).await?.ok_or_else(not_found)?;
    Ok((creator, clock.now()))
}
