//! One `parse_*` per request: the proto request in, a domain command or query out, or every
//! violated field (one INVALID_ARGUMENT names them all). No I/O: unit-tested below.

use ovation_auth::Caller;
use ovation_proto::gifting as pb;
use ovation_server::edge::{self, time_window};
use ovation_types::Parsed;
use ovation_types::{
    IdempotencyKey, PageSize, PageToken, Quantity, ResourceId, Text, TimeWindow, UnixMillis,
    Violation, Violations,
};

use super::feed;
use crate::domain::{GiftOrder, Status};
use crate::sending::{RetrySagaCmd, ReverseGiftCmd, SendGiftCmd};
use crate::store::SentFilter;

/// Most entries a leaderboard returns.
const LEADERBOARD_MAX: i32 = 100;
/// Entries a leaderboard returns unless asked for another number.
const LEADERBOARD_DEFAULT: i32 = 10;
/// Longest `resume_cursor` looked at.
const FEED_CURSOR_CHARS_MAX: usize = 255;

/// One page of a keyset-paged list: its size, and the (time, saga id) it continues after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub size: PageSize,
    pub after: Option<(i64, String)>,
}

/// ListSentGifts, parsed.
#[derive(Clone, Debug)]
pub struct SentGiftsQuery {
    pub filter: SentFilter,
    pub page: Page,
}

/// GetStreamLeaderboard, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderboardQuery {
    pub stream: ResourceId,
    pub top: i32,
}

/// Where in its stream's feed a watcher starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedStart {
    /// After the newest event: live events only.
    Newest,
    /// At the stream's first event.
    Beginning,
    /// After the event a cursor names, if it named one of this stream's feed (whether
    /// that event exists is the database's to say).
    After(Option<i64>),
}

impl FeedStart {
    /// The event the feed goes on after, given the stream's newest (`last`); `None` if a
    /// cursor named no event of this stream's feed.
    pub fn after(self, last: i64) -> Option<i64> {
        match self {
            FeedStart::Newest => Some(last),
            FeedStart::Beginning => Some(0),
            FeedStart::After(seq) => seq.filter(|seq| (0..=last).contains(seq)),
        }
    }
}

/// WatchStreamGifts, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchQuery {
    pub stream: ResourceId,
    pub start: FeedStart,
}

/// ListStuckSagas, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StuckQuery {
    /// PENDING sagas count as stuck when not updated since then; none: only those
    /// needing an operator.
    pub pending_before: Option<UnixMillis>,
    pub page: Page,
}

/// ListSagas, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SagasQuery {
    /// All when empty.
    pub statuses: Vec<Status>,
    pub page: Page,
    pub window: TimeWindow,
}

pub fn parse_send_gift(req: &pb::SendGiftRequest) -> Parsed<SendGiftCmd> {
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
    v.finish(|| {
        Some(SendGiftCmd {
            key: key?,
            order: GiftOrder {
                sender_user_id: sender?,
                creator_id: creator?,
                stream_id: stream?,
                gift_id: gift?,
                quantity: quantity?,
                message: message?,
            },
        })
    })
}

pub fn parse_get_sent_gift(req: &pb::GetSentGiftRequest) -> Parsed<ResourceId> {
    ResourceId::parse(&req.saga_id).map_err(|e| vec![Violation::new("saga_id", e)])
}

pub fn parse_list_sent_gifts(req: &pb::ListSentGiftsRequest) -> Parsed<SentGiftsQuery> {
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
            s => saga_status(s).map(Some),
        },
    );
    let page = keyset_page(&mut v, req.page_size, &req.page_token);
    v.finish(|| {
        Some(SentGiftsQuery {
            filter: SentFilter {
                stream_id: stream?,
                sender_user_id: sender?,
                creator_id: creator?,
                status: status?,
            },
            page: page?,
        })
    })
}

pub fn parse_get_stream_leaderboard(
    req: &pb::GetStreamLeaderboardRequest,
) -> Parsed<LeaderboardQuery> {
    let mut v = Violations::default();
    let stream = v.check("stream_id", ResourceId::parse(&req.stream_id));
    let top = v.check(
        "max_entries",
        match req.max_entries {
            0 => Ok(LEADERBOARD_DEFAULT),
            n if (1..=LEADERBOARD_MAX).contains(&n) => Ok(n),
            _ => Err(format!("must be between 1 and {LEADERBOARD_MAX}")),
        },
    );
    v.finish(|| {
        Some(LeaderboardQuery {
            stream: stream?,
            top: top?,
        })
    })
}

