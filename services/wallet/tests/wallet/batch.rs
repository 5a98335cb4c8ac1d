//! DebitCoinsBatch over real gRPC, on SQLite and PostgreSQL: each item applied or refused
//! alone, exactly as DebitCoins would answer it; a retried batch applies nothing twice;
//! batches over shared users, and single debits under the same operation ids, racing
//! (the races can only be lost on PostgreSQL, where transactions run side by side).

use std::collections::{BTreeMap, HashMap};

use ovation_proto::common::ItemError;
use ovation_proto::wallet as pb;
use ovation_proto::wallet::debit_coins_result::Outcome;
use ovation_store::Db;
use ovation_store::sqlx::{self, Row};
use ovation_testkit::{WalletClient, databases, reason};
use ovation_types::limits::BATCH_ITEMS_MAX;
use ovation_wallet::payment::TOKEN_OK;
use tonic::Code;

use crate::suite::*;

fn item(op: &str, user: &str, coins: i64) -> pb::DebitCoinsItem {
    pb::DebitCoinsItem {
        operation_id: op.into(),
        user_id: user.into(),
        coins,
        saga_id: String::new(),
        note: String::new(),
    }
}

/// Sends `items` as one batch; each item's outcome, in order.
async fn send(
    gifting: &mut WalletClient,
    items: Vec<pb::DebitCoinsItem>,
) -> Vec<Result<pb::Debit, ItemError>> {
    let count = items.len();
    let results = gifting
        .debit_coins_batch(pb::DebitCoinsBatchRequest { items })
        .await
        .expect("the batch answers")
        .into_inner()
        .results;
    assert_eq!(results.len(), count, "one result per item");
    results
        .into_iter()
        .map(|r| match r.outcome.expect("every result has an outcome") {
            Outcome::Debit(debit) => Ok(debit),
            Outcome::Error(error) => Err(error),
        })
        .collect()
}

/// The refusal an item got, as (code, reason).
fn refusal(outcome: &Result<pb::Debit, ItemError>) -> (Code, &str) {
    let error = outcome.as_ref().expect_err("a refused item");
    (Code::from(error.code), error.reason.as_str())
}

/// A user with an account and 110 coins (the 100-coin package and its bonus).
async fn funded(suite: &Suite, user: &str) -> WalletClient {
    let mut client = suite.user(user).await;
    open_account(&mut client, user).await;
    buy(
        &mut client,
        user,
        &format!("fund-{user}"),
        "coins_100",
        TOKEN_OK,
    )
    .await;
    client
}

async fn entry_count(admin: &mut WalletClient) -> i64 {
    summary(admin).await.journal_entry_count
}

