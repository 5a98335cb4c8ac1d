//! Payout through Stripe Connect with two replicas (issue 15): two `ovation-payout`
//! processes on one database pay creators through an in-test server standing for Stripe
//! that answers slowly; one replica is SIGKILLed mid-load. Every payout is paid exactly
//! once: Stripe's record (the stand-in's transfers) has one transfer per payout id, and
//! the ledger agrees (each payout PAID with that transfer's id, the diamonds paid out once,
//! the ledger balanced). And a payout binary configured with the sandbox and without
//! OVATION_ALLOW_SANDBOX refuses to start, naming the setting.

use std::net::SocketAddr;
use std::time::Duration;

use ovation_auth::Role;
use ovation_e2e::process_suite::{Backend, TempDir, clean_env};
use ovation_e2e::{EXIT_BOUND, ServiceProcess, binary, free_addr, on_sqlite_and_postgres};
use ovation_proto::catalog as catalog_pb;
use ovation_proto::catalog::catalog_service_client::CatalogServiceClient;
use ovation_proto::payout as pb;
use ovation_proto::payout::payout_service_client::PayoutServiceClient;
use ovation_testkit::stripe_connect::{FakeStripe, TEST_SECRET_KEY};
use ovation_testkit::{Bearer, PayoutClient, TestDatabase, channel, test_keys_file};
use tokio::process::Command;

const CREATORS: usize = 12;
const PAYOUTS_PER_CREATOR: usize = 3;
const DIAMONDS: i64 = 1_000;
/// Longest the load may take to settle (a killed replica's leases expire after the
/// provider timeout plus ten seconds).
const SETTLE_BOUND: Duration = Duration::from_secs(90);