/// Fields are checked one at a time here: the stream first, then the cursor's length.
pub fn parse_watch_stream_gifts(req: &pb::WatchStreamGiftsRequest) -> Parsed<WatchQuery> {
    let stream =
        ResourceId::parse(&req.stream_id).map_err(|e| vec![Violation::new("stream_id", e)])?;
    if req.resume_cursor.len() > FEED_CURSOR_CHARS_MAX {
        return Err(vec![Violation::new(
            "resume_cursor",
            format!("must be at most {FEED_CURSOR_CHARS_MAX} characters"),
        )]);
    }
    let start = match (req.resume_cursor.is_empty(), req.from_beginning) {
        (true, false) => FeedStart::Newest,
        (true, true) => FeedStart::Beginning,
        (false, _) => FeedStart::After(feed::seq_of_cursor(&req.resume_cursor, stream.as_str())),
    };
    Ok(WatchQuery { stream, start })
}

/// `now` is when "pending longer than" is counted back from.
pub fn parse_list_stuck_sagas(
    req: &pb::ListStuckSagasRequest,
    now: UnixMillis,
) -> Parsed<StuckQuery> {
    let mut v = Violations::default();
    let pending_before = v.check(
        "pending_longer_than",
        match &req.pending_longer_than {
            None => Ok(None),
            Some(d) if d.seconds >= 1 && d.seconds <= 86_400 * 365 => {
                Ok(Some(UnixMillis(now.0 - d.seconds * 1_000)))
            }
            Some(_) => Err("must be between 1 s and a year".to_string()),
        },
    );
    let page = keyset_page(&mut v, req.page_size, &req.page_token);
    v.finish(|| {
        Some(StuckQuery {
            pending_before: pending_before?,
            page: page?,
        })
    })
}

/// What every operator action on a saga names: `[idempotency_key, saga_id, reason,
/// actor]` of the request parsed into its key, the saga, and the reason of record (a
/// reported actor other than the caller is only a note in it).
fn operator_action(
    v: &mut Violations,
    [key, saga_id, reason, reported]: [&str; 4],
    caller: &Caller,
) -> (Option<IdempotencyKey>, Option<ResourceId>, Option<Text>) {
    let key = v.check("idempotency_key", IdempotencyKey::parse(key));
    let saga_id = v.check("saga_id", ResourceId::parse(saga_id));
    let reason = v.noted_reason(Text::parse_required(reason), reported, caller.subject());
    (key, saga_id, reason)
}

/// The actor of record is `caller`; the request's actor is only a note in the reason.
pub fn parse_retry_saga(req: &pb::RetrySagaRequest, caller: &Caller) -> Parsed<RetrySagaCmd> {
    let mut v = Violations::default();
    let (key, saga_id, reason) = operator_action(
        &mut v,
        [&req.idempotency_key, &req.saga_id, &req.reason, &req.actor],
        caller,
    );
    v.finish(|| {
        Some(RetrySagaCmd {
            key: key?,
            saga_id: saga_id?,
            reason: reason?,
            actor: caller.subject().to_owned(),
        })
    })
}

/// Most statuses one ListSagas names.
const STATUSES_MAX: usize = 5;

pub fn parse_list_sagas(req: &pb::ListSagasRequest) -> Parsed<SagasQuery> {
    let mut v = Violations::default();
    if req.statuses.len() > STATUSES_MAX {
        v.add("statuses", "at most 5");
    }
    let statuses: Vec<Option<Status>> = req
        .statuses
        .iter()
        .take(STATUSES_MAX)
        .enumerate()
        .map(|(i, s)| v.check(&format!("statuses[{i}]"), saga_status(*s)))
        .collect();
    let page = keyset_page(&mut v, req.page_size, &req.page_token);
    let window = time_window(&mut v, req.start_time.as_ref(), req.end_time.as_ref());
    v.finish(|| {
        Some(SagasQuery {
            statuses: statuses.into_iter().collect::<Option<Vec<_>>>()?,
            page: page?,
            window: window?,
        })
    })
}

/// A saga status as a request spells it (UNSPECIFIED and unknown numbers are none).
fn saga_status(raw: i32) -> Result<Status, String> {
    pb::SagaStatus::try_from(raw)
        .map_err(|_| "is not a saga status".to_string())
        .and_then(Status::try_from)
}

