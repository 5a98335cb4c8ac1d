//! `ovation up`: the suite in one process, one port and one database per service.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use ovation_auth::dev::ensure_dev_keys;
use ovation_server::config::ServerArgs;
use ovation_server::{ServerConfig, Shutdown, bind};
use ovation_store::db::{redact, with_database};
use sqlx::{Connection, Executor, Row};

/// Ports of the suite (SPEC: wallet 50051, catalog 50052, gifting 50053, payout 50054).
pub const CATALOG_PORT: u16 = 50052;

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Address every service binds to.
    #[arg(long, env = "OVATION_HOST", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// Directory for the services' SQLite files (when no PostgreSQL URL is given).
    #[arg(long, env = "OVATION_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// A PostgreSQL server to use instead of SQLite: each service gets its own database
    /// on it, `ovation_<service>`, created if missing.
    /// E.g. postgres://postgres@127.0.0.1:5432/postgres
    #[arg(long, env = "OVATION_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// Catalog port.
    #[arg(long, env = "OVATION_CATALOG_PORT", default_value_t = CATALOG_PORT)]
    catalog_port: u16,
    /// Do not seed an empty catalog with the demo economy.
    #[arg(long, env = "OVATION_NO_SEED")]
    no_seed: bool,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn run(mut args: UpArgs) -> Result<(), Box<dyn std::error::Error>> {
    // Auth is on locally too, with a dev key kept in the data directory, so the local
    // suite behaves like production and `ovation token` can mint for it.
    if args.server.auth.auth_keys_file.is_none() && !args.server.auth.insecure_no_auth {
        args.server.auth.auth_keys_file = Some(ensure_dev_keys(&args.data_dir)?);
    }
    let catalog_addr = SocketAddr::new(args.host, args.catalog_port);
    let catalog_db = database_url(&args, "catalog").await?;
    // Bind every port before announcing anything, so a port in use fails the whole start.
    let catalog_listener = bind(catalog_addr).await?;

    println!("Ovation is up:");
    println!("  catalog  {catalog_addr}  {}", redact(&catalog_db));
    println!();
    println!("Try:");
    println!("  grpcurl -plaintext {catalog_addr} list");
    if args.server.auth.insecure_no_auth {
        println!("  (authentication is OFF: --insecure-no-auth)");
        println!(
            "  grpcurl -plaintext -d '{{\"page_size\": 3}}' {catalog_addr} ovation.catalog.v1.CatalogService/ListGifts"
        );
    } else {
        println!(
            "  export TOKEN=$(cargo run -q -p ovation -- token --sub alice --role viewer --data-dir {})",
            args.data_dir.display()
        );
        println!(
            "  grpcurl -plaintext -H \"authorization: Bearer $TOKEN\" -d '{{\"page_size\": 3}}' {catalog_addr} ovation.catalog.v1.CatalogService/ListGifts"
        );
    }
    println!();
    println!("Ctrl-C stops the suite.");

    let shutdown = Shutdown::on_signals();
    let catalog = tokio::spawn(ovation_catalog::run(
        ovation_catalog::CatalogConfig {
            server: ServerConfig {
                listen_addr: catalog_addr,
                database_url: catalog_db,
                args: args.server.clone(),
            },
            seed_demo: !args.no_seed,
        },
        catalog_listener,
        shutdown.clone(),
    ));

    let mut failures = Vec::new();
    for (name, task) in [("catalog", catalog)] {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // One service failing takes the suite down: a half-running suite misleads.
                shutdown.trigger();
                failures.push(format!("{name}: {e}"));
            }
            Err(join) => {
                shutdown.trigger();
                failures.push(format!("{name} crashed: {join}"));
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; ").into())
    }
}

/// The database URL for `service`: its SQLite file under the data directory, or its own
/// database `ovation_<service>` on the PostgreSQL server, created if missing.
async fn database_url(args: &UpArgs, service: &str) -> Result<String, Box<dyn std::error::Error>> {
    let Some(server_url) = &args.postgres_url else {
        return Ok(format!("sqlite://{}/{service}.db", args.data_dir.display()));
    };
    let name = format!("ovation_{service}");
    sqlx::any::install_default_drivers();
    let mut admin = sqlx::AnyConnection::connect(server_url)
        .await
        .map_err(|e| format!("cannot reach PostgreSQL at {}: {e}", redact(server_url)))?;
    let exists = sqlx::query("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
        .bind(name.as_str())
        .fetch_one(&mut admin)
        .await?
        .try_get::<i64, _>(0)?
        > 0;
    if !exists {
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await?;
    }
    admin.close().await?;
    Ok(with_database(server_url, &name))
}
