//! The gift saga over real gRPC, with catalog, wallet and payout running beside gifting,
//! on SQLite and (when configured) PostgreSQL.

use ovation_gifting::GiftingSettings;
use ovation_proto::gifting as pb;
use ovation_proto::payout as payout_pb;
use ovation_testkit::{GiftingClient, InProcessSuite, Service, TestDatabase, databases};
use tokio_stream::StreamExt;
use tonic::Code;

use crate::suite::{fast_retries, receipt_of, send, settled, start};

const COMPLETED: i32 = pb::SagaStatus::Completed as i32;
const REJECTED: i32 = pb::SagaStatus::Rejected as i32;
const COMPENSATED: i32 = pb::SagaStatus::Compensated as i32;

#[tokio::test]
async fn a_gift_moves_coins_and_diamonds_by_the_share_once_per_key() {
    for db in databases().await {
        let suite = start(db).await;
        let funded = suite.funded_viewer("alice", "coins_1000").await;
        assert_eq!(funded, 1_100);
        suite.creator("bob").await;
        let mut alice = suite.clients.gifting_as("alice").await;
        let receipt = receipt_of(&mut alice, send("g1", "alice", "bob", "doughnut", 3)).await;
        assert_eq!(receipt.status, COMPLETED, "[{}] {receipt:?}", suite.backend);
        assert_eq!(
            (
                receipt.total_coins,
                receipt.coins_spent,
                receipt.diamonds_credited
            ),
            (90, 90, 45)
        );
        assert_eq!(
            (
                receipt.unit_price_coins,
                receipt.creator_share_bps,
                receipt.gift_version
            ),
            (30, 5_000, 1)
        );
        assert_eq!(receipt.sender_balance_after_coins, Some(1_010));
        assert_eq!(suite.coins("alice").await, 1_010);
        assert_eq!(suite.diamonds("bob").await, 45);

        // The same key again: the same saga, nothing moves twice.
        let again = receipt_of(&mut alice, send("g1", "alice", "bob", "doughnut", 3)).await;
        assert_eq!(again.saga_id, receipt.saga_id);
        assert_eq!(
            suite.coins("alice").await,
            1_010,
            "[{}] debited once",
            suite.backend
        );
        assert_eq!(suite.diamonds("bob").await, 45);
        // The same key, other parameters: refused.
        let other = alice
            .send_gift(send("g1", "alice", "bob", "doughnut", 4))
            .await
            .unwrap_err();
        assert_eq!(other.code(), Code::AlreadyExists);
        suite.stop().await;
    }
}

#[tokio::test]
async fn refusals_move_nothing_and_a_refused_credit_is_compensated() {
    for db in databases().await {
        let suite = start(db).await;
        suite.funded_viewer("carol", "coins_100").await; // 110 coins
        suite.creator("dan").await;
        let mut carol = suite.clients.gifting_as("carol").await;

        let poor = receipt_of(&mut carol, send("p1", "carol", "dan", "galaxy", 1)).await;
        assert_eq!(poor.status, REJECTED, "[{}]", suite.backend);
        assert_eq!(
            poor.rejection_reason,
            pb::RejectionReason::InsufficientCoins as i32
        );
        assert_eq!((poor.coins_spent, poor.diamonds_credited), (0, 0));
        assert_eq!(suite.coins("carol").await, 110);

        let unknown = receipt_of(&mut carol, send("p2", "carol", "nobody", "rose", 5)).await;
        assert_eq!(
            unknown.status, COMPENSATED,
            "[{}] {unknown:?}",
            suite.backend
        );
        assert_eq!(
            unknown.rejection_reason,
            pb::RejectionReason::CreatorNotFound as i32
        );
        assert_eq!(suite.coins("carol").await, 110, "the coins came back");

        let mut admin = suite.clients.payout_admin().await;
        admin
            .suspend_creator(payout_pb::SuspendCreatorRequest {
                idempotency_key: "susp".into(),
                creator_id: "dan".into(),
                actor: "ops".into(),
                reason: "fraud review".into(),
            })
            .await
            .unwrap();
        let suspended = receipt_of(&mut carol, send("p3", "carol", "dan", "rose", 5)).await;
        assert_eq!(suspended.status, COMPENSATED);
        assert_eq!(
            suspended.rejection_reason,
            pb::RejectionReason::CreatorSuspended as i32
        );
        assert_eq!(suite.coins("carol").await, 110);
        assert_eq!(suite.diamonds("dan").await, 0);

        let missing_gift = receipt_of(&mut carol, send("p4", "carol", "dan", "unicorn", 1)).await;
        assert_eq!(
            missing_gift.rejection_reason,
            pb::RejectionReason::GiftNotFound as i32
        );

        let to_self = carol
            .send_gift(send("p5", "carol", "carol", "rose", 1))
            .await
            .unwrap_err();
        assert_eq!(to_self.code(), Code::InvalidArgument);
        for quantity in [0, 100] {
            let bad = carol
                .send_gift(send("p6", "carol", "dan", "rose", quantity))
                .await
                .unwrap_err();
            assert_eq!(bad.code(), Code::InvalidArgument);
        }
        let other_sender = carol
            .send_gift(send("p7", "mallory", "dan", "rose", 1))
            .await
            .unwrap_err();
        assert_eq!(
            other_sender.code(),
            Code::PermissionDenied,
            "nobody sends gifts as someone else"
        );
        suite.stop().await;
    }
}

