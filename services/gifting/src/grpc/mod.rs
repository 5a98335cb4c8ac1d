//! The gRPC layer, kept thin: who may call (each handler's first line), parse
//! (`parse`), send or retry ([`crate::sending`]) or read, answer (`to_proto`).
//! Proto types stop here.
//!
//! Authorization: only the sender (or the gateway for them) sends a gift; a receipt is
//! visible to its sender, its creator and admins (balances only to the sender and admins);
//! leaderboards and the live feed are open to every authenticated caller (they are what a
//! stream overlay shows, and carry no balances); operator views, retries and gift
//! reversals are admin-only.

mod feed;
mod parse;
mod to_proto;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use futures::Stream;
use ovation_auth::{Caller, Role};
use ovation_proto::gifting as pb;
use ovation_proto::gifting::gifting_service_server::GiftingService;
use ovation_proto::reasons;
use ovation_server::{ApiError, IdempotentCall, access, edge};
use ovation_store::Db;
use ovation_types::UnixMillis;
use tonic::{Request, Response, Status};

pub use self::feed::FeedLimits;
use self::feed::{FeedPosition, Watcher, WatcherSlot};
use crate::domain::Saga;
use crate::saga::SagaEngine;
use crate::sending::{GiftingError, Sending};
use crate::store::{self, SentFilter};

type Reply<T> = Result<Response<T>, Status>;

/// The gifting gRPC service.
#[derive(Clone, Debug)]
pub struct GiftingApi {
    db: Db,
    /// Wakes feed watchers when this replica publishes a gift event.
    engine: SagaEngine,
    sending: Sending,
    feed: FeedLimits,
    watchers: Arc<AtomicUsize>,
}

impl GiftingApi {
    pub fn new(db: Db, engine: SagaEngine, sending: Sending, feed: FeedLimits) -> Self {
        GiftingApi {
            sending,
            db,
            engine,
            feed,
            watchers: Arc::new(AtomicUsize::new(0)),
        }
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
            GiftingError::GiftNotCompleted(id) => ApiError::failed_precondition(
                reasons::gifting::GIFT_NOT_COMPLETED,
                format!("gift {id} is not COMPLETED; only a completed gift can be reversed"),
            ),
            GiftingError::GiftAlreadyReversed(id) => ApiError::failed_precondition(
                reasons::gifting::GIFT_ALREADY_REVERSED,
                format!("gift {id} was reversed already"),
            ),
            e @ GiftingError::VelocityLimit { .. } => ApiError::ResourceExhausted {
                reason: reasons::common::VELOCITY_LIMIT,
                message: e.to_string(),
            },
            GiftingError::Internal(detail) => ApiError::Internal(detail),
        }
    }
}

/// Whether the caller may see a saga's receipt, and its sender's balance.
fn visibility(caller: &Caller, saga: &Saga) -> (bool, bool) {
    let admin = caller.has(Role::Admin);
    let sender = caller.is_user(&saga.sender_user_id);
    let creator = caller.is_user(&saga.creator_id);
    (admin || sender || creator, admin || sender)
}

/// Whether the caller may list the gifts `filter` selects: their own, sent or received,
/// unless they are an admin.
fn may_list(caller: &Caller, filter: &SentFilter) -> Result<(), ApiError> {
    let own = [&filter.sender_user_id, &filter.creator_id]
        .into_iter()
        .flatten()
        .any(|user| caller.is_user(user.as_str()));
    if own || caller.has(Role::Admin) {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied(format!(
            "{} may list only gifts they sent or received",
            caller.subject()
        )))
    }
}

