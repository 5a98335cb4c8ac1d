//! A suspended creator is never paid (issue 11, item 4), over real gRPC against SQLite and
//! PostgreSQL: a suspension releases every payout not yet handed to the provider, the
//! worker re-checks the creator when it hands a payout over, a payout already with the
//! provider is settled by the provider's answer (never released on a guess), and
//! RequestPayout / CreditDiamonds / SuspendCreator serialize on the creator's row.

use std::time::Duration;

use ovation_payout::worker::WorkerConfig;
use ovation_proto::payout as pb;
use ovation_testkit::{TestDatabase, databases, reason};
use tokio::task::JoinHandle;
use tonic::Code;

use crate::suite::*;

/// What one racer's call answered.
type Answer<T> = Result<tonic::Response<T>, tonic::Status>;

fn millis(t: &Option<prost_types::Timestamp>) -> i64 {
    let t = t.expect("a timestamp");
    t.seconds * 1_000 + i64::from(t.nanos) / 1_000_000
}

/// `requests` payout requests of 1,000 diamonds by creator `id`, all at once.
fn concurrent_payout_requests(
    c: &Clients,
    id: &str,
    requests: usize,
) -> Vec<JoinHandle<Answer<pb::RequestPayoutResponse>>> {
    (0..requests)
        .map(|i| {
            let mut client = c.creator(id);
            let request = request_payout(&format!("{id}-{i}"), id, 1_000);
            tokio::spawn(async move { client.request_payout(request).await })
        })
        .collect()
}

/// An admin suspends `id` after `delay`, alongside whatever else runs.
fn suspension_after(
    c: &Clients,
    id: &str,
    delay: Duration,
) -> JoinHandle<Answer<pb::SuspendCreatorResponse>> {
    let mut admin = c.admin.clone();
    let suspension = suspend_request(id, &format!("s-{id}"));
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        admin.suspend_creator(suspension).await
    })
}

/// When the suspension that `suspended` made took effect, in Unix milliseconds.
async fn suspended_at(suspended: JoinHandle<Answer<pb::SuspendCreatorResponse>>) -> i64 {
    let creator = suspended
        .await
        .unwrap()
        .unwrap()
        .into_inner()
        .creator
        .unwrap();
    millis(&creator.suspension.unwrap().suspend_time)
}

/// Every diamond is accounted for: nothing paid out, nothing held, lifetime = available.
async fn assert_unpaid(c: &Clients, id: &str, earned: i64, db: &TestDatabase) {
    let mut admin = c.admin.clone();
    let b = balance(&mut admin, id).await;
    assert_eq!(
        (
            b.available_diamonds,
            b.held_diamonds,
            b.paid_out_diamonds,
            b.lifetime_earned_diamonds
        ),
        (earned, 0, 0, earned),
        "{id} on {}",
        db.backend()
    );
}

