//! All of gifting's SQL, in one place.
//!
//! Fencing: a saga row is written only by the replica holding its lease
//! (`WHERE lease_owner = $me`), so a replica that lost its lease (paused, partitioned)
//! cannot overwrite the progress of the one that took over.

use ovation_store::StoreError;
use ovation_store::db::Conn;
use ovation_store::sqlx::{self, Row, any::AnyRow};
use ovation_types::{ResourceId, TimeWindow, UnixMillis};

use crate::domain::{
    EventKind, Quote, Rejection, Reversal, ReversalState, ReversalStep, Saga, Status, Step,
    VelocityLimit,
};

/// A saga with what only the store knows about it.
#[derive(Clone, Debug)]
pub struct SagaRow {
    pub saga: Saga,
    pub idempotency_key: String,
    pub fingerprint: String,
    pub lease_owner: String,
    pub lease_expires_at: UnixMillis,
    /// The gift's admin reversal, if any.
    pub reversal: Option<ReversalRow>,
}

/// A gift reversal with its lease.
#[derive(Clone, Debug)]
pub struct ReversalRow {
    pub reversal: Reversal,
    pub lease_owner: String,
    pub lease_expires_at: UnixMillis,
}

impl SagaRow {
    /// The reversal, while it is still to be driven (PENDING).
    pub fn pending_reversal(&self) -> Option<&Reversal> {
        self.reversal
            .as_ref()
            .map(|r| &r.reversal)
            .filter(|r| r.state == ReversalState::Pending)
    }

    /// Whether an operator should look at it: the saga, or its reversal, needs one.
    fn attention_at(&self) -> UnixMillis {
        match &self.reversal {
            Some(r) if r.reversal.state != ReversalState::Done => r.reversal.updated_at,
            _ => self.saga.updated_at,
        }
    }

    /// The keyset position of a stuck saga in ListStuckSagas: when it (or its reversal in
    /// trouble) last changed, then its id.
    pub fn stuck_position(&self) -> (i64, &str) {
        (self.attention_at().0, self.saga.saga_id.as_str())
    }
}

const SAGA_COLUMNS: &str = "saga_id, idempotency_key, fingerprint, sender_user_id, creator_id, stream_id, \
     gift_id, quantity, message, gift_version, unit_price_coins, total_coins, creator_share_bps, \
     economy_version, status, step, coins_spent, diamonds_credited, sender_balance_after_coins, \
     rejection_reason, rejection_detail, refund_started, attempts, last_error, next_attempt_at_ms, \
     lease_owner, lease_expires_at_ms, created_at_ms, updated_at_ms, completed_at_ms, unexpected_failures";

/// A saga read: its columns (qualified: the reversal shares names) and its reversal's,
/// prefixed `r_` (NULL when there is none).
const SAGA_SELECT: &str = "SELECT s.saga_id, s.idempotency_key, s.fingerprint, s.sender_user_id, \
     s.creator_id, s.stream_id, s.gift_id, s.quantity, s.message, s.gift_version, s.unit_price_coins, \
     s.total_coins, s.creator_share_bps, s.economy_version, s.status, s.step, s.coins_spent, \
     s.diamonds_credited, s.sender_balance_after_coins, s.rejection_reason, s.rejection_detail, \
     s.refund_started, s.attempts, s.last_error, s.next_attempt_at_ms, s.lease_owner, \
     s.lease_expires_at_ms, s.created_at_ms, s.updated_at_ms, s.completed_at_ms, \
     s.unexpected_failures, r.actor AS r_actor, r.reason AS r_reason, \
     r.return_coins AS r_return_coins, r.state AS r_state, r.step AS r_step, \
     r.clawed_back_diamonds AS r_clawed_back_diamonds, r.returned_coins AS r_returned_coins, \
     r.attempts AS r_attempts, r.unexpected_failures AS r_unexpected_failures, \
     r.last_error AS r_last_error, r.next_attempt_at_ms AS r_next_attempt_at_ms, \
     r.lease_owner AS r_lease_owner, r.lease_expires_at_ms AS r_lease_expires_at_ms, \
     r.created_at_ms AS r_created_at_ms, r.updated_at_ms AS r_updated_at_ms, \
     r.done_at_ms AS r_done_at_ms \
     FROM sagas s LEFT JOIN gift_reversals r ON r.saga_id = s.saga_id";

fn corrupt(what: &str) -> StoreError {
    StoreError::Database(sqlx::Error::Decode(
        format!("stored {what} is invalid").into(),
    ))
}

