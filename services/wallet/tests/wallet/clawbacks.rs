//! A reversed purchase's spent coins attributed to the buyer's debits, and the clawback
//! orders it makes for gifts, over real gRPC on SQLite and (when `OVATION_TEST_POSTGRES_URL`
//! is set) PostgreSQL. The attribution tests run with no payout (orders stay PENDING);
//! the delivery tests start a real payout service and wait for its answers.

use std::time::Duration;

use ovation_auth::Role;
use ovation_proto::payout as payout_pb;
use ovation_proto::wallet as pb;
use ovation_testkit::{Bearer, PayoutClient, WalletClient, databases, reason};
use ovation_wallet::WalletSettings;
use ovation_wallet::payment::TOKEN_OK;
use tonic::Code;

use crate::suite::*;

/// A gift's debit as the saga makes it: the saga id is the operation id.
fn gift(saga: &str, user: &str, coins: i64) -> pb::DebitCoinsRequest {
    pb::DebitCoinsRequest {
        saga_id: saga.into(),
        ..debit(saga, user, coins)
    }
}

fn reversal(purchase_id: &str, key: &str) -> pb::ReversePurchaseRequest {
    pb::ReversePurchaseRequest {
        idempotency_key: key.into(),
        purchase_id: purchase_id.into(),
        actor: String::new(),
        reason: "chargeback CB-1".into(),
    }
}

/// Every clawback order of `purchase_id` (all of them when empty), oldest first.
async fn orders(admin: &mut WalletClient, purchase_id: &str) -> Vec<pb::ClawbackOrder> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_clawback_orders(pb::ListClawbackOrdersRequest {
                purchase_id: purchase_id.into(),
                state: 0,
                page_size: 500,
                page_token,
            })
            .await
            .expect("clawback orders")
            .into_inner();
        all.extend(page.orders);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// (operation id, coins) of each order.
fn coins_by_debit(orders: &[pb::ClawbackOrder]) -> Vec<(String, i64)> {
    orders
        .iter()
        .map(|o| (o.operation_id.clone(), o.coins))
        .collect()
}

async fn purchase_now(admin: &mut WalletClient, purchase_id: &str) -> pb::Purchase {
    admin
        .get_purchase(pb::GetPurchaseRequest {
            purchase_id: purchase_id.into(),
        })
        .await
        .expect("purchase")
        .into_inner()
        .purchase
        .expect("purchase in the answer")
}

/// Polls `check` every 50 ms until it gives `Some`, for at most 20 s.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The worker at a test's pace: passes every 50 ms, retries after 20..200 ms.
fn fast_worker() -> WalletSettings {
    WalletSettings {
        clawback_interval_ms: 50,
        clawback_retry_base_ms: 20,
        clawback_retry_max_ms: 200,
        ..WalletSettings::default()
    }
}