#[tokio::test]
async fn two_hundred_concurrent_sends_from_a_viewer_funded_for_fifty_complete_exactly_fifty() {
    for db in databases().await {
        // 201 gifts to one creator within a minute: the velocity limit is off here, so the
        // wallet's balance alone decides (velocity.rs tests the limit).
        let unlimited = GiftingSettings {
            gifts_per_sender_creator_per_minute_max: 0,
            ..fast_retries()
        };
        let suite = InProcessSuite::start(db, unlimited).await;
        suite.funded_viewer("erin", "coins_100").await; // 110
        suite.creator("fay").await;
        let mut erin = suite.clients.gifting_as("erin").await;
        let first = receipt_of(&mut erin, send("warmup", "erin", "fay", "doughnut", 2)).await;
        assert_eq!(first.status, COMPLETED);
        assert_eq!(suite.coins("erin").await, 50);

        let sends = (0..200).map(|i| {
            let mut client = erin.clone();
            tokio::spawn(async move {
                client
                    .send_gift(send(&format!("rose-{i}"), "erin", "fay", "rose", 1))
                    .await
            })
        });
        let mut receipts = Vec::new();
        for s in sends {
            receipts.push(s.await.unwrap().unwrap().into_inner().receipt.unwrap());
        }
        let mut completed = 0;
        for r in &receipts {
            let r = if r.status == pb::SagaStatus::Pending as i32 {
                settled(&mut erin, &r.saga_id).await
            } else {
                r.clone()
            };
            match r.status {
                COMPLETED => completed += 1,
                REJECTED => assert_eq!(
                    r.rejection_reason,
                    pb::RejectionReason::InsufficientCoins as i32
                ),
                other => panic!("[{}] unexpected status {other}: {r:?}", suite.backend),
            }
        }
        assert_eq!(completed, 50, "[{}] exactly fifty fit", suite.backend);
        assert_eq!(suite.coins("erin").await, 0);
        // 60 + 50 coins at 50 %: 30 + 50 × floor(1 × 0.5) = 30 diamonds.
        assert_eq!(suite.diamonds("fay").await, 30);
        suite.stop().await;
    }
}

