//! App Store purchases over real gRPC: signed transactions (made by a test certificate chain
//! that signs as the App Store does) redeemed once across all users, and App Store Server
//! Notifications reversing them once, on SQLite and (when `OVATION_TEST_POSTGRES_URL` is
//! set) PostgreSQL.

use std::collections::HashMap;

use base64::Engine;
use ovation_proto::wallet as pb;
use ovation_store::Db;
use ovation_testkit::{TestDatabase, WalletClient, databases, reason};
use ovation_types::ResourceId;
use ovation_wallet::payment::app_store::{AppStore, Environment};
use ovation_webhooks::app_store_jws::testing::TestChain;
use serde_json::{Value, json};
use tonic::Code;

use crate::suite::*;

const BUNDLE: &str = "dev.ovation.app";
const PRODUCT: &str = "dev.ovation.coins100";

fn app_store(chain: &TestChain) -> AppStore {
    AppStore::new(
        chain.roots(),
        BUNDLE,
        Environment::Sandbox,
        HashMap::from([(PRODUCT.to_owned(), ResourceId::parse("coins_100").unwrap())]),
    )
}

async fn app_store_suite(db: &TestDatabase, chain: &TestChain) -> Suite {
    Suite::start_custom(
        db,
        SuiteOptions {
            app_store: Some(app_store(chain)),
            ..SuiteOptions::default()
        },
    )
    .await
}

/// A consumable coins purchase as StoreKit 2 describes it.
fn transaction(id: &str) -> Value {
    json!({
        "transactionId": id, "originalTransactionId": id,
        "bundleId": BUNDLE, "productId": PRODUCT, "environment": "Sandbox",
        "type": "Consumable", "quantity": 1, "price": 1990, "currency": "USD",
        "purchaseDate": 1_700_000_000_000i64, "signedDate": 1_700_000_000_000i64,
        "inAppOwnershipType": "PURCHASED",
    })
}

fn redeem_request(user: &str, key: &str, signed_transaction: &str) -> pb::PurchaseCoinsRequest {
    pb::PurchaseCoinsRequest {
        payment_token: String::new(),
        payment_method: Some(pb::PaymentMethod {
            method: Some(pb::payment_method::Method::AppStore(
                pb::AppStoreTransaction {
                    signed_transaction: signed_transaction.into(),
                },
            )),
        }),
        ..purchase_request(user, key, "coins_100", "")
    }
}

async fn redeem(
    client: &mut WalletClient,
    user: &str,
    key: &str,
    signed: &str,
) -> Result<pb::Purchase, tonic::Status> {
    client
        .purchase_coins(redeem_request(user, key, signed))
        .await
        .map(|r| r.into_inner().purchase.expect("a purchase"))
}

async fn purchases_recorded(suite: &Suite) -> i64 {
    let db = Db::connect(&suite.wallet_db_url, &Default::default())
        .await
        .unwrap();
    let mut conn = db.conn().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM purchases")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    db.close().await;
    n
}

