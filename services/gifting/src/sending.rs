//! Gifting's use cases: send a gift, retry a saga an operator looked at, reverse a
//! completed gift. Each takes a domain command (already parsed) and returns a
//! [`GiftingError`]; the gRPC edge only parses, calls and maps. [`crate::saga`] (and
//! [`crate::reversal`]) are the drivers they hand the work to.
//!
//! A send records its saga under the sender's idempotency key (kept on the saga row, unique
//! per sender) before anything else happens, then drives it for at most the send wait: a
//! saga still PENDING then is answered as such and goes on in the background. The record
//! is refused (nothing written) when the sender has sent the creator the velocity limit's
//! number of gifts within the last minute; a replay of a recorded key never is.
//!
//! A reversal is recorded, with the stream's REVERSED event, under the admin's idempotency
//! key in one transaction, once per gift; then it is driven like a send.

use std::time::Duration;

use futures::FutureExt;
use ovation_server::IdempotentCall;
use ovation_store::db::Conn;
use ovation_store::{Db, StoreError};
use ovation_types::{Clock, IdempotencyKey, ResourceId, Text, UnixMillis};

use crate::domain::{EventKind, GiftOrder, Reversal, Saga, Status, VelocityLimit};
use crate::saga::{DriveError, SagaEngine};
use crate::store::{self, SagaRow};

/// SendGift, parsed: what the sender asked for, under their own idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendGiftCmd {
    pub key: IdempotencyKey,
    pub order: GiftOrder,
}

/// RetrySaga, parsed: an operator puts a saga back to PENDING with a fresh budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySagaCmd {
    pub key: IdempotencyKey,
    pub saga_id: ResourceId,
    /// Why, as journalled (a reported actor is only a note in it).
    pub reason: Text,
    /// Who, as journalled: the authenticated caller.
    pub actor: String,
}

/// ReverseGift, parsed: an admin reverses a completed gift.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReverseGiftCmd {
    pub key: IdempotencyKey,
    pub saga_id: ResourceId,
    /// Why, as recorded (a reported actor is only a note in it).
    pub reason: Text,
    /// Who, as recorded: the authenticated caller.
    pub actor: String,
    /// Refund the gift's coins to the sender.
    pub return_coins: bool,
}

/// Why a send or a retry did not happen (or could not be followed to its outcome).
#[derive(Debug, thiserror::Error)]
pub enum GiftingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("gift saga {0:?} not found")]
    SagaNotFound(String),
    /// Completed, rejected or compensated: nothing to retry.
    #[error("saga {0} is terminal; there is nothing to retry")]
    SagaTerminal(String),
    /// Only a COMPLETED gift can be reversed.
    #[error("gift {0} is not COMPLETED; only a completed gift can be reversed")]
    GiftNotCompleted(String),
    /// The gift has a reversal already (recorded under another key).
    #[error("gift {0} was reversed already")]
    GiftAlreadyReversed(String),
    /// The sender sent the creator `max` gifts within the last minute; nothing recorded.
    #[error(
        "velocity limit: at most {max} gifts a minute from one sender to one creator; retry later"
    )]
    VelocityLimit { max: i64 },
    /// Our bug (a saga task that panicked, a saga gone after it was recorded).
    #[error("{0}")]
    Internal(String),
}

impl From<DriveError> for GiftingError {
    fn from(e: DriveError) -> Self {
        match e {
            DriveError::Store(e) => GiftingError::Store(e),
        }
    }
}

/// Sends gifts and retries sagas, waiting for their outcome a bounded time.
#[derive(Clone, Debug)]
pub struct Sending {
    db: Db,
    engine: SagaEngine,
    /// Longest a send or a retry waits for its saga before answering it PENDING.
    wait: Duration,
    /// Dates new sagas (and so places them in velocity windows).
    clock: Clock,
    /// The velocity limit the engine records new sagas under, to name a refusal.
    velocity: Option<VelocityLimit>,
}

/// Which saga [`Sending::drive_for`] drives.
enum Drive {
    /// One this request just recorded (leased to this replica, as written).
    Recorded(Box<SagaRow>),
    /// One recorded earlier (a replayed request, a retry): claimed and read first.
    Existing(String),
    /// A gift's reversal (claimed and read first).
    Reversal(String),
}

impl Sending {
    pub fn new(
        db: Db,
        engine: SagaEngine,
        send_wait_ms: u64,
        clock: Clock,
        velocity: Option<VelocityLimit>,
    ) -> Self {
        Sending {
            db,
            engine,
            wait: Duration::from_millis(send_wait_ms),
            clock,
            velocity,
        }
    }

