//! What the payout tests share: a real catalog and a real payout service in this process,
//! on loopback, with a sandbox provider the test can look into, clients per role, and the
//! payout requests and reads the tests repeat.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ovation_auth::Role;
use ovation_payout::provider::SandboxProvider;
use ovation_payout::store;
use ovation_payout::worker::WorkerConfig;
use ovation_proto::catalog as catalog_pb;
use ovation_proto::catalog::catalog_service_client::CatalogServiceClient;
use ovation_proto::payout as pb;
use ovation_proto::payout::payout_service_client::PayoutServiceClient;
use ovation_store::{Db, DbOptions};
use ovation_testkit::services::{catalog_config, payout_config, start_payout};
use ovation_testkit::{Bearer, PayoutClient, Running, TestDatabase};
use ovation_types::Clock;
use tonic::transport::Channel;

/// Longest any condition is polled for.
pub const EVENTUALLY: Duration = Duration::from_secs(30);

/// A catalog seeded with the demo economy (payout: 500 USD cents per 1000 diamonds,
/// minimum 1000), on its own SQLite file.
pub struct Catalog {
    pub running: Running,
    _db: TestDatabase,
}

/// The demo catalog with diamonds cashable at once and payouts allowed to a newly set
/// account at once (maturity and cooling-off 0 h, set by one admin UpdateEconomyParameters),
/// for the tests that are not about them. The demo's daily cap (100000 diamonds) and
/// review threshold (20000) stay.
pub async fn start_catalog() -> Catalog {
    start_catalog_with_maturity(0).await
}

/// The demo catalog with diamonds maturing after `hours` (the demo's own is 72), and no
/// cooling-off after a payout account change.
pub async fn start_catalog_with_maturity(hours: i32) -> Catalog {
    let db = TestDatabase::sqlite();
    let config = catalog_config(db.url(), true);
    let running = ovation_testkit::services::start_catalog(config).await;
    let catalog = Catalog { running, _db: db };
    let economy = catalog
        .update_economy(catalog_pb::UpdateEconomyParametersRequest {
            diamond_maturity_hours: Some(hours),
            payout_account_cooling_off_hours: Some(0),
            ..Default::default()
        })
        .await;
    assert_eq!(economy.diamond_maturity_hours, hours);
    catalog
}

impl Catalog {
    /// An admin sets the economy's diamond maturity (a new economy version).
    pub async fn set_maturity(&self, hours: i32) {
        let economy = self
            .update_economy(catalog_pb::UpdateEconomyParametersRequest {
                diamond_maturity_hours: Some(hours),
                ..Default::default()
            })
            .await;
        assert_eq!(economy.diamond_maturity_hours, hours);
    }

    /// An admin updates the economy (`change`, under a fresh idempotency key); the new
    /// version.
    pub async fn update_economy(
        &self,
        change: catalog_pb::UpdateEconomyParametersRequest,
    ) -> catalog_pb::EconomyParameters {
        let mut admin =
            CatalogServiceClient::with_interceptor(self.running.channel().await, Bearer::admin());
        admin
            .update_economy_parameters(catalog_pb::UpdateEconomyParametersRequest {
                idempotency_key: format!("economy-{}", uuid()),
                ..change
            })
            .await
            .unwrap()
            .into_inner()
            .economy_parameters
            .unwrap()
    }
}

/// A payout service on `db` next to `catalog`, with a fresh in-memory sandbox.
pub async fn start(db: &TestDatabase, catalog: &Catalog) -> (Running, Arc<SandboxProvider>) {
    start_with_worker(db, catalog, WorkerConfig::FAST_TESTS).await
}

/// [`start`], with the payout worker paced by `worker`.
pub async fn start_with_worker(
    db: &TestDatabase,
    catalog: &Catalog,
    worker: WorkerConfig,
) -> (Running, Arc<SandboxProvider>) {
    start_configured(db, catalog, worker, Clock::system()).await
}

/// [`start`], reading the time from `clock` (a manual one the test moves).
pub async fn start_with_clock(
    db: &TestDatabase,
    catalog: &Catalog,
    clock: Clock,
) -> (Running, Arc<SandboxProvider>) {
    start_configured(db, catalog, WorkerConfig::FAST_TESTS, clock).await
}

async fn start_configured(
    db: &TestDatabase,
    catalog: &Catalog,
    worker: WorkerConfig,
    clock: Clock,
) -> (Running, Arc<SandboxProvider>) {
    let sandbox = Arc::new(SandboxProvider::in_memory());
    let mut config = payout_config(db.url(), &catalog.running.endpoint(), sandbox.clone());
    config.worker = worker;
    config.clock = clock;
    let running = start_payout(config).await;
    (running, sandbox)
}

