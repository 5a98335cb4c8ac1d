//! The baseline: the same gifts as one PostgreSQL transaction per gift (conditional
//! debit, credit of floor(coins × share / 10000), two journal rows), run by the same number
//! of workers in a throwaway database `ovation_bench_baseline_<run>` on the `--baseline`
//! server, dropped at the end.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use ovation_proto::gifting as gpb;
use ovation_store::db::{redact, with_database};
use sqlx::Connection;

use super::args::BenchArgs;
use super::cost::{BaselineCpu, postmaster_of};
use super::load::{Call, Pace, drive};
use super::pgstats::PgStats;
use super::plan::{LoadLimit, assign, coins_per_viewer, creator_ids, gift_key, viewer_ids};
use super::report::{LoadResult, render_result};
use super::suite::SuiteRun;
use crate::audit::diamonds_for;

/// The creator share the baseline uses when the catalog was not consulted.
const DEFAULT_SHARE_BPS: i32 = 5_000;

/// What the baseline runs.
#[derive(Clone, Debug)]
struct BaselinePlan {
    limit: LoadLimit,
    viewers: u32,
    creators: u32,
    hot_creator: bool,
    pace: Pace,
    connections: u32,
    coins_per_gift: i64,
    share_bps: i32,
    timeout: Duration,
}

impl BaselinePlan {
    /// The gifts the suite was sent, at its price and share; without the suite, the
    /// command line's.
    fn new(args: &BenchArgs, limit: LoadLimit, suite: Option<&SuiteRun>) -> BaselinePlan {
        // The same gifts: in a duration run with the suite, as many as the suite sent.
        let limit = match (suite, limit) {
            (Some(s), LoadLimit::Duration(_)) => LoadLimit::Gifts(s.result.outcomes.total().max(1)),
            _ => limit,
        };
        let (coins_per_gift, share_bps) = suite.map_or(
            (
                args.gift_coins.saturating_mul(i64::from(args.quantity)),
                DEFAULT_SHARE_BPS,
            ),
            |s| (s.coins_per_gift, s.share_bps),
        );
        BaselinePlan {
            limit,
            viewers: args.viewers,
            creators: args.creators,
            hot_creator: args.hot_creator,
            pace: args.pace(),
            connections: args.baseline_connections(),
            coins_per_gift,
            share_bps,
            timeout: args.timeout(),
        }
    }
}

