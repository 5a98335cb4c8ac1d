//! `ovation bench startup`: start and idle cost of each service's own binary
//! (ovation-catalog, -wallet, -payout, -gifting, found beside `ovation`).
//!
//! Fresh databases (SQLite files in a temporary directory, or throwaway databases
//! `ovation_bench_startup_<run>_<service>` on `--postgres-url`) are migrated first by a
//! migrate-only run of each binary; then, `--starts` times, the four start one after
//! another on those existing databases (catalog first: the others call it), each timed
//! from spawn to grpc.health SERVING on its port; once all four serve and have idled
//! `--idle-secs`, each one's VmRSS is read from /proc; then SIGTERM stops them (gifting
//! first) and each must exit. Everything made is removed at the end. Targets shown: SERVING
//! within 1 s on an existing database, idle RSS at most 30 MB per process; they are shown,
//! never enforced.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ovation_auth::dev::ensure_dev_keys;
use ovation_store::db::{redact, with_database};
use sqlx::Connection;
use tokio::process::{Child, Command};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::machine;
use super::pgstats::PgStats;
use super::plan::run_id;
use super::procfs;

/// The services, in start order (catalog first: the others call it).
const SERVICES: [&str; 4] = ["catalog", "wallet", "payout", "gifting"];
/// Longest a service may take to report SERVING, or a migrate-only run to finish.
const START_BOUND: Duration = Duration::from_secs(60);
/// Longest a service may take to exit after SIGTERM.
const STOP_BOUND: Duration = Duration::from_secs(30);
/// Between two health checks while a service starts.
const HEALTH_POLL: Duration = Duration::from_millis(5);
/// The targets the report shows (issue 13): SERVING after start, idle RSS.
const SERVING_TARGET_MS: u64 = 1_000;
const RSS_TARGET_MB: f64 = 30.0;
/// Lines of a service's log shown when it fails.
const LOG_TAIL_LINES: usize = 30;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

