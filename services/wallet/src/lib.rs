//! The wallet service: viewers' coin accounts and the double-entry coin ledger (docs/economy.md).
//! Coins enter by purchase and leave by gift (or admin reversal); never between users.
//!
//! Layout:
//! - [`domain`]: values and rules (caps and their windows, promotion choice, debt).
//! - [`store`]: all of its SQL.
//! - [`ledger`]: operations on the ledger (debit, refund, holds, reversal, completion),
//!   each inside the caller's write transaction.
//! - [`accounts`]: opening accounts, the age an operator sets, spending limits, and the
//!   reads of one user's account and history.
//! - [`audit`]: the operators' ledger-wide views (the I1/I2 summary, debits).
//! - [`purchases`]: buying coins crash-safely (velocity limits), and the recovery worker.
//! - [`clawbacks`]: the worker that finishes reversals' attribution and delivers their
//!   clawback orders to payout.
//! - [`payment`]: the payment-provider trait, the registry the settings build
//!   (`OVATION_PAYMENT_PROVIDERS`), the sandbox and Stripe.
//! - [`provider_events`]: providers' webhook events (Stripe), each applied once.
//! - [`webhooks`]: the thin HTTP edge for those events (`OVATION_WALLET_WEBHOOK_ADDR`).
//! - [`catalog`]: reading packages and promotions from the catalog, cached.
//! - [`grpc`]: the thin gRPC edge: `parse` (requests into commands), the handlers,
//!   `to_proto` (domain values into messages).
//!
//! Limits: amounts 1..=10^12 coins per operation; balances ≤ 10^15; holds live 1 s..=1 h;
//! ≤ 500 ids per ListDebits; pages ≤ 500; a purchase's charge is retried at most
//! `charge_attempts_max` times, then left PENDING for an operator; a reversal attributes
//! its coins to at most `ledger::ATTRIBUTION_DEBITS_MAX` debits per transaction.

pub mod accounts;
pub mod audit;
pub mod catalog;
pub mod clawbacks;
pub mod domain;
pub mod grpc;
pub mod ledger;
pub mod payment;
pub mod provider_events;
pub mod purchases;
pub mod store;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ovation_auth::Role;
use ovation_proto::payout::payout_service_client::PayoutServiceClient;
use ovation_proto::wallet::wallet_service_server::WalletServiceServer;
use ovation_server::config::ServerArgs;
use ovation_server::peer::{
    self, CatalogPeerArgs, IdentityArgs, Outbound, PayoutPeerArgs, ServiceIdentity,
};
use ovation_server::{ServerConfig, ServiceSpec, ServiceStart, Shutdown, StartError};
use ovation_store::Db;
use ovation_types::Clock;
use tokio::net::TcpListener;
use tonic::service::Routes;

use crate::clawbacks::{ClawbackSettings, Clawbacks};
use crate::domain::PurchaseVelocity;
use crate::payment::{PaymentArgs, Providers};
use crate::purchases::{PurchaseSettings, Purchases};

pub const SPEC: ServiceSpec = ServiceSpec {
    name: "wallet",
    grpc_service: "ovation.wallet.v1.WalletService",
};

/// Where the wallet listens unless told otherwise.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:50051";

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The wallet's migrations (for tools and tests that set up its database directly).
pub fn migrations() -> sqlx::migrate::Migrator {
    sqlx::migrate!("./migrations")
}

