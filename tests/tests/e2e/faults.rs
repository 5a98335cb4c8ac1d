//! Fault tests of the gift saga (docs/saga.md, issue 5) with the four services as separate
//! processes on ephemeral ports, on SQLite and (when `OVATION_TEST_POSTGRES_URL` is set)
//! PostgreSQL, each service with its own database:
//!
//! - payout killed with SIGKILL during a load of concurrent SendGifts, restarted on the
//!   same port and database;
//! - gifting killed with SIGKILL during a load and restarted, twice (clients re-send with
//!   the same idempotency keys, as a client must after a broken call);
//! - wallet killed during a load and kept away while more gifts are sent: those stay
//!   PENDING, nothing half done, nothing refused for an unreachable wallet; then it comes
//!   back;
//! - wallet and payout each crashing (a crash point, `OVATION_CRASH_POINT`) right after a
//!   batch of debits or credits committed and before its answer left, under load, and
//!   restarted: every item of the lost answers applied exactly once;
//! - two gifting replicas on one database sharing a load, a third of the gifts sent to both
//!   at once with the same key (the lease keeps them from driving one saga twice).
//!
//! After each: every saga ends terminal (ListSagas polled, bounded), one saga per gift,
//! `ovation audit` (the real binary) exits 0 with no violation, every viewer's coins and
//! creator's diamonds agree with the sagas, and the stream's feed replayed from the start
//! shows each completed gift exactly once and nothing else.
//!
//! The load: 3 viewers × 20 gifts at concurrency 8, a mix of cheap and dear gifts (some
//! refused for lack of coins) and one in ten to a creator payout does not know
//! (compensated), so every saga outcome is exercised under the fault.

use std::collections::BTreeMap;

use ovation_e2e::on_sqlite_and_postgres;
use ovation_e2e::process_suite::*;

const VIEWERS: [&str; 3] = ["vera", "walt", "xena"];
const CREATORS: [&str; 2] = ["cleo", "dax"];
/// Never registered with payout: gifts to it are compensated.
const GHOST: &str = "ghost";
const PER_VIEWER: usize = 20;
const CONCURRENCY: usize = 8;

/// Funds the viewers and registers the creators; returns what each viewer bought.
async fn prepare(suite: &Suite) -> BTreeMap<String, i64> {
    let mut funded = BTreeMap::new();
    for viewer in VIEWERS {
        funded.insert(
            viewer.to_owned(),
            suite.funded_viewer(viewer, "coins_100").await,
        );
    }
    for creator in CREATORS {
        suite.creator(creator).await;
    }
    funded
}

fn plan(tag: &str) -> Vec<GiftPlan> {
    mixed_plan(tag, &VIEWERS, &CREATORS, GHOST, PER_VIEWER)
}

fn all_creators() -> Vec<&'static str> {
    let mut all = CREATORS.to_vec();
    all.push(GHOST);
    all
}

/// Every saga terminal, one per gift, the audit clean, the balances right.
async fn assert_recovered(
    suite: &Suite,
    sent: &[Sent],
    funded: &BTreeMap<String, i64>,
    test: &str,
) {
    let sagas = suite.settle(0, Some(sent.len()), SETTLE_BOUND).await;
    assert_one_saga_per_gift(suite, sent, &sagas, 0);
    suite.assert_audit_clean().await;
    suite.assert_balances(&sagas, funded, &all_creators()).await;
    suite.assert_feed_matches(&sagas, LOAD_STREAM).await;
    let retried: usize = sent.iter().map(|s| s.retried.len()).sum();
    let pending_answers = sent
        .iter()
        .flat_map(|s| &s.receipts)
        .filter(|r| r.status == PENDING)
        .count();
    eprintln!(
        "[{}] {test}: {} gifts, outcomes {:?}, {pending_answers} answered PENDING, {retried} calls re-sent",
        suite.backend,
        sent.len(),
        tally(&sagas)
    );
}

