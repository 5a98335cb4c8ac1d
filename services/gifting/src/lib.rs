//! The gifting service: `SendGift` and the durable gift saga (docs/saga.md) across catalog,
//! wallet and payout; gift history, leaderboards and the live gift feed.
//!
//! Layout:
//! - [`domain`]: the saga as a state machine (pure, property-tested for I3).
//! - [`store`]: all of its SQL: sagas (with leases), the outbox of gift events.
//! - [`saga`]: the driver that runs steps against the peers, and the recovery loop.
//! - [`reversal`]: the driver of a gift's admin reversal (clawback, coins returned).
//! - [`sending`]: the use cases: send a gift, retry a saga, reverse a gift (domain
//!   commands in, domain errors out).
//! - [`writer`]: group commit of the saga writes of sagas driven at the same time.
//! - [`grpc`]: the thin gRPC edge: `parse` (requests to commands), `to_proto`, the
//!   WatchStreamGifts `feed`, and [`grpc::GiftingApi`], the service.
//!
//! Limits: quantity 1..=99; a step that gets no answer (a peer down, slow or shedding
//! load) is retried until the saga is `saga_max_age_ms` old, one that gets unexpected
//! answers at most `retry_attempts_max` times, before the saga is handed to an operator;
//! SendGift waits at most `send_wait_ms`; at most
//! `watchers_max` feed watchers per replica, each with a bounded buffer; at most
//! `gifts_per_sender_creator_per_minute_max` sagas from one sender to one creator in any
//! minute.

pub mod domain;
pub mod grpc;
pub mod hops;
pub mod quotes;
pub mod reversal;
pub mod saga;
pub mod sending;
pub mod store;
pub mod writer;

use std::net::SocketAddr;
use std::sync::Arc;

use ovation_auth::Role;
use ovation_proto::catalog::catalog_service_client::CatalogServiceClient;
use ovation_proto::gifting::gifting_service_server::GiftingServiceServer;
use ovation_proto::payout::payout_service_client::PayoutServiceClient;
use ovation_proto::wallet::wallet_service_client::WalletServiceClient;
use ovation_server::config::ServerArgs;
use ovation_server::peer::{
    self, CatalogPeerArgs, IdentityArgs, Outbound, PayoutPeerArgs, ServiceIdentity, WalletPeerArgs,
};
use ovation_server::{ServerConfig, ServiceSpec, ServiceStart, Shutdown, StartError};
use tokio::net::TcpListener;
use tonic::service::Routes;

use crate::domain::{RetryPolicy, VelocityLimit};
use crate::grpc::FeedLimits;
use crate::hops::HopLimits;
use crate::saga::{Peers, SagaEngine, SagaSettings};

pub const SPEC: ServiceSpec = ServiceSpec {
    name: "gifting",
    grpc_service: "ovation.gifting.v1.GiftingService",
};

/// Where gifting listens unless told otherwise.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:50053";

