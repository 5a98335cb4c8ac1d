//! Races on one purchase or one hold, over real gRPC, on SQLite and (when
//! `OVATION_TEST_POSTGRES_URL` is set) PostgreSQL. SQLite serializes every write
//! transaction, so these races can only be lost on PostgreSQL (READ COMMITTED): there,
//! anything read before the user's row lock may be stale once the lock is granted.

use ovation_proto::wallet as pb;
use ovation_store::Db;
use ovation_testkit::{databases, reason};
use ovation_types::UnixMillis;
use ovation_wallet::payment::TOKEN_OK;
use tonic::Code;

use crate::suite::*;

/// Twenty admins reverse one purchase at once, each under its own idempotency key: exactly
/// one reversal happens (claw back what is there, the rest becomes debt, once), the others
/// are refused FAILED_PRECONDITION, and the ledger stays balanced.
#[tokio::test]
async fn concurrent_reversals_of_one_purchase_reverse_it_once() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let backend = suite.backend;
        let mut nora = suite.user("nora").await;
        open_account(&mut nora, "nora").await;
        let purchase = buy(&mut nora, "nora", "b1", "coins_1000", TOKEN_OK).await;
        assert_eq!(purchase.coins_credited, 1_100);
        let mut gifting = suite.gifting().await;
        gifting
            .debit_coins(debit("spent", "nora", 600))
            .await
            .unwrap();
        let admin = suite.admin().await;

        let calls: Vec<_> = (0..20)
            .map(|i| {
                let mut admin = admin.clone();
                let purchase_id = purchase.purchase_id.clone();
                tokio::spawn(async move {
                    admin
                        .reverse_purchase(pb::ReversePurchaseRequest {
                            idempotency_key: format!("reverse-{i}"),
                            purchase_id,
                            actor: "ops-jane".into(),
                            reason: format!("chargeback CB-{i}"),
                        })
                        .await
                })
            })
            .collect();
        let mut reversals = Vec::new();
        for call in calls {
            match call.await.unwrap() {
                Ok(r) => reversals.push(r.into_inner().purchase.unwrap()),
                Err(status) => {
                    assert_eq!(
                        (status.code(), reason(&status).as_str()),
                        (Code::FailedPrecondition, "PURCHASE_NOT_COMPLETED"),
                        "[{backend}] {status:?}"
                    );
                }
            }
        }
        assert_eq!(
            reversals.len(),
            1,
            "[{backend}] exactly one of twenty concurrent reversals happens: {reversals:#?}"
        );
        let reversal = reversals[0].reversal.clone().unwrap();
        assert_eq!(
            (reversal.clawed_back_coins, reversal.debt_coins),
            (500, 600),
            "[{backend}] 500 coins were left to claw back, 600 were spent"
        );
        let b = balance(&mut nora, "nora").await;
        assert_eq!(
            (b.posted_coins, b.held_coins, b.debt_coins),
            (0, 0, 600),
            "[{backend}] balance and debt as after one reversal"
        );
        let mut admin = admin;
        let clawbacks = all_transactions(&mut admin, "nora")
            .await
            .into_iter()
            .filter(|t| t.reason == pb::TransactionReason::PurchaseReversal as i32)
            .count();
        assert_eq!(clawbacks, 1, "[{backend}] one clawback entry");
        let stored = admin
            .get_purchase(pb::GetPurchaseRequest {
                purchase_id: purchase.purchase_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .purchase
            .unwrap();
        assert_eq!(stored.state, pb::PurchaseState::Reversed as i32);
        assert_eq!(stored.reversal, reversals[0].reversal, "[{backend}]");
        assert_eq!(summary(&mut admin).await.total_debt_coins, 600);
        assert_ledger_sound(&mut admin, backend).await;
        suite.stop().await;
    }
}

/// What one racer's call answered.
type Answer<T> = Result<T, tonic::Status>;