/// No gift may have needed a re-send: only a gifting outage breaks calls.
fn assert_no_broken_calls(suite: &Suite, sent: &[Sent]) {
    let broken: Vec<&String> = sent.iter().flat_map(|s| &s.retried).collect();
    if !broken.is_empty() {
        suite.fail(format!(
            "gifting stayed up, yet {} SendGift calls failed, e.g. {:?}",
            broken.len(),
            &broken[..broken.len().min(5)]
        ));
    }
}

// ---------------------------------------------------------------------------------------
// Payout killed during a load

async fn payout_killed_during_a_load(backend: Backend) {
    let Some(mut suite) = Suite::start(backend, SuiteOptions::default()).await else {
        return;
    };
    let funded = prepare(&suite).await;
    let plan = plan("payout-kill");
    let total = plan.len();
    let mut load = Load::start(&suite, plan, CONCURRENCY);
    load.wait_answered(&suite, total / 4).await;
    suite.payout.kill_hard().await;
    load.set_phase(1);
    // Payout stays dead while a third of the load is sent: those gifts wait at the pivot.
    load.wait_answered(&suite, total / 4 + total / 3).await;
    suite.payout.start().await;
    load.set_phase(2);
    let sent = load.finish(&suite).await;
    assert_no_broken_calls(&suite, &sent);
    // The outage was felt: gifts sent while payout was dead could not finish in time.
    if !sent
        .iter()
        .filter(|s| s.phase == 1)
        .any(|s| s.receipts.iter().any(|r| r.status == PENDING))
    {
        suite.fail(
            "no gift sent while payout was dead was answered PENDING: the fault missed the load",
        );
    }
    assert_recovered(&suite, &sent, &funded, "payout SIGKILL").await;
    suite.stop().await;
}

on_sqlite_and_postgres!(
    payout_killed_during_a_load,
    payout_killed_during_a_load_every_saga_ends_and_the_audit_is_clean_sqlite,
    payout_killed_during_a_load_every_saga_ends_and_the_audit_is_clean_postgres
);

// ---------------------------------------------------------------------------------------
// Wallet and payout crash between a batch's commit and its answer

/// Which batch commit each service crashes after: early enough to hit the load, late
/// enough that earlier batches' gifts are in the ledgers.
const WALLET_CRASH_AT: &str = "batch_committed:3";
const PAYOUT_CRASH_AT: &str = "batch_committed:3";

async fn a_crash_between_a_batch_commit_and_its_answer(backend: Backend) {
    let Some(mut suite) = Suite::start(backend, SuiteOptions::default()).await else {
        return;
    };
    let funded = prepare(&suite).await;
    for (node, at) in [
        (&mut suite.wallet, WALLET_CRASH_AT),
        (&mut suite.payout, PAYOUT_CRASH_AT),
    ] {
        node.stop().await;
        node.set_env("OVATION_CRASH_POINT", Some(at));
        node.start().await;
    }
    let plan = plan("batch-crash");
    let load = Load::start(&suite, plan, CONCURRENCY);
    // Each aborts by itself right after its armed commit: the gifts of that batch are in
    // its ledger, and gifting never heard so. Brought back without the crash point.
    let mut missed = Vec::new();
    for node in [&mut suite.wallet, &mut suite.payout] {
        let stderr = node.wait_crashed(SETTLE_BOUND).await;
        if !stderr.contains("aborting at batch_committed") {
            missed.push(format!(
                "{} ended without reaching its crash point:\n{stderr}",
                node.name
            ));
        }
        node.set_env("OVATION_CRASH_POINT", None);
        node.start().await;
    }
    if !missed.is_empty() {
        suite.fail(missed.join("\n"));
    }
    let sent = load.finish(&suite).await;
    assert_no_broken_calls(&suite, &sent);
    // Exactly once: one debit and at most one credit per saga (the audit, I3–I5), and each
    // balance what the sagas say.
    assert_recovered(&suite, &sent, &funded, "crash after a batch commit").await;
    suite.stop().await;
}

on_sqlite_and_postgres!(
    a_crash_between_a_batch_commit_and_its_answer,
    wallet_and_payout_crashing_between_a_batch_commit_and_its_answer_apply_each_gift_once_sqlite,
    wallet_and_payout_crashing_between_a_batch_commit_and_its_answer_apply_each_gift_once_postgres
);

