//! Payouts: a creator's request to cash diamonds out (the hold), and reading payouts.
//! The worker (`crate::worker`) drives them on to PAID or RELEASED.

use ovation_store::Db;
use ovation_store::db::Conn;
use ovation_types::{Clock, Diamonds, ResourceId};

use super::{Page, PageRequest, PayoutError, ledger, locked_creator, require_registered};
use crate::domain::{Payout, PayoutRule, PayoutState};
use crate::economy::EconomyTerms;
use crate::store::{self, Posted};

/// RequestPayout: cash `diamonds` of a creator's available diamonds out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutOrder {
    pub creator_id: ResourceId,
    pub diamonds: Diamonds,
}

/// ListPayouts: newest first, one creator's (or everyone's), optionally in one state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutsQuery {
    pub creator_id: Option<ResourceId>,
    pub state: Option<PayoutState>,
    pub page: PageRequest,
}

/// Records a payout, HELD, at the economy's rate (`terms`, read before the transaction:
/// no network call holds a lock), and holds its diamonds. The creator's due credits
/// mature first, in this transaction (rolled back with it on a refusal).
pub async fn request(
    conn: &mut Conn,
    order: PayoutOrder,
    terms: EconomyTerms,
    clock: &Clock,
) -> Result<Payout, PayoutError> {
    let id = &order.creator_id;
    // Locked, so a suspension or a clawback is either seen here or sees this payout (and
    // releases it).
    let (creator, now) = locked_creator(conn, id, clock).await?;
    ledger::mature(conn, id, terms.maturity, now).await?;
    let balance = store::balance_view(conn, id, terms.maturity, now)
        .await?
        .ok_or_else(|| PayoutError::Broken(format!("creator {id} has no balance row")))?;
    let payout_id = format!("po_{}", uuid::Uuid::now_v7().simple());
    let (payout, hold) =
        Payout::request(payout_id, &creator, &balance, order.diamonds, &terms.rate, now)?;
    // The conditional update in post_entry is what stops concurrent requests from
    // holding more than is available; on refusal the whole transaction (payout row
    // included) rolls back.
    if store::post_entry(conn, &hold).await? == Posted::Refused {
        let available = store::get_balance(conn, id)
            .await?
            .map_or(0, |b| b.available);
        return Err(PayoutRule::InsufficientDiamonds { available }.into());
    }
    store::insert_payout(conn, &payout).await?;
    Ok(payout)
}

/// A payout.
pub async fn payout(db: &Db, id: &ResourceId) -> Result<Payout, PayoutError> {
    store::get_payout(&mut *db.conn().await?, id.as_str())
        .await?
        .ok_or_else(|| PayoutError::PayoutNotFound(id.clone()))
}

/// A payout as it is now, if it exists (what a replayed RequestPayout answers with).
pub async fn current(db: &Db, id: &str) -> Result<Option<Payout>, PayoutError> {
    Ok(store::get_payout(&mut *db.conn().await?, id).await?)
}

/// One page of payouts; of a registered creator when the query names one.
pub async fn payouts(db: &Db, query: PayoutsQuery) -> Result<Page<Payout>, PayoutError> {
    let mut conn = db.conn().await?;
    if let Some(id) = &query.creator_id {
        require_registered(&mut conn, id).await?;
    }
    let rows = store::list_payouts(
        &mut conn,
        query.creator_id.as_ref(),
        query.state,
        query.page.after,
        query.page.size.fetch_limit(),
    )
    .await?;
    Ok(Page::cut(query.page.size, rows, |p| {
        (p.created_at.0, p.id.as_str())
    }))
}