/// Runs the baseline on the PostgreSQL server at `server_url` and prints what it measured.
pub async fn run(
    server_url: &str,
    args: &BenchArgs,
    run: &str,
    limit: LoadLimit,
    suite: Option<&SuiteRun>,
) -> Result<LoadResult, Box<dyn Error>> {
    let plan = BaselinePlan::new(args, limit, suite);
    let settings = match PgStats::connect(server_url).await {
        Ok(mut pg) => {
            let s = pg.settings().await;
            pg.close().await;
            s
        }
        Err(e) => Err(e),
    };
    eprintln!("bench: running the PostgreSQL baseline…");
    let (measured, db) = baseline(server_url, run, &plan).await?;
    let Measured { result, cpu } = measured;
    println!();
    println!(
        "baseline: one PostgreSQL transaction per gift (3 statements: debit, credit, journal) \
         at {db} (dropped afterwards), {} connections, {}, {} coins -> {} diamonds per gift",
        plan.connections,
        plan.pace.describe(),
        plan.coins_per_gift,
        diamonds_for(plan.coins_per_gift, plan.share_bps)
    );
    match settings {
        Ok(s) => println!("baseline database: {s}"),
        Err(e) => println!("baseline database: settings unreadable: {e}"),
    }
    print!("{}", render_result("baseline transactions", &result));
    println!();
    print!(
        "{}",
        BaselineCpu::render(cpu.0, cpu.1, result.outcomes.total(), result.wall)
    );
    Ok(result)
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

/// A baseline load and the CPU readings around it.
struct Measured {
    result: LoadResult,
    cpu: (BaselineCpu, BaselineCpu),
}

/// Creates the throwaway database, runs the baseline in it, drops it (also on failure);
/// the result and the database's URL, redacted.
async fn baseline(
    server_url: &str,
    run: &str,
    plan: &BaselinePlan,
) -> Result<(Measured, String), Box<dyn Error>> {
    let name = format!("ovation_bench_baseline_{run}");
    let mut admin = connect(server_url).await?;
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

/// A connection to the server's own database (to create and drop the baseline's), within
/// 10 s.
async fn connect(server_url: &str) -> Result<sqlx::PgConnection, String> {
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
}

async fn baseline_in(
    url: &str,
    run: &str,
    plan: &BaselinePlan,
) -> Result<Measured, Box<dyn Error>> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(plan.connections)
        .acquire_timeout(plan.timeout)
        .connect(url)
        .await
        .map_err(|e| format!("cannot open the baseline database {}: {e}", redact(url)))?;
    prepare(&pool, run, plan).await?;
    let postmaster = postmaster_of(url);
    let before = BaselineCpu::read(postmaster);
    let result = send_gifts(&pool, run, plan).await;
    // Before the pool closes: its backends' CPU is still their own.
    let after = BaselineCpu::read(postmaster);
    pool.close().await;
    Ok(Measured {
        result: result?,
        cpu: (before, after),
    })
}

/// The schema, every viewer funded for its share of the gifts, every creator at 0
/// diamonds, statistics, and every connection open before the clock starts (as the
/// suite's are).
async fn prepare(
    pool: &sqlx::PgPool,
    run: &str,
    plan: &BaselinePlan,
) -> Result<(), Box<dyn Error>> {
    sqlx::raw_sql(BASELINE_SCHEMA).execute(pool).await?;
    let coins_each = coins_per_viewer(
        plan.limit.planned_gifts_at(match plan.pace {
            Pace::Open { rate, .. } => Some(rate),
            Pace::Closed { .. } => None,
        }),
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
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO creator_balances (creator_id, balance_diamonds)
         SELECT $1 || g, 0 FROM generate_series(0, $2 - 1) AS g",
    )
    .bind(format!("bench-{run}-c"))
    .bind(i64::from(plan.creators))
    .execute(pool)
    .await?;
    sqlx::raw_sql("ANALYZE").execute(pool).await?;
    let mut warm = Vec::new();
    for _ in 0..plan.connections {
        warm.push(pool.acquire().await?);
    }
    Ok(())
}

/// The load phase: gift i from viewer i mod V to creator i mod K (or the one hot
/// creator), each one transaction within the deadline.
async fn send_gifts(
    pool: &sqlx::PgPool,
    run: &str,
    plan: &BaselinePlan,
) -> Result<LoadResult, Box<dyn Error>> {
    let viewer_ids = Arc::new(viewer_ids(run, plan.viewers));
    let creator_ids = Arc::new(creator_ids(run, plan.creators));
    let diamonds = diamonds_for(plan.coins_per_gift, plan.share_bps);
    let (pool, run, plan) = (pool.clone(), run.to_owned(), plan.clone());
    let (pace, limit) = (plan.pace, plan.limit);
    let send = move |i: u64| {
        let (v, c) = assign(i, plan.viewers, plan.creators, plan.hot_creator);
        let (pool, key) = (pool.clone(), gift_key(&run, i));
        let (viewer, creator) = (viewer_ids[v].clone(), creator_ids[c].clone());
        let (timeout, coins) = (plan.timeout, plan.coins_per_gift);
        async move {
            let gift = gift_transaction(&pool, &key, &viewer, &creator, coins, diamonds);
            match tokio::time::timeout(timeout, gift).await {
                Ok(Ok(TxOutcome::Completed)) => Call::Ended(gpb::SagaStatus::Completed),
                Ok(Ok(TxOutcome::Rejected)) => Call::Ended(gpb::SagaStatus::Rejected),
                Ok(Err(e)) => Call::Failed {
                    kind: db_error_kind(&e),
                    message: e.to_string(),
                },
                Err(_) => Call::Failed {
                    kind: "Timeout".into(),
                    message: "the transaction ran out of time".into(),
                },
            }
        }
    };
    drive(pace, limit, send).await
}

enum TxOutcome {
    Completed,
    Rejected,
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