/// Capture, release and the expiry worker race for one hold, round after round; another
/// hold stays live throughout. Each hold ends with exactly one outcome, every answer tells
/// the truth about it, and the account's held coins are exactly the live holds' coins.
///
/// The expiry pass runs the worker's own code (`ledger::expire_holds`) with a clock two
/// minutes ahead, as a replica whose clock runs fast would: it sees the hold expired while
/// the RPCs still see it active, so all three really compete for it.
#[tokio::test]
async fn capture_release_and_expiry_of_one_hold_have_exactly_one_outcome() {
    const ROUNDS: usize = 40;
    const LIVE_HOLD: i64 = 1_000;
    const HOLD: i64 = 50;
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let backend = suite.backend;
        let mut olga = suite.user("olga").await;
        open_account(&mut olga, "olga").await;
        buy(&mut olga, "olga", "b1", "coins_10000", TOKEN_OK).await; // 11,000 coins
        let mut gifting = suite.gifting().await;
        gifting
            .reserve_coins(reserve("live", "olga", LIVE_HOLD, 3_600))
            .await
            .unwrap();
        let worker = Db::connect(&suite.wallet_db_url, &Default::default())
            .await
            .unwrap();
        let mut posted = 11_000;
        let mut outcomes = [0usize; 3];
        for round in 0..ROUNDS {
            let op = format!("h{round}");
            gifting
                .reserve_coins(reserve(&op, "olga", HOLD, 60))
                .await
                .unwrap();
            // Partial captures in odd rounds: the remainder must be released, not lost.
            let capture_coins = (round % 2 == 1).then_some(HOLD - 20);
            let capture = {
                let mut gifting = gifting.clone();
                let op = op.clone();
                tokio::spawn(async move {
                    gifting
                        .capture_hold(pb::CaptureHoldRequest {
                            idempotency_key: format!("capture-{op}"),
                            operation_id: op,
                            coins: capture_coins,
                        })
                        .await
                        .map(|r| r.into_inner())
                })
            };
            let release = {
                let mut gifting = gifting.clone();
                let op = op.clone();
                tokio::spawn(async move {
                    gifting
                        .release_hold(pb::ReleaseHoldRequest {
                            idempotency_key: format!("release-{op}"),
                            operation_id: op,
                        })
                        .await
                        .map(|r| r.into_inner())
                })
            };
            let expiry = {
                let worker = worker.clone();
                tokio::spawn(async move {
                    let fast_clock = UnixMillis(UnixMillis::now().0 + 120_000);
                    let mut tx = worker.begin_write().await.unwrap();
                    ovation_wallet::ledger::expire_holds(&mut tx, fast_clock, 64)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                })
            };
            let captured: Answer<pb::CaptureHoldResponse> = capture.await.unwrap();
            let released: Answer<pb::ReleaseHoldResponse> = release.await.unwrap();
            expiry.await.unwrap();

            let hold = hold(&mut gifting, &op).await;
            let state = pb::HoldState::try_from(hold.state).unwrap();
            let at = format!(
                "[{backend}] round {round}: {state:?}, capture {captured:?}, release {released:?}"
            );
            match state {
                pb::HoldState::Captured => {
                    outcomes[0] += 1;
                    let answer = captured.as_ref().expect(&at);
                    let debit = answer.debit.as_ref().unwrap();
                    assert_eq!(debit.coins, capture_coins.unwrap_or(HOLD), "{at}");
                    assert_eq!(hold.captured_coins, debit.coins, "{at}");
                    posted -= debit.coins;
                    let refused = released.as_ref().expect_err(&at);
                    assert_eq!(
                        (refused.code(), reason(refused).as_str()),
                        (Code::FailedPrecondition, "HOLD_CAPTURED"),
                        "{at}"
                    );
                }
                pb::HoldState::Released | pb::HoldState::Expired => {
                    outcomes[if state == pb::HoldState::Released {
                        1
                    } else {
                        2
                    }] += 1;
                    let refused = captured.as_ref().expect_err(&at);
                    assert_eq!(refused.code(), Code::FailedPrecondition, "{at}");
                    // A release answers with the hold's real end, whoever ended it.
                    let answer = released.as_ref().expect(&at);
                    assert_eq!(answer.hold.as_ref().unwrap().state, hold.state, "{at}");
                }
                other => panic!("{at}: the hold is still {other:?}"),
            }
            let b = balance(&mut olga, "olga").await;
            assert_eq!(
                (b.posted_coins, b.held_coins),
                (posted, LIVE_HOLD),
                "{at}: held coins are exactly the live hold's"
            );
            // The debit ledger agrees: a captured hold is one debit, anything else none.
            let mut admin = suite.admin().await;
            let debits = admin
                .list_debits(pb::ListDebitsRequest {
                    operation_ids: vec![op.clone()],
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .debits;
            assert_eq!(
                debits.len(),
                usize::from(state == pb::HoldState::Captured),
                "{at}"
            );
            assert_ledger_sound(&mut admin, &at).await;
        }
        eprintln!("[{backend}] outcomes (captured, released, expired): {outcomes:?}");
        worker.close().await;
        suite.stop().await;
    }
}
