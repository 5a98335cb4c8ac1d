//! The saga's fenced writes, below gRPC: a save that also renews or releases the lease is
//! still refused to anyone but the lease holder, and a driver that was fenced out (its lease
//! taken over) writes nothing, even though it ran a step on the lease it held in memory.
//! On SQLite and (when configured) PostgreSQL.

use std::sync::Arc;

use ovation_auth::Role;
use ovation_gifting::domain::{
    EventKind, GiftOrder, Quote, RetryPolicy, Saga, Status, Step, VelocityLimit,
};
use ovation_gifting::saga::{Peers, SagaEngine, SagaSettings};
use ovation_gifting::store::{self, LeaseAfter};
use ovation_gifting::writer::{self, SagaWriter, Write};
use ovation_proto::catalog::catalog_service_client::CatalogServiceClient;
use ovation_proto::payout::payout_service_client::PayoutServiceClient;
use ovation_proto::wallet::wallet_service_client::WalletServiceClient;
use ovation_server::Shutdown;
use ovation_server::peer::{Outbound, ServiceIdentity};
use ovation_store::{Db, DbOptions};
use ovation_testkit::{TestDatabase, databases};
use ovation_types::{Quantity, ResourceId, Text, UnixMillis};
use tonic::transport::Channel;

async fn open(db: &TestDatabase) -> Db {
    let db = Db::connect(db.url(), &DbOptions::default())
        .await
        .expect("database opens");
    db.migrate(&ovation_gifting::MIGRATIONS)
        .await
        .expect("migrations apply");
    db
}

fn new_saga(id: &str, now: UnixMillis) -> Saga {
    Saga::start(
        id.into(),
        GiftOrder {
            sender_user_id: ResourceId::parse("alice").unwrap(),
            creator_id: ResourceId::parse("bob").unwrap(),
            stream_id: ResourceId::parse("s1").unwrap(),
            gift_id: ResourceId::parse("rose").unwrap(),
            quantity: Quantity::parse(2).unwrap(),
            message: Text::parse("").unwrap(),
        },
        now,
    )
}

const QUOTE: Quote = Quote {
    gift_version: 3,
    unit_price_coins: 5,
    total_coins: 10,
    creator_share_bps: 5_000,
    economy_version: 1,
};

