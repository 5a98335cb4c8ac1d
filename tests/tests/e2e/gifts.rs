//! The gift saga's outcomes (docs/saga.md, issue 5) with the four services as separate processes
//! on ephemeral ports, on SQLite and (when `OVATION_TEST_POSTGRES_URL` is set) PostgreSQL,
//! each service with its own database — the scenarios of `services/gifting/tests/gifting.rs`
//! run against the real binaries:
//!
//! - happy path: COMPLETED, the viewer's coins down by the price, the creator's diamonds
//!   `floor(coins × share)` (the demo share is 50 %);
//! - insufficient coins: REJECTED (INSUFFICIENT_COINS), nothing moved;
//! - the same key twice: one gift; the same key with other parameters: ALREADY_EXISTS;
//! - an unknown or a suspended creator: COMPENSATED, the coins refunded;
//! - 200 concurrent sends from a viewer funded for exactly 50: exactly 50 complete, balance 0.
//!
//! After each, `ovation audit` (the real binary) must report no violation.

use std::collections::BTreeMap;

use ovation_e2e::on_sqlite_and_postgres;
use ovation_e2e::process_suite::*;
use ovation_proto::gifting as pb;
use ovation_proto::payout as payout_pb;
use ovation_testkit::gift_request;
use tonic::Code;

/// The demo catalog's creator share, in basis points.
const SHARE_BPS: i64 = 5_000;

/// Sends one gift as `sender` on the load's stream and returns its receipt; any error fails
/// the test.
async fn send(
    suite: &Suite,
    key: &str,
    sender: &str,
    creator: &str,
    gift: &str,
    quantity: i32,
) -> pb::GiftReceipt {
    let request = gift_request(LOAD_STREAM, key, sender, creator, gift, quantity);
    suite.receipt_of(request).await
}

/// Every saga ended (ListSagas polled, bounded), there are `expected` of them, and the audit
/// is clean.
async fn settle_and_audit(suite: &Suite, expected: usize) -> Vec<pb::Saga> {
    let sagas = suite.settle(0, Some(expected), SETTLE_BOUND).await;
    suite.assert_audit_clean().await;
    sagas
}

// ---------------------------------------------------------------------------------------
// Happy path

async fn a_gift_moves_coins_and_diamonds_by_the_share(backend: Backend) {
    let Some(suite) = Suite::start(backend, SuiteOptions::default()).await else {
        return;
    };
    let funded = suite.funded_viewer("alice", "coins_1000").await;
    assert_eq!(funded, 1_100, "[{}] coins_1000 credits 1100", suite.backend);
    suite.creator("bob").await;

    let receipt = send(&suite, "g1", "alice", "bob", "doughnut", 3).await;
    if receipt.status != COMPLETED {
        suite.fail(format!("the gift did not complete: {receipt:?}"));
    }
    assert_eq!(
        (
            receipt.total_coins,
            receipt.coins_spent,
            receipt.diamonds_credited
        ),
        (90, 90, 45),
        "[{}] {receipt:?}",
        suite.backend
    );
    assert_eq!(
        (
            receipt.unit_price_coins,
            receipt.creator_share_bps,
            receipt.gift_version
        ),
        (30, 5_000, 1),
        "[{}] {receipt:?}",
        suite.backend
    );
    assert_eq!(
        receipt.diamonds_credited,
        receipt.total_coins * SHARE_BPS / 10_000,
        "[{}] diamonds = floor(coins × share)",
        suite.backend
    );
    assert_eq!(receipt.sender_balance_after_coins, Some(1_010));
    assert_eq!(
        suite.coins("alice").await,
        funded - 90,
        "[{}]",
        suite.backend
    );
    assert_eq!(suite.diamonds("bob").await, 45, "[{}]", suite.backend);

    let sagas = settle_and_audit(&suite, 1).await;
    suite.assert_feed_matches(&sagas, LOAD_STREAM).await;
    suite.stop().await;
}

on_sqlite_and_postgres!(
    a_gift_moves_coins_and_diamonds_by_the_share,
    a_gift_moves_coins_and_diamonds_by_the_share_sqlite,
    a_gift_moves_coins_and_diamonds_by_the_share_postgres
);

// ---------------------------------------------------------------------------------------
// Insufficient coins