#[tokio::test]
async fn a_batch_applies_its_good_items_and_refuses_each_bad_one_alone() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let backend = suite.backend;
        let mut ann = funded(&suite, "ann").await;
        let mut bob = funded(&suite, "bob").await;
        funded(&suite, "kid").await;
        let mut admin = suite.admin().await;
        admin
            .set_account_minor(pb::SetAccountMinorRequest {
                idempotency_key: "minor".into(),
                user_id: "kid".into(),
                minor: true,
                actor: String::new(),
                reason: "age check failed".into(),
            })
            .await
            .unwrap();
        let mut gifting = suite.gifting().await;
        let used = gifting
            .debit_coins(debit("used", "ann", 5))
            .await
            .unwrap()
            .into_inner()
            .debit
            .unwrap();
        let entries_before = entry_count(&mut admin).await;

        let items = vec![
            item("g1", "ann", 10),
            item("x1", "ghost", 1),
            item("g2", "bob", 100),
            item("o1", "bob", 11),
            item("m1", "kid", 1),
            item("used", "ann", 6),
            item("bad id", "ann", 0),
            item("used", "ann", 5),
            item("g3", "ann", 20),
            // Repeats within the batch: as DebitCoins answers a retry.
            item("g1", "ann", 10),
            item("g1", "ann", 11),
        ];
        let outcomes = send(&mut gifting, items.clone()).await;
        let debit_of = |i: usize| outcomes[i].as_ref().expect("an applied item").clone();
        assert_eq!(
            (debit_of(0).coins, debit_of(0).available_coins_after),
            (10, 95),
            "[{backend}]"
        );
        assert_eq!(refusal(&outcomes[1]), (Code::NotFound, "NOT_FOUND"));
        assert!(
            outcomes[1]
                .as_ref()
                .unwrap_err()
                .message
                .contains("account")
        );
        assert_eq!(debit_of(2).available_coins_after, 10, "[{backend}]");
        assert_eq!(
            refusal(&outcomes[3]),
            (Code::FailedPrecondition, "INSUFFICIENT_COINS")
        );
        assert_eq!(
            refusal(&outcomes[4]),
            (Code::FailedPrecondition, "MINOR_ACCOUNT")
        );
        assert_eq!(
            refusal(&outcomes[5]),
            (Code::AlreadyExists, "OPERATION_ID_REUSED")
        );
        assert_eq!(
            refusal(&outcomes[6]),
            (Code::InvalidArgument, "INVALID_ARGUMENT")
        );
        let malformed = &outcomes[6].as_ref().unwrap_err().message;
        assert!(
            malformed.contains("operation_id") && malformed.contains("coins"),
            "[{backend}] the message names the bad fields: {malformed}"
        );
        assert_eq!(debit_of(7), used, "[{backend}] a stored debit is answered");
        assert_eq!(debit_of(8).available_coins_after, 75, "[{backend}]");
        assert_eq!(debit_of(9), debit_of(0), "[{backend}] a twin in the batch");
        assert_eq!(
            refusal(&outcomes[10]),
            (Code::AlreadyExists, "OPERATION_ID_REUSED")
        );

        // Each refusal is the one DebitCoins gives for the item alone, word for word.
        for i in [1, 3, 4, 5, 10] {
            let it = &items[i];
            let single = gifting
                .debit_coins(pb::DebitCoinsRequest {
                    idempotency_key: format!("single-{i}"),
                    operation_id: it.operation_id.clone(),
                    user_id: it.user_id.clone(),
                    coins: it.coins,
                    saga_id: it.saga_id.clone(),
                    note: it.note.clone(),
                })
                .await
                .expect_err("refused alone too");
            let error = outcomes[i].as_ref().unwrap_err();
            assert_eq!(
                (
                    Code::from(error.code),
                    error.reason.as_str(),
                    error.message.as_str()
                ),
                (single.code(), reason(&single).as_str(), single.message()),
                "[{backend}] item {i}"
            );
        }

        assert_eq!(balance(&mut ann, "ann").await.posted_coins, 75);
        assert_eq!(balance(&mut bob, "bob").await.posted_coins, 10);
        assert_eq!(
            entry_count(&mut admin).await,
            entries_before + 3,
            "[{backend}] three items posted, one entry each"
        );
        assert_ledger_sound(&mut admin, backend).await;

        // The same batch again: every applied item answered with the original debit,
        // every refusal the same, nothing applied twice.
        let again = send(&mut gifting, items).await;
        assert_eq!(
            again, outcomes,
            "[{backend}] a retried batch answers the same"
        );
        assert_eq!(balance(&mut ann, "ann").await.posted_coins, 75);
        assert_eq!(balance(&mut bob, "bob").await.posted_coins, 10);
        assert_eq!(entry_count(&mut admin).await, entries_before + 3);
        assert_ledger_sound(&mut admin, backend).await;
        suite.stop().await;
    }
}