// ---------------------------------------------------------------------------------------
// Gifting killed during a load

async fn gifting_killed_during_a_load(backend: Backend) {
    let Some(mut suite) = Suite::start(backend, SuiteOptions::default()).await else {
        return;
    };
    let funded = prepare(&suite).await;
    let plan = plan("gifting-kill");
    let total = plan.len();
    let mut load = Load::start(&suite, plan, CONCURRENCY);
    // Twice: calls in flight break; sagas in flight stop wherever they are, leased to a
    // dead process (the second time, some of them are the first crash's, being resumed).
    // The load keeps re-sending with the same keys while gifting is down.
    for (cycle, answered) in [total / 4, total / 2].into_iter().enumerate() {
        load.wait_answered(&suite, answered).await;
        suite.gifting[0].kill_hard().await;
        load.set_phase(2 * cycle + 1);
        suite.gifting[0].start().await;
        load.set_phase(2 * cycle + 2);
    }
    let sent = load.finish(&suite).await;
    let broken: usize = sent.iter().map(|s| s.retried.len()).sum();
    if broken == 0 {
        suite.fail("no SendGift call broke while gifting was dead: the fault missed the load");
    }
    assert_recovered(&suite, &sent, &funded, "gifting SIGKILL").await;
    suite.stop().await;
}

on_sqlite_and_postgres!(
    gifting_killed_during_a_load,
    gifting_killed_during_a_load_every_saga_ends_and_the_audit_is_clean_sqlite,
    gifting_killed_during_a_load_every_saga_ends_and_the_audit_is_clean_postgres
);

// ---------------------------------------------------------------------------------------
// Wallet unreachable for a while

async fn wallet_unreachable_for_a_while(backend: Backend) {
    let Some(mut suite) = Suite::start(backend, SuiteOptions::default()).await else {
        return;
    };
    let funded = prepare(&suite).await;
    let plan = plan("wallet-outage");
    let total = plan.len();
    let mut load = Load::start(&suite, plan, CONCURRENCY);
    load.wait_answered(&suite, total / 4).await;
    // Killed, not drained: a debit may be committed whose answer never left.
    suite.wallet.kill_hard().await;
    load.set_phase(1);
    // The rest of the load is sent with the wallet away.
    let sent = load.finish(&suite).await;
    assert_no_broken_calls(&suite, &sent);

    // While the wallet is away: an unreachable wallet is never a refusal, so every gift
    // sent meanwhile is PENDING (not REJECTED, not COMPENSATED) ...
    let during: Vec<&Sent> = sent.iter().filter(|s| s.phase == 1).collect();
    if during.is_empty() {
        suite.fail("no gift was sent while the wallet was away");
    }
    for s in &during {
        for r in &s.receipts {
            if r.status != PENDING {
                suite.fail(format!(
                    "gift {} was sent while the wallet was unreachable and answered {:?}, \
                     not PENDING: {r:?}",
                    s.plan.key,
                    pb_status(r.status)
                ));
            }
        }
    }
    // ... and nothing is half done: no saga handed to an operator, no diamonds credited
    // for a saga that has not got its coins, none for a refused or compensated one.
    let sagas = suite
        .sagas(0)
        .await
        .unwrap_or_else(|e| suite.fail(format!("ListSagas with the wallet away: {e}")));
    let ids: Vec<String> = sagas
        .iter()
        .filter_map(|s| s.receipt.as_ref().map(|r| r.saga_id.clone()))
        .collect();
    let credited: std::collections::BTreeSet<String> = suite
        .credits_of(&ids)
        .await
        .into_iter()
        .map(|c| c.operation_id)
        .collect();
    let mut waiting_for_coins = 0;
    for s in &sagas {
        let r = s.receipt.as_ref().expect("a saga has a receipt");
        let has_credit = credited.contains(&r.saga_id);
        let before_pivot = s.step == ovation_proto::gifting::SagaStep::ResolveGift as i32
            || s.step == ovation_proto::gifting::SagaStep::DebitCoins as i32;
        if r.status == PENDING && before_pivot {
            waiting_for_coins += 1;
        }
        let wrong = match r.status {
            NEEDS_OPERATOR => Some("handed to an operator"),
            PENDING if before_pivot && has_credit => Some("credited before its coins were debited"),
            COMPLETED if !has_credit => Some("COMPLETED without a credit"),
            REJECTED | COMPENSATED if has_credit => Some("not completed but credited"),
            _ => None,
        };
        if let Some(wrong) = wrong {
            suite.fail(format!(
                "with the wallet away, saga {} is {wrong}:{}",
                r.saga_id,
                describe(&[s])
            ));
        }
    }
    if waiting_for_coins == 0 {
        suite.fail("no saga waits for the wallet: the outage missed the load");
    }

    // The wallet comes back on the same port and database: everything finishes.
    suite.wallet.start().await;
    assert_recovered(&suite, &sent, &funded, "wallet outage").await;
    suite.stop().await;
}

