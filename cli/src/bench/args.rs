//! `ovation bench`'s command line, and what it checks beyond clap.

use std::path::PathBuf;
use std::time::Duration;

use ovation_types::ResourceId;

use super::load::Pace;
use super::plan::LoadLimit;
use super::startup::StartupArgs;
use crate::audit::Addresses;

/// Most viewers one run creates.
pub const VIEWERS_MAX: u32 = 100_000;
/// Most creators one run registers.
pub const CREATORS_MAX: u32 = 10_000;
/// Most concurrent senders.
pub const CONCURRENCY_MAX: u32 = 1_024;
/// Most gifts one run sends (also the cap of a duration run).
pub const GIFTS_MAX: u64 = 10_000_000;
/// Longest load phase of a duration run.
pub const DURATION_SECS_MAX: u64 = 3_600;
/// Gifts sent when neither `--gifts` nor `--duration-secs` is given.
pub const GIFTS_DEFAULT: u64 = 2_000;
/// Longest a single RPC or baseline transaction may take (`--rpc-timeout-secs`).
pub const RPC_TIMEOUT_SECS_MAX: u64 = 120;
/// Highest open-loop rate, gifts per second.
pub const RATE_MAX: u32 = 100_000;
/// Most open-loop sends in flight (`--rate-inflight-max`).
pub const RATE_INFLIGHT_MAX: u32 = 65_536;
/// Most metrics endpoints scraped.
const METRICS_URLS_MAX: usize = 16;
/// Baseline connections when `--baseline-connections` is not given: min(C, this), the
/// same as one service's default pool (`OVATION_DB_CONNECTIONS_MAX`).
const BASELINE_CONNECTIONS_DEFAULT: u32 = 16;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Another bench instead of the load: `startup` measures each service's time to
    /// SERVING and idle memory.
    #[command(subcommand)]
    pub mode: Option<BenchMode>,
    // Wallet, payout and gifting: the addresses the audit takes too.
    #[command(flatten)]
    pub addresses: Addresses,
    /// Catalog address (for the gift's price and the package's coins).
    #[arg(
        long,
        env = "OVATION_CATALOG_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub catalog_url: String,
    /// An admin token for the audit; without one, one is minted with the signing key.
    #[arg(long, env = "OVATION_ADMIN_TOKEN")]
    pub token: Option<String>,
    /// The data directory of the `ovation up` under test (its dev key signs the viewers'
    /// and creators' tokens).
    #[arg(long, env = "OVATION_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Sign tokens with the first hs256 key of this keys file instead of the dev key.
    #[arg(long)]
    pub keys_file: Option<PathBuf>,
    /// Viewers (accounts created and funded for this run).
    #[arg(long, default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=VIEWERS_MAX as i64))]
    pub viewers: u32,
    /// Creators (registered for this run).
    #[arg(long, default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=CREATORS_MAX as i64))]
    pub creators: u32,
    /// Send every gift to one creator (contention on one diamond balance).
    #[arg(long)]
    pub hot_creator: bool,
    /// Concurrent senders (closed loop: each sends its next gift when the last is
    /// answered; for max throughput).
    #[arg(long, default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=CONCURRENCY_MAX as i64))]
    pub concurrency: u32,
    /// Open loop: send this many gifts per second on a fixed schedule whatever comes back,
    /// latency measured from each gift's due time (instead of --concurrency).
    #[arg(long, conflicts_with = "concurrency",
          value_parser = clap::value_parser!(u32).range(1..=RATE_MAX as i64))]
    pub rate: Option<u32>,
    /// Open loop: most sends in flight; a gift due beyond it is dropped (and counted).
    #[arg(long, default_value_t = 4_096, requires = "rate",
          value_parser = clap::value_parser!(u32).range(1..=RATE_INFLIGHT_MAX as i64))]
    pub rate_inflight_max: u32,
    /// Gifts to send (default 2000 when --duration-secs is not given).
    #[arg(long, conflicts_with = "duration_secs",
          value_parser = clap::value_parser!(u64).range(1..=GIFTS_MAX))]
    pub gifts: Option<u64>,
    /// Send for this many seconds instead of a number of gifts.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=DURATION_SECS_MAX))]
    pub duration_secs: Option<u64>,
    /// The catalog gift to send.
    #[arg(long, default_value = "rose")]
    pub gift: String,
    /// Gifts per SendGift (quantity).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=99))]
    pub quantity: i32,
    /// The coin package bought (repeatedly, as needed) to fund each viewer.
    #[arg(long, visible_alias = "seed-packages", default_value = "coins_10000")]
    pub seed_package: String,
    /// Currency the packages are paid in.
    #[arg(long, default_value = "USD")]
    pub currency: String,
    /// Payment token of the purchases (the sandbox provider's always-approved card).
    #[arg(long, default_value = "tok_sandbox_ok")]
    pub payment_token: String,
    /// The live stream the gifts are sent in (default: bench-<run id>).
    #[arg(long)]
    pub stream_id: Option<String>,
    /// Deadline of every RPC and of every baseline transaction, seconds.
    #[arg(long, default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=RPC_TIMEOUT_SECS_MAX))]
    pub rpc_timeout_secs: u64,
    /// Also run the gifts as one transaction per gift on this PostgreSQL server
    /// (a throwaway database is created on it and dropped at the end),
    /// e.g. postgres://postgres@127.0.0.1:5432/postgres
    #[arg(long)]
    pub baseline: Option<String>,
    /// Run only the baseline (no suite needed).
    #[arg(long, requires = "baseline")]
    pub baseline_only: bool,
    /// Connections of the baseline's pool (default: min(concurrency, 16), one service's pool).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub baseline_connections: Option<u32>,
    /// The suite's Prometheus endpoints (RPCs per gift are read from them before and after
    /// the load), comma-separated: `ovation up` serves all four services on one; separate
    /// processes each have their own (`OVATION_METRICS_ADDR`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:9464/metrics"
    )]
    pub metrics_url: Vec<String>,
    /// The PostgreSQL server the suite runs on (`ovation up --postgres-url`): its
    /// statistics give transactions (and, with pg_stat_statements, statements) per gift in
    /// each service's database `ovation_<service>`. Default: `--baseline`'s server.
    #[arg(long, env = "OVATION_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// Coins per gift unit in the baseline when the catalog is not consulted
    /// (--baseline-only); with the suite, the catalog's quote is used.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..=50_000))]
    pub gift_coins: i64,
}