/// The rule, exactly: the reversal's debt coins go to the debits posted after its credit,
/// in ledger order; a refunded debit is skipped, a hold capture and a debit without a saga
/// take coins but make no order, a debit before the purchase is never reached, and coins
/// still held reach nothing.
#[tokio::test]
async fn a_reversal_attributes_its_spent_coins_to_the_debits_after_its_credit() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let backend = suite.backend;
        let mut nora = suite.user("nora").await;
        let mut gifting = suite.gifting().await;
        let mut admin = suite.admin().await;
        open_account(&mut nora, "nora").await;
        let first = buy(&mut nora, "nora", "p0", "coins_100", TOKEN_OK).await;
        // All of the first purchase, spent on a gift before the second one.
        gifting
            .debit_coins(gift("s-before", "nora", first.coins_credited))
            .await
            .unwrap();
        let second = buy(&mut nora, "nora", "p1", "coins_1000", TOKEN_OK).await;
        gifting
            .debit_coins(gift("s-g1", "nora", 200))
            .await
            .unwrap();
        gifting
            .reserve_coins(reserve("h-1", "nora", 100, 60))
            .await
            .unwrap();
        gifting
            .capture_hold(pb::CaptureHoldRequest {
                idempotency_key: "cap-h-1".into(),
                operation_id: "h-1".into(),
                coins: None,
            })
            .await
            .unwrap();
        gifting
            .debit_coins(gift("s-g2", "nora", 300))
            .await
            .unwrap();
        gifting
            .refund_coins(pb::RefundCoinsRequest {
                idempotency_key: "ref-s-g2".into(),
                operation_id: "s-g2.refund".into(),
                debit_operation_id: "s-g2".into(),
                coins: None,
                note: "compensated".into(),
            })
            .await
            .unwrap();
        gifting
            .debit_coins(gift("s-g3", "nora", 400))
            .await
            .unwrap();
        gifting.debit_coins(debit("d-1", "nora", 50)).await.unwrap();
        gifting
            .reserve_coins(reserve("h-2", "nora", 30, 600))
            .await
            .unwrap();
        // Spent since the second purchase: 200 + 100 + 400 + 50 = 750; held: 30.
        let reversed = reverse(&mut admin, reversal(&second.purchase_id, "r1")).await;
        let r = reversed.reversal.expect("reversal recorded");
        assert_eq!(
            (r.clawed_back_coins, r.debt_coins),
            (second.coins_credited - 780, 780),
            "[{backend}] the balance covered all but the spent and the held coins"
        );
        assert_eq!(
            (
                r.attributed_coins,
                r.clawback_order_count,
                r.clawback_orders_done_count
            ),
            (750, 2, 0),
            "[{backend}] 750 coins reached debits (the 30 held reach none), two of them gifts"
        );
        let made = orders(&mut admin, &second.purchase_id).await;
        assert_eq!(
            coins_by_debit(&made),
            vec![("s-g1".to_string(), 200), ("s-g3".to_string(), 400)],
            "[{backend}] one order per gift reached, oldest first"
        );
        for order in &made {
            assert_eq!(
                order.clawback_id,
                format!("purchase:{}:{}", second.purchase_id, order.operation_id)
            );
            assert_eq!(order.user_id, "nora");
            assert_eq!(order.state, pb::ClawbackOrderState::Pending as i32);
            assert_eq!((order.diamonds, order.applied_coins), (0, 0));
            assert!(order.done_time.is_none());
        }
        assert!(
            orders(&mut admin, &first.purchase_id).await.is_empty(),
            "[{backend}] the first purchase was not reversed"
        );
        // The filters and pages.
        let applied = admin
            .list_clawback_orders(pb::ListClawbackOrdersRequest {
                state: pb::ClawbackOrderState::Applied as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(applied.orders.is_empty(), "[{backend}] none applied");
        let page = admin
            .list_clawback_orders(pb::ListClawbackOrdersRequest {
                page_size: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.orders.len(), 1);
        let rest = admin
            .list_clawback_orders(pb::ListClawbackOrdersRequest {
                page_size: 1,
                page_token: page.next_page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (
                rest.orders[0].operation_id.as_str(),
                rest.next_page_token.as_str()
            ),
            ("s-g3", ""),
            "[{backend}] the second page is the last"
        );
        let bad = admin
            .list_clawback_orders(pb::ListClawbackOrdersRequest {
                purchase_id: "not an id!".into(),
                state: 9,
                page_size: -1,
                page_token: "garbage".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument, "[{backend}] {bad:?}");
        for field in ["purchase_id", "state", "page_size", "page_token"] {
            assert!(
                bad.message().contains(field),
                "[{backend}] {field}: {bad:?}"
            );
        }
        let denied = nora
            .list_clawback_orders(pb::ListClawbackOrdersRequest::default())
            .await
            .unwrap_err();
        assert_eq!(
            denied.code(),
            Code::PermissionDenied,
            "[{backend}] admins only"
        );
        assert_ledger_sound(&mut admin, backend).await;
        suite.stop().await;
    }
}

/// Two purchases whose coins went into one gift, both reversed: the gift's coins are
/// attributed once in all, the later reversal taking what the earlier one left.
#[tokio::test]
async fn two_reversals_never_attribute_the_same_coins_twice() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let backend = suite.backend;
        let mut omar = suite.user("omar").await;
        let mut gifting = suite.gifting().await;
        let mut admin = suite.admin().await;
        open_account(&mut omar, "omar").await;
        let a = buy(&mut omar, "omar", "pa", "coins_500", TOKEN_OK).await;
        let b = buy(&mut omar, "omar", "pb", "coins_500", TOKEN_OK).await;
        let both = a.coins_credited + b.coins_credited;
        // One gift spends all but 100 of both purchases.
        let spent = both - 100;
        gifting
            .debit_coins(gift("s-big", "omar", spent))
            .await
            .unwrap();

        let ra = reverse(&mut admin, reversal(&a.purchase_id, "ra"))
            .await
            .reversal
            .unwrap();
        // 100 were left: the rest of a's coins were spent.
        assert_eq!(ra.debt_coins, a.coins_credited - 100, "[{backend}]");
        assert_eq!(ra.attributed_coins, ra.debt_coins, "[{backend}]");
        let rb = reverse(&mut admin, reversal(&b.purchase_id, "rb"))
            .await
            .reversal
            .unwrap();
        assert_eq!(
            (rb.clawed_back_coins, rb.debt_coins),
            (0, b.coins_credited),
            "[{backend}] nothing was left to claw back"
        );
        assert_eq!(
            rb.attributed_coins,
            spent - ra.attributed_coins,
            "[{backend}] the later reversal takes only what the earlier left of the gift"
        );
        let all = orders(&mut admin, "").await;
        assert_eq!(
            coins_by_debit(&all),
            vec![
                ("s-big".to_string(), ra.attributed_coins),
                ("s-big".to_string(), rb.attributed_coins)
            ],
            "[{backend}] one order per reversal, never more coins than the gift"
        );
        assert_eq!(
            all.iter().map(|o| o.coins).sum::<i64>(),
            spent,
            "[{backend}] the gift's coins, attributed exactly once"
        );
        assert_ledger_sound(&mut admin, backend).await;
        suite.stop().await;
    }
}

/// Twenty reversals of one purchase at once, under different keys: one reversal, one set
/// of orders (PostgreSQL is where this race can be lost).
#[tokio::test]
async fn concurrent_reversals_make_one_set_of_orders() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let backend = suite.backend;
        let mut pia = suite.user("pia").await;
        let mut gifting = suite.gifting().await;
        let admin = suite.admin().await;
        open_account(&mut pia, "pia").await;
        let purchase = buy(&mut pia, "pia", "p", "coins_1000", TOKEN_OK).await;
        for (saga, coins) in [("s-1", 300), ("s-2", 200), ("s-3", 100)] {
            gifting.debit_coins(gift(saga, "pia", coins)).await.unwrap();
        }
        let calls: Vec<_> = (0..20)
            .map(|i| {
                let mut admin = admin.clone();
                let request = reversal(&purchase.purchase_id, &format!("race-{i}"));
                tokio::spawn(async move { admin.reverse_purchase(request).await })
            })
            .collect();
        let mut reversed = 0;
        for call in calls {
            match call.await.unwrap() {
                Ok(_) => reversed += 1,
                Err(status) => assert_eq!(
                    (status.code(), reason(&status).as_str()),
                    (Code::FailedPrecondition, "PURCHASE_NOT_COMPLETED"),
                    "[{backend}] {status:?}"
                ),
            }
        }
        assert_eq!(reversed, 1, "[{backend}] one reversal");
        let mut admin = admin;
        let made = orders(&mut admin, &purchase.purchase_id).await;
        assert_eq!(
            coins_by_debit(&made),
            vec![
                ("s-1".to_string(), 300),
                ("s-2".to_string(), 200),
                ("s-3".to_string(), 100)
            ],
            "[{backend}] one set of orders"
        );
        let r = purchase_now(&mut admin, &purchase.purchase_id)
            .await
            .reversal
            .unwrap();
        assert_eq!(
            (r.debt_coins, r.attributed_coins, r.clawback_order_count),
            (600, 600, 3),
            "[{backend}]"
        );
        assert_ledger_sound(&mut admin, backend).await;
        suite.stop().await;
    }
}