#[derive(clap::Args, Debug, Clone)]
pub struct StartupArgs {
    /// The services' database engine.
    #[arg(long, value_enum, default_value = "sqlite")]
    pub database: Engine,
    /// With `--database postgres`: the server the throwaway databases are made on (and
    /// dropped from), e.g. postgres://postgres@127.0.0.1:5432/postgres
    #[arg(long, env = "OVATION_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// Measured starts of the four services.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub starts: u32,
    /// Seconds the four services idle before their RSS is read.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub idle_secs: u64,
    /// Directory of the service binaries (default: the one `ovation` runs from).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

/// What one start of one service measured.
#[derive(Clone, Copy, Debug, Default)]
struct Start {
    serving: Duration,
    rss_kib: Option<u64>,
}

/// Runs the startup bench and prints its table; `Ok(false)` if a service failed.
pub async fn run(args: &StartupArgs) -> Result<bool, Box<dyn std::error::Error>> {
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or("the ovation executable has no directory")?
            .to_path_buf(),
    };
    let binaries: Vec<PathBuf> = SERVICES
        .iter()
        .map(|s| bin_dir.join(format!("ovation-{s}")))
        .collect();
    if let Some(missing) = binaries.iter().find(|b| !b.is_file()) {
        return Err(format!(
            "{} not found: build the services beside ovation (cargo build --release -p ovation \
             -p ovation-catalog -p ovation-wallet -p ovation-payout -p ovation-gifting) or pass --bin-dir",
            missing.display()
        )
        .into());
    }
    let server = match (args.database, &args.postgres_url) {
        (Engine::Postgres, None) => {
            return Err("--database postgres needs --postgres-url".into());
        }
        (Engine::Postgres, Some(url)) => Some(url.clone()),
        (Engine::Sqlite, _) => None,
    };
    let run = run_id();
    let dir = std::env::temp_dir().join(format!("ovation-bench-startup-{run}"));
    std::fs::create_dir_all(&dir)?;
    println!("ovation bench startup, run {run}");
    println!("machine: {}", machine::Machine::read().describe());
    println!(
        "load average before: {}",
        machine::load_average().unwrap_or_else(|| "n/a".into())
    );
    println!(
        "build: {}; services: the binaries in {}",
        machine::build(),
        bin_dir.display()
    );
    let outcome = match &server {
        Some(url) => on_postgres(args, url, &run, &dir, &binaries).await,
        None => {
            println!(
                "database: SQLite files in {} (journal_mode WAL, synchronous FULL, as \
                 ovation_store::Db opens them)",
                dir.display()
            );
            let urls: Vec<String> = SERVICES
                .iter()
                .map(|s| format!("sqlite://{}/{s}.db", dir.display()))
                .collect();
            measure(args, &dir, &binaries, &urls).await
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    let ok = match outcome {
        Ok(table) => {
            print!("{table}");
            true
        }
        Err(e) => {
            println!("startup bench FAILED: {e}");
            false
        }
    };
    println!(
        "load average after: {}",
        machine::load_average().unwrap_or_else(|| "n/a".into())
    );
    Ok(ok)
}

/// Creates the throwaway databases, measures, drops them (also on failure).
async fn on_postgres(
    args: &StartupArgs,
    server_url: &str,
    run: &str,
    dir: &Path,
    binaries: &[PathBuf],
) -> Result<String, String> {
    let mut stats = PgStats::connect(server_url).await?;
    match stats.settings().await {
        Ok(s) => println!("database: {s} at {}", redact(server_url)),
        Err(e) => println!(
            "database: at {}, settings unreadable: {e}",
            redact(server_url)
        ),
    }
    stats.close().await;
    let names: Vec<String> = SERVICES
        .iter()
        .map(|s| format!("ovation_bench_startup_{run}_{s}"))
        .collect();
    let mut admin = sqlx::PgConnection::connect(server_url)
        .await
        .map_err(|e| format!("cannot reach PostgreSQL at {}: {e}", redact(server_url)))?;
    let mut created = Vec::new();
    let mut outcome = Ok(String::new());
    for name in &names {
        match sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
        {
            Ok(_) => created.push(name.clone()),
            Err(e) => {
                outcome = Err(format!("CREATE DATABASE {name}: {e}"));
                break;
            }
        }
    }
    if outcome.is_ok() {
        let urls: Vec<String> = names.iter().map(|n| with_database(server_url, n)).collect();
        outcome = measure(args, dir, binaries, &urls).await;
    }
    for name in &created {
        let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await;
        if let Err(e) = dropped {
            eprintln!("bench: could not drop {name}: {e}; drop it by hand");
        }
    }
    let _ = admin.close().await;
    outcome
}

/// A service's settings, as containers pass them: environment variables only.
struct ServiceConfig {
    name: &'static str,
    binary: PathBuf,
    addr: SocketAddr,
    env: Vec<(String, String)>,
    log: PathBuf,
}

impl ServiceConfig {
    fn command(&self, migrate_only: bool) -> Result<Command, String> {
        let mut command = Command::new(&self.binary);
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("OVATION_") || k.starts_with("OTEL_") || k == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        command
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("OVATION_LISTEN_ADDR", self.addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true);
        if migrate_only {
            command.env("OVATION_MIGRATE_ONLY", "true");
        }
        Ok(command)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

/// A free loopback port (bound, then released for the service to take).
fn free_addr() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))
}

fn configs(
    dir: &Path,
    binaries: &[PathBuf],
    urls: &[String],
) -> Result<Vec<ServiceConfig>, String> {
    let keys = ensure_dev_keys(dir).map_err(|e| format!("dev keys: {e}"))?;
    let keys = keys.display().to_string();
    let addrs: Vec<SocketAddr> = (0..SERVICES.len())
        .map(|_| free_addr())
        .collect::<Result<_, _>>()?;
    let url_of = |name: &str| {
        let i = SERVICES.iter().position(|s| *s == name).unwrap_or(0);
        format!("http://{}", addrs[i])
    };
    Ok(SERVICES
        .iter()
        .enumerate()
        .map(|(i, &name)| {
            let mut env = vec![
                ("OVATION_DATABASE_URL".to_owned(), urls[i].clone()),
                ("OVATION_AUTH_KEYS_FILE".to_owned(), keys.clone()),
                ("OVATION_SERVICE_KEYS_FILE".to_owned(), keys.clone()),
            ];
            if name != "catalog" {
                env.push(("OVATION_CATALOG_URL".into(), url_of("catalog")));
            }
            if name == "payout" {
                let sandbox = dir.join("payout-sandbox").display().to_string();
                env.push(("OVATION_PAYOUT_SANDBOX_DIR".into(), sandbox));
            }
            // A startup measurement, not a money rail: the sandbox providers are allowed.
            env.push(("OVATION_ALLOW_SANDBOX".into(), "true".into()));
            if name == "gifting" {
                env.push(("OVATION_WALLET_URL".into(), url_of("wallet")));
                env.push(("OVATION_PAYOUT_URL".into(), url_of("payout")));
            }
            ServiceConfig {
                name,
                binary: binaries[i].clone(),
                addr: addrs[i],
                env,
                log: dir.join(format!("{name}.log")),
            }
        })
        .collect())
}

/// Migrates, then measures `--starts` rounds; the table.
async fn measure(
    args: &StartupArgs,
    dir: &Path,
    binaries: &[PathBuf],
    urls: &[String],
) -> Result<String, String> {
    let services = configs(dir, binaries, urls)?;
    let mut migrations = Vec::new();
    for service in &services {
        migrations.push(migrate(service).await?);
    }
    let mut starts: Vec<Vec<Start>> = vec![Vec::new(); services.len()];
    for round in 0..args.starts {
        eprintln!("bench: start {} of {}…", round + 1, args.starts);
        let measured = round_of_starts(&services, Duration::from_secs(args.idle_secs)).await?;
        for (i, s) in measured.into_iter().enumerate() {
            starts[i].push(s);
        }
    }
    Ok(render(&services, &migrations, &starts, args.idle_secs))
}

/// One migrate-only run of `service` on its fresh database; how long it took.
async fn migrate(service: &ServiceConfig) -> Result<Duration, String> {
    let started = Instant::now();
    let mut child = service
        .command(true)?
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", service.binary.display()))?;
    let status = tokio::time::timeout(START_BOUND, child.wait())
        .await
        .map_err(|_| format!("{}'s migrate-only run did not end", service.name))?
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!(
            "{}'s migrate-only run failed ({status}):\n{}",
            service.name,
            service.log_tail()
        ));
    }
    Ok(started.elapsed())
}

