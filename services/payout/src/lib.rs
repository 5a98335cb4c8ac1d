//! The payout service: creators, their double-entry diamond ledger, credits from gifts
//! and cash-outs through a payout provider (docs/economy.md, issue 4).
//!
//! Layout:
//! - [`domain`]: creators, the ledger, credits and payouts (plain Rust, unit- and
//!   property-tested).
//! - [`store`]: all of its SQL.
//! - [`operations`]: the use cases (creators and their accounts, credits, payout
//!   requests, reads), taking domain commands and returning [`operations::PayoutError`].
//! - [`grpc`]: the thin gRPC edge (authorize, parse into a command, run it, map to proto
//!   and errors).
//! - [`economy`]: the payout rate and minimum, read from the catalog.
//! - [`provider`]: the payout-provider trait and the sandbox provider.
//! - [`worker`]: the background task that drives payouts to PAID or RELEASED.
//! - [`run`]: start-up: database, migrations, worker, then the shared server.
//!
//! Limits: ids ≤ 64, names and actors ≤ 128, reasons ≤ 500, account references ≤ 255
//! characters; coins and diamonds 1..=10^12 per operation; ≤ 500 ids per ListCredits;
//! pages ≤ 500; provider calls bounded in time, number in flight and retries (docs/limits.md).

pub mod domain;
pub mod economy;
pub mod grpc;
pub mod operations;
pub mod provider;
pub mod store;
pub mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ovation_auth::Role;
use ovation_proto::payout::payout_service_server::PayoutServiceServer;
use ovation_server::config::ServerArgs;
use ovation_server::peer::{CatalogPeerArgs, IdentityArgs, ServiceIdentity};
use ovation_server::{ServerConfig, ServiceSpec, ServiceStart, Shutdown, StartError};
use ovation_store::Db;
use ovation_types::Clock;
use tokio::net::TcpListener;
use tonic::service::Routes;

use crate::provider::{PayoutProvider, SandboxProvider};
use crate::worker::{Wakeup, WorkerConfig};

pub const SPEC: ServiceSpec = ServiceSpec {
    name: "payout",
    grpc_service: "ovation.payout.v1.PayoutService",
};

/// Where the payout service listens unless told otherwise.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:50054";
/// Where the sandbox provider keeps its records unless told otherwise.
pub const DEFAULT_SANDBOX_DIR: &str = "data/payout-sandbox";

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The payout service's settings: the shared ones plus its own.
#[derive(clap::Parser, Clone, Debug)]
#[command(name = "ovation-payout", version, about = "Ovation's payout service")]
pub struct PayoutArgs {
    /// Address to listen on.
    #[arg(long, env = "OVATION_LISTEN_ADDR", default_value = DEFAULT_LISTEN_ADDR)]
    pub listen: SocketAddr,
    /// Database URL: postgres://… or sqlite://path [default: sqlite://data/payout.db]
    #[arg(long, env = "OVATION_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Directory where the sandbox payout provider keeps its records (it stands for an
    /// external system, so they outlive the service).
    #[arg(long, env = "OVATION_PAYOUT_SANDBOX_DIR", default_value = DEFAULT_SANDBOX_DIR)]
    pub sandbox_dir: PathBuf,
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[command(flatten)]
    pub catalog: CatalogArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Where the catalog is: the flags and variables of
/// [`ovation_server::peer::CatalogPeerArgs`] (`--catalog-url`, `OVATION_CATALOG_URL`, …),
/// declared here with argument ids of their own. `CatalogPeerArgs` names its fields
/// `tls_cert_file`, … like `ServerArgs`' TLS flags, and clap refuses two arguments with
/// one id when both are flattened into one command.
#[derive(clap::Args, Clone, Debug)]
pub struct CatalogArgs {
    /// URL of the catalog: http://host:port, or https://host:port with a CA file.
    #[arg(
        id = "catalog_url",
        long = "catalog-url",
        env = "OVATION_CATALOG_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub url: String,
    /// PEM CA to verify the catalog's certificate with (turns TLS on).
    #[arg(
        id = "catalog_tls_ca_file",
        long = "catalog-tls-ca-file",
        env = "OVATION_CATALOG_TLS_CA_FILE"
    )]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate to present to the catalog (mTLS).
    #[arg(
        id = "catalog_tls_cert_file",
        long = "catalog-tls-cert-file",
        env = "OVATION_CATALOG_TLS_CERT_FILE"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM key of the client certificate.
    #[arg(
        id = "catalog_tls_key_file",
        long = "catalog-tls-key-file",
        env = "OVATION_CATALOG_TLS_KEY_FILE"
    )]
    pub tls_key_file: Option<PathBuf>,
    /// Name to verify the catalog's certificate against, if not the URL's host.
    #[arg(
        id = "catalog_tls_domain",
        long = "catalog-tls-domain",
        env = "OVATION_CATALOG_TLS_DOMAIN"
    )]
    pub tls_domain: Option<String>,
}

