//! All of gifting's SQL, in one place.
//!
//! Fencing: a saga row is written only by the replica holding its lease
//! (`WHERE lease_owner = $me`), so a replica that lost its lease (paused, partitioned)
//! cannot overwrite the progress of the one that took over.

use ovation_store::StoreError;
use ovation_store::db::Conn;
use ovation_store::sqlx::{self, Row, any::AnyRow};
use ovation_types::{ResourceId, TimeWindow, UnixMillis};

use crate::domain::{Quote, Rejection, Saga, Status, Step};

/// A saga with what only the store knows about it.
#[derive(Clone, Debug)]
pub struct SagaRow {
    pub saga: Saga,
    pub idempotency_key: String,
    pub fingerprint: String,
    pub lease_owner: String,
    pub lease_expires_at: UnixMillis,
}

const SAGA_COLUMNS: &str = "saga_id, idempotency_key, fingerprint, sender_user_id, creator_id, stream_id, \
     gift_id, quantity, message, gift_version, unit_price_coins, total_coins, creator_share_bps, \
     economy_version, status, step, coins_spent, diamonds_credited, sender_balance_after_coins, \
     rejection_reason, rejection_detail, refund_started, attempts, last_error, next_attempt_at_ms, \
     lease_owner, lease_expires_at_ms, created_at_ms, updated_at_ms, completed_at_ms, unexpected_failures";

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
    })
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

/// Records a new saga leased to `owner`; `false` if its sender already used its
/// idempotency key (keys are unique per sender, not globally).
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
    Ok(!insert_sagas(conn, &[new]).await?.is_empty())
}

/// Parameters [`insert_sagas`] binds per saga.
const NEW_SAGA_PARAMS: usize = 21;

/// Records new sagas in one statement; returns the ids of those recorded (a saga whose
/// sender already used its key, in the table or earlier in `sagas`, is not).
pub async fn insert_sagas(
    conn: &mut Conn,
    sagas: &[NewSaga<'_>],
) -> Result<std::collections::HashSet<String>, StoreError> {
    if sagas.is_empty() {
        return Ok(Default::default());
    }
    // Per row, in SAGA_COLUMNS order: $1..$16 (ids, order, quote, status, step), the
    // outcome fields every new saga starts with, $17 next attempt, $18 lease owner, $19
    // lease expiry, $20 created = updated, never completed, no failures, $21 traceparent.
    let mut values = String::new();
    for row in 0..sagas.len() {
        let first = row * NEW_SAGA_PARAMS + 1;
        let p = |n: usize| format!("${}", first + n - 1);
        if row > 0 {
            values.push_str(", ");
        }
        values.push_str(&format!(
            "({}, 0, 0, NULL, 0, '', 0, 0, '', {}, {}, {}, {}, {}, NULL, 0, {})",
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
        "INSERT INTO sagas ({SAGA_COLUMNS}, trace_parent) VALUES {values} \
         ON CONFLICT (sender_user_id, idempotency_key) DO NOTHING RETURNING saga_id"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
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
    }
    let rows = query.fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
        .collect()
}

pub async fn get_saga(conn: &mut Conn, saga_id: &str) -> Result<Option<SagaRow>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SAGA_COLUMNS} FROM sagas WHERE saga_id = $1"
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
        "SELECT {SAGA_COLUMNS} FROM sagas WHERE sender_user_id = $1 AND idempotency_key = $2"
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

/// Publishes a completed saga's gift event: the next number of its stream, then the
/// event. Run in the transaction that saves the saga COMPLETED (the outbox).
pub async fn publish_event(conn: &mut Conn, saga: &Saga) -> Result<i64, StoreError> {
    let seqs = publish_events(conn, &[saga]).await?;
    seqs.first()
        .copied()
        .ok_or_else(|| corrupt("event number of a published saga"))
}

/// Columns of one gift event row.
const EVENT_PARAMS: usize = 12;

/// Publishes the gift events of completed sagas, in the order given: each stream's
/// numbers are taken in one statement (its feed row moved by the count), then every event
/// is inserted in one statement. Returns each saga's event number. Callers give the
/// sagas ordered by stream, so two transactions take feed rows in the same order.
pub async fn publish_events(conn: &mut Conn, sagas: &[&Saga]) -> Result<Vec<i64>, StoreError> {
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
         gift_version, quantity, coins, diamonds, message, completed_at_ms) VALUES {}",
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
            .bind(saga.completed_at.map_or(0, |t| t.0));
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
         coins, diamonds, message, completed_at_ms FROM gift_events WHERE stream_id = $1 AND seq > $2 \
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
        "SELECT {SAGA_COLUMNS} FROM sagas WHERE ($1 = '' OR stream_id = $1) \
         AND ($2 = '' OR sender_user_id = $2) AND ($3 = '' OR creator_id = $3) \
         AND ($4 = 0 OR status = $4) \
         AND (created_at_ms < $5 OR (created_at_ms = $5 AND saga_id < $6)) \
         ORDER BY created_at_ms DESC, saga_id DESC LIMIT $7"
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
        "SELECT {SAGA_COLUMNS} FROM sagas WHERE ($1 = 0 OR status IN ($1, $2, $3, $4, $5)) \
         AND (created_at_ms > $6 OR (created_at_ms = $6 AND saga_id > $7)) \
         AND created_at_ms >= $8 AND created_at_ms < $9 \
         ORDER BY created_at_ms, saga_id LIMIT $10"
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

/// NEEDS_OPERATOR sagas, and PENDING ones not updated since `pending_before` (if given),
/// oldest update first, after (updated_at, saga_id) `after`.
pub async fn stuck_sagas(
    conn: &mut Conn,
    pending_before: Option<UnixMillis>,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<SagaRow>, StoreError> {
    let (at, id) = after.unwrap_or((i64::MIN, String::new()));
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SAGA_COLUMNS} FROM sagas WHERE (status = 5 OR (status = 1 AND updated_at_ms < $1)) \
         AND (updated_at_ms > $2 OR (updated_at_ms = $2 AND saga_id > $3)) \
         ORDER BY updated_at_ms, saga_id LIMIT $4"
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
    /// Sagas in NEEDS_OPERATOR.
    pub needing_operator: i64,
}

/// Counts the saga backlog (indexed by `sagas_due` on status).
pub async fn saga_backlog(conn: &mut Conn) -> Result<SagaBacklog, StoreError> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM sagas WHERE status = 1), \
                (SELECT MIN(created_at_ms) FROM sagas WHERE status = 1), \
                (SELECT COUNT(*) FROM sagas WHERE status = 5)",
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

/// A stream's top gifters by coins (ties by id) and its totals, from COMPLETED gifts.
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
    let rows = sqlx::query(
        "SELECT sender_user_id, CAST(SUM(coins) AS BIGINT) AS coins, COUNT(*) AS gifts FROM gift_events \
         WHERE stream_id = $1 GROUP BY sender_user_id ORDER BY coins DESC, sender_user_id LIMIT $2",
    )
    .bind(stream)
    .bind(top)
    .fetch_all(&mut *conn)
    .await?;
    let entries = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let t = sqlx::query(
        "SELECT COUNT(*), CAST(COALESCE(SUM(quantity), 0) AS BIGINT), CAST(COALESCE(SUM(coins), 0) AS BIGINT), \
         CAST(COALESCE(SUM(diamonds), 0) AS BIGINT), COUNT(DISTINCT sender_user_id), MAX(completed_at_ms) \
         FROM gift_events WHERE stream_id = $1",
    )
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