/// An id that may be left empty (`Some(None)`); `None` if it is set and invalid.
fn optional_id(v: &mut Violations, field: &str, raw: &str) -> Option<Option<ResourceId>> {
    v.check(field, edge::optional_id(raw))
}

/// `page_size` and `page_token` (a keyset cursor), each checked.
fn keyset_page(v: &mut Violations, page_size: i32, page_token: &str) -> Option<Page> {
    let size = v.check("page_size", PageSize::parse(page_size));
    let after = v.check(
        "page_token",
        PageToken::parse(page_token).and_then(|t| t.keyset()),
    );
    Some(Page {
        size: size?,
        after: after?,
    })
}

/// The actor of record is `caller`; the request's actor is only a note in the reason.
pub fn parse_reverse_gift(req: &pb::ReverseGiftRequest, caller: &Caller) -> Parsed<ReverseGiftCmd> {
    let mut v = Violations::default();
    let (key, saga_id, reason) = operator_action(
        &mut v,
        [&req.idempotency_key, &req.saga_id, &req.reason, &req.actor],
        caller,
    );
    v.finish(|| {
        Some(ReverseGiftCmd {
            key: key?,
            saga_id: saga_id?,
            reason: reason?,
            actor: caller.subject().to_owned(),
            return_coins: req.return_coins,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(violations: &[Violation]) -> Vec<&str> {
        violations.iter().map(|v| v.field.as_str()).collect()
    }

    fn send() -> pb::SendGiftRequest {
        pb::SendGiftRequest {
            idempotency_key: "k-1".into(),
            sender_user_id: "alice".into(),
            creator_id: "bob".into(),
            stream_id: "s-1".into(),
            gift_id: "rose".into(),
            quantity: 3,
            message: "hi".into(),
        }
    }

    #[test]
    fn a_send_becomes_the_senders_order_under_their_key() {
        let cmd = parse_send_gift(&send()).expect("parses");
        assert_eq!(cmd.key.as_str(), "k-1");
        let order = &cmd.order;
        assert_eq!(
            [
                order.sender_user_id.as_str(),
                order.creator_id.as_str(),
                order.stream_id.as_str(),
                order.gift_id.as_str(),
                order.message.as_str(),
            ],
            ["alice", "bob", "s-1", "rose", "hi"]
        );
        assert_eq!(order.quantity.get(), 3);
    }

    #[test]
    fn a_bad_send_names_every_bad_field_and_nobody_gifts_themselves() {
        let bad = pb::SendGiftRequest {
            idempotency_key: String::new(),
            creator_id: "alice".into(),
            quantity: 0,
            ..send()
        };
        let violations = parse_send_gift(&bad).unwrap_err();
        assert_eq!(
            fields(&violations),
            ["idempotency_key", "creator_id", "quantity"]
        );
    }

    #[test]
    fn listing_sent_gifts_needs_a_filter_and_a_real_status() {
        let none = pb::ListSentGiftsRequest::default();
        assert_eq!(
            fields(&parse_list_sent_gifts(&none).unwrap_err()),
            ["stream_id"]
        );
        let unspecified = pb::ListSentGiftsRequest {
            sender_user_id: "alice".into(),
            ..Default::default()
        };
        let query = parse_list_sent_gifts(&unspecified).expect("parses");
        assert_eq!(query.filter.status, None);
        assert_eq!(
            query.filter.sender_user_id.as_ref().map(ResourceId::as_str),
            Some("alice")
        );
        let unknown = pb::ListSentGiftsRequest {
            status: 9,
            ..unspecified
        };
        assert_eq!(
            fields(&parse_list_sent_gifts(&unknown).unwrap_err()),
            ["status"]
        );
    }

    #[test]
    fn a_leaderboard_has_ten_entries_unless_asked_for_one_to_a_hundred() {
        let req = |max_entries| pb::GetStreamLeaderboardRequest {
            stream_id: "s-1".into(),
            max_entries,
        };
        assert_eq!(parse_get_stream_leaderboard(&req(0)).unwrap().top, 10);
        assert_eq!(parse_get_stream_leaderboard(&req(100)).unwrap().top, 100);
        assert!(parse_get_stream_leaderboard(&req(101)).is_err());
        assert!(parse_get_stream_leaderboard(&req(-1)).is_err());
    }

    #[test]
    fn a_watcher_starts_at_the_newest_event_the_first_or_after_its_cursor() {
        let req = |resume_cursor: &str, from_beginning| pb::WatchStreamGiftsRequest {
            stream_id: "s-1".into(),
            resume_cursor: resume_cursor.into(),
            from_beginning,
        };
        let start = |r| parse_watch_stream_gifts(&r).unwrap().start;
        assert_eq!(start(req("", false)), FeedStart::Newest);
        assert_eq!(start(req("", true)), FeedStart::Beginning);
        assert_eq!(
            start(req(&feed::cursor("s-1", 7), true)),
            FeedStart::After(Some(7))
        );
        assert_eq!(
            start(req(&feed::cursor("s-2", 7), false)),
            FeedStart::After(None)
        );
        assert_eq!(FeedStart::After(Some(8)).after(7), None);
        assert_eq!(FeedStart::After(Some(-1)).after(7), None);
        assert_eq!(FeedStart::Newest.after(7), Some(7));
        let long = "x".repeat(256);
        assert_eq!(
            fields(&parse_watch_stream_gifts(&req(&long, false)).unwrap_err()),
            ["resume_cursor"]
        );
    }

    #[test]
    fn stuck_means_pending_for_one_second_to_a_year() {
        let req = |seconds| pb::ListStuckSagasRequest {
            pending_longer_than: Some(prost_types::Duration { seconds, nanos: 0 }),
            ..Default::default()
        };
        let now = UnixMillis(10_000_000);
        assert_eq!(
            parse_list_stuck_sagas(&req(60), now)
                .unwrap()
                .pending_before,
            Some(UnixMillis(10_000_000 - 60_000))
        );
        assert!(parse_list_stuck_sagas(&req(0), now).is_err());
        assert!(parse_list_stuck_sagas(&req(86_400 * 365 + 1), now).is_err());
        let any = parse_list_stuck_sagas(&pb::ListStuckSagasRequest::default(), now).unwrap();
        assert_eq!(any.pending_before, None);
    }

    #[test]
    fn a_retry_is_journalled_as_the_caller_with_the_reported_actor_a_note() {
        let admin = Caller::new("ops-1", vec![ovation_auth::Role::Admin], None);
        let req = pb::RetrySagaRequest {
            idempotency_key: "k-1".into(),
            saga_id: "sg_1".into(),
            reason: "wallet is back".into(),
            actor: String::new(),
        };
        let cmd = parse_retry_saga(&req, &admin).expect("parses");
        assert_eq!(
            (cmd.saga_id.as_str(), cmd.actor.as_str()),
            ("sg_1", "ops-1")
        );
        assert_eq!(cmd.reason.as_str(), "wallet is back");
        let no_reason = pb::RetrySagaRequest {
            reason: String::new(),
            ..req
        };
        assert_eq!(
            fields(&parse_retry_saga(&no_reason, &admin).unwrap_err()),
            ["reason"]
        );
    }

    #[test]
    fn a_reversal_is_recorded_as_the_caller_and_names_every_bad_field() {
        let admin = Caller::new("ops-1", vec![ovation_auth::Role::Admin], None);
        let req = pb::ReverseGiftRequest {
            idempotency_key: "k-1".into(),
            saga_id: "sg_1".into(),
            actor: "fraud-bot".into(),
            reason: "stolen card".into(),
            return_coins: true,
        };
        let cmd = parse_reverse_gift(&req, &admin).expect("parses");
        assert_eq!(
            (cmd.saga_id.as_str(), cmd.actor.as_str(), cmd.return_coins),
            ("sg_1", "ops-1", true)
        );
        assert_eq!(cmd.reason.as_str(), "stolen card (reported by: fraud-bot)");
        let bad = pb::ReverseGiftRequest {
            idempotency_key: String::new(),
            saga_id: "no spaces".into(),
            reason: String::new(),
            ..req
        };
        assert_eq!(
            fields(&parse_reverse_gift(&bad, &admin).unwrap_err()),
            ["idempotency_key", "saga_id", "reason"]
        );
    }

    #[test]
    fn listing_sagas_takes_at_most_five_real_statuses() {
        let req = |statuses: Vec<i32>| pb::ListSagasRequest {
            statuses,
            ..Default::default()
        };
        assert_eq!(
            parse_list_sagas(&req(vec![1, 5])).unwrap().statuses,
            [Status::Pending, Status::NeedsOperator]
        );
        assert_eq!(
            fields(&parse_list_sagas(&req(vec![1, 0, 6])).unwrap_err()),
            ["statuses[1]", "statuses[2]"]
        );
        assert_eq!(
            fields(&parse_list_sagas(&req(vec![1; 6])).unwrap_err()),
            ["statuses"]
        );
    }
}
