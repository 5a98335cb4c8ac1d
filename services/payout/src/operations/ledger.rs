//! The diamond ledger: crediting diamonds for gifts (at most once per operation id),
//! and what the ledger shows: balances, earnings, credits and its summary.

use ovation_store::Db;
use ovation_store::db::Conn;
use ovation_types::{ResourceId, TimeWindow};

use super::{Page, PageRequest, PayoutError, locked_creator, require_registered};
use crate::domain::{Balance, Credit, CreditRequest, PayoutRule};
use crate::store::{self, LedgerSummary, Posted};

/// ListEarnings: a creator's credits, newest first, optionally one stream's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EarningsQuery {
    pub creator_id: ResourceId,
    pub stream_id: Option<ResourceId>,
    pub page: PageRequest,
}

/// ListCredits: named credits, or every credit of a time window, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreditsQuery {
    /// These operations' credits (the ones that exist), each once.
    ByOperation(Vec<ResourceId>),
    Window {
        window: TimeWindow,
        page: PageRequest,
    },
}

/// Credits a creator for one gift, at most once per operation id: a retry of a recorded
/// operation answers the original credit, whatever has happened to the creator since;
/// other parameters under the same operation id are refused.
pub async fn credit(conn: &mut Conn, request: CreditRequest) -> Result<Credit, PayoutError> {
    if let Some(existing) = store::get_credit(conn, &request.operation_id).await? {
        return replay(existing, &request);
    }
    // Locked, so a credit lands wholly before a suspension or is refused by it.
    let (creator, now) = locked_creator(conn, &request.creator_id)
        .await
        .map_err(|e| match e {
            PayoutError::CreatorNotFound(id) => PayoutError::CreditForUnknownCreator(id),
            other => other,
        })?;
    creator
        .check_may_receive_credit()
        .map_err(PayoutError::CreditRefused)?;
    let credit = Credit::new(request.clone(), now)?;
    if !store::insert_credit(conn, &credit).await? {
        // A concurrent request with the same operation id committed first.
        let existing = store::get_credit(conn, &request.operation_id)
            .await?
            .ok_or(PayoutError::ConcurrentCredit)?;
        return replay(existing, &request);
    }
    if let Some(entry) = credit.entry()
        && store::post_entry(conn, &entry).await? == Posted::Refused
    {
        return Err(PayoutRule::LifetimeLimit.into());
    }
    Ok(credit)
}

/// The recorded credit, if `request` asks for exactly it.
fn replay(existing: Credit, request: &CreditRequest) -> Result<Credit, PayoutError> {
    if existing.is_same_request(request) {
        Ok(existing)
    } else {
        Err(PayoutError::OperationIdReused(request.operation_id.clone()))
    }
}

/// A registered creator's diamond balance.
pub async fn balance(db: &Db, id: &ResourceId) -> Result<Balance, PayoutError> {
    store::get_balance(&mut *db.conn().await?, id)
        .await?
        .ok_or_else(|| PayoutError::CreatorNotFound(id.clone()))
}

/// One page of a registered creator's earnings.
pub async fn earnings(db: &Db, query: EarningsQuery) -> Result<Page<Credit>, PayoutError> {
    let mut conn = db.conn().await?;
    require_registered(&mut conn, &query.creator_id).await?;
    let rows = store::list_earnings(
        &mut conn,
        &query.creator_id,
        query.stream_id.as_ref(),
        query.page.after,
        query.page.size.fetch_limit(),
    )
    .await?;
    Ok(Page::cut(query.page.size, rows, credit_key))
}

/// The credits a query selects (by operation ids: one page, without a next).
pub async fn credits(db: &Db, query: CreditsQuery) -> Result<Page<Credit>, PayoutError> {
    let mut conn = db.conn().await?;
    match query {
        CreditsQuery::ByOperation(ids) => {
            let mut rows = Vec::with_capacity(ids.len());
            for id in &ids {
                if let Some(credit) = store::get_credit(&mut conn, id).await? {
                    rows.push(credit);
                }
            }
            rows.sort_by(|a, b| credit_key(a).cmp(&credit_key(b)));
            rows.dedup_by(|a, b| a.request.operation_id == b.request.operation_id);
            Ok(Page {
                rows,
                next_page_token: String::new(),
            })
        }
        CreditsQuery::Window { window, page } => {
            let rows =
                store::list_credits(&mut conn, page.after, window, page.size.fetch_limit()).await?;
            Ok(Page::cut(page.size, rows, credit_key))
        }
    }
}

/// What credits are ordered and paged by: (created at, operation id).
fn credit_key(c: &Credit) -> (i64, &str) {
    (c.created_at.0, c.request.operation_id.as_str())
}

/// The ledger's totals and its invariant checks (I1, I2), logged when a creator's
/// balance row disagrees with their postings.
pub async fn summary(db: &Db) -> Result<LedgerSummary, PayoutError> {
    let summary = store::ledger_summary(&mut *db.conn().await?).await?;
    if summary.balance_mismatches != 0 {
        tracing::error!(
            mismatches = summary.balance_mismatches,
            "creator balance rows disagree with their postings"
        );
    }
    Ok(summary)
}