impl BenchArgs {
    /// Checks what clap cannot; the load limit.
    pub fn validate(&self) -> Result<LoadLimit, String> {
        let id =
            |flag: &str, value: &str| ResourceId::parse(value).map_err(|e| format!("--{flag} {e}"));
        id("gift", &self.gift)?;
        id("seed-package", &self.seed_package)?;
        if let Some(stream) = &self.stream_id {
            id("stream-id", stream)?;
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err("--currency must be an ISO 4217 code such as USD".into());
        }
        if self.payment_token.is_empty() || self.payment_token.len() > 255 {
            return Err("--payment-token must be 1..=255 characters".into());
        }
        let postgres =
            |url: &str| url.starts_with("postgres://") || url.starts_with("postgresql://");
        if self.baseline.as_deref().is_some_and(|u| !postgres(u)) {
            return Err("--baseline must be a postgres:// URL".into());
        }
        if self.postgres_url.as_deref().is_some_and(|u| !postgres(u)) {
            return Err("--postgres-url must be a postgres:// URL".into());
        }
        if self.metrics_url.len() > METRICS_URLS_MAX
            || self.metrics_url.iter().any(|u| !u.starts_with("http://"))
        {
            return Err(format!(
                "--metrics-url takes 1..={METRICS_URLS_MAX} http:// URLs"
            ));
        }
        Ok(match (self.gifts, self.duration_secs) {
            (Some(_), Some(_)) => {
                return Err("give --gifts or --duration-secs, not both".into());
            }
            (Some(n), None) => LoadLimit::Gifts(n),
            (None, Some(s)) => LoadLimit::Duration(Duration::from_secs(s)),
            (None, None) => LoadLimit::Gifts(GIFTS_DEFAULT),
        })
    }

