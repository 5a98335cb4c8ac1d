//! The gRPC layer, kept thin: who may call, parse, start or read sagas, map outcomes.
//! Proto types stop here.
//!
//! Authorization: only the sender (or the gateway for them) sends a gift; a receipt is
//! visible to its sender, its creator and admins (balances only to the sender and admins);
//! leaderboards and the live feed are open to every authenticated caller (they are what a
//! stream overlay shows, and carry no balances); operator views and retries are admin-only.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::Stream;
use ovation_auth::{Caller, Role};
use ovation_proto::gifting as pb;
use ovation_proto::gifting::gifting_service_server::GiftingService;
use ovation_proto::reasons;
use ovation_server::IdempotentCall;
use ovation_server::edge::{time_window, to_timestamp};
use ovation_server::{ApiError, access};
use ovation_store::{Db, StoreError};
use ovation_types::{
    IdempotencyKey, PageSize, PageToken, Quantity, ResourceId, Text, UnixMillis, Violations,
};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::domain::{GiftOrder, Saga, Status as SagaStatus};
use crate::saga::SagaEngine;
use crate::sending::{GiftingError, RetrySagaCmd, SendGiftCmd, Sending};
use crate::store::{self, EventRow, SagaRow, SentFilter};

type Reply<T> = Result<Response<T>, Status>;

/// Limits of the live feed.
#[derive(Clone, Copy, Debug)]
pub struct FeedLimits {
    /// Most concurrent WatchStreamGifts calls per replica.
    pub watchers_max: usize,
    /// Events buffered per watcher; a watcher that does not drain them within
    /// `slow_watcher_ms` is disconnected (it resumes from its last cursor).
    pub buffer_events: usize,
    pub slow_watcher_ms: u64,
    /// How often a watcher polls for events published by other replicas.
    pub poll_interval_ms: u64,
}

impl Default for FeedLimits {
    fn default() -> Self {
        FeedLimits {
            watchers_max: 1_000,
            buffer_events: 64,
            slow_watcher_ms: 5_000,
            poll_interval_ms: 500,
        }
    }
}

/// Events read from the database per batch.
const FEED_BATCH: i64 = 100;
/// Most entries a leaderboard returns.
const LEADERBOARD_MAX: i32 = 100;

/// The gifting gRPC service.
#[derive(Clone, Debug)]
pub struct Gifting {
    db: Db,
    engine: SagaEngine,
    sending: Sending,
    feed: FeedLimits,
    watchers: Arc<AtomicUsize>,
}

impl Gifting {
    pub fn new(db: Db, engine: SagaEngine, send_wait_ms: u64, feed: FeedLimits) -> Self {
        Gifting {
            sending: Sending::new(db.clone(), engine.clone(), send_wait_ms),
            db,
            engine,
            feed,
            watchers: Arc::new(AtomicUsize::new(0)),
        }
    }

    async fn read(
        &self,
    ) -> Result<ovation_store::sqlx::pool::PoolConnection<ovation_store::sqlx::Any>, ApiError> {
        Ok(self.db.conn().await?)
    }
}

impl From<GiftingError> for ApiError {
    fn from(e: GiftingError) -> Self {
        match e {
            GiftingError::Store(e) => ApiError::from(e),
            GiftingError::SagaNotFound(id) => ApiError::not_found("gift saga", id),
            GiftingError::SagaTerminal(id) => ApiError::failed_precondition(
                reasons::gifting::SAGA_TERMINAL,
                format!("saga {id} is terminal; there is nothing to retry"),
            ),
            GiftingError::Internal(detail) => ApiError::Internal(detail),
        }
    }
}

