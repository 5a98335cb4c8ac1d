//! Random concurrent mixes of the wallet's writes — purchases, debits (single and
//! batched), refunds, reversals,
//! holds (reserve, capture, release) and the expiry worker — over real gRPC, on SQLite and
//! (when `OVATION_TEST_POSTGRES_URL` is set) PostgreSQL, where READ COMMITTED lets these
//! operations really interleave. Each round fires a batch at once, often on the same
//! purchase, debit or hold; after each round the ledger is checked:
//!
//! - I1: the ledger sums to zero, every entry is balanced, every user's materialized
//!   balance equals the sum of their postings (GetLedgerSummary);
//! - I2: no negative balance, held ≤ posted; held coins are exactly the user's active holds;
//! - a purchase is reversed at most once (one clawback entry at most, clawed back + debt =
//!   credited) and every user's debt is the reversals' debt less what purchases settled.
//!
//! Seeded: `OVATION_TEST_SEED=<u64>` replays a failing run (the seed is in every message).

use std::collections::HashMap;

use ovation_proto::wallet as pb;
use ovation_store::Db;
use ovation_testkit::{WalletClient, databases, reason};
use ovation_types::UnixMillis;
use ovation_wallet::payment::TOKEN_OK;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Code;

use crate::suite::*;

const USERS: usize = 3;
const ROUNDS: usize = 12;
const OPS_PER_ROUND: usize = 16;
const DEFAULT_SEED: u64 = 20_261_101;

#[derive(Clone, Debug)]
enum Op {
    Buy {
        user: usize,
        package: &'static str,
    },
    Debit {
        user: usize,
        coins: i64,
    },
    /// A DebitCoinsBatch: (user, coins) per item.
    DebitBatch {
        items: Vec<(usize, i64)>,
    },
    Refund {
        debit: usize,
        coins: Option<i64>,
    },
    Reverse {
        purchase: usize,
    },
    Reserve {
        user: usize,
        coins: i64,
        ttl_s: i64,
    },
    Capture {
        hold: usize,
        coins: Option<i64>,
    },
    Release {
        hold: usize,
    },
    /// The expiry worker's pass, on a clock `skew_ms` ahead (a replica whose clock is fast).
    Expire {
        skew_ms: i64,
    },
}

/// What the test knows exists (ids in creation order).
#[derive(Default)]
struct Known {
    purchases: Vec<String>,
    debits: Vec<String>,
    /// (user index, operation id)
    holds: Vec<(usize, String)>,
}

fn user(i: usize) -> String {
    format!("mix{i}")
}

/// One random operation; references pick among what exists, so several operations of a
/// round often touch the same purchase, debit or hold.
fn random_op(rng: &mut StdRng, known: &Known) -> Op {
    loop {
        let op = match rng.random_range(0..9) {
            0 => Op::Buy {
                user: rng.random_range(0..USERS),
                package: if rng.random_bool(0.5) {
                    "coins_100"
                } else {
                    "coins_500"
                },
            },
            1 | 2 => Op::Debit {
                user: rng.random_range(0..USERS),
                coins: rng.random_range(1..=300),
            },
            3 if !known.debits.is_empty() => Op::Refund {
                debit: rng.random_range(0..known.debits.len()),
                coins: rng.random_bool(0.3).then(|| rng.random_range(1..=300)),
            },
            4 if !known.purchases.is_empty() => Op::Reverse {
                purchase: rng.random_range(0..known.purchases.len()),
            },
            5 => Op::Reserve {
                user: rng.random_range(0..USERS),
                coins: rng.random_range(1..=200),
                ttl_s: rng.random_range(1..=60),
            },
            6 if !known.holds.is_empty() => {
                let hold = rng.random_range(0..known.holds.len());
                if rng.random_bool(0.5) {
                    Op::Capture {
                        hold,
                        coins: rng.random_bool(0.5).then(|| rng.random_range(1..=200)),
                    }
                } else {
                    Op::Release { hold }
                }
            }
            7 => Op::Expire {
                skew_ms: rng.random_range(0..=90_000),
            },
            8 => Op::DebitBatch {
                items: (0..rng.random_range(2..=6))
                    .map(|_| (rng.random_range(0..USERS), rng.random_range(1..=150)))
                    .collect(),
            },
            _ => continue,
        };
        return op;
    }
}

/// What an operation that succeeded created, for later rounds to refer to.
enum Created {
    Purchase(String),
    Debit(String),
    Debits(Vec<String>),
    Hold(usize, String),
    Nothing,
}