async fn insufficient_coins_is_rejected_and_moves_nothing(backend: Backend) {
    let Some(suite) = Suite::start(backend, SuiteOptions::default()).await else {
        return;
    };
    let funded = suite.funded_viewer("carol", "coins_100").await;
    assert_eq!(funded, 110, "[{}] coins_100 credits 110", suite.backend);
    suite.creator("dan").await;

    let poor = send(&suite, "p1", "carol", "dan", "galaxy", 1).await;
    if poor.status != REJECTED {
        suite.fail(format!(
            "a gift beyond the balance was not rejected: {poor:?}"
        ));
    }
    assert_eq!(
        poor.rejection_reason,
        pb::RejectionReason::InsufficientCoins as i32,
        "[{}] {poor:?}",
        suite.backend
    );
    assert_eq!((poor.coins_spent, poor.diamonds_credited), (0, 0));
    assert_eq!(suite.coins("carol").await, 110, "[{}]", suite.backend);
    assert_eq!(suite.diamonds("dan").await, 0, "[{}]", suite.backend);

    settle_and_audit(&suite, 1).await;
    suite.stop().await;
}

on_sqlite_and_postgres!(
    insufficient_coins_is_rejected_and_moves_nothing,
    insufficient_coins_is_rejected_and_moves_nothing_sqlite,
    insufficient_coins_is_rejected_and_moves_nothing_postgres
);

// ---------------------------------------------------------------------------------------
// Idempotency

async fn the_same_key_is_one_gift(backend: Backend) {
    let Some(suite) = Suite::start(backend, SuiteOptions::default()).await else {
        return;
    };
    let funded = suite.funded_viewer("gus", "coins_1000").await;
    suite.creator("ivy").await;

    let first = send(&suite, "k1", "gus", "ivy", "doughnut", 3).await;
    if first.status != COMPLETED {
        suite.fail(format!("the gift did not complete: {first:?}"));
    }
    // The same key again: the same saga, nothing moves twice.
    let again = send(&suite, "k1", "gus", "ivy", "doughnut", 3).await;
    assert_eq!(again.saga_id, first.saga_id, "[{}]", suite.backend);
    assert_eq!(again.status, COMPLETED, "[{}] {again:?}", suite.backend);
    assert_eq!(
        suite.coins("gus").await,
        funded - 90,
        "[{}] debited once",
        suite.backend
    );
    assert_eq!(suite.diamonds("ivy").await, 45, "[{}]", suite.backend);

    // The same key, other parameters: refused.
    let other = suite
        .gifting_as("gus")
        .send_gift(gift_request(LOAD_STREAM, "k1", "gus", "ivy", "doughnut", 4))
        .await
        .err()
        .unwrap_or_else(|| suite.fail("the same key with another quantity was accepted"));
    assert_eq!(
        other.code(),
        Code::AlreadyExists,
        "[{}] {other:?}",
        suite.backend
    );
    assert_eq!(suite.coins("gus").await, funded - 90, "[{}]", suite.backend);
    assert_eq!(suite.diamonds("ivy").await, 45, "[{}]", suite.backend);

    settle_and_audit(&suite, 1).await;
    suite.stop().await;
}

on_sqlite_and_postgres!(
    the_same_key_is_one_gift,
    the_same_key_twice_is_one_gift_and_other_parameters_already_exist_sqlite,
    the_same_key_twice_is_one_gift_and_other_parameters_already_exist_postgres
);

// ---------------------------------------------------------------------------------------
// Unknown or suspended creator

async fn a_refused_credit_is_compensated(backend: Backend) {
    let Some(suite) = Suite::start(backend, SuiteOptions::default()).await else {
        return;
    };
    let funded = suite.funded_viewer("erin", "coins_100").await;
    suite.creator("fay").await;

    let unknown = send(&suite, "u1", "erin", "nobody", "rose", 5).await;
    if unknown.status != COMPENSATED {
        suite.fail(format!(
            "a gift to an unknown creator was not compensated: {unknown:?}"
        ));
    }
    assert_eq!(
        unknown.rejection_reason,
        pb::RejectionReason::CreatorNotFound as i32,
        "[{}] {unknown:?}",
        suite.backend
    );
    assert_eq!(unknown.diamonds_credited, 0, "[{}]", suite.backend);
    assert_eq!(
        suite.coins("erin").await,
        funded,
        "[{}] the coins came back",
        suite.backend
    );

    if let Err(e) = suite
        .payout_admin()
        .await
        .suspend_creator(payout_pb::SuspendCreatorRequest {
            idempotency_key: "susp".into(),
            creator_id: "fay".into(),
            actor: "ops".into(),
            reason: "fraud review".into(),
        })
        .await
    {
        suite.fail(format!("SuspendCreator: {e}"));
    }
    let suspended = send(&suite, "s1", "erin", "fay", "rose", 5).await;
    if suspended.status != COMPENSATED {
        suite.fail(format!(
            "a gift to a suspended creator was not compensated: {suspended:?}"
        ));
    }
    assert_eq!(
        suspended.rejection_reason,
        pb::RejectionReason::CreatorSuspended as i32,
        "[{}] {suspended:?}",
        suite.backend
    );
    assert_eq!(
        suite.coins("erin").await,
        funded,
        "[{}] the coins came back",
        suite.backend
    );
    assert_eq!(suite.diamonds("fay").await, 0, "[{}]", suite.backend);

    settle_and_audit(&suite, 2).await;
    suite.stop().await;
}