pub async fn client(running: &Running, bearer: Bearer) -> PayoutClient {
    PayoutServiceClient::with_interceptor(running.channel().await, bearer)
}

/// The gifting service's token, the only caller that credits diamonds.
pub fn as_gifting() -> Bearer {
    Bearer::role("gifting", Role::GiftingService)
}

/// The clients a test needs: admin, gifting, and one per creator on demand.
pub struct Clients {
    pub admin: PayoutClient,
    pub gifting: PayoutClient,
    channel: Channel,
}

impl Clients {
    pub async fn new(running: &Running) -> Clients {
        let channel = running.channel().await;
        Clients {
            admin: PayoutServiceClient::with_interceptor(channel.clone(), Bearer::admin()),
            gifting: PayoutServiceClient::with_interceptor(channel.clone(), as_gifting()),
            channel,
        }
    }

    pub fn creator(&self, id: &str) -> PayoutClient {
        PayoutServiceClient::with_interceptor(self.channel.clone(), Bearer::creator(id))
    }

    pub fn with(&self, bearer: Bearer) -> PayoutClient {
        PayoutServiceClient::with_interceptor(self.channel.clone(), bearer)
    }
}

pub async fn register(c: &Clients, id: &str) -> pb::Creator {
    c.creator(id)
        .register_creator(pb::RegisterCreatorRequest {
            idempotency_key: format!("register-{id}"),
            creator_id: id.into(),
            display_name: format!("Creator {id}"),
        })
        .await
        .unwrap()
        .into_inner()
        .creator
        .unwrap()
}

pub async fn set_account(c: &Clients, id: &str, reference: &str) -> pb::Creator {
    c.creator(id)
        .set_payout_account(pb::SetPayoutAccountRequest {
            idempotency_key: format!("account-{id}-{reference}"),
            creator_id: id.into(),
            account_reference: reference.into(),
            holder_name: format!("Holder of {id}"),
        })
        .await
        .unwrap()
        .into_inner()
        .creator
        .unwrap()
}