fn pb_status(code: i32) -> ovation_proto::gifting::SagaStatus {
    ovation_proto::gifting::SagaStatus::try_from(code).unwrap_or_default()
}

on_sqlite_and_postgres!(
    wallet_unreachable_for_a_while,
    wallet_unreachable_for_a_while_leaves_no_gift_half_done_sqlite,
    wallet_unreachable_for_a_while_leaves_no_gift_half_done_postgres
);

// ---------------------------------------------------------------------------------------
// Two gifting replicas on one database

async fn two_gifting_replicas_share_a_load(backend: Backend) {
    let options = SuiteOptions {
        gifting_replicas: 2,
        ..SuiteOptions::default()
    };
    let Some(suite) = Suite::start(backend, options).await else {
        return;
    };
    let funded = prepare(&suite).await;
    let mut plan = plan("two-replicas");
    for (i, gift) in plan.iter_mut().enumerate() {
        // A third to each replica, a third to both at once with the same key.
        gift.replicas = match i % 3 {
            0 => vec![0],
            1 => vec![1],
            _ => vec![0, 1],
        };
    }
    let load = Load::start(&suite, plan, CONCURRENCY);
    let sent = load.finish(&suite).await;
    assert_no_broken_calls(&suite, &sent);
    assert_recovered(&suite, &sent, &funded, "two gifting replicas").await;
    // Both replicas read the same sagas.
    let from_0 = suite.settle(0, Some(sent.len()), SETTLE_BOUND).await;
    let from_1 = suite.settle(1, Some(sent.len()), SETTLE_BOUND).await;
    let summary = |sagas: &[ovation_proto::gifting::Saga]| -> Vec<(String, i32)> {
        let mut v: Vec<(String, i32)> = sagas
            .iter()
            .filter_map(|s| s.receipt.as_ref().map(|r| (r.saga_id.clone(), r.status)))
            .collect();
        v.sort();
        v
    };
    if summary(&from_0) != summary(&from_1) {
        suite.fail("the two replicas list different sagas");
    }
    suite.stop().await;
}

on_sqlite_and_postgres!(
    two_gifting_replicas_share_a_load,
    two_gifting_replicas_on_one_database_drive_every_saga_once_sqlite,
    two_gifting_replicas_on_one_database_drive_every_saga_once_postgres
);

// ---------------------------------------------------------------------------------------
// Two gifting replicas started together on a fresh database

/// Replicas of a deployment start at the same moment; on a fresh database each runs the
/// migrations. Both must come up (one applies them, the other finds them applied).
async fn two_gifting_replicas_start_together(backend: Backend) {
    let options = SuiteOptions {
        gifting_replicas: 2,
        gifting_start_together: true,
        ..SuiteOptions::default()
    };
    let Some(suite) = Suite::start(backend, options).await else {
        return;
    };
    suite.stop().await;
}

on_sqlite_and_postgres!(
    two_gifting_replicas_start_together,
    two_gifting_replicas_started_together_on_a_fresh_database_both_serve_sqlite,
    two_gifting_replicas_started_together_on_a_fresh_database_both_serve_postgres
);
