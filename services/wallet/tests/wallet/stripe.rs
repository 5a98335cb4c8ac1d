//! Card purchases through Stripe, over real gRPC, with an in-test server standing for
//! Stripe ([`crate::fake_stripe`]) and signed webhooks sent to the wallet's webhook port, on
//! SQLite and (when `OVATION_TEST_POSTGRES_URL` is set) PostgreSQL.

use std::time::{Duration, Instant};

use ovation_proto::wallet as pb;
use ovation_store::Db;
use ovation_testkit::{TestDatabase, WalletClient, databases, reason};
use ovation_wallet::WalletSettings;
use ovation_webhooks::stripe_signature::sign;
use serde_json::{Value, json};
use tonic::Code;

use crate::fake_stripe::*;
use crate::suite::*;

async fn stripe_suite(db: &TestDatabase, stripe: &FakeStripe) -> Suite {
    Suite::start_custom(
        db,
        SuiteOptions {
            settings: WalletSettings {
                charge_retry_base_ms: 50,
                recovery_interval_ms: 100,
                ..WalletSettings::default()
            },
            stripe: Some(StripeOptions {
                api_base: stripe.base.clone(),
                secret_key: SECRET_KEY.into(),
                webhook_secret: WEBHOOK_SECRET.into(),
                // Below the lost answer's delay: the slow card's first answer is lost.
                request_timeout_ms: 500,
            }),
            ..SuiteOptions::default()
        },
    )
    .await
}

fn card_request(user: &str, key: &str, payment_method_id: &str) -> pb::PurchaseCoinsRequest {
    pb::PurchaseCoinsRequest {
        payment_token: String::new(),
        payment_method: Some(pb::PaymentMethod {
            method: Some(pb::payment_method::Method::StripeCard(pb::StripeCard {
                payment_method_id: payment_method_id.into(),
            })),
        }),
        ..purchase_request(user, key, "coins_100", "")
    }
}

async fn buy_by_card(client: &mut WalletClient, user: &str, key: &str, pm: &str) -> pb::Purchase {
    client
        .purchase_coins(card_request(user, key, pm))
        .await
        .expect("purchase answers")
        .into_inner()
        .purchase
        .expect("a purchase")
}

async fn get_purchase(client: &mut WalletClient, id: &str) -> pb::Purchase {
    client
        .get_purchase(pb::GetPurchaseRequest {
            purchase_id: id.into(),
        })
        .await
        .expect("purchase")
        .into_inner()
        .purchase
        .expect("a purchase")
}

/// The purchase once it left PENDING (the recovery worker retries it), within 10 s.
async fn settled(client: &mut WalletClient, id: &str) -> pb::Purchase {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let purchase = get_purchase(client, id).await;
        if purchase.state != pb::PurchaseState::Pending as i32 || Instant::now() > deadline {
            return purchase;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn event(id: &str, kind: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id, "object": "event", "type": kind, "created": now_secs(),
        "livemode": false, "api_version": "2025-04-30.basil",
        "data": {"object": object},
    }))
    .unwrap()
}

fn dispute(intent: &Value, dispute_id: &str) -> Value {
    json!({"id": dispute_id, "object": "dispute", "amount": intent["amount"],
           "currency": intent["currency"], "charge": intent["latest_charge"],
           "payment_intent": intent["id"], "reason": "fraudulent",
           "status": "needs_response"})
}

fn refunded_charge(intent: &Value) -> Value {
    json!({"id": intent["latest_charge"], "object": "charge", "amount": intent["amount"],
           "amount_refunded": intent["amount"], "refunded": true,
           "currency": intent["currency"], "payment_intent": intent["id"]})
}

