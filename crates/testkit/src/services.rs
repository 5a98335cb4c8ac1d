//! The services started in this process on loopback, configured for tests: the test keys
//! for callers and for each service's own identity, rate limits out of the way, the payout
//! worker at its test pace. A service starts on its configuration's `listen_addr` (any
//! free port unless a test sets one, e.g. to bring a service back where its peers expect
//! it).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use ovation_catalog::CatalogConfig;
use ovation_gifting::{GiftingConfig, GiftingSettings};
use ovation_payout::PayoutConfig;
use ovation_payout::provider::PayoutProvider;
use ovation_payout::worker::WorkerConfig;
use ovation_server::peer::{CatalogPeerArgs, IdentityArgs, PayoutPeerArgs, WalletPeerArgs};
use ovation_server::{ServerConfig, Shutdown, StartError};
use ovation_wallet::payment::PaymentProvider;
use ovation_wallet::{WalletConfig, WalletSettings};
use tokio::net::TcpListener;

use crate::{Running, server_config, test_keys_file};

/// How a service under test signs its calls to its peers: with its own key of the test keys.
pub fn identity() -> IdentityArgs {
    IdentityArgs {
        service_keys_file: Some(test_keys_file()),
        service_token_file: None,
    }
}

/// A catalog on `database_url`, seeded with the demo economy when `seed_demo`.
pub fn catalog_config(database_url: &str, seed_demo: bool) -> CatalogConfig {
    CatalogConfig {
        server: server_config(database_url),
        seed_demo,
    }
}

/// Where a test wallet delivers clawback orders unless the test names a payout: an
/// address nothing listens on, so its orders stay PENDING (retried) and never reach a
/// stranger's payout.
pub const NO_PAYOUT_URL: &str = "http://127.0.0.1:1";

/// A wallet on `database_url` reading the catalog at `catalog_url`, paid through `provider`,
/// on the system clock. Its clawback orders go to [`NO_PAYOUT_URL`]; a test that delivers
/// them sets `config.payout` (`PayoutPeerArgs::plaintext(payout_url)`).
pub fn wallet_config(
    database_url: &str,
    catalog_url: &str,
    settings: WalletSettings,
    provider: Arc<dyn PaymentProvider>,
) -> WalletConfig {
    WalletConfig {
        server: server_config(database_url),
        wallet: settings,
        catalog: CatalogPeerArgs::plaintext(catalog_url),
        payout: PayoutPeerArgs::plaintext(NO_PAYOUT_URL),
        identity: identity(),
        // The test kits run the sandbox (and whatever else a test adds).
        providers: ovation_wallet::payment::Providers::sandbox(provider),
        webhook_addr: None,
        // The system clock (Clock's default); a test that moves time sets its own.
        clock: Default::default(),
    }
}

/// A payout service on `database_url` reading the catalog at `catalog_url`, paying through
/// `provider`, its worker at the test pace.
pub fn payout_config(
    database_url: &str,
    catalog_url: &str,
    provider: Arc<dyn PayoutProvider>,
) -> PayoutConfig {
    PayoutConfig {
        server: server_config(database_url),
        catalog: CatalogPeerArgs::plaintext(catalog_url),
        identity: identity(),
        provider,
        account_references: Default::default(),
        webhook: None,
        worker: WorkerConfig::FAST_TESTS,
        clock: Default::default(),
    }
}

/// Where gifting's peers are.
#[derive(Clone, Debug)]
pub struct GiftingPeers {
    pub catalog: String,
    pub wallet: String,
    pub payout: String,
}

/// Gifting on `database_url` with its peers at `peers`.
pub fn gifting_config(
    database_url: &str,
    peers: &GiftingPeers,
    settings: GiftingSettings,
) -> GiftingConfig {
    GiftingConfig {
        server: server_config(database_url),
        gifting: settings,
        catalog: CatalogPeerArgs::plaintext(&peers.catalog),
        wallet: WalletPeerArgs::plaintext(&peers.wallet),
        payout: PayoutPeerArgs::plaintext(&peers.payout),
        identity: identity(),
    }
}

pub async fn start_catalog(config: CatalogConfig) -> Running {
    let at = Address::of(&config.server);
    start("the catalog", at, |l, s| ovation_catalog::run(config, l, s)).await
}

pub async fn start_wallet(config: WalletConfig) -> Running {
    let at = Address::of(&config.server);
    start("the wallet", at, |l, s| ovation_wallet::run(config, l, s)).await
}

pub async fn start_payout(config: PayoutConfig) -> Running {
    let at = Address::of(&config.server);
    start("payout", at, |l, s| ovation_payout::run(config, l, s)).await
}

pub async fn start_gifting(config: GiftingConfig) -> Running {
    let at = Address::of(&config.server);
    start("gifting", at, |l, s| ovation_gifting::run(config, l, s)).await
}

/// Where a service listens and keeps its data, for a start-up failure's message.
struct Address {
    listen: SocketAddr,
    database: String,
}

impl Address {
    fn of(server: &ServerConfig) -> Address {
        Address {
            listen: server.listen_addr,
            database: server.database_url.clone(),
        }
    }
}

/// Starts `run` on `at`; a service that does not start fails the test, saying where.
async fn start<F, Fut>(service: &str, at: Address, run: F) -> Running
where
    F: FnOnce(TcpListener, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), StartError>> + Send + 'static,
{
    Running::start_on(at.listen, run).await.unwrap_or_else(|e| {
        panic!(
            "{service} did not start on {} ({}): {e}",
            at.listen, at.database
        )
    })
}
