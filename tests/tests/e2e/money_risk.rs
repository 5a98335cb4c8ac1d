//! Issue 14's acceptance, end to end over real gRPC with the four services on loopback (on
//! SQLite, and on PostgreSQL when `OVATION_TEST_POSTGRES_URL` is set; CI sets it): the
//! stolen-card loop — buy coins with a card that will be charged back, gift them to an
//! accomplice creator, cash out, let the chargeback land — is closed, and the real
//! `ovation audit` is clean at every step.
//!
//! Payout runs on a manual clock, so diamonds mature (72 h in the demo economy) when the
//! test says, not after a sleep.

use std::time::Duration;

use futures::future::join_all;
use ovation_auth::Role;
use ovation_e2e::binary;
use ovation_gifting::GiftingSettings;
use ovation_proto::catalog as catalog_pb;
use ovation_proto::common::Money;
use ovation_proto::gifting as gifting_pb;
use ovation_proto::payout as payout_pb;
use ovation_proto::wallet as wallet_pb;
use ovation_testkit::reason;
use ovation_testkit::{Bearer, InProcessSuite, Service, TestDatabase, gift_request, token};
use ovation_types::{Clock, UnixMillis};
use tonic::Code;

const HOUR_MS: i64 = 3_600_000;
/// Longest a clawback order or a payout may take to settle in the background.
const SETTLE_BOUND: Duration = Duration::from_secs(60);
/// Longest `ovation audit` may run.
const AUDIT_BOUND: Duration = Duration::from_secs(120);
const STREAM: &str = "live-1";

