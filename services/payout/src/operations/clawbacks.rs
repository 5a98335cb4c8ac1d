//! Clawbacks: taking back the diamonds a gift's credit minted, for coins a reversed
//! purchase (wallet) or a reversed gift (gifting, admin) attributes to it. At most once per
//! clawback id; never more, over all clawbacks of a credit, than its coins.
//!
//! Under the creator's lock (so it serializes with credits, payout requests, suspensions
//! and the worker's hand-over): due credits mature first, then the diamonds are taken from
//! the gift's own pending diamonds, the creator's other pending credits (latest first),
//! available, and the rest becomes debt. When debt remains, the creator's HELD payouts not
//! yet sent are released in the same transaction and their diamonds settle it.

use ovation_store::Db;
use ovation_store::batch::distinct;
use ovation_store::db::Conn;
use ovation_types::{Clock, ResourceId};

use super::creators::release_unsent_payouts;
use super::{Page, PageRequest, PayoutError, ledger, locked_creator};
use crate::domain::{
    BalanceView, Clawback, ClawbackRequest, Maturity, PendingCredit, RELEASED_BY_DEBT,
    plan_clawback,
};
use crate::store::{self, Posted};

/// Pending credits read per statement while looking for diamonds to take.
const PENDING_CREDITS_PAGE: i64 = 256;

/// ListClawbacks: named credits' clawbacks, or a page of one creator's (or everyone's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClawbacksQuery {
    ByOperation(Vec<ResourceId>),
    Page {
        creator_id: Option<ResourceId>,
        page: PageRequest,
    },
}

/// Applies `request` once: a retry (same clawback id, credit, coins, cause and cause id)
/// answers the original clawback; the same id with other parameters is refused. Answers
/// the clawback and the creator's balance right after it (as of now).
pub async fn clawback(
    conn: &mut Conn,
    request: ClawbackRequest,
    maturity: Maturity,
    clock: &Clock,
) -> Result<(Clawback, BalanceView), PayoutError> {
    if let Some(done) = replay(conn, &request, maturity, clock).await? {
        return Ok(done);
    }
    let credit = store::get_credits(conn, &[&request.operation_id])
        .await?
        .pop()
        .ok_or_else(|| PayoutError::CreditNotFound(request.operation_id.clone()))?;
    let creator_id = credit.request.creator_id.clone();
    let (_, now) = locked_creator(conn, &creator_id, clock).await?;
    // Under the lock: a twin of this clawback on this credit has committed, or waits.
    if let Some(done) = replay(conn, &request, maturity, clock).await? {
        return Ok(done);
    }
    ledger::mature(conn, &creator_id, maturity, now).await?;
    // Re-read under the lock: maturation and earlier clawbacks changed what is pending.
    let credit = store::get_credits(conn, &[&request.operation_id])
        .await?
        .pop()
        .ok_or_else(|| PayoutError::Broken("a credit vanished under its lock".into()))?;
    let already = store::clawed_coins(conn, &request.operation_id).await?;
    let balance = store::get_balance(conn, &creator_id)
        .await?
        .ok_or_else(|| PayoutError::Broken(format!("creator {creator_id} has no balance row")))?;
    // What to take beyond the credit's own pending diamonds: an upper bound is the
    // diamonds its coins minted; read other pending credits, latest first, until they
    // cover it or run out.
    let mut others: Vec<PendingCredit> = Vec::new();
    let mut covered = credit.pending;
    let mut before = None;
    while covered < credit.diamonds {
        let page = store::pending_credits(
            conn,
            &creator_id,
            &credit.request.operation_id,
            before.take(),
            PENDING_CREDITS_PAGE,
        )
        .await?;
        let full = page.len() as i64 == PENDING_CREDITS_PAGE;
        for (pending, created_at) in page {
            covered = covered.saturating_add(pending.pending);
            before = Some((created_at, pending.operation_id.to_string()));
            others.push(pending);
        }
        if !full {
            break;
        }
    }
    let plan = plan_clawback(request, &credit, already, &others, &balance, now)?;
    let broken = || {
        PayoutError::Broken(format!(
            "creator {creator_id}'s balances moved under their lock during a clawback"
        ))
    };
    if store::take_pending(conn, &plan.taken_from_credits).await? == Posted::Refused {
        return Err(broken());
    }
    if let Some(entry) = &plan.entry
        && store::post_entry(conn, entry).await? == Posted::Refused
    {
        return Err(broken());
    }
    let clawback = plan.clawback;
    if store::move_debt(conn, &creator_id, clawback.to_debt, clawback.diamonds).await?
        == Posted::Refused
    {
        return Err(broken());
    }
    if !store::insert_clawback(conn, &clawback).await? {
        // The same id committed meanwhile under another creator's lock (another credit):
        // this transaction rolls back, and a run again answers as a retry.
        return Err(PayoutError::ConcurrentClawback);
    }
    if balance.debt.saturating_add(clawback.to_debt) > 0 {
        let released = release_unsent_payouts(conn, &creator_id, now, RELEASED_BY_DEBT).await?;
        let cause = format!("clawback:{}", clawback.request.clawback_id.as_str());
        let settled = ledger::settle_debt(conn, &creator_id, &cause).await?;
        if !released.is_empty() || settled > 0 {
            tracing::info!(creator_id = %creator_id, ?released, settled,
                "clawback debt: unsent payouts released, their diamonds settle the debt");
        }
    }
    let view = store::balance_view(conn, &creator_id, maturity, now)
        .await?
        .ok_or_else(|| PayoutError::Broken(format!("creator {creator_id} has no balance row")))?;
    Ok((clawback, view))
}

/// The recorded clawback `request` retries, with its creator's balance now; `None` if its
/// id is new; refused if the id was used with other parameters.
async fn replay(
    conn: &mut Conn,
    request: &ClawbackRequest,
    maturity: Maturity,
    clock: &Clock,
) -> Result<Option<(Clawback, BalanceView)>, PayoutError> {
    let Some(existing) = store::get_clawback(conn, &request.clawback_id).await? else {
        return Ok(None);
    };
    if !existing.is_same_request(request) {
        return Err(PayoutError::ClawbackIdReused(
            request.clawback_id.as_str().to_owned(),
        ));
    }
    let view = store::balance_view(conn, &existing.creator_id, maturity, clock.now())
        .await?
        .ok_or_else(|| PayoutError::Broken("a clawback's creator has no balance row".into()))?;
    Ok(Some((existing, view)))
}

/// The clawbacks a query selects (by operation ids: one page, without a next).
pub async fn clawbacks(db: &Db, query: ClawbacksQuery) -> Result<Page<Clawback>, PayoutError> {
    let mut conn = db.conn().await?;
    match query {
        ClawbacksQuery::ByOperation(ids) => {
            let rows = store::clawbacks_of_credits(&mut conn, &distinct(ids.iter())).await?;
            Ok(Page {
                rows,
                next_page_token: String::new(),
            })
        }
        ClawbacksQuery::Page { creator_id, page } => {
            let rows = store::list_clawbacks(
                &mut conn,
                creator_id.as_ref(),
                page.after,
                page.size.fetch_limit(),
            )
            .await?;
            Ok(Page::cut(page.size, rows, |c| {
                (c.created_at.0, c.request.clawback_id.as_str())
            }))
        }
    }
}