#[tokio::test]
async fn items_of_several_users_run_each_users_balance_in_request_order() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let backend = suite.backend;
        let users = ["ada", "ben", "cat"];
        for user in users {
            funded(&suite, user).await;
        }
        let mut gifting = suite.gifting().await;
        // Round robin: each user 40, 40, 40 (refused: 30 left), 20.
        let amounts = [40, 40, 40, 20];
        let items: Vec<_> = (0..amounts.len())
            .flat_map(|j| {
                users
                    .iter()
                    .map(move |u| item(&format!("{u}-{j}"), u, amounts[j]))
            })
            .collect();
        let outcomes = send(&mut gifting, items).await;
        for (u, user) in users.iter().enumerate() {
            let mine: Vec<_> = (0..amounts.len())
                .map(|j| &outcomes[j * users.len() + u])
                .collect();
            let after = |j: usize| mine[j].as_ref().unwrap().available_coins_after;
            assert_eq!(
                (after(0), after(1), after(3)),
                (70, 30, 10),
                "[{backend}] {user}"
            );
            assert_eq!(
                refusal(mine[2]),
                (Code::FailedPrecondition, "INSUFFICIENT_COINS"),
                "[{backend}] only the item that would overdraw {user} is refused"
            );
        }

        // Each history is numbered without a gap, the batch's entries in request order.
        let db = Db::connect(&suite.wallet_db_url, &Default::default())
            .await
            .unwrap();
        for user in users {
            let rows = sqlx::query(
                "SELECT user_seq, operation_id, balance_after_coins FROM journal_entries \
                 WHERE user_id = $1 ORDER BY user_seq",
            )
            .bind(user)
            .fetch_all(db.pool())
            .await
            .unwrap();
            let seqs: Vec<i64> = rows.iter().map(|r| r.get::<i64, _>(0)).collect();
            assert_eq!(
                seqs,
                (1..=seqs.len() as i64).collect::<Vec<_>>(),
                "[{backend}] {user}"
            );
            let debits: Vec<(String, i64)> = rows
                .iter()
                .filter(|r| !r.get::<String, _>(1).is_empty())
                .map(|r| (r.get(1), r.get(2)))
                .collect();
            assert_eq!(
                debits,
                [
                    (format!("{user}-0"), 70),
                    (format!("{user}-1"), 30),
                    (format!("{user}-3"), 10)
                ],
                "[{backend}]"
            );
            let mut client = suite.user(user).await;
            assert_eq!(balance(&mut client, user).await.posted_coins, 10);
        }
        db.close().await;
        let mut admin = suite.admin().await;
        assert_ledger_sound(&mut admin, backend).await;
        suite.stop().await;
    }
}

/// Eight batches at once over the same six users, each naming them in another order:
/// no deadlock, no lost update, no overdraft.
#[tokio::test]
async fn concurrent_batches_over_shared_users_never_overdraw_or_lose_an_update() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let backend = suite.backend;
        let users: Vec<String> = (0..6).map(|u| format!("u{u}")).collect();
        for user in &users {
            funded(&suite, user).await;
        }
        let gifting = suite.gifting().await;
        let calls: Vec<_> = (0..8)
            .map(|b| {
                let mut gifting = gifting.clone();
                let mut order = users.clone();
                order.rotate_left(b % users.len());
                if b % 2 == 1 {
                    order.reverse();
                }
                // Two items of 10 coins per user per batch: 160 wanted of 110 each.
                let items: Vec<_> = (0..2)
                    .flat_map(|j| {
                        order
                            .iter()
                            .map(move |u| item(&format!("b{b}-{u}-{j}"), u, 10))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                tokio::spawn(async move { (items.clone(), send(&mut gifting, items).await) })
            })
            .collect();
        let mut applied: HashMap<String, i64> = HashMap::new();
        for call in calls {
            let (items, outcomes) = call.await.unwrap();
            for (it, outcome) in items.iter().zip(&outcomes) {
                match outcome {
                    Ok(debit) => {
                        assert_eq!(debit.operation_id, it.operation_id);
                        *applied.entry(it.user_id.clone()).or_default() += 1;
                    }
                    Err(_) => assert_eq!(
                        refusal(outcome),
                        (Code::FailedPrecondition, "INSUFFICIENT_COINS"),
                        "[{backend}]"
                    ),
                }
            }
        }
        for user in &users {
            assert_eq!(
                applied.get(user),
                Some(&11),
                "[{backend}] eleven debits of 10 fit in {user}'s 110"
            );
            let mut client = suite.user(user).await;
            let b = balance(&mut client, user).await;
            assert_eq!((b.posted_coins, b.available_coins), (0, 0), "[{backend}]");
        }
        let mut admin = suite.admin().await;
        assert_ledger_sound(&mut admin, backend).await;
        suite.stop().await;
    }
}

