//! Diamond maturity (issue 14, item 1), over real gRPC on SQLite and PostgreSQL with a
//! manual clock: credited diamonds are pending for the catalog's diamond_maturity_hours,
//! GetDiamondBalance shows them moving with the clock without writing anything, and a
//! payout of them is refused (DIAMONDS_NOT_MATURE) until they mature.

use ovation_proto::payout as pb;
use ovation_testkit::{databases, reason};
use ovation_types::{Clock, UnixMillis};
use tonic::Code;

use crate::suite::*;

const HOUR_MS: i64 = 3_600_000;
const START_MS: i64 = 1_800_000_000_000;

fn millis(t: &Option<prost_types::Timestamp>) -> Option<i64> {
    t.as_ref()
        .map(|t| t.seconds * 1_000 + i64::from(t.nanos) / 1_000_000)
}

#[tokio::test]
async fn a_payout_is_refused_at_71_hours_and_accepted_at_72() {
    let catalog = start_catalog_with_maturity(72).await;
    for db in databases().await {
        let clock = Clock::manual(UnixMillis(START_MS));
        let (running, _sandbox) = start_with_clock(&db, &catalog, clock.clone()).await;
        let c = Clients::new(&running).await;
        verified_creator(&c, "ann", "sandbox-ok").await;
        let mut ann = c.creator("ann");

        earn(&c, "g1", "ann", 1_000).await;
        clock.advance(HOUR_MS);
        earn(&c, "g2", "ann", 500).await;
        let b = balance_as_read(&mut ann, "ann").await;
        assert_eq!(figures(&b), (1_500, 0, 0, 0, 0, 1_500), "on {}", db.backend());
        assert_eq!(millis(&b.next_maturity_time), Some(START_MS + 72 * HOUR_MS));
        assert_eq!(millis(&b.read_time), Some(START_MS + HOUR_MS));

        clock.advance(70 * HOUR_MS); // 71 h after g1
        let refused = ann
            .request_payout(request_payout("cash-71h", "ann", 1_000))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "on {}", db.backend());
        assert_eq!(reason(&refused), "DIAMONDS_NOT_MATURE");
        assert!(
            refused.message().contains("2027-01-18T08:00:00Z"),
            "says when the next mature: {}",
            refused.message()
        );
        assert_eq!(
            figures(&balance(&mut ann, "ann").await),
            (1_500, 0, 0, 0, 0, 1_500),
            "nothing held or moved on {}",
            db.backend()
        );

        clock.advance(HOUR_MS); // 72 h after g1: g1 matured (read, not yet moved)
        let b = balance_as_read(&mut ann, "ann").await;
        assert_eq!(figures(&b), (500, 1_000, 0, 0, 0, 1_500), "on {}", db.backend());
        assert_eq!(millis(&b.next_maturity_time), Some(START_MS + 73 * HOUR_MS));
        let payout = requested_payout(&mut ann, "cash-72h", "ann", 1_000).await;
        assert_eq!(payout.state, pb::PayoutState::Held as i32);
        settled(&ann, &payout.payout_id).await;
        // Asking for more than available but within available + pending: not mature yet.
        let early = ann
            .request_payout(request_payout("cash-more", "ann", 1_000))
            .await
            .unwrap_err();
        assert_eq!(reason(&early), "INSUFFICIENT_DIAMONDS", "500 pending < 1000");

        // The current economy's maturity applies to every pending credit.
        catalog.set_maturity(0).await;
        let b = balance_as_read(&mut ann, "ann").await;
        assert_eq!(figures(&b), (0, 500, 0, 1_000, 0, 1_500), "on {}", db.backend());
        assert_eq!(b.next_maturity_time, None);
        catalog.set_maturity(72).await;
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn maturity_moves_pending_to_available_once_under_the_lock() {
    let catalog = start_catalog_with_maturity(72).await;
    for db in databases().await {
        let clock = Clock::manual(UnixMillis(START_MS));
        let (running, _sandbox) = start_with_clock(&db, &catalog, clock.clone()).await;
        let c = Clients::new(&running).await;
        verified_creator(&c, "ann", "sandbox-ok").await;
        let mut ann = c.creator("ann");
        for n in 0..5 {
            earn(&c, &format!("g{n}"), "ann", 400).await;
            clock.advance(HOUR_MS);
        }
        clock.advance(72 * HOUR_MS);
        // Concurrent payout requests each mature what is due under the creator's lock:
        // the diamonds move once, and two payouts of 1000 fit in the 2000 matured.
        let requests: Vec<_> = (0..4)
            .map(|n| {
                let mut client = ann.clone();
                tokio::spawn(async move {
                    client
                        .request_payout(request_payout(&format!("p{n}"), "ann", 1_000))
                        .await
                })
            })
            .collect();
        let mut accepted = 0;
        for r in requests {
            match r.await.unwrap() {
                Ok(_) => accepted += 1,
                Err(e) => assert_eq!(reason(&e), "INSUFFICIENT_DIAMONDS", "{e:?}"),
            }
        }
        assert_eq!(accepted, 2, "on {}", db.backend());
        let b = balance(&mut ann, "ann").await;
        assert_identity(&b);
        assert_eq!(b.pending_diamonds, 0);
        assert_eq!(b.available_diamonds + b.held_diamonds + b.paid_out_diamonds, 2_000);
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}