/// The wallet's settings: the shared ones plus its own.
#[derive(clap::Parser, Clone, Debug)]
#[command(name = "ovation-wallet", version, about = "Ovation's wallet service")]
pub struct WalletArgs {
    /// Address to listen on.
    #[arg(long, env = "OVATION_LISTEN_ADDR", default_value = DEFAULT_LISTEN_ADDR)]
    pub listen: SocketAddr,
    /// Database URL: postgres://… or sqlite://path [default: sqlite://data/wallet.db]
    #[arg(long, env = "OVATION_DATABASE_URL")]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub wallet: WalletSettings,
    /// How viewers pay: providers, the sandbox's permission, Stripe, the webhook endpoint.
    #[command(flatten)]
    pub payments: PaymentArgs,
    #[command(flatten)]
    pub catalog: CatalogPeerArgs,
    /// Where payout is: clawback orders of reversed purchases are delivered there.
    #[command(flatten)]
    pub payout: PayoutPeerArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// The wallet's own knobs.
#[derive(clap::Args, Clone, Debug)]
pub struct WalletSettings {
    /// How long a raised (or removed) spending cap waits before it applies.
    #[arg(
        long,
        env = "OVATION_WALLET_CAP_COOLING_OFF_MS",
        default_value_t = 86_400_000
    )]
    pub cap_cooling_off_ms: i64,
    /// How long catalog prices and promotions are cached.
    #[arg(
        long,
        env = "OVATION_WALLET_CATALOG_CACHE_TTL_MS",
        default_value_t = 5_000
    )]
    pub catalog_cache_ttl_ms: u64,
    /// Longest one charge call may take before its outcome counts as unknown.
    #[arg(
        long,
        env = "OVATION_WALLET_CHARGE_TIMEOUT_MS",
        default_value_t = 3_000
    )]
    pub charge_timeout_ms: u64,
    /// First retry delay of a charge with an unknown outcome (doubles per attempt).
    #[arg(
        long,
        env = "OVATION_WALLET_CHARGE_RETRY_BASE_MS",
        default_value_t = 200
    )]
    pub charge_retry_base_ms: u64,
    /// How often pending purchases and expired holds are looked for.
    #[arg(
        long,
        env = "OVATION_WALLET_RECOVERY_INTERVAL_MS",
        default_value_t = 500
    )]
    pub recovery_interval_ms: u64,
    /// Only accounts whose adulthood was verified may buy or spend coins: by the identity
    /// provider's token claim `age_verified_adult`, or by an operator (SetAccountMinor with
    /// minor=false). Off (the development default), only accounts marked as minors are
    /// refused. Production turns it on.
    #[arg(long, env = "OVATION_WALLET_REQUIRE_AGE_VERIFICATION")]
    pub require_age_verification: bool,
    /// Most purchases one buyer may record in any 60 minutes (every state, declines too:
    /// card testing shows up as declines); 0: no limit.
    #[arg(
        long,
        env = "OVATION_WALLET_PURCHASES_PER_HOUR_MAX",
        default_value_t = 30
    )]
    pub purchases_per_hour_max: i64,
    /// Most money one buyer may spend on coins in any 60 minutes, in minor units of each
    /// currency separately (every state but DECLINED); 0: no limit.
    #[arg(
        long,
        env = "OVATION_WALLET_PURCHASE_AMOUNT_MINOR_PER_HOUR_MAX",
        default_value_t = 100_000
    )]
    pub purchase_amount_minor_per_hour_max: i64,
    /// How often the clawback worker looks for orders to deliver to payout.
    #[arg(
        long,
        env = "OVATION_WALLET_CLAWBACK_INTERVAL_MS",
        default_value_t = 1_000
    )]
    pub clawback_interval_ms: u64,
    /// First retry delay of an undelivered clawback order (doubles per attempt, jittered).
    #[arg(
        long,
        env = "OVATION_WALLET_CLAWBACK_RETRY_BASE_MS",
        default_value_t = 500
    )]
    pub clawback_retry_base_ms: u64,
    /// Longest retry delay of an undelivered clawback order (it is retried forever).
    #[arg(
        long,
        env = "OVATION_WALLET_CLAWBACK_RETRY_MAX_MS",
        default_value_t = 300_000
    )]
    pub clawback_retry_max_ms: u64,
}