impl From<CatalogArgs> for CatalogPeerArgs {
    fn from(a: CatalogArgs) -> Self {
        CatalogPeerArgs {
            url: a.url,
            tls_ca_file: a.tls_ca_file,
            tls_cert_file: a.tls_cert_file,
            tls_key_file: a.tls_key_file,
            tls_domain: a.tls_domain,
        }
    }
}

/// How the payout worker paces itself.
#[derive(clap::Args, Clone, Debug)]
pub struct WorkerArgs {
    /// How often the worker looks for due payouts when nothing wakes it.
    #[arg(long, env = "OVATION_PAYOUT_POLL_INTERVAL_MS", default_value_t = 1_000)]
    pub payout_poll_interval_ms: u64,
    /// Longest one payout-provider call may take before it is retried.
    #[arg(
        long,
        env = "OVATION_PAYOUT_PROVIDER_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub payout_provider_timeout_ms: u64,
    /// Most payout-provider calls in flight.
    #[arg(long, env = "OVATION_PAYOUT_CONCURRENCY", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub payout_concurrency: u64,
    /// Attempts without a definite answer after which a payout is flagged for an operator
    /// (it keeps being retried at the longest backoff; it is never released on a guess).
    #[arg(long, env = "OVATION_PAYOUT_RETRY_BUDGET", default_value_t = 20)]
    pub payout_retry_budget: u32,
    /// First retry delay; doubles per attempt.
    #[arg(long, env = "OVATION_PAYOUT_BACKOFF_BASE_MS", default_value_t = 500)]
    pub payout_backoff_base_ms: u64,
    /// Longest retry delay.
    #[arg(long, env = "OVATION_PAYOUT_BACKOFF_MAX_MS", default_value_t = 60_000)]
    pub payout_backoff_max_ms: u64,
    /// Longest shutdown waits for provider calls in flight before abandoning them (they
    /// resume on the next start).
    #[arg(long, env = "OVATION_PAYOUT_DRAIN_MS", default_value_t = 5_000)]
    pub payout_drain_ms: u64,
}

impl From<WorkerArgs> for WorkerConfig {
    fn from(a: WorkerArgs) -> Self {
        WorkerConfig {
            poll_interval: Duration::from_millis(a.payout_poll_interval_ms.max(10)),
            provider_timeout: Duration::from_millis(a.payout_provider_timeout_ms.max(1)),
            concurrency: usize::try_from(a.payout_concurrency).unwrap_or(4),
            retry_budget: a.payout_retry_budget,
            backoff_base: Duration::from_millis(a.payout_backoff_base_ms.max(1)),
            backoff_max: Duration::from_millis(
                a.payout_backoff_max_ms.max(a.payout_backoff_base_ms),
            ),
            drain: Duration::from_millis(a.payout_drain_ms),
        }
    }
}