fn saga_from_row(r: &AnyRow) -> Result<SagaRow, StoreError> {
    let gift_version: i64 = r.try_get("gift_version")?;
    let quote = (gift_version > 0)
        .then(|| -> Result<Quote, StoreError> {
            Ok(Quote {
                gift_version,
                unit_price_coins: r.try_get("unit_price_coins")?,
                total_coins: r.try_get("total_coins")?,
                creator_share_bps: i32::try_from(r.try_get::<i64, _>("creator_share_bps")?)
                    .map_err(|_| corrupt("share"))?,
                economy_version: r.try_get("economy_version")?,
            })
        })
        .transpose()?;
    Ok(SagaRow {
        saga: Saga {
            saga_id: r.try_get("saga_id")?,
            sender_user_id: r.try_get("sender_user_id")?,
            creator_id: r.try_get("creator_id")?,
            stream_id: r.try_get("stream_id")?,
            gift_id: r.try_get("gift_id")?,
            quantity: i32::try_from(r.try_get::<i64, _>("quantity")?)
                .map_err(|_| corrupt("quantity"))?,
            message: r.try_get("message")?,
            quote,
            status: Status::from_code(r.try_get("status")?).ok_or_else(|| corrupt("status"))?,
            step: Step::from_code(r.try_get("step")?).ok_or_else(|| corrupt("step"))?,
            coins_spent: r.try_get("coins_spent")?,
            diamonds_credited: r.try_get("diamonds_credited")?,
            sender_balance_after: r.try_get("sender_balance_after_coins")?,
            rejection: Rejection::from_code(r.try_get("rejection_reason")?)
                .ok_or_else(|| corrupt("rejection"))?,
            rejection_detail: r.try_get("rejection_detail")?,
            refund_started: r.try_get::<i64, _>("refund_started")? == 1,
            attempts: r.try_get("attempts")?,
            unexpected_failures: r.try_get("unexpected_failures")?,
            last_error: r.try_get("last_error")?,
            next_attempt_at: UnixMillis(r.try_get("next_attempt_at_ms")?),
            created_at: UnixMillis(r.try_get("created_at_ms")?),
            updated_at: UnixMillis(r.try_get("updated_at_ms")?),
            completed_at: r
                .try_get::<Option<i64>, _>("completed_at_ms")?
                .map(UnixMillis),
        },
        idempotency_key: r.try_get("idempotency_key")?,
        fingerprint: r.try_get("fingerprint")?,
        lease_owner: r.try_get("lease_owner")?,
        lease_expires_at: UnixMillis(r.try_get("lease_expires_at_ms")?),
        reversal: reversal_from_row(r)?,
    })
}

/// The `r_` columns of [`SAGA_SELECT`]: `None` when the gift has no reversal.
fn reversal_from_row(r: &AnyRow) -> Result<Option<ReversalRow>, StoreError> {
    let Some(state) = r.try_get::<Option<i64>, _>("r_state")? else {
        return Ok(None);
    };
    let saga_id: String = r.try_get("saga_id")?;
    let get = |column: &str| -> Result<i64, StoreError> {
        r.try_get::<Option<i64>, _>(column)?
            .ok_or_else(|| corrupt(column))
    };
    let text = |column: &str| -> Result<String, StoreError> {
        r.try_get::<Option<String>, _>(column)?
            .ok_or_else(|| corrupt(column))
    };
    Ok(Some(ReversalRow {
        reversal: Reversal {
            saga_id,
            actor: text("r_actor")?,
            reason: text("r_reason")?,
            return_coins: get("r_return_coins")? == 1,
            state: ReversalState::from_code(state).ok_or_else(|| corrupt("reversal state"))?,
            step: ReversalStep::from_code(get("r_step")?)
                .ok_or_else(|| corrupt("reversal step"))?,
            clawed_back_diamonds: get("r_clawed_back_diamonds")?,
            returned_coins: get("r_returned_coins")?,
            attempts: get("r_attempts")?,
            unexpected_failures: get("r_unexpected_failures")?,
            last_error: text("r_last_error")?,
            next_attempt_at: UnixMillis(get("r_next_attempt_at_ms")?),
            created_at: UnixMillis(get("r_created_at_ms")?),
            updated_at: UnixMillis(get("r_updated_at_ms")?),
            done_at: r.try_get::<Option<i64>, _>("r_done_at_ms")?.map(UnixMillis),
        },
        lease_owner: text("r_lease_owner")?,
        lease_expires_at: UnixMillis(get("r_lease_expires_at_ms")?),
    }))
}

/// A saga to record: the saga, its sender's idempotency key and request fingerprint, and
/// the lease it starts under.
#[derive(Clone, Copy, Debug)]
pub struct NewSaga<'a> {
    pub saga: &'a Saga,
    pub key: &'a str,
    pub fingerprint: &'a str,
    pub owner: &'a str,
    pub lease_until: UnixMillis,
    /// The W3C traceparent of the request that started it ('' if none).
    pub trace_parent: &'a str,
}

/// Records a new saga leased to `owner` (no velocity limit); `false` if its sender
/// already used its idempotency key (keys are unique per sender, not globally).
pub async fn insert_saga(
    conn: &mut Conn,
    saga: &Saga,
    key: &str,
    fingerprint: &str,
    owner: &str,
    lease_until: UnixMillis,
    trace_parent: &str,
) -> Result<bool, StoreError> {
    let new = NewSaga {
        saga,
        key,
        fingerprint,
        owner,
        lease_until,
        trace_parent,
    };
    Ok(!insert_sagas(conn, &[new], None).await?.is_empty())
}