/// The caller's deadline from `grpc-timeout`, if any.
fn caller_deadline(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let raw = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3_600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn optional_id(v: &mut Violations, field: &str, raw: &str) -> Option<Option<String>> {
    if raw.is_empty() {
        Some(None)
    } else {
        v.check(field, ResourceId::parse(raw))
            .map(|id| Some(id.into_string()))
    }
}

/// Whether the caller may see a saga's receipt, and its sender's balance.
fn visibility(caller: &Caller, saga: &Saga) -> (bool, bool) {
    let admin = caller.has(Role::Admin);
    let sender = caller.is_user(&saga.sender_user_id);
    let creator = caller.is_user(&saga.creator_id);
    (admin || sender || creator, admin || sender)
}

#[tonic::async_trait]
impl GiftingService for Gifting {
    async fn send_gift(
        &self,
        request: Request<pb::SendGiftRequest>,
    ) -> Reply<pb::SendGiftResponse> {
        let caller = access::require_user(&request, &request.get_ref().sender_user_id, &[])?;
        let deadline = caller_deadline(request.metadata());
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "SendGift", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
        let sender = v.check("sender_user_id", ResourceId::parse(&req.sender_user_id));
        let creator = v.check("creator_id", ResourceId::parse(&req.creator_id));
        if sender.is_some() && sender == creator {
            v.add(
                "creator_id",
                "must differ from sender_user_id: nobody gifts themselves",
            );
        }
        let stream = v.check("stream_id", ResourceId::parse(&req.stream_id));
        let gift = v.check("gift_id", ResourceId::parse(&req.gift_id));
        let quantity = v.check("quantity", Quantity::parse(req.quantity));
        let message = v.check("message", Text::parse(&req.message));
        let (key, sender, creator, stream, gift, quantity, message) = v
            .finish(|| Some((key?, sender?, creator?, stream?, gift?, quantity?, message?)))
            .map_err(ApiError::from)?;
        let cmd = SendGiftCmd {
            key,
            order: GiftOrder {
                sender_user_id: sender.into_string(),
                creator_id: creator.into_string(),
                stream_id: stream.into_string(),
                gift_id: gift.into_string(),
                quantity: quantity.get(),
                message: message.into_string(),
            },
        };
        let row = self
            .sending
            .send(&call, cmd, deadline)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::SendGiftResponse {
            receipt: Some(receipt(&row.saga, true)),
        }))
    }

    async fn get_sent_gift(
        &self,
        request: Request<pb::GetSentGiftRequest>,
    ) -> Reply<pb::GetSentGiftResponse> {
        let caller = access::caller(&request)?;
        let id = ResourceId::parse(&request.get_ref().saga_id)
            .map_err(|e| ApiError::invalid("saga_id", e))?;
        let mut conn = self.read().await?;
        let row = store::get_saga(&mut conn, id.as_str())
            .await
            .map_err(ApiError::from)?;
        let (row, balances) = match row {
            Some(row) => match visibility(&caller, &row.saga) {
                (true, balances) => (row, balances),
                // Someone else's gift is as invisible as a missing one.
                (false, _) => return Err(ApiError::not_found("gift saga", id.as_str()).into()),
            },
            None => return Err(ApiError::not_found("gift saga", id.as_str()).into()),
        };
        Ok(Response::new(pb::GetSentGiftResponse {
            receipt: Some(receipt(&row.saga, balances)),
        }))
    }

    async fn list_sent_gifts(
        &self,
        request: Request<pb::ListSentGiftsRequest>,
    ) -> Reply<pb::ListSentGiftsResponse> {
        let caller = access::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let stream = optional_id(&mut v, "stream_id", &req.stream_id);
        let sender = optional_id(&mut v, "sender_user_id", &req.sender_user_id);
        let creator = optional_id(&mut v, "creator_id", &req.creator_id);
        if req.stream_id.is_empty() && req.sender_user_id.is_empty() && req.creator_id.is_empty() {
            v.add(
                "stream_id",
                "set at least one of stream_id, sender_user_id, creator_id",
            );
        }
        let status = v.check(
            "status",
            match req.status {
                0 => Ok(None),
                s => SagaStatus::from_code(i64::from(s))
                    .map(Some)
                    .ok_or_else(|| "is not a saga status".to_string()),
            },
        );
        let size = v.check("page_size", PageSize::parse(req.page_size));
        let cursor = v.check(
            "page_token",
            PageToken::parse(&req.page_token).and_then(|t| t.keyset()),
        );
        let (filter, size, cursor) = v
            .finish(|| {
                Some((
                    SentFilter {
                        stream_id: stream?,
                        sender_user_id: sender?,
                        creator_id: creator?,
                        status: status?,
                    },
                    size?,
                    cursor?,
                ))
            })
            .map_err(ApiError::from)?;
        let own = filter
            .sender_user_id
            .as_deref()
            .is_some_and(|s| caller.is_user(s))
            || filter
                .creator_id
                .as_deref()
                .is_some_and(|c| caller.is_user(c));
        if !own && !caller.has(Role::Admin) {
            return Err(ApiError::PermissionDenied(format!(
                "{} may list only gifts they sent or received",
                caller.subject()
            ))
            .into());
        }
        let mut conn = self.read().await?;
        let mut rows = store::list_sent(&mut conn, &filter, cursor, size.fetch_limit())
            .await
            .map_err(ApiError::from)?;
        let next_page_token = size.cut(&mut rows, |r| {
            format!("{}:{}", r.saga.created_at.0, r.saga.saga_id)
        });
        Ok(Response::new(pb::ListSentGiftsResponse {
            receipts: rows
                .iter()
                .map(|r| receipt(&r.saga, visibility(&caller, &r.saga).1))
                .collect(),
            next_page_token,
        }))
    }

    async fn get_stream_leaderboard(
        &self,
        request: Request<pb::GetStreamLeaderboardRequest>,
    ) -> Reply<pb::GetStreamLeaderboardResponse> {
        access::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let stream = v.check("stream_id", ResourceId::parse(&req.stream_id));
        let top = v.check(
            "max_entries",
            match req.max_entries {
                0 => Ok(10),
                n if (1..=LEADERBOARD_MAX).contains(&n) => Ok(n),
                _ => Err(format!("must be between 1 and {LEADERBOARD_MAX}")),
            },
        );
        let (stream, top) = v.finish(|| Some((stream?, top?))).map_err(ApiError::from)?;
        let mut conn = self.read().await?;
        let board = store::leaderboard(&mut conn, stream.as_str(), i64::from(top))
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetStreamLeaderboardResponse {
            stream_id: stream.into_string(),
            entries: board
                .entries
                .iter()
                .enumerate()
                .map(|(i, (sender, coins, count))| pb::LeaderboardEntry {
                    rank: i32::try_from(i + 1).unwrap_or(i32::MAX),
                    sender_user_id: sender.clone(),
                    coins: *coins,
                    gift_count: *count,
                })
                .collect(),
            totals: Some(pb::StreamTotals {
                gift_count: board.gift_count,
                gift_quantity: board.quantity,
                coins: board.coins,
                diamonds: board.diamonds,
                gifter_count: board.gifters,
                last_gift_time: board.last_gift_at.map(to_timestamp),
            }),
        }))
    }

    type WatchStreamGiftsStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchStreamGiftsResponse, Status>> + Send>>;

    async fn watch_stream_gifts(
        &self,
        request: Request<pb::WatchStreamGiftsRequest>,
    ) -> Reply<Self::WatchStreamGiftsStream> {
        access::caller(&request)?;
        let req = request.into_inner();
        let stream =
            ResourceId::parse(&req.stream_id).map_err(|e| ApiError::invalid("stream_id", e))?;
        if req.resume_cursor.len() > 255 {
            return Err(
                ApiError::invalid("resume_cursor", "must be at most 255 characters").into(),
            );
        }
        let mut conn = self.read().await?;
        let last = store::last_seq(&mut conn, stream.as_str())
            .await
            .map_err(ApiError::from)?;
        drop(conn);
        let start = if req.resume_cursor.is_empty() {
            if req.from_beginning { 0 } else { last }
        } else {
            let seq = PageToken::parse(&req.resume_cursor)
                .ok()
                .and_then(|t| {
                    t.cursor().and_then(|c| {
                        c.split_once('\u{1f}')
                            .map(|(s, n)| (s.to_owned(), n.to_owned()))
                    })
                })
                .filter(|(s, _)| s == stream.as_str())
                .and_then(|(_, n)| n.parse::<i64>().ok())
                .filter(|n| (0..=last).contains(n));
            match seq {
                Some(seq) => seq,
                None => {
                    return Err(Status::out_of_range(
                        "resume_cursor is not a cursor of this stream's feed; start without one",
                    ));
                }
            }
        };
        let guard = WatcherSlot::take(&self.watchers, self.feed.watchers_max).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "too many watchers on this replica (at most {}); retry shortly",
                self.feed.watchers_max
            ))
        })?;
        let (tx, rx) = mpsc::channel(self.feed.buffer_events.max(1));
        tokio::spawn(feed(
            self.db.clone(),
            self.engine.clone(),
            stream.into_string(),
            FeedPosition {
                seq: start,
                live_after: last,
            },
            tx,
            self.feed,
            guard,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_stuck_sagas(
        &self,
        request: Request<pb::ListStuckSagasRequest>,
    ) -> Reply<pb::ListStuckSagasResponse> {
        access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let pending_before = v.check(
            "pending_longer_than",
            match &req.pending_longer_than {
                None => Ok(None),
                Some(d) if d.seconds >= 1 && d.seconds <= 86_400 * 365 => {
                    Ok(Some(UnixMillis(UnixMillis::now().0 - d.seconds * 1_000)))
                }
                Some(_) => Err("must be between 1 s and a year".to_string()),
            },
        );
        let size = v.check("page_size", PageSize::parse(req.page_size));
        let cursor = v.check(
            "page_token",
            PageToken::parse(&req.page_token).and_then(|t| t.keyset()),
        );
        let (pending_before, size, cursor) = v
            .finish(|| Some((pending_before?, size?, cursor?)))
            .map_err(ApiError::from)?;
        let mut conn = self.read().await?;
        let mut rows = store::stuck_sagas(&mut conn, pending_before, cursor, size.fetch_limit())
            .await
            .map_err(ApiError::from)?;
        let next_page_token = size.cut(&mut rows, |r| {
            format!("{}:{}", r.saga.updated_at.0, r.saga.saga_id)
        });
        Ok(Response::new(pb::ListStuckSagasResponse {
            sagas: rows.iter().map(saga_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn retry_saga(
        &self,
        request: Request<pb::RetrySagaRequest>,
    ) -> Reply<pb::RetrySagaResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "RetrySaga", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
        let id = v.check("saga_id", ResourceId::parse(&req.saga_id));
        let reason = v.noted_reason(
            Text::parse_required(&req.reason),
            &req.actor,
            caller.subject(),
        );
        let (key, saga_id, reason) = v
            .finish(|| Some((key?, id?, reason?)))
            .map_err(ApiError::from)?;
        // The actor of record is the caller; the request's actor is only a note.
        let cmd = RetrySagaCmd {
            key,
            saga_id,
            reason,
            actor: caller.subject().to_owned(),
        };
        let row = self
            .sending
            .retry(&call, cmd)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::RetrySagaResponse {
            saga: Some(saga_to_proto(&row)),
        }))
    }

    async fn list_sagas(
        &self,
        request: Request<pb::ListSagasRequest>,
    ) -> Reply<pb::ListSagasResponse> {
        access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let mut v = Violations::default();
        if req.statuses.len() > 5 {
            v.add("statuses", "at most 5");
        }
        let statuses: Vec<Option<SagaStatus>> = req
            .statuses
            .iter()
            .take(5)
            .enumerate()
            .map(|(i, s)| {
                v.check(
                    &format!("statuses[{i}]"),
                    SagaStatus::from_code(i64::from(*s))
                        .ok_or_else(|| "is not a saga status".to_string()),
                )
            })
            .collect();
        let size = v.check("page_size", PageSize::parse(req.page_size));
        let cursor = v.check(
            "page_token",
            PageToken::parse(&req.page_token).and_then(|t| t.keyset()),
        );
        let window = time_window(&mut v, req.start_time.as_ref(), req.end_time.as_ref());
        let (statuses, size, cursor, window) = v
            .finish(|| {
                Some((
                    statuses.into_iter().collect::<Option<Vec<_>>>()?,
                    size?,
                    cursor?,
                    window?,
                ))
            })
            .map_err(ApiError::from)?;
        let mut conn = self.read().await?;
        let mut rows = store::list_sagas(&mut conn, &statuses, cursor, window, size.fetch_limit())
            .await
            .map_err(ApiError::from)?;
        let next_page_token = size.cut(&mut rows, |r| {
            format!("{}:{}", r.saga.created_at.0, r.saga.saga_id)
        });
        Ok(Response::new(pb::ListSagasResponse {
            sagas: rows.iter().map(saga_to_proto).collect(),
            next_page_token,
        }))
    }
}

/// A watcher's place under `watchers_max`, given back when the watcher ends; counted in
/// the watchers gauge while it lives.
struct WatcherSlot(Arc<AtomicUsize>, ovation_metrics::FeedWatcherGauge);

impl WatcherSlot {
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<WatcherSlot> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| WatcherSlot(count.clone(), ovation_metrics::FeedWatcherGauge::open()))
    }
}

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where a watcher is in its stream's feed.
#[derive(Clone, Copy, Debug)]
struct FeedPosition {
    /// The last event sent (or skipped): the feed goes on after it.
    seq: i64,
    /// The stream's newest event when the watcher started: later events are live, and
    /// their delivery lag is measured; earlier ones are catch-up.
    live_after: i64,
}

/// The feed of one watcher: events after `seq`, then live ones as they are published.
async fn feed(
    db: Db,
    engine: SagaEngine,
    stream: String,
    position: FeedPosition,
    tx: mpsc::Sender<Result<pb::WatchStreamGiftsResponse, Status>>,
    limits: FeedLimits,
    _slot: WatcherSlot,
) {
    let mut published = engine.subscribe();
    let mut seq = position.seq;
    loop {
        let events = match db.pool().acquire().await {
            Ok(mut conn) => store::events_after(&mut conn, &stream, seq, FEED_BATCH).await,
            Err(e) => Err(StoreError::from(e)),
        };
        let events = match events {
            Ok(events) => events,
            Err(e) => {
                let _ = tx.send(Err(ApiError::from(e).into())).await;
                return;
            }
        };
        let full_batch = events.len() as i64 == FEED_BATCH;
        for event in events {
            seq = event.seq;
            let completed_at = event.completed_at;
            let message = pb::WatchStreamGiftsResponse {
                event: Some(event_to_proto(&event)),
            };
            match tokio::time::timeout(
                Duration::from_millis(limits.slow_watcher_ms),
                tx.send(Ok(message)),
            )
            .await
            {
                Ok(Ok(())) => {
                    if seq > position.live_after {
                        ovation_metrics::global()
                            .feed_delivered(UnixMillis::now().0.saturating_sub(completed_at.0));
                    }
                }
                Ok(Err(_)) => return, // the watcher went away
                Err(_) => {
                    let _ = tx.try_send(Err(Status::resource_exhausted(
                        "this watcher fell too far behind; resume from the last cursor it saw",
                    )));
                    return;
                }
            }
        }
        if full_batch {
            continue;
        }
        tokio::select! {
            _ = published.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(limits.poll_interval_ms)) => {}
            _ = tx.closed() => return,
        }
    }
}