/// `id` as `client` reads it (GetCreator).
pub async fn creator(client: &mut PayoutClient, id: &str) -> pb::Creator {
    client
        .get_creator(pb::GetCreatorRequest {
            creator_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .creator
        .unwrap()
}

/// A review that verifies version `version` of `id`'s payout account.
pub fn review(key: &str, id: &str, version: i64) -> pb::VerifyPayoutAccountRequest {
    pb::VerifyPayoutAccountRequest {
        idempotency_key: key.into(),
        creator_id: id.into(),
        decision: pb::VerificationStatus::Verified as i32,
        account_version: version,
        reason: "documents checked".into(),
        ..Default::default()
    }
}

/// `client` sets a payout account; the account as recorded.
pub async fn account_set(
    client: &mut PayoutClient,
    request: pb::SetPayoutAccountRequest,
) -> pb::PayoutAccount {
    client
        .set_payout_account(request)
        .await
        .unwrap()
        .into_inner()
        .creator
        .unwrap()
        .payout_account
        .unwrap()
}

/// `client` reviews a payout account; the account as reviewed.
pub async fn account_reviewed(
    client: &mut PayoutClient,
    request: pb::VerifyPayoutAccountRequest,
) -> pb::PayoutAccount {
    client
        .verify_payout_account(request)
        .await
        .unwrap()
        .into_inner()
        .creator
        .unwrap()
        .payout_account
        .unwrap()
}

/// An admin verifies `id`'s current payout account (naming the version it read).
pub async fn verify(c: &Clients, id: &str) -> pb::Creator {
    let mut admin = c.admin.clone();
    let version = creator(&mut admin, id)
        .await
        .payout_account
        .map(|a| a.version)
        .unwrap_or_default();
    admin
        .verify_payout_account(review(&format!("verify-{id}-{}", uuid()), id, version))
        .await
        .unwrap()
        .into_inner()
        .creator
        .unwrap()
}

/// A registered creator with a verified `reference` account.
pub async fn verified_creator(c: &Clients, id: &str, reference: &str) {
    register(c, id).await;
    set_account(c, id, reference).await;
    verify(c, id).await;
}

pub fn credit_request(operation: &str, creator: &str, coins: i64) -> pb::CreditDiamondsRequest {
    pb::CreditDiamondsRequest {
        idempotency_key: format!("credit-{operation}"),
        operation_id: operation.into(),
        creator_id: creator.into(),
        coins,
        creator_share_bps: 5_000,
        sender_user_id: "viewer-1".into(),
        stream_id: "stream-1".into(),
        gift_id: "rose".into(),
        gift_version: 1,
    }
}

/// One credit of a batch, as [`credit_request`] without the key.
pub fn credit_item(operation: &str, creator: &str, coins: i64) -> pb::CreditDiamondsItem {
    let r = credit_request(operation, creator, coins);
    pb::CreditDiamondsItem {
        operation_id: r.operation_id,
        creator_id: r.creator_id,
        coins: r.coins,
        creator_share_bps: r.creator_share_bps,
        sender_user_id: r.sender_user_id,
        stream_id: r.stream_id,
        gift_id: r.gift_id,
        gift_version: r.gift_version,
    }
}

pub fn credit_batch(items: Vec<pb::CreditDiamondsItem>) -> pb::CreditDiamondsBatchRequest {
    pb::CreditDiamondsBatchRequest { items }
}

/// Credits `creator` with `diamonds` (as a gift of twice as many coins at 50 %).
pub async fn earn(c: &Clients, operation: &str, creator: &str, diamonds: i64) -> pb::Credit {
    let mut gifting = c.gifting.clone();
    gifting
        .credit_diamonds(credit_request(operation, creator, diamonds * 2))
        .await
        .unwrap()
        .into_inner()
        .credit
        .unwrap()
}

/// `id`'s balance without its read time, so two reads of the same figures compare equal.
pub async fn balance(client: &mut PayoutClient, id: &str) -> pb::DiamondBalance {
    pb::DiamondBalance {
        read_time: None,
        ..balance_as_read(client, id).await
    }
}

/// `id`'s balance as GetDiamondBalance answers it.
pub async fn balance_as_read(client: &mut PayoutClient, id: &str) -> pb::DiamondBalance {
    client
        .get_diamond_balance(pb::GetDiamondBalanceRequest {
            creator_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .balance
        .unwrap()
}

pub fn request_payout(key: &str, creator: &str, diamonds: i64) -> pb::RequestPayoutRequest {
    pb::RequestPayoutRequest {
        idempotency_key: key.into(),
        creator_id: creator.into(),
        diamonds,
    }
}

/// `client` asks to pay `creator` `diamonds`; the payout as requested.
pub async fn requested_payout(
    client: &mut PayoutClient,
    key: &str,
    creator: &str,
    diamonds: i64,
) -> pb::Payout {
    client
        .request_payout(request_payout(key, creator, diamonds))
        .await
        .unwrap()
        .into_inner()
        .payout
        .unwrap()
}

/// An admin's suspension of `id` for fraud review.
pub fn suspend_request(id: &str, key: &str) -> pb::SuspendCreatorRequest {
    pb::SuspendCreatorRequest {
        idempotency_key: key.into(),
        creator_id: id.into(),
        actor: String::new(),
        reason: "fraud review".into(),
    }
}

/// An admin's reinstatement of `id`, cleared.
pub fn reinstate_request(id: &str, key: &str) -> pb::ReinstateCreatorRequest {
    pb::ReinstateCreatorRequest {
        idempotency_key: key.into(),
        creator_id: id.into(),
        actor: String::new(),
        reason: "cleared".into(),
    }
}

pub async fn get_payout(client: &mut PayoutClient, id: &str) -> pb::Payout {
    client
        .get_payout(pb::GetPayoutRequest {
            payout_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .payout
        .unwrap()
}

/// A one-slot worker kept busy: creator `blocker` (paid by a `sandbox-slow-<ms>` account)
/// requests a payout and the worker waits `ms` for the provider's answer, so payouts
/// requested meanwhile stay HELD and unsent. Returns the blocking payout's id.
pub async fn occupy_worker(
    c: &Clients,
    sandbox: &ovation_payout::provider::SandboxProvider,
    ms: u64,
) -> String {
    verified_creator(c, "blocker", &format!("sandbox-slow-{ms}")).await;
    earn(c, "blocker-credit", "blocker", 1_000).await;
    let id = requested_payout(
        &mut c.creator("blocker"),
        "blocker-payout",
        "blocker",
        1_000,
    )
    .await
    .payout_id;
    provider_called(sandbox, &id).await;
    id
}

/// Waits until the worker has called the provider for payout `id`.
pub async fn provider_called(sandbox: &ovation_payout::provider::SandboxProvider, id: &str) {
    eventually(&format!("the worker calls the provider for {id}"), || {
        let called = sandbox.calls(id) >= 1;
        async move { called.then_some(()) }
    })
    .await;
}

/// A worker that calls the provider for one payout at a time.
pub fn one_slot(provider_timeout: Duration) -> WorkerConfig {
    WorkerConfig {
        concurrency: 1,
        provider_timeout,
        ..WorkerConfig::FAST_TESTS
    }
}

/// Polls `check` until it yields a value, for at most [`EVENTUALLY`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {EVENTUALLY:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for payout `id` to be PAID or RELEASED (it must not wait in REVIEW for nobody);
/// returns it settled.
pub async fn settled(client: &PayoutClient, id: &str) -> pb::Payout {
    eventually(&format!("payout {id} settles"), || {
        let mut client = client.clone();
        let id = id.to_owned();
        async move {
            let payout = get_payout(&mut client, &id).await;
            let open = [pb::PayoutState::Held as i32, pb::PayoutState::Review as i32];
            (!open.contains(&payout.state)).then_some(payout)
        }
    })
    .await
}

/// I1 and I2 over gRPC (GetLedgerSummary) and the balance rows against the postings
/// (straight from the service's database).
pub async fn assert_ledger_sound(c: &Clients, db: &TestDatabase) -> pb::GetLedgerSummaryResponse {
    let mut admin = c.admin.clone();
    let summary = admin
        .get_ledger_summary(pb::GetLedgerSummaryRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        summary.total_diamonds,
        0,
        "I1 on {}: {summary:?}",
        db.backend()
    );
    assert_eq!(summary.unbalanced_entry_count, 0, "I1 on {}", db.backend());
    assert_eq!(summary.negative_balance_count, 0, "I2 on {}", db.backend());
    assert_eq!(
        summary.lifetime_mismatch_count,
        0,
        "lifetime identity on {}",
        db.backend()
    );
    assert_eq!(summary.payouts_sent_in_debt_count, 0, "on {}", db.backend());
    // The clawback sink holds what was clawed back, less the debt still owed.
    assert_eq!(
        kind_balance(&summary, pb::AccountKind::Clawback),
        summary.clawed_back_diamonds - summary.debt_diamonds,
        "on {}",
        db.backend()
    );
    let store = Db::connect(db.url(), &DbOptions::default()).await.unwrap();
    let mut conn = store.pool().acquire().await.unwrap();
    let direct = store::ledger_summary(&mut conn).await.unwrap();
    assert_eq!(
        direct.balance_mismatches,
        0,
        "balance rows agree with postings on {}",
        db.backend()
    );
    drop(conn);
    store.close().await;
    summary
}

/// (action, actor, caller, reason) of every journal line of `id`, oldest first, straight
/// from the service's database.
pub async fn journal(db: &TestDatabase, id: &str) -> Vec<(String, String, String, String)> {
    let store_db = Db::connect(db.url(), &DbOptions::default()).await.unwrap();
    let mut conn = store_db.pool().acquire().await.unwrap();
    let events = store::creator_events(
        &mut conn,
        &ovation_types::ResourceId::parse(id).unwrap(),
        100,
    )
    .await
    .unwrap();
    drop(conn);
    store_db.close().await;
    events
        .into_iter()
        .map(|e| (e.action.to_owned(), e.actor, e.caller, e.reason))
        .collect()
}

/// A chargeback's clawback of `coins` of credit `operation`, keyed `id`.
pub fn clawback_request(id: &str, operation: &str, coins: i64) -> pb::ClawbackDiamondsRequest {
    pb::ClawbackDiamondsRequest {
        clawback_id: id.into(),
        operation_id: operation.into(),
        coins,
        cause: pb::ClawbackCause::PurchaseReversal as i32,
        cause_id: "purchase-1".into(),
        reason: "chargeback".into(),
    }
}

/// The wallet service's token (it claws back for reversed purchases).
pub fn as_wallet() -> Bearer {
    Bearer::role("wallet", Role::WalletService)
}

/// `client` claws back; the clawback and the balance right after it.
pub async fn clawed(
    client: &mut PayoutClient,
    request: pb::ClawbackDiamondsRequest,
) -> (pb::Clawback, pb::DiamondBalance) {
    let reply = client
        .clawback_diamonds(request)
        .await
        .unwrap()
        .into_inner();
    (reply.clawback.unwrap(), reply.balance.unwrap())
}

/// (pending, available, held, paid out, debt, lifetime) of a balance.
pub fn figures(b: &pb::DiamondBalance) -> (i64, i64, i64, i64, i64, i64) {
    (
        b.pending_diamonds,
        b.available_diamonds,
        b.held_diamonds,
        b.paid_out_diamonds,
        b.debt_diamonds,
        b.lifetime_earned_diamonds,
    )
}

/// The lifetime identity of one balance: lifetime = pending + available + held + paid out.
pub fn assert_identity(b: &pb::DiamondBalance) {
    assert_eq!(
        b.lifetime_earned_diamonds,
        b.pending_diamonds + b.available_diamonds + b.held_diamonds + b.paid_out_diamonds,
        "{b:?}"
    );
}

pub fn kind_balance(summary: &pb::GetLedgerSummaryResponse, kind: pb::AccountKind) -> i64 {
    summary
        .kinds
        .iter()
        .find(|k| k.kind == kind as i32)
        .map(|k| k.balance_diamonds)
        .unwrap_or_default()
}

pub fn uuid() -> String {
    format!("{:x}", rand::random::<u64>())
}