/// POSTs `body` to the wallet's webhook with `signature` as the Stripe-Signature header.
async fn deliver(suite: &Suite, body: &[u8], signature: Option<String>) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(suite.webhook_url())
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("Stripe-Signature", signature);
    }
    let response = request.send().await.expect("the webhook answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

async fn deliver_signed(suite: &Suite, body: &[u8]) -> (u16, String) {
    deliver(suite, body, Some(sign(WEBHOOK_SECRET, now_secs(), body))).await
}

async fn stripe_events(suite: &Suite) -> i64 {
    let db = Db::connect(&suite.wallet_db_url, &Default::default())
        .await
        .unwrap();
    let mut conn = db.conn().await.unwrap();
    let n = ovation_wallet::store::count_provider_events(&mut conn, "stripe")
        .await
        .unwrap();
    drop(conn);
    db.close().await;
    n
}

#[tokio::test]
async fn a_card_is_charged_once_and_credited() {
    let stripe = FakeStripe::start().await;
    for db in databases().await {
        let suite = stripe_suite(&db, &stripe).await;
        let mut ann = suite.user("ann").await;
        open_account(&mut ann, "ann").await;
        let bought = buy_by_card(&mut ann, "ann", "card-1", PM_OK).await;
        let backend = suite.backend;
        assert_eq!(
            bought.state,
            pb::PurchaseState::Completed as i32,
            "[{backend}] {bought:?}"
        );
        assert_eq!(bought.payment_provider, pb::PaymentProvider::Stripe as i32);
        assert!(bought.provider_reference.starts_with("pi_"), "{bought:?}");
        assert_eq!(bought.next_action, None);
        let intent = stripe.intent(&bought.provider_reference);
        assert_eq!(intent["amount"], json!(139));
        assert_eq!(intent["currency"], json!("usd"));
        assert_eq!(intent["metadata"]["purchase_id"], json!(bought.purchase_id));
        // The same request again replays the purchase; Stripe is not asked again.
        let again = buy_by_card(&mut ann, "ann", "card-1", PM_OK).await;
        assert_eq!(again.purchase_id, bought.purchase_id);
        assert_eq!(
            stripe.intents_created(&bought.purchase_id),
            1,
            "[{backend}]"
        );
        assert_eq!(
            balance(&mut ann, "ann").await.available_coins,
            bought.coins_credited,
            "[{backend}] credited once"
        );
        suite.stop().await;
    }
}

#[tokio::test]
async fn a_declined_card_is_declined_with_stripes_code() {
    let stripe = FakeStripe::start().await;
    for db in databases().await {
        let suite = stripe_suite(&db, &stripe).await;
        let mut bo = suite.user("bo").await;
        open_account(&mut bo, "bo").await;
        let declined = buy_by_card(&mut bo, "bo", "card-1", PM_DECLINE).await;
        assert_eq!(
            declined.state,
            pb::PurchaseState::Declined as i32,
            "{declined:?}"
        );
        assert_eq!(declined.decline_reason, "generic_decline");
        assert_eq!(balance(&mut bo, "bo").await.available_coins, 0);
        assert_eq!(stripe.intents_created(&declined.purchase_id), 1);
        suite.stop().await;
    }
}

#[tokio::test]
async fn an_ambiguous_answer_is_retried_with_the_same_key_and_charged_once() {
    let stripe = FakeStripe::start().await;
    for db in databases().await {
        let suite = stripe_suite(&db, &stripe).await;
        let backend = suite.backend;
        for (user, card) in [("cy", PM_UNAVAILABLE_ONCE), ("di", PM_SLOW_ONCE)] {
            let mut client = suite.user(user).await;
            open_account(&mut client, user).await;
            let first = buy_by_card(&mut client, user, "card-1", card).await;
            assert_eq!(
                first.state,
                pb::PurchaseState::Pending as i32,
                "[{backend}] {card}: the first answer is unknown: {first:?}"
            );
            let done = settled(&mut client, &first.purchase_id).await;
            assert_eq!(
                done.state,
                pb::PurchaseState::Completed as i32,
                "[{backend}] {card}: {done:?}"
            );
            assert!(
                stripe.requests(&first.purchase_id) >= 2,
                "[{backend}] {card}: retried under the purchase id"
            );
            assert_eq!(
                stripe.intents_created(&first.purchase_id),
                1,
                "[{backend}] {card}: Stripe charged once"
            );
            assert_eq!(
                balance(&mut client, user).await.available_coins,
                done.coins_credited,
                "[{backend}] {card}: credited once"
            );
        }
        suite.stop().await;
    }
}

#[tokio::test]
async fn authentication_leaves_the_purchase_pending_until_the_webhook_completes_it_once() {
    let stripe = FakeStripe::start().await;
    for db in databases().await {
        let suite = stripe_suite(&db, &stripe).await;
        let backend = suite.backend;
        let mut eve = suite.user("eve").await;
        open_account(&mut eve, "eve").await;
        let waiting = buy_by_card(&mut eve, "eve", "card-1", PM_3DS).await;
        assert_eq!(
            waiting.state,
            pb::PurchaseState::Pending as i32,
            "[{backend}] {waiting:?}"
        );
        let action = waiting
            .next_action
            .clone()
            .expect("what the client must do");
        assert_eq!(action.r#type, "use_stripe_sdk");
        assert_eq!(
            action.client_secret,
            format!("{}_secret_test", waiting.provider_reference)
        );
        assert_eq!(balance(&mut eve, "eve").await.available_coins, 0);

        // The customer authenticates; Stripe sends payment_intent.succeeded, twice at once
        // and once more later.
        let intent = stripe.authenticate(&waiting.provider_reference);
        let body = event(
            &format!("evt_ok_{backend}"),
            "payment_intent.succeeded",
            intent,
        );
        let (a, b) = tokio::join!(deliver_signed(&suite, &body), deliver_signed(&suite, &body));
        assert_eq!((a.0, b.0), (200, 200), "[{backend}] {a:?} {b:?}");
        assert_eq!(deliver_signed(&suite, &body).await.0, 200);

        let done = get_purchase(&mut eve, &waiting.purchase_id).await;
        assert_eq!(
            done.state,
            pb::PurchaseState::Completed as i32,
            "[{backend}] {done:?}"
        );
        assert_eq!(done.next_action, None, "settled: nothing left to do");
        assert_eq!(
            balance(&mut eve, "eve").await.available_coins,
            done.coins_credited,
            "[{backend}] credited once"
        );
        assert_eq!(
            stripe_events(&suite).await,
            1,
            "[{backend}] one event applied"
        );
        assert_eq!(stripe.intents_created(&waiting.purchase_id), 1);
        suite.stop().await;
    }
}

#[tokio::test]
async fn disputes_and_refunds_reverse_once_whatever_the_delivery_order() {
    let stripe = FakeStripe::start().await;
    for db in databases().await {
        let suite = stripe_suite(&db, &stripe).await;
        let backend = suite.backend;
        let mut fay = suite.user("fay").await;
        open_account(&mut fay, "fay").await;
        let waiting = buy_by_card(&mut fay, "fay", "card-1", PM_3DS).await;
        let intent = stripe.authenticate(&waiting.provider_reference);

        // The dispute arrives before the purchase completed: refused unrecorded (Stripe
        // delivers it again later).
        let disputed = event(
            &format!("evt_dp_{backend}"),
            "charge.dispute.created",
            dispute(&intent, "dp_1"),
        );
        let (early, text) = deliver_signed(&suite, &disputed).await;
        assert_eq!(early, 409, "[{backend}] {text}");
        assert_eq!(
            stripe_events(&suite).await,
            0,
            "[{backend}] nothing recorded"
        );
        assert_eq!(
            get_purchase(&mut fay, &waiting.purchase_id).await.state,
            pb::PurchaseState::Pending as i32
        );

        let succeeded = event(
            &format!("evt_ok_{backend}"),
            "payment_intent.succeeded",
            intent.clone(),
        );
        assert_eq!(deliver_signed(&suite, &succeeded).await.0, 200);
        // The redelivered dispute, twice at once and once more: one reversal.
        let (a, b) = tokio::join!(
            deliver_signed(&suite, &disputed),
            deliver_signed(&suite, &disputed)
        );
        assert_eq!((a.0, b.0), (200, 200), "[{backend}] {a:?} {b:?}");
        assert_eq!(deliver_signed(&suite, &disputed).await.0, 200);
        // A refund of the same charge (another event) finds it reversed already.
        let refunded = event(
            &format!("evt_rf_{backend}"),
            "charge.refunded",
            refunded_charge(&intent),
        );
        assert_eq!(deliver_signed(&suite, &refunded).await.0, 200);
        // And a late payment_intent.succeeded changes nothing.
        let late = event(
            &format!("evt_ok2_{backend}"),
            "payment_intent.succeeded",
            intent,
        );
        assert_eq!(deliver_signed(&suite, &late).await.0, 200);

        let reversed = get_purchase(&mut fay, &waiting.purchase_id).await;
        assert_eq!(
            reversed.state,
            pb::PurchaseState::Reversed as i32,
            "[{backend}] {reversed:?}"
        );
        let reversal = reversed.reversal.expect("the reversal");
        assert_eq!(reversal.actor, "stripe");
        assert!(
            reversal.reason.contains("charge.dispute.created"),
            "{}",
            reversal.reason
        );
        assert_eq!(reversal.clawed_back_coins, reversed.coins_credited);
        let after = balance(&mut fay, "fay").await;
        assert_eq!(
            (after.available_coins, after.debt_coins),
            (0, 0),
            "[{backend}] reversed once"
        );
        assert_eq!(
            stripe_events(&suite).await,
            4,
            "[{backend}] four distinct events"
        );

        // A full refund reverses a completed purchase too.
        let mut gus = suite.user("gus").await;
        open_account(&mut gus, "gus").await;
        let bought = buy_by_card(&mut gus, "gus", "card-1", PM_OK).await;
        let charged = stripe.intent(&bought.provider_reference);
        let refund = event(
            &format!("evt_rf2_{backend}"),
            "charge.refunded",
            refunded_charge(&charged),
        );
        assert_eq!(deliver_signed(&suite, &refund).await.0, 200);
        let refunded = get_purchase(&mut gus, &bought.purchase_id).await;
        assert_eq!(
            refunded.state,
            pb::PurchaseState::Reversed as i32,
            "[{backend}] {refunded:?}"
        );
        assert_eq!(balance(&mut gus, "gus").await.available_coins, 0);
        suite.stop().await;
    }
}

#[tokio::test]
async fn unsigned_forged_or_stale_webhooks_are_refused_with_nothing_written() {
    let stripe = FakeStripe::start().await;
    for db in databases().await {
        let suite = stripe_suite(&db, &stripe).await;
        let backend = suite.backend;
        let mut hal = suite.user("hal").await;
        open_account(&mut hal, "hal").await;
        let waiting = buy_by_card(&mut hal, "hal", "card-1", PM_3DS).await;
        let intent = stripe.authenticate(&waiting.provider_reference);
        let body = event("evt_forged", "payment_intent.succeeded", intent);
        let now = now_secs();
        let mut tampered = body.clone();
        tampered.extend_from_slice(b" ");
        for (what, status, body, header) in [
            ("missing header", 400, body.clone(), None),
            (
                "another secret",
                400,
                body.clone(),
                Some(sign("whsec_other", now, &body)),
            ),
            (
                "stale timestamp",
                400,
                body.clone(),
                Some(sign(WEBHOOK_SECRET, now - 600, &body)),
            ),
            (
                "tampered body",
                400,
                tampered,
                Some(sign(WEBHOOK_SECRET, now, &body)),
            ),
            (
                "garbage header",
                400,
                body.clone(),
                Some("t=x,v1=y".to_owned()),
            ),
        ] {
            let (got, text) = deliver(&suite, &body, header).await;
            assert_eq!(got, status, "[{backend}] {what}: {text}");
        }
        let get = reqwest::get(suite.webhook_url()).await.unwrap();
        assert_eq!(get.status().as_u16(), 405, "POST only");
        let big = vec![b' '; ovation_webhooks::BODY_BYTES_MAX + 1];
        let (too_big, _) = deliver(&suite, &big, Some(sign(WEBHOOK_SECRET, now, &big))).await;
        assert_eq!(too_big, 413);

        assert_eq!(
            stripe_events(&suite).await,
            0,
            "[{backend}] nothing recorded"
        );
        let still = get_purchase(&mut hal, &waiting.purchase_id).await;
        assert_eq!(
            still.state,
            pb::PurchaseState::Pending as i32,
            "[{backend}] {still:?}"
        );
        assert_eq!(balance(&mut hal, "hal").await.available_coins, 0);
        suite.stop().await;
    }
}

#[tokio::test]
async fn a_method_whose_provider_is_not_configured_is_refused_before_anything_is_recorded() {
    let db = TestDatabase::sqlite();
    // The sandbox only: no Stripe, and App Store / Google Play are not built.
    let suite = Suite::start(&db).await;
    let mut ivy = suite.user("ivy").await;
    open_account(&mut ivy, "ivy").await;
    let methods = [
        pb::payment_method::Method::StripeCard(pb::StripeCard {
            payment_method_id: PM_OK.into(),
        }),
        pb::payment_method::Method::AppStore(pb::AppStoreTransaction {
            signed_transaction: "eyJhbGciOiJFUzI1NiJ9.e30.sig".into(),
        }),
        pb::payment_method::Method::GooglePlay(pb::GooglePlayPurchase {
            product_id: "coins_100".into(),
            purchase_token: "token".into(),
        }),
    ];
    for (i, method) in methods.into_iter().enumerate() {
        let request = pb::PurchaseCoinsRequest {
            payment_method: Some(pb::PaymentMethod {
                method: Some(method),
            }),
            ..purchase_request("ivy", &format!("k{i}"), "coins_100", "")
        };
        let refused = ivy.purchase_coins(request).await.unwrap_err();
        assert_eq!(
            (refused.code(), reason(&refused).as_str()),
            (Code::FailedPrecondition, "PAYMENT_PROVIDER_NOT_CONFIGURED"),
            "{refused:?}"
        );
    }
    // Both the deprecated token and a method: INVALID_ARGUMENT.
    let both = pb::PurchaseCoinsRequest {
        payment_method: Some(pb::PaymentMethod {
            method: Some(pb::payment_method::Method::Sandbox(pb::SandboxToken {
                token: ovation_wallet::payment::TOKEN_OK.into(),
            })),
        }),
        ..purchase_request(
            "ivy",
            "k-both",
            "coins_100",
            ovation_wallet::payment::TOKEN_OK,
        )
    };
    assert_eq!(
        ivy.purchase_coins(both).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let listed = ivy
        .list_purchases(pb::ListPurchasesRequest {
            user_id: "ivy".into(),
            state: 0,
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.purchases.is_empty(), "nothing recorded");
    // The sandbox named through payment_method works as the old token does.
    let sandbox = pb::PurchaseCoinsRequest {
        payment_method: Some(pb::PaymentMethod {
            method: Some(pb::payment_method::Method::Sandbox(pb::SandboxToken {
                token: ovation_wallet::payment::TOKEN_OK.into(),
            })),
        }),
        ..purchase_request("ivy", "k-sandbox", "coins_100", "")
    };
    let bought = ivy
        .purchase_coins(sandbox)
        .await
        .unwrap()
        .into_inner()
        .purchase
        .unwrap();
    assert_eq!(bought.state, pb::PurchaseState::Completed as i32);
    assert_eq!(bought.payment_provider, pb::PaymentProvider::Sandbox as i32);
    suite.stop().await;
}