/// Starts the four in order, each timed to SERVING; idles; reads RSS; stops them.
async fn round_of_starts(services: &[ServiceConfig], idle: Duration) -> Result<Vec<Start>, String> {
    let mut running: Vec<(Child, Start)> = Vec::new();
    for service in services {
        let started = Instant::now();
        let mut child = service
            .command(false)?
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", service.binary.display()))?;
        wait_serving(service, &mut child).await?;
        let serving = started.elapsed();
        running.push((
            child,
            Start {
                serving,
                rss_kib: None,
            },
        ));
    }
    // Idle: no request but the health checks above; background loops run as they would.
    tokio::time::sleep(idle).await;
    for (child, start) in &mut running {
        start.rss_kib = child.id().and_then(procfs::vm_rss_kib);
    }
    let mut measured = Vec::new();
    let mut failure = None;
    for (i, (mut child, start)) in running.into_iter().enumerate().rev() {
        if let Err(e) = stop(&services[i], &mut child).await {
            failure.get_or_insert(e);
        }
        measured.push(start);
    }
    measured.reverse();
    match failure {
        Some(e) => Err(e),
        None => Ok(measured),
    }
}

/// Waits until grpc.health at the service's address answers SERVING; fails if the
/// process exits first or [`START_BOUND`] passes.
async fn wait_serving(service: &ServiceConfig, child: &mut Child) -> Result<(), String> {
    let url = format!("http://{}", service.addr);
    let ready = async {
        while !serving(&url).await {
            // Between checks: the check itself is the synchronisation.
            tokio::time::sleep(HEALTH_POLL).await;
        }
    };
    let outcome = tokio::time::timeout(START_BOUND, async {
        tokio::select! {
            () = ready => Ok(()),
            status = child.wait() => Err(status),
        }
    })
    .await;
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(status)) => Err(format!(
            "{} exited before SERVING ({}):\n{}",
            service.name,
            status.map_or_else(|e| e.to_string(), |s| s.to_string()),
            service.log_tail()
        )),
        Err(_) => Err(format!(
            "{} did not report SERVING within {} s:\n{}",
            service.name,
            START_BOUND.as_secs(),
            service.log_tail()
        )),
    }
}