/// Runs the real `ovation audit` against the suite; it must pass.
async fn assert_audit_clean(suite: &InProcessSuite, when: &str) {
    let mut command = tokio::process::Command::new(binary("ovation", "ovation"));
    command
        .arg("audit")
        .args(["--wallet-url", &suite.endpoint(Service::Wallet)])
        .args(["--payout-url", &suite.endpoint(Service::Payout)])
        .args(["--gifting-url", &suite.endpoint(Service::Gifting)])
        .args(["--token", &token("auditor", &[Role::Admin])])
        .kill_on_drop(true);
    let output = tokio::time::timeout(AUDIT_BOUND, command.output())
        .await
        .unwrap_or_else(|_| panic!("[{}] {when}: the audit ran too long", suite.backend))
        .unwrap_or_else(|e| panic!("[{}] {when}: cannot run the audit: {e}", suite.backend));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && printed.contains("audit: no violation"),
        "[{}] {when}: the audit failed:\n{printed}\n{}",
        suite.backend,
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn balance(suite: &InProcessSuite, creator: &str) -> payout_pb::DiamondBalance {
    suite
        .clients
        .payout_as(creator)
        .await
        .get_diamond_balance(payout_pb::GetDiamondBalanceRequest {
            creator_id: creator.into(),
        })
        .await
        .expect("GetDiamondBalance")
        .into_inner()
        .balance
        .expect("a balance")
}

async fn request_payout(
    suite: &InProcessSuite,
    key: &str,
    diamonds: i64,
) -> Result<payout_pb::Payout, tonic::Status> {
    let answer = suite
        .clients
        .payout_as("bella")
        .await
        .request_payout(payout_pb::RequestPayoutRequest {
            idempotency_key: key.into(),
            creator_id: "bella".into(),
            diamonds,
        })
        .await?;
    Ok(answer.into_inner().payout.expect("a payout"))
}

async fn send(
    suite: &InProcessSuite,
    key: &str,
    sender: &str,
    gift: &str,
    quantity: i32,
) -> gifting_pb::GiftReceipt {
    suite
        .clients
        .gifting_as(sender)
        .await
        .send_gift(gift_request(STREAM, key, sender, "bella", gift, quantity))
        .await
        .unwrap_or_else(|e| panic!("[{}] SendGift {key}: {e}", suite.backend))
        .into_inner()
        .receipt
        .expect("a receipt")
}

/// Polls `read` until `done` holds (bounded by [`SETTLE_BOUND`]).
async fn eventually<T, F, Fut>(what: &str, mut read: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + SETTLE_BOUND;
    loop {
        let value = read().await;
        if done(&value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {SETTLE_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Bella, a creator whose payout account an operator verified.
async fn verified_creator(suite: &InProcessSuite) {
    suite.creator("bella").await;
    let account = suite
        .clients
        .payout_as("bella")
        .await
        .set_payout_account(payout_pb::SetPayoutAccountRequest {
            idempotency_key: "account-bella".into(),
            creator_id: "bella".into(),
            account_reference: "sandbox-ok-bella".into(),
            holder_name: "Bella".into(),
        })
        .await
        .expect("SetPayoutAccount")
        .into_inner();
    let version = account
        .creator
        .and_then(|c| c.payout_account)
        .map(|a| a.version)
        .expect("an account version");
    suite
        .clients
        .payout_admin()
        .await
        .verify_payout_account(payout_pb::VerifyPayoutAccountRequest {
            idempotency_key: "verify-bella".into(),
            creator_id: "bella".into(),
            decision: payout_pb::VerificationStatus::Verified.into(),
            account_reference: "sandbox-ok-bella".into(),
            actor: String::new(),
            reason: "identity documents checked".into(),
            account_version: version,
        })
        .await
        .expect("VerifyPayoutAccount");
}

/// Tom's account and his purchase of 2,000 coins (the platform sells a 2,000-coin package);
/// the purchase and the coins it credited.
async fn stolen_card_purchase(suite: &InProcessSuite) -> wallet_pb::Purchase {
    suite
        .clients
        .catalog(Bearer::admin())
        .await
        .create_coin_package(catalog_pb::CreateCoinPackageRequest {
            idempotency_key: "package-2000".into(),
            package_id: "coins_2000".into(),
            name: "2,000 coins".into(),
            coins: 2_000,
            prices: vec![Money {
                currency_code: "USD".into(),
                amount_minor: 2_798,
            }],
            enabled: true,
        })
        .await
        .expect("CreateCoinPackage");
    let mut wallet = suite.clients.wallet_as("tom").await;
    wallet
        .create_account(wallet_pb::CreateAccountRequest {
            idempotency_key: "open-tom".into(),
            user_id: "tom".into(),
            minor: false,
        })
        .await
        .expect("CreateAccount");
    wallet
        .purchase_coins(wallet_pb::PurchaseCoinsRequest {
            idempotency_key: "buy-tom".into(),
            user_id: "tom".into(),
            package_id: "coins_2000".into(),
            currency_code: "USD".into(),
            payment_token: ovation_wallet::payment::TOKEN_OK.into(),
            expected_price: None,
            payment_method: None,
        })
        .await
        .expect("PurchaseCoins")
        .into_inner()
        .purchase
        .expect("a purchase")
}

async fn the_stolen_card_loop_is_closed(db: TestDatabase) {
    let clock = Clock::manual(UnixMillis::now());
    let suite =
        InProcessSuite::start_with_payout_clock(db, GiftingSettings::default(), clock.clone())
            .await;
    let b = suite.backend;
    verified_creator(&suite).await;
    // Past any cooling-off after bella's account was set.
    clock.advance(48 * HOUR_MS);

    // 1. Tom buys 2,000 coins with a card that will be charged back, and gifts them all to
    //    bella: 1,000 diamonds, pending for 72 h.
    let purchase = stolen_card_purchase(&suite).await;
    assert!(purchase.coins_credited >= 2_000, "[{b}] {purchase:?}");
    let gift = send(&suite, "tom-1", "tom", "galaxy", 2).await;
    assert_eq!(
        gift.status,
        gifting_pb::SagaStatus::Completed as i32,
        "[{b}] {gift:?}"
    );
    assert_eq!(gift.diamonds_credited, 1_000, "[{b}]");
    let before = balance(&suite, "bella").await;
    assert_eq!(
        (before.pending_diamonds, before.available_diamonds),
        (1_000, 0),
        "[{b}] {before:?}"
    );
    assert_audit_clean(&suite, "after tom's gifts").await;

    // 2. Bella cannot cash out pending diamonds.
    let refused = request_payout(&suite, "cash-early", 1_000)
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::FailedPrecondition,
        "[{b}] {refused:?}"
    );
    assert_eq!(reason(&refused), "DIAMONDS_NOT_MATURE", "[{b}] {refused:?}");
    assert_audit_clean(&suite, "after the early cash-out").await;

    // 3. Three days later they have matured, and she cashes them out before the chargeback
    //    lands (as a thief would): the payout is paid.
    clock.advance(72 * HOUR_MS);
    let payout = request_payout(&suite, "cash-1", 1_000)
        .await
        .expect("the cash-out");
    eventually(
        "the payout being paid",
        || async {
            suite
                .clients
                .payout_as("bella")
                .await
                .get_payout(payout_pb::GetPayoutRequest {
                    payout_id: payout.payout_id.clone(),
                })
                .await
                .expect("GetPayout")
                .into_inner()
                .payout
                .expect("a payout")
        },
        |p| p.state == payout_pb::PayoutState::Paid as i32,
    )
    .await;
    // Hana, an honest viewer, then gifts bella 300 coins: 150 diamonds pending.
    assert_eq!(
        suite.funded_viewer("hana", "coins_1000").await,
        1_100,
        "[{b}]"
    );
    let honest = send(&suite, "hana-1", "hana", "doughnut", 10).await;
    assert_eq!(honest.diamonds_credited, 150, "[{b}] {honest:?}");
    assert_audit_clean(&suite, "after the payout").await;

    // 4. The chargeback lands; an operator's tooling retries it with eight keys at once:
    //    one reversal.
    let answers = join_all((0..8).map(|i| {
        let clients = suite.clients.clone();
        let purchase_id = purchase.purchase_id.clone();
        async move {
            clients
                .wallet(Bearer::admin())
                .await
                .reverse_purchase(wallet_pb::ReversePurchaseRequest {
                    idempotency_key: format!("chargeback-{i}"),
                    purchase_id,
                    actor: String::new(),
                    reason: "chargeback cb_001: stolen card".into(),
                })
                .await
        }
    }))
    .await;
    let reversed: Vec<wallet_pb::Purchase> = answers
        .iter()
        .filter_map(|a| a.as_ref().ok())
        .map(|r| r.get_ref().purchase.clone().expect("a purchase"))
        .collect();
    assert_eq!(reversed.len(), 1, "[{b}] one reversal: {answers:?}");
    for refused in answers.iter().filter_map(|a| a.as_ref().err()) {
        assert_eq!(
            refused.code(),
            Code::FailedPrecondition,
            "[{b}] {refused:?}"
        );
        assert_eq!(
            reason(refused),
            "PURCHASE_NOT_COMPLETED",
            "[{b}] {refused:?}"
        );
    }
    let reversal = reversed[0].reversal.clone().expect("the reversal");
    // Tom had spent 2,000 of the coins on the gift: they are his debt, attributed to it.
    assert_eq!(reversal.debt_coins, 2_000, "[{b}] {reversal:?}");
    assert_eq!(reversal.attributed_coins, 2_000, "[{b}] {reversal:?}");
    assert_eq!(reversal.clawback_order_count, 1, "[{b}] {reversal:?}");

    // 5. Wallet's order reaches payout: the 1,000 diamonds the gift minted are clawed back,
    //    from pending first (hana's 150), and the rest is bella's debt.
    let orders = eventually(
        "the clawback order being applied",
        || async {
            suite
                .clients
                .wallet(Bearer::admin())
                .await
                .list_clawback_orders(wallet_pb::ListClawbackOrdersRequest {
                    purchase_id: purchase.purchase_id.clone(),
                    ..Default::default()
                })
                .await
                .expect("ListClawbackOrders")
                .into_inner()
                .orders
        },
        |orders| {
            !orders.is_empty()
                && orders
                    .iter()
                    .all(|o| o.state == wallet_pb::ClawbackOrderState::Applied as i32)
        },
    )
    .await;
    assert_eq!(orders.len(), 1, "[{b}] {orders:?}");
    assert_eq!(orders[0].operation_id, gift.saga_id, "[{b}] {orders:?}");
    assert_eq!(
        (orders[0].coins, orders[0].diamonds),
        (2_000, 1_000),
        "[{b}] {orders:?}"
    );
    let clawbacks = suite
        .clients
        .payout_admin()
        .await
        .list_clawbacks(payout_pb::ListClawbacksRequest {
            operation_ids: vec![gift.saga_id.clone()],
            ..Default::default()
        })
        .await
        .expect("ListClawbacks")
        .into_inner()
        .clawbacks;
    assert_eq!(clawbacks.len(), 1, "[{b}] {clawbacks:?}");
    let c = &clawbacks[0];
    assert_eq!(
        (
            c.diamonds,
            c.from_pending_diamonds,
            c.from_available_diamonds,
            c.to_debt_diamonds
        ),
        (1_000, 150, 0, 850),
        "[{b}] {c:?}"
    );
    let after = balance(&suite, "bella").await;
    assert_eq!(
        (
            after.pending_diamonds,
            after.available_diamonds,
            after.debt_diamonds
        ),
        (0, 0, 850),
        "[{b}] {after:?}"
    );
    assert_eq!(after.clawed_back_diamonds, 1_000, "[{b}] {after:?}");
    assert_eq!(
        after.lifetime_earned_diamonds,
        after.pending_diamonds
            + after.available_diamonds
            + after.held_diamonds
            + after.paid_out_diamonds,
        "[{b}] {after:?}"
    );
    assert_audit_clean(&suite, "after the chargeback").await;

    // 6. While the debt remains, no cash-out; tom, in debt himself, cannot gift.
    let refused = request_payout(&suite, "cash-2", 1_000).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Code::FailedPrecondition,
        "[{b}] {refused:?}"
    );
    assert_eq!(reason(&refused), "CREATOR_IN_DEBT", "[{b}] {refused:?}");
    let blocked = send(&suite, "tom-2", "tom", "rose", 1).await;
    assert_eq!(
        blocked.status,
        gifting_pb::SagaStatus::Rejected as i32,
        "[{b}] {blocked:?}"
    );

    // 7. Later gifts settle the debt first: hana's 2 galaxies mint 1,000 diamonds, 850 of
    //    which pay the debt; 150 are pending.
    let hana_tops_up = suite
        .clients
        .wallet_as("hana")
        .await
        .purchase_coins(wallet_pb::PurchaseCoinsRequest {
            idempotency_key: "buy-hana-2".into(),
            user_id: "hana".into(),
            package_id: "coins_5000".into(),
            currency_code: "USD".into(),
            payment_token: ovation_wallet::payment::TOKEN_OK.into(),
            expected_price: None,
            payment_method: None,
        })
        .await;
    assert!(hana_tops_up.is_ok(), "[{b}] {hana_tops_up:?}");
    let settling = send(&suite, "hana-2", "hana", "galaxy", 2).await;
    assert_eq!(settling.diamonds_credited, 1_000, "[{b}] {settling:?}");
    let settled = balance(&suite, "bella").await;
    assert_eq!(
        (
            settled.debt_diamonds,
            settled.pending_diamonds,
            settled.available_diamonds
        ),
        (0, 150, 0),
        "[{b}] {settled:?}"
    );
    assert_audit_clean(&suite, "after the debt is settled").await;

    // 8. An admin's fraud review reverses hana's first gift, returning her coins; eight
    //    concurrent requests with different keys make one reversal.
    let hana_before = suite.coins("hana").await;
    let answers = join_all((0..8).map(|i| {
        let clients = suite.clients.clone();
        let saga_id = honest.saga_id.clone();
        async move {
            clients
                .gifting_admin()
                .await
                .reverse_gift(gifting_pb::ReverseGiftRequest {
                    idempotency_key: format!("review-{i}"),
                    saga_id,
                    actor: String::new(),
                    reason: "fraud review fr_7".into(),
                    return_coins: true,
                })
                .await
        }
    }))
    .await;
    let accepted = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(accepted, 1, "[{b}] one reversal: {answers:?}");
    for refused in answers.iter().filter_map(|a| a.as_ref().err()) {
        assert_eq!(
            reason(refused),
            "GIFT_ALREADY_REVERSED",
            "[{b}] {refused:?}"
        );
    }
    let done = eventually(
        "the gift reversal being done",
        || async {
            suite
                .clients
                .gifting_admin()
                .await
                .get_sent_gift(gifting_pb::GetSentGiftRequest {
                    saga_id: honest.saga_id.clone(),
                })
                .await
                .expect("GetSentGift")
                .into_inner()
                .receipt
                .and_then(|r| r.reversal)
        },
        |r| {
            r.as_ref()
                .is_some_and(|r| r.state == gifting_pb::GiftReversalState::Done as i32)
        },
    )
    .await
    .expect("a reversal");
    assert_eq!(
        (done.clawed_back_diamonds, done.returned_coins),
        (150, 300),
        "[{b}] {done:?}"
    );
    assert_eq!(suite.coins("hana").await, hana_before + 300, "[{b}]");
    let reviewed = balance(&suite, "bella").await;
    assert_eq!(
        (reviewed.pending_diamonds, reviewed.debt_diamonds),
        (0, 0),
        "[{b}] {reviewed:?}"
    );
    assert_audit_clean(&suite, "after the gift reversal").await;
    suite.stop().await;
}

#[tokio::test]
async fn the_stolen_card_loop_is_closed_on_sqlite_and_postgres() {
    for db in ovation_testkit::databases().await {
        the_stolen_card_loop_is_closed(db).await;
    }
}