#[tokio::test]
async fn a_save_that_renews_or_releases_the_lease_is_fenced_by_it() {
    for tdb in databases().await {
        let db = open(&tdb).await;
        let backend = tdb.backend();
        let now = UnixMillis::now();
        let mut conn = db.conn().await.unwrap();
        let saga = new_saga("sg_fence", now);
        assert!(
            store::insert_saga(
                &mut conn,
                &saga,
                "k1",
                "fp",
                "replica-a",
                UnixMillis(now.0 + 10_000),
                ""
            )
            .await
            .unwrap()
        );

        // Someone without the lease: nothing written, the lease untouched.
        let mut quoted = saga.clone();
        quoted.apply(
            ovation_gifting::domain::Outcome::Quoted(QUOTE),
            now,
            &RetryPolicy::default(),
            0.5,
        );
        for lease in [
            LeaseAfter::Renew(UnixMillis(now.0 + 60_000)),
            LeaseAfter::Release,
        ] {
            assert!(
                !store::save_saga(&mut conn, &quoted, "replica-b", lease)
                    .await
                    .unwrap(),
                "{backend}: a save by a replica without the lease is refused"
            );
        }
        let row = store::get_saga(&mut conn, "sg_fence")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.saga.step, Step::ResolveGift, "{backend}");
        assert_eq!(row.saga.quote, None, "{backend}");
        assert_eq!(row.lease_owner, "replica-a", "{backend}");
        assert_eq!(
            row.lease_expires_at,
            UnixMillis(now.0 + 10_000),
            "{backend}"
        );

        // The holder: progress and the renewed lease in one write.
        assert!(
            store::save_saga(
                &mut conn,
                &quoted,
                "replica-a",
                LeaseAfter::Renew(UnixMillis(now.0 + 20_000))
            )
            .await
            .unwrap()
        );
        let row = store::get_saga(&mut conn, "sg_fence")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.saga.step, Step::DebitCoins, "{backend}");
        assert_eq!(row.saga.quote, Some(QUOTE), "{backend}");
        assert_eq!(row.lease_owner, "replica-a", "{backend}");
        assert_eq!(
            row.lease_expires_at,
            UnixMillis(now.0 + 20_000),
            "{backend}"
        );

        // The lease expires and replica B takes over: A's next write, however merged, is refused.
        let later = UnixMillis(now.0 + 20_001);
        assert!(
            store::claim_lease(
                &mut conn,
                "sg_fence",
                "replica-b",
                UnixMillis(later.0 + 10_000),
                later
            )
            .await
            .unwrap()
        );
        let mut debited = quoted.clone();
        debited.apply(
            ovation_gifting::domain::Outcome::Debited {
                available_after: 90,
            },
            later,
            &RetryPolicy::default(),
            0.5,
        );
        for lease in [
            LeaseAfter::Renew(UnixMillis(later.0 + 60_000)),
            LeaseAfter::Release,
        ] {
            assert!(
                !store::save_saga(&mut conn, &debited, "replica-a", lease)
                    .await
                    .unwrap(),
                "{backend}: the replica that lost the lease cannot write"
            );
        }
        let row = store::get_saga(&mut conn, "sg_fence")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.saga.step, Step::DebitCoins, "{backend}");
        assert_eq!(row.saga.sender_balance_after, None, "{backend}");
        assert_eq!(row.lease_owner, "replica-b", "{backend}");

        // B completes: outcome, event and the lease's release in one transaction.
        let mut done = debited.clone();
        done.apply(
            ovation_gifting::domain::Outcome::Credited { diamonds: 5 },
            later,
            &RetryPolicy::default(),
            0.5,
        );
        assert_eq!(done.status, Status::Completed);
        drop(conn);
        let mut tx = db.begin_write().await.unwrap();
        assert!(
            store::save_saga(&mut tx, &done, "replica-b", LeaseAfter::Release)
                .await
                .unwrap()
        );
        store::publish_event(&mut tx, &done, EventKind::Sent)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut conn = db.conn().await.unwrap();
        let row = store::get_saga(&mut conn, "sg_fence")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.saga.status, Status::Completed, "{backend}");
        assert_eq!(
            row.lease_owner, "",
            "{backend}: a terminal save frees the lease"
        );
        assert_eq!(row.lease_expires_at, UnixMillis(0), "{backend}");
        assert_eq!(
            store::events_after(&mut conn, "s1", 0, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        // A freed lease is no lease: nobody's save gets through, and a terminal saga cannot
        // be claimed.
        for owner in ["replica-a", "replica-b", ""] {
            assert!(
                !store::save_saga(&mut conn, &done, owner, LeaseAfter::Release)
                    .await
                    .unwrap(),
                "{backend}: {owner} writes a released saga"
            );
        }
        assert!(
            !store::claim_lease(
                &mut conn,
                "sg_fence",
                "replica-a",
                UnixMillis(later.0 + 1),
                later
            )
            .await
            .unwrap()
        );
        drop(conn);
        db.close().await;
    }
}

/// Clients of peers that are not there: every step is a transient failure.
fn unreachable_peers() -> Peers {
    let identity = Arc::new(
        ServiceIdentity::new(
            &ovation_testkit::services::identity(),
            &Default::default(),
            "gifting",
            Role::GiftingService,
        )
        .expect("test identity"),
    );
    let outbound = Outbound::new(identity);
    let channel = Channel::from_static("http://127.0.0.1:1").connect_lazy();
    Peers {
        catalog: CatalogServiceClient::with_interceptor(channel.clone(), outbound.clone()),
        wallet: WalletServiceClient::with_interceptor(channel.clone(), outbound.clone()),
        payout: PayoutServiceClient::with_interceptor(channel, outbound),
    }
}

