//! Where a gift's cost goes, measured around a load phase:
//!
//! - CPU of each suite process (found by the port it listens on; `ovation up` serves all
//!   four services from one process), of PostgreSQL (every `postgres` process, summed: the
//!   whole server) when the suite runs on it, and of the bench client itself, from
//!   /proc/<pid>/stat (utime + stime), as ms per 1,000 gifts;
//! - RPCs per gift by method, server side, from the suite's Prometheus endpoints (so the
//!   calls gifting makes to catalog, wallet and payout show up);
//! - transactions (and statements, with pg_stat_statements) per gift in each service's
//!   PostgreSQL database `ovation_<service>`, from the server's statistics. SQLite keeps no
//!   such statistics: n/a.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use sqlx::Connection;

use super::args::BenchArgs;
use super::pgstats::{self, DbCounts, PgStats, STATS_SETTLE};
use super::procfs;
use super::scrape::{self, RpcCounts};

/// The suite's services, in the order the report lists them.
const SERVICES: [&str; 4] = ["catalog", "wallet", "payout", "gifting"];

/// One suite process and the services it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuiteProcess {
    pub pid: u32,
    pub services: Vec<&'static str>,
}

impl SuiteProcess {
    pub fn label(&self) -> String {
        let joined = self.services.join("+");
        if self.services.len() > 1 {
            format!("{joined}: one process, pid {}", self.pid)
        } else {
            format!("{joined}, pid {}", self.pid)
        }
    }
}