/// Parameters [`insert_sagas`] binds per saga.
const NEW_SAGA_PARAMS: usize = 23;

/// Records new sagas in one statement; returns the ids of those recorded. Not recorded: a
/// saga whose sender already used its key (in the table or earlier in `sagas`), and, under
/// a `velocity` limit, one whose sender has as many sagas to its creator created within
/// the window before it (counting those earlier in `sagas`). On PostgreSQL, run it after
/// [`lock_velocity_pairs`] in the same transaction, so the count sees every saga of the
/// pair committed before.
pub async fn insert_sagas(
    conn: &mut Conn,
    sagas: &[NewSaga<'_>],
    velocity: Option<VelocityLimit>,
) -> Result<std::collections::HashSet<String>, StoreError> {
    if sagas.is_empty() {
        return Ok(Default::default());
    }
    // Per row, in SAGA_COLUMNS order: $1..$16 (ids, order, quote, status, step), the
    // outcome fields every new saga starts with, $17 next attempt, $18 lease owner, $19
    // lease expiry, $20 created = updated, never completed, no failures, $21 traceparent;
    // then the velocity check: $22 the window's start, $23 the pair's room. One SELECT per
    // row (not VALUES), so each row carries its own condition; a statement does not see
    // its own rows, so the room of a row is the limit less the pair's earlier rows here.
    let mut selects = String::new();
    for row in 0..sagas.len() {
        let first = row * NEW_SAGA_PARAMS + 1;
        let p = |n: usize| format!("${}", first + n - 1);
        if row > 0 {
            selects.push_str(" UNION ALL ");
        }
        let admitted = match velocity {
            Some(_) => format!(
                "(SELECT COUNT(*) FROM sagas v WHERE v.sender_user_id = {} AND v.creator_id = {} \
                 AND v.created_at_ms > {}) < {}",
                p(4),
                p(5),
                p(22),
                p(23)
            ),
            // Both parameters are still used (SQLite refuses unused ones): always true.
            None => format!("{} <= {}", p(22), p(23)),
        };
        selects.push_str(&format!(
            "SELECT {}, 0, 0, CAST(NULL AS BIGINT), 0, '', 0, 0, '', {}, {}, {}, {}, {}, \
             CAST(NULL AS BIGINT), 0, {} WHERE {admitted}",
            ovation_store::batch::placeholders(first, 16),
            p(17),
            p(18),
            p(19),
            p(20),
            p(20),
            p(21)
        ));
    }
    let sql = format!(
        "INSERT INTO sagas ({SAGA_COLUMNS}, trace_parent) {selects} \
         ON CONFLICT (sender_user_id, idempotency_key) DO NOTHING RETURNING saga_id"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    let mut earlier: std::collections::HashMap<(&str, &str), i64> = Default::default();
    for new in sagas {
        let saga = new.saga;
        // A saga recorded already quoted (from the quote cache) is recorded with its quote.
        let q = stored_quote(saga);
        query = query
            .bind(saga.saga_id.as_str())
            .bind(new.key)
            .bind(new.fingerprint)
            .bind(saga.sender_user_id.as_str())
            .bind(saga.creator_id.as_str())
            .bind(saga.stream_id.as_str())
            .bind(saga.gift_id.as_str())
            .bind(i64::from(saga.quantity))
            .bind(saga.message.as_str())
            .bind(q.gift_version)
            .bind(q.unit_price_coins)
            .bind(q.total_coins)
            .bind(i64::from(q.creator_share_bps))
            .bind(q.economy_version)
            .bind(saga.status.code())
            .bind(saga.step.code())
            .bind(saga.next_attempt_at.0)
            .bind(new.owner)
            .bind(new.lease_until.0)
            .bind(saga.created_at.0)
            .bind(new.trace_parent);
        query = match velocity {
            Some(limit) => {
                let pair = (saga.sender_user_id.as_str(), saga.creator_id.as_str());
                let before = earlier.entry(pair).or_insert(0);
                let room = limit.room_after(*before);
                *before += 1;
                query
                    .bind(VelocityLimit::window_after(saga.created_at).0)
                    .bind(room)
            }
            None => query.bind(0i64).bind(0i64),
        };
    }
    let rows = query.fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
        .collect()
}

/// Locks the velocity rows of the pairs (sender, creator) of `sagas`, each once, in
/// order, for the rest of the transaction (PostgreSQL; SQLite's write transaction holds
/// the database already, so nothing is run there). Concurrent records of one pair queue
/// here, and the count in [`insert_sagas`] that follows sees what each one before committed.
pub async fn lock_velocity_pairs(
    conn: &mut Conn,
    sagas: &[NewSaga<'_>],
    velocity: Option<VelocityLimit>,
) -> Result<(), StoreError> {
    if velocity.is_none() || sagas.is_empty() || ovation_store::batch::row_lock(conn).is_empty() {
        return Ok(());
    }
    // Each pair once (an upsert may not touch a row twice), in one order for everyone.
    let mut pairs: Vec<(&str, &str)> = sagas
        .iter()
        .map(|n| (n.saga.sender_user_id.as_str(), n.saga.creator_id.as_str()))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let sql = format!(
        "INSERT INTO gift_velocity_locks (sender_user_id, creator_id, last_send_at_ms) VALUES {} \
         ON CONFLICT (sender_user_id, creator_id) \
         DO UPDATE SET last_send_at_ms = excluded.last_send_at_ms",
        ovation_store::batch::rows(1, pairs.len(), 3)
    );
    let latest = sagas.iter().map(|n| n.saga.created_at.0).max().unwrap_or(0);
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (sender, creator) in pairs {
        query = query.bind(sender).bind(creator).bind(latest);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

/// Forgets velocity rows idle since before `before` (at most `limit`): their pairs have
/// nothing in the window left. Returns how many went.
pub async fn prune_velocity_locks(
    conn: &mut Conn,
    before: UnixMillis,
    limit: i64,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM gift_velocity_locks WHERE last_send_at_ms < $1 AND (sender_user_id, creator_id) IN \
         (SELECT sender_user_id, creator_id FROM gift_velocity_locks WHERE last_send_at_ms < $1 LIMIT $2)",
    )
    .bind(before.0)
    .bind(limit)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

pub async fn get_saga(conn: &mut Conn, saga_id: &str) -> Result<Option<SagaRow>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SAGA_SELECT} WHERE s.saga_id = $1"
    )))
    .bind(saga_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(saga_from_row).transpose()
}

/// The saga `sender` recorded under idempotency key `key`.
pub async fn get_saga_by_key(
    conn: &mut Conn,
    sender: &str,
    key: &str,
) -> Result<Option<SagaRow>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SAGA_SELECT} WHERE s.sender_user_id = $1 AND s.idempotency_key = $2"
    )))
    .bind(sender)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(saga_from_row).transpose()
}