#[tokio::test]
async fn a_signed_transaction_is_credited_and_anything_else_refused_with_nothing_written() {
    for db in databases().await {
        let chain = TestChain::new(true);
        let suite = app_store_suite(&db, &chain).await;
        let mut alice = suite.user("alice").await;
        open_account(&mut alice, "alice").await;

        let purchase = redeem(
            &mut alice,
            "alice",
            "as-1",
            &chain.sign(&transaction("1001")),
        )
        .await
        .expect("redeemed");
        assert_eq!(purchase.state, pb::PurchaseState::Completed as i32);
        assert_eq!(purchase.coins_credited, 100);
        assert_eq!(
            purchase.bonus_coins, 0,
            "no promotion on App Store purchases"
        );
        assert_eq!(purchase.provider_reference, "1001");
        assert_eq!(
            purchase.payment_provider,
            pb::PaymentProvider::AppStore as i32
        );
        let price = purchase.price.clone().expect("a price");
        assert_eq!(price.currency_code, "USD");
        assert_eq!(price.amount_minor, 199, "the price Apple reports, in cents");

        let stranger = TestChain::new(true);
        let tampered = {
            let signed = chain.sign(&transaction("1002"));
            let mut parts: Vec<String> = signed.split('.').map(str::to_owned).collect();
            let mut forged = transaction("1002");
            forged["productId"] = json!("dev.ovation.coins100000");
            parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged.to_string());
            parts.join(".")
        };
        let mut other_bundle = transaction("1003");
        other_bundle["bundleId"] = json!("com.other.app");
        let mut unknown_product = transaction("1004");
        unknown_product["productId"] = json!("dev.ovation.coins_unknown");
        let mut production = transaction("1005");
        production["environment"] = json!("Production");
        let mut revoked = transaction("1006");
        revoked["revocationDate"] = json!(1_700_000_100_000i64);
        let mut subscription = transaction("1007");
        subscription["type"] = json!("Auto-Renewable Subscription");
        let refusals = [
            ("another root", stranger.sign(&transaction("1001"))),
            ("tampered", tampered),
            ("another bundle", chain.sign(&other_bundle)),
            ("an unknown product", chain.sign(&unknown_product)),
            ("another environment", chain.sign(&production)),
            ("revoked", chain.sign(&revoked)),
            ("not consumable", chain.sign(&subscription)),
            ("not a JWS", "not.a-jws".to_owned()),
        ];
        for (i, (what, signed)) in refusals.iter().enumerate() {
            let refused = redeem(&mut alice, "alice", &format!("bad-{i}"), signed)
                .await
                .expect_err(what);
            assert_eq!(refused.code(), Code::InvalidArgument, "{what}: {refused:?}");
            assert!(
                refused
                    .message()
                    .contains("payment_method.app_store.signed_transaction"),
                "{what}: {}",
                refused.message()
            );
        }
        assert_eq!(balance(&mut alice, "alice").await.posted_coins, 100);
        assert_eq!(purchases_recorded(&suite).await, 1, "{}", suite.backend);
        suite.stop().await;
    }
}

#[tokio::test]
async fn a_transaction_redeemed_again_credits_once() {
    for db in databases().await {
        let chain = TestChain::new(true);
        let suite = app_store_suite(&db, &chain).await;
        let mut alice = suite.user("alice").await;
        let mut bob = suite.user("bob").await;
        open_account(&mut alice, "alice").await;
        open_account(&mut bob, "bob").await;
        let signed = chain.sign(&transaction("2001"));

        let first = redeem(&mut alice, "alice", "k1", &signed).await.unwrap();
        // The same buyer retrying under the same key: the original purchase.
        let again = redeem(&mut alice, "alice", "k1", &signed).await.unwrap();
        assert_eq!(again.purchase_id, first.purchase_id);
        // Under another key, or by another buyer: refused.
        let other_key = redeem(&mut alice, "alice", "k2", &signed)
            .await
            .unwrap_err();
        assert_eq!(other_key.code(), Code::AlreadyExists);
        assert!(
            other_key.message().contains("already redeemed"),
            "{other_key:?}"
        );
        let other_user = redeem(&mut bob, "bob", "k1", &signed).await.unwrap_err();
        assert_eq!(other_user.code(), Code::AlreadyExists);
        assert_eq!(reason(&other_user), "APP_STORE_TRANSACTION_REDEEMED");

        assert_eq!(balance(&mut alice, "alice").await.posted_coins, 100);
        assert_eq!(balance(&mut bob, "bob").await.posted_coins, 0);
        assert_eq!(purchases_recorded(&suite).await, 1, "{}", suite.backend);
        suite.stop().await;
    }
}

#[tokio::test]
async fn a_transaction_redeemed_concurrently_by_several_users_credits_once() {
    for db in databases().await {
        let chain = TestChain::new(true);
        let suite = app_store_suite(&db, &chain).await;
        let users = ["u0", "u1", "u2", "u3"];
        for user in users {
            open_account(&mut suite.user(user).await, user).await;
        }
        let signed = chain.sign(&transaction("3001"));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let user = users[i % users.len()];
            let mut client = suite.user(user).await;
            let signed = signed.clone();
            tasks.push(tokio::spawn(async move {
                // Two tasks per user: one under a shared key, one under its own.
                let key = if i < 4 {
                    "same".to_owned()
                } else {
                    format!("own-{i}")
                };
                (user, redeem(&mut client, user, &key, &signed).await)
            }));
        }
        let mut purchase_ids = std::collections::HashSet::new();
        for task in tasks {
            let (user, answer) = task.await.unwrap();
            match answer {
                Ok(purchase) => {
                    assert_eq!(purchase.user_id, user);
                    assert_eq!(purchase.state, pb::PurchaseState::Completed as i32);
                    purchase_ids.insert(purchase.purchase_id);
                }
                Err(status) => assert_eq!(status.code(), Code::AlreadyExists, "{status:?}"),
            }
        }
        assert_eq!(
            purchase_ids.len(),
            1,
            "one purchase, answered to its key only"
        );
        let mut total = 0;
        for user in users {
            total += balance(&mut suite.user(user).await, user)
                .await
                .posted_coins;
        }
        assert_eq!(total, 100, "{}: credited once", suite.backend);
        assert_eq!(purchases_recorded(&suite).await, 1, "{}", suite.backend);
        suite.stop().await;
    }
}