on_sqlite_and_postgres!(
    a_refused_credit_is_compensated,
    unknown_or_suspended_creator_is_compensated_and_the_coins_refunded_sqlite,
    unknown_or_suspended_creator_is_compensated_and_the_coins_refunded_postgres
);

// ---------------------------------------------------------------------------------------
// 200 concurrent sends from a viewer funded for 50

async fn two_hundred_concurrent_sends(backend: Backend) {
    let Some(suite) = Suite::start(backend, SuiteOptions::default()).await else {
        return;
    };
    let bought = suite.funded_viewer("hana", "coins_100").await;
    assert_eq!(bought, 110, "[{}] coins_100 credits 110", suite.backend);
    suite.creator("kim").await;
    let warmup = send(&suite, "warmup", "hana", "kim", "doughnut", 2).await;
    if warmup.status != COMPLETED {
        suite.fail(format!("the 60-coin gift did not complete: {warmup:?}"));
    }
    assert_eq!(suite.coins("hana").await, 50, "[{}]", suite.backend);

    let plan: Vec<GiftPlan> = (0..200)
        .map(|i| GiftPlan {
            key: format!("rose-{i}"),
            sender: "hana".into(),
            creator: "kim".into(),
            gift: "rose".into(),
            quantity: 1,
            replicas: vec![0],
        })
        .collect();
    let sent = Load::start(&suite, plan, 200).finish(&suite).await;
    // PENDING answers are polled to their end (bounded) through ListSagas.
    let sagas = suite.settle(0, Some(sent.len() + 1), SETTLE_BOUND).await;
    assert_one_saga_per_gift(&suite, &sent, &sagas, 1);

    let roses: Vec<&pb::GiftReceipt> = sagas
        .iter()
        .filter_map(|s| s.receipt.as_ref())
        .filter(|r| r.saga_id != warmup.saga_id)
        .collect();
    let mut completed = 0;
    for r in &roses {
        match r.status {
            COMPLETED => completed += 1,
            REJECTED if r.rejection_reason == pb::RejectionReason::InsufficientCoins as i32 => {}
            _ => suite.fail(format!("unexpected outcome of a rose: {r:?}")),
        }
    }
    if completed != 50 {
        suite.fail(format!(
            "{completed} of 200 roses completed, exactly 50 fit; outcomes {:?}",
            tally(&sagas)
        ));
    }
    assert_eq!(suite.coins("hana").await, 0, "[{}]", suite.backend);
    // 60 + 50 coins at 50 %: 30 + 50 × floor(1 × 0.5) = 30 diamonds.
    assert_eq!(suite.diamonds("kim").await, 30, "[{}]", suite.backend);
    suite
        .assert_balances(
            &sagas,
            &BTreeMap::from([("hana".to_owned(), bought)]),
            &["kim"],
        )
        .await;
    suite.assert_audit_clean().await;
    let pending_answers = sent
        .iter()
        .flat_map(|s| &s.receipts)
        .filter(|r| r.status == PENDING)
        .count();
    eprintln!(
        "[{}] 200 concurrent roses: outcomes {:?}, {pending_answers} answered PENDING",
        suite.backend,
        tally(&sagas)
    );
    suite.stop().await;
}

on_sqlite_and_postgres!(
    two_hundred_concurrent_sends,
    two_hundred_concurrent_sends_from_a_viewer_funded_for_fifty_complete_exactly_fifty_sqlite,
    two_hundred_concurrent_sends_from_a_viewer_funded_for_fifty_complete_exactly_fifty_postgres
);