/// Groups `(service, pid)` by pid, in the order of the services.
pub fn group_by_process(found: &[(&'static str, u32)]) -> Vec<SuiteProcess> {
    let mut groups: Vec<SuiteProcess> = Vec::new();
    for &(service, pid) in found {
        match groups.iter_mut().find(|g| g.pid == pid) {
            Some(g) => g.services.push(service),
            None => groups.push(SuiteProcess {
                pid,
                services: vec![service],
            }),
        }
    }
    groups
}

/// `http://127.0.0.1:50051` → 127.0.0.1:50051 (`localhost` is 127.0.0.1).
pub fn socket_of_url(url: &str) -> Option<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split('/').next()?;
    if let Ok(addr) = authority.parse() {
        return Some(addr);
    }
    let (host, port) = authority.rsplit_once(':')?;
    let ip = match host {
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        other => other.trim_matches(['[', ']']).parse().ok()?,
    };
    Some(SocketAddr::new(ip, port.parse().ok()?))
}

/// The database statistics at one instant: `None` when they are not read (SQLite, no
/// server), `Err` when reading failed.
pub type DbReading = Option<Result<DbCounts, String>>;

/// CPU time in clock ticks and the RPC counters at one instant.
#[derive(Clone, Debug)]
pub struct CpuReading {
    processes: BTreeMap<u32, u64>,
    client: Option<u64>,
    postgres: Option<u64>,
    rpcs: Result<RpcCounts, String>,
}

/// What the bench found of the suite, and reads before and after the load.
pub struct CostProbe {
    ticks_per_sec: u64,
    processes: Vec<SuiteProcess>,
    /// Services no local process was found listening for.
    not_local: Vec<&'static str>,
    metrics_urls: Vec<String>,
    /// The suite's PostgreSQL statistics, when it runs on PostgreSQL.
    pg: Option<PgStats>,
    databases: Vec<String>,
    /// Why transactions per gift are not measured (SQLite, no server…).
    no_db_counts: Option<String>,
    /// The suite's PostgreSQL server's main process, when it runs on this machine.
    postmaster: Option<u32>,
}

impl CostProbe {
    /// Finds the suite's processes and databases; prints what it found and the databases'
    /// settings.
    pub async fn discover(args: &BenchArgs) -> CostProbe {
        let urls = [
            args.catalog_url.as_str(),
            &args.addresses.wallet_url,
            &args.addresses.payout_url,
            &args.addresses.gifting_url,
        ];
        let sockets: Vec<Option<SocketAddr>> = urls.iter().map(|u| socket_of_url(u)).collect();
        let wanted: Vec<SocketAddr> = sockets.iter().flatten().copied().collect();
        let listening = procfs::listeners(&wanted);
        let mut found = Vec::new();
        let mut not_local = Vec::new();
        for (service, socket) in SERVICES.iter().zip(&sockets) {
            match socket.and_then(|s| listening.get(&s)) {
                Some(&pid) => found.push((*service, pid)),
                None => not_local.push(*service),
            }
        }
        let processes = group_by_process(&found);
        let sqlite_files: BTreeSet<String> = processes
            .iter()
            .flat_map(|p| procfs::open_sqlite_files(p.pid))
            .collect();
        let mut probe = CostProbe {
            ticks_per_sec: procfs::clock_ticks_per_sec(),
            processes,
            not_local,
            metrics_urls: args.metrics_url.clone(),
            pg: None,
            databases: Vec::new(),
            no_db_counts: None,
            postmaster: None,
        };
        probe.print_processes();
        if !sqlite_files.is_empty() {
            print_sqlite_settings(&sqlite_files).await;
            probe.no_db_counts =
                Some("n/a on SQLite (it keeps no statement or transaction statistics)".into());
            return probe;
        }
        let Some(url) = args.suite_postgres_url() else {
            probe.no_db_counts = Some(
                "n/a (give --postgres-url, the server `ovation up --postgres-url` uses)".into(),
            );
            println!(
                "suite databases: unknown (no SQLite file open in a suite process found, no --postgres-url)"
            );
            return probe;
        };
        probe.attach_postgres(url).await;
        probe
    }

    async fn attach_postgres(&mut self, url: &str) {
        let names: Vec<String> = SERVICES.iter().map(|s| format!("ovation_{s}")).collect();
        let mut pg = match PgStats::connect(url).await {
            Ok(pg) => pg,
            Err(e) => {
                println!("suite databases: PostgreSQL statistics unavailable: {e}");
                self.no_db_counts = Some(format!("n/a ({e})"));
                return;
            }
        };
        match pg.settings().await {
            Ok(s) => println!("suite databases: {s} at {}", pg.url()),
            Err(e) => println!("suite databases: at {}, settings unreadable: {e}", pg.url()),
        }
        match pg.existing(&names).await {
            Ok(existing) if !existing.is_empty() => {
                println!(
                    "  statistics of {} (the databases `ovation up` makes on that server)",
                    existing.join(", ")
                );
                self.databases = existing;
                self.pg = Some(pg);
                self.postmaster = postmaster_of(url);
            }
            Ok(_) => {
                self.no_db_counts = Some(format!(
                    "n/a (no ovation_<service> database on {}: is the suite on it?)",
                    pg.url()
                ));
                pg.close().await;
            }
            Err(e) => {
                self.no_db_counts = Some(format!("n/a ({e})"));
                pg.close().await;
            }
        }
    }

    fn print_processes(&self) {
        let mut line = String::from("suite processes: ");
        if self.processes.is_empty() {
            line.push_str("none found listening locally");
        } else {
            let labels: Vec<String> = self.processes.iter().map(SuiteProcess::label).collect();
            line.push_str(&labels.join("; "));
        }
        if !self.not_local.is_empty() {
            let _ = write!(
                line,
                " ({} not a local process: no CPU figure)",
                self.not_local.join(", ")
            );
        }
        println!("{line}");
    }

    /// Whether readings of the database statistics must wait for backends to report.
    pub fn reads_postgres(&self) -> bool {
        self.pg.is_some()
    }

    /// Waits until PostgreSQL's statistics hold what backends did so far, if they are read.
    pub async fn settle(&self) {
        if self.reads_postgres() {
            eprintln!(
                "bench: waiting {} s for PostgreSQL's statistics (idle backends report at most every 10 s)…",
                STATS_SETTLE.as_secs()
            );
            tokio::time::sleep(STATS_SETTLE).await;
        }
    }

    pub async fn read_cpu(&self) -> CpuReading {
        CpuReading {
            processes: self
                .processes
                .iter()
                .filter_map(|p| Some((p.pid, procfs::stat(p.pid)?.cpu_ticks)))
                .collect(),
            client: procfs::self_stat().map(|s| s.cpu_ticks),
            postgres: self.postmaster.and_then(procfs::server_cpu_ticks),
            rpcs: scrape::rpc_counts(&self.metrics_urls).await,
        }
    }

    pub async fn read_db(&mut self) -> DbReading {
        let pg = self.pg.as_mut()?;
        Some(pg.counts(&self.databases).await)
    }

    pub async fn close(self) {
        if let Some(pg) = self.pg {
            pg.close().await;
        }
    }

    /// The breakdown of the load between two readings, for `calls` SendGift calls.
    pub fn render(
        &self,
        calls: u64,
        wall: Duration,
        cpu: (&CpuReading, &CpuReading),
        db: (&DbReading, &DbReading),
    ) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "cost of the suite's {calls} SendGift calls ({:.2} s):",
            wall.as_secs_f64()
        );
        let _ = writeln!(s, "{}", cpu_header());
        let cpu_line = |s: &mut String, label: &str, ticks: Option<u64>| {
            let _ = writeln!(
                s,
                "{}",
                cpu_row(label, ticks, self.ticks_per_sec, calls, wall)
            );
        };
        for p in &self.processes {
            let ticks = cpu
                .1
                .processes
                .get(&p.pid)
                .zip(cpu.0.processes.get(&p.pid))
                .map(|(a, b)| a.saturating_sub(*b));
            cpu_line(&mut s, &p.label(), ticks);
        }
        if self.pg.is_some() {
            let label = match self.postmaster {
                Some(pid) => format!("PostgreSQL server, pid {pid} and its children"),
                None => "PostgreSQL server (not on this machine)".to_owned(),
            };
            cpu_line(&mut s, &label, diff(cpu.0.postgres, cpu.1.postgres));
        }
        cpu_line(
            &mut s,
            "bench client (this process)",
            diff(cpu.0.client, cpu.1.client),
        );
        match (&cpu.0.rpcs, &cpu.1.rpcs) {
            (Ok(before), Ok(after)) => {
                let _ = write!(
                    s,
                    "{}",
                    render_rpcs(&scrape::delta(before, after), calls, &self.metrics_urls)
                );
            }
            (Err(e), _) | (_, Err(e)) => {
                let _ = writeln!(s, "  RPCs per gift: n/a ({e})");
            }
        }
        match db {
            (Some(Ok(before)), Some(Ok(after))) => {
                let _ = write!(s, "{}", render_db(before, after, calls));
            }
            (Some(Err(e)), _) | (_, Some(Err(e))) => {
                let _ = writeln!(s, "  transactions and statements per gift: n/a ({e})");
            }
            _ => {
                let why = self.no_db_counts.as_deref().unwrap_or("n/a");
                let _ = writeln!(s, "  transactions and statements per gift: {why}");
            }
        }
        s
    }
}