/// What a fenced save does with the lease it is fenced by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseAfter {
    /// Keep it and extend it to this instant (the saga goes on: its next step runs under
    /// the renewed lease without a separate claim).
    Renew(UnixMillis),
    /// Give it up (the saga is terminal, needs an operator, or waits for recovery).
    Release,
}

/// Persists a saga's progress, if `owner` still holds its lease, and in the same statement
/// renews or releases that lease. `false` (nothing written) if another replica took the
/// lease over, or it was freed (an operator's retry, a terminal saga): a freed lease is
/// nobody's, not even the empty owner's.
/// The quote columns of a saga: zeros until it is quoted (a quote's gift version is > 0).
fn stored_quote(saga: &Saga) -> Quote {
    saga.quote.unwrap_or(Quote {
        gift_version: 0,
        unit_price_coins: 0,
        total_coins: 0,
        creator_share_bps: 0,
        economy_version: 0,
    })
}

pub async fn save_saga(
    conn: &mut Conn,
    saga: &Saga,
    owner: &str,
    lease: LeaseAfter,
) -> Result<bool, StoreError> {
    let (next_owner, next_expiry) = match lease {
        LeaseAfter::Renew(until) => (owner, until.0),
        LeaseAfter::Release => ("", 0),
    };
    let q = stored_quote(saga);
    let done = sqlx::query(
        "UPDATE sagas SET gift_version = $2, unit_price_coins = $3, total_coins = $4, \
         creator_share_bps = $5, economy_version = $6, status = $7, step = $8, coins_spent = $9, \
         diamonds_credited = $10, sender_balance_after_coins = $11, rejection_reason = $12, \
         rejection_detail = $13, refund_started = $14, attempts = $15, last_error = $16, \
         next_attempt_at_ms = $17, updated_at_ms = $18, completed_at_ms = $19, \
         lease_owner = $21, lease_expires_at_ms = $22, unexpected_failures = $23 \
         WHERE saga_id = $1 AND lease_owner = $20 AND lease_owner <> ''",
    )
    .bind(saga.saga_id.as_str())
    .bind(q.gift_version)
    .bind(q.unit_price_coins)
    .bind(q.total_coins)
    .bind(i64::from(q.creator_share_bps))
    .bind(q.economy_version)
    .bind(saga.status.code())
    .bind(saga.step.code())
    .bind(saga.coins_spent)
    .bind(saga.diamonds_credited)
    .bind(saga.sender_balance_after)
    .bind(saga.rejection.code())
    .bind(saga.rejection_detail.as_str())
    .bind(i64::from(saga.refund_started))
    .bind(saga.attempts)
    .bind(saga.last_error.as_str())
    .bind(saga.next_attempt_at.0)
    .bind(saga.updated_at.0)
    .bind(saga.completed_at.map(|t| t.0))
    .bind(owner)
    .bind(next_owner)
    .bind(next_expiry)
    .bind(saga.unexpected_failures)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes (or renews) a saga's lease: only a PENDING saga whose lease is free, expired or
/// already `owner`'s. `false` if another replica holds it.
pub async fn claim_lease(
    conn: &mut Conn,
    saga_id: &str,
    owner: &str,
    until: UnixMillis,
    now: UnixMillis,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE sagas SET lease_owner = $2, lease_expires_at_ms = $3 WHERE saga_id = $1 AND status = 1 \
         AND (lease_owner = '' OR lease_owner = $2 OR lease_expires_at_ms < $4)",
    )
    .bind(saga_id)
    .bind(owner)
    .bind(until.0)
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives a lease up (shutdown, or the saga is terminal or waiting for a long retry).
pub async fn release_lease(conn: &mut Conn, saga_id: &str, owner: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE sagas SET lease_owner = '', lease_expires_at_ms = 0 WHERE saga_id = $1 AND lease_owner = $2")
        .bind(saga_id)
        .bind(owner)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// PENDING sagas due for a step whose lease is free or expired, oldest due first: (saga
/// id, the traceparent of the request that started it).
pub async fn due_sagas(
    conn: &mut Conn,
    now: UnixMillis,
    limit: i64,
) -> Result<Vec<(String, String)>, StoreError> {
    let rows = sqlx::query(
        "SELECT saga_id, trace_parent FROM sagas WHERE status = 1 AND next_attempt_at_ms <= $1 \
         AND (lease_owner = '' OR lease_expires_at_ms < $1) ORDER BY next_attempt_at_ms LIMIT $2",
    )
    .bind(now.0)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
        .collect()
}

/// Publishes a gift event of `kind` about a completed saga: the next number of its
/// stream, then the event. Run in the transaction that saves the saga COMPLETED (SENT) or
/// records its reversal (REVERSED): the outbox.
pub async fn publish_event(
    conn: &mut Conn,
    saga: &Saga,
    kind: EventKind,
) -> Result<i64, StoreError> {
    let seqs = publish_events(conn, &[saga], kind).await?;
    seqs.first()
        .copied()
        .ok_or_else(|| corrupt("event number of a published saga"))
}

/// Columns of one gift event row.
const EVENT_PARAMS: usize = 13;

/// Publishes gift events of `kind` about completed sagas, in the order given: each
/// stream's numbers are taken in one statement (its feed row moved by the count), then
/// every event is inserted in one statement. Returns each saga's event number. Callers
/// give the sagas ordered by stream, so two transactions take feed rows in the same order.
/// A REVERSED event carries the gift as it completed (coins, diamonds, completion time).
pub async fn publish_events(
    conn: &mut Conn,
    sagas: &[&Saga],
    kind: EventKind,
) -> Result<Vec<i64>, StoreError> {
    if sagas.is_empty() {
        return Ok(Vec::new());
    }
    // Each stream's count, in first-appearance order.
    let mut streams: Vec<(&str, i64)> = Vec::new();
    for saga in sagas {
        match streams.iter_mut().find(|(s, _)| *s == saga.stream_id) {
            Some((_, n)) => *n += 1,
            None => streams.push((saga.stream_id.as_str(), 1)),
        }
    }
    let mut next: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    for (stream, count) in &streams {
        let row = sqlx::query(
            "INSERT INTO stream_feeds (stream_id, last_seq) VALUES ($1, $2) \
             ON CONFLICT (stream_id) DO UPDATE SET last_seq = stream_feeds.last_seq + $2 \
             RETURNING last_seq",
        )
        .bind(*stream)
        .bind(*count)
        .fetch_one(&mut *conn)
        .await?;
        let last: i64 = row.try_get(0)?;
        next.insert(stream, last - count + 1);
    }
    let mut seqs = Vec::with_capacity(sagas.len());
    for saga in sagas {
        let seq = next
            .get_mut(saga.stream_id.as_str())
            .ok_or_else(|| corrupt("stream of a published saga"))?;
        seqs.push(*seq);
        *seq += 1;
    }
    let sql = format!(
        "INSERT INTO gift_events (stream_id, seq, saga_id, sender_user_id, creator_id, gift_id, \
         gift_version, quantity, coins, diamonds, message, completed_at_ms, kind) VALUES {}",
        ovation_store::batch::rows(1, sagas.len(), EVENT_PARAMS)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (saga, seq) in sagas.iter().zip(&seqs) {
        let quote = saga
            .quote
            .ok_or_else(|| corrupt("quote of a completed saga"))?;
        query = query
            .bind(saga.stream_id.as_str())
            .bind(*seq)
            .bind(saga.saga_id.as_str())
            .bind(saga.sender_user_id.as_str())
            .bind(saga.creator_id.as_str())
            .bind(saga.gift_id.as_str())
            .bind(quote.gift_version)
            .bind(i64::from(saga.quantity))
            .bind(saga.coins_spent)
            .bind(saga.diamonds_credited)
            .bind(saga.message.as_str())
            .bind(saga.completed_at.map_or(0, |t| t.0))
            .bind(kind.code());
    }
    query.execute(&mut *conn).await?;
    Ok(seqs)
}

/// One published gift event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    pub stream_id: String,
    pub seq: i64,
    pub saga_id: String,
    pub sender_user_id: String,
    pub creator_id: String,
    pub gift_id: String,
    pub gift_version: i64,
    pub quantity: i64,
    pub coins: i64,
    pub diamonds: i64,
    pub message: String,
    pub completed_at: UnixMillis,
    pub kind: EventKind,
}

/// A stream's events after `seq`, in order.
pub async fn events_after(
    conn: &mut Conn,
    stream: &str,
    seq: i64,
    limit: i64,
) -> Result<Vec<EventRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT stream_id, seq, saga_id, sender_user_id, creator_id, gift_id, gift_version, quantity, \
         coins, diamonds, message, completed_at_ms, kind FROM gift_events WHERE stream_id = $1 AND seq > $2 \
         ORDER BY seq LIMIT $3",
    )
    .bind(stream)
    .bind(seq)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(EventRow {
                stream_id: r.try_get("stream_id")?,
                seq: r.try_get("seq")?,
                saga_id: r.try_get("saga_id")?,
                sender_user_id: r.try_get("sender_user_id")?,
                creator_id: r.try_get("creator_id")?,
                gift_id: r.try_get("gift_id")?,
                gift_version: r.try_get("gift_version")?,
                quantity: r.try_get("quantity")?,
                coins: r.try_get("coins")?,
                diamonds: r.try_get("diamonds")?,
                message: r.try_get("message")?,
                completed_at: UnixMillis(r.try_get("completed_at_ms")?),
                kind: EventKind::from_code(r.try_get("kind")?)
                    .ok_or_else(|| corrupt("event kind"))?,
            })
        })
        .collect()
}

