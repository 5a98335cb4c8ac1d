//! `ovation up`: the suite in one process, one port and one database per service.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use ovation_auth::dev::ensure_dev_keys;
use std::sync::Arc;

use ovation_server::config::ServerArgs;
use ovation_server::peer::{CatalogPeerArgs, IdentityArgs, PayoutPeerArgs, WalletPeerArgs};
use ovation_server::{ServerConfig, Shutdown, bind};
use ovation_store::db::{redact, with_database};
use sqlx::{Connection, Executor, Row};

/// Ports of the suite (README: wallet 50051, catalog 50052, gifting 50053, payout 50054).
pub const WALLET_PORT: u16 = 50051;
pub const CATALOG_PORT: u16 = 50052;
pub const GIFTING_PORT: u16 = 50053;
pub const PAYOUT_PORT: u16 = 50054;
/// Port of the suite's one Prometheus endpoint (`GET /metrics`).
pub const METRICS_PORT: u16 = 9464;

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
    /// Wallet port.
    #[arg(long, env = "OVATION_WALLET_PORT", default_value_t = WALLET_PORT)]
    wallet_port: u16,
    /// Gifting port.
    #[arg(long, env = "OVATION_GIFTING_PORT", default_value_t = GIFTING_PORT)]
    gifting_port: u16,
    /// Payout port.
    #[arg(long, env = "OVATION_PAYOUT_PORT", default_value_t = PAYOUT_PORT)]
    payout_port: u16,
    /// Port of the Prometheus endpoint on `--host` (`GET /metrics`); 0 turns it off.
    /// The suite has one endpoint for its four services (one process, one registry; RPC
    /// metrics carry the gRPC service as a label). `--metrics-addr` wins when given.
    #[arg(long, env = "OVATION_METRICS_PORT", default_value_t = METRICS_PORT)]
    metrics_port: u16,
    /// Do not seed an empty catalog with the demo economy.
    #[arg(long, env = "OVATION_NO_SEED")]
    no_seed: bool,
    #[command(flatten)]
    payout_worker: ovation_payout::WorkerArgs,
    #[command(flatten)]
    identity: IdentityArgs,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn run(mut args: UpArgs) -> Result<(), Box<dyn std::error::Error>> {
    // Auth is on locally too, with a dev key kept in the data directory, so the local
    // suite behaves like production and `ovation token` can mint for it. The services
    // sign their own identity tokens for each other with the same key.
    let dev_keys = ensure_dev_keys(&args.data_dir)?;
    if args.server.auth.auth_keys_file.is_none() && !args.server.auth.insecure_no_auth {
        args.server.auth.auth_keys_file = Some(dev_keys.clone());
    }
    if args.identity.service_keys_file.is_none() && args.identity.service_token_file.is_none() {
        args.identity.service_keys_file =
            Some(args.server.auth.auth_keys_file.clone().unwrap_or(dev_keys));
    }
    let catalog_addr = SocketAddr::new(args.host, args.catalog_port);
    let wallet_addr = SocketAddr::new(args.host, args.wallet_port);
    let gifting_addr = SocketAddr::new(args.host, args.gifting_port);
    let payout_addr = SocketAddr::new(args.host, args.payout_port);
    let catalog_db = database_url(&args, "catalog").await?;
    let wallet_db = database_url(&args, "wallet").await?;
    let gifting_db = database_url(&args, "gifting").await?;
    let payout_db = database_url(&args, "payout").await?;
    // Bind every port before announcing anything, so a port in use fails the whole start.
    let catalog_listener = bind(catalog_addr).await?;
    let wallet_listener = bind(wallet_addr).await?;
    let gifting_listener = bind(gifting_addr).await?;
    let payout_listener = bind(payout_addr).await?;
    let metrics_addr = args
        .server
        .metrics_addr
        .take()
        .or((args.metrics_port != 0).then(|| SocketAddr::new(args.host, args.metrics_port)));
    let metrics_listener = match metrics_addr {
        Some(address) => Some(bind(address).await?),
        None => None,
    };

    println!("Ovation is up:");
    println!("  wallet   {wallet_addr}  {}", redact(&wallet_db));
    println!("  catalog  {catalog_addr}  {}", redact(&catalog_db));
    println!("  gifting  {gifting_addr}  {}", redact(&gifting_db));
    println!("  payout   {payout_addr}  {}", redact(&payout_db));
    match metrics_addr {
        Some(address) => println!("  metrics  http://{address}/metrics  (all four services)"),
        None => println!("  metrics  off"),
    }
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
    // The services' own configs carry no metrics address (taken above): the one endpoint
    // runs here and serves the process-wide registry.
    let metrics_server = metrics_listener.map(|listener| {
        let shutdown = shutdown.clone();
        tokio::spawn(ovation_metrics::serve(listener, async move {
            shutdown.wait().await
        }))
    });
    let server = |listen_addr, database_url| ServerConfig {
        listen_addr,
        database_url,
        args: args.server.clone(),
    };
    let mut services = tokio::task::JoinSet::new();
    let catalog = ovation_catalog::run(
        ovation_catalog::CatalogConfig {
            server: server(catalog_addr, catalog_db),
            seed_demo: !args.no_seed,
        },
        catalog_listener,
        shutdown.clone(),
    );
    services.spawn(async move { ("catalog", catalog.await) });
    let wallet = ovation_wallet::run(
        ovation_wallet::WalletConfig {
            server: server(wallet_addr, wallet_db),
            wallet: ovation_wallet::WalletSettings::default(),
            catalog: CatalogPeerArgs::plaintext(format!("http://{catalog_addr}")),
            // Clawback orders of reversed purchases go to this suite's payout.
            payout: PayoutPeerArgs::plaintext(format!("http://{payout_addr}")),
            identity: args.identity.clone(),
            // `ovation up` is development: the sandbox, allowed (OVATION_ALLOW_SANDBOX).
            providers: ovation_wallet::payment::build(
                &ovation_wallet::payment::PaymentArgs::development_sandbox(),
            )?,
            webhook_addr: None,
            clock: ovation_types::Clock::system(),
        },
        wallet_listener,
        shutdown.clone(),
    );
    services.spawn(async move { ("wallet", wallet.await) });
    let payout = ovation_payout::run(
        ovation_payout::PayoutConfig {
            server: server(payout_addr, payout_db),
            catalog: CatalogPeerArgs::plaintext(format!("http://{catalog_addr}")),
            identity: args.identity.clone(),
            // The sandbox keeps what it paid in the data directory: it stands for an
            // external provider, whose memory outlives a restart of the suite.
            provider: Arc::new(ovation_payout::provider::SandboxProvider::in_dir(
                args.data_dir.join("payout-sandbox"),
            )),
            account_references: Default::default(),
            webhook: None,
            worker: args.payout_worker.clone().into(),
            clock: ovation_types::Clock::system(),
        },
        payout_listener,
        shutdown.clone(),
    );
    services.spawn(async move { ("payout", payout.await) });
    let gifting = ovation_gifting::run(
        ovation_gifting::GiftingConfig {
            server: server(gifting_addr, gifting_db),
            gifting: ovation_gifting::GiftingSettings::default(),
            catalog: CatalogPeerArgs::plaintext(format!("http://{catalog_addr}")),
            wallet: WalletPeerArgs::plaintext(format!("http://{wallet_addr}")),
            payout: PayoutPeerArgs::plaintext(format!("http://{payout_addr}")),
            identity: args.identity.clone(),
        },
        gifting_listener,
        shutdown.clone(),
    );
    services.spawn(async move { ("gifting", gifting.await) });

    // One service failing takes the suite down at once: a half-running suite misleads.
    let mut failures = Vec::new();
    while let Some(joined) = services.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((name, Err(e))) => {
                shutdown.trigger();
                failures.push(format!("{name}: {e}"));
            }
            Err(join) => {
                shutdown.trigger();
                failures.push(format!("a service crashed: {join}"));
            }
        }
    }
    if let Some(metrics_server) = metrics_server {
        shutdown.trigger();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), metrics_server).await;
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