/// The main process of the PostgreSQL server at `url`, if it listens on this machine.
pub fn postmaster_of(url: &str) -> Option<u32> {
    let socket = postgres_socket(url)?;
    procfs::listeners(&[socket]).get(&socket).copied()
}

/// `postgres://user@127.0.0.1:5432/db` → 127.0.0.1:5432 (5432 when the port is not
/// given; `localhost` is 127.0.0.1; a Unix socket host or a name is not resolved).
pub fn postgres_socket(url: &str) -> Option<SocketAddr> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let with_port = if host_port.ends_with(']') || !host_port.contains(':') {
        format!("{host_port}:5432")
    } else {
        host_port.to_owned()
    };
    socket_of_url(&format!("http://{with_port}"))
}

fn diff(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    Some(after?.saturating_sub(before?))
}

fn cpu_header() -> String {
    format!(
        "  {:<58}{:>12}{:>12}",
        "CPU, utime+stime from /proc", "ms/1k gifts", "cores busy"
    )
}

/// One CPU row: ms per 1,000 gifts and the cores it kept busy over `wall`.
pub fn cpu_row(
    label: &str,
    ticks: Option<u64>,
    ticks_per_sec: u64,
    gifts: u64,
    wall: Duration,
) -> String {
    match ticks {
        Some(t) => {
            let cpu_ms = t as f64 * 1_000.0 / ticks_per_sec.max(1) as f64;
            let per_1000 = if gifts > 0 {
                cpu_ms * 1_000.0 / gifts as f64
            } else {
                0.0
            };
            let cores = if wall.is_zero() {
                0.0
            } else {
                cpu_ms / 1_000.0 / wall.as_secs_f64()
            };
            format!("    {label:<56}{per_1000:>12.0}{cores:>12.2}")
        }
        None => format!("    {label:<56}{:>12}", "n/a"),
    }
}

fn render_rpcs(delta: &RpcCounts, calls: u64, urls: &[String]) -> String {
    let mut s = format!("  RPCs per gift (server side, {}):\n", urls.join(", "));
    if delta.is_empty() {
        let _ = writeln!(s, "    none counted: are these the suite's endpoints?");
        return s;
    }
    for (method, n) in delta {
        let _ = writeln!(s, "    {method:<62}{:>8.3}", per(*n, calls));
    }
    let send_gifts = delta
        .iter()
        .filter(|(m, _)| m.ends_with("GiftingService/SendGift"))
        .map(|(_, n)| n)
        .sum::<u64>();
    if send_gifts != calls {
        let _ = writeln!(
            s,
            "    note: the endpoints counted {send_gifts} SendGift, the bench made {calls}: \
             someone else is calling this suite, or these are not its endpoints"
        );
    }
    s
}

