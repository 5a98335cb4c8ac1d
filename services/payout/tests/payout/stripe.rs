//! Payouts through Stripe Connect (issue 15, item 5), over real gRPC on SQLite and
//! PostgreSQL, against an in-test server standing for Stripe (`ovation_testkit::stripe_connect`):
//! our client is the real one. Success; a definite refusal released exactly; answers that
//! are not definite (5xx, slow) retried into one transfer; a payout already sent when its
//! creator is suspended cancelled by a reversal, or paid if the money cannot come back;
//! only connected account ids as payout accounts; the provider's events (transfer.reversed,
//! payout.failed) applied once under duplicate, concurrent and out-of-order delivery.

use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use ovation_payout::WebhookConfig;
use ovation_payout::domain::{AccountReferences, EventEffect, ProviderEvent};
use ovation_payout::operations::webhooks::{self, Applied};
use ovation_payout::provider::stripe_connect::{StripeConnect, StripeConnectSettings};
use ovation_payout::provider::{PayoutOrder, PayoutProvider, ProviderOutcome};
use ovation_payout::store;
use ovation_payout::worker::WorkerConfig;
use ovation_proto::payout as pb;
use ovation_store::{Db, DbOptions};
use ovation_testkit::services::{payout_config, start_payout};
use ovation_testkit::stripe_connect::{FakeStripe, TEST_SECRET_KEY};
use ovation_testkit::{Running, TestDatabase, databases, violated_fields};
use ovation_types::{Money, UnixMillis};
use ovation_webhooks::stripe_signature::{Secrets, sign};
use serde_json::json;
use tonic::Code;

use crate::suite::*;

/// The real client, pointed at `fake`, giving up on one HTTP request after `timeout`.
fn client_of(fake: &FakeStripe, timeout: Duration) -> StripeConnect {
    StripeConnect::new(StripeConnectSettings {
        api_base: fake.base_url(),
        secret_key: TEST_SECRET_KEY.into(),
        request_timeout: timeout,
    })
    .unwrap()
}

/// A payout service on `db` paying through Stripe Connect at `fake`.
async fn start_stripe(
    db: &TestDatabase,
    catalog: &Catalog,
    fake: &FakeStripe,
    worker: WorkerConfig,
) -> Running {
    start_stripe_with_webhook(db, catalog, fake, worker, None).await
}

/// The endpoint's signing secrets: the current one and the one being rolled out.
const WEBHOOK_SECRETS: [&str; 2] = ["whsec_test_current", "whsec_test_next"];

/// [`start_stripe`], receiving Stripe's webhooks on `webhook` if set.
async fn start_stripe_with_webhook(
    db: &TestDatabase,
    catalog: &Catalog,
    fake: &FakeStripe,
    worker: WorkerConfig,
    webhook: Option<SocketAddr>,
) -> Running {
    let provider = Arc::new(client_of(fake, worker.provider_timeout));
    let mut config = payout_config(db.url(), &catalog.running.endpoint(), provider);
    config.account_references = AccountReferences::ConnectedAccounts;
    config.worker = worker;
    config.webhook = webhook.map(|listen_addr| WebhookConfig {
        listen_addr,
        secrets: Secrets::new(WEBHOOK_SECRETS.map(String::from)).unwrap(),
    });
    start_payout(config).await
}

/// A loopback address nothing listens on yet.
async fn free_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn order(id: &str, destination: &str) -> PayoutOrder {
    PayoutOrder {
        payout_id: id.into(),
        creator_id: "ann".into(),
        amount: Money::parse("USD", 500).unwrap(),
        account_reference: destination.into(),
    }
}