/// A reversal that reaches more debits than one transaction attributes to goes on in the
/// worker's transactions until every spent coin is attributed.
#[tokio::test]
async fn a_long_walk_is_finished_by_the_worker() {
    const GIFTS: usize = 640;
    for db in databases().await {
        let suite = Suite::start_with(&db, fast_worker()).await;
        let backend = suite.backend;
        let mut quinn = suite.user("quinn").await;
        let mut gifting = suite.gifting().await;
        let mut admin = suite.admin().await;
        open_account(&mut quinn, "quinn").await;
        let purchase = buy(&mut quinn, "quinn", "p", "coins_1000", TOKEN_OK).await;
        for chunk in (0..GIFTS).collect::<Vec<_>>().chunks(160) {
            let items = chunk
                .iter()
                .map(|i| pb::DebitCoinsItem {
                    operation_id: format!("s-{i:04}"),
                    user_id: "quinn".into(),
                    coins: 1,
                    saga_id: format!("s-{i:04}"),
                    note: String::new(),
                })
                .collect();
            let answer = gifting
                .debit_coins_batch(pb::DebitCoinsBatchRequest { items })
                .await
                .unwrap()
                .into_inner();
            assert!(
                answer
                    .results
                    .iter()
                    .all(|r| matches!(r.outcome, Some(pb::debit_coins_result::Outcome::Debit(_))))
            );
        }
        let r = reverse(&mut admin, reversal(&purchase.purchase_id, "r"))
            .await
            .reversal
            .unwrap();
        assert_eq!(r.debt_coins, GIFTS as i64, "[{backend}]");
        assert_eq!(
            (r.attributed_coins, r.clawback_order_count),
            (500, 500),
            "[{backend}] one transaction attributes to at most 500 debits"
        );
        let purchase_id = purchase.purchase_id.clone();
        let done = eventually("the worker finishes the walk", || {
            let mut admin = admin.clone();
            let purchase_id = purchase_id.clone();
            async move {
                let r = purchase_now(&mut admin, &purchase_id).await.reversal?;
                (r.attributed_coins == GIFTS as i64).then_some(r)
            }
        })
        .await;
        assert_eq!(done.clawback_order_count, GIFTS as i32, "[{backend}]");
        let made = orders(&mut admin, &purchase.purchase_id).await;
        let mut debits: Vec<String> = made.iter().map(|o| o.operation_id.clone()).collect();
        debits.sort();
        debits.dedup();
        assert_eq!(debits.len(), GIFTS, "[{backend}] each gift once");
        assert!(made.iter().all(|o| o.coins == 1), "[{backend}]");
        suite.stop().await;
    }
}