/// Batches and single DebitCoins calls naming the same operation ids at once: each
/// operation is applied once and every answer for it is that one debit. Operation ids
/// that two batches use for different users are applied for one of them; the other is
/// told ALREADY_EXISTS (on PostgreSQL this is the primary-key race the batch retries).
#[tokio::test]
async fn batches_and_single_debits_racing_on_operation_ids_apply_each_once() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let backend = suite.backend;
        let users = ["p0", "p1", "p2", "p3"];
        for user in users {
            funded(&suite, user).await;
        }
        let gifting = suite.gifting().await;
        // 5 coins each: 4 shared per user plus at most 8 clashing ones fit in 110.
        let shared: Vec<_> = users
            .iter()
            .flat_map(|u| (0..4).map(move |j| item(&format!("s-{u}-{j}"), u, 5)))
            .collect();
        let mut batches = Vec::new();
        for b in 0..4 {
            let mut items = shared.clone();
            items.rotate_left(b * 3);
            if b % 2 == 1 {
                items.reverse();
            }
            batches.push(items);
        }
        // The same clash ids, each batch for its own user: these batches lock no common
        // row, so on PostgreSQL they meet only at the debits' primary key.
        for user in users {
            batches.push(
                (0..8)
                    .map(|j| item(&format!("clash-{j}"), user, 5))
                    .collect(),
            );
        }
        let batch_calls: Vec<_> = batches
            .into_iter()
            .map(|items| {
                let mut gifting = gifting.clone();
                tokio::spawn(async move { (items.clone(), send(&mut gifting, items).await) })
            })
            .collect();
        let single_calls: Vec<_> = shared
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, it)| {
                let mut gifting = gifting.clone();
                tokio::spawn(async move {
                    let answer = gifting
                        .debit_coins(pb::DebitCoinsRequest {
                            idempotency_key: format!("single-{i}"),
                            operation_id: it.operation_id.clone(),
                            user_id: it.user_id.clone(),
                            coins: it.coins,
                            saga_id: String::new(),
                            note: String::new(),
                        })
                        .await;
                    (it.operation_id, answer)
                })
            })
            .collect();

        // Every answer for an operation id, batch or single, is the same debit.
        let mut answers: BTreeMap<String, Vec<pb::Debit>> = BTreeMap::new();
        let mut clash_refusals = 0;
        for call in batch_calls {
            let (items, outcomes) = call.await.unwrap();
            for (it, outcome) in items.iter().zip(outcomes) {
                match outcome {
                    Ok(debit) => answers
                        .entry(it.operation_id.clone())
                        .or_default()
                        .push(debit),
                    Err(error) => {
                        assert!(
                            it.operation_id.starts_with("clash-"),
                            "[{backend}] {} refused: {error:?}",
                            it.operation_id
                        );
                        assert_eq!(
                            (Code::from(error.code), error.reason.as_str()),
                            (Code::AlreadyExists, "OPERATION_ID_REUSED"),
                            "[{backend}]"
                        );
                        clash_refusals += 1;
                    }
                }
            }
        }
        for call in single_calls {
            let (op, answer) = call.await.unwrap();
            let debit = answer
                .unwrap_or_else(|s| panic!("[{backend}] single {op}: {s:?}"))
                .into_inner()
                .debit
                .unwrap();
            answers.entry(op).or_default().push(debit);
        }
        assert_eq!(answers.len(), 16 + 8, "[{backend}]");
        assert_eq!(
            clash_refusals,
            3 * 8,
            "[{backend}] each clash id applied for one batch's user"
        );
        for (op, debits) in &answers {
            assert!(
                debits.iter().all(|d| d == &debits[0]),
                "[{backend}] {op} answered as one debit: {debits:#?}"
            );
        }

        // The stored debits are exactly those, once each; balances match them.
        let mut admin = suite.admin().await;
        let stored = admin
            .list_debits(pb::ListDebitsRequest {
                page_size: 500,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .debits;
        assert_eq!(stored.len(), 24, "[{backend}]");
        for debit in &stored {
            assert_eq!(Some(debit), answers[&debit.operation_id].first());
        }
        for user in users {
            let spent: i64 = stored
                .iter()
                .filter(|d| d.user_id == user)
                .map(|d| d.coins)
                .sum();
            let mut client = suite.user(user).await;
            assert_eq!(
                balance(&mut client, user).await.posted_coins,
                110 - spent,
                "[{backend}] {user}"
            );
        }
        assert_ledger_sound(&mut admin, backend).await;
        suite.stop().await;
    }
}

