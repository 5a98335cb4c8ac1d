//! `ovation bench`: throughput and latency of `SendGift` on a running suite, the audit
//! afterwards, and (with `--baseline`) the same gifts as one PostgreSQL transaction per gift
//! on the same database server, side by side.
//!
//! - Setup: V viewer accounts (CreateAccount), funded (PurchaseCoins of `--seed-package`
//!   with the sandbox card, as many times as the planned gifts need), K creators
//!   (RegisterCreator, each as itself). Every id is prefixed with a fresh run id, so
//!   repeated runs on one suite never collide.
//! - Load: C workers send gifts (a fresh idempotency key each) until N gifts or the
//!   duration; gift i goes from viewer i mod V to creator i mod K (or to one creator with
//!   `--hot-creator`). Every `SendGift` latency goes into an HDR histogram (µs, 3
//!   significant figures); outcomes are counted by saga status and by gRPC error code.
//!   Throughput is COMPLETED gifts per wall-clock second of the load phase.
//! - Audit: `ovation audit` on the same suite; a violation makes the bench fail.
//! - Baseline: a throwaway database `ovation_bench_baseline_<run>` on the `--baseline`
//!   server with viewer balances, creator diamonds and a journal; each gift is one
//!   transaction (conditional debit, credit of floor(coins × share / 10000), two journal
//!   rows), run by the same number of workers; the database is dropped at the end.
//!
//! Limits: viewers ≤ 100,000, creators ≤ 10,000, concurrency 1..=1024, gifts ≤ 10^7,
//! duration ≤ 1 h, purchases per viewer ≤ 1,000; every RPC and every baseline transaction
//! has a deadline (`--rpc-timeout-secs`), setup calls retry transient failures a bounded
//! number of times. No timing is asserted anywhere in tests.

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use ovation_auth::dev::{DEV_KEYS_FILE, ensure_dev_keys};
use ovation_auth::{Role, Signer};
use ovation_proto::catalog::catalog_service_client::CatalogServiceClient;
use ovation_proto::gifting::gifting_service_client::GiftingServiceClient;
use ovation_proto::payout::payout_service_client::PayoutServiceClient;
use ovation_proto::wallet::wallet_service_client::WalletServiceClient;
use ovation_proto::{catalog as cpb, gifting as gpb, payout as ppb, wallet as wpb};
use ovation_store::db::{redact, with_database};
use ovation_types::ResourceId;
use sqlx::Connection;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use crate::audit::{self, AuditArgs, diamonds_for};

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
/// Most coin purchases made for one viewer during setup.
pub const PURCHASES_PER_VIEWER_MAX: u64 = 1_000;
/// A duration run funds viewers as if the suite sustained this many gifts per second.
pub const DURATION_FUNDING_GIFTS_PER_SEC: u64 = 2_000;
/// Longest a single RPC or baseline transaction may take (`--rpc-timeout-secs`).
pub const RPC_TIMEOUT_SECS_MAX: u64 = 120;
/// Attempts of one setup call on a transient failure (UNAVAILABLE, RESOURCE_EXHAUSTED…).
const SETUP_ATTEMPTS: u32 = 8;
/// Highest latency the histograms track, µs (beyond: recorded as this).
const LATENCY_HIGH_US: u64 = 600_000_000;
/// Baseline connections when `--baseline-connections` is not given: min(C, this), the
/// same as one service's default pool (`OVATION_DB_CONNECTIONS_MAX`).
const BASELINE_CONNECTIONS_DEFAULT: u32 = 16;
/// The creator share the baseline uses when the catalog was not consulted.
const DEFAULT_SHARE_BPS: i32 = 5_000;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Wallet address.
    #[arg(
        long,
        env = "OVATION_WALLET_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub wallet_url: String,
    /// Catalog address (for the gift's price and the package's coins).
    #[arg(
        long,
        env = "OVATION_CATALOG_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub catalog_url: String,
    /// Gifting address.
    #[arg(
        long,
        env = "OVATION_GIFTING_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    pub gifting_url: String,
    /// Payout address.
    #[arg(
        long,
        env = "OVATION_PAYOUT_URL",
        default_value = "http://127.0.0.1:50054"
    )]
    pub payout_url: String,
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
    /// Concurrent senders.
    #[arg(long, default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=CONCURRENCY_MAX as i64))]
    pub concurrency: u32,
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
    /// Coins per gift unit in the baseline when the catalog is not consulted
    /// (--baseline-only); with the suite, the catalog's quote is used.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..=50_000))]
    pub gift_coins: i64,
}

/// When the load phase ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadLimit {
    Gifts(u64),
    Duration(Duration),
}

impl LoadLimit {
    /// The most gifts the phase may send.
    fn gift_cap(self) -> u64 {
        match self {
            LoadLimit::Gifts(n) => n,
            LoadLimit::Duration(_) => GIFTS_MAX,
        }
    }

    /// The gifts viewers are funded for.
    pub fn planned_gifts(self) -> u64 {
        match self {
            LoadLimit::Gifts(n) => n,
            LoadLimit::Duration(d) => d
                .as_secs()
                .saturating_mul(DURATION_FUNDING_GIFTS_PER_SEC)
                .min(GIFTS_MAX),
        }
    }