#[tokio::test]
async fn a_driver_whose_lease_was_taken_over_writes_nothing() {
    for tdb in databases().await {
        let db = open(&tdb).await;
        let backend = tdb.backend();
        let engine = SagaEngine::new(
            db.clone(),
            unreachable_peers(),
            SagaSettings {
                step_timeout_ms: 200,
                ..SagaSettings::default()
            },
            Shutdown::new(),
        );
        let now = UnixMillis::now();
        let row = engine
            .record(new_saga("sg_taken", now), "k-taken", "fp")
            .await
            .unwrap()
            .expect("a new key is recorded");
        assert_eq!(row.lease_owner, engine.owner());
        // The same key again records nothing.
        assert!(
            engine
                .record(new_saga("sg_other", now), "k-taken", "fp")
                .await
                .unwrap()
                .is_none()
        );

        // While the engine still believes its lease fresh, another replica takes the saga
        // over (as after a pause longer than the lease).
        {
            let mut conn = db.conn().await.unwrap();
            let far = UnixMillis(now.0 + 3_600_000);
            assert!(
                store::claim_lease(
                    &mut conn,
                    "sg_taken",
                    "replica-b",
                    UnixMillis(far.0 + 10_000),
                    far
                )
                .await
                .unwrap()
            );
        }
        // The engine runs its step on the lease it holds in memory (the catalog is down:
        // a transient failure), then its save is fenced out and it stops.
        let after = engine.drive_recorded(row).await.unwrap();
        assert_eq!(after.lease_owner, "replica-b", "{backend}");
        let mut conn = db.conn().await.unwrap();
        let stored = store::get_saga(&mut conn, "sg_taken")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.lease_owner, "replica-b", "{backend}");
        assert_eq!(
            stored.saga.attempts, 0,
            "{backend}: the fenced-out attempt left no trace"
        );
        assert_eq!(stored.saga.last_error, "", "{backend}");
        assert_eq!(stored.saga.status, Status::Pending, "{backend}");
        drop(conn);
        db.close().await;
    }
}

#[tokio::test]
async fn a_driver_claims_again_a_lease_near_its_end_and_records_every_attempt() {
    for tdb in databases().await {
        let db = open(&tdb).await;
        let backend = tdb.backend();
        let lease_ms = 10_000;
        let engine = SagaEngine::new(
            db.clone(),
            unreachable_peers(),
            SagaSettings {
                step_timeout_ms: 100,
                lease_ms,
                retry: RetryPolicy {
                    attempts_max: 2,
                    backoff_base_ms: 1,
                    backoff_max_ms: 1,
                    max_age_ms: 300,
                },
                ..SagaSettings::default()
            },
            Shutdown::new(),
        );
        // Recorded with a lease that is about to run out: the engine must claim it again
        // before the first step rather than trust it.
        let now = UnixMillis::now();
        let mut row = engine
            .record(new_saga("sg_renew", now), "k-renew", "fp")
            .await
            .unwrap()
            .unwrap();
        {
            let mut conn = db.conn().await.unwrap();
            let short = UnixMillis(now.0 + 1_000);
            assert!(
                store::claim_lease(&mut conn, "sg_renew", engine.owner(), short, now)
                    .await
                    .unwrap()
            );
            row.lease_expires_at = short;
        }
        // The catalog is unreachable: attempts until the saga's maximum age, then
        // NEEDS_OPERATOR, the lease given back, every attempt recorded.
        let after = engine.drive_recorded(row).await.unwrap();
        assert_eq!(after.saga.status, Status::NeedsOperator, "{backend}");
        assert!(after.saga.attempts >= 2, "{backend}: {:?}", after.saga);
        let mut conn = db.conn().await.unwrap();
        let stored = store::get_saga(&mut conn, "sg_renew")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.saga.status, Status::NeedsOperator, "{backend}");
        assert_eq!(stored.saga.attempts, after.saga.attempts, "{backend}");
        assert_eq!(
            stored.saga.unexpected_failures, 0,
            "{backend}: no answer is not unexpected"
        );
        assert!(
            stored.saga.last_error.contains("maximum age"),
            "{backend}: {}",
            stored.saga.last_error
        );
        assert_eq!(stored.lease_owner, "", "{backend}");
        assert_eq!(stored.lease_expires_at, UnixMillis(0), "{backend}");
        drop(conn);
        db.close().await;
    }
}

fn quoted(saga: &Saga, now: UnixMillis) -> Saga {
    let mut s = saga.clone();
    s.apply(
        ovation_gifting::domain::Outcome::Quoted(QUOTE),
        now,
        &RetryPolicy::default(),
        0.5,
    );
    s
}

fn completed(saga: &Saga, now: UnixMillis) -> Saga {
    let mut s = quoted(saga, now);
    for outcome in [
        ovation_gifting::domain::Outcome::Debited { available_after: 7 },
        ovation_gifting::domain::Outcome::Credited { diamonds: 5 },
    ] {
        s.apply(outcome, now, &RetryPolicy::default(), 0.5);
    }
    assert_eq!(s.status, Status::Completed);
    s
}