/// The last event number of a stream (0 if none).
pub async fn last_seq(conn: &mut Conn, stream: &str) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT last_seq FROM stream_feeds WHERE stream_id = $1")
        .bind(stream)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(r) => r.try_get(0)?,
        None => 0,
    })
}

/// Filters of ListSentGifts (at least one is set).
#[derive(Clone, Debug, Default)]
pub struct SentFilter {
    pub stream_id: Option<ResourceId>,
    pub sender_user_id: Option<ResourceId>,
    pub creator_id: Option<ResourceId>,
    pub status: Option<Status>,
}

/// A filter's id, or '' (which the query reads as "any").
fn or_any(id: &Option<ResourceId>) -> &str {
    id.as_ref().map_or("", ResourceId::as_str)
}

/// Sagas matching `filter`, older than (created_at, saga_id) `before`, newest first.
pub async fn list_sent(
    conn: &mut Conn,
    filter: &SentFilter,
    before: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<SagaRow>, StoreError> {
    let (at, id) = before.unwrap_or((i64::MAX, String::new()));
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SAGA_SELECT} WHERE ($1 = '' OR s.stream_id = $1) \
         AND ($2 = '' OR s.sender_user_id = $2) AND ($3 = '' OR s.creator_id = $3) \
         AND ($4 = 0 OR s.status = $4) \
         AND (s.created_at_ms < $5 OR (s.created_at_ms = $5 AND s.saga_id < $6)) \
         ORDER BY s.created_at_ms DESC, s.saga_id DESC LIMIT $7"
    )))
    .bind(or_any(&filter.stream_id))
    .bind(or_any(&filter.sender_user_id))
    .bind(or_any(&filter.creator_id))
    .bind(filter.status.map_or(0, Status::code))
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(saga_from_row).collect()
}

