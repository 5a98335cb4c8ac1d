//! Payout controls (issue 14, item 4), over real gRPC on SQLite and PostgreSQL, time from
//! a manual clock: the per-creator daily cap (RESOURCE_EXHAUSTED
//! DAILY_PAYOUT_CAP_EXCEEDED, a released payout frees its share, the next UTC day starts
//! afresh, concurrent requests never pass it together), the review threshold (REVIEW is
//! held and never sent until another admin approves; a rejection releases it exactly),
//! the cooling-off after a payout account is set, and CancelPayout (unsent payouts only,
//! racing the worker's hand-over to exactly one outcome).

use std::time::Duration;

use ovation_auth::Role;
use ovation_proto::catalog as catalog_pb;
use ovation_proto::payout as pb;
use ovation_testkit::{Bearer, PayoutClient, databases, reason, violated_fields};
use ovation_types::{Clock, UnixMillis};
use tonic::Code;

use crate::suite::*;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// 2027-01-15T08:00:00Z: a third into a UTC day.
const START_MS: i64 = 1_800_000_000_000;

/// The economy's payout controls set by an admin (a new version): `cap` and `threshold`
/// in diamonds (0: none), `cooling_off` in hours.
async fn set_controls(catalog: &Catalog, cap: i64, threshold: i64, cooling_off: i32) {
    let economy = catalog
        .update_economy(catalog_pb::UpdateEconomyParametersRequest {
            payout_daily_cap_diamonds: Some(cap),
            payout_review_threshold_diamonds: Some(threshold),
            payout_account_cooling_off_hours: Some(cooling_off),
            ..Default::default()
        })
        .await;
    assert_eq!(
        (
            economy.payout_daily_cap_diamonds,
            economy.payout_review_threshold_diamonds,
            economy.payout_account_cooling_off_hours
        ),
        (cap, threshold, cooling_off)
    );
}

/// A second admin: not the one (`test-admin`) who verified the accounts in these tests.
fn other_admin() -> Bearer {
    Bearer::role("admin-2", Role::Admin)
}

fn review_request(key: &str, payout_id: &str, approve: bool) -> pb::ReviewPayoutRequest {
    let decision = if approve {
        pb::PayoutReviewDecision::Approve
    } else {
        pb::PayoutReviewDecision::Reject
    };
    pb::ReviewPayoutRequest {
        idempotency_key: key.into(),
        payout_id: payout_id.into(),
        decision: decision.into(),
        reason: "reviewed the creator's history".into(),
        actor: String::new(),
    }
}

fn cancel_request(key: &str, payout_id: &str) -> pb::CancelPayoutRequest {
    pb::CancelPayoutRequest {
        idempotency_key: key.into(),
        payout_id: payout_id.into(),
        reason: "the creator asked to stop it".into(),
        actor: "support-desk".into(),
    }
}

/// `client` reviews; the payout after the review.
async fn reviewed(client: &mut PayoutClient, request: pb::ReviewPayoutRequest) -> pb::Payout {
    client
        .review_payout(request)
        .await
        .unwrap()
        .into_inner()
        .payout
        .unwrap()
}

/// `client` cancels; the payout, RELEASED.
async fn cancelled(client: &mut PayoutClient, request: pb::CancelPayoutRequest) -> pb::Payout {
    client
        .cancel_payout(request)
        .await
        .unwrap()
        .into_inner()
        .payout
        .unwrap()
}

/// (available, held, paid out, lifetime) of `id`.
async fn money(c: &Clients, id: &str) -> (i64, i64, i64, i64) {
    let b = balance(&mut c.admin.clone(), id).await;
    assert_identity(&b);
    (
        b.available_diamonds,
        b.held_diamonds,
        b.paid_out_diamonds,
        b.lifetime_earned_diamonds,
    )
}

fn state(p: &pb::Payout) -> pb::PayoutState {
    pb::PayoutState::try_from(p.state).unwrap()
}