impl Default for WalletSettings {
    fn default() -> Self {
        WalletSettings {
            cap_cooling_off_ms: 86_400_000,
            catalog_cache_ttl_ms: 5_000,
            charge_timeout_ms: 3_000,
            charge_retry_base_ms: 200,
            recovery_interval_ms: 500,
            require_age_verification: false,
            purchases_per_hour_max: 30,
            purchase_amount_minor_per_hour_max: 100_000,
            clawback_interval_ms: 1_000,
            clawback_retry_base_ms: 500,
            clawback_retry_max_ms: 300_000,
        }
    }
}

impl WalletSettings {
    /// Who may buy and spend coins.
    pub fn age_rule(&self) -> domain::AgeRule {
        if self.require_age_verification {
            domain::AgeRule::VerifiedAdultsOnly
        } else {
            domain::AgeRule::MinorsRefused
        }
    }

    /// The purchase velocity limits (negative values count as 0: no limit).
    pub fn velocity(&self) -> PurchaseVelocity {
        PurchaseVelocity {
            purchases_per_hour_max: self.purchases_per_hour_max.max(0),
            amount_minor_per_hour_max: self.purchase_amount_minor_per_hour_max.max(0),
        }
    }

    /// The clawback worker's pace.
    pub fn clawbacks(&self) -> ClawbackSettings {
        ClawbackSettings {
            interval_ms: self.clawback_interval_ms,
            retry_base_ms: self.clawback_retry_base_ms.max(1),
            retry_max_ms: self.clawback_retry_max_ms.max(1),
            ..ClawbackSettings::default()
        }
    }
}

/// Everything the wallet needs to start.
#[derive(Clone, Debug)]
pub struct WalletConfig {
    pub server: ServerConfig,
    pub wallet: WalletSettings,
    pub catalog: CatalogPeerArgs,
    /// Where clawback orders are delivered.
    pub payout: PayoutPeerArgs,
    pub identity: IdentityArgs,
    /// The payment providers (built from OVATION_PAYMENT_PROVIDERS by [`WalletConfig::from_args`]).
    pub providers: Providers,
    /// Where provider webhooks are received (`POST /webhooks/stripe`,
    /// `/webhooks/app_store`); `None`: nowhere.
    pub webhook_addr: Option<SocketAddr>,
    /// Where purchases read the time (velocity windows, caps): the system's, or a test's.
    pub clock: Clock,
}

impl WalletConfig {
    /// The configuration the settings describe. Refuses what cannot run: a sandbox provider
    /// without OVATION_ALLOW_SANDBOX, a provider not built yet, Stripe without its secrets.
    pub fn from_args(args: WalletArgs) -> Result<WalletConfig, StartError> {
        // A migration run charges nothing: it needs no provider (nor its secrets).
        let providers = if args.server.migrate_only {
            Providers::none()
        } else {
            payment::build(&args.payments)?
        };
        Ok(WalletConfig {
            server: ServerConfig::from_args(SPEC.name, args.listen, args.database_url, args.server),
            wallet: args.wallet,
            catalog: args.catalog,
            payout: args.payout,
            identity: args.identity,
            providers,
            webhook_addr: args.payments.webhook_addr,
            clock: Clock::system(),
        })
    }
}