/// Sagas in creation order after (created_at, saga_id) `after`, with one of `statuses`
/// (all when empty).
pub async fn list_sagas(
    conn: &mut Conn,
    statuses: &[Status],
    after: Option<(i64, String)>,
    window: TimeWindow,
    limit: i64,
) -> Result<Vec<SagaRow>, StoreError> {
    let (at, id) = after.unwrap_or((i64::MIN, String::new()));
    let mut codes = [0i64; 5];
    for (slot, s) in codes.iter_mut().zip(statuses) {
        *slot = s.code();
    }
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SAGA_SELECT} WHERE ($1 = 0 OR s.status IN ($1, $2, $3, $4, $5)) \
         AND (s.created_at_ms > $6 OR (s.created_at_ms = $6 AND s.saga_id > $7)) \
         AND s.created_at_ms >= $8 AND s.created_at_ms < $9 \
         ORDER BY s.created_at_ms, s.saga_id LIMIT $10"
    )))
    .bind(codes[0])
    .bind(codes[1])
    .bind(codes[2])
    .bind(codes[3])
    .bind(codes[4])
    .bind(at)
    .bind(id)
    .bind(window.start_ms())
    .bind(window.end_ms())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(saga_from_row).collect()
}

/// NEEDS_OPERATOR sagas, and PENDING ones not updated since `pending_before` (if given);
/// with them, completed gifts whose reversal needs an operator (or is PENDING and not
/// updated since then). Oldest update (of the saga, or of the reversal in trouble) first,
/// after (that update, saga_id) `after` ([`SagaRow::stuck_position`]).
pub async fn stuck_sagas(
    conn: &mut Conn,
    pending_before: Option<UnixMillis>,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<SagaRow>, StoreError> {
    let (at, id) = after.unwrap_or((i64::MIN, String::new()));
    // Two indexed sets (a reversal exists only for a COMPLETED saga, so they never
    // overlap), each with the time it is ordered by.
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SAGA_SELECT} JOIN (\
           SELECT saga_id, updated_at_ms AS stuck_at FROM sagas \
             WHERE status = 5 OR (status = 1 AND updated_at_ms < $1) \
           UNION ALL \
           SELECT saga_id, updated_at_ms AS stuck_at FROM gift_reversals \
             WHERE state = 3 OR (state = 1 AND updated_at_ms < $1)\
         ) x ON x.saga_id = s.saga_id \
         WHERE (x.stuck_at > $2 OR (x.stuck_at = $2 AND x.saga_id > $3)) \
         ORDER BY x.stuck_at, x.saga_id LIMIT $4"
    )))
    .bind(pending_before.map_or(i64::MIN, |t| t.0))
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(saga_from_row).collect()
}

