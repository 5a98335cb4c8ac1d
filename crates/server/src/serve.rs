//! The gRPC server every service runs: its own RPCs plus grpc.health.v1 and reflection,
//! behind the shared limits, until shutdown.

use std::time::Duration;

use ovation_store::Db;
use ovation_types::UnixMillis;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;

use crate::{ServerConfig, Shutdown};

/// What the shared server needs to know about a service.
#[derive(Clone, Copy, Debug)]
pub struct ServiceSpec {
    /// Short name, as in logs, spans and the default database file: `catalog`.
    pub name: &'static str,
    /// Fully-qualified gRPC service: `ovation.catalog.v1.CatalogService`.
    pub grpc_service: &'static str,
}

/// Why a server stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection descriptors are invalid: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Auth(#[from] crate::access::AuthSetupError),
    #[error("cannot serve metrics on {address}: {source}")]
    Metrics {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot serve health probes on {address}: {source}")]
    Probe {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// The grpc.health.v1 service name of liveness (Kubernetes liveness probes ask for it).
pub const LIVENESS_HEALTH_SERVICE: &str = "ovation.liveness";

/// How often expired idempotency keys are pruned.
const IDEMPOTENCY_PRUNE_INTERVAL: Duration = Duration::from_secs(3_600);

/// Serves `routes` on `listener` until `shutdown` trips, then stops accepting, reports
/// NOT_SERVING, and drains in-flight calls for up to `shutdown_grace_ms`.
pub async fn serve(
    spec: ServiceSpec,
    routes: Routes,
    db: Db,
    config: &ServerConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    let args = &config.args;
    // Bind the metrics port first: a port in use fails the start, before anything runs.
    let metrics_listener = match args.metrics_addr {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .map_err(|source| ServeError::Metrics { address, source })?,
        ),
        None => None,
    };
    let probe_listener = match args.probe_addr {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .map_err(|source| ServeError::Probe { address, source })?,
        ),
        None => None,
    };
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let probe_interval = Duration::from_millis(args.health_probe_interval_ms.max(100));
    set_health(&reporter, spec, probe(&db, probe_interval).await).await;
    // Liveness is not readiness: a process that cannot reach its database is alive and
    // should be left to recover, not restarted. This name answers SERVING while the
    // process runs; "" and the service's own name follow the database.
    reporter
        .set_service_status(LIVENESS_HEALTH_SERVICE, ServingStatus::Serving)
        .await;
    record_pool(spec, &db);
    tokio::spawn(watch_database(
        spec,
        db.clone(),
        reporter.clone(),
        probe_interval,
        shutdown.clone(),
    ));
    tokio::spawn(prune_idempotency_keys(
        db.clone(),
        args.idempotency_retention_hours,
        shutdown.clone(),
    ));

    let metrics_server = metrics_listener.map(|listener| {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) =
                ovation_metrics::serve(listener, async move { shutdown.wait().await }).await
            {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        })
    });

    // The probe port: health alone, plaintext, unauthenticated, so kubelet's gRPC probes
    // work when the main port speaks TLS. It reports NOT_SERVING with the main port on
    // drain (same reporter) and stops once the main server has stopped.
    let (probe_stop, probe_stopped) = tokio::sync::oneshot::channel::<()>();
    let probe_server = probe_listener.map(|listener| {
        let health = health_service.clone();
        tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(accepting(listener), async {
                    let _ = probe_stopped.await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "health probe endpoint failed");
            }
        })
    });

    let reflection_v1 = reflection(spec).build_v1()?;
    let reflection_v1alpha = reflection(spec).build_v1alpha()?;

    let auth = crate::access::AuthLayer::new(
        args.auth.authenticator()?,
        crate::access::RateLimiter::new(
            args.auth.rate_limit_per_second,
            args.auth.rate_limit_burst,
        ),
    );
    let limits = tower::ServiceBuilder::new()
        .layer(ovation_telemetry::RpcSpanLayer::new(spec.name))
        // Outside auth and load shedding, so refused and shed calls are counted too.
        .layer(ovation_metrics::RpcMetricsLayer::new(&[
            spec.grpc_service,
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]))
        .layer(auth)
        // Shed at once when the limit is reached: a queue in front of a saturated service
        // only turns overload into timeouts. tonic maps the shed to RESOURCE_EXHAUSTED.
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::new(
            args.concurrency_max.max(1),
        ))
        .into_inner();

    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = crate::tls::server_tls_config(&args.tls)? {
        builder = builder.tls_config(tls)?;
    }
    let mut server = builder
        .timeout(Duration::from_millis(args.request_timeout_ms))
        .layer(limits);
    let router = server
        .add_routes(routes)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    let address = listener.local_addr().ok();
    tracing::info!(service = spec.name, ?address, "serving");
    let stopping = {
        let shutdown = shutdown.clone();
        let reporter = reporter.clone();
        async move {
            shutdown.wait().await;
            // Tell load balancers first, so new calls go elsewhere while we drain.
            set_health(&reporter, spec, ServingStatus::NotServing).await;
        }
    };
    let serving = router.serve_with_incoming_shutdown(accepting(listener), stopping);
    let grace = Duration::from_millis(args.shutdown_grace_ms);
    tokio::select! {
        result = serving => result?,
        _ = async { shutdown.wait().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(service = spec.name, grace_ms = args.shutdown_grace_ms,
                "in-flight calls did not drain within the grace period; stopping anyway");
        }
    }
    let _ = probe_stop.send(());
    if let Some(probe_server) = probe_server {
        let _ = tokio::time::timeout(Duration::from_secs(2), probe_server).await;
    }
    if let Some(metrics_server) = metrics_server {
        // It stops on the same shutdown; a scrape in flight does not hold the exit up long.
        let _ = tokio::time::timeout(Duration::from_secs(2), metrics_server).await;
    }
    tracing::info!(service = spec.name, "stopped");
    Ok(())
}