#[tokio::test]
async fn a_batch_fences_each_write_on_its_own_lease_and_publishes_only_what_it_saved() {
    for tdb in databases().await {
        let db = open(&tdb).await;
        let backend = tdb.backend();
        let now = UnixMillis::now();
        let until = UnixMillis(now.0 + 10_000);
        let sagas: Vec<Saga> = (0..4)
            .map(|i| {
                let mut s = new_saga(&format!("sg_b{i}"), now);
                s.stream_id = format!("stream-{}", i % 2);
                s
            })
            .collect();
        {
            let mut conn = db.conn().await.unwrap();
            for (i, s) in sagas.iter().take(3).enumerate() {
                let owner = if i == 1 { "replica-b" } else { "replica-a" };
                assert!(
                    store::insert_saga(&mut conn, s, &format!("kb{i}"), "fp", owner, until, "")
                        .await
                        .unwrap()
                );
            }
        }
        let writes = [
            // 0: A holds it and completes it: saved, released, published.
            Write::Save {
                saga: completed(&sagas[0], now),
                owner: "replica-a".into(),
                lease: LeaseAfter::Release,
            },
            // 1: B holds it; A's completion is fenced out: nothing saved, no event.
            Write::Save {
                saga: completed(&sagas[1], now),
                owner: "replica-a".into(),
                lease: LeaseAfter::Release,
            },
            // 2: A holds it and records a step, renewing its lease.
            Write::Save {
                saga: quoted(&sagas[2], now),
                owner: "replica-a".into(),
                lease: LeaseAfter::Renew(UnixMillis(now.0 + 30_000)),
            },
            // 3: a new saga recorded, and the same key again (taken).
            Write::Insert {
                saga: sagas[3].clone(),
                key: "kb3".into(),
                fingerprint: "fp".into(),
                owner: "replica-a".into(),
                lease_until: until,
                trace_parent: String::new(),
            },
            Write::Insert {
                saga: new_saga("sg_b3_dup", now),
                key: "kb3".into(),
                fingerprint: "fp".into(),
                owner: "replica-a".into(),
                lease_until: until,
                trace_parent: String::new(),
            },
        ];
        let refs: Vec<&Write> = writes.iter().collect();
        let results = writer::write_batch(&db, &refs, None).await.unwrap();
        assert_eq!(results, vec![true, false, true, true, false], "{backend}");

        let mut conn = db.conn().await.unwrap();
        let r0 = store::get_saga(&mut conn, "sg_b0").await.unwrap().unwrap();
        assert_eq!(r0.saga.status, Status::Completed, "{backend}");
        assert_eq!(r0.lease_owner, "", "{backend}");
        let r1 = store::get_saga(&mut conn, "sg_b1").await.unwrap().unwrap();
        assert_eq!(r1.saga.status, Status::Pending, "{backend}: fenced out");
        assert_eq!(r1.saga.step, Step::ResolveGift, "{backend}");
        assert_eq!(r1.lease_owner, "replica-b", "{backend}");
        let r2 = store::get_saga(&mut conn, "sg_b2").await.unwrap().unwrap();
        assert_eq!(r2.saga.step, Step::DebitCoins, "{backend}");
        assert_eq!(r2.lease_expires_at, UnixMillis(now.0 + 30_000), "{backend}");
        let r3 = store::get_saga_by_key(&mut conn, "alice", "kb3")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r3.saga.saga_id, "sg_b3", "{backend}");
        assert!(
            store::get_saga(&mut conn, "sg_b3_dup")
                .await
                .unwrap()
                .is_none()
        );
        // Only the saved completion was published, in its own stream.
        let s0 = store::events_after(&mut conn, "stream-0", 0, 10)
            .await
            .unwrap();
        let s1 = store::events_after(&mut conn, "stream-1", 0, 10)
            .await
            .unwrap();
        assert_eq!(s0.len(), 1, "{backend}");
        assert_eq!(s0[0].saga_id, "sg_b0", "{backend}");
        assert!(
            s1.is_empty(),
            "{backend}: no event for a fenced-out completion"
        );
        drop(conn);
        db.close().await;
    }
}