/// Gifting's schema migrations (applied by [`run`]; public for store-level tests).
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Gifting's settings: the shared ones plus its own.
#[derive(clap::Parser, Clone, Debug)]
#[command(name = "ovation-gifting", version, about = "Ovation's gifting service")]
pub struct GiftingArgs {
    /// Address to listen on.
    #[arg(long, env = "OVATION_LISTEN_ADDR", default_value = DEFAULT_LISTEN_ADDR)]
    pub listen: SocketAddr,
    /// Database URL: postgres://… or sqlite://path [default: sqlite://data/gifting.db]
    #[arg(long, env = "OVATION_DATABASE_URL")]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub gifting: GiftingSettings,
    #[command(flatten)]
    pub catalog: CatalogPeerArgs,
    #[command(flatten)]
    pub wallet_peer: WalletPeerArgs,
    #[command(flatten)]
    pub payout_peer: PayoutPeerArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Gifting's own knobs.
#[derive(clap::Args, Clone, Debug)]
pub struct GiftingSettings {
    /// Longest SendGift waits for its saga before answering PENDING (the caller's shorter
    /// deadline wins).
    #[arg(long, env = "OVATION_GIFTING_SEND_WAIT_MS", default_value_t = 5_000)]
    pub send_wait_ms: u64,
    /// Unexpected answers (INTERNAL, UNAUTHENTICATED, ...) a saga step may get before the
    /// saga is handed to an operator. A peer that is down, slow or shedding load does not
    /// count: it is waited for (see `saga_max_age_ms`).
    #[arg(long, env = "OVATION_GIFTING_RETRY_ATTEMPTS_MAX", default_value_t = 12)]
    pub retry_attempts_max: i64,
    /// First retry delay of a step (exponential, full jitter).
    #[arg(long, env = "OVATION_GIFTING_RETRY_BASE_MS", default_value_t = 50)]
    pub retry_base_ms: i64,
    /// Longest retry delay of a step: at most this long after a peer comes back, the sagas
    /// waiting for it go on.
    #[arg(long, env = "OVATION_GIFTING_RETRY_MAX_MS", default_value_t = 30_000)]
    pub retry_max_ms: i64,
    /// Age (from SendGift) past which a saga whose step still fails is handed to an
    /// operator (NEEDS_OPERATOR): how long wallet, payout or the catalog may be down
    /// before gifts wait for a person.
    #[arg(
        long,
        env = "OVATION_GIFTING_SAGA_MAX_AGE_MS",
        default_value_t = 86_400_000
    )]
    pub saga_max_age_ms: i64,
    /// How long a replica's lease on a saga lasts without renewal.
    #[arg(long, env = "OVATION_GIFTING_LEASE_MS", default_value_t = 10_000)]
    pub lease_ms: i64,
    /// Deadline of one saga step's call.
    #[arg(long, env = "OVATION_GIFTING_STEP_TIMEOUT_MS", default_value_t = 5_000)]
    pub step_timeout_ms: u64,
    /// How often unfinished sagas are looked for and resumed.
    #[arg(
        long,
        env = "OVATION_GIFTING_RECOVERY_INTERVAL_MS",
        default_value_t = 500
    )]
    pub recovery_interval_ms: u64,
    /// Most concurrent WatchStreamGifts calls per replica.
    #[arg(long, env = "OVATION_GIFTING_WATCHERS_MAX", default_value_t = 1_000)]
    pub watchers_max: usize,
    /// How long a gift's quote from the catalog serves other sends of that gift, in ms
    /// (0: ask the catalog for every gift). A price change reaches sends within it.
    #[arg(long, env = "OVATION_GIFTING_QUOTE_CACHE_MS", default_value_t = 1_000)]
    pub quote_cache_ms: u64,
    /// Batches of debits (and of credits) on the wire at once; the sagas' hops queued
    /// meanwhile travel in the next batch.
    #[arg(
        long,
        env = "OVATION_GIFTING_HOP_BATCHES_IN_FLIGHT_MAX",
        default_value_t = 4
    )]
    pub hop_batches_in_flight_max: usize,
    /// Most gifts one sender may send one creator within any minute (a sliding window
    /// over the sagas recorded, whatever became of them); one more is refused with
    /// RESOURCE_EXHAUSTED (VELOCITY_LIMIT) and nothing is recorded. 0: no limit.
    #[arg(
        long,
        env = "OVATION_GIFTING_GIFTS_PER_SENDER_CREATOR_PER_MINUTE_MAX",
        default_value_t = 60
    )]
    pub gifts_per_sender_creator_per_minute_max: i64,
    /// Where new sagas take their creation time from (and so the velocity window): the
    /// system clock; tests move a manual one instead of sleeping.
    #[arg(skip)]
    pub clock: ovation_types::Clock,
}

impl Default for GiftingSettings {
    fn default() -> Self {
        GiftingSettings {
            send_wait_ms: 5_000,
            retry_attempts_max: 12,
            retry_base_ms: 50,
            retry_max_ms: 30_000,
            saga_max_age_ms: 86_400_000,
            lease_ms: 10_000,
            step_timeout_ms: 5_000,
            recovery_interval_ms: 500,
            watchers_max: 1_000,
            quote_cache_ms: 1_000,
            hop_batches_in_flight_max: 4,
            gifts_per_sender_creator_per_minute_max: 60,
            clock: ovation_types::Clock::system(),
        }
    }
}