/// Reflection lists only what this server serves (the descriptor set holds all four
/// services); v1alpha is served too because grpcurl 1.8 speaks only v1alpha.
fn reflection(spec: ServiceSpec) -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ovation_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc error details, so grpcurl can print ErrorInfo and BadRequest.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(spec.grpc_service)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
}

async fn probe(db: &Db, interval: Duration) -> ServingStatus {
    if db.ping(interval.min(Duration::from_secs(2))).await {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// Database pool use, refreshed with every health probe.
fn record_pool(spec: ServiceSpec, db: &Db) {
    let pool = db.pool();
    ovation_metrics::global().set_db_pool(spec.name, pool.size(), pool.num_idle());
}

async fn set_health(reporter: &HealthReporter, spec: ServiceSpec, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(spec.grpc_service, status).await;
}

/// Health follows the database: a service that cannot reach its database cannot serve.
async fn watch_database(
    spec: ServiceSpec,
    db: Db,
    reporter: HealthReporter,
    interval: Duration,
    shutdown: Shutdown,
) {
    let mut last = None;
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let status = probe(&db, interval).await;
        record_pool(spec, &db);
        if last != Some(status) {
            if status == ServingStatus::Serving {
                tracing::info!(service = spec.name, "database reachable: SERVING");
            } else {
                tracing::warn!(service = spec.name, "database unreachable: NOT_SERVING");
            }
            last = Some(status);
        }
        if !shutdown.is_triggered() {
            set_health(&reporter, spec, status).await;
        }
    }
}

async fn prune_idempotency_keys(db: Db, retention_hours: u64, shutdown: Shutdown) {
    let retention_ms = i64::try_from(retention_hours.saturating_mul(3_600_000)).unwrap_or(i64::MAX);
    loop {
        let cutoff = UnixMillis(UnixMillis::now().0.saturating_sub(retention_ms));
        match db.prune_idempotency_keys(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "expired idempotency keys deleted"),
            Err(e) => tracing::warn!(error = %e, "pruning idempotency keys failed; will retry"),
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(IDEMPOTENCY_PRUNE_INTERVAL) => {}
        }
    }
}

/// Why a service could not start or stopped with an error. Start-up errors say what to
/// fix (an unreachable database, a port in use), never panic.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] ovation_store::StoreError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Peer(#[from] crate::peer::PeerError),
    /// Settings that cannot run (a provider not built, a sandbox not allowed, a secret
    /// file missing): the message says which and what to change.
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// What a service does after [`prepare_database`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Go on and serve.
    Serve,
    /// `--migrate-only`: the migrations are applied; exit.
    Exit,
}

/// Migrations as the settings say: applied at start (the default), applied and then stop
/// (`--migrate-only`, a migration Job), or required to be applied already
/// (`OVATION_RUN_MIGRATIONS=false`: replicas never race to migrate).
pub async fn prepare_database(
    db: &Db,
    migrations: &ovation_store::sqlx::migrate::Migrator,
    args: &crate::config::ServerArgs,
) -> Result<Next, StartError> {
    if args.migrate_only {
        db.migrate(migrations).await?;
        tracing::info!("migrations applied (--migrate-only); exiting");
        return Ok(Next::Exit);
    }
    if args.run_migrations {
        db.migrate(migrations).await?;
        return Ok(Next::Serve);
    }
    let pending = db.pending_migrations(migrations).await?;
    if !pending.is_empty() {
        return Err(StartError::Store(ovation_store::StoreError::Config(
            format!(
                "the database is missing migrations {pending:?} and OVATION_RUN_MIGRATIONS=false: \
             run the migration job (the service with --migrate-only) first"
            ),
        )));
    }
    Ok(Next::Serve)
}

/// Binds a listener, with an error that names the address.
pub async fn bind(address: std::net::SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Bind { address, source })
}

/// The connections `listener` accepts, with TCP_NODELAY: a reply is a few small HTTP/2
/// frames, and with Nagle's algorithm on, the last one waited for the peer's delayed ACK
/// (40 ms on Linux) whenever an earlier one was unacknowledged — every saga hop and most
/// SendGift answers paid it under load (issue 13's profile).
fn accepting(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}