/// Everything the payout service needs to start.
#[derive(Clone, Debug)]
pub struct PayoutConfig {
    pub server: ServerConfig,
    /// Where the catalog (payout rate and minimum) is.
    pub catalog: CatalogPeerArgs,
    /// How this service identifies itself to the catalog (`service:payout`).
    pub identity: IdentityArgs,
    /// Who pays: the sandbox unless a real provider is plugged in. Shared, so a test can
    /// keep one provider (an external system) across a restart of the service.
    pub provider: Arc<dyn PayoutProvider>,
    pub worker: WorkerConfig,
    /// Where "now" comes from for the time rules (credit times, diamond maturity): the
    /// system clock, or a manual one tests move.
    pub clock: Clock,
}

impl From<PayoutArgs> for PayoutConfig {
    fn from(args: PayoutArgs) -> Self {
        PayoutConfig {
            server: ServerConfig::from_args(SPEC.name, args.listen, args.database_url, args.server),
            catalog: args.catalog.into(),
            identity: args.identity,
            provider: Arc::new(SandboxProvider::in_dir(args.sandbox_dir)),
            worker: args.worker.into(),
            clock: Clock::system(),
        }
    }
}

/// Runs the payout service on `listener` until `shutdown` trips: connects to and
/// migrates its database, starts the payout worker (which resumes payouts left in
/// flight), then serves. On shutdown the server drains, then the worker.
pub async fn run(
    config: PayoutConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    let identity = ServiceIdentity::new(
        &config.identity,
        &config.server.args.auth,
        SPEC.name,
        Role::PayoutService,
    )?;
    let economy = economy::Economy::connect(&config.catalog.address(), Arc::new(identity))?;
    let start = ServiceStart::new(SPEC, &config.server, listener, shutdown);
    let Some(db) = start.open_database(&MIGRATIONS, async |_| Ok(())).await? else {
        return Ok(());
    };

    let wakeup = Wakeup::default();
    let worker = worker::spawn(
        db.clone(),
        config.provider.clone(),
        config.worker.clone(),
        wakeup.clone(),
        start.shutdown().clone(),
    );
    ovation_server::gauges::spawn_refresher(
        "ledger",
        config.server.args.db_gauges_interval_ms,
        start.shutdown().clone(),
        db.clone(),
        refresh_gauges,
    );
    let service = PayoutServiceServer::new(grpc::PayoutApi::new(
        db.clone(),
        economy,
        wakeup,
        config.clock.clone(),
    ))
        .max_decoding_message_size(config.server.args.request_bytes_max);
    // Serving ended (shutdown, or an error): the worker drains and stops too.
    start.serve(Routes::new(service), db, vec![worker]).await
}

/// The diamond ledger's totals per account kind and the payouts awaiting an operator.
async fn refresh_gauges(db: Db) -> Result<(), ovation_store::StoreError> {
    let mut conn = db.conn().await?;
    let totals = store::ledger_totals(&mut conn).await?;
    let attention = store::count_attention(&mut conn).await?;
    let labelled: Vec<_> = totals
        .iter()
        .map(|&(kind, diamonds)| (kind.name(), diamonds))
        .collect();
    let metrics = ovation_metrics::global();
    metrics.set_ledger_diamonds(&labelled);
    metrics.set_payouts_needing_attention(attention);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[test]
    fn the_command_line_is_well_formed_and_parses() {
        PayoutArgs::command().debug_assert();
        let args = PayoutArgs::try_parse_from([
            "ovation-payout",
            "--catalog-url",
            "http://catalog:50052",
            "--catalog-tls-cert-file",
            "client.pem",
            "--tls-cert-file",
            "server.pem",
            "--payout-retry-budget",
            "7",
        ])
        .unwrap();
        let config = PayoutConfig::from(args.clone());
        assert_eq!(config.catalog.url, "http://catalog:50052");
        assert_eq!(
            config.catalog.tls_cert_file,
            Some(PathBuf::from("client.pem"))
        );
        assert_eq!(
            args.server.tls.tls_cert_file,
            Some(PathBuf::from("server.pem"))
        );
        assert_eq!(config.worker.retry_budget, 7);
        assert_eq!(config.server.listen_addr.port(), 50054);
        assert_eq!(config.server.database_url, "sqlite://data/payout.db");
    }
}