/// An `ovation-payout` process paying through Stripe Connect at `stripe`.
fn payout_command(
    addr: SocketAddr,
    db: &TestDatabase,
    catalog: &str,
    stripe: &str,
    key: &str,
) -> Command {
    let mut command = Command::new(binary("ovation-payout", "ovation-payout"));
    clean_env(&mut command);
    let keys = test_keys_file().display().to_string();
    command.envs([
        ("OVATION_LISTEN_ADDR", addr.to_string()),
        ("OVATION_DATABASE_URL", db.url().to_owned()),
        ("OVATION_AUTH_KEYS_FILE", keys.clone()),
        ("OVATION_SERVICE_KEYS_FILE", keys),
        ("OVATION_CATALOG_URL", catalog.to_owned()),
        ("OVATION_PAYOUT_PROVIDER", "stripe_connect".to_owned()),
        ("OVATION_STRIPE_API_BASE", stripe.to_owned()),
        ("OVATION_STRIPE_SECRET_KEY_FILE", key.to_owned()),
        ("OVATION_PAYOUT_POLL_INTERVAL_MS", "50".to_owned()),
        ("OVATION_PAYOUT_PROVIDER_TIMEOUT_MS", "2000".to_owned()),
        ("OVATION_PAYOUT_BACKOFF_BASE_MS", "50".to_owned()),
        ("OVATION_PAYOUT_BACKOFF_MAX_MS", "500".to_owned()),
        ("OVATION_RATE_LIMIT_PER_SECOND", "100000".to_owned()),
        ("OVATION_RATE_LIMIT_BURST", "100000".to_owned()),
        ("OVATION_DB_CONNECTIONS_MAX", "4".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ]);
    command
}

async fn payout_client(addr: SocketAddr, bearer: Bearer) -> PayoutClient {
    PayoutServiceClient::with_interceptor(channel(&format!("http://{addr}")).await, bearer)
}

/// A creator with a verified connected account and `diamonds` credited (as gifting).
async fn creator_with_diamonds(addr: SocketAddr, id: &str, diamonds: i64) {
    let mut me = payout_client(addr, Bearer::creator(id)).await;
    me.register_creator(pb::RegisterCreatorRequest {
        idempotency_key: format!("reg-{id}"),
        creator_id: id.into(),
        display_name: format!("Creator {id}"),
    })
    .await
    .unwrap();
    let account = me
        .set_payout_account(pb::SetPayoutAccountRequest {
            idempotency_key: format!("acct-{id}"),
            creator_id: id.into(),
            account_reference: format!("acct_{}", id.replace('-', "")),
            holder_name: format!("Holder {id}"),
        })
        .await
        .unwrap()
        .into_inner()
        .creator
        .unwrap()
        .payout_account
        .unwrap();
    payout_client(addr, Bearer::admin())
        .await
        .verify_payout_account(pb::VerifyPayoutAccountRequest {
            idempotency_key: format!("verify-{id}"),
            creator_id: id.into(),
            decision: pb::VerificationStatus::Verified as i32,
            account_version: account.version,
            reason: "documents checked".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    payout_client(addr, Bearer::role("gifting", Role::GiftingService))
        .await
        .credit_diamonds(pb::CreditDiamondsRequest {
            idempotency_key: format!("credit-{id}"),
            operation_id: format!("gift-{id}"),
            creator_id: id.into(),
            coins: diamonds * 2,
            creator_share_bps: 5_000,
            sender_user_id: "viewer-1".into(),
            stream_id: "stream-1".into(),
            gift_id: "rose".into(),
            gift_version: 1,
        })
        .await
        .unwrap();
}

async fn two_replicas_one_killed_pay_every_payout_once(backend: Backend) {
    let Some(db) = backend.database().await else {
        return;
    };
    // The catalog in this process: diamonds cashable at once, no cooling-off.
    let catalog_db = TestDatabase::sqlite();
    let catalog = ovation_testkit::services::start_catalog(
        ovation_testkit::services::catalog_config(catalog_db.url(), true),
    )
    .await;
    CatalogServiceClient::with_interceptor(catalog.channel().await, Bearer::admin())
        .update_economy_parameters(catalog_pb::UpdateEconomyParametersRequest {
            idempotency_key: "economy-1".into(),
            diamond_maturity_hours: Some(0),
            payout_account_cooling_off_hours: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    let stripe = FakeStripe::start().await;
    let dir = TempDir::new("payout-replicas");
    let key_file = dir.0.join("stripe-secret-key");
    std::fs::write(&key_file, format!("{TEST_SECRET_KEY}\n")).unwrap();
    let key = key_file.display().to_string();

    let addrs = [free_addr(), free_addr()];
    let command = |addr| payout_command(addr, &db, &catalog.endpoint(), &stripe.base_url(), &key);
    // The first applies the migrations; the second starts on the migrated database.
    let mut first = ServiceProcess::start(command(addrs[0]), addrs[0]).await;
    let mut second = ServiceProcess::start(command(addrs[1]), addrs[1]).await;

    let ids: Vec<String> = (0..CREATORS).map(|i| format!("cr{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        creator_with_diamonds(addrs[i % 2], id, DIAMONDS * PAYOUTS_PER_CREATOR as i64).await;
    }
    // Stripe answers slowly from now on: transfers pile up in flight on both replicas.
    stripe.set_delay(Duration::from_millis(400));
    let mut payouts = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let mut me = payout_client(addrs[i % 2], Bearer::creator(id)).await;
        for n in 0..PAYOUTS_PER_CREATOR {
            let payout = me
                .request_payout(pb::RequestPayoutRequest {
                    idempotency_key: format!("{id}-p{n}"),
                    creator_id: id.clone(),
                    diamonds: DIAMONDS,
                })
                .await
                .unwrap()
                .into_inner()
                .payout
                .unwrap();
            payouts.push(payout.payout_id);
        }
    }
    // Mid-load: some transfers made, not all.
    let deadline = tokio::time::Instant::now() + SETTLE_BOUND;
    while stripe.transfers().len() < 4 {
        assert!(tokio::time::Instant::now() < deadline, "no transfers made");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill_hard(EXIT_BOUND).await.unwrap();
    let killed_at = stripe.transfers().len();
    assert!(
        killed_at < payouts.len(),
        "the kill came after the load ended"
    );

    // The survivor settles everything, the killed replica's payouts once its leases expire.
    let mut admin = payout_client(addrs[1], Bearer::admin()).await;
    let mut settled = Vec::new();
    for id in &payouts {
        loop {
            let payout = admin
                .get_payout(pb::GetPayoutRequest {
                    payout_id: id.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .payout
                .unwrap();
            if payout.state != pb::PayoutState::Held as i32 {
                settled.push(payout);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "payout {id} not settled; survivor's log:\n{}",
                second.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Stripe's record: one transfer per payout id, none else; the ledger agrees.
    let transfers = stripe.transfers();
    assert_eq!(transfers.len(), payouts.len(), "{transfers:?}");
    for payout in &settled {
        assert_eq!(payout.state, pb::PayoutState::Paid as i32, "{payout:?}");
        let made = stripe.transfers_for(&payout.payout_id);
        assert_eq!(made.len(), 1, "payout {} on {backend:?}", payout.payout_id);
        assert_eq!(payout.provider_reference, made[0].id);
        assert_eq!(made[0].amount, payout.amount.as_ref().unwrap().amount_minor);
    }
    let summary = admin
        .get_ledger_summary(pb::GetLedgerSummaryRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.total_diamonds, 0, "{summary:?}");
    assert_eq!(summary.unbalanced_entry_count, 0);
    assert_eq!(summary.negative_balance_count, 0);
    assert_eq!(summary.lifetime_mismatch_count, 0);
    for id in &ids {
        let balance = admin
            .get_diamond_balance(pb::GetDiamondBalanceRequest {
                creator_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .balance
            .unwrap();
        assert_eq!(
            (
                balance.paid_out_diamonds,
                balance.held_diamonds,
                balance.available_diamonds
            ),
            (DIAMONDS * PAYOUTS_PER_CREATOR as i64, 0, 0),
            "{id} on {backend:?}"
        );
    }
    second.terminate(EXIT_BOUND).await.unwrap();
    catalog.stop().await.unwrap();
}

on_sqlite_and_postgres!(
    two_replicas_one_killed_pay_every_payout_once,
    two_payout_replicas_one_killed_pay_every_payout_once_sqlite,
    two_payout_replicas_one_killed_pay_every_payout_once_postgres,
);

/// The sandbox moves no real money: without OVATION_ALLOW_SANDBOX the binary exits
/// non-zero before serving and names the setting.
#[tokio::test]
async fn the_payout_binary_refuses_the_sandbox_unless_allowed() {
    let dir = TempDir::new("payout-sandbox-refused");
    let mut command = Command::new(binary("ovation-payout", "ovation-payout"));
    clean_env(&mut command);
    command.envs([
        ("OVATION_LISTEN_ADDR", free_addr().to_string()),
        (
            "OVATION_DATABASE_URL",
            format!("sqlite://{}", dir.0.join("payout.db").display()),
        ),
        ("OVATION_PAYOUT_PROVIDER", "sandbox".to_owned()),
    ]);
    let mut process = ServiceProcess::spawn(command).unwrap();
    let status = process.wait_exit(EXIT_BOUND).await.unwrap();
    assert!(!status.success(), "{status}");
    let stderr = process.stderr();
    assert!(stderr.contains("OVATION_ALLOW_SANDBOX"), "{stderr}");
    assert!(!dir.0.join("payout.db").exists(), "nothing was written");
}