#[tokio::test]
async fn history_leaderboard_and_the_live_feed_show_completed_gifts() {
    for db in databases().await {
        let suite = start(db).await;
        suite.funded_viewer("gus", "coins_1000").await;
        suite.funded_viewer("hana", "coins_1000").await;
        suite.creator("ivy").await;
        let mut gus = suite.clients.gifting_as("gus").await;
        let mut hana = suite.clients.gifting_as("hana").await;

        let mut watcher = suite.clients.gifting_as("someone").await;
        let mut feed = watcher
            .watch_stream_gifts(pb::WatchStreamGiftsRequest {
                stream_id: "stream-1".into(),
                resume_cursor: String::new(),
                from_beginning: false,
            })
            .await
            .unwrap()
            .into_inner();
        gus.send_gift(send("a", "gus", "ivy", "confetti", 1))
            .await
            .unwrap();
        hana.send_gift(send("b", "hana", "ivy", "confetti", 2))
            .await
            .unwrap();
        hana.send_gift(send("c", "hana", "nobody", "rose", 1))
            .await
            .unwrap(); // compensated: not in the feed
        gus.send_gift(send("d", "gus", "ivy", "rose", 7))
            .await
            .unwrap();

        let mut seen = Vec::new();
        while seen.len() < 3 {
            let event = tokio::time::timeout(std::time::Duration::from_secs(10), feed.next())
                .await
                .expect("events arrive")
                .unwrap()
                .unwrap()
                .event
                .unwrap();
            seen.push(event);
        }
        let coins: Vec<i64> = seen.iter().map(|e| e.coins).collect();
        assert_eq!(
            coins,
            [100, 200, 7],
            "[{}] completed gifts, in order",
            suite.backend
        );
        // Resuming after the first event replays the other two.
        let mut resumed = watcher
            .watch_stream_gifts(pb::WatchStreamGiftsRequest {
                stream_id: "stream-1".into(),
                resume_cursor: seen[0].cursor.clone(),
                from_beginning: false,
            })
            .await
            .unwrap()
            .into_inner();
        let next = resumed.next().await.unwrap().unwrap().event.unwrap();
        assert_eq!(next.saga_id, seen[1].saga_id);
        let foreign = watcher
            .watch_stream_gifts(pb::WatchStreamGiftsRequest {
                stream_id: "stream-2".into(),
                resume_cursor: seen[0].cursor.clone(),
                from_beginning: false,
            })
            .await;
        assert_eq!(foreign.map(|_| ()).unwrap_err().code(), Code::OutOfRange);

        let board = watcher
            .get_stream_leaderboard(pb::GetStreamLeaderboardRequest {
                stream_id: "stream-1".into(),
                max_entries: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let ranks: Vec<(String, i64)> = board
            .entries
            .iter()
            .map(|e| (e.sender_user_id.clone(), e.coins))
            .collect();
        assert_eq!(ranks, [("hana".to_string(), 200), ("gus".to_string(), 107)]);
        let totals = board.totals.unwrap();
        assert_eq!(
            (totals.gift_count, totals.coins, totals.gifter_count),
            (3, 307, 2)
        );

        let mine = gus
            .list_sent_gifts(pb::ListSentGiftsRequest {
                sender_user_id: "gus".into(),
                page_size: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(mine.receipts.len(), 1);
        assert_eq!(mine.receipts[0].quantity, 7, "newest first");
        assert!(!mine.next_page_token.is_empty());
        let theirs = gus
            .list_sent_gifts(pb::ListSentGiftsRequest {
                sender_user_id: "hana".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(theirs.code(), Code::PermissionDenied);
        suite.stop().await;
    }
}

/// Payout is down: the saga debits, then waits at the pivot, retrying (never
/// compensating on ambiguity). Gifting restarts meanwhile; when payout is back, the new
/// gifting process finishes the saga: coins and diamonds moved exactly once.
#[tokio::test]
async fn sagas_resume_after_a_gifting_restart_once_payout_is_back() {
    for db in databases().await {
        // A budget large enough to outlast the outage: the saga stays PENDING throughout.
        let patient = GiftingSettings {
            retry_attempts_max: 100_000,
            ..fast_retries()
        };
        let mut suite = InProcessSuite::start(db, patient).await;
        let backend = suite.backend;
        suite.funded_viewer("jo", "coins_1000").await;
        suite.creator("kim").await;
        suite.stop_service(Service::Payout).await;

        let mut jo = suite.clients.gifting_as("jo").await;
        let pending = send_briefly(&mut jo, send("r1", "jo", "kim", "confetti", 1)).await;
        assert_eq!(
            pending.status,
            pb::SagaStatus::Pending as i32,
            "[{backend}] {pending:?}"
        );
        suite.stop_service(Service::Gifting).await;

        // Coins are debited, diamonds not yet: the saga is mid-flight, not half done.
        suite.start_service(Service::Payout).await;
        suite.start_service(Service::Gifting).await;
        let mut jo = suite.clients.gifting_as("jo").await;
        let done = settled(&mut jo, &pending.saga_id).await;
        assert_eq!(done.status, COMPLETED, "[{backend}] {done:?}");
        assert_eq!(done.diamonds_credited, 50);
        suite.stop().await;
    }
}

/// When a peer stays away past the saga's maximum age the saga waits for an operator,
/// visible in ListStuckSagas; RetrySaga with the peer back finishes it.
#[tokio::test]
async fn a_saga_past_its_maximum_age_asks_an_operator_and_a_retry_finishes_it() {
    let db = TestDatabase::sqlite();
    let impatient = GiftingSettings {
        saga_max_age_ms: 1_000,
        ..fast_retries()
    };
    let mut suite = InProcessSuite::start(db, impatient).await;
    suite.funded_viewer("lu", "coins_1000").await;
    suite.creator("max").await;
    suite.stop_service(Service::Payout).await;
    let mut lu = suite.clients.gifting_as("lu").await;
    let stuck = receipt_of(&mut lu, send("s1", "lu", "max", "confetti", 1)).await;
    assert_eq!(
        stuck.status,
        pb::SagaStatus::NeedsOperator as i32,
        "{stuck:?}"
    );
    let mut admin = suite.clients.gifting_admin().await;
    let listed = admin
        .list_stuck_sagas(pb::ListStuckSagasRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sagas;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].step,
        pb::SagaStep::CreditDiamonds as i32,
        "stuck at the pivot, coins debited"
    );
    assert!(
        listed[0].last_error.contains("payout"),
        "{:?}",
        listed[0].last_error
    );

    suite.start_service(Service::Payout).await;
    let retried = admin
        .retry_saga(pb::RetrySagaRequest {
            idempotency_key: "retry-1".into(),
            saga_id: stuck.saga_id.clone(),
            actor: "ops-jane".into(),
            reason: "payout restored".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .saga
        .unwrap();
    let receipt = match retried.receipt.unwrap() {
        r if r.status == COMPLETED => r,
        r => settled(&mut admin, &r.saga_id).await,
    };
    assert_eq!(receipt.status, COMPLETED);
    // Journaled as the caller (the admin token's subject), the request's actor a note.
    let journaled = {
        use ovation_store::sqlx::{self, Connection, Row};
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(suite.db(Service::Gifting).url())
            .await
            .unwrap();
        let row = sqlx::query("SELECT actor, reason FROM saga_actions WHERE saga_id = $1")
            .bind(&stuck.saga_id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        (
            row.get::<String, _>("actor"),
            row.get::<String, _>("reason"),
        )
    };
    assert_eq!(
        journaled,
        (
            "test-admin".to_owned(),
            "payout restored (reported by: ops-jane)".to_owned()
        )
    );
    let terminal = admin
        .retry_saga(pb::RetrySagaRequest {
            idempotency_key: "retry-2".into(),
            saga_id: stuck.saga_id.clone(),
            actor: "ops-jane".into(),
            reason: "again".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(terminal.code(), Code::FailedPrecondition);
    suite.stop().await;
}

/// The audit's view: sagas listed by creation time, the window kept across pages; an empty
/// window is refused naming `end_time`.
#[tokio::test]
async fn sagas_are_listed_by_creation_time() {
    for db in databases().await {
        let suite = start(db).await;
        suite.funded_viewer("gus", "coins_100").await;
        suite.creator("hal").await;
        let mut gus = suite.clients.gifting_as("gus").await;
        let mut created = Vec::new();
        for key in ["w1", "w2", "w3"] {
            let receipt = receipt_of(&mut gus, send(key, "gus", "hal", "rose", 1)).await;
            created.push((receipt.saga_id, receipt.create_time.unwrap()));
            // Distinct milliseconds, so each saga has its own instant.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let mut admin = suite.clients.gifting_admin().await;
        let mut listed = async |start: Option<usize>, end: Option<usize>, size: i32| {
            let mut ids = Vec::new();
            let mut token = String::new();
            loop {
                let page = admin
                    .list_sagas(pb::ListSagasRequest {
                        page_size: size,
                        page_token: token,
                        start_time: start.map(|i| created[i].1),
                        end_time: end.map(|i| created[i].1),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                ids.extend(page.sagas.into_iter().map(|s| s.receipt.unwrap().saga_id));
                if page.next_page_token.is_empty() {
                    return ids;
                }
                token = page.next_page_token;
            }
        };
        let id = |i: usize| created[i].0.clone();
        let backend = suite.backend;
        assert_eq!(
            listed(None, None, 0).await,
            [id(0), id(1), id(2)],
            "[{backend}]"
        );
        assert_eq!(
            listed(Some(1), None, 1).await,
            [id(1), id(2)],
            "[{backend}] start inclusive"
        );
        assert_eq!(
            listed(None, Some(2), 1).await,
            [id(0), id(1)],
            "[{backend}] end exclusive"
        );
        assert_eq!(listed(Some(1), Some(2), 1).await, [id(1)], "[{backend}]");
        let empty = admin
            .list_sagas(pb::ListSagasRequest {
                start_time: Some(created[1].1),
                end_time: Some(created[1].1),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(empty.code(), tonic::Code::InvalidArgument, "[{backend}]");
        assert!(empty.message().contains("end_time"), "{empty:?}");
        suite.stop().await;
    }
}

/// Sends a gift with a short deadline, so the answer comes back PENDING while the saga
/// waits for a peer.
async fn send_briefly(client: &mut GiftingClient, request: pb::SendGiftRequest) -> pb::GiftReceipt {
    let mut request = tonic::Request::new(request);
    request.set_timeout(std::time::Duration::from_millis(1_500));
    receipt_of(client, request).await
}

/// The saga's status now, read by its sender.
async fn status_now(client: &mut GiftingClient, saga_id: &str) -> i32 {
    client
        .get_sent_gift(pb::GetSentGiftRequest {
            saga_id: saga_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap()
        .status
}

/// Issue 11: an unreachable wallet or payout is a transient failure, retried until the
/// peer is back, however long that takes within the saga's maximum age; it no longer
/// hands the saga to an operator once a step's attempt budget is spent. The retry budget
/// is the shipped one (12 attempts) with a 100 ms backoff cap, so the old budget ran out
/// within about a second; each outage here lasts three.
#[tokio::test]
async fn sagas_outlast_a_wallet_or_payout_outage_longer_than_the_old_retry_budget() {
    const OUTAGE: std::time::Duration = std::time::Duration::from_secs(3);
    for db in databases().await {
        let settings = fast_retries();
        assert_eq!(
            settings.retry_attempts_max,
            GiftingSettings::default().retry_attempts_max,
            "the shipped attempt budget"
        );
        let mut suite = InProcessSuite::start(db, settings).await;
        let backend = suite.backend;
        let funded = suite.funded_viewer("ann", "coins_1000").await;
        suite.creator("ben").await;
        let mut ann = suite.clients.gifting_as("ann").await;
        let mut admin = suite.clients.gifting_admin().await;

        // The wallet goes away: the saga waits before its debit.
        suite.stop_service(Service::Wallet).await;
        let first = send_briefly(&mut ann, send("outage-1", "ann", "ben", "confetti", 1)).await;
        assert_eq!(
            first.status,
            pb::SagaStatus::Pending as i32,
            "[{backend}] {first:?}"
        );
        tokio::time::sleep(OUTAGE).await;
        assert_eq!(
            status_now(&mut ann, &first.saga_id).await,
            pb::SagaStatus::Pending as i32,
            "[{backend}] a saga waiting for the wallet is still PENDING after the old budget"
        );
        suite.start_service(Service::Wallet).await;
        let done = settled(&mut ann, &first.saga_id).await;
        assert_eq!(done.status, COMPLETED, "[{backend}] {done:?}");

        // Payout goes away: the saga has debited and waits at the pivot.
        suite.stop_service(Service::Payout).await;
        let second = send_briefly(&mut ann, send("outage-2", "ann", "ben", "confetti", 1)).await;
        assert_eq!(
            second.status,
            pb::SagaStatus::Pending as i32,
            "[{backend}] {second:?}"
        );
        tokio::time::sleep(OUTAGE).await;
        assert_eq!(
            status_now(&mut ann, &second.saga_id).await,
            pb::SagaStatus::Pending as i32,
            "[{backend}] a saga waiting for payout is still PENDING after the old budget"
        );
        let stuck = admin
            .list_stuck_sagas(pb::ListStuckSagasRequest::default())
            .await
            .unwrap()
            .into_inner()
            .sagas;
        assert!(
            stuck.is_empty(),
            "[{backend}] nothing for an operator: {stuck:?}"
        );
        suite.start_service(Service::Payout).await;
        let done = settled(&mut ann, &second.saga_id).await;
        assert_eq!(done.status, COMPLETED, "[{backend}] {done:?}");
        assert_eq!(done.diamonds_credited, 50);

        // Both gifts moved coins and diamonds exactly once.
        assert_eq!(suite.coins("ann").await, funded - 200, "[{backend}]");
        assert_eq!(suite.diamonds("ben").await, 100, "[{backend}]");
        suite.stop().await;
    }
}

/// Issue 11, item 3: an idempotency key is the sender's own. Two senders choosing the same
/// key each get their gift; each sender's replay returns their own saga; a sender reusing
/// their key for another gift is still refused.
#[tokio::test]
async fn two_senders_may_use_the_same_idempotency_key() {
    for db in databases().await {
        let suite = start(db).await;
        let backend = suite.backend;
        let amy_funded = suite.funded_viewer("amy", "coins_1000").await;
        let bo_funded = suite.funded_viewer("bo", "coins_1000").await;
        suite.creator("cy").await;
        let mut amy = suite.clients.gifting_as("amy").await;
        let mut bo = suite.clients.gifting_as("bo").await;
        let send_as =
            |who: &str, quantity: i32| send("shared-key", who, "cy", "doughnut", quantity);

        let a = receipt_of(&mut amy, send_as("amy", 1)).await;
        assert_eq!(a.status, COMPLETED, "[{backend}] {a:?}");
        let b = bo
            .send_gift(send_as("bo", 2))
            .await
            .unwrap_or_else(|e| panic!("[{backend}] bo's gift under amy's key: {e}"))
            .into_inner()
            .receipt
            .unwrap();
        assert_eq!(b.status, COMPLETED, "[{backend}] {b:?}");
        assert_ne!(a.saga_id, b.saga_id, "[{backend}]");
        assert_eq!(b.sender_user_id, "bo");

        // Replays: each sender gets their own saga back, nothing moves again.
        let a2 = receipt_of(&mut amy, send_as("amy", 1)).await;
        let b2 = receipt_of(&mut bo, send_as("bo", 2)).await;
        assert_eq!(
            (a2.saga_id, b2.saga_id),
            (a.saga_id, b.saga_id),
            "[{backend}]"
        );
        assert_eq!(suite.coins("amy").await, amy_funded - 30, "[{backend}]");
        assert_eq!(suite.coins("bo").await, bo_funded - 60, "[{backend}]");
        assert_eq!(suite.diamonds("cy").await, 15 + 30, "[{backend}]");
        // The same sender, the same key, another gift: refused, as before.
        let other = amy.send_gift(send_as("amy", 3)).await.unwrap_err();
        assert_eq!(other.code(), Code::AlreadyExists, "[{backend}]");
        suite.stop().await;
    }
}
