//! Issue 11, item 11: a dependency down for minutes (a pod restart, a rollout) must not
//! strand gift sagas in NEEDS_OPERATOR. The four services run as separate processes (see
//! `process_suite`), gifting with the SHIPPED saga retry settings (attempt budget, backoff
//! cap, maximum age), under a steady load of a few gifts a second:
//!
//! 1. the wallet is killed (SIGKILL) and stays down for two minutes, then starts again on
//!    the same address and database;
//! 2. once every saga started so far has ended, payout is killed the same way for two
//!    minutes and comes back.
//!
//! During each outage no saga may be handed to an operator, and every gift sent meanwhile
//! is answered PENDING; after each, every saga started so far ends without an operator:
//! COMPLETED, or REJECTED for lack of coins (one viewer is funded for only part of the
//! load). At the end: one saga per gift, `ovation audit` (the real binary) clean, every
//! balance and the live feed agreeing with the sagas.
//!
//! With the retry budget before issue 11 (12 attempts, backoff capped at 5 s: about 16 s of
//! backoff on average, under a minute at most), every saga in flight during either outage
//! ended NEEDS_OPERATOR.
//!
//! Bounds: 4 gifts/s; each outage 120 s; the sagas of an outage end within about 30 s of
//! the dependency's return (the backoff cap), [`RECOVERY_BOUND`] at most; about 5.5 minutes
//! in all once the binaries are built.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use ovation_e2e::on_sqlite_and_postgres;
use ovation_e2e::process_suite::*;
use ovation_proto::gifting as pb;
use ovation_testkit::GiftingClient;
use tokio::task::JoinHandle;

/// How long each dependency stays down.
const OUTAGE: Duration = Duration::from_secs(120);
/// Gifts sent per second, throughout.
const GIFTS_PER_SECOND: u64 = 4;
/// Load before the first outage and after the last.
const CALM: Duration = Duration::from_secs(5);
/// Longest the sagas of an outage may take to end once the dependency is back: the shipped
/// backoff cap is 30 s, and in the burst of the return some calls time out and wait once
/// more (measured: up to about 60 s after the wallet's return, 30 s after payout's).
const RECOVERY_BOUND: Duration = Duration::from_secs(90);

/// Funded for the whole load.
const RICH: [&str; 3] = ["olga", "piet", "quin"];
/// Funded for about a hundred roses: runs out during the test, so gifts are REJECTED.
const POOR: &str = "rudi";
const CREATORS: [&str; 2] = ["sana", "tove"];

/// Phases of the load, as recorded in [`Sent::phase`]: the outage proper, whose gifts
/// must all be answered PENDING; then its last seconds, while every SendGift of the
/// outage proper gets its answer (gifting's send wait is 1 s), so none of them can see the
/// dependency back; then after the dependency's return.
const WALLET_DOWN: usize = 1;
const PAYOUT_DOWN: usize = 4;
/// Longer than gifting's send wait in the suite (1 s).
const ANSWERS_IN: Duration = Duration::from_secs(2);

on_sqlite_and_postgres!(
    outages,
    sagas_outlast_two_minute_wallet_and_payout_outages_without_an_operator_sqlite,
    sagas_outlast_two_minute_wallet_and_payout_outages_without_an_operator_postgres
);

