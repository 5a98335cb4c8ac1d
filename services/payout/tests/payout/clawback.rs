//! Clawbacks and creator debt (issue 14, item 2), over real gRPC on SQLite and
//! PostgreSQL: a clawback takes from the gift's own pending diamonds, then the creator's
//! other pending credits (latest first), then available, then leaves debt; debt blocks
//! payouts and is settled first by later credits (single and batch) and by the diamonds of
//! HELD payouts it releases; a clawback id applies once, and the clawbacks of one credit
//! never take more than its coins, also when they race each other, credits and payouts.

use std::time::Duration;

use ovation_payout::worker::WorkerConfig;
use ovation_proto::payout as pb;
use ovation_store::{Db, DbOptions};
use ovation_testkit::{databases, reason};
use ovation_types::{Clock, UnixMillis};
use tonic::Code;

use crate::suite::*;

const HOUR_MS: i64 = 3_600_000;

async fn list_clawbacks(c: &Clients, request: pb::ListClawbacksRequest) -> Vec<pb::Clawback> {
    let mut admin = c.admin.clone();
    admin
        .list_clawbacks(request)
        .await
        .unwrap()
        .into_inner()
        .clawbacks
}

fn of_creator(id: &str) -> pb::ListClawbacksRequest {
    pb::ListClawbacksRequest {
        creator_id: id.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_clawback_takes_pending_then_available_then_debt_which_later_credits_settle() {
    let catalog = start_catalog_with_maturity(72).await;
    for db in databases().await {
        let clock = Clock::manual(UnixMillis(1_800_000_000_000));
        let (running, _sandbox) = start_with_clock(&db, &catalog, clock.clone()).await;
        let c = Clients::new(&running).await;
        verified_creator(&c, "ann", "sandbox-ok").await;
        let mut ann = c.creator("ann");
        let mut wallet = c.with(as_wallet());

        // g1 (1000 diamonds) matures and is paid out; g2, g3, g4 stay pending.
        earn(&c, "g1", "ann", 1_000).await;
        clock.advance(72 * HOUR_MS);
        let paid = requested_payout(&mut ann, "cash-1", "ann", 1_000).await;
        assert_eq!(
            settled(&ann, &paid.payout_id).await.state,
            pb::PayoutState::Paid as i32
        );
        for (op, diamonds) in [("g2", 300), ("g3", 200), ("g4", 100)] {
            earn(&c, op, "ann", diamonds).await;
            clock.advance(1);
        }
        assert_eq!(
            figures(&balance(&mut ann, "ann").await),
            (600, 0, 0, 1_000, 0, 1_600)
        );

        // All of g2's 600 coins: its own 300 pending diamonds.
        let (c1, b) = clawed(&mut wallet, clawback_request("cb-1", "g2", 600)).await;
        assert_eq!(
            (c1.coins, c1.diamonds, c1.from_pending_diamonds, c1.from_available_diamonds),
            (600, 300, 300, 0),
            "on {}",
            db.backend()
        );
        assert_eq!(figures(&b), (300, 0, 0, 1_000, 0, 1_300));
        // All of g1's 2000 coins (1000 diamonds, already paid out): its own pending is 0,
        // so the others' pending (g4 then g3, latest first), then available (0), then debt.
        let (c2, b) = clawed(&mut wallet, clawback_request("cb-2", "g1", 2_000)).await;
        assert_eq!(
            (
                c2.diamonds,
                c2.from_pending_diamonds,
                c2.from_available_diamonds,
                c2.to_debt_diamonds
            ),
            (1_000, 300, 0, 700),
            "on {}",
            db.backend()
        );
        assert_eq!(figures(&b), (0, 0, 0, 1_000, 700, 1_000));
        assert_eq!(b.clawed_back_diamonds, 1_300);
        assert_identity(&b);
        // g2 has no coins left to claw back: applied 0, nothing moves.
        let (c3, _) = clawed(&mut wallet, clawback_request("cb-3", "g2", 100)).await;
        assert_eq!((c3.coins_requested, c3.coins, c3.diamonds), (100, 0, 0));

        let refused = ann
            .request_payout(request_payout("cash-debt", "ann", 1_000))
            .await
            .unwrap_err();
        assert_eq!(reason(&refused), "CREATOR_IN_DEBT", "on {}", db.backend());

        // A later credit settles the debt first: 500 of 700.
        let credit = earn(&c, "g5", "ann", 500).await;
        assert_eq!(credit.diamonds, 500);
        assert_eq!(
            figures(&balance(&mut ann, "ann").await),
            (0, 0, 0, 1_000, 200, 1_000)
        );
        // A batch with two credits to ann: 150 settles, then 50 settles and 100 is pending.
        let mut gifting = c.gifting.clone();
        gifting
            .credit_diamonds_batch(credit_batch(vec![
                credit_item("g6", "ann", 300),
                credit_item("g7", "ann", 300),
            ]))
            .await
            .unwrap();
        let b = balance(&mut ann, "ann").await;
        assert_eq!(figures(&b), (100, 0, 0, 1_000, 0, 1_100), "on {}", db.backend());
        assert_eq!(b.clawed_back_diamonds, 1_300);

        let all = list_clawbacks(&c, of_creator("ann")).await;
        assert_eq!(
            all.iter().map(|c| c.clawback_id.as_str()).collect::<Vec<_>>(),
            ["cb-1", "cb-2", "cb-3"]
        );
        let of_g2 = list_clawbacks(
            &c,
            pb::ListClawbacksRequest {
                operation_ids: vec!["g2".into()],
                ..Default::default()
            },
        )
        .await;
        assert_eq!(of_g2.len(), 2);
        let summary = assert_ledger_sound(&c, &db).await;
        assert_eq!(
            (
                summary.clawback_count,
                summary.clawed_back_diamonds,
                summary.debt_diamonds
            ),
            (3, 1_300, 0)
        );
        assert_eq!(kind_balance(&summary, pb::AccountKind::Clawback), 1_300);
        assert_eq!(kind_balance(&summary, pb::AccountKind::CreatorPending), 100);
        running.stop().await.unwrap();
    }
}

/// A one-slot worker kept busy by `blocker`'s slow payout, so payouts requested meanwhile
/// stay HELD and unsent.
async fn occupy_worker(c: &Clients) -> String {
    verified_creator(c, "blocker", "sandbox-slow-1500").await;
    earn(c, "blocker-credit", "blocker", 1_000).await;
    requested_payout(&mut c.creator("blocker"), "blocker-payout", "blocker", 1_000)
        .await
        .payout_id
}

fn one_slot() -> WorkerConfig {
    WorkerConfig {
        concurrency: 1,
        provider_timeout: Duration::from_secs(10),
        ..WorkerConfig::FAST_TESTS
    }
}

#[tokio::test]
async fn debt_releases_held_unsent_payouts_whose_diamonds_settle_it() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, sandbox) = start_with_worker(&db, &catalog, one_slot()).await;
        let c = Clients::new(&running).await;
        verified_creator(&c, "ann", "sandbox-ok").await;
        earn(&c, "g1", "ann", 1_000).await;
        earn(&c, "g2", "ann", 200).await;
        let blocker = occupy_worker(&c).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut ann = c.creator("ann");
        let held = requested_payout(&mut ann, "cash-1", "ann", 1_100).await;

        let mut admin = c.admin.clone();
        let (cb, b) = clawed(&mut admin, clawback_request("cb-1", "g1", 2_000)).await;
        // 1000 diamonds: 100 available, 900 debt; the HELD 1100 are released and settle it.
        assert_eq!(
            (cb.from_pending_diamonds, cb.from_available_diamonds, cb.to_debt_diamonds),
            (0, 100, 900),
            "on {}",
            db.backend()
        );
        assert_eq!(figures(&b), (0, 200, 0, 0, 0, 200), "on {}", db.backend());
        let released = get_payout(&mut admin, &held.payout_id).await;
        assert_eq!(released.state, pb::PayoutState::Released as i32);
        assert!(released.failure_reason.contains("clawed-back"), "{released:?}");

        settled(&admin, &blocker).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sandbox.calls(&held.payout_id), 0, "never sent");
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn the_worker_does_not_send_a_payout_of_a_creator_in_debt() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, sandbox) = start_with_worker(&db, &catalog, one_slot()).await;
        let c = Clients::new(&running).await;
        verified_creator(&c, "ann", "sandbox-ok").await;
        earn(&c, "g1", "ann", 1_000).await;
        let blocker = occupy_worker(&c).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut ann = c.creator("ann");
        let held = requested_payout(&mut ann, "cash-1", "ann", 1_000).await;
        // Debt no clawback left behind (it would have released the payout itself): the
        // hand-over must catch it on its own.
        let store = Db::connect(db.url(), &DbOptions::default()).await.unwrap();
        ovation_store::sqlx::query(
            "UPDATE creator_balances SET debt_diamonds = 5 WHERE creator_id = 'ann'",
        )
        .execute(store.pool())
        .await
        .unwrap();
        store.close().await;

        let mut admin = c.admin.clone();
        settled(&admin, &blocker).await;
        let released = settled(&admin, &held.payout_id).await;
        assert_eq!(
            released.state,
            pb::PayoutState::Released as i32,
            "on {}",
            db.backend()
        );
        assert_eq!(sandbox.calls(&held.payout_id), 0, "never sent");
        // The released diamonds settled the debt.
        assert_eq!(
            figures(&balance(&mut admin, "ann").await),
            (0, 995, 0, 0, 0, 995)
        );
        let summary = assert_ledger_sound(&c, &db).await;
        assert_eq!(kind_balance(&summary, pb::AccountKind::Clawback), 5);
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_clawback_id_applies_once_sequentially_and_concurrently() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, _sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        register(&c, "ann").await;
        earn(&c, "g1", "ann", 1_000).await;
        let mut wallet = c.with(as_wallet());
        let (first, _) = clawed(&mut wallet, clawback_request("cb-1", "g1", 500)).await;
        let mut retry = clawback_request("cb-1", "g1", 500);
        retry.reason = "the same chargeback, other words".into();
        let (again, _) = clawed(&mut wallet, retry).await;
        assert_eq!(again, first, "the reason is not compared on {}", db.backend());
        for other in [
            clawback_request("cb-1", "g1", 501),
            pb::ClawbackDiamondsRequest {
                cause_id: "purchase-2".into(),
                ..clawback_request("cb-1", "g1", 500)
            },
            pb::ClawbackDiamondsRequest {
                cause: pb::ClawbackCause::GiftReversal as i32,
                ..clawback_request("cb-1", "g1", 500)
            },
        ] {
            let refused = wallet.clawback_diamonds(other).await.unwrap_err();
            assert_eq!(refused.code(), Code::AlreadyExists);
            assert_eq!(reason(&refused), "CLAWBACK_ID_REUSED");
        }

        // 12 concurrent copies of a new clawback: applied once.
        let racers: Vec<_> = (0..12)
            .map(|_| {
                let mut client = wallet.clone();
                tokio::spawn(async move {
                    client
                        .clawback_diamonds(clawback_request("cb-2", "g1", 600))
                        .await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for r in racers {
            answers.push(r.await.unwrap().unwrap().into_inner().clawback.unwrap());
        }
        assert!(answers.iter().all(|a| a == &answers[0]), "one clawback");
        assert_eq!(answers[0].diamonds, 300);
        let b = balance(&mut c.admin.clone(), "ann").await;
        assert_eq!(figures(&b), (0, 450, 0, 0, 0, 450), "on {}", db.backend());
        assert_eq!(list_clawbacks(&c, of_creator("ann")).await.len(), 2);
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn clawbacks_of_one_credit_never_take_more_than_its_coins() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, _sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        register(&c, "ann").await;
        earn(&c, "g1", "ann", 1_000).await; // 2000 coins
        earn(&c, "g2", "ann", 100).await;
        let racers: Vec<_> = (0..12)
            .map(|n| {
                let mut client = c.with(as_wallet());
                tokio::spawn(async move {
                    client
                        .clawback_diamonds(clawback_request(&format!("cb-{n}"), "g1", 300))
                        .await
                })
            })
            .collect();
        let mut coins = 0;
        let mut diamonds = 0;
        for r in racers {
            let cb = r.await.unwrap().unwrap().into_inner().clawback.unwrap();
            coins += cb.coins;
            diamonds += cb.diamonds;
        }
        assert_eq!((coins, diamonds), (2_000, 1_000), "on {}", db.backend());
        let b = balance(&mut c.admin.clone(), "ann").await;
        assert_eq!(figures(&b), (0, 100, 0, 0, 0, 100), "on {}", db.backend());
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn clawbacks_racing_credits_and_payouts_leave_exact_balances() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, _sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        verified_creator(&c, "ann", "sandbox-ok").await;
        for n in 0..8 {
            earn(&c, &format!("g{n}"), "ann", 500).await;
        }
        let mut tasks = Vec::new();
        for n in 0..8 {
            let mut wallet = c.with(as_wallet());
            tasks.push(tokio::spawn(async move {
                wallet
                    .clawback_diamonds(clawback_request(&format!("cb-{n}"), &format!("g{n}"), 1_000))
                    .await
                    .map(|_| ())
            }));
            let mut gifting = c.gifting.clone();
            tasks.push(tokio::spawn(async move {
                gifting
                    .credit_diamonds(credit_request(&format!("late-{n}"), "ann", 400))
                    .await
                    .map(|_| ())
            }));
            let mut ann = c.creator("ann");
            tasks.push(tokio::spawn(async move {
                match ann
                    .request_payout(request_payout(&format!("cash-{n}"), "ann", 1_000))
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) if e.code() == Code::FailedPrecondition => Ok(()),
                    Err(e) => Err(e),
                }
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let mut admin = c.admin.clone();
        // Let the worker settle what it took.
        eventually("no payout of ann is HELD", || {
            let mut admin = admin.clone();
            async move {
                let held = admin
                    .list_payouts(pb::ListPayoutsRequest {
                        creator_id: "ann".into(),
                        state: pb::PayoutState::Held as i32,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .payouts;
                held.is_empty().then_some(())
            }
        })
        .await;
        let b = balance(&mut admin, "ann").await;
        assert_identity(&b);
        // Credited 8 × 500 + 8 × 200; clawed back 8 × 500 (each credit's own coins).
        assert_eq!(b.clawed_back_diamonds, 4_000, "on {}", db.backend());
        assert_eq!(
            b.lifetime_earned_diamonds,
            5_600 - b.clawed_back_diamonds + b.debt_diamonds,
            "every credited diamond is kept, clawed back, or owed: {b:?}"
        );
        let summary = assert_ledger_sound(&c, &db).await;
        assert_eq!(summary.debt_diamonds, b.debt_diamonds);
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn bad_clawbacks_are_refused_and_write_nothing() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, _sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        register(&c, "ann").await;
        earn(&c, "g1", "ann", 1_000).await;
        let mut wallet = c.with(as_wallet());
        let bad = [
            pb::ClawbackDiamondsRequest {
                clawback_id: String::new(),
                ..clawback_request("x", "g1", 10)
            },
            clawback_request("cb-1", "", 10),
            clawback_request("cb-1", "g1", 0),
            clawback_request("cb-1", "g1", 1_000_000_000_001),
            pb::ClawbackDiamondsRequest {
                cause: 0,
                ..clawback_request("cb-1", "g1", 10)
            },
            pb::ClawbackDiamondsRequest {
                cause_id: String::new(),
                ..clawback_request("cb-1", "g1", 10)
            },
            pb::ClawbackDiamondsRequest {
                reason: "r".repeat(501),
                ..clawback_request("cb-1", "g1", 10)
            },
        ];
        for request in bad {
            let refused = wallet.clawback_diamonds(request.clone()).await.unwrap_err();
            assert_eq!(refused.code(), Code::InvalidArgument, "{request:?}");
        }
        let missing = wallet
            .clawback_diamonds(clawback_request("cb-1", "no-such-gift", 10))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        assert_eq!(reason(&missing), "CREDIT_NOT_FOUND");
        assert!(list_clawbacks(&c, of_creator("")).await.is_empty());
        assert_eq!(
            figures(&balance(&mut c.admin.clone(), "ann").await),
            (0, 1_000, 0, 0, 0, 1_000),
            "nothing written on {}",
            db.backend()
        );
        running.stop().await.unwrap();
    }
}
