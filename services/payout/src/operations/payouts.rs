//! Payouts: a creator's request to cash diamonds out (the hold, under the payout
//! controls: cooling-off, daily cap, review threshold), an admin's review or cancellation
//! of one, and reading payouts. The worker (`crate::worker`) drives HELD ones on to PAID
//! or RELEASED.
//!
//! Every change locks the payout's creator first (as the worker's hand-over and
//! settlement do), re-reads the payout under the lock, and moves its state by
//! compare-and-set, so a review, a cancellation, a suspension and the worker's hand-over
//! of one payout are ordered: a cancel either sees the payout sent (and refuses) or
//! releases it before the worker can send it.

use ovation_store::Db;
use ovation_store::db::Conn;
use ovation_types::{Clock, Diamonds, ResourceId, Text, UnixMillis};

use super::creators::Reviewer;
use super::{Page, PageRequest, PayoutError, ledger, locked_creator, require_registered};
use crate::domain::{
    Creator, CreatorStanding, JournalEntry, Payout, PayoutDecision, PayoutRule, PayoutState,
    utc_day,
};
use crate::economy::EconomyTerms;
use crate::store::{self, Posted, Settled};

/// RequestPayout: cash `diamonds` of a creator's available diamonds out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutOrder {
    pub creator_id: ResourceId,
    pub diamonds: Diamonds,
}

/// ReviewPayout: an admin's decision on a payout in REVIEW.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutVerdict {
    pub payout_id: ResourceId,
    pub decision: PayoutDecision,
    /// Why, with any actor the request reported as a note.
    pub reason: Text,
}

/// CancelPayout: an admin stops a payout not yet sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutCancel {
    pub payout_id: ResourceId,
    /// Why, with any actor the request reported as a note.
    pub reason: Text,
}

/// ListPayouts: newest first, one creator's (or everyone's), optionally in one state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutsQuery {
    pub creator_id: Option<ResourceId>,
    pub state: Option<PayoutState>,
    pub page: PageRequest,
}

/// Records a payout, HELD (or in REVIEW from the review threshold up), at the economy's
/// rate and under its controls (`terms`, read before the transaction: no network call
/// holds a lock), and holds its diamonds. The creator's due credits mature first, in
/// this transaction (rolled back with it on a refusal). The daily cap is judged under the
/// creator's lock, so concurrent requests of one creator are counted one after another.
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
    let (day_start, day_end) = utc_day(now);
    let requested_today = store::requested_between(conn, id, day_start, day_end).await?;
    let payout_id = format!("po_{}", uuid::Uuid::now_v7().simple());
    let standing = CreatorStanding {
        creator: &creator,
        balance: &balance,
        requested_today,
    };
    let (payout, hold) = Payout::request(
        payout_id,
        standing,
        order.diamonds,
        &terms.rate,
        &terms.controls,
        now,
    )?;
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

/// An admin's review of a payout in REVIEW (see [`Payout::reviewed`]): approved, it is
/// HELD and due at once (the caller wakes the worker); rejected, RELEASED and its
/// diamonds available again (settling any clawback debt first, as every release does).
/// With `four_eyes` the admin who set or verified the payout's account may not approve.
pub async fn review(
    conn: &mut Conn,
    verdict: PayoutVerdict,
    reviewer: Reviewer,
    four_eyes: bool,
    clock: &Clock,
) -> Result<Payout, PayoutError> {
    let (payout, creator, now) = locked_payout(conn, &verdict.payout_id, clock).await?;
    let review = reviewer.review(&verdict.reason, now);
    let (next, release) = payout.reviewed(verdict.decision, review, &creator, four_eyes)?;
    match release {
        None => {
            if !store::approve_payout(conn, &next).await? {
                return Err(moved_under_lock(&payout));
            }
        }
        Some(entry) => {
            released(conn, &payout, &next, &entry).await?;
        }
    }
    Ok(next)
}

/// An admin's cancellation of a payout not yet sent (in REVIEW, or HELD without a send
/// time): RELEASED, its diamonds available again. One already sent is refused
/// ([`PayoutRule::AlreadySent`]): the worker settles it by the provider's answer.
pub async fn cancel(
    conn: &mut Conn,
    cancel: PayoutCancel,
    reviewer: Reviewer,
    clock: &Clock,
) -> Result<Payout, PayoutError> {
    let (payout, _, now) = locked_payout(conn, &cancel.payout_id, clock).await?;
    let (next, entry) = payout.cancelled(reviewer.review(&cancel.reason, now))?;
    released(conn, &payout, &next, &entry).await?;
    Ok(next)
}

/// Payout `id` read under its creator's lock (taken first, as every change of a payout
/// does), its creator, and the instant of the change.
async fn locked_payout(
    conn: &mut Conn,
    id: &ResourceId,
    clock: &Clock,
) -> Result<(Payout, Creator, UnixMillis), PayoutError> {
    let not_found = || PayoutError::PayoutNotFound(id.clone());
    let creator_id = store::get_payout(conn, id.as_str())
        .await?
        .ok_or_else(not_found)?
        .creator_id;
    let (creator, now) = locked_creator(conn, &creator_id, clock).await?;
    // Again under the lock: what the worker or another admin did before it counts.
    let payout = store::get_payout(conn, id.as_str())
        .await?
        .ok_or_else(not_found)?;
    Ok((payout, creator, now))
}

/// Records `before` (read under its creator's lock) as `after`, RELEASED by `entry`,
/// and lets the returned diamonds settle any clawback debt of the creator.
async fn released(
    conn: &mut Conn,
    before: &Payout,
    after: &Payout,
    entry: &JournalEntry,
) -> Result<(), PayoutError> {
    match store::settle_payout(conn, after, entry, before.state, true).await? {
        Settled::Yes => {}
        Settled::NotHeld => return Err(moved_under_lock(before)),
        Settled::HeldShort => {
            return Err(PayoutError::Broken(format!(
                "payout {} holds diamonds but its creator's held balance is short of them",
                before.id
            )));
        }
    }
    ledger::settle_debt(conn, &before.creator_id, &format!("payout:{}", before.id)).await?;
    Ok(())
}

/// A payout whose state changed although its creator's lock was held: every change of a
/// payout takes that lock first, so this is our bug.
fn moved_under_lock(payout: &Payout) -> PayoutError {
    PayoutError::Broken(format!(
        "payout {} changed under its creator's lock",
        payout.id
    ))
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