    fn describe(self) -> String {
        match self {
            LoadLimit::Gifts(n) => format!("{n} gifts"),
            LoadLimit::Duration(d) => format!("{} s (at most {GIFTS_MAX} gifts)", d.as_secs()),
        }
    }
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
        if let Some(url) = &self.baseline
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err("--baseline must be a postgres:// URL".into());
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

    fn baseline_connections(&self) -> u32 {
        self.baseline_connections
            .unwrap_or_else(|| self.concurrency.min(BASELINE_CONNECTIONS_DEFAULT))
    }
}

/// Purchases of `package_coins` each viewer needs for its share of `planned_gifts`
/// (gift i comes from viewer i mod V, so no viewer sends more than ⌈N/V⌉).
pub fn purchases_needed(
    planned_gifts: u64,
    viewers: u32,
    coins_per_gift: i64,
    package_coins: i64,
) -> Result<u64, String> {
    if viewers == 0 || coins_per_gift <= 0 || package_coins <= 0 {
        return Err("viewers, gift price and package coins must be positive".into());
    }
    let coins = coins_per_viewer(planned_gifts, viewers, coins_per_gift)
        .ok_or("the coins each viewer needs overflow")?;
    let purchases = coins.div_ceil(package_coins as u64).max(1);
    if purchases > PURCHASES_PER_VIEWER_MAX {
        return Err(format!(
            "each viewer would need {purchases} purchases of {package_coins} coins \
             (at most {PURCHASES_PER_VIEWER_MAX}): add --viewers or pick a bigger --seed-package"
        ));
    }
    Ok(purchases)
}

/// Coins one viewer spends on ⌈N/V⌉ gifts.
fn coins_per_viewer(planned_gifts: u64, viewers: u32, coins_per_gift: i64) -> Option<u64> {
    planned_gifts
        .div_ceil(u64::from(viewers.max(1)))
        .checked_mul(u64::try_from(coins_per_gift).ok()?)
}

/// Which viewer sends gift `i`, and to which creator.
pub fn assign(i: u64, viewers: u32, creators: u32, hot_creator: bool) -> (usize, usize) {
    let viewer = (i % u64::from(viewers.max(1))) as usize;
    let creator = if hot_creator {
        0
    } else {
        (i % u64::from(creators.max(1))) as usize
    };
    (viewer, creator)
}

// ---- results ---------------------------------------------------------------------------

/// What the calls of a load phase returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    pub completed: u64,
    pub rejected: u64,
    pub compensated: u64,
    pub pending: u64,
    pub needs_operator: u64,
    pub unspecified: u64,
    /// Failed calls by error kind (gRPC code, or the baseline's error class).
    pub errors: BTreeMap<String, u64>,
    /// One error message of each kind, to explain them.
    pub error_samples: BTreeMap<String, String>,
}

impl Outcomes {
    fn error(&mut self, kind: String, message: String) {
        *self.errors.entry(kind.clone()).or_default() += 1;
        self.error_samples.entry(kind).or_insert(message);
    }

    fn merge(&mut self, other: Outcomes) {
        self.completed += other.completed;
        self.rejected += other.rejected;
        self.compensated += other.compensated;
        self.pending += other.pending;
        self.needs_operator += other.needs_operator;
        self.unspecified += other.unspecified;
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
        for (k, m) in other.error_samples {
            self.error_samples.entry(k).or_insert(m);
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn total(&self) -> u64 {
        self.completed
            + self.rejected
            + self.compensated
            + self.pending
            + self.needs_operator
            + self.unspecified
            + self.error_count()
    }

    pub fn render(&self) -> String {
        let mut s = format!(
            "COMPLETED {}, REJECTED {}, COMPENSATED {}, PENDING {}",
            self.completed, self.rejected, self.compensated, self.pending
        );
        if self.needs_operator > 0 {
            let _ = write!(s, ", NEEDS_OPERATOR {}", self.needs_operator);
        }
        if self.unspecified > 0 {
            let _ = write!(s, ", no status {}", self.unspecified);
        }
        let _ = write!(s, ", errors {}", self.error_count());
        if !self.errors.is_empty() {
            let kinds: Vec<String> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = write!(s, " ({})", kinds.join(", "));
        }
        s
    }
}

/// A load phase's measurements.
#[derive(Clone, Debug)]
pub struct LoadResult {
    pub latency_us: Histogram<u64>,
    pub outcomes: Outcomes,
    pub wall: Duration,
}

/// The figures compared between the suite and the baseline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Figures {
    pub gifts_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Figures {
    pub fn of(result: &LoadResult) -> Figures {
        let h = &result.latency_us;
        let q = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        Figures {
            gifts_per_sec: per_second(result.outcomes.completed, result.wall),
            p50_us: q(0.50),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if h.is_empty() { 0 } else { h.max() },
        }
    }
}

/// `count` per second of `wall`; 0 for an empty interval.
pub fn per_second(count: u64, wall: Duration) -> f64 {
    let secs = wall.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// Microseconds as milliseconds with two decimals.
pub fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1_000.0)
}

/// `a ÷ b`, if both are meaningful.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && a >= 0.0 && b > 0.0).then(|| a / b)
}