async fn apply(
    suite_clients: Clients,
    worker: Db,
    known_purchases: Vec<String>,
    known_debits: Vec<String>,
    known_holds: Vec<(usize, String)>,
    tag: String,
    op: Op,
) -> Result<Created, tonic::Status> {
    let Clients {
        mut users,
        mut gifting,
        mut admin,
    } = suite_clients;
    match op {
        Op::Buy { user: u, package } => {
            let purchase = users[u]
                .purchase_coins(purchase_request(
                    &user(u),
                    &format!("buy-{tag}"),
                    package,
                    TOKEN_OK,
                ))
                .await?
                .into_inner()
                .purchase
                .expect("a purchase");
            Ok(if purchase.state == pb::PurchaseState::Completed as i32 {
                Created::Purchase(purchase.purchase_id)
            } else {
                Created::Nothing
            })
        }
        Op::Debit { user: u, coins } => {
            let op = format!("debit-{tag}");
            gifting.debit_coins(debit(&op, &user(u), coins)).await?;
            Ok(Created::Debit(op))
        }
        Op::DebitBatch { items } => {
            let items: Vec<_> = items
                .iter()
                .enumerate()
                .map(|(j, &(u, coins))| pb::DebitCoinsItem {
                    operation_id: format!("batch-{tag}-{j}"),
                    user_id: user(u),
                    coins,
                    saga_id: String::new(),
                    note: String::new(),
                })
                .collect();
            let results = gifting
                .debit_coins_batch(pb::DebitCoinsBatchRequest {
                    items: items.clone(),
                })
                .await?
                .into_inner()
                .results;
            let mut applied = Vec::new();
            for (item, result) in items.into_iter().zip(results) {
                match result.outcome {
                    Some(pb::debit_coins_result::Outcome::Debit(_)) => {
                        applied.push(item.operation_id)
                    }
                    // The same business refusals as a single debit, per item.
                    Some(pb::debit_coins_result::Outcome::Error(e)) => assert_eq!(
                        Code::from(e.code),
                        Code::FailedPrecondition,
                        "batch {tag}: {e:?}"
                    ),
                    None => panic!("batch {tag}: an item without an outcome"),
                }
            }
            Ok(Created::Debits(applied))
        }
        Op::Refund { debit, coins } => {
            gifting
                .refund_coins(pb::RefundCoinsRequest {
                    idempotency_key: format!("key-refund-{tag}"),
                    operation_id: format!("refund-{tag}"),
                    debit_operation_id: known_debits[debit].clone(),
                    coins,
                    note: String::new(),
                })
                .await?;
            Ok(Created::Nothing)
        }
        Op::Reverse { purchase } => {
            admin
                .reverse_purchase(pb::ReversePurchaseRequest {
                    idempotency_key: format!("reverse-{tag}"),
                    purchase_id: known_purchases[purchase].clone(),
                    actor: "ops".into(),
                    reason: "chargeback".into(),
                })
                .await?;
            Ok(Created::Nothing)
        }
        Op::Reserve {
            user: u,
            coins,
            ttl_s,
        } => {
            let op = format!("hold-{tag}");
            gifting
                .reserve_coins(reserve(&op, &user(u), coins, ttl_s))
                .await?;
            Ok(Created::Hold(u, op))
        }
        Op::Capture { hold, coins } => {
            gifting
                .capture_hold(pb::CaptureHoldRequest {
                    idempotency_key: format!("capture-{tag}"),
                    operation_id: known_holds[hold].1.clone(),
                    coins,
                })
                .await?;
            Ok(Created::Nothing)
        }
        Op::Release { hold } => {
            gifting
                .release_hold(pb::ReleaseHoldRequest {
                    idempotency_key: format!("release-{tag}"),
                    operation_id: known_holds[hold].1.clone(),
                })
                .await?;
            Ok(Created::Nothing)
        }
        Op::Expire { skew_ms } => {
            let now = UnixMillis(UnixMillis::now().0 + skew_ms);
            let mut tx = worker.begin_write().await.expect("a write transaction");
            ovation_wallet::ledger::expire_holds(&mut tx, now, 64)
                .await
                .map_err(|e| tonic::Status::internal(format!("expiry pass: {e}")))?;
            tx.commit().await.expect("the expiry pass commits");
            Ok(Created::Nothing)
        }
    }
}

#[derive(Clone)]
struct Clients {
    users: Vec<WalletClient>,
    gifting: WalletClient,
    admin: WalletClient,
}

