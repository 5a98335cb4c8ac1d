//! Group commit of saga writes: the sagas a replica drives at the same time record
//! themselves and their steps' outcomes through a writer (one task on SQLite,
//! [`WRITERS_POSTGRES`] on PostgreSQL), which commits every write queued at that moment in
//! one transaction.
//!
//! Why: every saga step ends in a small write transaction (record, quote, debit, completion
//! with its gift event). On SQLite those transactions queue for the single write lock; on
//! PostgreSQL every completion in a stream locks the stream's feed row (`stream_feeds`) until
//! it commits. One transaction per batch takes the lock (and pays the commit) once for many
//! sagas.
//!
//! What does not change: each write does exactly what it did alone (the batch's records go in
//! one multi-row insert, its gift events in one more, each stream's numbers in one upsert). A save is fenced
//! by its saga's lease (`WHERE lease_owner = $me`) and is refused, inside the batch, to a
//! replica that lost the lease; a completed saga's gift event is written in the transaction
//! that saves it COMPLETED, and only if that save got through. A caller learns its write's
//! result only after the batch commits, so "recorded before anything else" and "persisted
//! before the next step" hold as before.
//!
//! The velocity limit rides on the record: each row of the batch's insert carries its
//! pair's count as its condition, and on PostgreSQL the batch first locks its pairs' rows
//! (one upsert), so a record refused by the limit is simply not inserted (docs/saga.md).
//!
//! Failure isolation: if a batch fails (a constraint, a deadlock, a lost connection), it is
//! rolled back and each of its writes is tried again alone, so one bad write fails only
//! itself. Re-running a write after an ambiguous commit is harmless: an insert of a recorded
//! saga finds its key taken (the caller then reads the saga under its key, as on a replay),
//! and a fenced save writes the same values again.
//!
//! Limits: at most [`BATCH_MAX`] writes per transaction; at most [`QUEUE_MAX`] writes
//! queued (senders wait beyond it: back-pressure, not memory).

use std::collections::BTreeMap;
use std::sync::Arc;

use ovation_store::db::Backend;
use ovation_store::db::Conn;
use ovation_store::{Db, StoreError};
use ovation_types::UnixMillis;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::domain::{EventKind, Saga, Status, VelocityLimit};
use crate::store::{self, LeaseAfter};

/// Most writes committed in one transaction.
pub const BATCH_MAX: usize = 64;
/// Most writes waiting for the writer.
pub const QUEUE_MAX: usize = 1_024;
/// Writer tasks on PostgreSQL, each committing its own batches on its own connection (a
/// batch is a few round trips per write; one task alone would be the bottleneck). SQLite
/// has one writer at a time anyway, so one task there.
pub const WRITERS_POSTGRES: usize = 2;

/// One saga write.
#[derive(Clone, Debug)]
pub enum Write {
    /// Record a new saga under its sender's idempotency key, leased to `owner` (`false`:
    /// the sender already used the key).
    Insert {
        saga: Saga,
        key: String,
        fingerprint: String,
        owner: String,
        lease_until: UnixMillis,
        /// The W3C traceparent of the request, kept so a resumed saga continues its trace.
        trace_parent: String,
    },
    /// Save a saga's progress if `owner` holds its lease, renewing or releasing it; a
    /// COMPLETED saga's gift event goes in with it (`false`: fenced out, nothing written).
    Save {
        saga: Saga,
        owner: String,
        lease: LeaseAfter,
    },
}

impl Write {
    /// Batch order: records first (by sender and key, what they are unique by), then saves,
    /// then (after every save) the gift events by stream, so two transactions take rows
    /// and feed rows in the same order.
    fn order_key(&self) -> (u8, &str, &str) {
        match self {
            Write::Insert { saga, key, .. } => (0, saga.sender_user_id.as_str(), key.as_str()),
            Write::Save { saga, .. } => (1, saga.saga_id.as_str(), ""),
        }
    }
}

struct Job {
    write: Write,
    reply: oneshot::Sender<Result<bool, StoreError>>,
}

/// A handle on the writer task (cheap to clone). The task ends when every handle is gone.
#[derive(Clone, Debug)]
pub struct SagaWriter {
    db: Db,
    jobs: mpsc::Sender<Job>,
    velocity: Option<VelocityLimit>,
}

impl SagaWriter {
    /// Starts the writer task on the current runtime. Records are held to the `velocity`
    /// limit, if any.
    pub fn start(db: Db, velocity: Option<VelocityLimit>) -> SagaWriter {
        let (jobs, queue) = mpsc::channel(QUEUE_MAX);
        let writers = match db.backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => WRITERS_POSTGRES,
        };
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..writers {
            tokio::spawn(run(db.clone(), queue.clone(), velocity));
        }
        SagaWriter { db, jobs, velocity }
    }

    /// Commits `write` (with whatever else is queued) and returns its result. Should the
    /// writer task be gone, the write runs alone here.
    pub async fn write(&self, write: Write) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        match self.jobs.send(Job { write, reply }).await {
            Ok(()) => match answer.await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Config(
                    "the saga writer stopped before answering".into(),
                )),
            },
            Err(mpsc::error::SendError(job)) => {
                write_alone(&self.db, &job.write, self.velocity).await
            }
        }
    }
}