async fn outages(backend: Backend) {
    let options = SuiteOptions {
        gifting_shipped_retries: true,
        ..SuiteOptions::default()
    };
    let Some(mut suite) = Suite::start(backend, options).await else {
        return;
    };
    // (From the services' start: building the binaries, which Suite::start does first,
    // is not the test's time.)
    let began = std::time::Instant::now();
    let mut funded = BTreeMap::new();
    for viewer in RICH {
        funded.insert(
            viewer.to_owned(),
            suite.funded_viewer(viewer, "coins_5000").await,
        );
    }
    funded.insert(
        POOR.to_owned(),
        suite.funded_viewer(POOR, "coins_100").await,
    );
    for creator in CREATORS {
        suite.creator(creator).await;
    }

    let load = PacedLoad::start(&suite);
    tokio::time::sleep(CALM).await;

    // 1. The wallet is away for two minutes; 2. then payout.
    outage(&mut suite, &load, Away::Wallet).await;
    outage(&mut suite, &load, Away::Payout).await;
    tokio::time::sleep(CALM).await;
    let sent = load.finish(&suite).await;

    // Every gift ended without an operator, and the books agree.
    let sagas = settle_created_before(&suite, i64::MAX, "the end of the load").await;
    assert_one_saga_per_gift(&suite, &sent, &sagas, 0);
    for s in &sagas {
        let r = s.receipt.as_ref().expect("a saga has a receipt");
        let legitimate = r.status == COMPLETED
            || (r.status == REJECTED
                && r.sender_user_id == POOR
                && r.rejection_reason == pb::RejectionReason::InsufficientCoins as i32);
        if !legitimate {
            suite.fail(format!(
                "saga {} ended {:?} ({:?}): only COMPLETED, or REJECTED for {POOR}'s lack \
                 of coins, is expected:{}",
                r.saga_id,
                pb::SagaStatus::try_from(r.status).unwrap_or_default(),
                pb::RejectionReason::try_from(r.rejection_reason).unwrap_or_default(),
                describe(&[s])
            ));
        }
    }
    for (phase, what) in [Away::Wallet, Away::Payout].map(|away| (away.phase(), away.name())) {
        // (The poor viewer's gifts are refused at the debit once their coins are gone,
        // with payout away too: a definite answer.)
        let during: Vec<&Sent> = sent
            .iter()
            .filter(|s| s.phase == phase && s.plan.sender != POOR)
            .collect();
        if during.len() < 100 {
            suite.fail(format!(
                "only {} gifts were sent while {what} was away: the load missed the outage",
                during.len()
            ));
        }
        // An unreachable peer is never an answer: each gift sent meanwhile waited.
        if let Some(s) = during
            .iter()
            .find(|s| s.receipts.iter().any(|r| r.status != PENDING))
        {
            suite.fail(format!(
                "gift {} was sent while {what} was away and answered {:?}",
                s.plan.key, s.receipts
            ));
        }
    }
    suite.assert_audit_clean().await;
    suite.assert_balances(&sagas, &funded, &CREATORS).await;
    suite.assert_feed_matches(&sagas, LOAD_STREAM).await;
    eprintln!(
        "[{}] {} gifts through two 2-minute outages: {:?}; {:.0} s in all",
        suite.backend,
        sent.len(),
        tally(&sagas),
        began.elapsed().as_secs_f64()
    );
    suite.stop().await;
}

/// The peer an outage takes away.
#[derive(Clone, Copy)]
enum Away {
    Wallet,
    Payout,
}

impl Away {
    fn node(self, suite: &mut Suite) -> &mut Node {
        match self {
            Away::Wallet => &mut suite.wallet,
            Away::Payout => &mut suite.payout,
        }
    }

    /// The load's phase while it is away (then + 1 in its last seconds, + 2 once back).
    fn phase(self) -> usize {
        match self {
            Away::Wallet => WALLET_DOWN,
            Away::Payout => PAYOUT_DOWN,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Away::Wallet => "the wallet",
            Away::Payout => "payout",
        }
    }
}

/// `away` is killed for [`OUTAGE`] under the load, then started again; the sagas created
/// before it came back all end.
async fn outage(suite: &mut Suite, load: &PacedLoad, away: Away) {
    away.node(suite).kill_hard().await;
    load.set_phase(away.phase());
    tokio::time::sleep(OUTAGE - ANSWERS_IN).await;
    load.set_phase(away.phase() + 1);
    tokio::time::sleep(ANSWERS_IN).await;
    let back = assert_waiting(suite, away.name()).await;
    away.node(suite).start().await;
    load.set_phase(away.phase() + 2);
    let what = format!("{}'s return", away.name());
    let ended = settle_created_before(suite, back, &what).await;
    eprintln!(
        "[{}] {} outage over: {} sagas so far, {:?}",
        suite.backend,
        away.name(),
        ended.len(),
        tally(&ended)
    );
}

/// Just before the dependency comes back: sagas are waiting for it, none was handed to an
/// operator. Returns now (Unix ms), the instant the outage ends.
async fn assert_waiting(suite: &Suite, what: &str) -> i64 {
    let now = now_ms();
    let sagas = suite
        .sagas(0)
        .await
        .unwrap_or_else(|e| suite.fail(format!("ListSagas while {what} is away: {e}")));
    suite.assert_none_for_an_operator(&sagas, &format!("after {OUTAGE:?} with {what} away"));
    let waiting = sagas.iter().filter(|s| status(s) == PENDING).count();
    if waiting < 100 {
        suite.fail(format!(
            "only {waiting} sagas wait for {what} after {OUTAGE:?}: the outage missed the load"
        ));
    }
    eprintln!(
        "[{}] {what} away for {OUTAGE:?}: {waiting} sagas waiting, none for an operator",
        suite.backend
    );
    now
}

