//! ReverseGift (issue 14, fraud review) over real gRPC, with catalog, wallet and payout
//! beside gifting: recorded once per gift with the feed's REVERSED event and the gift out
//! of the leaderboard in the same commit; then driven to DONE (payout claws the diamonds
//! back, the wallet returns the coins if asked), surviving a gifting restart.

use ovation_gifting::GiftingSettings;
use ovation_proto::gifting as pb;
use ovation_proto::payout as payout_pb;
use ovation_testkit::{
    GiftingClient, InProcessSuite, Service, TestDatabase, databases, reason, violated_fields,
};
use tokio_stream::StreamExt;
use tonic::Code;

use crate::suite::{fast_retries, receipt_of, send, start};

const COMPLETED: i32 = pb::SagaStatus::Completed as i32;
const DONE: i32 = pb::GiftReversalState::Done as i32;
const PENDING: i32 = pb::GiftReversalState::Pending as i32;
const NEEDS_OPERATOR: i32 = pb::GiftReversalState::NeedsOperator as i32;

fn reverse(key: &str, saga_id: &str, return_coins: bool) -> pb::ReverseGiftRequest {
    pb::ReverseGiftRequest {
        idempotency_key: key.into(),
        saga_id: saga_id.into(),
        actor: String::new(),
        reason: "stolen card".into(),
        return_coins,
    }
}

/// The gift after a ReverseGift call (which must be accepted).
async fn reversed(admin: &mut GiftingClient, request: pb::ReverseGiftRequest) -> pb::GiftReceipt {
    admin
        .reverse_gift(request)
        .await
        .unwrap()
        .into_inner()
        .gift
        .unwrap()
}