fn seed() -> u64 {
    std::env::var("OVATION_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

#[tokio::test]
async fn random_concurrent_operations_keep_the_ledger_sound() {
    let seed = seed();
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let backend = suite.backend;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut users = Vec::new();
        for u in 0..USERS {
            let mut client = suite.user(&user(u)).await;
            open_account(&mut client, &user(u)).await;
            buy(
                &mut client,
                &user(u),
                &format!("start-{u}"),
                "coins_1000",
                TOKEN_OK,
            )
            .await;
            users.push(client);
        }
        let clients = Clients {
            users,
            gifting: suite.gifting().await,
            admin: suite.admin().await,
        };
        let worker = Db::connect(&suite.wallet_db_url, &Default::default())
            .await
            .unwrap();
        let mut known = Known::default();
        let mut refused: HashMap<String, usize> = HashMap::new();
        let mut applied = 0usize;
        for round in 0..ROUNDS {
            let ops: Vec<Op> = (0..OPS_PER_ROUND)
                .map(|_| random_op(&mut rng, &known))
                .collect();
            let at = format!("[{backend}] seed {seed} round {round}");
            let calls: Vec<_> = ops
                .iter()
                .enumerate()
                .map(|(i, op)| {
                    tokio::spawn(apply(
                        clients.clone(),
                        worker.clone(),
                        known.purchases.clone(),
                        known.debits.clone(),
                        known.holds.clone(),
                        format!("{round}-{i}"),
                        op.clone(),
                    ))
                })
                .collect();
            for (op, call) in ops.iter().zip(calls) {
                match call.await.unwrap() {
                    Ok(created) => {
                        applied += 1;
                        match created {
                            Created::Purchase(id) => known.purchases.push(id),
                            Created::Debit(id) => known.debits.push(id),
                            Created::Debits(ids) => known.debits.extend(ids),
                            Created::Hold(u, id) => known.holds.push((u, id)),
                            Created::Nothing => {}
                        }
                    }
                    // Business refusals are expected (not enough coins, in debt, already
                    // reversed, hold no longer active, ...); nothing else is.
                    Err(status) => {
                        assert_eq!(
                            status.code(),
                            Code::FailedPrecondition,
                            "{at}: {op:?} failed: {status:?}"
                        );
                        *refused.entry(reason(&status)).or_default() += 1;
                    }
                }
            }
            check(&clients, &known, &at).await;
        }
        eprintln!(
            "[{backend}] seed {seed}: {applied} operations applied, refusals: {refused:?}, \
             {} purchases, {} debits, {} holds",
            known.purchases.len(),
            known.debits.len(),
            known.holds.len()
        );
        worker.close().await;
        suite.stop().await;
    }
}

/// The checks of the module docs, on a quiet wallet.
async fn check(clients: &Clients, known: &Known, at: &str) {
    let mut admin = clients.admin.clone();
    assert_ledger_sound(&mut admin, at).await;
    let mut gifting = clients.gifting.clone();
    for u in 0..USERS {
        let user_id = user(u);
        let b = balance(&mut admin, &user_id).await;
        assert!(
            b.held_coins <= b.posted_coins && b.available_coins >= 0,
            "{at}: {b:?}"
        );
        let mut active = 0;
        for (_, op) in known.holds.iter().filter(|(owner, _)| *owner == u) {
            let hold = hold(&mut gifting, op).await;
            if hold.state == pb::HoldState::Active as i32 {
                active += hold.coins;
            }
        }
        assert_eq!(
            b.held_coins, active,
            "{at}: {user_id}'s held coins are exactly their active holds"
        );

        let entries = all_transactions(&mut admin, &user_id).await;
        let purchases = all_purchases(&mut admin, &user_id).await;
        let mut reversal_debt = 0;
        for p in &purchases {
            let clawbacks: Vec<&pb::Transaction> = entries
                .iter()
                .filter(|t| {
                    t.purchase_id == p.purchase_id
                        && t.reason == pb::TransactionReason::PurchaseReversal as i32
                })
                .collect();
            match &p.reversal {
                Some(r) => {
                    assert_eq!(p.state, pb::PurchaseState::Reversed as i32, "{at}");
                    assert_eq!(
                        r.clawed_back_coins + r.debt_coins,
                        p.coins_credited,
                        "{at}: {p:?}"
                    );
                    let clawed: i64 = clawbacks.iter().map(|t| -t.coins).sum();
                    assert!(
                        clawbacks.len() <= 1 && clawed == r.clawed_back_coins,
                        "{at}: purchase {} reversed more than once: {clawbacks:?}",
                        p.purchase_id
                    );
                    reversal_debt += r.debt_coins;
                }
                None => assert!(clawbacks.is_empty(), "{at}: {clawbacks:?}"),
            }
        }
        let settled: i64 = entries
            .iter()
            .filter(|t| t.reason == pb::TransactionReason::DebtSettlement as i32)
            .map(|t| -t.coins)
            .sum();
        assert_eq!(
            b.debt_coins,
            reversal_debt - settled,
            "{at}: {user_id}'s debt is what reversals left less what purchases settled"
        );
    }
}

async fn all_purchases(client: &mut WalletClient, user: &str) -> Vec<pb::Purchase> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_purchases(pb::ListPurchasesRequest {
                user_id: user.into(),
                page_size: 500,
                page_token,
                ..Default::default()
            })
            .await
            .expect("purchases")
            .into_inner();
        all.extend(page.purchases);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}