/// The saga backlog, for the metrics gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SagaBacklog {
    /// Sagas PENDING (started, no outcome yet).
    pub in_flight: i64,
    /// When the oldest PENDING saga was created, if any.
    pub oldest_in_flight_created_at: Option<UnixMillis>,
    /// Sagas in NEEDS_OPERATOR, and gift reversals in NEEDS_OPERATOR.
    pub needing_operator: i64,
}

/// Counts the saga backlog (indexed by `sagas_due` on status).
pub async fn saga_backlog(conn: &mut Conn) -> Result<SagaBacklog, StoreError> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM sagas WHERE status = 1), \
                (SELECT MIN(created_at_ms) FROM sagas WHERE status = 1), \
                (SELECT COUNT(*) FROM sagas WHERE status = 5) \
                + (SELECT COUNT(*) FROM gift_reversals WHERE state = 3)",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(SagaBacklog {
        in_flight: row.try_get(0)?,
        oldest_in_flight_created_at: row.try_get::<Option<i64>, _>(1)?.map(UnixMillis),
        needing_operator: row.try_get(2)?,
    })
}

/// Puts a PENDING or NEEDS_OPERATOR saga back to PENDING with a fresh budget, its lease
/// freed. `false` if it is terminal.
pub async fn reset_for_retry(
    conn: &mut Conn,
    saga_id: &str,
    now: UnixMillis,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE sagas SET status = 1, attempts = 0, unexpected_failures = 0, next_attempt_at_ms = $2, \
         updated_at_ms = $2, lease_owner = '', lease_expires_at_ms = 0 \
         WHERE saga_id = $1 AND status IN (1, 5)",
    )
    .bind(saga_id)
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn record_action(
    conn: &mut Conn,
    saga_id: &str,
    action: &str,
    actor: &str,
    reason: &str,
    now: UnixMillis,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO saga_actions (action_id, saga_id, action, actor, reason, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(saga_id)
    .bind(action)
    .bind(actor)
    .bind(reason)
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A stream's SENT events whose gift was not reversed (the feed's REVERSED event of a
/// saga is published in the transaction that records the reversal, so a reversed gift
/// leaves the leaderboard and totals in that commit).
const STANDING_GIFTS: &str = "gift_events e WHERE e.stream_id = $1 AND e.kind = 1 \
     AND NOT EXISTS (SELECT 1 FROM gift_events x WHERE x.saga_id = e.saga_id AND x.kind = 2)";

/// A stream's top gifters by coins (ties by id) and its totals, from COMPLETED gifts not
/// reversed.
pub struct Leaderboard {
    /// (sender, coins, gift count)
    pub entries: Vec<(String, i64, i64)>,
    pub gift_count: i64,
    pub quantity: i64,
    pub coins: i64,
    pub diamonds: i64,
    pub gifters: i64,
    pub last_gift_at: Option<UnixMillis>,
}

pub async fn leaderboard(
    conn: &mut Conn,
    stream: &str,
    top: i64,
) -> Result<Leaderboard, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT e.sender_user_id, CAST(SUM(e.coins) AS BIGINT) AS coins, COUNT(*) AS gifts \
         FROM {STANDING_GIFTS} GROUP BY e.sender_user_id ORDER BY coins DESC, e.sender_user_id LIMIT $2"
    )))
    .bind(stream)
    .bind(top)
    .fetch_all(&mut *conn)
    .await?;
    let entries = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let t = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*), CAST(COALESCE(SUM(e.quantity), 0) AS BIGINT), \
         CAST(COALESCE(SUM(e.coins), 0) AS BIGINT), CAST(COALESCE(SUM(e.diamonds), 0) AS BIGINT), \
         COUNT(DISTINCT e.sender_user_id), MAX(e.completed_at_ms) FROM {STANDING_GIFTS}"
    )))
    .bind(stream)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Leaderboard {
        entries,
        gift_count: t.try_get(0)?,
        quantity: t.try_get(1)?,
        coins: t.try_get(2)?,
        diamonds: t.try_get(3)?,
        gifters: t.try_get(4)?,
        last_gift_at: t.try_get::<Option<i64>, _>(5)?.map(UnixMillis),
    })
}