// ---- delivery to a real payout service ------------------------------------------------

/// The creator's share in these tests: half.
const SHARE_BPS: i32 = 5_000;

async fn credit(payout_as_gifting: &mut PayoutClient, saga: &str, creator: &str, coins: i64) {
    payout_as_gifting
        .credit_diamonds(payout_pb::CreditDiamondsRequest {
            idempotency_key: format!("credit-{saga}"),
            operation_id: saga.into(),
            creator_id: creator.into(),
            coins,
            creator_share_bps: SHARE_BPS,
            sender_user_id: String::new(),
            stream_id: String::new(),
            gift_id: String::new(),
            gift_version: 0,
        })
        .await
        .expect("credit");
}

async fn payout_suite(db: &ovation_testkit::TestDatabase) -> Suite {
    Suite::start_custom(
        db,
        SuiteOptions {
            settings: fast_worker(),
            payout: true,
            ..SuiteOptions::default()
        },
    )
    .await
}

/// The order of `purchase_id` for debit `saga`, once it is no longer PENDING.
async fn settled_order(admin: &WalletClient, purchase_id: &str, saga: &str) -> pb::ClawbackOrder {
    eventually(&format!("the order for {saga} is answered"), || {
        let mut admin = admin.clone();
        async move {
            orders(&mut admin, purchase_id).await.into_iter().find(|o| {
                o.operation_id == saga && o.state != pb::ClawbackOrderState::Pending as i32
            })
        }
    })
    .await
}