/// Runs the wallet on `listener` until `shutdown` trips: database, migrations, the
/// recovery worker (pending purchases, expired holds), the clawback worker (reversals'
/// attribution, orders to payout), then the server.
pub async fn run(
    config: WalletConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    let identity = ServiceIdentity::new(
        &config.identity,
        &config.server.args.auth,
        SPEC.name,
        Role::WalletService,
    )?;
    let channel = peer::channel(&config.catalog.address())?;
    let payout_channel = peer::channel(&config.payout.address())?;
    let webhook_listener = match config.webhook_addr {
        Some(address) => Some(ovation_server::bind(address).await?),
        None => None,
    };
    let start = ServiceStart::new(SPEC, &config.server, listener, shutdown);
    let Some(db) = start.open_database(&MIGRATIONS, async |_| Ok(())).await? else {
        return Ok(());
    };
    tracing::info!(providers = ?config.providers.names(), "payment providers");
    let mut workers = Vec::new();
    match webhook_listener {
        Some(listener) => {
            if config.providers.stripe_webhook().is_none() && config.providers.app_store().is_none()
            {
                tracing::warn!(
                    "OVATION_WALLET_WEBHOOK_ADDR is set but no provider with webhooks is configured"
                );
            }
            let routes = webhooks::routes(
                db.clone(),
                config.providers.stripe_webhook().cloned(),
                config.providers.app_store().cloned(),
                config.clock.clone(),
            );
            let shutdown = start.shutdown().clone();
            workers.push(tokio::spawn(async move {
                if let Err(e) = ovation_webhooks::serve(listener, routes, shutdown.clone()).await {
                    tracing::error!(error = %e, "the webhook endpoint failed; stopping the wallet");
                    shutdown.trigger();
                }
            }));
        }
        None if config.providers.stripe_webhook().is_some() => {
            tracing::warn!(
                "stripe is configured without OVATION_WALLET_WEBHOOK_ADDR: disputes and refunds \
                 are not received, and purchases awaiting 3-D Secure settle only by re-check"
            );
        }
        None if config.providers.app_store().is_some() => {
            tracing::warn!(
                "app_store is configured without OVATION_WALLET_WEBHOOK_ADDR: App Store refunds \
                 and revocations are not received"
            );
        }
        None => {}
    }
    let outbound = Outbound::new(Arc::new(identity));
    let catalog = catalog::CatalogReader::new(
        channel,
        outbound.clone(),
        Duration::from_millis(config.wallet.catalog_cache_ttl_ms),
    );
    let purchases = Purchases::new(
        db.clone(),
        catalog,
        Arc::new(config.providers.clone()),
        PurchaseSettings {
            charge_timeout_ms: config.wallet.charge_timeout_ms,
            retry_base_ms: config.wallet.charge_retry_base_ms,
            recovery_interval_ms: config.wallet.recovery_interval_ms,
            age_rule: config.wallet.age_rule(),
            velocity: config.wallet.velocity(),
            clock: config.clock.clone(),
            ..PurchaseSettings::default()
        },
    );
    let recovery = tokio::spawn(purchases.clone().run_recovery(start.shutdown().clone()));
    let clawbacks = Clawbacks::new(
        db.clone(),
        PayoutServiceClient::with_interceptor(payout_channel, outbound),
        config.wallet.clawbacks(),
    );
    let clawback_worker = tokio::spawn(clawbacks.run(start.shutdown().clone()));
    ovation_server::gauges::spawn_refresher(
        "ledger",
        config.server.args.db_gauges_interval_ms,
        start.shutdown().clone(),
        db.clone(),
        refresh_ledger_gauges,
    );
    let service = WalletServiceServer::new(grpc::WalletApi::new(
        db.clone(),
        purchases,
        config.wallet.cap_cooling_off_ms,
        config.wallet.age_rule(),
    ))
    .max_decoding_message_size(config.server.args.request_bytes_max);
    workers.push(recovery);
    workers.push(clawback_worker);
    start.serve(Routes::new(service), db, workers).await
}

/// The coin ledger's totals per account kind into `ovation_ledger_coins`.
async fn refresh_ledger_gauges(db: Db) -> Result<(), ovation_store::StoreError> {
    let mut conn = db.conn().await?;
    let totals = store::ledger_totals(&mut conn).await?;
    let labelled: Vec<_> = totals
        .iter()
        .map(|&(kind, _, coins)| (kind.name(), coins))
        .collect();
    ovation_metrics::global().set_ledger_coins(&labelled);
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Every flag and variable parses: no two settings share an id or a name.
    #[test]
    fn the_command_line_is_valid() {
        use clap::CommandFactory;
        super::WalletArgs::command().debug_assert();
    }
}