/// Records a gift's reversal, leased to `owner` until `lease_until`; `false` if the gift
/// has one already (one per gift: the saga id is the key; a concurrent second waits for
/// the first to commit, then finds it).
pub async fn insert_reversal(
    conn: &mut Conn,
    r: &Reversal,
    owner: &str,
    lease_until: UnixMillis,
) -> Result<bool, StoreError> {
    let row = sqlx::query(
        "INSERT INTO gift_reversals (saga_id, actor, reason, return_coins, state, step, \
         clawed_back_diamonds, returned_coins, attempts, unexpected_failures, last_error, \
         next_attempt_at_ms, lease_owner, lease_expires_at_ms, created_at_ms, updated_at_ms, done_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, 0, 0, 0, 0, '', $7, $8, $9, $10, $10, NULL) \
         ON CONFLICT (saga_id) DO NOTHING RETURNING saga_id",
    )
    .bind(r.saga_id.as_str())
    .bind(r.actor.as_str())
    .bind(r.reason.as_str())
    .bind(i64::from(r.return_coins))
    .bind(r.state.code())
    .bind(r.step.code())
    .bind(r.next_attempt_at.0)
    .bind(owner)
    .bind(lease_until.0)
    .bind(r.created_at.0)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.is_some())
}

/// Persists a reversal's progress if `owner` holds its lease, renewing or releasing it in
/// the same statement; `false` (nothing written) if it does not.
pub async fn save_reversal(
    conn: &mut Conn,
    r: &Reversal,
    owner: &str,
    lease: LeaseAfter,
) -> Result<bool, StoreError> {
    let (next_owner, next_expiry) = match lease {
        LeaseAfter::Renew(until) => (owner, until.0),
        LeaseAfter::Release => ("", 0),
    };
    let done = sqlx::query(
        "UPDATE gift_reversals SET state = $2, step = $3, clawed_back_diamonds = $4, \
         returned_coins = $5, attempts = $6, unexpected_failures = $7, last_error = $8, \
         next_attempt_at_ms = $9, updated_at_ms = $10, done_at_ms = $11, lease_owner = $13, \
         lease_expires_at_ms = $14 WHERE saga_id = $1 AND lease_owner = $12 AND lease_owner <> ''",
    )
    .bind(r.saga_id.as_str())
    .bind(r.state.code())
    .bind(r.step.code())
    .bind(r.clawed_back_diamonds)
    .bind(r.returned_coins)
    .bind(r.attempts)
    .bind(r.unexpected_failures)
    .bind(r.last_error.as_str())
    .bind(r.next_attempt_at.0)
    .bind(r.updated_at.0)
    .bind(r.done_at.map(|t| t.0))
    .bind(owner)
    .bind(next_owner)
    .bind(next_expiry)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes (or renews) a reversal's lease: only a PENDING one whose lease is free, expired or
/// already `owner`'s. `false` if another replica holds it (or it is not PENDING).
pub async fn claim_reversal_lease(
    conn: &mut Conn,
    saga_id: &str,
    owner: &str,
    until: UnixMillis,
    now: UnixMillis,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE gift_reversals SET lease_owner = $2, lease_expires_at_ms = $3 WHERE saga_id = $1 \
         AND state = 1 AND (lease_owner = '' OR lease_owner = $2 OR lease_expires_at_ms < $4)",
    )
    .bind(saga_id)
    .bind(owner)
    .bind(until.0)
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives a reversal's lease up (shutdown, or a long wait for a retry).
pub async fn release_reversal_lease(
    conn: &mut Conn,
    saga_id: &str,
    owner: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE gift_reversals SET lease_owner = '', lease_expires_at_ms = 0 \
         WHERE saga_id = $1 AND lease_owner = $2",
    )
    .bind(saga_id)
    .bind(owner)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// PENDING reversals due for a step whose lease is free or expired, oldest due first.
pub async fn due_reversals(
    conn: &mut Conn,
    now: UnixMillis,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query(
        "SELECT saga_id FROM gift_reversals WHERE state = 1 AND next_attempt_at_ms <= $1 \
         AND (lease_owner = '' OR lease_expires_at_ms < $1) ORDER BY next_attempt_at_ms LIMIT $2",
    )
    .bind(now.0)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
        .collect()
}

/// Puts a PENDING or NEEDS_OPERATOR reversal back to PENDING with a fresh attempt budget,
/// its lease freed (an operator's RetrySaga). `false` if there is none or it is DONE.
pub async fn reset_reversal_for_retry(
    conn: &mut Conn,
    saga_id: &str,
    now: UnixMillis,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE gift_reversals SET state = 1, attempts = 0, unexpected_failures = 0, \
         next_attempt_at_ms = $2, updated_at_ms = $2, lease_owner = '', lease_expires_at_ms = 0 \
         WHERE saga_id = $1 AND state IN (1, 3)",
    )
    .bind(saga_id)
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
