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
//! - [`webhook`]: the HTTP endpoint for the provider's webhooks (`/webhooks/stripe`).
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
pub mod webhook;
pub mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ovation_auth::Role;
use ovation_proto::payout::payout_service_server::PayoutServiceServer;
use ovation_server::config::ServerArgs;
use ovation_server::peer::{CatalogPeerArgs, IdentityArgs, ServiceIdentity};
use ovation_server::sandbox::{self, SandboxArgs};
use ovation_server::{ServerConfig, ServiceSpec, ServiceStart, Shutdown, StartError};
use ovation_store::Db;
use ovation_types::Clock;
use ovation_webhooks::stripe_signature::{Secrets, Verifier};
use tokio::net::TcpListener;
use tonic::service::Routes;

use crate::domain::AccountReferences;
use crate::provider::stripe_connect::{self, StripeConnect, StripeConnectSettings};
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

/// The payout service's migrations (for tests that build a database as an older version
/// left it).
pub fn migrations() -> sqlx::migrate::Migrator {
    sqlx::migrate!("./migrations")
}

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
    pub provider: ProviderArgs,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
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

/// Which payout provider pays, and how to reach it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProviderKind {
    /// The sandbox (development and tests; runs only with `OVATION_ALLOW_SANDBOX=true`).
    #[default]
    Sandbox,
    /// Stripe Connect transfers to the creators' connected accounts.
    #[value(name = "stripe_connect")]
    StripeConnect,
}

/// The payout provider's settings (README, "Payout provider").
#[derive(clap::Args, Clone, Debug)]
pub struct ProviderArgs {
    /// Who pays creators: `sandbox` or `stripe_connect`.
    #[arg(
        long,
        env = "OVATION_PAYOUT_PROVIDER",
        value_enum,
        default_value = "sandbox"
    )]
    pub payout_provider: ProviderKind,
    /// Stripe's API base URL.
    #[arg(long, env = "OVATION_STRIPE_API_BASE", default_value = stripe_connect::DEFAULT_API_BASE)]
    pub stripe_api_base: String,
    /// File holding the platform's Stripe secret key (`sk_…`); required by `stripe_connect`.
    #[arg(long, env = "OVATION_STRIPE_SECRET_KEY_FILE")]
    pub stripe_secret_key_file: Option<PathBuf>,
    /// File holding the Stripe webhook signing secrets (`whsec_…`), one a line (two while
    /// rotating); required with a webhook address.
    #[arg(long, env = "OVATION_STRIPE_WEBHOOK_SECRETS_FILE")]
    pub stripe_webhook_secrets_file: Option<PathBuf>,
    /// Where payout receives Stripe's webhooks (`/webhooks/stripe`); unset = nowhere.
    #[arg(long, env = "OVATION_PAYOUT_WEBHOOK_ADDR")]
    pub payout_webhook_addr: Option<SocketAddr>,
}

/// Payout's webhook endpoint: where it listens and the secrets it verifies signatures with.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub listen_addr: SocketAddr,
    /// Stripe's endpoint signing secrets; a signature by any one of them is accepted
    /// (two while rolling). Never printed.
    pub secrets: Secrets,
}

/// The secret key in the file `path` (its first non-blank line), named by `setting` in
/// errors.
fn read_secret_key(setting: &str, path: &std::path::Path) -> Result<String, StartError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        StartError::Config(format!("{setting}: cannot read {}: {e}", path.display()))
    })?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| StartError::Config(format!("{setting}: {} holds no key", path.display())))
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
    /// Which payout account references `provider` can pay to (SetPayoutAccount refuses
    /// others).
    pub account_references: AccountReferences,
    /// Payout's webhook endpoint for the provider's events; `None` = none.
    pub webhook: Option<WebhookConfig>,
    pub worker: WorkerConfig,
    /// Where "now" comes from for the time rules (credit times, diamond maturity): the
    /// system clock, or a manual one tests move.
    pub clock: Clock,
}

