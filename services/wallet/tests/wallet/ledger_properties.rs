//! Property test: random sequences of purchases, debits, refunds, holds and reversals,
//! applied through the wallet's own ledger operations on a real SQLite database, never
//! break I1 (every entry balanced, the ledger sums to zero) or I2 (no negative balance).

use ovation_store::Db;
use ovation_testkit::TestDatabase;
use ovation_types::{Coins, CurrencyCode, IdempotencyKey, ResourceId, Text, UnixMillis};
use ovation_wallet::domain::{AgeRule, AgeStatus, PurchaseState};
use ovation_wallet::ledger::{self, CaptureCmd, DebitCmd, RefundCmd, ReserveCmd, ReverseCmd};
use ovation_wallet::store::{self, PurchaseRow};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Buy {
        user: usize,
        coins: i64,
        bonus: i64,
    },
    Debit {
        user: usize,
        coins: i64,
    },
    /// One transaction of several debits: (user, coins) per item.
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
    },
    Capture {
        hold: usize,
        coins: Option<i64>,
    },
    Release {
        hold: usize,
    },
}

const USERS: usize = 3;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..USERS, 1i64..500, 0i64..100).prop_map(|(user, coins, bonus)| Op::Buy {
            user,
            coins,
            bonus
        }),
        (0..USERS, 1i64..400).prop_map(|(user, coins)| Op::Debit { user, coins }),
        proptest::collection::vec((0..USERS, 1i64..200), 1..6)
            .prop_map(|items| Op::DebitBatch { items }),
        (0usize..20, proptest::option::of(1i64..400))
            .prop_map(|(debit, coins)| Op::Refund { debit, coins }),
        (0usize..10).prop_map(|purchase| Op::Reverse { purchase }),
        (0..USERS, 1i64..300).prop_map(|(user, coins)| Op::Reserve { user, coins }),
        (0usize..10, proptest::option::of(1i64..300))
            .prop_map(|(hold, coins)| Op::Capture { hold, coins }),
        (0usize..10).prop_map(|hold| Op::Release { hold }),
    ]
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let test_db = TestDatabase::sqlite();
    let db = Db::connect(test_db.url(), &Default::default())
        .await
        .unwrap();
    db.migrate(&ovation_wallet_migrations()).await.unwrap();
    let now = UnixMillis::now();
    {
        let mut tx = db.begin_write().await.unwrap();
        for u in 0..USERS {
            store::create_account(&mut tx, &format!("u{u}"), AgeStatus::default(), now)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    let (mut purchases, mut debits, mut holds) = (Vec::new(), Vec::new(), Vec::new());
    for (i, op) in ops.into_iter().enumerate() {
        let mut tx = db.begin_write().await.unwrap();
        // Refusals roll back: either the operation happened whole or not at all.
        let applied = match op {
            Op::Buy { user, coins, bonus } => {
                let row = purchase_row(i, user, coins, bonus, now);
                store::insert_purchase(&mut tx, &row).await.unwrap();
                let done = ledger::complete_purchase(&mut tx, &row, "ref", now)
                    .await
                    .is_ok();
                if done {
                    purchases.push(row.purchase_id.clone());
                }
                done
            }
            Op::Debit { user, coins } => {
                let cmd = DebitCmd {
                    operation_id: id(format!("d{i}")),
                    user_id: id(format!("u{user}")),
                    coins: Coins::parse(coins).unwrap(),
                    saga_id: None,
                    note: Text::default(),
                    actor: "prop".into(),
                };
                let done = ledger::debit(&mut tx, &cmd, AgeRule::default(), now)
                    .await
                    .is_ok();
                if done {
                    debits.push(cmd.operation_id);
                }
                done
            }
            Op::DebitBatch { items } => {
                let cmds: Vec<DebitCmd> = items
                    .iter()
                    .enumerate()
                    .map(|(j, &(user, coins))| DebitCmd {
                        operation_id: id(format!("b{i}-{j}")),
                        user_id: id(format!("u{user}")),
                        coins: Coins::parse(coins).unwrap(),
                        saga_id: None,
                        note: Text::default(),
                        actor: "prop".into(),
                    })
                    .collect();
                match ledger::debit_batch(&mut tx, &cmds, AgeRule::default(), now).await {
                    Ok(answers) => {
                        for (cmd, answer) in cmds.iter().zip(&answers) {
                            if answer.is_ok() {
                                debits.push(cmd.operation_id.clone());
                            }
                        }
                        true
                    }
                    Err(_) => false,
                }
            }
            Op::Refund { debit, coins } => match debits.get(debit) {
                Some(d) => {
                    let cmd = RefundCmd {
                        operation_id: id(format!("r{i}")),
                        debit_operation_id: d.clone(),
                        coins: coins.map(|c| Coins::parse(c).unwrap()),
                        note: Text::default(),
                        actor: "prop".into(),
                    };
                    ledger::refund(&mut tx, &cmd, now).await.is_ok()
                }
                None => false,
            },
            Op::Reverse { purchase } => match purchases.get(purchase) {
                Some(p) => {
                    let cmd = ReverseCmd {
                        purchase_id: p.clone(),
                        actor: "ops".into(),
                        reason: Text::parse("prop").unwrap(),
                    };
                    ledger::reverse_purchase(&mut tx, &cmd, now).await.is_ok()
                }
                None => false,
            },
            Op::Reserve { user, coins } => {
                let cmd = ReserveCmd {
                    operation_id: id(format!("h{i}")),
                    user_id: id(format!("u{user}")),
                    coins: Coins::parse(coins).unwrap(),
                    ttl_ms: 60_000,
                    saga_id: None,
                    note: Text::default(),
                };
                let done = ledger::reserve(&mut tx, &cmd, AgeRule::default(), now)
                    .await
                    .is_ok();
                if done {
                    holds.push(cmd.operation_id);
                }
                done
            }
            Op::Capture { hold, coins } => match holds.get(hold) {
                Some(h) => {
                    let cmd = CaptureCmd {
                        operation_id: h.clone(),
                        coins: coins.map(|c| Coins::parse(c).unwrap()),
                        actor: "prop".into(),
                    };
                    ledger::capture(&mut tx, &cmd, now).await.is_ok()
                }
                None => false,
            },
            Op::Release { hold } => match holds.get(hold) {
                Some(h) => ledger::release(&mut tx, h, now).await.is_ok(),
                None => false,
            },
        };
        if applied {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
        }
        let mut conn = db.pool().acquire().await.unwrap();
        let summary = store::ledger_summary(&mut conn).await.unwrap();
        prop_assert_eq!(
            summary.total,
            0,
            "I1: the ledger sums to zero after op {}",
            i
        );
        prop_assert_eq!(
            summary.unbalanced_entries,
            0,
            "I1: every entry balanced after op {}",
            i
        );
        prop_assert_eq!(
            summary.balance_mismatches,
            0,
            "balances match their postings after op {}",
            i
        );
        prop_assert_eq!(
            summary.negative_balances,
            0,
            "I2: no negative balance after op {}",
            i
        );
    }
    db.close().await;
    Ok(())
}

fn purchase_row(i: usize, user: usize, coins: i64, bonus: i64, now: UnixMillis) -> PurchaseRow {
    PurchaseRow {
        purchase_id: id(format!("p{i}")),
        idempotency_key: IdempotencyKey::parse(&format!("k{i}")).unwrap(),
        fingerprint: String::new(),
        user_id: id(format!("u{user}")),
        package_id: id("pkg".into()),
        package_version: 1,
        currency_code: CurrencyCode::parse("USD").unwrap(),
        amount_minor: 100,
        package_coins: Coins::parse(coins).unwrap(),
        bonus_coins: bonus,
        promotion_id: String::new(),
        promotion_version: 0,
        payment_token: String::new(),
        state: PurchaseState::Pending,
        decline_reason: String::new(),
        provider_reference: String::new(),
        charge_attempts: 0,
        next_attempt_at: now,
        reversal_actor: String::new(),
        reversal_reason: String::new(),
        reversal_clawed_back: 0,
        reversal_debt: 0,
        reversed_at: None,
        created_at: now,
        updated_at: now,
        credited_seq: None,
        attribution: Default::default(),
        payment_provider: ovation_wallet::domain::PaymentProviderKind::Sandbox,
        next_action: Default::default(),
    }
}

fn id(raw: String) -> ResourceId {
    ResourceId::parse(&raw).unwrap()
}

fn ovation_wallet_migrations() -> sqlx::migrate::Migrator {
    ovation_wallet::migrations()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_ledger_operations_keep_i1_and_i2(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops))?;
    }
}