#[tokio::test]
async fn a_bad_write_queued_with_others_fails_alone() {
    for tdb in databases().await {
        let db = open(&tdb).await;
        let backend = tdb.backend();
        let writer = SagaWriter::start(db.clone(), None);
        let now = UnixMillis::now();
        let until = UnixMillis(now.0 + 10_000);
        let mut bad = new_saga("sg_bad", now);
        bad.quantity = 0; // the table's CHECK refuses it
        let insert = |saga: Saga, key: &str| Write::Insert {
            saga,
            key: key.into(),
            fingerprint: "fp".into(),
            owner: "replica-a".into(),
            lease_until: until,
            trace_parent: String::new(),
        };
        // Queued together (the writer runs on this thread only once they all wait), so
        // they share a batch; the bad one must not take the others down.
        let (a, b, c) = tokio::join!(
            writer.write(insert(new_saga("sg_ok1", now), "ok1")),
            writer.write(insert(bad, "bad")),
            writer.write(insert(new_saga("sg_ok2", now), "ok2")),
        );
        assert!(a.unwrap(), "{backend}");
        assert!(b.is_err(), "{backend}: the bad write fails");
        assert!(c.unwrap(), "{backend}");
        let mut conn = db.conn().await.unwrap();
        for id in ["sg_ok1", "sg_ok2"] {
            assert!(
                store::get_saga(&mut conn, id).await.unwrap().is_some(),
                "{backend}: {id}"
            );
        }
        assert!(
            store::get_saga(&mut conn, "sg_bad")
                .await
                .unwrap()
                .is_none()
        );
        drop(conn);
        drop(writer);
        db.close().await;
    }
}

/// A saga keeps the traceparent of the request that started it, and recovery gets it back
/// with the saga's id, so the resumed saga continues that trace.
#[tokio::test]
async fn a_due_saga_comes_back_with_the_trace_of_its_request() {
    const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for tdb in databases().await {
        let db = open(&tdb).await;
        let now = UnixMillis::now();
        let mut conn = db.conn().await.unwrap();
        // Leases already expired: both are due.
        let expired = UnixMillis(now.0 - 1);
        let traced = new_saga("sg_traced", now);
        let untraced = new_saga("sg_untraced", now);
        assert!(
            store::insert_saga(&mut conn, &traced, "kt1", "fp", "gone", expired, TRACE)
                .await
                .unwrap()
        );
        assert!(
            store::insert_saga(&mut conn, &untraced, "kt2", "fp", "gone", expired, "")
                .await
                .unwrap()
        );
        let mut due = store::due_sagas(&mut conn, UnixMillis(now.0 + 60_000), 10)
            .await
            .unwrap();
        due.sort();
        assert_eq!(
            due,
            [
                ("sg_traced".to_owned(), TRACE.to_owned()),
                ("sg_untraced".to_owned(), String::new())
            ],
            "{}",
            tdb.backend()
        );
    }
}

