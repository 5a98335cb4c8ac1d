//! The bench against a running suite: the viewers and creators of a run (accounts opened
//! and funded, creators registered, every setup call retried on transient failures a
//! bounded number of times), the gifts sent under load, and the audit afterwards.

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use ovation_auth::dev::{DEV_KEYS_FILE, ensure_dev_keys};
use ovation_auth::{Role, Signer};
use ovation_proto::catalog::catalog_service_client::CatalogServiceClient;
use ovation_proto::gifting::gifting_service_client::GiftingServiceClient;
use ovation_proto::payout::payout_service_client::PayoutServiceClient;
use ovation_proto::wallet::wallet_service_client::WalletServiceClient;
use ovation_proto::{catalog as cpb, gifting as gpb, payout as ppb, wallet as wpb};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use super::args::BenchArgs;
use super::cost::CostProbe;
use super::load::{Call, drive};
use super::plan::{LoadLimit, assign, creator_ids, gift_key, purchases_needed, viewer_ids};
use super::report::{LoadResult, render_result};
use crate::audit::{self, AuditArgs};

/// Attempts of one setup call on a transient failure (UNAVAILABLE, RESOURCE_EXHAUSTED…).
const SETUP_ATTEMPTS: u32 = 8;

/// What the suite's part of a run measured and learned.
pub struct SuiteRun {
    pub result: LoadResult,
    /// Whether the audit afterwards found no violation.
    pub audit_ok: bool,
    /// The catalog's price of one send (`--gift` × `--quantity`) and creator share.
    pub coins_per_gift: i64,
    pub share_bps: i32,
}

/// Sets up the run's viewers and creators, sends the gifts, audits; prints each step.
pub async fn run(
    args: &BenchArgs,
    run: &str,
    stream: &str,
    limit: LoadLimit,
) -> Result<SuiteRun, Box<dyn Error>> {
    let at = &args.addresses;
    println!(
        "suite at wallet {}, catalog {}, gifting {}, payout {} (its database is not visible over gRPC)",
        at.wallet_url, args.catalog_url, at.gifting_url, at.payout_url
    );
    let signer = signer(args)?;
    let cast = Arc::new(Cast::new(&signer, run, args, limit.secs() + 3_600)?);
    let suite = Suite::connect(args).await?;
    let mut probe = CostProbe::discover(args).await;
    let prepared = setup(args, &suite, &cast, run, limit).await?;
    prepared.print(args);
    probe.settle().await;
    let db_before = probe.read_db().await;
    let cpu_before = probe.read_cpu().await;
    eprintln!("bench: sending gifts…");
    let result = send_gifts(args, &suite.gifting, cast, run, stream, limit).await?;
    let cpu_after = probe.read_cpu().await;
    probe.settle().await;
    let db_after = probe.read_db().await;
    println!();
    print!("{}", render_result("suite SendGift", &result));
    println!();
    print!(
        "{}",
        probe.render(
            result.outcomes.total(),
            result.wall,
            (&cpu_before, &cpu_after),
            (&db_before, &db_after)
        )
    );
    probe.close().await;
    if result.outcomes.pending > 0 {
        println!(
            "  note: {} gifts were still PENDING at their deadline; the suite finishes them \
             (the audit counts them once terminal)",
            result.outcomes.pending
        );
    }
    println!();
    println!("audit:");
    let audit_ok = run_audit(args, &signer).await?;
    Ok(SuiteRun {
        result,
        audit_ok,
        coins_per_gift: prepared.coins_per_gift,
        share_bps: prepared.share_bps,
    })
}

/// The signer of the run's tokens: `--keys-file`, or the dev key of the running suite.
fn signer(args: &BenchArgs) -> Result<Signer, Box<dyn Error>> {
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
    Ok(Signer::from_keys_file(
        &keys_file,
        &[Role::Viewer, Role::Creator, Role::Admin],
    )?)
}

/// `ovation audit` on the suite, with `--token` or an admin token of the same signer as
/// the viewers' (also with `--keys-file`).
async fn run_audit(args: &BenchArgs, signer: &Signer) -> Result<bool, Box<dyn Error>> {
    let token = args
        .token
        .clone()
        .unwrap_or_else(|| signer.mint("ovation-bench", &[Role::Admin], 600));
    let audited = audit::run(AuditArgs {
        addresses: args.addresses.clone(),
        token: Some(token),
        data_dir: args.data_dir.clone(),
    })
    .await;
    Ok(audited.map_err(|e| format!("the audit could not run: {e}"))?)
}

/// Ids and tokens of a run's participants.
struct Cast {
    viewer_ids: Vec<String>,
    viewer_tokens: Vec<MetadataValue<Ascii>>,
    creator_ids: Vec<String>,
    creator_tokens: Vec<MetadataValue<Ascii>>,
}

