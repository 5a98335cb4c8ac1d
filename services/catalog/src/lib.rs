//! The catalog service: gifts, coin packages, promotions and economy parameters, every
//! change a new version and every old version readable (docs/economy.md).
//!
//! Layout:
//! - [`domain`]: the catalog's values and rules (plain Rust, unit-tested).
//! - [`store`]: all of its SQL.
//! - [`operations`]: its use cases (one create and one update for every versioned kind,
//!   reads, quotes), returning domain errors.
//! - [`grpc`]: the thin gRPC edge: `CatalogApi`'s handlers, a `parse_*` per request,
//!   `to_proto` for answers and errors.
//! - [`seed`]: the demo economy written into an empty catalog.
//! - [`run`]: start-up: database, migrations, seed, then the shared server.
//!
//! Limits: ids ≤ 64, names ≤ 128, URLs ≤ 500 characters; gift prices 1..=50000 coins;
//! ≤ 32 prices per package; ≤ 64 packages per promotion; pages ≤ 500 (docs/limits.md).

pub mod domain;
pub mod grpc;
pub mod operations;
pub mod seed;
pub mod store;

use std::net::SocketAddr;

use ovation_proto::catalog::catalog_service_server::CatalogServiceServer;
use ovation_server::config::ServerArgs;
use ovation_server::{ServerConfig, ServiceSpec, ServiceStart, Shutdown, StartError};
use ovation_store::Db;
use tokio::net::TcpListener;
use tonic::service::Routes;

pub const SPEC: ServiceSpec = ServiceSpec {
    name: "catalog",
    grpc_service: "ovation.catalog.v1.CatalogService",
};

/// Where the catalog listens unless told otherwise.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:50052";

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The catalog's settings: the shared ones plus its own.
#[derive(clap::Parser, Clone, Debug)]
#[command(name = "ovation-catalog", version, about = "Ovation's catalog service")]
pub struct CatalogArgs {
    /// Address to listen on.
    #[arg(long, env = "OVATION_LISTEN_ADDR", default_value = DEFAULT_LISTEN_ADDR)]
    pub listen: SocketAddr,
    /// Database URL: postgres://… or sqlite://path [default: sqlite://data/catalog.db]
    #[arg(long, env = "OVATION_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Do not seed an empty catalog with the demo economy.
    #[arg(long, env = "OVATION_NO_SEED")]
    pub no_seed: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Everything the catalog needs to start.
#[derive(Clone, Debug)]
pub struct CatalogConfig {
    pub server: ServerConfig,
    /// Seed an empty catalog with the demo economy.
    pub seed_demo: bool,
}

impl From<CatalogArgs> for CatalogConfig {
    fn from(args: CatalogArgs) -> Self {
        CatalogConfig {
            server: ServerConfig::from_args(SPEC.name, args.listen, args.database_url, args.server),
            seed_demo: !args.no_seed,
        }
    }
}

/// Runs the catalog on `listener` until `shutdown` trips: connects to and migrates its
/// database, seeds it if empty (unless told not to), then serves.
pub async fn run(
    config: CatalogConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    let seed_demo = config.seed_demo;
    let start = ServiceStart::new(SPEC, &config.server, listener, shutdown);
    let opened = start
        .open_database(&MIGRATIONS, async |db: &Db| {
            if seed_demo {
                seed::seed_if_empty(db).await?;
            }
            Ok(())
        })
        .await?;
    let Some(db) = opened else {
        return Ok(());
    };
    let service = CatalogServiceServer::new(grpc::CatalogApi::new(db.clone()))
        .max_decoding_message_size(config.server.args.request_bytes_max);
    start.serve(Routes::new(service), db, vec![]).await
}

#[cfg(test)]
mod tests {
    /// Every flag and variable parses: no two settings share an id or a name.
    #[test]
    fn the_command_line_is_valid() {
        use clap::CommandFactory;
        super::CatalogArgs::command().debug_assert();
    }
}