#[tokio::test]
async fn a_batch_of_no_items_or_too_many_is_refused_whole() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let backend = suite.backend;
        let mut ann = funded(&suite, "ann").await;
        let mut gifting = suite.gifting().await;
        for count in [0, BATCH_ITEMS_MAX + 1] {
            let items = (0..count)
                .map(|i| item(&format!("n{i}"), "ann", 1))
                .collect();
            let refused = gifting
                .debit_coins_batch(pb::DebitCoinsBatchRequest { items })
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Code::InvalidArgument, "[{backend}] {count}");
        }
        // The largest batch goes through, one coin per item (110 of 256 fit).
        let items: Vec<_> = (0..BATCH_ITEMS_MAX)
            .map(|i| item(&format!("n{i}"), "ann", 1))
            .collect();
        let outcomes = send(&mut gifting, items).await;
        assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 110);
        assert_eq!(balance(&mut ann, "ann").await.posted_coins, 0);
        // Only malformed items: each refused, nothing written.
        let outcomes = send(&mut gifting, vec![item("", "ann", 1), item("z", "", 0)]).await;
        assert!(
            outcomes
                .iter()
                .all(|o| refusal(o) == (Code::InvalidArgument, "INVALID_ARGUMENT"))
        );
        let mut admin = suite.admin().await;
        assert_ledger_sound(&mut admin, backend).await;
        suite.stop().await;
    }
}

/// A twin that commits while a batch waits to insert under the same operation id (for
/// another user, so no row lock orders them): the batch is run again and answers the item
/// ALREADY_EXISTS, applying the rest; a single DebitCoins likewise (it failed INTERNAL
/// before issue 13). PostgreSQL only: SQLite runs one write transaction at a time.
#[tokio::test]
async fn a_twin_committed_while_a_batch_waits_is_answered_not_failed() {
    let Some(db) = ovation_testkit::TestDatabase::postgres().await else {
        return;
    };
    let suite = Suite::start(&db).await;
    for user in ["xia", "yan"] {
        funded(&suite, user).await;
    }
    let pool = Db::connect(&suite.wallet_db_url, &Default::default())
        .await
        .unwrap();
    let mut gifting = suite.gifting().await;
    for (round, op) in ["tw-batch", "tw-single"].into_iter().enumerate() {
        // The twin: xia's debit under `op`, written and not yet committed.
        let mut twin = pool.begin_write().await.unwrap();
        let cmd = ovation_wallet::ledger::DebitCmd {
            operation_id: ovation_types::ResourceId::parse(op).unwrap(),
            user_id: ovation_types::ResourceId::parse("xia").unwrap(),
            coins: ovation_types::Coins::parse(3).unwrap(),
            saga_id: None,
            note: Default::default(),
            actor: "twin".into(),
        };
        ovation_wallet::ledger::debit(
            &mut twin,
            &cmd,
            Default::default(),
            ovation_types::UnixMillis::now(),
        )
        .await
        .unwrap();
        let mut client = gifting.clone();
        let call = tokio::spawn(async move {
            if round == 0 {
                let outcomes = send(
                    &mut client,
                    vec![item(op, "yan", 4), item("yan-ok", "yan", 4)],
                )
                .await;
                outcomes
                    .into_iter()
                    .map(|o| o.map(|_| ()).map_err(|e| (Code::from(e.code), e.reason)))
                    .collect::<Vec<_>>()
            } else {
                let answer = client.debit_coins(debit(op, "yan", 4)).await;
                vec![answer.map(|_| ()).map_err(|s| (s.code(), reason(&s)))]
            }
        });
        wait_for_a_lock_wait(&pool).await;
        twin.commit().await.unwrap();
        let outcomes = call.await.unwrap();
        assert_eq!(
            outcomes[0],
            Err((Code::AlreadyExists, "OPERATION_ID_REUSED".to_owned())),
            "{op}"
        );
        if round == 0 {
            assert_eq!(outcomes[1], Ok(()), "the batch's other item is applied");
        }
    }
    let mut yan = suite.user("yan").await;
    assert_eq!(balance(&mut yan, "yan").await.posted_coins, 110 - 4);
    let mut xia = suite.user("xia").await;
    assert_eq!(balance(&mut xia, "xia").await.posted_coins, 110 - 6);
    let mut admin = suite.admin().await;
    assert_ledger_sound(&mut admin, "postgres").await;
    // The twin answers a later retry of its operation id as its own.
    let replay = send(&mut gifting, vec![item("tw-batch", "xia", 3)]).await;
    assert_eq!(replay[0].as_ref().unwrap().user_id, "xia");
    pool.close().await;
    suite.stop().await;
}

/// Returns once some session of this database waits for a lock (the batch, blocked on
/// the twin's uncommitted row). Bounded: a wait that never comes fails the test.
async fn wait_for_a_lock_wait(db: &Db) {
    for _ in 0..3_000 {
        let waiting: i64 = sqlx::query(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get(0);
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no session ever waited for the twin's lock");
}