#[tokio::test]
async fn a_suspension_releases_held_payouts_the_worker_has_not_sent() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, sandbox) =
            start_with_worker(&db, &catalog, one_slot(Duration::from_secs(10))).await;
        let c = Clients::new(&running).await;
        verified_creator(&c, "ann", "sandbox-ok").await;
        earn(&c, "ann-credit", "ann", 3_000).await;
        let blocker = occupy_worker(&c, &sandbox, 1_500).await;

        let mut ann = c.creator("ann");
        let mut held = Vec::new();
        for key in ["ann-1", "ann-2"] {
            let payout = requested_payout(&mut ann, key, "ann", 1_000).await;
            assert_eq!(payout.state, pb::PayoutState::Held as i32);
            held.push(payout.payout_id);
        }
        let mut admin = c.admin.clone();
        admin
            .suspend_creator(suspend_request("ann", "s-1"))
            .await
            .unwrap();

        // The worker becomes free once the blocker is paid; whatever it picks up then,
        // ann's payouts were stopped by the suspension.
        let blocked = settled(&admin, &blocker).await;
        assert_eq!(blocked.state, pb::PayoutState::Paid as i32);
        for id in &held {
            let payout = settled(&admin, id).await;
            assert_eq!(
                payout.state,
                pb::PayoutState::Released as i32,
                "{id} of a suspended creator on {}",
                db.backend()
            );
            assert!(
                payout.failure_reason.contains("suspended"),
                "{}",
                payout.failure_reason
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        for id in &held {
            assert_eq!(sandbox.calls(id), 0, "the provider never heard of {id}");
        }
        assert!(
            sandbox.payments().iter().all(|p| p.creator_id != "ann"),
            "nothing paid to ann on {}",
            db.backend()
        );
        assert_unpaid(&c, "ann", 3_000, &db).await;
        assert_ledger_sound(&c, &db).await;

        // Reinstated, she may ask again, and is paid.
        admin
            .reinstate_creator(reinstate_request("ann", "r-1"))
            .await
            .unwrap();
        let again = requested_payout(&mut ann, "ann-3", "ann", 1_000).await;
        assert_eq!(
            settled(&admin, &again.payout_id).await.state,
            pb::PayoutState::Paid as i32
        );
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_payout_already_with_the_provider_is_settled_by_asking_the_provider() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let worker = WorkerConfig {
            provider_timeout: Duration::from_millis(400),
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_millis(250),
            ..WorkerConfig::FAST_TESTS
        };
        let (running, sandbox) = start_with_worker(&db, &catalog, worker).await;
        let c = Clients::new(&running).await;
        let mut admin = c.admin.clone();

        // tim's provider fails transiently for a long time: the payout was handed over
        // but not paid. Suspended, the provider is asked, cancels it, and it is released.
        verified_creator(&c, "tim", "sandbox-transient-100").await;
        earn(&c, "tim-credit", "tim", 1_000).await;
        let tim = requested_payout(&mut c.creator("tim"), "tim-1", "tim", 1_000)
            .await
            .payout_id;
        // sue's provider pays at once but answers late (after the worker gave up waiting):
        // the payout may be paid, so it may not be released.
        verified_creator(&c, "sue", "sandbox-slow-1500").await;
        earn(&c, "sue-credit", "sue", 1_000).await;
        let sue = requested_payout(&mut c.creator("sue"), "sue-1", "sue", 1_000)
            .await
            .payout_id;
        for id in [&tim, &sue] {
            provider_called(&sandbox, id).await;
        }
        admin
            .suspend_creator(suspend_request("tim", "s-tim"))
            .await
            .unwrap();
        admin
            .suspend_creator(suspend_request("sue", "s-sue"))
            .await
            .unwrap();

        let tim_payout = settled(&admin, &tim).await;
        assert_eq!(
            tim_payout.state,
            pb::PayoutState::Released as i32,
            "an unpaid payout of a suspended creator is cancelled at the provider on {}",
            db.backend()
        );
        assert_unpaid(&c, "tim", 1_000, &db).await;
        let sue_payout = settled(&admin, &sue).await;
        assert_eq!(
            sue_payout.state,
            pb::PayoutState::Paid as i32,
            "the provider had paid it: it is recorded PAID, not released, on {}",
            db.backend()
        );
        let b = balance(&mut admin, "sue").await;
        assert_eq!(
            (b.available_diamonds, b.held_diamonds, b.paid_out_diamonds),
            (0, 0, 1_000)
        );
        let payments = sandbox.payments();
        assert!(payments.iter().all(|p| p.creator_id != "tim"), "tim unpaid");
        assert_eq!(
            payments.iter().filter(|p| p.creator_id == "sue").count(),
            1,
            "sue paid once"
        );
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn concurrent_payout_requests_and_a_suspension_never_pay_the_suspended_creator() {
    const ROUNDS: usize = 15;
    const REQUESTS: usize = 5;
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, sandbox) =
            start_with_worker(&db, &catalog, one_slot(Duration::from_secs(60))).await;
        let c = Clients::new(&running).await;
        let creators: Vec<String> = (0..ROUNDS).map(|r| format!("race-{r}")).collect();
        for id in &creators {
            verified_creator(&c, id, "sandbox-ok").await;
            earn(&c, &format!("{id}-credit"), id, 10_000).await;
        }
        // The worker is busy meanwhile, so nothing is handed to the provider before the
        // suspension: every payout of these creators must end unpaid.
        let blocker = occupy_worker(&c, &sandbox, 8_000).await;
        let mut requested = Vec::new();
        let mut refused = 0;
        for (r, id) in creators.iter().enumerate() {
            let calls = concurrent_payout_requests(&c, id, REQUESTS);
            // Staggered, so some requests land before the suspension and some after.
            let suspended = suspension_after(&c, id, Duration::from_millis(3 * (r % 5) as u64));
            for call in calls {
                match call.await.unwrap() {
                    Ok(reply) => requested.push(reply.into_inner().payout.unwrap().payout_id),
                    Err(s) => {
                        assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
                        assert_eq!(reason(&s), "CREATOR_SUSPENDED");
                        refused += 1;
                    }
                }
            }
            suspended.await.unwrap().unwrap();
        }
        eprintln!(
            "{}: {} payouts requested before their creator's suspension, {refused} refused",
            db.backend(),
            requested.len()
        );
        assert!(
            !requested.is_empty(),
            "some requests must win the race, or this run proves nothing"
        );
        let mut admin = c.admin.clone();
        assert_eq!(
            get_payout(&mut admin, &blocker).await.state,
            pb::PayoutState::Held as i32,
            "the rounds ran while the worker was busy (else this run proves less)"
        );
        settled(&admin, &blocker).await;
        for id in &requested {
            let payout = settled(&admin, id).await;
            assert_eq!(
                payout.state,
                pb::PayoutState::Released as i32,
                "{id} on {}",
                db.backend()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let paid_to_racers = sandbox
            .payments()
            .into_iter()
            .filter(|p| p.creator_id.starts_with("race-"))
            .count();
        assert_eq!(paid_to_racers, 0, "on {}", db.backend());
        for id in &creators {
            assert_unpaid(&c, id, 10_000, &db).await;
        }
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn concurrent_credits_and_a_suspension_land_before_it_or_are_refused() {
    const ROUNDS: usize = 20;
    const CREDITS: usize = 10;
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, _sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        let mut landed_total = 0;
        for r in 0..ROUNDS {
            let id = format!("credit-race-{r}");
            register(&c, &id).await;
            let calls: Vec<_> = (0..CREDITS)
                .map(|i| {
                    let mut gifting = c.gifting.clone();
                    let request = credit_request(&format!("{id}-op-{i}"), &id, 2 * (i as i64 + 1));
                    tokio::spawn(async move { gifting.credit_diamonds(request).await })
                })
                .collect();
            let mut admin = c.admin.clone();
            let suspension = suspend_request(&id, &format!("s-{id}"));
            let suspended = tokio::spawn(async move { admin.suspend_creator(suspension).await });
            let mut landed = Vec::new();
            let mut refused = Vec::new();
            for (i, call) in calls.into_iter().enumerate() {
                match call.await.unwrap() {
                    Ok(reply) => landed.push(reply.into_inner().credit.unwrap()),
                    Err(s) => {
                        assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
                        assert_eq!(reason(&s), "CREATOR_SUSPENDED");
                        refused.push(format!("{id}-op-{i}"));
                    }
                }
            }
            let suspended_at = suspended_at(suspended).await;
            for credit in &landed {
                assert!(
                    millis(&credit.create_time) <= suspended_at,
                    "credit {} landed after the suspension on {}",
                    credit.operation_id,
                    db.backend()
                );
            }
            // Landed credits are recorded and counted; refused ones left no trace.
            let mut admin = c.admin.clone();
            let recorded = admin
                .list_credits(pb::ListCreditsRequest {
                    operation_ids: (0..CREDITS).map(|i| format!("{id}-op-{i}")).collect(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .credits;
            let mut recorded_ids: Vec<_> =
                recorded.iter().map(|c| c.operation_id.clone()).collect();
            let mut landed_ids: Vec<_> = landed.iter().map(|c| c.operation_id.clone()).collect();
            recorded_ids.sort();
            landed_ids.sort();
            assert_eq!(recorded_ids, landed_ids, "on {}", db.backend());
            let diamonds: i64 = landed.iter().map(|c| c.diamonds).sum();
            let b = balance(&mut admin, &id).await;
            assert_eq!(
                (b.available_diamonds, b.lifetime_earned_diamonds),
                (diamonds, diamonds)
            );
            landed_total += landed.len();
        }
        eprintln!(
            "{}: {landed_total} of {} credits landed before their suspension",
            db.backend(),
            ROUNDS * CREDITS
        );
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn with_the_worker_running_a_payout_is_sent_before_the_suspension_or_never() {
    const ROUNDS: usize = 15;
    const REQUESTS: usize = 5;
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        let (mut paid, mut released) = (0, 0);
        for r in 0..ROUNDS {
            let id = format!("live-{r}");
            verified_creator(&c, &id, "sandbox-ok").await;
            earn(&c, &format!("{id}-credit"), &id, 10_000).await;
            let calls = concurrent_payout_requests(&c, &id, REQUESTS);
            let suspended = suspension_after(&c, &id, Duration::from_millis(4 * (r % 5) as u64));
            let mut ids = Vec::new();
            for call in calls {
                match call.await.unwrap() {
                    Ok(reply) => ids.push(reply.into_inner().payout.unwrap().payout_id),
                    Err(s) => assert_eq!(reason(&s), "CREATOR_SUSPENDED", "{s:?}"),
                }
            }
            let suspended_at = suspended_at(suspended).await;
            let mut admin = c.admin.clone();
            let mut paid_here = 0;
            for payout_id in &ids {
                let payout = settled(&admin, payout_id).await;
                if payout.state == pb::PayoutState::Paid as i32 {
                    assert!(
                        millis(&payout.send_time) <= suspended_at,
                        "{payout_id} was sent after the suspension on {}",
                        db.backend()
                    );
                    paid_here += 1;
                } else {
                    assert_eq!(payout.state, pb::PayoutState::Released as i32);
                    assert!(payout.send_time.is_none(), "released, never sent");
                    assert_eq!(sandbox.calls(payout_id), 0);
                    released += 1;
                }
            }
            paid += paid_here;
            let to_creator = sandbox
                .payments()
                .iter()
                .filter(|p| p.creator_id == id)
                .count();
            assert_eq!(to_creator, paid_here, "the provider paid what is PAID");
            let b = balance(&mut admin, &id).await;
            assert_eq!(
                (
                    b.held_diamonds,
                    b.paid_out_diamonds,
                    b.available_diamonds + b.paid_out_diamonds,
                    b.lifetime_earned_diamonds
                ),
                (0, 1_000 * paid_here as i64, 10_000, 10_000),
                "{id} on {}",
                db.backend()
            );
        }
        eprintln!(
            "{}: {paid} payouts sent before their creator's suspension (paid), {released} \
             released unsent",
            db.backend()
        );
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}
