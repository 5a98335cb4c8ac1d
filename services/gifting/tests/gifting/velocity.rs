//! The gift velocity limit (issue 14): at most N gifts from one sender to one creator in
//! any minute, refused with RESOURCE_EXHAUSTED / VELOCITY_LIMIT and nothing recorded; a
//! replay of a recorded key never refused; time moved by an injected clock.

use ovation_gifting::GiftingSettings;
use ovation_proto::gifting as pb;
use ovation_testkit::{GiftingClient, InProcessSuite, TestDatabase, databases, reason};
use ovation_types::{Clock, UnixMillis};
use tonic::Code;

use crate::suite::{fast_retries, receipt_of, send};

/// At most `max` gifts a minute from one sender to one creator, on a manual clock that
/// starts ten minutes ago (sagas are dated by it; the driver's own timing stays real).
fn limited(max: i64) -> (GiftingSettings, Clock) {
    let clock = Clock::manual(UnixMillis(UnixMillis::now().0 - 600_000));
    let settings = GiftingSettings {
        gifts_per_sender_creator_per_minute_max: max,
        clock: clock.clone(),
        ..fast_retries()
    };
    (settings, clock)
}

/// How many sagas `sender` has recorded (every status).
async fn recorded(client: &mut GiftingClient, sender: &str) -> usize {
    client
        .list_sent_gifts(pb::ListSentGiftsRequest {
            sender_user_id: sender.into(),
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .receipts
        .len()
}

/// The refusals counted so far for the gift limit (the process's registry).
fn refusals_counted() -> u64 {
    let text = ovation_metrics::global().encode();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("ovation_velocity_limit_refusals_total{limit=\"gifts_per_minute\"} ")
        })
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test]
async fn a_sender_gifts_one_creator_at_most_the_limit_a_minute_and_a_replay_is_never_refused() {
    for db in databases().await {
        let (settings, clock) = limited(3);
        let suite = InProcessSuite::start(db, settings).await;
        let backend = suite.backend;
        suite.funded_viewer("alice", "coins_1000").await;
        suite.funded_viewer("dan", "coins_1000").await;
        for creator in ["bob", "carl"] {
            suite.creator(creator).await;
        }
        let mut alice = suite.clients.gifting_as("alice").await;
        let mut dan = suite.clients.gifting_as("dan").await;

        // Three in the minute: allowed (a refusal by the wallet would count too).
        let mut first = None;
        for i in 0..3 {
            let r = receipt_of(
                &mut alice,
                send(&format!("v{i}"), "alice", "bob", "rose", 1),
            )
            .await;
            assert_eq!(
                r.status,
                pb::SagaStatus::Completed as i32,
                "[{backend}] {r:?}"
            );
            first.get_or_insert(r);
            clock.advance(10_000);
        }
        let coins = suite.coins("alice").await;
        let counted = refusals_counted();

        // The fourth within the minute: refused, nothing recorded, nothing moved, counted.
        let refused = alice
            .send_gift(send("v3", "alice", "bob", "rose", 1))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::ResourceExhausted,
            "[{backend}] {refused:?}"
        );
        assert_eq!(reason(&refused), "VELOCITY_LIMIT", "[{backend}]");
        assert_eq!(recorded(&mut alice, "alice").await, 3, "[{backend}]");
        assert_eq!(suite.coins("alice").await, coins, "[{backend}]");
        assert!(
            refusals_counted() > counted,
            "[{backend}] the refusal is counted"
        );

        // A replay of a recorded key is answered as always.
        let replay = receipt_of(&mut alice, send("v0", "alice", "bob", "rose", 1)).await;
        assert_eq!(replay.saga_id, first.unwrap().saga_id, "[{backend}]");
        // Other creators, and other senders to this creator, have their own windows.
        let to_carl = receipt_of(&mut alice, send("c0", "alice", "carl", "rose", 1)).await;
        assert_eq!(
            to_carl.status,
            pb::SagaStatus::Completed as i32,
            "[{backend}]"
        );
        let from_dan = receipt_of(&mut dan, send("d0", "dan", "bob", "rose", 1)).await;
        assert_eq!(
            from_dan.status,
            pb::SagaStatus::Completed as i32,
            "[{backend}]"
        );

        // The window slides: 60 s after the first gift, one place is free again.
        clock.advance(30_000);
        let later = receipt_of(&mut alice, send("v4", "alice", "bob", "rose", 1)).await;
        assert_eq!(
            later.status,
            pb::SagaStatus::Completed as i32,
            "[{backend}]"
        );
        let again = alice
            .send_gift(send("v5", "alice", "bob", "rose", 1))
            .await
            .unwrap_err();
        assert_eq!(
            reason(&again),
            "VELOCITY_LIMIT",
            "[{backend}] still three in the minute"
        );
        suite.stop().await;
    }
}

/// Concurrent sends of one pair never all slip under the limit: exactly the limit's
/// number are recorded (on PostgreSQL the pair's row serializes the records; on SQLite
/// the write transaction does).
#[tokio::test]
async fn concurrent_sends_of_one_pair_never_exceed_the_limit() {
    for db in databases().await {
        let (settings, _clock) = limited(5);
        let suite = InProcessSuite::start(db, settings).await;
        let backend = suite.backend;
        suite.funded_viewer("erin", "coins_1000").await;
        suite.creator("fay").await;
        let erin = suite.clients.gifting_as("erin").await;
        let sends = (0..40).map(|i| {
            let mut client = erin.clone();
            tokio::spawn(async move {
                client
                    .send_gift(send(&format!("burst-{i}"), "erin", "fay", "rose", 1))
                    .await
            })
        });
        let (mut accepted, mut limited_count) = (0, 0);
        for s in sends {
            match s.await.unwrap() {
                Ok(_) => accepted += 1,
                Err(e) => {
                    assert_eq!(
                        (e.code(), reason(&e).as_str()),
                        (Code::ResourceExhausted, "VELOCITY_LIMIT"),
                        "[{backend}] {e:?}"
                    );
                    limited_count += 1;
                }
            }
        }
        assert_eq!((accepted, limited_count), (5, 35), "[{backend}]");
        let mut erin = erin;
        assert_eq!(recorded(&mut erin, "erin").await, 5, "[{backend}]");
        suite.stop().await;
    }
}

/// 0 turns the limit off.
#[tokio::test]
async fn a_limit_of_zero_is_no_limit() {
    let (settings, _clock) = limited(0);
    let suite = InProcessSuite::start(TestDatabase::sqlite(), settings).await;
    suite.funded_viewer("gus", "coins_1000").await;
    suite.creator("hana").await;
    let mut gus = suite.clients.gifting_as("gus").await;
    for i in 0..70 {
        let r = receipt_of(&mut gus, send(&format!("z{i}"), "gus", "hana", "rose", 1)).await;
        assert_eq!(r.status, pb::SagaStatus::Completed as i32);
    }
    suite.stop().await;
}