fn notification(chain: &TestChain, uuid: &str, kind: &str, transaction_id: &str) -> Vec<u8> {
    let payload = json!({
        "notificationType": kind, "notificationUUID": uuid, "version": "2.0",
        "signedDate": 1_700_000_000_000i64,
        "data": {
            "bundleId": BUNDLE, "environment": "Sandbox",
            "signedTransactionInfo": chain.sign(&transaction(transaction_id)),
        },
    });
    serde_json::to_vec(&json!({"signedPayload": chain.sign(&payload)})).unwrap()
}

async fn notify(suite: &Suite, body: Vec<u8>) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(suite.app_store_webhook_url())
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the webhook answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

async fn app_store_events(suite: &Suite) -> i64 {
    let db = Db::connect(&suite.wallet_db_url, &Default::default())
        .await
        .unwrap();
    let mut conn = db.conn().await.unwrap();
    let n = ovation_wallet::store::count_provider_events(&mut conn, "app_store")
        .await
        .unwrap();
    drop(conn);
    db.close().await;
    n
}

#[tokio::test]
async fn a_refund_notification_reverses_once_and_a_forged_one_is_refused() {
    for db in databases().await {
        let chain = TestChain::new(true);
        let suite = app_store_suite(&db, &chain).await;
        let mut alice = suite.user("alice").await;
        open_account(&mut alice, "alice").await;
        let purchase = redeem(&mut alice, "alice", "k", &chain.sign(&transaction("4001")))
            .await
            .unwrap();

        // Forged: another chain, or a body changed after signing.
        let stranger = TestChain::new(true);
        let (status, _) = notify(
            &suite,
            notification(&stranger, "n-forged", "REFUND", "4001"),
        )
        .await;
        assert_eq!(status, 400);
        let (status, _) = notify(&suite, b"{\"signedPayload\":\"a.b.c\"}".to_vec()).await;
        assert_eq!(status, 400);
        assert_eq!(app_store_events(&suite).await, 0, "nothing written");
        assert_eq!(balance(&mut alice, "alice").await.posted_coins, 100);

        // Delivered three times, twice at once: reversed once.
        let refund = notification(&chain, "n-refund-1", "REFUND", "4001");
        let (a, b) = tokio::join!(
            notify(&suite, refund.clone()),
            notify(&suite, refund.clone())
        );
        let (c, _) = notify(&suite, refund).await;
        assert_eq!((a.0, b.0, c), (200, 200, 200), "{a:?} {b:?}");
        assert!(
            a.1.starts_with("reversed") ^ b.1.starts_with("reversed"),
            "{a:?} {b:?}"
        );
        assert_eq!(balance(&mut alice, "alice").await.posted_coins, 0);
        let reversed = alice
            .get_purchase(pb::GetPurchaseRequest {
                purchase_id: purchase.purchase_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .purchase
            .unwrap();
        assert_eq!(reversed.state, pb::PurchaseState::Reversed as i32);
        assert_eq!(reversed.reversal.expect("a reversal").actor, "app_store");

        // A REVOKE for the same transaction under another UUID: recorded, nothing to do.
        let (status, outcome) =
            notify(&suite, notification(&chain, "n-revoke", "REVOKE", "4001")).await;
        assert_eq!(status, 200);
        assert!(outcome.starts_with("ignored"), "{outcome}");
        // A transaction this wallet never redeemed: recorded and ignored.
        let (status, outcome) =
            notify(&suite, notification(&chain, "n-unknown", "REFUND", "4999")).await;
        assert_eq!(status, 200);
        assert!(outcome.starts_with("ignored"), "{outcome}");
        assert_eq!(app_store_events(&suite).await, 3, "{}", suite.backend);
        assert_eq!(balance(&mut alice, "alice").await.posted_coins, 0);
        suite.stop().await;
    }
}