fn feed_cursor(stream: &str, seq: i64) -> String {
    // The unit separator cannot occur in an id, so the pair splits unambiguously.
    PageToken::after(&format!("{stream}\u{1f}{seq}"))
}

fn event_to_proto(e: &EventRow) -> pb::GiftEvent {
    pb::GiftEvent {
        cursor: feed_cursor(&e.stream_id, e.seq),
        saga_id: e.saga_id.clone(),
        stream_id: e.stream_id.clone(),
        sender_user_id: e.sender_user_id.clone(),
        creator_id: e.creator_id.clone(),
        gift_id: e.gift_id.clone(),
        gift_version: e.gift_version,
        quantity: i32::try_from(e.quantity).unwrap_or(0),
        coins: e.coins,
        diamonds: e.diamonds,
        message: e.message.clone(),
        complete_time: Some(to_timestamp(e.completed_at)),
    }
}

/// The receipt of a saga; the sender's balance only for those who may see it.
pub fn receipt(s: &Saga, with_balance: bool) -> pb::GiftReceipt {
    let q = s.quote;
    pb::GiftReceipt {
        saga_id: s.saga_id.clone(),
        status: s.status as i32,
        sender_user_id: s.sender_user_id.clone(),
        creator_id: s.creator_id.clone(),
        stream_id: s.stream_id.clone(),
        gift_id: s.gift_id.clone(),
        quantity: s.quantity,
        message: s.message.clone(),
        gift_version: q.map_or(0, |q| q.gift_version),
        unit_price_coins: q.map_or(0, |q| q.unit_price_coins),
        total_coins: q.map_or(0, |q| q.total_coins),
        creator_share_bps: q.map_or(0, |q| q.creator_share_bps),
        economy_version: q.map_or(0, |q| q.economy_version),
        coins_spent: s.coins_spent,
        diamonds_credited: s.diamonds_credited,
        sender_balance_after_coins: if with_balance {
            s.sender_balance_after
        } else {
            None
        },
        rejection_reason: s.rejection as i32,
        rejection_detail: s.rejection_detail.clone(),
        create_time: Some(to_timestamp(s.created_at)),
        complete_time: s.completed_at.map(to_timestamp),
    }
}

fn saga_to_proto(r: &SagaRow) -> pb::Saga {
    let s = &r.saga;
    let live = s.status == SagaStatus::Pending;
    pb::Saga {
        receipt: Some(receipt(s, true)),
        step: s.step as i32,
        debit_operation_id: s.operation_id().to_owned(),
        credit_operation_id: s.operation_id().to_owned(),
        refund_operation_id: if s.refund_started {
            s.refund_operation_id()
        } else {
            String::new()
        },
        attempts: i32::try_from(s.attempts).unwrap_or(i32::MAX),
        last_error: s.last_error.clone(),
        next_attempt_time: live.then(|| to_timestamp(s.next_attempt_at)),
        lease_owner: r.lease_owner.clone(),
        lease_expire_time: (!r.lease_owner.is_empty()).then(|| to_timestamp(r.lease_expires_at)),
        update_time: Some(to_timestamp(s.updated_at)),
    }
}