fn render_db(before: &DbCounts, after: &DbCounts, calls: u64) -> String {
    let mut s = String::from(
        "  per gift in each service's PostgreSQL database (pg_stat_database; pg_stat_statements):\n",
    );
    let xacts = pgstats::delta(&before.transactions, &after.transactions);
    let statements = match (&before.statements, &after.statements) {
        (Ok(b), Ok(a)) => Ok(pgstats::delta(b, a)),
        (Err(e), _) | (_, Err(e)) => Err(e.clone()),
    };
    for (db, n) in &xacts {
        let stmts = match &statements {
            Ok(per_db) => format!(
                "{:.2} statements",
                per(per_db.get(db).copied().unwrap_or(0), calls)
            ),
            Err(_) => "statements n/a".into(),
        };
        let _ = writeln!(
            s,
            "    {db:<22}{:>8.2} transactions   {stmts}",
            per(*n, calls)
        );
    }
    let _ = writeln!(
        s,
        "    (transactions: commits + rollbacks, a statement outside a transaction being one; \
         statements: BEGIN and COMMIT included; both with the services' background work during \
         the load and the {} s after it)",
        STATS_SETTLE.as_secs()
    );
    if let Err(e) = statements {
        let _ = writeln!(s, "    statements: {e}");
    }
    s
}

fn per(n: u64, calls: u64) -> f64 {
    if calls == 0 {
        0.0
    } else {
        n as f64 / calls as f64
    }
}

/// How every SQLite database of the suite is opened (`ovation_store::Db::connect` sets the
/// pragmas on each connection; journal_mode is read back from the files, as it persists).
async fn print_sqlite_settings(files: &BTreeSet<String>) {
    let mut modes = BTreeSet::new();
    for file in files {
        let url = format!("sqlite://{file}?mode=ro");
        if let Ok(mut conn) = sqlx::SqliteConnection::connect(&url).await {
            if let Ok(mode) = sqlx::query_scalar::<_, String>("PRAGMA journal_mode")
                .fetch_one(&mut conn)
                .await
            {
                modes.insert(mode);
            }
            let _ = conn.close().await;
        }
    }
    let modes: Vec<String> = modes.into_iter().collect();
    println!(
        "suite databases: SQLite {} (journal_mode {} read from the files; synchronous FULL, \
         busy_timeout 10 s as ovation_store::Db sets them on every connection)",
        files.iter().cloned().collect::<Vec<_>>().join(", "),
        if modes.is_empty() {
            "unknown".to_owned()
        } else {
            modes.join("/")
        }
    );
}

/// CPU of the bench client and of PostgreSQL, for the baseline phase.
#[derive(Clone, Copy, Debug)]
pub struct BaselineCpu {
    client: Option<u64>,
    postgres: Option<u64>,
}

impl BaselineCpu {
    /// The bench client's and the server's (`postmaster`) CPU now.
    pub fn read(postmaster: Option<u32>) -> BaselineCpu {
        BaselineCpu {
            client: procfs::self_stat().map(|s| s.cpu_ticks),
            postgres: postmaster.and_then(procfs::server_cpu_ticks),
        }
    }