    /// The deadline of every RPC and every baseline transaction.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.rpc_timeout_secs)
    }

    /// Closed loop at `--concurrency`, or open loop at `--rate`.
    pub fn pace(&self) -> Pace {
        match self.rate {
            Some(rate) => Pace::Open {
                rate,
                inflight_max: self.rate_inflight_max,
            },
            None => Pace::Closed {
                concurrency: self.concurrency,
            },
        }
    }

    /// The server whose statistics describe the suite's databases.
    pub fn suite_postgres_url(&self) -> Option<&str> {
        self.postgres_url.as_deref().or(self.baseline.as_deref())
    }

    pub fn baseline_connections(&self) -> u32 {
        self.baseline_connections
            .unwrap_or_else(|| self.concurrency.min(BASELINE_CONNECTIONS_DEFAULT))
    }
}

/// `ovation bench <mode>`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum BenchMode {
    /// Start each service's own binary on an existing (migrated) database: time from
    /// spawn to grpc.health SERVING and idle RSS, per service.
    Startup(StartupArgs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, String> {
        let argv = std::iter::once("bench").chain(args.iter().copied());
        Cli::try_parse_from(argv)
            .map(|c| c.bench)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_a_2000_gift_run_of_roses() {
        let a = parse(&[]).unwrap();
        assert_eq!(
            (a.viewers, a.creators, a.concurrency, a.hot_creator),
            (100, 10, 32, false)
        );
        assert_eq!(a.gift, "rose");
        assert_eq!(a.seed_package, "coins_10000");
        assert_eq!(a.validate(), Ok(LoadLimit::Gifts(2_000)));
        assert_eq!(a.baseline_connections(), 16);
        assert_eq!(a.pace(), Pace::Closed { concurrency: 32 });
        assert_eq!(a.metrics_url, vec!["http://127.0.0.1:9464/metrics"]);
        assert!(a.mode.is_none());
        let a = parse(&["--rate", "500", "--duration-secs", "10"]).unwrap();
        assert_eq!(
            a.pace(),
            Pace::Open {
                rate: 500,
                inflight_max: 4_096
            }
        );
        let a = parse(&["startup", "--database", "sqlite"]).unwrap();
        assert!(matches!(a.mode, Some(BenchMode::Startup(_))));
    }

    #[test]
    fn counts_and_concurrency_are_bounded() {
        for bad in [
            &["--concurrency", "0"][..],
            &["--concurrency", "1025"],
            &["--viewers", "0"],
            &["--viewers", "100001"],
            &["--creators", "10001"],
            &["--gifts", "0"],
            &["--gifts", "10000001"],
            &["--duration-secs", "3601"],
            &["--quantity", "100"],
            &["--rpc-timeout-secs", "0"],
            &["--gifts", "10", "--duration-secs", "5"],
            &["--baseline-only"],
            &["--rate", "0"],
            &["--rate", "100001"],
            &["--rate", "10", "--concurrency", "8"],
            &["--rate-inflight-max", "10"],
            &["--rate", "10", "--rate-inflight-max", "0"],
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
        let a = parse(&["--concurrency", "1024", "--gifts", "10000000"]).unwrap();
        assert_eq!(a.validate(), Ok(LoadLimit::Gifts(10_000_000)));
        let a = parse(&["--duration-secs", "30"]).unwrap();
        assert_eq!(
            a.validate(),
            Ok(LoadLimit::Duration(Duration::from_secs(30)))
        );
    }

    #[test]
    fn ids_urls_and_currency_are_checked() {
        for bad in [
            &["--gift", "ro se"][..],
            &["--stream-id", &"s".repeat(65)],
            &["--seed-package", ""],
            &["--currency", "usd"],
            &["--baseline", "mysql://x"],
            &["--postgres-url", "sqlite://x.db"],
            &["--metrics-url", "https://x/metrics"],
        ] {
            let a = parse(bad).unwrap();
            assert!(a.validate().is_err(), "accepted {bad:?}");
        }
        let a = parse(&[
            "--baseline",
            "postgres://postgres@127.0.0.1:5432/postgres",
            "--baseline-only",
            "--seed-packages",
            "coins_5000",
        ])
        .unwrap();
        assert!(a.validate().is_ok());
        assert_eq!(a.seed_package, "coins_5000");
    }
}