/// The receipt now, as an admin reads it.
async fn receipt_now(admin: &mut GiftingClient, saga_id: &str) -> pb::GiftReceipt {
    admin
        .get_sent_gift(pb::GetSentGiftRequest {
            saga_id: saga_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap()
}

/// Polls a gift until its reversal is no longer PENDING (bounded).
async fn reversal_settled(admin: &mut GiftingClient, saga_id: &str) -> pb::GiftReversal {
    for _ in 0..600 {
        let reversal = receipt_now(admin, saga_id).await.reversal.unwrap();
        if reversal.state != PENDING {
            return reversal;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the reversal of {saga_id} did not settle within 15 s");
}

async fn board(client: &mut GiftingClient) -> pb::GetStreamLeaderboardResponse {
    client
        .get_stream_leaderboard(pb::GetStreamLeaderboardRequest {
            stream_id: "stream-1".into(),
            max_entries: 0,
        })
        .await
        .unwrap()
        .into_inner()
}

/// The first `n` events of stream-1's feed, from its beginning.
async fn feed(client: &mut GiftingClient, n: usize) -> Vec<pb::GiftEvent> {
    let mut stream = client
        .watch_stream_gifts(pb::WatchStreamGiftsRequest {
            stream_id: "stream-1".into(),
            resume_cursor: String::new(),
            from_beginning: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while events.len() < n {
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("events arrive");
        events.push(next.unwrap().unwrap().event.unwrap());
    }
    events
}

async fn balance(suite: &InProcessSuite, creator: &str) -> payout_pb::DiamondBalance {
    suite
        .clients
        .payout_admin()
        .await
        .get_diamond_balance(payout_pb::GetDiamondBalanceRequest {
            creator_id: creator.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .balance
        .unwrap()
}

async fn clawbacks(suite: &InProcessSuite, saga_id: &str) -> Vec<payout_pb::Clawback> {
    suite
        .clients
        .payout_admin()
        .await
        .list_clawbacks(payout_pb::ListClawbacksRequest {
            operation_ids: vec![saga_id.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .clawbacks
}

/// Recording needs no peer: the gift leaves the leaderboard and totals, the feed says
/// REVERSED after SENT, once per gift (the same key replays, another key is refused).
#[tokio::test]
async fn a_reversed_gift_leaves_the_leaderboard_and_the_feed_says_so_once() {
    for db in databases().await {
        let suite = start(db).await;
        let backend = suite.backend;
        suite.funded_viewer("gus", "coins_1000").await;
        suite.funded_viewer("hana", "coins_1000").await;
        suite.creator("ivy").await;
        let mut gus = suite.clients.gifting_as("gus").await;
        let mut hana = suite.clients.gifting_as("hana").await;
        let mut admin = suite.clients.gifting_admin().await;
        let kept = receipt_of(&mut gus, send("a", "gus", "ivy", "confetti", 1)).await;
        let fraud = receipt_of(&mut hana, send("b", "hana", "ivy", "confetti", 2)).await;
        assert_eq!((kept.status, fraud.status), (COMPLETED, COMPLETED));
        let before = board(&mut gus).await.totals.unwrap();
        assert_eq!(
            (before.gift_count, before.coins, before.gifter_count),
            (2, 300, 2)
        );

        let gift = reversed(&mut admin, reverse("rv-1", &fraud.saga_id, false)).await;
        let reversal = gift.reversal.clone().unwrap();
        assert_eq!(
            (
                gift.status,
                reversal.actor.as_str(),
                reversal.reason.as_str()
            ),
            (COMPLETED, "test-admin", "stolen card"),
            "[{backend}] the gift stays COMPLETED; its reversal is recorded as the caller"
        );
        let after = board(&mut gus).await;
        let totals = after.totals.unwrap();
        assert_eq!(
            (
                totals.gift_count,
                totals.coins,
                totals.diamonds,
                totals.gifter_count
            ),
            (1, 100, 50, 1),
            "[{backend}] the reversed gift left the totals"
        );
        let ranks: Vec<(String, i64)> = after
            .entries
            .iter()
            .map(|e| (e.sender_user_id.clone(), e.coins))
            .collect();
        assert_eq!(ranks, [("gus".to_string(), 100)], "[{backend}]");

        let events = feed(&mut gus, 3).await;
        let kinds: Vec<(String, i32, i64)> = events
            .iter()
            .map(|e| (e.saga_id.clone(), e.kind, e.coins))
            .collect();
        assert_eq!(
            kinds,
            [
                (kept.saga_id.clone(), pb::GiftEventKind::Sent as i32, 100),
                (fraud.saga_id.clone(), pb::GiftEventKind::Sent as i32, 200),
                (
                    fraud.saga_id.clone(),
                    pb::GiftEventKind::Reversed as i32,
                    200
                ),
            ],
            "[{backend}] REVERSED after SENT, with the gift's coins"
        );

        // The same key again answers the same reversal; another key is refused.
        let replay = reversed(&mut admin, reverse("rv-1", &fraud.saga_id, false)).await;
        assert_eq!(
            replay.reversal.unwrap().create_time,
            reversal.create_time,
            "[{backend}]"
        );
        let twice = admin
            .reverse_gift(reverse("rv-2", &fraud.saga_id, true))
            .await
            .unwrap_err();
        assert_eq!(
            (twice.code(), reason(&twice).as_str()),
            (Code::FailedPrecondition, "GIFT_ALREADY_REVERSED"),
            "[{backend}]"
        );
        let same_key_other_request = admin
            .reverse_gift(reverse("rv-1", &fraud.saga_id, true))
            .await
            .unwrap_err();
        assert_eq!(
            same_key_other_request.code(),
            Code::AlreadyExists,
            "[{backend}]"
        );
        let totals = board(&mut gus).await.totals.unwrap();
        assert_eq!(totals.gift_count, 1, "[{backend}] taken out once");
        suite.stop().await;
    }
}

#[tokio::test]
async fn reversals_of_unknown_unfinished_or_badly_named_gifts_are_refused() {
    for db in databases().await {
        let suite = start(db).await;
        let backend = suite.backend;
        suite.funded_viewer("jo", "coins_100").await;
        suite.creator("kim").await;
        let mut jo = suite.clients.gifting_as("jo").await;
        let mut admin = suite.clients.gifting_admin().await;
        let unknown = admin
            .reverse_gift(reverse("u", "sg_nope", false))
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound, "[{backend}]");
        // 110 coins cannot pay a 1,000-coin gift: REJECTED, nothing to reverse.
        let rejected = receipt_of(&mut jo, send("big", "jo", "kim", "galaxy", 1)).await;
        assert_eq!(
            rejected.status,
            pb::SagaStatus::Rejected as i32,
            "[{backend}]"
        );
        let not_completed = admin
            .reverse_gift(reverse("r", &rejected.saga_id, false))
            .await
            .unwrap_err();
        assert_eq!(
            (not_completed.code(), reason(&not_completed).as_str()),
            (Code::FailedPrecondition, "GIFT_NOT_COMPLETED"),
            "[{backend}]"
        );
        let bad = admin
            .reverse_gift(pb::ReverseGiftRequest {
                idempotency_key: String::new(),
                saga_id: "not an id".into(),
                actor: String::new(),
                reason: String::new(),
                return_coins: false,
            })
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument, "[{backend}]");
        assert_eq!(
            violated_fields(&bad),
            ["idempotency_key", "saga_id", "reason"],
            "[{backend}]"
        );
        assert_eq!(
            receipt_now(&mut admin, &rejected.saga_id).await.reversal,
            None
        );
        suite.stop().await;
    }
}

/// End to end: payout takes the gift's diamonds back and, with return_coins, the sender
/// gets the coins back; GetSentGift shows the reversal DONE with both figures.
#[tokio::test]
async fn a_reversal_claws_the_diamonds_back_and_returns_the_coins() {
    for db in databases().await {
        let suite = start(db).await;
        let backend = suite.backend;
        suite.funded_viewer("lea", "coins_1000").await; // 1,100 coins
        suite.funded_viewer("max", "coins_1000").await;
        suite.creator("ned").await;
        let mut lea = suite.clients.gifting_as("lea").await;
        let mut max = suite.clients.gifting_as("max").await;
        let mut admin = suite.clients.gifting_admin().await;
        let returned = receipt_of(&mut lea, send("l1", "lea", "ned", "confetti", 2)).await;
        let kept_coins = receipt_of(&mut max, send("m1", "max", "ned", "doughnut", 3)).await;
        assert_eq!((returned.status, kept_coins.status), (COMPLETED, COMPLETED));
        let credited = balance(&suite, "ned").await;
        assert_eq!(suite.coins("lea").await, 900);

        // With the coins returned.
        let gift = reversed(&mut admin, reverse("l", &returned.saga_id, true)).await;
        let r = match gift.reversal.unwrap() {
            r if r.state == PENDING => reversal_settled(&mut admin, &returned.saga_id).await,
            r => r,
        };
        assert_eq!(
            (r.state, r.clawed_back_diamonds, r.returned_coins),
            (DONE, 100, 200),
            "[{backend}] {r:?}"
        );
        assert!(r.done_time.is_some());
        assert_eq!(suite.coins("lea").await, 1_100, "[{backend}] coins back");
        // Without: the diamonds go, the coins stay spent.
        let gift = reversed(&mut admin, reverse("m", &kept_coins.saga_id, false)).await;
        let r = match gift.reversal.unwrap() {
            r if r.state == PENDING => reversal_settled(&mut admin, &kept_coins.saga_id).await,
            r => r,
        };
        assert_eq!(
            (r.state, r.clawed_back_diamonds, r.returned_coins),
            (DONE, 45, 0),
            "[{backend}] {r:?}"
        );
        assert_eq!(suite.coins("max").await, 1_100 - 90, "[{backend}]");

        let after = balance(&suite, "ned").await;
        assert_eq!(
            (
                after.clawed_back_diamonds - credited.clawed_back_diamonds,
                credited.lifetime_earned_diamonds - after.lifetime_earned_diamonds,
                after.debt_diamonds
            ),
            (145, 145, 0),
            "[{backend}] {after:?}"
        );
        for (saga, diamonds) in [(&returned.saga_id, 100), (&kept_coins.saga_id, 45)] {
            let taken = clawbacks(&suite, saga).await;
            assert_eq!(taken.len(), 1, "[{backend}]");
            assert_eq!(
                (
                    taken[0].clawback_id.as_str(),
                    taken[0].cause,
                    taken[0].diamonds
                ),
                (
                    format!("gift:{saga}").as_str(),
                    payout_pb::ClawbackCause::GiftReversal as i32,
                    diamonds
                ),
                "[{backend}]"
            );
        }
        assert_eq!(board(&mut lea).await.totals.unwrap().gift_count, 0);
        suite.stop().await;
    }
}

/// Eight admins reverse one gift at once under eight keys: one reversal, one clawback,
/// one refund; the other seven are GIFT_ALREADY_REVERSED.
#[tokio::test]
async fn concurrent_reversals_of_one_gift_reverse_it_once() {
    for db in databases().await {
        let suite = start(db).await;
        let backend = suite.backend;
        suite.funded_viewer("ola", "coins_1000").await;
        suite.creator("pia").await;
        let mut ola = suite.clients.gifting_as("ola").await;
        let gift = receipt_of(&mut ola, send("o1", "ola", "pia", "confetti", 1)).await;
        assert_eq!(gift.status, COMPLETED);
        let admin = suite.clients.gifting_admin().await;
        let calls = (0..8).map(|i| {
            let mut admin = admin.clone();
            let request = reverse(&format!("race-{i}"), &gift.saga_id, true);
            tokio::spawn(async move { admin.reverse_gift(request).await })
        });
        let (mut won, mut refused) = (0, 0);
        for call in calls {
            match call.await.unwrap() {
                Ok(_) => won += 1,
                Err(e) => {
                    assert_eq!(reason(&e), "GIFT_ALREADY_REVERSED", "[{backend}] {e:?}");
                    refused += 1;
                }
            }
        }
        assert_eq!((won, refused), (1, 7), "[{backend}]");
        let mut admin = admin;
        let r = reversal_settled(&mut admin, &gift.saga_id).await;
        assert_eq!(
            (r.state, r.returned_coins),
            (DONE, 100),
            "[{backend}] {r:?}"
        );
        assert_eq!(
            clawbacks(&suite, &gift.saga_id).await.len(),
            1,
            "[{backend}]"
        );
        assert_eq!(suite.coins("ola").await, 1_100, "[{backend}] refunded once");
        let events = feed(&mut ola, 2).await;
        assert_eq!(events[1].kind, pb::GiftEventKind::Reversed as i32);
        suite.stop().await;
    }
}

/// Payout is down when the reversal is recorded; gifting restarts; once payout is back,
/// the new gifting process's recovery loop finishes the reversal.
#[tokio::test]
async fn a_reversal_resumes_after_a_gifting_restart_once_payout_is_back() {
    for db in databases().await {
        let patient = GiftingSettings {
            retry_attempts_max: 100_000,
            send_wait_ms: 300,
            ..fast_retries()
        };
        let mut suite = InProcessSuite::start(db, patient).await;
        let backend = suite.backend;
        suite.funded_viewer("quin", "coins_1000").await;
        suite.creator("rae").await;
        let mut quin = suite.clients.gifting_as("quin").await;
        let gift = receipt_of(&mut quin, send("q1", "quin", "rae", "confetti", 1)).await;
        assert_eq!(gift.status, COMPLETED);
        suite.stop_service(Service::Payout).await;

        let mut admin = suite.clients.gifting_admin().await;
        let pending = reversed(&mut admin, reverse("q", &gift.saga_id, true)).await;
        assert_eq!(
            pending.reversal.unwrap().state,
            PENDING,
            "[{backend}] payout is down"
        );
        suite.stop_service(Service::Gifting).await;
        suite.start_service(Service::Payout).await;
        suite.start_service(Service::Gifting).await;
        let mut admin = suite.clients.gifting_admin().await;
        let r = reversal_settled(&mut admin, &gift.saga_id).await;
        assert_eq!(
            (r.state, r.clawed_back_diamonds, r.returned_coins),
            (DONE, 50, 100),
            "[{backend}] {r:?}"
        );
        assert_eq!(
            clawbacks(&suite, &gift.saga_id).await.len(),
            1,
            "[{backend}]"
        );
        assert_eq!(suite.coins("quin").await, 1_100, "[{backend}]");
        suite.stop().await;
    }
}

/// A reversal that cannot finish within its maximum age waits for an operator: listed by
/// ListStuckSagas with its last error; RetrySaga with payout back finishes it.
#[tokio::test]
async fn a_stuck_reversal_is_listed_for_an_operator_and_a_retry_finishes_it() {
    let impatient = GiftingSettings {
        saga_max_age_ms: 1,
        send_wait_ms: 1_000,
        ..fast_retries()
    };
    let mut suite = InProcessSuite::start(TestDatabase::sqlite(), impatient).await;
    suite.funded_viewer("sam", "coins_1000").await;
    suite.creator("tia").await;
    let mut sam = suite.clients.gifting_as("sam").await;
    let gift = receipt_of(&mut sam, send("s1", "sam", "tia", "confetti", 1)).await;
    assert_eq!(gift.status, COMPLETED);
    suite.stop_service(Service::Payout).await;
    let mut admin = suite.clients.gifting_admin().await;
    reversed(&mut admin, reverse("s", &gift.saga_id, false)).await;
    let r = reversal_settled(&mut admin, &gift.saga_id).await;
    assert_eq!(r.state, NEEDS_OPERATOR, "{r:?}");
    let stuck = admin
        .list_stuck_sagas(pb::ListStuckSagasRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sagas;
    assert_eq!(stuck.len(), 1);
    assert_eq!(stuck[0].receipt.as_ref().unwrap().saga_id, gift.saga_id);
    assert!(
        stuck[0].last_error.contains("maximum age"),
        "the reversal's error: {}",
        stuck[0].last_error
    );

    suite.start_service(Service::Payout).await;
    let retried = admin
        .retry_saga(pb::RetrySagaRequest {
            idempotency_key: "retry-1".into(),
            saga_id: gift.saga_id.clone(),
            actor: String::new(),
            reason: "payout is back".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap();
    let r = retried.receipt.unwrap().reversal.unwrap();
    assert_eq!((r.state, r.clawed_back_diamonds), (DONE, 50), "{r:?}");
    let stuck = admin
        .list_stuck_sagas(pb::ListStuckSagasRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sagas;
    assert!(stuck.is_empty());
    suite.stop().await;
}