    /// The baseline's CPU breakdown between two readings.
    pub fn render(before: BaselineCpu, after: BaselineCpu, calls: u64, wall: Duration) -> String {
        let ticks = procfs::clock_ticks_per_sec();
        let mut s = format!(
            "cost of the baseline's {calls} transactions ({:.2} s):\n{}\n",
            wall.as_secs_f64(),
            cpu_header()
        );
        let _ = writeln!(
            s,
            "{}",
            cpu_row(
                "PostgreSQL server (postmaster and its children)",
                diff(before.postgres, after.postgres),
                ticks,
                calls,
                wall
            )
        );
        let _ = writeln!(
            s,
            "{}",
            cpu_row(
                "bench client (this process)",
                diff(before.client, after.client),
                ticks,
                calls,
                wall
            )
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_group_by_the_process_that_serves_them() {
        let up = group_by_process(&[("catalog", 7), ("wallet", 7), ("payout", 7), ("gifting", 7)]);
        assert_eq!(up.len(), 1);
        assert_eq!(
            up[0].label(),
            "catalog+wallet+payout+gifting: one process, pid 7"
        );
        let apart = group_by_process(&[("catalog", 1), ("wallet", 2), ("gifting", 1)]);
        assert_eq!(apart.len(), 2);
        assert_eq!(apart[0].services, vec!["catalog", "gifting"]);
        assert_eq!(apart[1].label(), "wallet, pid 2");
    }

    #[test]
    fn service_urls_name_local_sockets() {
        assert_eq!(
            socket_of_url("http://127.0.0.1:50051"),
            Some("127.0.0.1:50051".parse().unwrap())
        );
        assert_eq!(
            socket_of_url("http://localhost:50052/"),
            Some("127.0.0.1:50052".parse().unwrap())
        );
        assert_eq!(
            socket_of_url("https://[::1]:443"),
            Some("[::1]:443".parse().unwrap())
        );
        assert_eq!(socket_of_url("http://wallet.svc:50051"), None);
        assert_eq!(socket_of_url("grpc://127.0.0.1:1"), None);
    }

    #[test]
    fn postgres_urls_name_their_server_socket() {
        let s = |u| postgres_socket(u).map(|a| a.to_string());
        assert_eq!(
            s("postgres://postgres@127.0.0.1:5432/postgres").as_deref(),
            Some("127.0.0.1:5432")
        );
        assert_eq!(
            s("postgresql://u:p@localhost/db?sslmode=disable").as_deref(),
            Some("127.0.0.1:5432")
        );
        assert_eq!(s("postgres://[::1]:6543/x").as_deref(), Some("[::1]:6543"));
        assert_eq!(s("postgres://db.internal:5432/x"), None);
        assert_eq!(s("mysql://127.0.0.1/x"), None);
    }

    #[test]
    fn cpu_rows_are_ms_per_thousand_gifts_and_cores() {
        // 250 ticks at 100/s = 2.5 s of CPU for 2000 gifts in 5 s: 1250 ms per 1,000, 0.5 cores.
        let row = cpu_row("x", Some(250), 100, 2_000, Duration::from_secs(5));
        let figures: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(figures, vec!["x", "1250", "0.50"]);
        assert!(cpu_row("x", None, 100, 2_000, Duration::from_secs(5)).ends_with("n/a"));
        assert!(cpu_row("x", Some(5), 100, 0, Duration::ZERO).contains('0'));
    }

    #[test]
    fn rpcs_per_gift_and_a_foreign_caller_is_flagged() {
        let delta = RpcCounts::from([
            (
                "ovation.gifting.v1.GiftingService/SendGift".to_owned(),
                2_000,
            ),
            (
                "ovation.wallet.v1.WalletService/DebitCoins".to_owned(),
                2_000,
            ),
            (
                "ovation.catalog.v1.CatalogService/ResolveGift".to_owned(),
                40,
            ),
        ]);
        let urls = vec!["http://127.0.0.1:9464/metrics".to_owned()];
        let text = render_rpcs(&delta, 2_000, &urls);
        assert!(text.contains("WalletService/DebitCoins"), "{text}");
        assert!(text.contains("1.000"), "{text}");
        assert!(text.contains("0.020"), "{text}");
        assert!(!text.contains("note:"), "{text}");
        let text = render_rpcs(&delta, 1_000, &urls);
        assert!(
            text.contains("counted 2000 SendGift, the bench made 1000"),
            "{text}"
        );
    }

    #[test]
    fn database_counts_per_gift() {
        let before = DbCounts {
            transactions: BTreeMap::from([("ovation_wallet".to_owned(), 10)]),
            statements: Err(pgstats::STATEMENTS_HOW_TO.into()),
        };
        let after = DbCounts {
            transactions: BTreeMap::from([
                ("ovation_wallet".to_owned(), 4_010),
                ("ovation_gifting".to_owned(), 6_000),
            ]),
            statements: Err(pgstats::STATEMENTS_HOW_TO.into()),
        };
        let text = render_db(&before, &after, 2_000);
        assert!(
            text.contains("ovation_wallet            2.00 transactions"),
            "{text}"
        );
        assert!(
            text.contains("ovation_gifting           3.00 transactions"),
            "{text}"
        );
        assert!(
            text.contains("statements: n/a — load pg_stat_statements"),
            "{text}"
        );
        let counted = DbCounts {
            transactions: after.transactions.clone(),
            statements: Ok(BTreeMap::from([("ovation_wallet".to_owned(), 12_000)])),
        };
        let from = DbCounts {
            statements: Ok(BTreeMap::new()),
            ..before
        };
        let text = render_db(&from, &counted, 2_000);
        assert!(
            text.contains("2.00 transactions   6.00 statements"),
            "{text}"
        );
    }
}