    /// Records the order's saga under the sender's key (or finds the one they recorded under
    /// it) and drives it until it ends or the wait is over: the send wait, or less if the
    /// caller's `deadline` is nearer. A key reused with another request is refused.
    pub async fn send(
        &self,
        call: &IdempotentCall,
        cmd: SendGiftCmd,
        deadline: Option<Duration>,
    ) -> Result<SagaRow, GiftingError> {
        let SendGiftCmd { key, order } = cmd;
        let fingerprint = call.fingerprint().as_str();
        let sender = order.sender_user_id.clone();
        let mut saga = Saga::start(
            format!("sg_{}", uuid::Uuid::now_v7().simple()),
            order,
            self.clock.now(),
        );
        self.engine.quote_from_cache(&mut saga);
        let wait = self.wait_within(deadline);
        // Recorded before anything else happens, leased to this replica at once so recovery
        // elsewhere does not race the caller's own drive. A new key (the usual case) is one
        // insert; a key the sender already used reads the saga they recorded under it.
        match self.engine.record(saga, key.as_str(), fingerprint).await? {
            Some(row) => self.drive_for(Drive::Recorded(Box::new(row)), wait).await,
            None => {
                // The key is the sender's own: another sender's saga under the same key is
                // not a replay of this one. No saga under it: the velocity limit refused it.
                let recorded = {
                    let mut conn = self.db.conn().await?;
                    store::get_saga_by_key(&mut conn, sender.as_str(), key.as_str()).await?
                };
                let row = match (recorded, self.velocity) {
                    (Some(row), _) => row,
                    (None, Some(limit)) => {
                        ovation_metrics::global().velocity_limit_refused("gifts_per_minute");
                        return Err(GiftingError::VelocityLimit { max: limit.max });
                    }
                    (None, None) => {
                        return Err(GiftingError::Internal(
                            "saga vanished after it was recorded".into(),
                        ));
                    }
                };
                if row.fingerprint != fingerprint {
                    return Err(StoreError::KeyReused.into());
                }
                if row.saga.status == Status::Pending {
                    let id = row.saga.saga_id.clone();
                    self.drive_for(Drive::Existing(id), wait).await
                } else {
                    Ok(row)
                }
            }
        }
    }

    /// Puts a PENDING or NEEDS_OPERATOR saga back to PENDING with a fresh budget (or, for
    /// a completed gift, its PENDING or NEEDS_OPERATOR reversal), journals who did and why
    /// (once per key: a retried request finds it done), then drives it for the send wait.
    pub async fn retry(
        &self,
        call: &IdempotentCall,
        cmd: RetrySagaCmd,
    ) -> Result<SagaRow, GiftingError> {
        let saga_id = cmd.saga_id.as_str().to_owned();
        let key = cmd.key.clone();
        // The key's stored response is empty (the bytes an empty RetrySagaResponse encodes
        // to, as stored before): a replay only drives the saga again.
        call.run(&self.db, &key, |conn| {
            async move { reopen(conn, &cmd, UnixMillis::now()).await }.boxed()
        })
        .await?;
        let row = self.load(&saga_id).await?;
        let drive = if row.saga.status.is_terminal() && row.reversal.is_some() {
            Drive::Reversal(saga_id)
        } else {
            Drive::Existing(saga_id)
        };
        self.drive_for(drive, self.wait).await
    }

    /// Reverses a COMPLETED gift: records the reversal (once per gift, whatever the key)
    /// with the stream's REVERSED event, under the admin's key, then drives it until it is
    /// done or the wait (the send wait, or less within the caller's `deadline`) is over.
    pub async fn reverse(
        &self,
        call: &IdempotentCall,
        cmd: ReverseGiftCmd,
        deadline: Option<Duration>,
    ) -> Result<SagaRow, GiftingError> {
        let saga_id = cmd.saga_id.as_str().to_owned();
        let key = cmd.key.clone();
        let wait = self.wait_within(deadline);
        let owner = self.engine.owner().to_owned();
        let now = UnixMillis::now();
        let lease_until = self.engine.lease_until(now);
        // Stored response: empty. A replay of the key finds the reversal it recorded and
        // only drives (or reads) it again.
        call.run(&self.db, &key, |conn| {
            async move { record_reversal(conn, &cmd, &owner, lease_until, now).await }.boxed()
        })
        .await?;
        self.drive_for(Drive::Reversal(saga_id), wait).await
    }

    /// How long a call may wait for its saga: the send wait, or less within the caller's
    /// deadline.
    fn wait_within(&self, deadline: Option<Duration>) -> Duration {
        deadline.map_or(self.wait, |d| self.wait.min(answer_by(d)))
    }