impl Cast {
    /// The run's viewers and creators, each with a token of its own valid `ttl` seconds.
    fn new(signer: &Signer, run: &str, args: &BenchArgs, ttl: u64) -> Result<Cast, Box<dyn Error>> {
        let tokens = |ids: &[String], role: Role| -> Result<Vec<_>, Box<dyn Error>> {
            ids.iter()
                .map(|id| bearer(&signer.mint(id, &[role], ttl)))
                .collect()
        };
        let (viewer_ids, creator_ids) = (
            viewer_ids(run, args.viewers),
            creator_ids(run, args.creators),
        );
        Ok(Cast {
            viewer_tokens: tokens(&viewer_ids, Role::Viewer)?,
            creator_tokens: tokens(&creator_ids, Role::Creator)?,
            viewer_ids,
            creator_ids,
        })
    }
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

impl Suite {
    async fn connect(args: &BenchArgs) -> Result<Suite, Box<dyn Error>> {
        let (at, timeout) = (&args.addresses, args.timeout());
        Ok(Suite {
            wallet: WalletServiceClient::new(channel(&at.wallet_url, timeout).await?),
            catalog: CatalogServiceClient::new(channel(&args.catalog_url, timeout).await?),
            gifting: GiftingServiceClient::new(channel(&at.gifting_url, timeout).await?),
            payout: PayoutServiceClient::new(channel(&at.payout_url, timeout).await?),
        })
    }
}

/// What setup learned from the catalog and did.
struct Setup {
    coins_per_gift: i64,
    share_bps: i32,
    package_coins: i64,
    purchases_per_viewer: u64,
    took: Duration,
}

impl Setup {
    fn print(&self, args: &BenchArgs) {
        println!(
            "setup: {} accounts, {} purchases of {} ({} coins each), {} creators in {:.1} s; \
             a gift costs {} coins, creator share {} bps",
            args.viewers,
            u64::from(args.viewers) * self.purchases_per_viewer,
            args.seed_package,
            self.package_coins,
            args.creators,
            self.took.as_secs_f64(),
            self.coins_per_gift,
            self.share_bps
        );
    }
}

/// Prices the gift and the package, then opens and funds the viewers' accounts and
/// registers the creators.
async fn setup(
    args: &BenchArgs,
    suite: &Suite,
    cast: &Cast,
    run: &str,
    limit: LoadLimit,
) -> Result<Setup, Box<dyn Error>> {
    let started = Instant::now();
    let reader = &cast.viewer_tokens[0];
    let quote = quote_gift(args, suite, reader).await?;
    let package_coins = package_coins(args, suite, reader).await?;
    let purchases = purchases_needed(
        limit.planned_gifts_at(args.rate),
        args.viewers,
        quote.total_coins,
        package_coins,
    )?;
    eprintln!(
        "bench: setting up {} viewers ({purchases} × {} each) and {} creators…",
        args.viewers, args.seed_package, args.creators
    );
    open_accounts(args, suite, cast, run, purchases).await?;
    register_creators(args, suite, cast, run).await?;
    Ok(Setup {
        coins_per_gift: quote.total_coins,
        share_bps: quote.creator_share_bps,
        package_coins,
        purchases_per_viewer: purchases,
        took: started.elapsed(),
    })
}

async fn quote_gift(
    args: &BenchArgs,
    suite: &Suite,
    reader: &MetadataValue<Ascii>,
) -> Result<cpb::QuoteGiftResponse, String> {
    retrying("QuoteGift", || {
        let mut catalog = suite.catalog.clone();
        let message = cpb::QuoteGiftRequest {
            gift_id: args.gift.clone(),
            quantity: args.quantity,
        };
        let req = request(message, reader, args.timeout());
        async move { catalog.quote_gift(req).await }
    })
    .await
}

/// The coins of `--seed-package`.
async fn package_coins(
    args: &BenchArgs,
    suite: &Suite,
    reader: &MetadataValue<Ascii>,
) -> Result<i64, Box<dyn Error>> {
    let package = retrying("GetCoinPackage", || {
        let mut catalog = suite.catalog.clone();
        let message = cpb::GetCoinPackageRequest {
            package_id: args.seed_package.clone(),
            version: 0,
        };
        let req = request(message, reader, args.timeout());
        async move { catalog.get_coin_package(req).await }
    })
    .await?
    .coin_package
    .ok_or("GetCoinPackage returned no package")?;
    Ok(package.coins)
}

/// Opens every viewer's account and buys it `purchases` packages, a few viewers at once.
async fn open_accounts(
    args: &BenchArgs,
    suite: &Suite,
    cast: &Cast,
    run: &str,
    purchases: u64,
) -> Result<(), String> {
    futures::stream::iter(0..cast.viewer_ids.len())
        .map(|v| async move {
            let (user, token) = (&cast.viewer_ids[v], &cast.viewer_tokens[v]);
            retrying(&format!("CreateAccount {user}"), || {
                let mut wallet = suite.wallet.clone();
                let message = wpb::CreateAccountRequest {
                    idempotency_key: format!("bench-{run}-open-{v}"),
                    user_id: user.clone(),
                    minor: false,
                };
                let req = request(message, token, args.timeout());
                async move { wallet.create_account(req).await }
            })
            .await?;
            for p in 0..purchases {
                let key = format!("bench-{run}-buy-{v}-{p}");
                buy_coins(args, suite, user, token, key).await?;
            }
            Ok::<(), String>(())
        })
        .buffer_unordered(args.concurrency as usize)
        .try_collect::<()>()
        .await
}

/// One purchase of `--seed-package` for `user`; anything but COMPLETED is an error.
async fn buy_coins(
    args: &BenchArgs,
    suite: &Suite,
    user: &str,
    token: &MetadataValue<Ascii>,
    idempotency_key: String,
) -> Result<(), String> {
    let bought = retrying(&format!("PurchaseCoins {user}"), || {
        let mut wallet = suite.wallet.clone();
        let message = wpb::PurchaseCoinsRequest {
            idempotency_key: idempotency_key.clone(),
            user_id: user.to_owned(),
            package_id: args.seed_package.clone(),
            currency_code: args.currency.clone(),
            payment_token: args.payment_token.clone(),
            expected_price: None,
            payment_method: None,
        };
        let req = request(message, token, args.timeout());
        async move { wallet.purchase_coins(req).await }
    })
    .await?
    .purchase
    .unwrap_or_default();
    if bought.state != wpb::PurchaseState::Completed as i32 {
        return Err(format!(
            "PurchaseCoins {user}: the purchase is {:?} ({}), not COMPLETED",
            wpb::PurchaseState::try_from(bought.state).unwrap_or(wpb::PurchaseState::Unspecified),
            bought.decline_reason
        ));
    }
    Ok(())
}

/// Registers every creator, each as itself, a few at once.
async fn register_creators(
    args: &BenchArgs,
    suite: &Suite,
    cast: &Cast,
    run: &str,
) -> Result<(), String> {
    futures::stream::iter(0..cast.creator_ids.len())
        .map(|c| async move {
            let (creator, token) = (&cast.creator_ids[c], &cast.creator_tokens[c]);
            retrying(&format!("RegisterCreator {creator}"), || {
                let mut payout = suite.payout.clone();
                let message = ppb::RegisterCreatorRequest {
                    idempotency_key: format!("bench-{run}-register-{c}"),
                    creator_id: creator.clone(),
                    display_name: format!("Bench creator {c}"),
                };
                let req = request(message, token, args.timeout());
                async move { payout.register_creator(req).await }
            })
            .await
            .map(|_| ())
        })
        .buffer_unordered(args.concurrency as usize)
        .try_collect::<()>()
        .await
}

/// The load phase: SendGift with a fresh idempotency key each, gift i from viewer i mod V
/// to creator i mod K (or the one hot creator).
async fn send_gifts(
    args: &BenchArgs,
    gifting: &GiftingServiceClient<Channel>,
    cast: Arc<Cast>,
    run: &str,
    stream: &str,
    limit: LoadLimit,
) -> Result<LoadResult, Box<dyn Error>> {
    let (gifting, timeout) = (gifting.clone(), args.timeout());
    let (run, stream, gift) = (run.to_owned(), stream.to_owned(), args.gift.clone());
    let (viewers, creators, hot, quantity) =
        (args.viewers, args.creators, args.hot_creator, args.quantity);
    let send = move |i: u64| {
        let (v, c) = assign(i, viewers, creators, hot);
        let message = gpb::SendGiftRequest {
            idempotency_key: gift_key(&run, i),
            sender_user_id: cast.viewer_ids[v].clone(),
            creator_id: cast.creator_ids[c].clone(),
            stream_id: stream.clone(),
            gift_id: gift.clone(),
            quantity,
            message: String::new(),
        };
        let req = request(message, &cast.viewer_tokens[v], timeout);
        let mut gifting = gifting.clone();
        async move {
            match gifting.send_gift(req).await {
                Ok(r) => Call::Ended(
                    (r.into_inner().receipt.map(|r| r.status))
                        .and_then(|s| gpb::SagaStatus::try_from(s).ok())
                        .unwrap_or(gpb::SagaStatus::Unspecified),
                ),
                Err(s) => Call::Failed {
                    kind: format!("{:?}", s.code()),
                    message: s.message().to_owned(),
                },
            }
        }
    };
    drive(args.pace(), limit, send).await
}