pub fn render_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r >= 0.1 => format!("{r:.2}x"),
        Some(r) => format!("{r:.3}x"),
        None => "n/a".into(),
    }
}

/// The side-by-side table of suite and baseline.
pub fn render_comparison(suite: &Figures, baseline: &Figures) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  {:<18}{:>14}{:>14}{:>18}",
        "", "suite", "baseline", "suite / baseline"
    );
    let _ = writeln!(
        s,
        "  {:<18}{:>14.1}{:>14.1}{:>18}",
        "gifts/s",
        suite.gifts_per_sec,
        baseline.gifts_per_sec,
        render_ratio(ratio(suite.gifts_per_sec, baseline.gifts_per_sec))
    );
    for (name, a, b) in [
        ("p50 latency ms", suite.p50_us, baseline.p50_us),
        ("p99 latency ms", suite.p99_us, baseline.p99_us),
        ("p999 latency ms", suite.p999_us, baseline.p999_us),
    ] {
        let _ = writeln!(
            s,
            "  {:<18}{:>14}{:>14}{:>18}",
            name,
            ms(a),
            ms(b),
            render_ratio(ratio(a as f64, b as f64))
        );
    }
    s
}

fn render_result(label: &str, result: &LoadResult) -> String {
    let f = Figures::of(result);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{label}: {} calls in {:.2} s",
        result.outcomes.total(),
        result.wall.as_secs_f64()
    );
    let _ = writeln!(s, "  outcomes    {}", result.outcomes.render());
    for (kind, message) in &result.outcomes.error_samples {
        let _ = writeln!(s, "  e.g. {kind}: {}", truncate(message, 200));
    }
    let _ = writeln!(s, "  throughput  {:.1} completed gifts/s", f.gifts_per_sec);
    let _ = writeln!(
        s,
        "  latency ms  p50 {}  p99 {}  p999 {}  max {}",
        ms(f.p50_us),
        ms(f.p99_us),
        ms(f.p999_us),
        ms(f.max_us)
    );
    s
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn histogram() -> Result<Histogram<u64>, Box<dyn Error>> {
    Ok(Histogram::new_with_bounds(1, LATENCY_HIGH_US, 3)?)
}

fn elapsed_us(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A fresh run id: 10 hex digits, lowercase (it names a database too).
fn run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:010x}", h.finish() & 0xff_ffff_ffff)
}

// ---- the suite -------------------------------------------------------------------------

/// Ids and tokens of a run's participants.
struct Cast {
    viewer_ids: Vec<String>,
    viewer_tokens: Vec<MetadataValue<Ascii>>,
    creator_ids: Vec<String>,
    creator_tokens: Vec<MetadataValue<Ascii>>,
}

fn bearer(token: &str) -> Result<MetadataValue<Ascii>, Box<dyn Error>> {
    Ok(format!("Bearer {token}").parse()?)
}

fn request<T>(message: T, token: &MetadataValue<Ascii>, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert("authorization", token.clone());
    r.set_timeout(timeout);
    r
}

async fn channel(url: &str, timeout: Duration) -> Result<Channel, Box<dyn Error>> {
    Ok(Channel::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| format!("cannot reach {url}: {e} (is `ovation up` running?)"))?)
}

/// Transient for setup purposes: worth the same call again (same idempotency key).
fn transient(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::ResourceExhausted
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Aborted
            | tonic::Code::Cancelled
    )
}

/// One setup call, retried with backoff on transient failures, a bounded number of times.
async fn retrying<T, F, Fut>(what: &str, mut call: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match call().await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) if transient(s.code()) && attempt < SETUP_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt.min(5)))).await;
            }
            Err(s) => {
                return Err(format!("{what}: {:?}: {}", s.code(), s.message()));
            }
        }
    }
}

struct Suite {
    wallet: WalletServiceClient<Channel>,
    catalog: CatalogServiceClient<Channel>,
    gifting: GiftingServiceClient<Channel>,
    payout: PayoutServiceClient<Channel>,
}

/// What setup learned from the catalog and did.
struct Setup {
    coins_per_gift: i64,
    share_bps: i32,
    package_coins: i64,
    purchases_per_viewer: u64,
    took: Duration,
}