/// Everything gifting needs to start.
#[derive(Clone, Debug)]
pub struct GiftingConfig {
    pub server: ServerConfig,
    pub gifting: GiftingSettings,
    pub catalog: CatalogPeerArgs,
    pub wallet: WalletPeerArgs,
    pub payout: PayoutPeerArgs,
    pub identity: IdentityArgs,
}

impl From<GiftingArgs> for GiftingConfig {
    fn from(args: GiftingArgs) -> Self {
        GiftingConfig {
            server: ServerConfig::from_args(SPEC.name, args.listen, args.database_url, args.server),
            gifting: args.gifting,
            catalog: args.catalog,
            wallet: args.wallet_peer,
            payout: args.payout_peer,
            identity: args.identity,
        }
    }
}

/// Runs gifting on `listener` until `shutdown` trips: database, migrations, the recovery
/// loop (which first resumes every saga a previous process left unfinished), the server.
/// On shutdown, in-flight steps finish and their leases are given back.
pub async fn run(
    config: GiftingConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    let identity = Arc::new(ServiceIdentity::new(
        &config.identity,
        &config.server.args.auth,
        SPEC.name,
        Role::GiftingService,
    )?);
    let outbound = Outbound::new(identity);
    let peers = Peers {
        catalog: CatalogServiceClient::with_interceptor(
            peer::channel(&config.catalog.address())?,
            outbound.clone(),
        ),
        wallet: WalletServiceClient::with_interceptor(
            peer::channel(&config.wallet.address())?,
            outbound.clone(),
        ),
        payout: PayoutServiceClient::with_interceptor(
            peer::channel(&config.payout.address())?,
            outbound,
        ),
    };
    let start = ServiceStart::new(SPEC, &config.server, listener, shutdown);
    let Some(db) = start.open_database(&MIGRATIONS, async |_| Ok(())).await? else {
        return Ok(());
    };
    let settings = &config.gifting;
    let velocity = VelocityLimit::of_setting(settings.gifts_per_sender_creator_per_minute_max);
    let engine = SagaEngine::new(
        db.clone(),
        peers,
        SagaSettings {
            retry: RetryPolicy {
                attempts_max: settings.retry_attempts_max.max(1),
                backoff_base_ms: settings.retry_base_ms.max(1),
                backoff_max_ms: settings.retry_max_ms.max(1),
                max_age_ms: settings.saga_max_age_ms.max(0),
            },
            lease_ms: settings.lease_ms.max(100),
            step_timeout_ms: settings.step_timeout_ms.max(10),
            recovery_interval_ms: settings.recovery_interval_ms,
            quote_cache_ms: settings.quote_cache_ms,
            hops: HopLimits {
                in_flight_max: settings.hop_batches_in_flight_max.clamp(1, 64),
            },
            velocity,
            ..SagaSettings::default()
        },
        start.shutdown().clone(),
    );
    let recovery = tokio::spawn(engine.clone().run_recovery());
    ovation_server::gauges::spawn_refresher(
        "saga backlog",
        config.server.args.db_gauges_interval_ms,
        start.shutdown().clone(),
        db.clone(),
        saga::refresh_backlog_gauges,
    );
    let feed = FeedLimits {
        watchers_max: settings.watchers_max,
        ..FeedLimits::default()
    };
    let sending = sending::Sending::new(
        db.clone(),
        engine.clone(),
        settings.send_wait_ms,
        settings.clock.clone(),
        velocity,
    );
    let service =
        GiftingServiceServer::new(grpc::GiftingApi::new(db.clone(), engine, sending, feed))
            .max_decoding_message_size(config.server.args.request_bytes_max);
    start.serve(Routes::new(service), db, vec![recovery]).await
}

#[cfg(test)]
mod tests {
    /// Every flag and variable parses: no two settings share an id or a name.
    #[test]
    fn the_command_line_is_valid() {
        use clap::CommandFactory;
        super::GiftingArgs::command().debug_assert();
    }

    /// `GiftingSettings::default()` (what `ovation up` and the tests use) is what the
    /// binary runs with when nothing is set.
    #[test]
    fn the_defaults_are_the_command_lines() {
        use clap::Parser;
        let parsed = super::GiftingArgs::try_parse_from(["ovation-gifting"])
            .expect("parses with no arguments")
            .gifting;
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", super::GiftingSettings::default())
        );
    }
}