impl Write {
    /// A record, as the store takes it; `None` for a save.
    fn as_new_saga(&self) -> Option<store::NewSaga<'_>> {
        match self {
            Write::Insert {
                saga,
                key,
                fingerprint,
                owner,
                lease_until,
                trace_parent,
            } => Some(store::NewSaga {
                saga,
                key,
                fingerprint,
                owner,
                lease_until: *lease_until,
                trace_parent,
            }),
            Write::Save { .. } => None,
        }
    }

    /// A COMPLETED save also publishes the gift event: two statements, one transaction.
    fn publishes(&self) -> bool {
        matches!(self, Write::Save { saga, .. } if saga.status == Status::Completed)
    }
}

/// The write's own statement (not the gift event), when it is one statement: `false` if
/// the key was taken, the velocity limit refused the record, or the lease fenced it out.
async fn apply(
    conn: &mut Conn,
    write: &Write,
    velocity: Option<VelocityLimit>,
) -> Result<bool, StoreError> {
    match write {
        Write::Insert { saga, .. } => {
            let new: Vec<store::NewSaga> = write.as_new_saga().into_iter().collect();
            Ok(store::insert_sagas(conn, &new, velocity)
                .await?
                .contains(&saga.saga_id))
        }
        Write::Save { saga, owner, lease } => store::save_saga(conn, saga, owner, *lease).await,
    }
}

/// One writer task: takes every write queued (up to [`BATCH_MAX`]) and commits them
/// together, until every [`SagaWriter`] is gone. Writer tasks take turns at the queue.
async fn run(db: Db, queue: Arc<Mutex<mpsc::Receiver<Job>>>, velocity: Option<VelocityLimit>) {
    loop {
        let mut jobs = Vec::with_capacity(BATCH_MAX);
        if queue.lock().await.recv_many(&mut jobs, BATCH_MAX).await == 0 {
            return;
        }
        let writes: Vec<&Write> = jobs.iter().map(|j| &j.write).collect();
        match write_batch(&db, &writes, velocity).await {
            Ok(results) => {
                for (job, result) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(Ok(result));
                }
            }
            Err(e) if jobs.len() == 1 => {
                if let Some(job) = jobs.into_iter().next() {
                    let _ = job.reply.send(Err(e));
                }
            }
            Err(e) => {
                tracing::warn!(writes = jobs.len(), error = %e,
                    "a batch of saga writes failed; writing each alone");
                for job in jobs {
                    let result = write_alone(&db, &job.write, velocity).await;
                    let _ = job.reply.send(result);
                }
            }
        }
    }
}

/// One write in a transaction of its own.
pub async fn write_alone(
    db: &Db,
    write: &Write,
    velocity: Option<VelocityLimit>,
) -> Result<bool, StoreError> {
    let results = write_batch(db, &[write], velocity).await?;
    Ok(results.first().copied().unwrap_or(false))
}

/// Every write in one transaction (a lone single-statement write: that statement alone);
/// their results in the order given. All or nothing: an error rolls the whole batch back.
/// Records are held to the `velocity` limit, if any.
pub async fn write_batch(
    db: &Db,
    writes: &[&Write],
    velocity: Option<VelocityLimit>,
) -> Result<Vec<bool>, StoreError> {
    // A write that is one statement (a record, a save that publishes nothing) needs no
    // transaction of its own: the statement is atomic, and BEGIN and COMMIT would be two
    // more round trips. A record under a velocity limit on PostgreSQL is two (the pair's
    // lock, then the insert that counts): it needs the transaction.
    let locks_pairs = velocity.is_some() && matches!(db.backend(), Backend::Postgres);
    if let [write] = writes
        && !write.publishes()
        && !(locks_pairs && write.as_new_saga().is_some())
    {
        // Outside a transaction, so it takes this process's write turn itself (SQLite).
        let _turn = db.write_turn().await;
        let mut conn = db.conn().await?;
        return Ok(vec![apply(&mut conn, write, velocity).await?]);
    }
    let mut order: Vec<usize> = (0..writes.len()).collect();
    order.sort_by(|&a, &b| writes[a].order_key().cmp(&writes[b].order_key()));
    let mut results = vec![false; writes.len()];
    let mut tx = db.begin_write().await?;
    // Records first, all in one statement (ordered by sender and key).
    let records: Vec<(usize, store::NewSaga)> = order
        .iter()
        .filter_map(|&i| writes[i].as_new_saga().map(|new| (i, new)))
        .collect();
    if !records.is_empty() {
        let new: Vec<store::NewSaga> = records.iter().map(|(_, n)| *n).collect();
        // Under the velocity limit (PostgreSQL): the pairs' rows locked first, so the
        // insert's count sees every saga of each pair committed before.
        store::lock_velocity_pairs(&mut tx, &new, velocity).await?;
        let recorded = store::insert_sagas(&mut tx, &new, velocity).await?;
        for (i, n) in &records {
            results[*i] = recorded.contains(&n.saga.saga_id);
        }
    }
    // Then the saves, each fenced by its own lease (one statement each: their values differ).
    let mut events: BTreeMap<(&str, &str), &Saga> = BTreeMap::new();
    for &i in &order {
        if let Write::Save { saga, owner, lease } = writes[i] {
            results[i] = store::save_saga(&mut tx, saga, owner, *lease).await?;
            if results[i] && saga.status == Status::Completed {
                events.insert((saga.stream_id.as_str(), saga.saga_id.as_str()), saga);
            }
        }
    }
    // The outbox, after every save and stream by stream: a feed row is locked for the
    // shortest time, and always in the same order; one statement per stream for the
    // numbers, one for all the events.
    let completed: Vec<&Saga> = events.into_values().collect();
    store::publish_events(&mut tx, &completed, EventKind::Sent).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(results)
}