impl PayoutConfig {
    /// The configuration `args` describe: the provider they name (its key read from its
    /// file), the webhook endpoint if an address is set. An incomplete setting is an error
    /// naming it.
    pub fn from_args(args: PayoutArgs) -> Result<PayoutConfig, StartError> {
        let worker: WorkerConfig = args.worker.into();
        let p = args.provider;
        let (provider, account_references): (Arc<dyn PayoutProvider>, _) = match p.payout_provider {
            ProviderKind::Sandbox => {
                sandbox::refuse_unless_allowed(
                    "the payout provider `sandbox` (OVATION_PAYOUT_PROVIDER)",
                    args.sandbox.allow_sandbox,
                )?;
                (
                    Arc::new(SandboxProvider::in_dir(args.sandbox_dir)),
                    AccountReferences::Any,
                )
            }
            ProviderKind::StripeConnect => {
                let Some(file) = &p.stripe_secret_key_file else {
                    return Err(StartError::Config(
                        "OVATION_PAYOUT_PROVIDER=stripe_connect needs \
                         OVATION_STRIPE_SECRET_KEY_FILE (a file holding the platform's secret \
                         key)"
                            .into(),
                    ));
                };
                let secret_key = read_secret_key("OVATION_STRIPE_SECRET_KEY_FILE", file)?;
                let stripe = StripeConnect::new(StripeConnectSettings {
                    api_base: p.stripe_api_base.clone(),
                    secret_key,
                    request_timeout: worker.provider_timeout,
                })
                .map_err(StartError::Config)?;
                (Arc::new(stripe), AccountReferences::ConnectedAccounts)
            }
        };
        let webhook = match (p.payout_webhook_addr, &p.stripe_webhook_secrets_file) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(StartError::Config(
                    "OVATION_PAYOUT_WEBHOOK_ADDR needs OVATION_STRIPE_WEBHOOK_SECRETS_FILE (the \
                     endpoint's signing secrets, one a line)"
                        .into(),
                ));
            }
            (Some(listen_addr), Some(file)) => Some(WebhookConfig {
                listen_addr,
                secrets: Secrets::from_file(file).map_err(|e| {
                    StartError::Config(format!("OVATION_STRIPE_WEBHOOK_SECRETS_FILE: {e}"))
                })?,
            }),
        };
        Ok(PayoutConfig {
            server: ServerConfig::from_args(SPEC.name, args.listen, args.database_url, args.server),
            catalog: args.catalog.into(),
            identity: args.identity,
            provider,
            account_references,
            webhook,
            worker,
            clock: Clock::system(),
        })
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

    let mut tasks = Vec::new();
    if let Some(webhook) = &config.webhook {
        let listener = TcpListener::bind(webhook.listen_addr)
            .await
            .map_err(|source| StartError::Bind {
                address: webhook.listen_addr,
                source,
            })?;
        let routes = webhook::routes(db.clone(), Verifier::new(webhook.secrets.clone()));
        let shutdown = start.shutdown().clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = ovation_webhooks::serve(listener, routes, shutdown).await {
                tracing::error!(error = %e, "payout's webhook listener stopped");
            }
        }));
    }
    let wakeup = Wakeup::default();
    let worker = worker::spawn(
        db.clone(),
        config.provider.clone(),
        config.worker.clone(),
        wakeup.clone(),
        start.shutdown().clone(),
        config.clock.clone(),
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
        config.account_references,
    ))
    .max_decoding_message_size(config.server.args.request_bytes_max);
    tasks.push(worker);
    // Serving ended (shutdown, or an error): the worker and the webhook listener drain
    // and stop too.
    start.serve(Routes::new(service), db, tasks).await
}

/// The diamond ledger's totals per account kind and the payouts awaiting an operator.
async fn refresh_gauges(db: Db) -> Result<(), ovation_store::StoreError> {
    let mut conn = db.conn().await?;
    let totals = store::ledger_totals(&mut conn).await?;
    let attention = store::count_attention(&mut conn).await?;
    let (reversed, bank_failed) = store::count_provider_alerts(&mut conn).await?;
    let labelled: Vec<_> = totals
        .iter()
        .map(|&(kind, diamonds)| (kind.name(), diamonds))
        .collect();
    let metrics = ovation_metrics::global();
    metrics.set_ledger_diamonds(&labelled);
    metrics.set_payouts_needing_attention(attention);
    metrics.set_payout_provider_alerts(reversed, bank_failed);
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
            "--allow-sandbox",
        ])
        .unwrap();
        let config = PayoutConfig::from_args(args.clone()).unwrap();
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

    #[test]
    fn the_provider_is_chosen_by_settings_and_the_sandbox_needs_permission() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["ovation-payout"];
            argv.extend_from_slice(extra);
            PayoutConfig::from_args(PayoutArgs::try_parse_from(argv).unwrap())
        };
        let refused = parse(&[]).unwrap_err().to_string();
        assert!(refused.contains("OVATION_ALLOW_SANDBOX"), "{refused}");
        assert!(refused.contains("OVATION_PAYOUT_PROVIDER"), "{refused}");
        let sandbox = parse(&["--allow-sandbox"]).unwrap();
        assert_eq!(sandbox.account_references, AccountReferences::Any);
        assert!(sandbox.webhook.is_none());

        let refused = parse(&["--payout-provider", "stripe_connect"])
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("OVATION_STRIPE_SECRET_KEY_FILE"),
            "{refused}"
        );
        let dir = std::env::temp_dir().join(format!("ovation-payout-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        let secrets = dir.join("whsec");
        std::fs::write(&key, "sk_test_123\n").unwrap();
        std::fs::write(&secrets, "whsec_a\nwhsec_b\n").unwrap();
        let key_arg = key.to_str().unwrap();
        let stripe = parse(&[
            "--payout-provider",
            "stripe_connect",
            "--stripe-secret-key-file",
            key_arg,
        ])
        .unwrap();
        assert_eq!(
            stripe.account_references,
            AccountReferences::ConnectedAccounts
        );
        assert!(!format!("{:?}", stripe.provider).contains("sk_test_123"));
        let refused = parse(&[
            "--payout-provider",
            "stripe_connect",
            "--stripe-secret-key-file",
            key_arg,
            "--payout-webhook-addr",
            "127.0.0.1:8090",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            refused.contains("OVATION_STRIPE_WEBHOOK_SECRETS_FILE"),
            "{refused}"
        );
        let with_webhook = parse(&[
            "--payout-provider",
            "stripe_connect",
            "--stripe-secret-key-file",
            key_arg,
            "--payout-webhook-addr",
            "127.0.0.1:8090",
            "--stripe-webhook-secrets-file",
            secrets.to_str().unwrap(),
        ])
        .unwrap();
        let webhook = with_webhook.webhook.unwrap();
        assert_eq!(webhook.secrets.len(), 2);
        assert!(!format!("{webhook:?}").contains("whsec_a"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
