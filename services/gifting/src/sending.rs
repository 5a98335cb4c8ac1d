//! Gifting's use cases: send a gift and retry a saga an operator looked at. Each takes a
//! domain command (already parsed) and returns a [`GiftingError`]; the gRPC edge only
//! parses, calls and maps. [`crate::saga`] is the driver both of them hand the saga to.
//!
//! A send records its saga under the sender's idempotency key (kept on the saga row, unique
//! per sender) before anything else happens, then drives it for at most the send wait: a
//! saga still PENDING then is answered as such and goes on in the background.

use std::time::Duration;

use futures::FutureExt;
use ovation_server::IdempotentCall;
use ovation_store::db::Conn;
use ovation_store::{Db, StoreError};
use ovation_types::{IdempotencyKey, ResourceId, Text, UnixMillis};

use crate::domain::{GiftOrder, Saga, Status};
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
}

/// Which saga [`Sending::drive_for`] drives.
enum Drive {
    /// One this request just recorded (leased to this replica, as written).
    Recorded(Box<SagaRow>),
    /// One recorded earlier (a replayed request, a retry): claimed and read first.
    Existing(String),
}

impl Sending {
    pub fn new(db: Db, engine: SagaEngine, send_wait_ms: u64) -> Self {
        Sending {
            db,
            engine,
            wait: Duration::from_millis(send_wait_ms),
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
            UnixMillis::now(),
        );
        self.engine.quote_from_cache(&mut saga);
        let wait = deadline.map_or(self.wait, |d| self.wait.min(answer_by(d)));
        // Recorded before anything else happens, leased to this replica at once so recovery
        // elsewhere does not race the caller's own drive. A new key (the usual case) is one
        // insert; a key the sender already used reads the saga they recorded under it.
        match self.engine.record(saga, key.as_str(), fingerprint).await? {
            Some(row) => self.drive_for(Drive::Recorded(Box::new(row)), wait).await,
            None => {
                // The key is the sender's own: another sender's saga under the same key is
                // not a replay of this one.
                let row = {
                    let mut conn = self.db.conn().await?;
                    store::get_saga_by_key(&mut conn, sender.as_str(), key.as_str())
                        .await?
                        .ok_or_else(|| {
                            GiftingError::Internal("saga vanished after it was recorded".into())
                        })?
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

    /// Puts a PENDING or NEEDS_OPERATOR saga back to PENDING with a fresh budget, journals
    /// who did and why (once per key: a retried request finds it done), then drives it for
    /// the send wait.
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
        self.drive_for(Drive::Existing(saga_id), self.wait).await
    }

    /// Runs the saga on a task of its own (it goes on if the caller goes away) and waits
    /// up to `wait` for it to finish.
    async fn drive_for(&self, drive: Drive, wait: Duration) -> Result<SagaRow, GiftingError> {
        let engine = self.engine.clone();
        let saga_id = match &drive {
            Drive::Recorded(row) => row.saga.saga_id.clone(),
            Drive::Existing(id) => id.clone(),
        };
        let saga_id = saga_id.as_str();
        let until = tokio::time::Instant::now() + wait;
        // The saga runs under the request's span, so its calls to catalog, wallet and
        // payout carry this request's trace: one SendGift, one trace.
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                match drive {
                    Drive::Recorded(row) => engine.drive_recorded(*row).await,
                    Drive::Existing(id) => engine.drive(&id).await,
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
        while row.saga.status == Status::Pending && tokio::time::Instant::now() < until {
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

/// The retry's write, in the idempotency key's transaction: the saga reset and the
/// operator's action journalled, or nothing.
async fn reopen(conn: &mut Conn, cmd: &RetrySagaCmd, now: UnixMillis) -> Result<(), GiftingError> {
    let id = cmd.saga_id.as_str();
    if store::get_saga(conn, id).await?.is_none() {
        return Err(GiftingError::SagaNotFound(id.to_owned()));
    }
    if !store::reset_for_retry(conn, id, now).await? {
        return Err(GiftingError::SagaTerminal(id.to_owned()));
    }
    store::record_action(conn, id, "RETRY", &cmd.actor, cmd.reason.as_str(), now).await?;
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