/// Polls until every saga created before `before` (Unix ms) has ended; fails at once on
/// one handed to an operator, and after [`RECOVERY_BOUND`]. Returns those sagas.
async fn settle_created_before(suite: &Suite, before: i64, what: &str) -> Vec<pb::Saga> {
    let started = tokio::time::Instant::now();
    let deadline = started + RECOVERY_BOUND;
    // What the sagas still waiting were told last, for the record.
    let mut seen_errors: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let sagas: Vec<pb::Saga> = suite
            .sagas(0)
            .await
            .unwrap_or_else(|e| suite.fail(format!("ListSagas after {what}: {e}")))
            .into_iter()
            .filter(|s| created_ms(s) < before)
            .collect();
        suite.assert_none_for_an_operator(&sagas, &format!("after {what}"));
        let pending: Vec<&pb::Saga> = sagas.iter().filter(|s| status(s) == PENDING).collect();
        if pending.is_empty() {
            eprintln!(
                "[{}] every saga started before {what} ended {:.1} s later; last errors of \
                 those still waiting meanwhile (by kind, counted per poll): {seen_errors:?}",
                suite.backend,
                started.elapsed().as_secs_f64()
            );
            return sagas;
        }
        for s in &pending {
            let kind: String = s.last_error.chars().take(40).collect();
            *seen_errors.entry(kind).or_default() += 1;
        }
        if tokio::time::Instant::now() >= deadline {
            suite.fail(format!(
                "{} sagas started before {what} still PENDING {RECOVERY_BOUND:?} later:{}",
                pending.len(),
                describe(&pending)
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn created_ms(s: &pb::Saga) -> i64 {
    s.receipt
        .as_ref()
        .and_then(|r| r.create_time.as_ref())
        .map_or(0, |t| t.seconds * 1_000 + i64::from(t.nanos) / 1_000_000)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Gifts at a steady rate until stopped, each SendGift its own task (an answer takes up to
/// gifting's send wait while a dependency is away), round robin over the viewers and
/// creators; mostly roses, every fifth a finger heart.
struct PacedLoad {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicUsize>,
    task: JoinHandle<Vec<Sent>>,
}

impl PacedLoad {
    fn start(suite: &Suite) -> PacedLoad {
        let viewers: Vec<&'static str> = RICH.iter().copied().chain([POOR]).collect();
        let clients: BTreeMap<&str, GiftingClient> =
            viewers.iter().map(|v| (*v, suite.gifting_as(v))).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicUsize::new(0));
        let (stopped, phase_now) = (stop.clone(), phase.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1_000 / GIFTS_PER_SECOND));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut sends = tokio::task::JoinSet::new();
            let mut i = 0usize;
            while !stopped.load(Ordering::SeqCst) {
                tick.tick().await;
                let viewer = viewers[i % viewers.len()];
                let plan = GiftPlan {
                    key: format!("outage-{i}"),
                    sender: viewer.to_owned(),
                    creator: CREATORS[(i / viewers.len()) % CREATORS.len()].to_owned(),
                    gift: if i % 5 == 4 { "finger_heart" } else { "rose" }.to_owned(),
                    quantity: 1,
                    replicas: vec![0],
                };
                let client = clients[viewer].clone();
                let phase = phase_now.load(Ordering::SeqCst);
                sends.spawn(send(client, plan, phase));
                i += 1;
            }
            let mut sent = Vec::new();
            while let Some(done) = sends.join_next().await {
                sent.push(done.expect("a send task panicked"));
            }
            sent
        });
        PacedLoad { stop, phase, task }
    }

    fn set_phase(&self, phase: usize) {
        self.phase.store(phase, Ordering::SeqCst);
    }

    /// Stops sending and waits for every answer; every gift must have got a receipt.
    async fn finish(self, suite: &Suite) -> Vec<Sent> {
        self.stop.store(true, Ordering::SeqCst);
        let sent = match tokio::time::timeout(Duration::from_secs(30), self.task).await {
            Ok(Ok(sent)) => sent,
            Ok(Err(e)) => suite.fail(format!("the load task failed: {e}")),
            Err(_) => suite.fail("the load's last answers did not come within 30 s"),
        };
        let failed: Vec<String> = sent
            .iter()
            .filter_map(|s| s.failed.as_ref().map(|e| format!("{}: {e}", s.plan.key)))
            .collect();
        if !failed.is_empty() {
            suite.fail(format!(
                "{} of {} gifts got an error instead of a receipt (gifting never went \
                 down), e.g. {:?}",
                failed.len(),
                sent.len(),
                &failed[..failed.len().min(5)]
            ));
        }
        sent
    }
}

/// One SendGift; gifting stays up throughout, so any error is a failure.
async fn send(mut client: GiftingClient, plan: GiftPlan, phase: usize) -> Sent {
    let mut call = tonic::Request::new(plan.request());
    call.set_timeout(Duration::from_secs(10));
    let (receipts, failed) = match client.send_gift(call).await {
        Ok(reply) => match reply.into_inner().receipt {
            Some(receipt) => (vec![receipt], None),
            None => (Vec::new(), Some("no receipt".to_owned())),
        },
        Err(status) => (
            Vec::new(),
            Some(format!("{:?}: {}", status.code(), status.message())),
        ),
    };
    Sent {
        plan,
        receipts,
        retried: Vec::new(),
        failed,
        phase,
    }
}