/// The provider on its own: idempotent by payout id, definite and indefinite answers,
/// cancellation by reversal.
#[tokio::test]
async fn the_client_keeps_the_provider_contract() {
    let fake = FakeStripe::start().await;
    let stripe = client_of(&fake, Duration::from_secs(5));

    // Paid once, however often asked.
    let paid = stripe.pay(&order("po1", "acct_ann")).await.unwrap();
    let ProviderOutcome::Paid { provider_reference } = &paid else {
        panic!("{paid:?}")
    };
    assert!(provider_reference.starts_with("tr_"));
    assert_eq!(stripe.pay(&order("po1", "acct_ann")).await.unwrap(), paid);
    let t = fake.transfers_for("po1");
    assert_eq!(t.len(), 1);
    assert_eq!(
        (
            t[0].amount,
            t[0].currency.as_str(),
            t[0].destination.as_str()
        ),
        (500, "usd", "acct_ann")
    );
    assert_eq!(t[0].transfer_group, "po1");

    // 5xx is no definite answer; the retry pays once.
    fake.fail_next(2);
    assert!(stripe.pay(&order("po2", "acct_ann")).await.is_err());
    assert!(stripe.pay(&order("po2", "acct_ann")).await.is_err());
    assert!(matches!(
        stripe.pay(&order("po2", "acct_ann")).await.unwrap(),
        ProviderOutcome::Paid { .. }
    ));
    assert_eq!(fake.transfers_for("po2").len(), 1);

    // A destination that cannot receive transfers: declined, for good.
    let declined = stripe.pay(&order("po3", "acct_blocked1")).await.unwrap();
    assert!(
        matches!(&declined, ProviderOutcome::Declined { reason } if reason.contains("transfers_not_allowed")),
        "{declined:?}"
    );
    assert_eq!(
        stripe.pay(&order("po3", "acct_blocked1")).await.unwrap(),
        declined
    );
    assert!(fake.transfers_for("po3").is_empty());

    // A slow answer times out, the transfer is made; the retry finds it.
    fake.set_delay(Duration::from_millis(600));
    let slow = client_of(&fake, Duration::from_millis(200));
    assert!(slow.pay(&order("po4", "acct_ann")).await.is_err());
    fake.set_delay(Duration::ZERO);
    assert!(matches!(
        slow.pay(&order("po4", "acct_ann")).await.unwrap(),
        ProviderOutcome::Paid { .. }
    ));
    assert_eq!(fake.transfers_for("po4").len(), 1);

    // Cancelled before anything was paid: the key is spent on a reversed transfer, and a
    // later pay never pays.
    let cancelled = stripe.cancel(&order("po5", "acct_ann")).await.unwrap();
    assert!(matches!(cancelled, ProviderOutcome::Declined { .. }));
    assert!(matches!(
        stripe.pay(&order("po5", "acct_ann")).await.unwrap(),
        ProviderOutcome::Declined { .. }
    ));
    assert_eq!(
        stripe.cancel(&order("po5", "acct_ann")).await.unwrap(),
        cancelled
    );
    let t = fake.transfers_for("po5");
    assert_eq!((t.len(), t[0].amount_reversed), (1, 500));

    // Paid, then cancelled: reversed. Paid to an account that paid the money out: stays
    // paid.
    stripe.pay(&order("po6", "acct_ann")).await.unwrap();
    assert!(matches!(
        stripe.cancel(&order("po6", "acct_ann")).await.unwrap(),
        ProviderOutcome::Declined { .. }
    ));
    let paid_out = stripe.pay(&order("po7", "acct_paidout1")).await.unwrap();
    assert_eq!(
        stripe.cancel(&order("po7", "acct_paidout1")).await.unwrap(),
        paid_out
    );
    assert_eq!(fake.transfers_for("po7")[0].amount_reversed, 0);

    // A wrong key is no definite answer (an operator fixes the key; the payout waits).
    let wrong = StripeConnect::new(StripeConnectSettings {
        api_base: fake.base_url(),
        secret_key: "sk_test_wrong".into(),
        request_timeout: Duration::from_secs(5),
    })
    .unwrap();
    let error = wrong.pay(&order("po8", "acct_ann")).await.unwrap_err();
    assert!(!error.0.contains("sk_test_wrong"), "{error}");
    assert!(fake.transfers_for("po8").is_empty());
}

/// A creator with a verified `reference` account and `diamonds` to cash out.
async fn funded_creator(c: &Clients, id: &str, reference: &str, diamonds: i64) {
    verified_creator(c, id, reference).await;
    earn(c, &format!("{id}-credit"), id, diamonds).await;
}