async fn setup(
    args: &BenchArgs,
    suite: &Suite,
    cast: &Cast,
    run: &str,
    limit: LoadLimit,
) -> Result<Setup, Box<dyn Error>> {
    let started = Instant::now();
    let timeout = Duration::from_secs(args.rpc_timeout_secs);
    let reader = &cast.viewer_tokens[0];
    let quote = retrying("QuoteGift", || {
        let mut catalog = suite.catalog.clone();
        let req = request(
            cpb::QuoteGiftRequest {
                gift_id: args.gift.clone(),
                quantity: args.quantity,
            },
            reader,
            timeout,
        );
        async move { catalog.quote_gift(req).await }
    })
    .await?;
    let package = retrying("GetCoinPackage", || {
        let mut catalog = suite.catalog.clone();
        let req = request(
            cpb::GetCoinPackageRequest {
                package_id: args.seed_package.clone(),
                version: 0,
            },
            reader,
            timeout,
        );
        async move { catalog.get_coin_package(req).await }
    })
    .await?
    .coin_package
    .ok_or("GetCoinPackage returned no package")?;
    let purchases = purchases_needed(
        limit.planned_gifts(),
        args.viewers,
        quote.total_coins,
        package.coins,
    )?;
    let concurrency = args.concurrency as usize;

    eprintln!(
        "bench: setting up {} viewers ({purchases} × {} each) and {} creators…",
        args.viewers, args.seed_package, args.creators
    );
    futures::stream::iter(0..cast.viewer_ids.len())
        .map(|v| {
            let wallet = &suite.wallet;
            let user = &cast.viewer_ids[v];
            let token = &cast.viewer_tokens[v];
            async move {
                retrying(&format!("CreateAccount {user}"), || {
                    let mut wallet = wallet.clone();
                    let req = request(
                        wpb::CreateAccountRequest {
                            idempotency_key: format!("bench-{run}-open-{v}"),
                            user_id: user.clone(),
                            minor: false,
                        },
                        token,
                        timeout,
                    );
                    async move { wallet.create_account(req).await }
                })
                .await?;
                for p in 0..purchases {
                    let bought = retrying(&format!("PurchaseCoins {user}"), || {
                        let mut wallet = wallet.clone();
                        let req = request(
                            wpb::PurchaseCoinsRequest {
                                idempotency_key: format!("bench-{run}-buy-{v}-{p}"),
                                user_id: user.clone(),
                                package_id: args.seed_package.clone(),
                                currency_code: args.currency.clone(),
                                payment_token: args.payment_token.clone(),
                                expected_price: None,
                            },
                            token,
                            timeout,
                        );
                        async move { wallet.purchase_coins(req).await }
                    })
                    .await?
                    .purchase
                    .unwrap_or_default();
                    if bought.state != wpb::PurchaseState::Completed as i32 {
                        return Err(format!(
                            "PurchaseCoins {user}: the purchase is {:?} ({}), not COMPLETED",
                            wpb::PurchaseState::try_from(bought.state)
                                .unwrap_or(wpb::PurchaseState::Unspecified),
                            bought.decline_reason
                        ));
                    }
                }
                Ok::<(), String>(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await?;
    futures::stream::iter(0..cast.creator_ids.len())
        .map(|c| {
            let payout = &suite.payout;
            let creator = &cast.creator_ids[c];
            let token = &cast.creator_tokens[c];
            async move {
                retrying(&format!("RegisterCreator {creator}"), || {
                    let mut payout = payout.clone();
                    let req = request(
                        ppb::RegisterCreatorRequest {
                            idempotency_key: format!("bench-{run}-register-{c}"),
                            creator_id: creator.clone(),
                            display_name: format!("Bench creator {c}"),
                        },
                        token,
                        timeout,
                    );
                    async move { payout.register_creator(req).await }
                })
                .await
                .map(|_| ())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await?;
    Ok(Setup {
        coins_per_gift: quote.total_coins,
        share_bps: quote.creator_share_bps,
        package_coins: package.coins,
        purchases_per_viewer: purchases,
        took: started.elapsed(),
    })
}

/// The load phase against the suite.
async fn load_suite(
    args: &BenchArgs,
    gifting: &GiftingServiceClient<Channel>,
    cast: Arc<Cast>,
    run: &str,
    stream: &str,
    limit: LoadLimit,
) -> Result<LoadResult, Box<dyn Error>> {
    let timeout = Duration::from_secs(args.rpc_timeout_secs);
    let next = Arc::new(AtomicU64::new(0));
    let cap = limit.gift_cap();
    let started = Instant::now();
    let deadline = match limit {
        LoadLimit::Duration(d) => Some(started + d),
        LoadLimit::Gifts(_) => None,
    };
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let mut client = gifting.clone();
        let cast = cast.clone();
        let next = next.clone();
        let mut hist = histogram()?;
        let (run, stream, gift) = (run.to_owned(), stream.to_owned(), args.gift.clone());
        let (viewers, creators, hot, quantity) =
            (args.viewers, args.creators, args.hot_creator, args.quantity);
        workers.spawn(async move {
            let mut out = Outcomes::default();
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= cap {
                    break;
                }
                let (v, c) = assign(i, viewers, creators, hot);
                let message = gpb::SendGiftRequest {
                    idempotency_key: format!("bench-{run}-gift-{i}"),
                    sender_user_id: cast.viewer_ids[v].clone(),
                    creator_id: cast.creator_ids[c].clone(),
                    stream_id: stream.clone(),
                    gift_id: gift.clone(),
                    quantity,
                    message: String::new(),
                };
                let req = request(message, &cast.viewer_tokens[v], timeout);
                let t = Instant::now();
                let reply = client.send_gift(req).await;
                hist.saturating_record(elapsed_us(t));
                match reply {
                    Ok(r) => {
                        let status = r.into_inner().receipt.map(|r| r.status);
                        match status.and_then(|s| gpb::SagaStatus::try_from(s).ok()) {
                            Some(gpb::SagaStatus::Completed) => out.completed += 1,
                            Some(gpb::SagaStatus::Rejected) => out.rejected += 1,
                            Some(gpb::SagaStatus::Compensated) => out.compensated += 1,
                            Some(gpb::SagaStatus::Pending) => out.pending += 1,
                            Some(gpb::SagaStatus::NeedsOperator) => out.needs_operator += 1,
                            _ => out.unspecified += 1,
                        }
                    }
                    Err(s) => out.error(format!("{:?}", s.code()), s.message().to_owned()),
                }
            }
            (hist, out)
        });
    }
    collect(workers, started).await
}

async fn collect(
    mut workers: tokio::task::JoinSet<(Histogram<u64>, Outcomes)>,
    started: Instant,
) -> Result<LoadResult, Box<dyn Error>> {
    let mut latency_us = histogram()?;
    let mut outcomes = Outcomes::default();
    while let Some(joined) = workers.join_next().await {
        let (h, o) = joined.map_err(|e| format!("a load worker failed: {e}"))?;
        latency_us.add(&h)?;
        outcomes.merge(o);
    }
    Ok(LoadResult {
        latency_us,
        outcomes,
        wall: started.elapsed(),
    })
}

// ---- the baseline ----------------------------------------------------------------------

/// What the baseline runs.
#[derive(Clone, Debug)]
struct BaselinePlan {
    limit: LoadLimit,
    viewers: u32,
    creators: u32,
    hot_creator: bool,
    concurrency: u32,
    connections: u32,
    coins_per_gift: i64,
    share_bps: i32,
    timeout: Duration,
}

const BASELINE_SCHEMA: &str = "
CREATE TABLE viewer_balances (
    user_id TEXT PRIMARY KEY,
    balance_coins BIGINT NOT NULL CHECK (balance_coins >= 0)
);
CREATE TABLE creator_balances (
    creator_id TEXT PRIMARY KEY,
    balance_diamonds BIGINT NOT NULL CHECK (balance_diamonds >= 0)
);
CREATE TABLE journal (
    entry_id BIGSERIAL PRIMARY KEY,
    gift_key TEXT NOT NULL,
    account TEXT NOT NULL,
    unit TEXT NOT NULL,
    amount BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
";

/// Creates the throwaway database, runs the baseline in it, drops it (also on failure).
async fn baseline(
    server_url: &str,
    run: &str,
    plan: &BaselinePlan,
) -> Result<(LoadResult, String), Box<dyn Error>> {
    let name = format!("ovation_bench_baseline_{run}");
    let connect = async {
        tokio::time::timeout(
            Duration::from_secs(10),
            sqlx::PgConnection::connect(server_url),
        )
        .await
        .map_err(|_| {
            format!(
                "PostgreSQL at {} did not answer in 10 s",
                redact(server_url)
            )
        })?
        .map_err(|e| format!("cannot reach PostgreSQL at {}: {e}", redact(server_url)))
    };
    let mut admin = connect.await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
    let url = with_database(server_url, &name);
    let result = baseline_in(&url, run, plan).await;
    let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
    let _ = admin.close().await;
    if let Err(e) = dropped {
        eprintln!("bench: could not drop {name}: {e}; drop it by hand");
    }
    Ok((result?, redact(&url)))
}

enum TxOutcome {
    Completed,
    Rejected,
}

async fn baseline_in(
    url: &str,
    run: &str,
    plan: &BaselinePlan,
) -> Result<LoadResult, Box<dyn Error>> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(plan.connections)
        .acquire_timeout(plan.timeout)
        .connect(url)
        .await
        .map_err(|e| format!("cannot open the baseline database {}: {e}", redact(url)))?;
    sqlx::raw_sql(BASELINE_SCHEMA).execute(&pool).await?;
    let coins_each = coins_per_viewer(
        plan.limit.planned_gifts(),
        plan.viewers,
        plan.coins_per_gift,
    )
    .and_then(|c| i64::try_from(c).ok())
    .ok_or("the coins each viewer needs overflow")?;
    sqlx::query(
        "INSERT INTO viewer_balances (user_id, balance_coins)
         SELECT $1 || g, $2 FROM generate_series(0, $3 - 1) AS g",
    )
    .bind(format!("bench-{run}-v"))
    .bind(coins_each)
    .bind(i64::from(plan.viewers))
    .execute(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO creator_balances (creator_id, balance_diamonds)
         SELECT $1 || g, 0 FROM generate_series(0, $2 - 1) AS g",
    )
    .bind(format!("bench-{run}-c"))
    .bind(i64::from(plan.creators))
    .execute(&pool)
    .await?;
    sqlx::raw_sql("ANALYZE").execute(&pool).await?;
    // Open every connection before the clock starts, as the suite's are.
    let mut warm = Vec::new();
    for _ in 0..plan.connections {
        warm.push(pool.acquire().await?);
    }
    drop(warm);

    let viewer_ids: Arc<Vec<String>> = Arc::new(
        (0..plan.viewers)
            .map(|v| format!("bench-{run}-v{v}"))
            .collect(),
    );
    let creator_ids: Arc<Vec<String>> = Arc::new(
        (0..plan.creators)
            .map(|c| format!("bench-{run}-c{c}"))
            .collect(),
    );
    let next = Arc::new(AtomicU64::new(0));
    let cap = plan.limit.gift_cap();
    let started = Instant::now();
    let deadline = match plan.limit {
        LoadLimit::Duration(d) => Some(started + d),
        LoadLimit::Gifts(_) => None,
    };
    let diamonds = diamonds_for(plan.coins_per_gift, plan.share_bps);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..plan.concurrency {
        let (pool, next, viewer_ids, creator_ids) = (
            pool.clone(),
            next.clone(),
            viewer_ids.clone(),
            creator_ids.clone(),
        );
        let mut hist = histogram()?;
        let plan = plan.clone();
        let run = run.to_owned();
        workers.spawn(async move {
            let mut out = Outcomes::default();
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= cap {
                    break;
                }
                let (v, c) = assign(i, plan.viewers, plan.creators, plan.hot_creator);
                let key = format!("bench-{run}-gift-{i}");
                let t = Instant::now();
                let done = tokio::time::timeout(
                    plan.timeout,
                    gift_transaction(
                        &pool,
                        &key,
                        &viewer_ids[v],
                        &creator_ids[c],
                        plan.coins_per_gift,
                        diamonds,
                    ),
                )
                .await;
                hist.saturating_record(elapsed_us(t));
                match done {
                    Ok(Ok(TxOutcome::Completed)) => out.completed += 1,
                    Ok(Ok(TxOutcome::Rejected)) => out.rejected += 1,
                    Ok(Err(e)) => out.error(db_error_kind(&e), e.to_string()),
                    Err(_) => out.error("Timeout".into(), "the transaction ran out of time".into()),
                }
            }
            (hist, out)
        });
    }
    let result = collect(workers, started).await;
    pool.close().await;
    result
}

fn db_error_kind(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => format!("SQLSTATE {}", d.code().unwrap_or_default()),
        sqlx::Error::PoolTimedOut => "PoolTimedOut".into(),
        sqlx::Error::Io(_) => "Io".into(),
        _ => "Other".into(),
    }
}

/// One gift as one transaction: debit if the balance covers it, credit, journal.
async fn gift_transaction(
    pool: &sqlx::PgPool,
    key: &str,
    viewer: &str,
    creator: &str,
    coins: i64,
    diamonds: i64,
) -> Result<TxOutcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let debited = sqlx::query(
        "UPDATE viewer_balances SET balance_coins = balance_coins - $1
         WHERE user_id = $2 AND balance_coins >= $1",
    )
    .bind(coins)
    .bind(viewer)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if debited == 0 {
        tx.rollback().await?;
        return Ok(TxOutcome::Rejected);
    }
    sqlx::query(
        "UPDATE creator_balances SET balance_diamonds = balance_diamonds + $1
         WHERE creator_id = $2",
    )
    .bind(diamonds)
    .bind(creator)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO journal (gift_key, account, unit, amount)
         VALUES ($1, $2, 'coin', $3), ($1, $4, 'diamond', $5)",
    )
    .bind(key)
    .bind(viewer)
    .bind(-coins)
    .bind(creator)
    .bind(diamonds)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(TxOutcome::Completed)
}

// ---- the command -----------------------------------------------------------------------

/// Runs the bench and prints its report; `Ok(false)` if the audit found a violation.
pub async fn run(args: BenchArgs) -> Result<bool, Box<dyn Error>> {
    let limit = args.validate()?;
    let run = run_id();
    let stream = args
        .stream_id
        .clone()
        .unwrap_or_else(|| format!("bench-{run}"));
    let timeout = Duration::from_secs(args.rpc_timeout_secs);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());

    println!("ovation bench, run {run}");
    println!(
        "machine: {cores} cores (available_parallelism), {} {}, {} build of ovation",
        std::env::consts::OS,
        std::env::consts::ARCH,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!(
        "load: {} of {:?} x{}, {} viewers, {} creators ({}), concurrency {}, stream {stream}",
        limit.describe(),
        args.gift,
        args.quantity,
        args.viewers,
        args.creators,
        if args.hot_creator {
            "hot creator: every gift to one"
        } else {
            "uniform"
        },
        args.concurrency
    );

    let mut suite_result = None;
    let mut audit_ok = None;
    let mut coins_per_gift = args.gift_coins.saturating_mul(i64::from(args.quantity));
    let mut share_bps = DEFAULT_SHARE_BPS;
    if !args.baseline_only {
        println!(
            "suite at wallet {}, catalog {}, gifting {}, payout {} (its database is not visible over gRPC)",
            args.wallet_url, args.catalog_url, args.gifting_url, args.payout_url
        );
        let keys_file = match &args.keys_file {
            Some(path) => path.clone(),
            None => {
                let path = args.data_dir.join(DEV_KEYS_FILE);
                if !path.exists() {
                    return Err(format!(
                        "no dev key at {}: pass the --data-dir of the running `ovation up` \
                         (or --keys-file)",
                        path.display()
                    )
                    .into());
                }
                ensure_dev_keys(&args.data_dir)?
            }
        };
        let signer =
            Signer::from_keys_file(&keys_file, &[Role::Viewer, Role::Creator, Role::Admin])?;
        let ttl = limit_secs(limit) + 3_600;
        let viewer_ids: Vec<String> = (0..args.viewers)
            .map(|v| format!("bench-{run}-v{v}"))
            .collect();
        let creator_ids: Vec<String> = (0..args.creators)
            .map(|c| format!("bench-{run}-c{c}"))
            .collect();
        let cast = Arc::new(Cast {
            viewer_tokens: viewer_ids
                .iter()
                .map(|id| bearer(&signer.mint(id, &[Role::Viewer], ttl)))
                .collect::<Result<_, _>>()?,
            creator_tokens: creator_ids
                .iter()
                .map(|id| bearer(&signer.mint(id, &[Role::Creator], ttl)))
                .collect::<Result<_, _>>()?,
            viewer_ids,
            creator_ids,
        });
        let suite = Suite {
            wallet: WalletServiceClient::new(channel(&args.wallet_url, timeout).await?),
            catalog: CatalogServiceClient::new(channel(&args.catalog_url, timeout).await?),
            gifting: GiftingServiceClient::new(channel(&args.gifting_url, timeout).await?),
            payout: PayoutServiceClient::new(channel(&args.payout_url, timeout).await?),
        };
        let prepared = setup(&args, &suite, &cast, &run, limit).await?;
        coins_per_gift = prepared.coins_per_gift;
        share_bps = prepared.share_bps;
        println!(
            "setup: {} accounts, {} purchases of {} ({} coins each), {} creators in {:.1} s; \
             a gift costs {} coins, creator share {} bps",
            args.viewers,
            u64::from(args.viewers) * prepared.purchases_per_viewer,
            args.seed_package,
            prepared.package_coins,
            args.creators,
            prepared.took.as_secs_f64(),
            prepared.coins_per_gift,
            prepared.share_bps
        );
        eprintln!("bench: sending gifts…");
        let result = load_suite(&args, &suite.gifting, cast, &run, &stream, limit).await?;
        println!();
        print!("{}", render_result("suite SendGift", &result));
        if result.outcomes.pending > 0 {
            println!(
                "  note: {} gifts were still PENDING at their deadline; the suite finishes them \
                 (the audit counts them once terminal)",
                result.outcomes.pending
            );
        }
        println!();
        println!("audit:");
        let ok = audit::run(AuditArgs {
            addresses: audit::Addresses {
                wallet_url: args.wallet_url.clone(),
                payout_url: args.payout_url.clone(),
                gifting_url: args.gifting_url.clone(),
            },
            // Signed with the same key as the viewers' tokens (also with --keys-file).
            token: Some(
                args.token
                    .clone()
                    .unwrap_or_else(|| signer.mint("ovation-bench", &[Role::Admin], 600)),
            ),
            data_dir: args.data_dir.clone(),
        })
        .await
        .map_err(|e| format!("the audit could not run: {e}"))?;
        audit_ok = Some(ok);
        suite_result = Some(result);
    }

    let mut baseline_result = None;
    if let Some(url) = &args.baseline {
        // The same gifts: in a duration run with the suite, as many as the suite sent.
        let base_limit = match (&suite_result, limit) {
            (Some(r), LoadLimit::Duration(_)) => LoadLimit::Gifts(r.outcomes.total().max(1)),
            _ => limit,
        };
        let plan = BaselinePlan {
            limit: base_limit,
            viewers: args.viewers,
            creators: args.creators,
            hot_creator: args.hot_creator,
            concurrency: args.concurrency,
            connections: args.baseline_connections(),
            coins_per_gift,
            share_bps,
            timeout,
        };
        eprintln!("bench: running the PostgreSQL baseline…");
        let (result, db) = baseline(url, &run, &plan).await?;
        println!();
        println!(
            "baseline: one PostgreSQL transaction per gift at {db} (dropped afterwards), \
             {} connections, {} workers, {} coins -> {} diamonds per gift",
            plan.connections,
            plan.concurrency,
            plan.coins_per_gift,
            diamonds_for(plan.coins_per_gift, plan.share_bps)
        );
        print!("{}", render_result("baseline transactions", &result));
        baseline_result = Some(result);
    }

    if let (Some(s), Some(b)) = (&suite_result, &baseline_result) {
        println!();
        println!(
            "suite vs baseline ({}, concurrency {}, {cores} cores):",
            if args.hot_creator {
                "hot creator"
            } else {
                "uniform"
            },
            args.concurrency
        );
        print!("{}", render_comparison(&Figures::of(s), &Figures::of(b)));
    }
    println!();
    match audit_ok {
        Some(true) => println!("bench: done; audit clean"),
        Some(false) => println!("bench: done; the AUDIT FOUND VIOLATIONS"),
        None => println!("bench: done (baseline only, no suite audited)"),
    }
    Ok(audit_ok.unwrap_or(true))
}

/// Seconds the load may last at most, for token lifetimes.
fn limit_secs(limit: LoadLimit) -> u64 {
    match limit {
        LoadLimit::Duration(d) => d.as_secs(),
        // A count run's length is unknown: tokens last a day (23 h + the hour `run` adds).
        LoadLimit::Gifts(_) => 23 * 3_600,
    }
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

    #[test]
    fn viewers_are_funded_for_their_share_of_the_gifts() {
        // 2000 roses over 100 viewers: 20 coins each, one package.
        assert_eq!(purchases_needed(2_000, 100, 1, 10_000), Ok(1));
        // 2001 gifts: some viewer sends 21.
        assert_eq!(purchases_needed(2_001, 100, 10_000, 10_000), Ok(21));
        assert_eq!(purchases_needed(1, 1, 30_000, 10_000), Ok(3));
        assert!(purchases_needed(10_000_000, 1, 50_000, 10_000).is_err());
        assert!(purchases_needed(10, 0, 1, 10_000).is_err());
        assert!(purchases_needed(10, 1, 0, 10_000).is_err());
        assert_eq!(
            LoadLimit::Duration(Duration::from_secs(10)).planned_gifts(),
            10 * DURATION_FUNDING_GIFTS_PER_SEC
        );
    }

    #[test]
    fn gifts_spread_over_viewers_and_creators_unless_hot() {
        let (mut viewers, mut creators) = (vec![0u64; 7], vec![0u64; 3]);
        for i in 0..70 {
            let (v, c) = assign(i, 7, 3, false);
            viewers[v] += 1;
            creators[c] += 1;
        }
        assert!(viewers.iter().all(|&n| n == 10));
        assert!(creators.iter().all(|&n| (23..=24).contains(&n)));
        assert!((0..70).all(|i| assign(i, 7, 3, true).1 == 0));
        assert_eq!(diamonds_for(1, 5_000), 0);
        assert_eq!(diamonds_for(3, 5_000), 1);
        assert_eq!(diamonds_for(10_000, 5_000), 5_000);
    }

    #[test]
    fn percentiles_throughput_and_ratios() {
        let mut h = histogram().unwrap();
        for us in 1..=1_000u64 {
            h.record(us * 1_000).unwrap();
        }
        let result = LoadResult {
            latency_us: h,
            outcomes: Outcomes {
                completed: 500,
                ..Outcomes::default()
            },
            wall: Duration::from_secs(2),
        };
        let f = Figures::of(&result);
        assert_eq!(f.gifts_per_sec, 250.0);
        // 3 significant figures: within 0.1 %.
        assert!((f.p50_us as f64 - 500_000.0).abs() <= 500.0, "{}", f.p50_us);
        assert!((f.p99_us as f64 - 990_000.0).abs() <= 990.0, "{}", f.p99_us);
        assert!(
            (f.p999_us as f64 - 999_000.0).abs() <= 999.0,
            "{}",
            f.p999_us
        );
        assert_eq!(ms(1_234), "1.23");
        assert_eq!(ms(0), "0.00");
        assert_eq!(per_second(10, Duration::ZERO), 0.0);
        assert_eq!(ratio(100.0, 400.0), Some(0.25));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(render_ratio(ratio(100.0, 400.0)), "0.25x");
        assert_eq!(render_ratio(ratio(1.0, 40.0)), "0.025x");
        assert_eq!(render_ratio(None), "n/a");

        let empty = LoadResult {
            latency_us: histogram().unwrap(),
            outcomes: Outcomes::default(),
            wall: Duration::ZERO,
        };
        let e = Figures::of(&empty);
        assert_eq!((e.gifts_per_sec, e.p99_us), (0.0, 0));
        let table = render_comparison(&f, &e);
        assert!(table.contains("gifts/s"), "{table}");
        assert!(table.contains("n/a"), "{table}");
        let table = render_comparison(&f, &f);
        assert!(table.contains("1.00x"), "{table}");
    }

    #[test]
    fn outcomes_merge_and_render() {
        let mut a = Outcomes {
            completed: 3,
            ..Outcomes::default()
        };
        a.error("Unavailable".into(), "down".into());
        let mut b = Outcomes {
            rejected: 1,
            pending: 2,
            ..Outcomes::default()
        };
        b.error("Unavailable".into(), "still down".into());
        b.error("DeadlineExceeded".into(), "slow".into());
        a.merge(b);
        assert_eq!(a.total(), 9);
        assert_eq!(a.errors["Unavailable"], 2);
        assert_eq!(a.error_samples["Unavailable"], "down");
        let text = a.render();
        assert!(text.starts_with("COMPLETED 3, REJECTED 1"), "{text}");
        assert!(
            text.contains("errors 3 (DeadlineExceeded 1, Unavailable 2)"),
            "{text}"
        );
        let id = run_id();
        assert_eq!(id.len(), 10);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }
}