#[tonic::async_trait]
impl GiftingService for GiftingApi {
    async fn send_gift(
        &self,
        request: Request<pb::SendGiftRequest>,
    ) -> Reply<pb::SendGiftResponse> {
        let caller = access::require_user(&request, &request.get_ref().sender_user_id, &[])?;
        let deadline = edge::incoming_deadline(request.metadata());
        let call = IdempotentCall::new(&caller, "SendGift", request.get_ref());
        let cmd = parse::parse_send_gift(request.get_ref()).map_err(ApiError::from)?;
        let row = self
            .sending
            .send(&call, cmd, deadline)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::SendGiftResponse {
            receipt: Some(to_proto::receipt(&row, true)),
        }))
    }

    async fn get_sent_gift(
        &self,
        request: Request<pb::GetSentGiftRequest>,
    ) -> Reply<pb::GetSentGiftResponse> {
        let caller = access::caller(&request)?;
        let id = parse::parse_get_sent_gift(request.get_ref()).map_err(ApiError::from)?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let row = store::get_saga(&mut conn, id.as_str())
            .await
            .map_err(ApiError::from)?;
        // Someone else's gift is as invisible as a missing one.
        let (row, balances) = row
            .and_then(|row| match visibility(&caller, &row.saga) {
                (true, balances) => Some((row, balances)),
                (false, _) => None,
            })
            .ok_or_else(|| ApiError::not_found("gift saga", id.as_str()))?;
        Ok(Response::new(pb::GetSentGiftResponse {
            receipt: Some(to_proto::receipt(&row, balances)),
        }))
    }

    async fn list_sent_gifts(
        &self,
        request: Request<pb::ListSentGiftsRequest>,
    ) -> Reply<pb::ListSentGiftsResponse> {
        let caller = access::caller(&request)?;
        let query = parse::parse_list_sent_gifts(request.get_ref()).map_err(ApiError::from)?;
        may_list(&caller, &query.filter)?;
        let (size, after) = (query.page.size, query.page.after);
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let mut rows = store::list_sent(&mut conn, &query.filter, after, size.fetch_limit())
            .await
            .map_err(ApiError::from)?;
        let next_page_token = size.cut(&mut rows, |r| {
            format!("{}:{}", r.saga.created_at.0, r.saga.saga_id)
        });
        Ok(Response::new(pb::ListSentGiftsResponse {
            receipts: rows
                .iter()
                .map(|r| to_proto::receipt(r, visibility(&caller, &r.saga).1))
                .collect(),
            next_page_token,
        }))
    }

    async fn get_stream_leaderboard(
        &self,
        request: Request<pb::GetStreamLeaderboardRequest>,
    ) -> Reply<pb::GetStreamLeaderboardResponse> {
        access::caller(&request)?;
        let query =
            parse::parse_get_stream_leaderboard(request.get_ref()).map_err(ApiError::from)?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let board = store::leaderboard(&mut conn, query.stream.as_str(), i64::from(query.top))
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(to_proto::leaderboard(
            query.stream.into_string(),
            &board,
        )))
    }

    type WatchStreamGiftsStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchStreamGiftsResponse, Status>> + Send>>;

    async fn watch_stream_gifts(
        &self,
        request: Request<pb::WatchStreamGiftsRequest>,
    ) -> Reply<Self::WatchStreamGiftsStream> {
        access::caller(&request)?;
        let query = parse::parse_watch_stream_gifts(request.get_ref()).map_err(ApiError::from)?;
        let last = {
            let mut conn = self.db.conn().await.map_err(ApiError::from)?;
            store::last_seq(&mut conn, query.stream.as_str())
                .await
                .map_err(ApiError::from)?
        };
        let seq = query.start.after(last).ok_or_else(|| {
            Status::out_of_range(
                "resume_cursor is not a cursor of this stream's feed; start without one",
            )
        })?;
        let slot = WatcherSlot::take(&self.watchers, self.feed.watchers_max).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "too many watchers on this replica (at most {}); retry shortly",
                self.feed.watchers_max
            ))
        })?;
        let events = Watcher {
            db: self.db.clone(),
            engine: self.engine.clone(),
            stream: query.stream.into_string(),
            position: FeedPosition {
                seq,
                live_after: last,
            },
            limits: self.feed,
            slot,
        }
        .spawn();
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(events),
        )))
    }

    async fn list_stuck_sagas(
        &self,
        request: Request<pb::ListStuckSagasRequest>,
    ) -> Reply<pb::ListStuckSagasResponse> {
        access::require(&request, &[Role::Admin])?;
        let query = parse::parse_list_stuck_sagas(request.get_ref(), UnixMillis::now())
            .map_err(ApiError::from)?;
        let (size, after) = (query.page.size, query.page.after);
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let mut rows =
            store::stuck_sagas(&mut conn, query.pending_before, after, size.fetch_limit())
                .await
                .map_err(ApiError::from)?;
        let next_page_token = size.cut(&mut rows, |r| {
            let (at, id) = r.stuck_position();
            format!("{at}:{id}")
        });
        Ok(Response::new(pb::ListStuckSagasResponse {
            sagas: rows.iter().map(to_proto::saga).collect(),
            next_page_token,
        }))
    }

    async fn retry_saga(
        &self,
        request: Request<pb::RetrySagaRequest>,
    ) -> Reply<pb::RetrySagaResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let call = IdempotentCall::new(&caller, "RetrySaga", request.get_ref());
        let cmd = parse::parse_retry_saga(request.get_ref(), &caller).map_err(ApiError::from)?;
        let row = self
            .sending
            .retry(&call, cmd)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::RetrySagaResponse {
            saga: Some(to_proto::saga(&row)),
        }))
    }

    async fn reverse_gift(
        &self,
        request: Request<pb::ReverseGiftRequest>,
    ) -> Reply<pb::ReverseGiftResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let deadline = edge::incoming_deadline(request.metadata());
        let call = IdempotentCall::new(&caller, "ReverseGift", request.get_ref());
        let cmd = parse::parse_reverse_gift(request.get_ref(), &caller).map_err(ApiError::from)?;
        let row = self
            .sending
            .reverse(&call, cmd, deadline)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ReverseGiftResponse {
            gift: Some(to_proto::receipt(&row, true)),
        }))
    }

    async fn list_sagas(
        &self,
        request: Request<pb::ListSagasRequest>,
    ) -> Reply<pb::ListSagasResponse> {
        access::require(&request, &[Role::Admin])?;
        let query = parse::parse_list_sagas(request.get_ref()).map_err(ApiError::from)?;
        let (size, after) = (query.page.size, query.page.after);
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let mut rows = store::list_sagas(
            &mut conn,
            &query.statuses,
            after,
            query.window,
            size.fetch_limit(),
        )
        .await
        .map_err(ApiError::from)?;
        let next_page_token = size.cut(&mut rows, |r| {
            format!("{}:{}", r.saga.created_at.0, r.saga.saga_id)
        });
        Ok(Response::new(pb::ListSagasResponse {
            sagas: rows.iter().map(to_proto::saga).collect(),
            next_page_token,
        }))
    }
}