#[tokio::test]
async fn payouts_are_stripe_transfers_paid_once_or_released_exactly() {
    for db in databases().await {
        let catalog = start_catalog().await;
        let fake = FakeStripe::start().await;
        let running = start_stripe(&db, &catalog, &fake, WorkerConfig::FAST_TESTS).await;
        let c = Clients::new(&running).await;

        // Payout accounts are connected accounts.
        register(&c, "ann").await;
        let refused = c
            .creator("ann")
            .set_payout_account(pb::SetPayoutAccountRequest {
                idempotency_key: "a1".into(),
                creator_id: "ann".into(),
                account_reference: "sandbox-ok".into(),
                holder_name: "Ann".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{}", db.backend());
        assert_eq!(violated_fields(&refused), ["account_reference"]);
        set_account(&c, "ann", "acct_ann1").await;
        verify(&c, "ann").await;
        earn(&c, "ann-credit", "ann", 3_000).await;

        // Success: one transfer of the payout's money to the account, PAID with its id.
        let mut ann = c.creator("ann");
        let payout = requested_payout(&mut ann, "p1", "ann", 2_000).await;
        let paid = settled(&ann, &payout.payout_id).await;
        assert_eq!(paid.state, pb::PayoutState::Paid as i32, "{}", db.backend());
        let transfers = fake.transfers_for(&payout.payout_id);
        assert_eq!(transfers.len(), 1);
        assert_eq!(paid.provider_reference, transfers[0].id);
        assert_eq!(
            (transfers[0].amount, transfers[0].destination.as_str()),
            (1_000, "acct_ann1")
        );
        let b = balance(&mut ann, "ann").await;
        assert_eq!(
            (b.available_diamonds, b.held_diamonds, b.paid_out_diamonds),
            (1_000, 0, 2_000)
        );

        // A definite refusal: RELEASED, every diamond available again, nothing sent.
        funded_creator(&c, "bob", "acct_blocked7", 1_500).await;
        let mut bob = c.creator("bob");
        let payout = requested_payout(&mut bob, "p2", "bob", 1_500).await;
        let released = settled(&bob, &payout.payout_id).await;
        assert_eq!(released.state, pb::PayoutState::Released as i32);
        assert!(
            released.failure_reason.contains("transfers_not_allowed"),
            "{released:?}"
        );
        assert!(fake.transfers_for(&payout.payout_id).is_empty());
        let b = balance(&mut bob, "bob").await;
        assert_eq!(
            (b.available_diamonds, b.held_diamonds, b.paid_out_diamonds),
            (1_500, 0, 0)
        );

        // 5xx answers, then success: one transfer.
        funded_creator(&c, "cat", "acct_cat1", 1_000).await;
        fake.fail_next(4);
        let mut cat = c.creator("cat");
        let payout = requested_payout(&mut cat, "p3", "cat", 1_000).await;
        assert_eq!(
            settled(&cat, &payout.payout_id).await.state,
            pb::PayoutState::Paid as i32
        );
        assert_eq!(fake.transfers_for(&payout.payout_id).len(), 1);
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}

/// Stripe answers later than the worker waits: the transfer is made, the worker sees no
/// answer and retries with the same payout id; the retry finds the transfer. One transfer.
#[tokio::test]
async fn an_answer_too_slow_to_wait_for_is_retried_into_one_transfer() {
    for db in databases().await {
        let catalog = start_catalog().await;
        let fake = FakeStripe::start().await;
        fake.set_delay(Duration::from_millis(700));
        let worker = WorkerConfig {
            provider_timeout: Duration::from_millis(250),
            ..WorkerConfig::FAST_TESTS
        };
        let running = start_stripe(&db, &catalog, &fake, worker).await;
        let c = Clients::new(&running).await;
        let ids = ["dan", "eve", "fay"];
        for id in ids {
            funded_creator(&c, id, &format!("acct_{id}"), 1_000).await;
        }
        let mut payouts = Vec::new();
        for id in ids {
            let p = requested_payout(&mut c.creator(id), &format!("{id}-p"), id, 1_000).await;
            payouts.push(p.payout_id);
        }
        // Let a few attempts time out, then let answers through.
        eventually("every payout has its transfer", || {
            let all = payouts.iter().all(|p| !fake.transfers_for(p).is_empty());
            async move { all.then_some(()) }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        fake.set_delay(Duration::ZERO);
        for (id, p) in ids.iter().zip(&payouts) {
            let paid = settled(&c.creator(id), p).await;
            assert_eq!(paid.state, pb::PayoutState::Paid as i32, "{}", db.backend());
            let transfers = fake.transfers_for(p);
            assert_eq!(transfers.len(), 1, "{p} on {}", db.backend());
            assert_eq!(paid.provider_reference, transfers[0].id);
        }
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}

/// A payout sent to Stripe (no definite answer yet) whose creator is then suspended is
/// settled by asking Stripe to cancel: reversed → RELEASED exactly; money already paid
/// out of the connected account → PAID.
#[tokio::test]
async fn a_sent_payout_of_a_suspended_creator_is_reversed_or_stays_paid() {
    for db in databases().await {
        let catalog = start_catalog().await;
        let fake = FakeStripe::start().await;
        fake.set_delay(Duration::from_millis(600));
        // Attempts time out; the next one comes only after the suspension.
        let worker = WorkerConfig {
            provider_timeout: Duration::from_millis(200),
            backoff_base: Duration::from_millis(1_500),
            backoff_max: Duration::from_millis(1_500),
            ..WorkerConfig::FAST_TESTS
        };
        let running = start_stripe(&db, &catalog, &fake, worker).await;
        let c = Clients::new(&running).await;
        funded_creator(&c, "gil", "acct_gil", 1_000).await;
        funded_creator(&c, "hal", "acct_paidouthal", 1_000).await;
        let mut sent = Vec::new();
        for id in ["gil", "hal"] {
            let p = requested_payout(&mut c.creator(id), &format!("{id}-p"), id, 1_000).await;
            sent.push(p.payout_id);
        }
        eventually("both transfers are made", || {
            let all = sent.iter().all(|p| !fake.transfers_for(p).is_empty());
            async move { all.then_some(()) }
        })
        .await;
        for id in ["gil", "hal"] {
            c.admin
                .clone()
                .suspend_creator(suspend_request(id, &format!("s-{id}")))
                .await
                .unwrap();
        }
        fake.set_delay(Duration::ZERO);

        let gil = settled(&c.admin, &sent[0]).await;
        assert_eq!(
            gil.state,
            pb::PayoutState::Released as i32,
            "{}",
            db.backend()
        );
        let t = fake.transfers_for(&sent[0]);
        assert_eq!((t.len(), t[0].amount_reversed), (1, t[0].amount));
        let b = balance(&mut c.admin.clone(), "gil").await;
        assert_eq!(
            (b.available_diamonds, b.held_diamonds, b.paid_out_diamonds),
            (1_000, 0, 0)
        );

        let hal = settled(&c.admin, &sent[1]).await;
        assert_eq!(hal.state, pb::PayoutState::Paid as i32, "{}", db.backend());
        let t = fake.transfers_for(&sent[1]);
        assert_eq!((t.len(), t[0].amount_reversed), (1, 0));
        assert_eq!(hal.provider_reference, t[0].id);
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}

fn reversed_event(
    event: &str,
    payout_id: &str,
    transfer: &str,
    amount_reversed: i64,
) -> ProviderEvent {
    ProviderEvent {
        id: event.into(),
        event_type: "transfer.reversed".into(),
        effect: EventEffect::TransferReversed {
            payout_id: Some(payout_id.into()),
            transfer_id: transfer.into(),
            currency: "USD".into(),
            amount_reversed_minor: amount_reversed,
        },
    }
}

/// Events are applied once by id: duplicates (also concurrent ones) do nothing, a
/// partial reversal arriving after the full one changes nothing, a PAID payout reversed
/// is an alert and moves no diamond; a failed bank payout is recorded against its creator.
#[tokio::test]
async fn provider_events_are_applied_once_in_any_order() {
    for db in databases().await {
        let catalog = start_catalog().await;
        let fake = FakeStripe::start().await;
        let running = start_stripe(&db, &catalog, &fake, WorkerConfig::FAST_TESTS).await;
        let c = Clients::new(&running).await;
        funded_creator(&c, "ivy", "acct_ivy", 1_000).await;
        let mut ivy = c.creator("ivy");
        let payout = requested_payout(&mut ivy, "ivy-p", "ivy", 1_000).await;
        let paid = settled(&ivy, &payout.payout_id).await;
        assert_eq!(paid.state, pb::PayoutState::Paid as i32);
        let before = balance(&mut ivy, "ivy").await;

        let store_db = Db::connect(db.url(), &DbOptions::default()).await.unwrap();
        let now = UnixMillis::now();
        let transfer = paid.provider_reference.clone();
        // The full reversal (evt_2) comes first, three times at once; the partial one
        // (evt_1) after it, twice.
        let full = reversed_event("evt_2", &payout.payout_id, &transfer, 500);
        let racing: Vec<_> = (0..3)
            .map(|_| {
                let (db, e) = (store_db.clone(), full.clone());
                tokio::spawn(async move { webhooks::apply(&db, &e, now).await.unwrap() })
            })
            .collect();
        let mut outcomes = Vec::new();
        for r in racing {
            outcomes.push(r.await.unwrap());
        }
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| matches!(o, Applied::Applied(_)))
                .count(),
            1,
            "{outcomes:?} on {}",
            db.backend()
        );
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == Applied::Duplicate)
                .count(),
            2
        );
        let partial = reversed_event("evt_1", &payout.payout_id, &transfer, 200);
        assert!(matches!(
            webhooks::apply(&store_db, &partial, now).await.unwrap(),
            Applied::Applied(_)
        ));
        assert_eq!(
            webhooks::apply(&store_db, &partial, now).await.unwrap(),
            Applied::Duplicate
        );
        let mut conn = store_db.pool().acquire().await.unwrap();
        assert_eq!(
            store::payout_reversed_minor(&mut conn, &payout.payout_id)
                .await
                .unwrap(),
            Some(500),
            "the later, lower figure changed nothing"
        );
        assert_eq!(
            store::count_provider_alerts(&mut conn).await.unwrap(),
            (1, 0)
        );
        // No diamond moved.
        assert_eq!(balance(&mut ivy, "ivy").await, before);

        // A failed bank payout of ivy's account, delivered twice; an unknown type; an
        // unknown payout's transfer.
        let failed = ProviderEvent {
            id: "evt_3".into(),
            event_type: "payout.failed".into(),
            effect: EventEffect::BankPayoutFailed {
                account: Some("acct_ivy".into()),
                bank_payout_id: "po_bank1".into(),
                currency: "USD".into(),
                amount_minor: 500,
                failure_code: "account_closed".into(),
                failure_message: "The bank account has been closed".into(),
            },
        };
        assert!(
            matches!(webhooks::apply(&store_db, &failed, now).await.unwrap(), Applied::Applied(d) if d.contains("ivy"))
        );
        assert_eq!(
            webhooks::apply(&store_db, &failed, now).await.unwrap(),
            Applied::Duplicate
        );
        let other = ProviderEvent {
            id: "evt_4".into(),
            event_type: "balance.available".into(),
            effect: EventEffect::Other,
        };
        assert!(matches!(
            webhooks::apply(&store_db, &other, now).await.unwrap(),
            Applied::Ignored(_)
        ));
        let stranger = reversed_event("evt_5", "po_nobody", "tr_x", 100);
        assert!(matches!(
            webhooks::apply(&store_db, &stranger, now).await.unwrap(),
            Applied::Ignored(_)
        ));
        assert_eq!(
            store::count_provider_alerts(&mut conn).await.unwrap(),
            (1, 1)
        );
        assert_eq!(
            store::provider_event_outcome(&mut conn, "evt_5")
                .await
                .unwrap()
                .map(|o| o.0),
            Some("IGNORED".into())
        );
        assert_eq!(balance(&mut ivy, "ivy").await, before);
        drop(conn);
        store_db.close().await;
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}

/// Posts `body` to payout's Stripe endpoint with `signature` (none if `None`); the status.
async fn deliver(addr: SocketAddr, body: &str, signature: Option<String>) -> u16 {
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}/webhooks/stripe"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    request.send().await.unwrap().status().as_u16()
}

/// Stripe's signature of `body` now, by `secret`.
fn signed(secret: &str, body: &str) -> Option<String> {
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    Some(sign(secret, now, body.as_bytes()))
}

/// Received events and alerts, straight from the database.
async fn recorded(db: &TestDatabase) -> (i64, (i64, i64)) {
    let store_db = Db::connect(db.url(), &DbOptions::default()).await.unwrap();
    let mut conn = store_db.pool().acquire().await.unwrap();
    let events: i64 = ovation_store::sqlx::query_scalar("SELECT COUNT(*) FROM provider_events")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let alerts = store::count_provider_alerts(&mut conn).await.unwrap();
    drop(conn);
    store_db.close().await;
    (events, alerts)
}

/// The webhook endpoint: signatures checked first (bad, missing, stale or of another
/// secret → 400, nothing written), then each event applied once whatever the delivery
/// order; either of the rolling secrets is accepted.
#[tokio::test]
async fn the_webhook_endpoint_verifies_then_applies_each_event_once() {
    for db in databases().await {
        let catalog = start_catalog().await;
        let fake = FakeStripe::start().await;
        let addr = free_addr().await;
        let running =
            start_stripe_with_webhook(&db, &catalog, &fake, WorkerConfig::FAST_TESTS, Some(addr))
                .await;
        let c = Clients::new(&running).await;
        funded_creator(&c, "jon", "acct_jon", 1_000).await;
        let mut jon = c.creator("jon");
        let payout = requested_payout(&mut jon, "jon-p", "jon", 1_000).await;
        let paid = settled(&jon, &payout.payout_id).await;
        assert_eq!(paid.state, pb::PayoutState::Paid as i32);
        let before = balance(&mut jon, "jon").await;

        let event = |id: &str, reversed: i64| {
            json!({"id": id, "object": "event", "type": "transfer.reversed", "livemode": false,
                "created": 1_700_000_000,
                "data": {"object": {"id": paid.provider_reference, "object": "transfer",
                    "amount": 500, "amount_reversed": reversed, "currency": "usd",
                    "transfer_group": payout.payout_id,
                    "metadata": {"payout_id": payout.payout_id}}}})
            .to_string()
        };
        let full = event("evt_full", 500);
        // Refused before anything is read: a forged signature, none, another secret, a
        // signature of other bytes, a stale one.
        assert_eq!(
            deliver(addr, &full, signed("whsec_forged", &full)).await,
            400
        );
        assert_eq!(deliver(addr, &full, None).await, 400);
        assert_eq!(
            deliver(
                addr,
                &full,
                signed(WEBHOOK_SECRETS[0], &event("evt_full", 1))
            )
            .await,
            400
        );
        let stale = Some(sign(WEBHOOK_SECRETS[0], 1_000_000_000, full.as_bytes()));
        assert_eq!(deliver(addr, &full, stale).await, 400);
        assert_eq!(
            recorded(&db).await,
            (0, (0, 0)),
            "nothing written on {}",
            db.backend()
        );

        // The full reversal twice (once per secret), then an older partial one.
        assert_eq!(
            deliver(addr, &full, signed(WEBHOOK_SECRETS[0], &full)).await,
            200
        );
        assert_eq!(
            deliver(addr, &full, signed(WEBHOOK_SECRETS[1], &full)).await,
            200
        );
        let partial = event("evt_partial", 100);
        assert_eq!(
            deliver(addr, &partial, signed(WEBHOOK_SECRETS[0], &partial)).await,
            200
        );
        assert_eq!(recorded(&db).await, (2, (1, 0)), "on {}", db.backend());
        let store_db = Db::connect(db.url(), &DbOptions::default()).await.unwrap();
        let mut conn = store_db.pool().acquire().await.unwrap();
        assert_eq!(
            store::payout_reversed_minor(&mut conn, &payout.payout_id)
                .await
                .unwrap(),
            Some(500)
        );
        drop(conn);
        store_db.close().await;

        // A connected account's failed bank payout.
        let failed = json!({"id": "evt_bank", "object": "event", "type": "payout.failed",
            "account": "acct_jon", "created": 1_700_000_001,
            "data": {"object": {"id": "po_bank", "object": "payout", "amount": 500,
                "currency": "usd", "status": "failed", "failure_code": "account_closed",
                "failure_message": "The bank account has been closed."}}})
        .to_string();
        assert_eq!(
            deliver(addr, &failed, signed(WEBHOOK_SECRETS[1], &failed)).await,
            200
        );
        assert_eq!(
            deliver(addr, &failed, signed(WEBHOOK_SECRETS[1], &failed)).await,
            200
        );
        // Signed but not an event payout can read.
        let unreadable = json!({"type": "payout.failed"}).to_string();
        assert_eq!(
            deliver(addr, &unreadable, signed(WEBHOOK_SECRETS[0], &unreadable)).await,
            400
        );
        assert_eq!(recorded(&db).await, (3, (1, 1)), "on {}", db.backend());
        // Nothing moved in the ledger.
        assert_eq!(balance(&mut jon, "jon").await, before);
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}
