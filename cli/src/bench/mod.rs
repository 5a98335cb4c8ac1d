//! `ovation bench`: throughput and latency of `SendGift` on a running suite, the audit
//! afterwards, and (with `--baseline`) the same gifts as one PostgreSQL transaction per gift
//! on the same database server, side by side.
//!
//! - Setup: V viewer accounts (CreateAccount), funded (PurchaseCoins of `--seed-package`
//!   with the sandbox card, as many times as the planned gifts need), K creators
//!   (RegisterCreator, each as itself). Every id is prefixed with a fresh run id, so
//!   repeated runs on one suite never collide.
//! - Load: C workers send gifts (a fresh idempotency key each) until N gifts or the
//!   duration (closed loop), or gifts go out at `--rate` per second on a fixed schedule,
//!   each timed from its due time (open loop, `load.rs`); gift i goes from viewer i mod V
//!   to creator i mod K (or to one creator with `--hot-creator`). Every `SendGift` latency
//!   goes into an HDR histogram (µs, 3 significant figures); outcomes are counted by saga
//!   status and by gRPC error code. Throughput is COMPLETED gifts per wall-clock second of
//!   the load phase.
//! - Cost (`cost.rs`): CPU per 1,000 gifts of each suite process, of PostgreSQL and of the
//!   bench client (/proc), RPCs per gift by method (the suite's /metrics), transactions and
//!   statements per gift per service database (PostgreSQL's statistics).
//! - Audit: `ovation audit` on the same suite; a violation makes the bench fail.
//! - Baseline: a throwaway database `ovation_bench_baseline_<run>` on the `--baseline`
//!   server with viewer balances, creator diamonds and a journal; each gift is one
//!   transaction (conditional debit, credit of floor(coins × share / 10000), two journal
//!   rows), run at the same pace; the database is dropped at the end.
//! - The header names the machine, the build and the databases' settings.
//! - `ovation bench startup` (`startup.rs`): each service's own binary on an existing
//!   database, time to SERVING and idle RSS.
//!
//! Limits: viewers ≤ 100,000, creators ≤ 10,000, concurrency 1..=1024, gifts ≤ 10^7,
//! duration ≤ 1 h, purchases per viewer ≤ 1,000; every RPC and every baseline transaction
//! has a deadline (`--rpc-timeout-secs`), setup calls retry transient failures a bounded
//! number of times. No timing is asserted anywhere in tests.

mod args;
mod baseline;
mod cost;
mod load;
mod machine;
mod pgstats;
mod plan;
mod procfs;
mod report;
mod scrape;
mod startup;
mod suite;

use std::error::Error;

pub use args::BenchArgs;
use args::BenchMode;
use plan::{LoadLimit, run_id};
use report::{Figures, render_comparison};

/// Runs the bench and prints its report; `Ok(false)` if the audit found a violation (or,
/// in startup mode, a service did not start).
pub async fn run(args: BenchArgs) -> Result<bool, Box<dyn Error>> {
    if let Some(BenchMode::Startup(startup)) = &args.mode {
        return startup::run(startup).await;
    }
    let limit = args.validate()?;
    let run = run_id();
    let stream = args
        .stream_id
        .clone()
        .unwrap_or_else(|| format!("bench-{run}"));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    print_header(&args, &run, &stream, limit);
    let suite = if args.baseline_only {
        None
    } else {
        Some(suite::run(&args, &run, &stream, limit).await?)
    };
    let baseline = match &args.baseline {
        Some(url) => Some(baseline::run(url, &args, &run, limit, suite.as_ref()).await?),
        None => None,
    };
    if let (Some(s), Some(b)) = (&suite, &baseline) {
        println!();
        println!(
            "suite vs baseline ({}, {}, {cores} cores):",
            if args.hot_creator {
                "hot creator"
            } else {
                "uniform"
            },
            args.pace().describe()
        );
        print!(
            "{}",
            render_comparison(&Figures::of(&s.result), &Figures::of(b))
        );
    }
    println!();
    println!(
        "load average after: {}",
        machine::load_average().unwrap_or_else(|| "n/a".into())
    );
    let audit_ok = suite.map(|s| s.audit_ok);
    match audit_ok {
        Some(true) => println!("bench: done; audit clean"),
        Some(false) => println!("bench: done; the AUDIT FOUND VIOLATIONS"),
        None => println!("bench: done (baseline only, no suite audited)"),
    }
    Ok(audit_ok.unwrap_or(true))
}

/// The run, the machine, the build and the load, before anything is sent.
fn print_header(args: &BenchArgs, run: &str, stream: &str, limit: LoadLimit) {
    println!("ovation bench, run {run}");
    println!("machine: {}", machine::Machine::read().describe());
    println!(
        "load average before: {}",
        machine::load_average().unwrap_or_else(|| "n/a".into())
    );
    println!("build: {}", machine::build());
    println!(
        "load: {} of {:?} x{}, {} viewers, {} creators ({}), {}, stream {stream}",
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
        args.pace().describe()
    );
}
