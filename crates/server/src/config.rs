//! Settings every service shares. Each has a working default for a local run and can be
//! set by flag or by an `OVATION_*` environment variable.

use std::net::SocketAddr;

use ovation_store::DbOptions;

/// The shared server settings, as flags and environment variables.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    /// Longest a request may run before it fails DEADLINE_EXCEEDED/CANCELLED; a shorter
    /// `grpc-timeout` from the caller wins.
    #[arg(long, env = "OVATION_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// Most requests in flight per service; beyond it, RESOURCE_EXHAUSTED at once.
    #[arg(long, env = "OVATION_CONCURRENCY_MAX", default_value_t = 1_024)]
    pub concurrency_max: usize,
    /// Largest encoded request message accepted, in bytes.
    #[arg(long, env = "OVATION_REQUEST_BYTES_MAX", default_value_t = 1_048_576)]
    pub request_bytes_max: usize,
    /// How often the database is probed to drive the health status.
    #[arg(
        long,
        env = "OVATION_HEALTH_PROBE_INTERVAL_MS",
        default_value_t = 2_000
    )]
    pub health_probe_interval_ms: u64,
    /// Longest shutdown waits for in-flight calls to drain.
    #[arg(long, env = "OVATION_SHUTDOWN_GRACE_MS", default_value_t = 15_000)]
    pub shutdown_grace_ms: u64,
    /// How long idempotency keys are kept, in hours (at least 24).
    #[arg(long, env = "OVATION_IDEMPOTENCY_RETENTION_HOURS", default_value_t = 168,
          value_parser = clap::value_parser!(u64).range(24..=87_600))]
    pub idempotency_retention_hours: u64,
    /// Most pooled database connections.
    #[arg(long, env = "OVATION_DB_CONNECTIONS_MAX", default_value_t = 16)]
    pub db_connections_max: u32,
    /// Longest start-up retries an unreachable database before it exits with an error.
    #[arg(long, env = "OVATION_DB_CONNECT_TIMEOUT_MS", default_value_t = 10_000)]
    pub db_connect_timeout_ms: u64,
    /// Where to serve Prometheus metrics over HTTP (`GET /metrics`), e.g. `0.0.0.0:9090`.
    /// Unset: no metrics endpoint. The registry is process-wide, so in a process running
    /// several services (`ovation up`) one endpoint shows them all; there `ovation up`
    /// runs that one endpoint itself (see its `--metrics-port`).
    #[arg(long, env = "OVATION_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// How often gauges read from the database are refreshed (ledger totals, sagas in
    /// flight, payouts awaiting attention). Ledger totals sum postings per account kind, a
    /// scan of the ledger: raise this on large ledgers. `0`: never.
    #[arg(long, env = "OVATION_DB_GAUGES_INTERVAL_MS", default_value_t = 15_000)]
    pub db_gauges_interval_ms: u64,
    /// Where to serve grpc.health.v1 alone, always plaintext and without authentication,
    /// e.g. `0.0.0.0:8081`: Kubernetes' gRPC probes cannot speak TLS. Same statuses as on
    /// the main port. Unset: health only on the main port.
    #[arg(long, env = "OVATION_PROBE_ADDR")]
    pub probe_addr: Option<SocketAddr>,
    /// Apply the database migrations and exit (a Kubernetes migration Job runs this).
    #[arg(long, env = "OVATION_MIGRATE_ONLY")]
    pub migrate_only: bool,
    /// Apply migrations at start. With `false` (many replicas behind a migration Job) the
    /// service refuses to start on a database that is not fully migrated.
    #[arg(long, env = "OVATION_RUN_MIGRATIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub run_migrations: bool,
    #[command(flatten)]
    pub tls: crate::tls::ServerTlsArgs,
    #[command(flatten)]
    pub auth: crate::access::AuthArgs,
}

impl Default for ServerArgs {
    fn default() -> Self {
        ServerConfig::default().args
    }
}

/// Everything a service needs to start, resolved from flags, environment and defaults.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen_addr: SocketAddr,
    /// `postgres://…` or `sqlite://path`.
    pub database_url: String,
    pub args: ServerArgs,
}

impl ServerConfig {
    /// A service's settings from its command line: `database_url` unset is the service's
    /// own SQLite file ([`default_sqlite_url`]).
    pub fn from_args(
        service: &str,
        listen_addr: SocketAddr,
        database_url: Option<String>,
        args: ServerArgs,
    ) -> Self {
        ServerConfig {
            listen_addr,
            database_url: database_url.unwrap_or_else(|| default_sqlite_url(service)),
            args,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: String::new(),
            args: ServerArgs {
                request_timeout_ms: 10_000,
                concurrency_max: 1_024,
                request_bytes_max: 1_048_576,
                health_probe_interval_ms: 2_000,
                shutdown_grace_ms: 15_000,
                idempotency_retention_hours: 168,
                db_connections_max: 16,
                db_connect_timeout_ms: 10_000,
                metrics_addr: None,
                probe_addr: None,
                db_gauges_interval_ms: 15_000,
                migrate_only: false,
                run_migrations: true,
                tls: crate::tls::ServerTlsArgs::default(),
                auth: crate::access::AuthArgs::default(),
            },
        }
    }
}

impl ServerArgs {
    pub fn db_options(&self) -> DbOptions {
        DbOptions {
            connections_max: self.db_connections_max,
            connect_timeout_ms: self.db_connect_timeout_ms,
            ..DbOptions::default()
        }
    }
}

/// The default SQLite URL of a service: a file under `./data/`.
pub fn default_sqlite_url(service: &str) -> String {
    format!("sqlite://data/{service}.db")
}
