//! The diamond ledger: crediting diamonds for gifts (at most once per operation id; they
//! settle clawback debt first, the rest is pending), maturing due credits, settling debt
//! from available diamonds, and what the ledger shows: balances, earnings, credits and
//! its summary.

use std::collections::{BTreeMap, BTreeSet};

use ovation_store::Db;
use ovation_store::batch::distinct;
use ovation_store::db::Conn;
use ovation_types::{Clock, ResourceId, TimeWindow, UnixMillis};

use super::{Page, PageRequest, PayoutError, require_registered};
use crate::domain::{
    BalanceView, Credit, CreditOutcome, CreditRefusal, CreditRequest, CreditTarget, JournalEntry,
    Maturity, PayoutRule, credited_per_creator, judge_credits,
};
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
/// other parameters under the same operation id are refused. The batch path with one
/// item, so CreditDiamonds and CreditDiamondsBatch cannot disagree.
pub async fn credit(
    conn: &mut Conn,
    request: CreditRequest,
    clock: &Clock,
) -> Result<Credit, PayoutError> {
    credit_batch(conn, vec![request], clock)
        .await?
        .pop()
        .ok_or_else(|| PayoutError::Broken("a batch of one credit answered nothing".into()))?
}

/// Credits creators for many gifts in the caller's write transaction, each item applied
/// or refused exactly as [`credit`] would alone, in the batch's order: one result per
/// item. An `Err` of the whole (a database fault, a broken invariant) means nothing may
/// be committed.
///
/// A few statements whatever the batch's size: the batch's creators are locked and read
/// in one statement (so each credit lands wholly before a suspension or is refused by
/// it), their lifetime earnings and the batch's recorded credits in one each, the domain
/// judges every item ([`judge_credits`]), then one multi-row statement each records the
/// new credits, their journal entries and their postings, and one UPDATE moves every
/// creator's balance by the sum of their new credits: a creator gifted many times in a
/// batch is one balance update, not a queue on their row.
pub async fn credit_batch(
    conn: &mut Conn,
    requests: Vec<CreditRequest>,
    clock: &Clock,
) -> Result<Vec<Result<Credit, PayoutError>>, PayoutError> {
    let creator_ids = distinct(requests.iter().map(|r| &r.creator_id));
    let creators = store::lock_creators(conn, &creator_ids).await?;
    // Taken after the locks: whatever held a creator before happened before these credits.
    let now = clock.now();
    let balances: BTreeMap<ResourceId, (i64, i64)> = store::lifetime_and_debt(conn, &creator_ids)
        .await?
        .into_iter()
        .map(|(id, lifetime, debt)| (id, (lifetime, debt)))
        .collect();
    let mut targets = BTreeMap::new();
    for creator in creators {
        let (lifetime_earned, debt) = *balances.get(&creator.id).ok_or_else(|| {
            PayoutError::Broken(format!("creator {} has no balance row", creator.id))
        })?;
        targets.insert(
            creator.id.clone(),
            CreditTarget {
                creator,
                lifetime_earned,
                debt,
            },
        );
    }
    let operation_ids = distinct(requests.iter().map(|r| &r.operation_id));
    let recorded = store::get_credits(conn, &operation_ids).await?;
    let mut outcomes = judge_credits(requests.clone(), recorded, &targets, now);

    let new: Vec<&Credit> = outcomes
        .iter()
        .filter_map(|o| match o {
            CreditOutcome::New(credit) => Some(credit),
            _ => None,
        })
        .collect();
    let inserted: BTreeSet<String> = store::insert_credits(conn, &new)
        .await?
        .into_iter()
        .collect();
    if inserted.len() < new.len() {
        // A concurrent transaction recorded some of these operation ids first (under
        // another creator's lock): answer them as a retry of its credit would be.
        let lost: BTreeSet<ResourceId> = new
            .iter()
            .map(|c| c.request.operation_id.clone())
            .filter(|id| !inserted.contains(id.as_str()))
            .collect();
        let twins = store::get_credits(conn, &lost.iter().collect::<Vec<_>>()).await?;
        // Every item under a lost operation id is judged again, as if the twin had been
        // recorded before the batch (as it was, from where the batch stands).
        for (outcome, request) in outcomes.iter_mut().zip(&requests) {
            if lost.contains(&request.operation_id) {
                *outcome = match twins
                    .iter()
                    .find(|t| t.request.operation_id == request.operation_id)
                {
                    Some(twin) if twin.is_same_request(request) => {
                        CreditOutcome::Replay(twin.clone())
                    }
                    Some(_) => CreditOutcome::Refused(CreditRefusal::OperationIdReused),
                    None => return Err(PayoutError::ConcurrentCredit),
                };
            }
        }
    }

    let written: Vec<&Credit> = outcomes
        .iter()
        .filter_map(|o| match o {
            CreditOutcome::New(credit) => Some(credit),
            _ => None,
        })
        .collect();
    let entries: Vec<_> = written.iter().filter_map(|c| c.entry()).collect();
    store::insert_credit_entries(conn, &entries, now).await?;
    let sums = credited_per_creator(&written).ok_or(PayoutRule::Overflow)?;
    if store::add_credited_diamonds(conn, &sums).await? == Posted::Refused {
        // The domain judged the limit on the balances read under the locks: a balance
        // that moved anyway is a broken invariant, not the caller's fault.
        return Err(PayoutError::Broken(
            "a creator balance refused credits judged under its lock".into(),
        ));
    }

    Ok(outcomes
        .into_iter()
        .zip(requests)
        .map(|(outcome, request)| match outcome {
            CreditOutcome::New(credit) | CreditOutcome::Replay(credit) => Ok(credit),
            CreditOutcome::Refused(refusal) => Err(refused(refusal, request)),
        })
        .collect())
}