/// Migration 103 makes SendGift keys unique per sender by rebuilding the sagas table (and
/// gift_events, which refers to it). Sagas recorded before it keep every value and their
/// gift events; afterwards another sender may use a key, its sender may not; gift events
/// still refer to existing sagas only.
#[tokio::test]
async fn sagas_recorded_before_keys_were_per_sender_survive_the_migration() {
    use ovation_store::sqlx;
    for tdb in databases().await {
        let backend = tdb.backend();
        let db = Db::connect(tdb.url(), &DbOptions::default())
            .await
            .expect("database opens");
        let before = sqlx::migrate::Migrator::with_migrations(
            ovation_gifting::MIGRATIONS
                .iter()
                .filter(|m| m.version < 103)
                .cloned()
                .collect(),
        );
        db.migrate(&before)
            .await
            .expect("migrations up to 102 apply");

        // Two sagas as the code of the time recorded them (its insert, keys global): one
        // completed with its gift event, one waiting at its first step.
        let now = UnixMillis::now();
        let until = UnixMillis(now.0 + 10_000);
        let mut done = new_saga("sg_old_done", now);
        let mut waiting = new_saga("sg_old_waiting", now);
        waiting.sender_user_id = "bob".into();
        waiting.creator_id = "alice".into();
        let mut conn = db.conn().await.unwrap();
        for (saga, key) in [(&done, "k-old"), (&waiting, "k-bob")] {
            sqlx::query(
                "INSERT INTO sagas (saga_id, idempotency_key, fingerprint, sender_user_id, \
                 creator_id, stream_id, gift_id, quantity, message, gift_version, \
                 unit_price_coins, total_coins, creator_share_bps, economy_version, status, \
                 step, coins_spent, diamonds_credited, sender_balance_after_coins, \
                 rejection_reason, rejection_detail, refund_started, attempts, last_error, \
                 next_attempt_at_ms, lease_owner, lease_expires_at_ms, created_at_ms, \
                 updated_at_ms, completed_at_ms, trace_parent) VALUES ($1, $2, 'fp', $3, $4, \
                 $5, $6, $7, '', 0, 0, 0, 0, 0, 1, 1, 0, 0, NULL, 0, '', 0, 0, '', $8, \
                 'replica-a', $9, $8, $8, NULL, 'tp')",
            )
            .bind(saga.saga_id.as_str())
            .bind(key)
            .bind(saga.sender_user_id.as_str())
            .bind(saga.creator_id.as_str())
            .bind(saga.stream_id.as_str())
            .bind(saga.gift_id.as_str())
            .bind(i64::from(saga.quantity))
            .bind(now.0)
            .bind(until.0)
            .execute(&mut *conn)
            .await
            .unwrap();
        }
        done = completed(&done, now);
        drop(conn);
        let mut tx = db.begin_write().await.unwrap();
        assert!(
            store::save_saga(&mut tx, &done, "replica-a", LeaseAfter::Release)
                .await
                .unwrap()
        );
        // Its gift event as that code published it (no kind yet: migration 104 adds it).
        sqlx::query("INSERT INTO stream_feeds (stream_id, last_seq) VALUES ($1, 1)")
            .bind(done.stream_id.as_str())
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO gift_events (stream_id, seq, saga_id, sender_user_id, creator_id, \
             gift_id, gift_version, quantity, coins, diamonds, message, completed_at_ms) \
             VALUES ($1, 1, $2, $3, $4, $5, 1, $6, $7, $8, '', $9)",
        )
        .bind(done.stream_id.as_str())
        .bind(done.saga_id.as_str())
        .bind(done.sender_user_id.as_str())
        .bind(done.creator_id.as_str())
        .bind(done.gift_id.as_str())
        .bind(i64::from(done.quantity))
        .bind(done.coins_spent)
        .bind(done.diamonds_credited)
        .bind(now.0)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let mut conn = db.conn().await.unwrap();
        waiting = quoted(&waiting, now);
        waiting.attempts = 3;
        waiting.unexpected_failures = 1;
        waiting.last_error = "wallet: Internal: oops".into();
        assert!(
            store::save_saga(&mut conn, &waiting, "replica-a", LeaseAfter::Renew(until))
                .await
                .unwrap()
        );
        drop(conn);

        db.migrate(&ovation_gifting::MIGRATIONS)
            .await
            .unwrap_or_else(|e| panic!("{backend}: migration 103 applies: {e}"));
        let mut conn = db.conn().await.unwrap();
        let old_done = store::get_saga(&mut conn, "sg_old_done")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(old_done.saga, done, "{backend}");
        assert_eq!(
            (
                old_done.idempotency_key.as_str(),
                old_done.lease_owner.as_str()
            ),
            ("k-old", ""),
            "{backend}"
        );
        let old_waiting = store::get_saga_by_key(&mut conn, "bob", "k-bob")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(old_waiting.saga, waiting, "{backend}");
        assert_eq!(
            (
                old_waiting.lease_owner.as_str(),
                old_waiting.lease_expires_at
            ),
            ("replica-a", until),
            "{backend}"
        );
        let events = store::events_after(&mut conn, "s1", 0, 10).await.unwrap();
        assert_eq!(events.len(), 1, "{backend}");
        assert_eq!(
            (events[0].saga_id.as_str(), events[0].kind),
            ("sg_old_done", EventKind::Sent),
            "{backend}: an event of before migration 104 is a SENT one"
        );
        let due = store::due_sagas(&mut conn, UnixMillis(until.0 + 1), 10)
            .await
            .unwrap();
        assert_eq!(
            due,
            [("sg_old_waiting".to_owned(), "tp".to_owned())],
            "{backend}"
        );

        // Keys are per sender now: bob may use alice's key, alice may not use it again.
        assert!(
            store::insert_saga(
                &mut conn,
                &{
                    let mut s = new_saga("sg_bob_k_old", now);
                    s.sender_user_id = "bob".into();
                    s
                },
                "k-old",
                "fp",
                "replica-a",
                until,
                ""
            )
            .await
            .unwrap(),
            "{backend}: another sender, the same key"
        );
        assert!(
            !store::insert_saga(
                &mut conn,
                &new_saga("sg_again", now),
                "k-old",
                "fp",
                "replica-a",
                until,
                ""
            )
            .await
            .unwrap(),
            "{backend}: the same sender, the same key"
        );
        assert_eq!(
            store::get_saga_by_key(&mut conn, "bob", "k-old")
                .await
                .unwrap()
                .unwrap()
                .saga
                .saga_id,
            "sg_bob_k_old",
            "{backend}"
        );
        assert_eq!(
            store::get_saga_by_key(&mut conn, "alice", "k-old")
                .await
                .unwrap()
                .unwrap()
                .saga
                .saga_id,
            "sg_old_done",
            "{backend}"
        );
        // The rebuilt gift_events refers to the rebuilt sagas: an event of a saga is
        // accepted, an event of no saga refused.
        let mut bobs = new_saga("sg_bob_k_old", now);
        bobs.sender_user_id = "bob".into();
        let bobs = completed(&bobs, now);
        drop(conn);
        let mut tx = db.begin_write().await.unwrap();
        assert!(
            store::save_saga(&mut tx, &bobs, "replica-a", LeaseAfter::Release)
                .await
                .unwrap()
        );
        store::publish_event(&mut tx, &bobs, EventKind::Sent)
            .await
            .unwrap_or_else(|e| panic!("{backend}: an event after the migration: {e}"));
        tx.commit().await.unwrap();
        let mut conn = db.conn().await.unwrap();
        let orphan = sqlx::query(
            "INSERT INTO gift_events (stream_id, seq, saga_id, sender_user_id, creator_id, \
             gift_id, gift_version, quantity, coins, diamonds, message, completed_at_ms) \
             VALUES ('s1', 99, 'sg_nowhere', 'a', 'b', 'rose', 1, 1, 1, 0, '', 0)",
        )
        .execute(&mut *conn)
        .await;
        assert!(orphan.is_err(), "{backend}: an event of no saga is refused");
        drop(conn);
        db.close().await;
    }
}

