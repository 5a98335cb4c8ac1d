//! Creators: registering them, where they are paid and the operators' review of it,
//! suspension and reinstatement. Every change is journaled (`creator_journal`) in the
//! transaction that makes it, with the authenticated caller as its actor.

use ovation_store::Db;
use ovation_store::db::Conn;
use ovation_types::{Clock, Name, ResourceId, Text, UnixMillis};

use super::{PayoutError, Who, locked_creator};
use crate::domain::{
    AccountReference, Creator, Decision, RELEASED_BY_SUSPENSION, Review, ReviewedAccount,
};
use crate::store::{self, CreatorEvent, Settled};

/// RegisterCreator: a new creator, active, without a payout account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub creator_id: ResourceId,
    pub display_name: Name,
}

/// SetPayoutAccount: where the creator is paid from now on (pending review).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountChange {
    pub creator_id: ResourceId,
    pub reference: AccountReference,
    pub holder_name: Name,
}

/// VerifyPayoutAccount: an operator's decision on the account version they read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountReview {
    pub creator_id: ResourceId,
    pub decision: Decision,
    pub reviewed: ReviewedAccount,
    /// Why, with any actor the request reported as a note.
    pub reason: Text,
}

/// SuspendCreator, ReinstateCreator: which creator and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    pub creator_id: ResourceId,
    /// Why, with any actor the request reported as a note.
    pub reason: Text,
}

/// An operator acting on a creator: who, for the journal, and as a review's actor.
#[derive(Clone, Debug)]
pub struct Reviewer {
    pub who: Who,
    pub actor: Name,
}

impl Reviewer {
    pub(crate) fn review(&self, reason: &Text, at: UnixMillis) -> Review {
        Review {
            actor: self.actor.clone(),
            reason: reason.clone(),
            at,
        }
    }
}

/// A journal line: what was done to a creator, by whom, why, and about what.
struct Note<'a> {
    action: &'static str,
    who: &'a Who,
    reason: &'a str,
    detail: String,
}

impl<'a> Note<'a> {
    fn new(action: &'static str, who: &'a Who, reason: &'a str, detail: String) -> Self {
        Note {
            action,
            who,
            reason,
            detail,
        }
    }
}

/// Stores a changed creator and journals the change, at `at`; returns the creator.
async fn record(
    conn: &mut Conn,
    next: Creator,
    note: Note<'_>,
    at: UnixMillis,
) -> Result<Creator, PayoutError> {
    store::update_creator(conn, &next).await?;
    journal(conn, &next, note, at).await?;
    Ok(next)
}

/// Journals a change to `creator`, at `at`.
async fn journal(
    conn: &mut Conn,
    creator: &Creator,
    note: Note<'_>,
    at: UnixMillis,
) -> Result<(), PayoutError> {
    let event = CreatorEvent {
        creator_id: creator.id.clone(),
        action: note.action,
        actor: note.who.subject.clone(),
        caller: note.who.label.clone(),
        reason: note.reason.to_owned(),
        detail: note.detail,
        at,
    };
    Ok(store::insert_creator_event(conn, &event).await?)
}

/// The creator's payout account as the journal names it.
fn account_detail(creator: &Creator) -> String {
    creator
        .account
        .as_ref()
        .map(|a| format!("{} (version {})", a.reference.as_str(), a.version))
        .unwrap_or_default()
}

/// Registers a creator (with their ledger accounts and a zero balance).
pub async fn register(
    conn: &mut Conn,
    registration: Registration,
    who: Who,
    clock: &Clock,
) -> Result<Creator, PayoutError> {
    let now = clock.now();
    let creator = Creator::register(registration.creator_id, registration.display_name, now);
    if !store::insert_creator(conn, &creator).await? {
        return Err(PayoutError::CreatorExists(creator.id));
    }
    let note = Note::new("REGISTER", &who, "", String::new());
    journal(conn, &creator, note, now).await?;
    Ok(creator)
}