async fn register(suite: &Suite, creator: &str) {
    suite
        .payout(Bearer::role(creator, Role::Creator))
        .await
        .register_creator(payout_pb::RegisterCreatorRequest {
            idempotency_key: format!("reg-{creator}"),
            creator_id: creator.into(),
            display_name: format!("Creator {creator}"),
        })
        .await
        .expect("creator registered");
}

/// Orders reach payout and take back floor(coins × share / 10000) of each gift's diamonds;
/// payout's own records agree.
#[tokio::test]
async fn orders_are_delivered_and_take_back_the_gifts_diamonds() {
    for db in databases().await {
        let suite = payout_suite(&db).await;
        let backend = suite.backend;
        register(&suite, "cara").await;
        let mut payout_gifting = suite
            .payout(Bearer::role("gifting", Role::GiftingService))
            .await;
        let mut payout_admin = suite.payout(Bearer::admin()).await;
        let mut rita = suite.user("rita").await;
        let mut gifting = suite.gifting().await;
        let mut admin = suite.admin().await;
        open_account(&mut rita, "rita").await;
        let purchase = buy(&mut rita, "rita", "p", "coins_1000", TOKEN_OK).await;
        for (saga, coins) in [("s-a", 401), ("s-b", 200)] {
            gifting
                .debit_coins(gift(saga, "rita", coins))
                .await
                .unwrap();
            credit(&mut payout_gifting, saga, "cara", coins).await;
        }
        reverse(&mut admin, reversal(&purchase.purchase_id, "r")).await;
        for (saga, coins) in [("s-a", 401), ("s-b", 200)] {
            let order = settled_order(&admin, &purchase.purchase_id, saga).await;
            assert_eq!(
                (order.state, order.applied_coins, order.diamonds),
                (
                    pb::ClawbackOrderState::Applied as i32,
                    coins,
                    coins * i64::from(SHARE_BPS) / 10_000
                ),
                "[{backend}] {saga}: {order:?}"
            );
            assert!(order.done_time.is_some(), "[{backend}]");
        }
        let r = purchase_now(&mut admin, &purchase.purchase_id)
            .await
            .reversal
            .unwrap();
        assert_eq!(
            (r.clawback_order_count, r.clawback_orders_done_count),
            (2, 2),
            "[{backend}]"
        );
        let clawbacks = payout_admin
            .list_clawbacks(payout_pb::ListClawbacksRequest {
                operation_ids: vec!["s-a".into(), "s-b".into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .clawbacks;
        let mut seen: Vec<_> = clawbacks
            .iter()
            .map(|c| {
                (
                    c.clawback_id.clone(),
                    c.cause,
                    c.cause_id.clone(),
                    c.coins,
                    c.diamonds,
                )
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                (
                    format!("purchase:{}:s-a", purchase.purchase_id),
                    payout_pb::ClawbackCause::PurchaseReversal as i32,
                    purchase.purchase_id.clone(),
                    401,
                    200
                ),
                (
                    format!("purchase:{}:s-b", purchase.purchase_id),
                    payout_pb::ClawbackCause::PurchaseReversal as i32,
                    purchase.purchase_id.clone(),
                    200,
                    100
                ),
            ],
            "[{backend}] payout applied each once"
        );
        let balance = payout_admin
            .get_diamond_balance(payout_pb::GetDiamondBalanceRequest {
                creator_id: "cara".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .balance
            .unwrap();
        assert_eq!(
            (
                balance.clawed_back_diamonds,
                balance.lifetime_earned_diamonds
            ),
            (300, 0),
            "[{backend}] every diamond the gifts minted (200 + 100) was taken back"
        );
        suite.stop().await;
    }
}

/// A gift whose credit has not reached payout yet (the saga still crediting): its order
/// waits, and is applied once the credit exists.
#[tokio::test]
async fn an_order_waits_for_a_credit_still_to_come() {
    for db in databases().await {
        let suite = payout_suite(&db).await;
        let backend = suite.backend;
        register(&suite, "cara").await;
        let mut payout_gifting = suite
            .payout(Bearer::role("gifting", Role::GiftingService))
            .await;
        let mut sam = suite.user("sam").await;
        let mut gifting = suite.gifting().await;
        let mut admin = suite.admin().await;
        open_account(&mut sam, "sam").await;
        let purchase = buy(&mut sam, "sam", "p", "coins_1000", TOKEN_OK).await;
        gifting
            .debit_coins(gift("s-late", "sam", 600))
            .await
            .unwrap();
        reverse(&mut admin, reversal(&purchase.purchase_id, "r")).await;
        let purchase_id = purchase.purchase_id.clone();
        let waiting = eventually("the order was tried and refused", || {
            let mut admin = admin.clone();
            let purchase_id = purchase_id.clone();
            async move {
                orders(&mut admin, &purchase_id)
                    .await
                    .into_iter()
                    .find(|o| o.attempts >= 2)
            }
        })
        .await;
        assert_eq!(
            waiting.state,
            pb::ClawbackOrderState::Pending as i32,
            "[{backend}] {waiting:?}"
        );
        assert!(
            waiting.last_error.contains("no credit"),
            "[{backend}] {waiting:?}"
        );
        credit(&mut payout_gifting, "s-late", "cara", 600).await;
        let order = settled_order(&admin, &purchase.purchase_id, "s-late").await;
        assert_eq!(
            (order.state, order.diamonds, order.last_error.as_str()),
            (pb::ClawbackOrderState::Applied as i32, 300, ""),
            "[{backend}] {order:?}"
        );
        suite.stop().await;
    }
}

/// A gift compensated after the reversal (its debit refunded: no credit will ever exist):
/// its order ends NO_CREDIT, and takes nothing.
#[tokio::test]
async fn a_refunded_gifts_order_ends_with_no_credit() {
    for db in databases().await {
        let suite = payout_suite(&db).await;
        let backend = suite.backend;
        let mut tess = suite.user("tess").await;
        let mut gifting = suite.gifting().await;
        let mut admin = suite.admin().await;
        open_account(&mut tess, "tess").await;
        let purchase = buy(&mut tess, "tess", "p", "coins_1000", TOKEN_OK).await;
        gifting
            .debit_coins(gift("s-void", "tess", 700))
            .await
            .unwrap();
        reverse(&mut admin, reversal(&purchase.purchase_id, "r")).await;
        gifting
            .refund_coins(pb::RefundCoinsRequest {
                idempotency_key: "ref".into(),
                operation_id: "s-void.refund".into(),
                debit_operation_id: "s-void".into(),
                coins: None,
                note: "creator suspended".into(),
            })
            .await
            .unwrap();
        let order = settled_order(&admin, &purchase.purchase_id, "s-void").await;
        assert_eq!(
            (order.state, order.diamonds, order.applied_coins),
            (pb::ClawbackOrderState::NoCredit as i32, 0, 0),
            "[{backend}] {order:?}"
        );
        let r = purchase_now(&mut admin, &purchase.purchase_id)
            .await
            .reversal
            .unwrap();
        assert_eq!(r.clawback_orders_done_count, 1, "[{backend}]");
        assert_ledger_sound(&mut admin, backend).await;
        suite.stop().await;
    }
}

/// Payout down when the purchase is reversed: the order stays PENDING, retried, its
/// failures recorded, and is applied once payout is back on its address.
#[tokio::test]
async fn orders_outlast_a_payout_outage() {
    for db in databases().await {
        let mut suite = payout_suite(&db).await;
        let backend = suite.backend;
        register(&suite, "cara").await;
        let mut payout_gifting = suite
            .payout(Bearer::role("gifting", Role::GiftingService))
            .await;
        let mut uma = suite.user("uma").await;
        let mut gifting = suite.gifting().await;
        let mut admin = suite.admin().await;
        open_account(&mut uma, "uma").await;
        let purchase = buy(&mut uma, "uma", "p", "coins_1000", TOKEN_OK).await;
        gifting
            .debit_coins(gift("s-out", "uma", 800))
            .await
            .unwrap();
        credit(&mut payout_gifting, "s-out", "cara", 800).await;
        suite.stop_payout().await;
        reverse(&mut admin, reversal(&purchase.purchase_id, "r")).await;
        let purchase_id = purchase.purchase_id.clone();
        let failing = eventually("the order failed a few times", || {
            let mut admin = admin.clone();
            let purchase_id = purchase_id.clone();
            async move {
                orders(&mut admin, &purchase_id)
                    .await
                    .into_iter()
                    .find(|o| o.attempts >= 3)
            }
        })
        .await;
        assert_eq!(
            failing.state,
            pb::ClawbackOrderState::Pending as i32,
            "[{backend}] {failing:?}"
        );
        assert!(!failing.last_error.is_empty(), "[{backend}] {failing:?}");
        suite.start_payout().await;
        let order = settled_order(&admin, &purchase.purchase_id, "s-out").await;
        assert_eq!(
            (order.state, order.diamonds),
            (pb::ClawbackOrderState::Applied as i32, 400),
            "[{backend}] {order:?}"
        );
        suite.stop().await;
    }
}

/// Coins a refund gives back to a user in debt pay the debt first, as a purchase's do: a
/// gift reversal returning coins a chargeback already counted as debt gives the buyer
/// nothing to spend (issue 14).
#[tokio::test]
async fn a_refund_to_a_user_in_debt_settles_the_debt_first() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let backend = suite.backend;
        let mut rex = suite.user("rex").await;
        let mut gifting = suite.gifting().await;
        let mut admin = suite.admin().await;
        open_account(&mut rex, "rex").await;
        let bought = buy(&mut rex, "rex", "p0", "coins_1000", TOKEN_OK).await;
        let (big, small) = (600, 200);
        gifting
            .debit_coins(gift("s-big", "rex", big))
            .await
            .unwrap();
        gifting
            .debit_coins(gift("s-small", "rex", small))
            .await
            .unwrap();
        let reversed = reverse(&mut admin, reversal(&bought.purchase_id, "r1")).await;
        let debt = reversed.reversal.expect("reversal").debt_coins;
        assert_eq!(debt, big + small, "[{backend}] the spent coins became debt");

        // The smaller gift's coins come back: all of them pay the debt.
        let refund = |op: &str, debit: &str| pb::RefundCoinsRequest {
            idempotency_key: format!("k-{op}"),
            operation_id: op.into(),
            debit_operation_id: debit.into(),
            coins: None,
            note: "gift reversed".into(),
        };
        let answer = gifting
            .refund_coins(refund("s-small.reversal", "s-small"))
            .await
            .unwrap()
            .into_inner()
            .refund
            .expect("refund");
        assert_eq!(answer.available_coins_after, 0, "[{backend}] {answer:?}");
        let b = balance(&mut rex, "rex").await;
        assert_eq!(
            (b.posted_coins, b.debt_coins),
            (0, debt - small),
            "[{backend}] the refund went to the debt"
        );
        // A refund larger than what is left of the debt pays it off; the rest is spendable.
        let top_up = buy(&mut rex, "rex", "p1", "coins_1000", TOKEN_OK).await;
        let after_top_up = balance(&mut rex, "rex").await;
        assert_eq!(
            after_top_up.debt_coins, 0,
            "[{backend}] the purchase settled the rest"
        );
        gifting
            .debit_coins(gift("s-more", "rex", 100))
            .await
            .unwrap();
        let before = balance(&mut rex, "rex").await;
        gifting
            .refund_coins(refund("s-more.refund", "s-more"))
            .await
            .unwrap();
        let after = balance(&mut rex, "rex").await;
        assert_eq!(
            (after.posted_coins, after.debt_coins),
            (before.posted_coins + 100, 0),
            "[{backend}] without debt a refund is spendable ({} credited by the top-up)",
            top_up.coins_credited
        );
        assert_ledger_sound(&mut admin, backend).await;
        suite.stop().await;
    }
}