/// A send quoted from the quote cache is recorded at its debit: the quote must be in the
/// row, or a replica resuming the saga after a crash finds a debit step without a price.
/// (Failed before the insert wrote the quote: the saga read back unquoted.)
#[tokio::test]
async fn a_saga_recorded_already_quoted_reads_back_with_its_quote() {
    for tdb in databases().await {
        let db = open(&tdb).await;
        let now = UnixMillis::now();
        let saga = quoted(&new_saga("sg_quoted", now), now);
        assert_eq!(saga.step, Step::DebitCoins);
        let mut conn = db.conn().await.unwrap();
        assert!(
            store::insert_saga(
                &mut conn,
                &saga,
                "kq",
                "fp",
                "me",
                UnixMillis(now.0 + 10_000),
                ""
            )
            .await
            .unwrap()
        );
        let row = store::get_saga(&mut conn, "sg_quoted")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.saga.step, Step::DebitCoins, "{}", tdb.backend());
        assert_eq!(row.saga.quote, Some(QUOTE), "{}", tdb.backend());
    }
}

/// One statement records a batch's sagas and one more publishes its events: a second
/// saga under a key its sender already used in the same statement is not recorded, and
/// each stream's events are numbered on from its last number, without gaps.
#[tokio::test]
async fn a_batch_records_in_one_statement_and_numbers_each_streams_events_without_gaps() {
    for tdb in databases().await {
        let db = open(&tdb).await;
        let backend = tdb.backend();
        let now = UnixMillis::now();
        let until = UnixMillis(now.0 + 10_000);
        let sagas: Vec<Saga> = (0..4).map(|i| new_saga(&format!("sg_m{i}"), now)).collect();
        let keys = ["k0", "k1", "k1", "k3"];
        let new: Vec<store::NewSaga> = sagas
            .iter()
            .zip(keys)
            .map(|(saga, key)| store::NewSaga {
                saga,
                key,
                fingerprint: "fp",
                owner: "me",
                lease_until: until,
                trace_parent: "",
            })
            .collect();
        let mut tx = db.begin_write().await.unwrap();
        let recorded = store::insert_sagas(&mut tx, &new, None).await.unwrap();
        let mut recorded: Vec<String> = recorded.into_iter().collect();
        recorded.sort();
        assert_eq!(recorded, ["sg_m0", "sg_m1", "sg_m3"], "{backend}");

        // Two streams: one with an event already, one new.
        let mut earlier = completed(&new_saga("sg_earlier", now), now);
        earlier.stream_id = "s2".into();
        assert!(
            store::insert_saga(&mut tx, &earlier, "ke", "fp", "me", until, "")
                .await
                .unwrap()
        );
        assert_eq!(
            store::publish_event(&mut tx, &earlier, EventKind::Sent)
                .await
                .unwrap(),
            1
        );
        let mut done: Vec<Saga> = ["sg_m0", "sg_m1", "sg_m3"]
            .iter()
            .map(|id| completed(&new_saga(id, now), now))
            .collect();
        done[1].stream_id = "s2".into();
        let refs: Vec<&Saga> = done.iter().collect();
        let seqs = store::publish_events(&mut tx, &refs, EventKind::Sent)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            seqs,
            vec![1, 2, 2],
            "{backend}: s1 gets 1 and 2, s2 goes on at 2"
        );

        let mut conn = db.conn().await.unwrap();
        let s1 = store::events_after(&mut conn, "s1", 0, 10).await.unwrap();
        let s2 = store::events_after(&mut conn, "s2", 0, 10).await.unwrap();
        let ids = |events: &[store::EventRow]| {
            events
                .iter()
                .map(|e| (e.seq, e.saga_id.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(&s1),
            [(1, "sg_m0".to_owned()), (2, "sg_m3".to_owned())],
            "{backend}"
        );
        assert_eq!(
            ids(&s2),
            [(1, "sg_earlier".to_owned()), (2, "sg_m1".to_owned())],
            "{backend}"
        );
    }
}

/// The velocity limit's count cannot be raced under READ COMMITTED: a second transaction
/// recording a saga of the same pair waits on the pair's row until the first commits,
/// then counts its saga (limit 1: refused). A batch counts its own earlier rows of a pair.
/// (Without the pair's lock, the second insert on PostgreSQL counted nothing and went in.)
#[tokio::test]
async fn a_record_under_the_velocity_limit_waits_for_and_counts_a_concurrent_one_of_its_pair() {
    for tdb in databases().await {
        let db = open(&tdb).await;
        let backend = tdb.backend();
        let limit = VelocityLimit::of_setting(1);
        let now = UnixMillis::now();
        let until = UnixMillis(now.0 + 10_000);
        let first = new_saga("sg_v1", now);
        let new = |saga, key| record(saga, key, until);
        let mut tx = db.begin_write().await.unwrap();
        store::lock_velocity_pairs(&mut tx, &[new(&first, "k1")], limit)
            .await
            .unwrap();
        let recorded = store::insert_sagas(&mut tx, &[new(&first, "k1")], limit)
            .await
            .unwrap();
        assert_eq!(recorded.len(), 1, "{backend}");

        let racing = {
            let db = db.clone();
            tokio::spawn(async move {
                let second = new_saga("sg_v2", UnixMillis(now.0 + 1));
                let mut tx = db.begin_write().await.unwrap();
                let n = record(&second, "k2", until);
                store::lock_velocity_pairs(&mut tx, &[n], limit)
                    .await
                    .unwrap();
                let recorded = store::insert_sagas(&mut tx, &[n], limit).await.unwrap();
                tx.commit().await.unwrap();
                recorded.len()
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            !racing.is_finished(),
            "{backend}: the second waits for the first"
        );
        tx.commit().await.unwrap();
        assert_eq!(racing.await.unwrap(), 0, "{backend}: and then counts it");

        // In one statement: of three sagas of a fresh pair under a limit of 2, the third
        // is refused; another pair's saga is not affected.
        let limit = VelocityLimit::of_setting(2);
        let mut sagas: Vec<Saga> = (0..3).map(|i| new_saga(&format!("sg_b{i}"), now)).collect();
        for s in &mut sagas {
            s.creator_id = "carl".into();
        }
        let mut other = new_saga("sg_b_other", now);
        other.creator_id = "dora".into();
        let keys = ["kb0", "kb1", "kb2", "kb3"];
        let batch: Vec<store::NewSaga> = sagas
            .iter()
            .chain([&other])
            .zip(keys)
            .map(|(s, k)| new(s, k))
            .collect();
        let mut tx = db.begin_write().await.unwrap();
        store::lock_velocity_pairs(&mut tx, &batch, limit)
            .await
            .unwrap();
        let recorded = store::insert_sagas(&mut tx, &batch, limit).await.unwrap();
        tx.commit().await.unwrap();
        let mut ids: Vec<&str> = recorded.iter().map(String::as_str).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["sg_b0", "sg_b1", "sg_b_other"], "{backend}");
    }
}

/// A saga to record under `key`, leased to "me".
fn record<'a>(saga: &'a Saga, key: &'a str, lease_until: UnixMillis) -> store::NewSaga<'a> {
    store::NewSaga {
        saga,
        key,
        fingerprint: "fp",
        owner: "me",
        lease_until,
        trace_parent: "",
    }
}