/// Sets where a creator is paid: the next account version, pending review, set by `who`.
pub async fn set_payout_account(
    conn: &mut Conn,
    change: AccountChange,
    who: Who,
    clock: &Clock,
) -> Result<Creator, PayoutError> {
    let (creator, now) = locked_creator(conn, &change.creator_id, clock).await?;
    let next =
        creator.with_account(change.reference, change.holder_name, who.label.clone(), now)?;
    let note = Note::new("SET_PAYOUT_ACCOUNT", &who, "", account_detail(&next));
    record(conn, next, note, now).await
}

/// Verifies or rejects the payout account the reviewer read. With `four_eyes` the one
/// who set the account may not verify it (see [`Creator::reviewed`]).
pub async fn review_payout_account(
    conn: &mut Conn,
    review: AccountReview,
    reviewer: Reviewer,
    four_eyes: bool,
    clock: &Clock,
) -> Result<Creator, PayoutError> {
    let (creator, now) = locked_creator(conn, &review.creator_id, clock).await?;
    let next = creator.reviewed(
        review.decision,
        &review.reviewed,
        reviewer.review(&review.reason, now),
        four_eyes,
    )?;
    let action = match review.decision {
        Decision::Verify => "VERIFY",
        Decision::Reject => "REJECT",
    };
    let note = Note::new(
        action,
        &reviewer.who,
        review.reason.as_str(),
        account_detail(&next),
    );
    record(conn, next, note, now).await
}

/// Suspends a creator and releases their HELD payouts not yet sent to the provider (the
/// worker settles the sent ones by asking the provider). Suspending a suspended creator
/// changes nothing.
pub async fn suspend(
    conn: &mut Conn,
    change: StatusChange,
    reviewer: Reviewer,
    clock: &Clock,
) -> Result<Creator, PayoutError> {
    let (creator, now) = locked_creator(conn, &change.creator_id, clock).await?;
    let Some(next) = creator.suspended(reviewer.review(&change.reason, now)) else {
        return Ok(creator);
    };
    store::update_creator(conn, &next).await?;
    let released = release_unsent_payouts(conn, &next.id, now, RELEASED_BY_SUSPENSION).await?;
    let detail = if released.is_empty() {
        String::new()
    } else {
        format!(
            "released {} payout(s) not yet sent: {}",
            released.len(),
            released.join(", ")
        )
    };
    let note = Note::new("SUSPEND", &reviewer.who, change.reason.as_str(), detail);
    journal(conn, &next, note, now).await?;
    Ok(next)
}

/// Reinstates a suspended creator; reinstating an active one changes nothing.
pub async fn reinstate(
    conn: &mut Conn,
    change: StatusChange,
    who: Who,
    clock: &Clock,
) -> Result<Creator, PayoutError> {
    let (creator, now) = locked_creator(conn, &change.creator_id, clock).await?;
    let Some(next) = creator.reinstated(now) else {
        return Ok(creator);
    };
    let note = Note::new("REINSTATE", &who, change.reason.as_str(), String::new());
    record(conn, next, note, now).await
}

/// A registered creator.
pub async fn creator(db: &Db, id: &ResourceId) -> Result<Creator, PayoutError> {
    store::get_creator(&mut *db.conn().await?, id)
        .await?
        .ok_or_else(|| PayoutError::CreatorNotFound(id.clone()))
}

/// Releases every HELD payout of `creator` not yet handed to the provider, for `reason`
/// (inside a suspension's or a clawback's transaction, the creator's row locked); returns
/// their ids. Payouts already sent are left to the worker, which asks the provider.
pub(crate) async fn release_unsent_payouts(
    conn: &mut Conn,
    creator: &ResourceId,
    now: UnixMillis,
    reason: &str,
) -> Result<Vec<String>, PayoutError> {
    let mut released = Vec::new();
    for payout in store::unsent_payouts(conn, creator).await? {
        let (settled, entry) = payout.stopped(reason, now)?;
        match store::settle_payout(conn, &settled, &entry, payout.state, true).await? {
            Settled::Yes => released.push(settled.id),
            Settled::NotHeld => {}
            Settled::HeldShort => {
                return Err(PayoutError::Broken(format!(
                    "payout {} is HELD but its creator's held balance is short of it",
                    payout.id
                )));
            }
        }
    }
    Ok(released)
}