#[tokio::test]
async fn the_daily_cap_counts_what_is_not_released_and_resets_at_utc_midnight() {
    let catalog = start_catalog().await;
    set_controls(&catalog, 5_000, 2_000, 0).await;
    for db in databases().await {
        let on = db.backend();
        let clock = Clock::manual(UnixMillis(START_MS));
        let (running, _sandbox) = start_with_clock(&db, &catalog, clock.clone()).await;
        let c = Clients::new(&running).await;
        verified_creator(&c, "ann", "sandbox-ok").await;
        earn(&c, "g1", "ann", 20_000).await;
        let mut ann = c.creator("ann");

        let p1 = requested_payout(&mut ann, "p1", "ann", 1_500).await;
        assert_eq!(
            state(&settled(&ann, &p1.payout_id).await),
            pb::PayoutState::Paid
        );
        let p2 = requested_payout(&mut ann, "p2", "ann", 2_000).await;
        assert_eq!(state(&p2), pb::PayoutState::Review, "on {on}");

        // 1500 paid + 2000 in review + 1501 > 5000.
        let before = money(&c, "ann").await;
        let refused = ann
            .request_payout(request_payout("p3", "ann", 1_501))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "on {on}");
        assert_eq!(reason(&refused), "DAILY_PAYOUT_CAP_EXCEEDED");
        assert!(
            refused.message().contains("3500")
                && refused.message().contains("2027-01-16T00:00:00Z"),
            "says what was requested and when the cap resets: {}",
            refused.message()
        );
        assert_eq!(money(&c, "ann").await, before, "nothing held on {on}");
        let p3 = requested_payout(&mut ann, "p3-exact", "ann", 1_500).await;
        settled(&ann, &p3.payout_id).await;

        // A rejected payout frees its share of the cap; so does a cancelled one.
        let admin_2 = &mut c.with(other_admin());
        let rejected = reviewed(admin_2, review_request("r2", &p2.payout_id, false)).await;
        assert_eq!(state(&rejected), pb::PayoutState::Released);
        let p4 = requested_payout(&mut ann, "p4", "ann", 2_000).await;
        assert_eq!(state(&p4), pb::PayoutState::Review);
        let full = ann
            .request_payout(request_payout("p5", "ann", 1_000))
            .await
            .unwrap_err();
        assert_eq!(reason(&full), "DAILY_PAYOUT_CAP_EXCEEDED", "on {on}");
        cancelled(&mut c.admin.clone(), cancel_request("c4", &p4.payout_id)).await;
        let p5 = requested_payout(&mut ann, "p5-again", "ann", 1_000).await;
        settled(&ann, &p5.payout_id).await;

        // The next UTC day starts from zero.
        let next_midnight = (START_MS / DAY_MS + 1) * DAY_MS;
        clock.advance(next_midnight - START_MS);
        let p6 = requested_payout(&mut ann, "p6", "ann", 5_000).await;
        assert_eq!(state(&p6), pb::PayoutState::Review, "on {on}");
        let over = ann
            .request_payout(request_payout("p7", "ann", 1_000))
            .await
            .unwrap_err();
        assert_eq!(reason(&over), "DAILY_PAYOUT_CAP_EXCEEDED", "on {on}");
        assert!(
            over.message().contains("2027-01-17T00:00:00Z"),
            "{}",
            over.message()
        );

        // Paid 1500 + 1500 + 1000; 5000 held in review.
        assert_eq!(
            money(&c, "ann").await,
            (11_000, 5_000, 4_000, 20_000),
            "on {on}"
        );
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn concurrent_requests_never_together_pass_the_daily_cap() {
    const REQUESTS: usize = 12;
    let catalog = start_catalog().await;
    set_controls(&catalog, 5_000, 0, 0).await;
    for db in databases().await {
        let on = db.backend();
        let clock = Clock::manual(UnixMillis(START_MS));
        let (running, _sandbox) = start_with_clock(&db, &catalog, clock.clone()).await;
        let c = Clients::new(&running).await;
        verified_creator(&c, "ann", "sandbox-ok").await;
        earn(&c, "g1", "ann", 20_000).await;
        let calls: Vec<_> = (0..REQUESTS)
            .map(|i| {
                let mut ann = c.creator("ann");
                let request = request_payout(&format!("race-{i}"), "ann", 1_000);
                tokio::spawn(async move { ann.request_payout(request).await })
            })
            .collect();
        let mut accepted = Vec::new();
        for call in calls {
            match call.await.unwrap() {
                Ok(reply) => accepted.push(reply.into_inner().payout.unwrap().payout_id),
                Err(s) => assert_eq!(reason(&s), "DAILY_PAYOUT_CAP_EXCEEDED", "{s:?} on {on}"),
            }
        }
        assert_eq!(accepted.len(), 5, "exactly the cap's worth on {on}");
        let ann = c.creator("ann");
        for id in &accepted {
            settled(&ann, id).await;
        }
        assert_eq!(
            money(&c, "ann").await,
            (15_000, 0, 5_000, 20_000),
            "on {on}"
        );
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn payouts_from_the_review_threshold_wait_for_another_admin() {
    // The demo economy's controls: review from 20000 diamonds, cap 100000 a day.
    let catalog = start_catalog().await;
    for db in databases().await {
        let on = db.backend();
        let (running, sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        verified_creator(&c, "ann", "sandbox-ok").await; // verified by test-admin
        earn(&c, "g1", "ann", 100_000).await;
        let mut ann = c.creator("ann");
        let mut verifier = c.admin.clone();
        let mut admin_2 = c.with(other_admin());

        let small = requested_payout(&mut ann, "small", "ann", 19_999).await;
        assert_eq!(state(&small), pb::PayoutState::Held, "below the threshold");
        assert_eq!(
            state(&settled(&ann, &small.payout_id).await),
            pb::PayoutState::Paid
        );

        let big = requested_payout(&mut ann, "big", "ann", 20_000).await;
        assert_eq!(
            state(&big),
            pb::PayoutState::Review,
            "at the threshold on {on}"
        );
        assert_eq!(
            (
                big.account_version,
                big.account_set_by.as_str(),
                big.account_verified_by.as_str()
            ),
            (1, "ann", "test-admin")
        );
        assert_eq!(money(&c, "ann").await, (60_001, 20_000, 19_999, 100_000));
        // The worker leaves it alone.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            state(&get_payout(&mut ann, &big.payout_id).await),
            pb::PayoutState::Review
        );
        assert_eq!(
            sandbox.calls(&big.payout_id),
            0,
            "never sent while in review"
        );

        // Four eyes: the admin who verified the account (or one with the setter's id)
        // may not approve it.
        for (who, mut client) in [
            ("the verifier", verifier.clone()),
            ("the setter", c.with(Bearer::role("ann", Role::Admin))),
        ] {
            let denied = client
                .review_payout(review_request("own", &big.payout_id, true))
                .await
                .unwrap_err();
            assert_eq!(denied.code(), Code::PermissionDenied, "{who} on {on}");
        }
        assert_eq!(
            state(&get_payout(&mut ann, &big.payout_id).await),
            pb::PayoutState::Review
        );

        // The account changes meanwhile: the payout keeps the version it recorded.
        set_account(&c, "ann", "sandbox-elsewhere").await;
        let approved = reviewed(
            &mut admin_2,
            review_request("approve", &big.payout_id, true),
        )
        .await;
        assert_eq!(state(&approved), pb::PayoutState::Held, "on {on}");
        let review = approved.review.clone().unwrap();
        assert_eq!(
            (review.decision, review.reviewer.as_str()),
            (pb::PayoutReviewDecision::Approve as i32, "admin-2")
        );
        assert_eq!(approved.account_reference, "sandbox-ok");
        // A retry with the same key answers the same; the payout is paid once.
        let again = reviewed(
            &mut admin_2,
            review_request("approve", &big.payout_id, true),
        )
        .await;
        assert_eq!(again, approved);
        let paid = settled(&ann, &big.payout_id).await;
        assert_eq!(state(&paid), pb::PayoutState::Paid, "on {on}");
        assert_eq!(sandbox.calls(&big.payout_id), 1);
        let not_in_review = admin_2
            .review_payout(review_request("approve-paid", &big.payout_id, true))
            .await
            .unwrap_err();
        assert_eq!(not_in_review.code(), Code::FailedPrecondition);
        assert_eq!(reason(&not_in_review), "PAYOUT_NOT_IN_REVIEW");

        // A rejection (the verifier may reject) releases the diamonds exactly.
        verify(&c, "ann").await; // version 2, verified by test-admin
        let doomed = requested_payout(&mut ann, "doomed", "ann", 30_000).await;
        assert_eq!(doomed.account_version, 2);
        let rejected = reviewed(
            &mut verifier,
            review_request("reject", &doomed.payout_id, false),
        )
        .await;
        assert_eq!(state(&rejected), pb::PayoutState::Released, "on {on}");
        assert!(
            rejected
                .failure_reason
                .contains("rejected in review by test-admin")
        );
        assert!(rejected.settle_time.is_some() && rejected.send_time.is_none());
        assert_eq!(sandbox.calls(&doomed.payout_id), 0);
        assert_eq!(
            money(&c, "ann").await,
            (60_001, 0, 39_999, 100_000),
            "on {on}"
        );
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn no_payout_goes_to_an_account_set_less_than_the_cooling_off_ago() {
    let catalog = start_catalog().await;
    set_controls(&catalog, 0, 0, 48).await;
    for db in databases().await {
        let on = db.backend();
        let clock = Clock::manual(UnixMillis(START_MS));
        let (running, _sandbox) = start_with_clock(&db, &catalog, clock.clone()).await;
        let c = Clients::new(&running).await;
        verified_creator(&c, "ann", "sandbox-ok").await; // set at START_MS
        earn(&c, "g1", "ann", 5_000).await;
        let mut ann = c.creator("ann");

        clock.advance(47 * HOUR_MS);
        let early = ann
            .request_payout(request_payout("at-47h", "ann", 1_000))
            .await
            .unwrap_err();
        assert_eq!(early.code(), Code::FailedPrecondition, "on {on}");
        assert_eq!(reason(&early), "PAYOUT_ACCOUNT_COOLING_OFF");
        assert!(
            early.message().contains("2027-01-17T08:00:00Z"),
            "says when it ends: {}",
            early.message()
        );
        assert_eq!(money(&c, "ann").await, (5_000, 0, 0, 5_000), "nothing held");

        clock.advance(HOUR_MS);
        let payout = requested_payout(&mut ann, "at-48h", "ann", 1_000).await;
        assert_eq!(state(&payout), pb::PayoutState::Held, "on {on}");
        settled(&ann, &payout.payout_id).await;

        // A new account starts its own cooling-off, even once verified.
        set_account(&c, "ann", "sandbox-new").await;
        verify(&c, "ann").await;
        clock.advance(HOUR_MS);
        let again = ann
            .request_payout(request_payout("new-account", "ann", 1_000))
            .await
            .unwrap_err();
        assert_eq!(reason(&again), "PAYOUT_ACCOUNT_COOLING_OFF", "on {on}");
        clock.advance(47 * HOUR_MS);
        let payout = requested_payout(&mut ann, "new-account-48h", "ann", 1_000).await;
        assert_eq!(payout.account_reference, "sandbox-new");
        settled(&ann, &payout.payout_id).await;
        assert_eq!(money(&c, "ann").await, (3_000, 0, 2_000, 5_000), "on {on}");
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn cancel_payout_releases_only_what_was_not_sent() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let on = db.backend();
        let (running, sandbox) =
            start_with_worker(&db, &catalog, one_slot(Duration::from_secs(10))).await;
        let c = Clients::new(&running).await;
        let blocker = occupy_worker(&c, &sandbox, 3_000).await;
        verified_creator(&c, "ann", "sandbox-ok").await;
        earn(&c, "g1", "ann", 50_000).await;
        let mut ann = c.creator("ann");
        let mut admin = c.admin.clone();

        // In review (20000 ≥ the demo threshold), and HELD but unsent (the worker is busy).
        let in_review = requested_payout(&mut ann, "in-review", "ann", 20_000).await;
        let unsent = requested_payout(&mut ann, "unsent", "ann", 5_000).await;
        assert_eq!(
            (state(&in_review), state(&unsent)),
            (pb::PayoutState::Review, pb::PayoutState::Held)
        );
        assert_eq!(money(&c, "ann").await, (25_000, 25_000, 0, 50_000));
        for (key, payout) in [("c1", &in_review), ("c2", &unsent)] {
            let cancelled = cancelled(&mut admin, cancel_request(key, &payout.payout_id)).await;
            assert_eq!(state(&cancelled), pb::PayoutState::Released, "on {on}");
            let cancellation = cancelled.cancellation.clone().unwrap();
            assert_eq!(cancellation.actor, "test-admin");
            assert_eq!(
                cancellation.reason,
                "the creator asked to stop it (reported by: support-desk)"
            );
            assert!(
                cancelled
                    .failure_reason
                    .starts_with("cancelled by test-admin")
            );
        }
        assert_eq!(money(&c, "ann").await, (50_000, 0, 0, 50_000), "on {on}");

        // Sent already (the worker is waiting for the provider's answer): refused.
        let sent = admin
            .cancel_payout(cancel_request("c3", &blocker))
            .await
            .unwrap_err();
        assert_eq!(sent.code(), Code::FailedPrecondition, "on {on}");
        assert_eq!(reason(&sent), "PAYOUT_ALREADY_SENT");
        let paid = settled(&admin, &blocker).await;
        assert_eq!(
            state(&paid),
            pb::PayoutState::Paid,
            "the provider's answer settles it"
        );
        let settled_already = admin
            .cancel_payout(cancel_request("c4", &blocker))
            .await
            .unwrap_err();
        assert_eq!(reason(&settled_already), "PAYOUT_ALREADY_SETTLED");
        let twice = admin
            .cancel_payout(cancel_request("c5", &unsent.payout_id))
            .await
            .unwrap_err();
        assert_eq!(reason(&twice), "PAYOUT_ALREADY_SETTLED", "on {on}");
        let unknown = admin
            .cancel_payout(cancel_request("c6", "po_unknown"))
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound);

        // The cancelled ones were never sent; the worker, once free, leaves them.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for payout in [&in_review, &unsent] {
            assert_eq!(sandbox.calls(&payout.payout_id), 0, "on {on}");
        }
        assert_eq!(money(&c, "ann").await, (50_000, 0, 0, 50_000));
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}

/// How long a blocker's payout keeps the one-slot worker busy in the race below: the
/// raced payout is handed over about this long after it is requested.
const BLOCKER_MS: u64 = 30;

#[tokio::test]
async fn a_cancel_racing_the_hand_over_ends_paid_once_or_released() {
    const ROUNDS: usize = 24;
    let catalog = start_catalog().await;
    for db in databases().await {
        let on = db.backend();
        let (running, sandbox) =
            start_with_worker(&db, &catalog, one_slot(Duration::from_secs(10))).await;
        let c = Clients::new(&running).await;
        verified_creator(&c, "blocker", &format!("sandbox-slow-{BLOCKER_MS}")).await;
        earn(&c, "blocker-credit", "blocker", 1_000 * ROUNDS as i64).await;
        let (mut paid, mut released) = (0, 0);
        for r in 0..ROUNDS {
            let id = format!("race-{r}");
            verified_creator(&c, &id, "sandbox-ok").await;
            earn(&c, &format!("{id}-credit"), &id, 3_000).await;
            // The worker is busy with the blocker's payout for BLOCKER_MS, then hands
            // this one over; the cancel lands before, at or after that.
            let blocker = requested_payout(
                &mut c.creator("blocker"),
                &format!("b-{r}"),
                "blocker",
                1_000,
            )
            .await;
            provider_called(&sandbox, &blocker.payout_id).await;
            let payout = requested_payout(&mut c.creator(&id), "cash", &id, 1_000).await;
            let mut admin = c.admin.clone();
            let request = cancel_request(&format!("cancel-{r}"), &payout.payout_id);
            let delay = Duration::from_millis(BLOCKER_MS / 3 * (r % 6) as u64);
            let cancel = tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                admin.cancel_payout(request).await
            });
            let answer = cancel.await.unwrap();
            let end = settled(&c.admin, &payout.payout_id).await;
            let payments = sandbox
                .payments()
                .iter()
                .filter(|p| p.payout_id == payout.payout_id)
                .count();
            match answer {
                Ok(reply) => {
                    let cancelled = reply.into_inner().payout.unwrap();
                    assert_eq!(state(&cancelled), pb::PayoutState::Released);
                    assert_eq!(state(&end), pb::PayoutState::Released, "on {on}");
                    assert!(end.send_time.is_none(), "released, never sent, on {on}");
                    assert_eq!(sandbox.calls(&payout.payout_id), 0);
                    assert_eq!(payments, 0);
                    assert_eq!(money(&c, &id).await, (3_000, 0, 0, 3_000), "on {on}");
                    released += 1;
                }
                Err(refused) => {
                    assert!(
                        ["PAYOUT_ALREADY_SENT", "PAYOUT_ALREADY_SETTLED"]
                            .contains(&reason(&refused).as_str()),
                        "{refused:?}"
                    );
                    assert_eq!(state(&end), pb::PayoutState::Paid, "on {on}");
                    assert_eq!(payments, 1, "paid once on {on}");
                    assert_eq!(money(&c, &id).await, (2_000, 0, 1_000, 3_000), "on {on}");
                    paid += 1;
                }
            }
            settled(&c.admin, &blocker.payout_id).await;
        }
        eprintln!("{on}: {paid} payouts sent before the cancel (paid), {released} cancelled");
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn bad_reviews_and_cancellations_are_refused_and_write_nothing() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, _sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        verified_creator(&c, "ann", "sandbox-ok").await;
        earn(&c, "g1", "ann", 30_000).await;
        let payout = requested_payout(&mut c.creator("ann"), "big", "ann", 20_000).await;
        let mut admin = c.with(other_admin());
        let bad = admin
            .review_payout(pb::ReviewPayoutRequest {
                idempotency_key: String::new(),
                payout_id: "not an id".into(),
                decision: pb::PayoutReviewDecision::Unspecified.into(),
                reason: String::new(),
                actor: "a".repeat(129),
            })
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument, "on {}", db.backend());
        assert_eq!(
            violated_fields(&bad),
            [
                "idempotency_key",
                "payout_id",
                "decision",
                "actor",
                "reason"
            ]
        );
        let bad = admin
            .cancel_payout(pb::CancelPayoutRequest {
                idempotency_key: "k".into(),
                payout_id: payout.payout_id.clone(),
                reason: "r".repeat(501),
                actor: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&bad), ["reason"]);
        assert_eq!(
            state(&get_payout(&mut admin, &payout.payout_id).await),
            pb::PayoutState::Review,
            "nothing written on {}",
            db.backend()
        );
        assert_eq!(money(&c, "ann").await, (10_000, 20_000, 0, 30_000));
        running.stop().await.unwrap();
    }
}