async fn serving(url: &str) -> bool {
    let Ok(endpoint) = Channel::from_shared(url.to_owned()) else {
        return false;
    };
    let Ok(channel) = endpoint
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
    else {
        return false;
    };
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    matches!(reply, Ok(r) if r.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
}

/// SIGTERM, and the process must exit cleanly within [`STOP_BOUND`].
async fn stop(service: &ServiceConfig, child: &mut Child) -> Result<(), String> {
    let Some(pid) = child.id() else {
        return Err(format!("{} had already exited", service.name));
    };
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map_err(|e| format!("kill -TERM {pid}: {e}"))?;
    if !signalled.success() {
        return Err(format!("kill -TERM {pid} failed ({signalled})"));
    }
    let status = tokio::time::timeout(STOP_BOUND, child.wait()).await;
    match status {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(format!(
            "{} exited with {s} on SIGTERM:\n{}",
            service.name,
            service.log_tail()
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => {
            let _ = child.start_kill();
            Err(format!(
                "{} did not exit within {} s of SIGTERM (killed)",
                service.name,
                STOP_BOUND.as_secs()
            ))
        }
    }
}

/// The median of `values` (the lower middle one of an even count).
pub fn median<T: Copy + Ord>(values: &[T]) -> Option<T> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len().saturating_sub(1) / 2).copied()
}

fn render(
    services: &[ServiceConfig],
    migrations: &[Duration],
    starts: &[Vec<Start>],
    idle_secs: u64,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nmigrate-only run on the fresh databases (not a start): {}",
        services
            .iter()
            .zip(migrations)
            .map(|(svc, d)| format!("{} {} ms", svc.name, d.as_millis()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        s,
        "start on the existing database, {} starts each; RSS after {idle_secs} s idle with all four up:",
        starts.first().map_or(0, Vec::len)
    );
    let _ = writeln!(
        s,
        "  {:<9}{:>24}{:>8}{:>8}{:>12}{:>10}   targets (SERVING <= {SERVING_TARGET_MS} ms, RSS <= {RSS_TARGET_MB:.0} MB)",
        "service", "ms to SERVING, each", "median", "max", "RSS MB med", "RSS max"
    );
    for (service, runs) in services.iter().zip(starts) {
        let ms: Vec<u64> = runs
            .iter()
            .map(|r| u64::try_from(r.serving.as_millis()).unwrap_or(u64::MAX))
            .collect();
        let rss: Vec<u64> = runs.iter().filter_map(|r| r.rss_kib).collect();
        let mb = |kib: u64| kib as f64 * 1_024.0 / 1_000_000.0;
        let each = ms.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
        let (med, max) = (
            median(&ms).unwrap_or(0),
            ms.iter().max().copied().unwrap_or(0),
        );
        let (rss_med, rss_max) = (median(&rss).map(mb), rss.iter().max().copied().map(mb));
        let verdict = match rss_max {
            Some(r) => format!(
                "{}, {}",
                if max <= SERVING_TARGET_MS {
                    "SERVING ok"
                } else {
                    "SERVING OVER"
                },
                if r <= RSS_TARGET_MB {
                    "RSS ok"
                } else {
                    "RSS OVER"
                }
            ),
            None => "RSS n/a".into(),
        };
        let _ = writeln!(
            s,
            "  {:<9}{:>24}{:>8}{:>8}{:>12}{:>10}   {verdict}",
            service.name,
            each,
            med,
            max,
            rss_med.map_or("n/a".into(), |r| format!("{r:.1}")),
            rss_max.map_or("n/a".into(), |r| format!("{r:.1}")),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_take_the_lower_middle() {
        assert_eq!(median(&[30u64, 10, 20]), Some(20));
        assert_eq!(median(&[40u64, 10, 30, 20]), Some(20));
        assert_eq!(median::<u64>(&[]), None);
        assert_eq!(median(&[7u64]), Some(7));
    }

    #[test]
    fn every_service_is_told_where_its_peers_are() {
        let dir = std::env::temp_dir().join(format!("ovation-bench-startup-test-{}", run_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let binaries: Vec<PathBuf> = SERVICES.iter().map(|s| dir.join(s)).collect();
        let urls: Vec<String> = SERVICES
            .iter()
            .map(|s| format!("sqlite://{s}.db"))
            .collect();
        let configs = configs(&dir, &binaries, &urls).unwrap();
        let env = |i: usize, key: &str| {
            configs[i]
                .env
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let catalog = format!("http://{}", configs[0].addr);
        assert_eq!(env(0, "OVATION_CATALOG_URL"), None);
        for i in 1..4 {
            assert_eq!(
                env(i, "OVATION_CATALOG_URL").as_deref(),
                Some(catalog.as_str())
            );
            assert!(env(i, "OVATION_AUTH_KEYS_FILE").is_some());
        }
        assert_eq!(
            env(3, "OVATION_WALLET_URL"),
            Some(format!("http://{}", configs[1].addr))
        );
        assert_eq!(
            env(3, "OVATION_PAYOUT_URL"),
            Some(format!("http://{}", configs[2].addr))
        );
        assert!(env(2, "OVATION_PAYOUT_SANDBOX_DIR").is_some());
        assert_eq!(
            env(1, "OVATION_DATABASE_URL").as_deref(),
            Some("sqlite://wallet.db")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