/// The error a refused credit answers, as the single CreditDiamonds always has.
fn refused(refusal: CreditRefusal, request: CreditRequest) -> PayoutError {
    match refusal {
        CreditRefusal::UnknownCreator => PayoutError::CreditForUnknownCreator(request.creator_id),
        CreditRefusal::NotReceiving(rule) => PayoutError::CreditRefused(rule),
        CreditRefusal::Rule(rule) => PayoutError::Rule(rule),
        CreditRefusal::OperationIdReused => PayoutError::OperationIdReused(request.operation_id),
    }
}

/// A registered creator's diamond balance as of now: nothing is written, credits due by
/// now count as available.
pub async fn balance(
    db: &Db,
    id: &ResourceId,
    maturity: Maturity,
    clock: &Clock,
) -> Result<BalanceView, PayoutError> {
    store::balance_view(&mut *db.conn().await?, id, maturity, clock.now())
        .await?
        .ok_or_else(|| PayoutError::CreatorNotFound(id.clone()))
}

/// Moves `creator`'s credits due at `now` from pending to available: one MATURE entry
/// for all of them. The caller holds the creator's lock. The diamonds matured.
pub async fn mature(
    conn: &mut Conn,
    creator: &ResourceId,
    maturity: Maturity,
    now: UnixMillis,
) -> Result<i64, PayoutError> {
    let due = store::mature_credits(conn, creator, maturity.due_cutoff(now)).await?;
    if due > 0 {
        let unique = uuid::Uuid::now_v7().simple().to_string();
        let entry = JournalEntry::mature(creator, &unique, due);
        if store::post_entry(conn, &entry).await? == Posted::Refused {
            return Err(PayoutError::Broken(format!(
                "creator {creator}'s pending balance is short of their due credits ({due})"
            )));
        }
    }
    Ok(due)
}

/// Settles as much of `creator`'s debt as their available diamonds cover (freed by
/// `cause`, e.g. `clawback:<id>`, `payout:<id>`): available → the clawback sink, debt
/// down by as much. The caller holds the creator's lock. The diamonds settled.
pub async fn settle_debt(
    conn: &mut Conn,
    creator: &ResourceId,
    cause: &str,
) -> Result<i64, PayoutError> {
    let balance = store::get_balance(conn, creator)
        .await?
        .ok_or_else(|| PayoutError::Broken(format!("creator {creator} has no balance row")))?;
    let Some(entry) = balance.debt_settlement(cause, creator) else {
        return Ok(0);
    };
    let settled = balance.debt.min(balance.available);
    if store::post_entry(conn, &entry).await? == Posted::Refused
        || store::move_debt(conn, creator, -settled, 0).await? == Posted::Refused
    {
        return Err(PayoutError::Broken(format!(
            "creator {creator}'s balance moved under their lock while settling debt"
        )));
    }
    Ok(settled)
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
            let mut rows = store::get_credits(&mut conn, &distinct(ids.iter())).await?;
            rows.sort_by(|a, b| credit_key(a).cmp(&credit_key(b)));
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

/// The ledger's totals and its invariant checks (I1, I2, the lifetime identity, no
/// payout sent in debt), logged when one fails.
pub async fn summary(db: &Db) -> Result<LedgerSummary, PayoutError> {
    let summary = store::ledger_summary(&mut *db.conn().await?).await?;
    if summary.balance_mismatches != 0 {
        tracing::error!(
            mismatches = summary.balance_mismatches,
            "creator balance rows disagree with their postings"
        );
    }
    if summary.lifetime_mismatches != 0 || summary.payouts_sent_in_debt != 0 {
        tracing::error!(
            lifetime_mismatches = summary.lifetime_mismatches,
            payouts_sent_in_debt = summary.payouts_sent_in_debt,
            "creator balances break the lifetime identity, or payouts were sent in debt"
        );
    }
    Ok(summary)
}