    /// Runs the saga on a task of its own (it goes on if the caller goes away) and waits
    /// up to `wait` for it to finish.
    async fn drive_for(&self, drive: Drive, wait: Duration) -> Result<SagaRow, GiftingError> {
        let engine = self.engine.clone();
        let saga_id = match &drive {
            Drive::Recorded(row) => row.saga.saga_id.clone(),
            Drive::Existing(id) | Drive::Reversal(id) => id.clone(),
        };
        let reversal = matches!(drive, Drive::Reversal(_));
        let saga_id = saga_id.as_str();
        let until = tokio::time::Instant::now() + wait;
        // The saga runs under the request's span, so its calls to catalog, wallet and
        // payout carry this request's trace: one SendGift, one trace.
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                match drive {
                    Drive::Recorded(row) => engine.drive_recorded(*row).await,
                    Drive::Existing(id) => engine.drive(&id).await,
                    Drive::Reversal(id) => engine.drive_reversal(&id).await,
                }
            },
            tracing::Span::current(),
        ));
        let mut row = match tokio::time::timeout(wait, task).await {
            Ok(Ok(Ok(row))) => row,
            Ok(Ok(Err(e))) => {
                tracing::warn!(saga_id, error = %e, "driving the saga failed; recovery will resume it");
                self.load(saga_id).await?
            }
            Ok(Err(join)) => {
                return Err(GiftingError::Internal(format!("saga task failed: {join}")));
            }
            Err(_) => self.load(saga_id).await?,
        };
        // Someone else drives it (another request of this replica, or the replica holding
        // its lease): wait for their outcome within the same deadline.
        let running = |row: &SagaRow| {
            if reversal {
                row.pending_reversal().is_some()
            } else {
                row.saga.status == Status::Pending
            }
        };
        while running(&row) && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
            row = self.load(saga_id).await?;
        }
        Ok(row)
    }

    async fn load(&self, saga_id: &str) -> Result<SagaRow, GiftingError> {
        let mut conn = self.db.conn().await?;
        store::get_saga(&mut conn, saga_id)
            .await?
            .ok_or_else(|| GiftingError::SagaNotFound(saga_id.to_owned()))
    }
}

/// The retry's write, in the idempotency key's transaction: the saga (or the reversal of
/// its completed gift) reset and the operator's action journalled, or nothing.
async fn reopen(conn: &mut Conn, cmd: &RetrySagaCmd, now: UnixMillis) -> Result<(), GiftingError> {
    let id = cmd.saga_id.as_str();
    if store::get_saga(conn, id).await?.is_none() {
        return Err(GiftingError::SagaNotFound(id.to_owned()));
    }
    let action = if store::reset_for_retry(conn, id, now).await? {
        "RETRY"
    } else if store::reset_reversal_for_retry(conn, id, now).await? {
        "RETRY_REVERSAL"
    } else {
        return Err(GiftingError::SagaTerminal(id.to_owned()));
    };
    store::record_action(conn, id, action, &cmd.actor, cmd.reason.as_str(), now).await?;
    Ok(())
}

/// The reversal's write, in the idempotency key's transaction: the gift must be COMPLETED
/// and not reversed yet; the reversal is recorded PENDING (leased to `owner`), the
/// stream's REVERSED event published (which takes the gift out of the leaderboard and
/// totals), and the admin's action journalled. Or nothing.
async fn record_reversal(
    conn: &mut Conn,
    cmd: &ReverseGiftCmd,
    owner: &str,
    lease_until: UnixMillis,
    now: UnixMillis,
) -> Result<(), GiftingError> {
    let id = cmd.saga_id.as_str();
    let row = store::get_saga(conn, id)
        .await?
        .ok_or_else(|| GiftingError::SagaNotFound(id.to_owned()))?;
    // COMPLETED is terminal: read without a lock, it cannot change under us.
    if row.saga.status != Status::Completed {
        return Err(GiftingError::GiftNotCompleted(id.to_owned()));
    }
    let reversal = Reversal::start(
        id.to_owned(),
        cmd.actor.clone(),
        cmd.reason.as_str().to_owned(),
        cmd.return_coins,
        now,
    );
    // One per gift: the saga id is the reversal's key. A concurrent reversal under another
    // key waits here for this one to commit, then finds it.
    if !store::insert_reversal(conn, &reversal, owner, lease_until).await? {
        return Err(GiftingError::GiftAlreadyReversed(id.to_owned()));
    }
    store::publish_event(conn, &row.saga, EventKind::Reversed).await?;
    store::record_action(conn, id, "REVERSE", &cmd.actor, cmd.reason.as_str(), now).await?;
    Ok(())
}

/// How long SendGift may drive a saga within a caller's deadline `d`: the answer must be on
/// the wire before the caller gives up, so a tenth of the deadline (at least 50 ms) is kept
/// for the reply and for the time the request spent before the wait began. A fixed 50 ms
/// was not enough on a loaded machine: callers saw DEADLINE_EXCEEDED instead of PENDING.
fn answer_by(d: Duration) -> Duration {
    let margin = (d / 10).max(Duration::from_millis(50));
    d.saturating_sub(margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_leaves_a_tenth_of_the_deadline_for_the_reply() {
        assert_eq!(
            answer_by(Duration::from_millis(1_500)),
            Duration::from_millis(1_350)
        );
        assert_eq!(
            answer_by(Duration::from_millis(200)),
            Duration::from_millis(150)
        );
        assert_eq!(answer_by(Duration::from_millis(30)), Duration::ZERO);
    }
}
