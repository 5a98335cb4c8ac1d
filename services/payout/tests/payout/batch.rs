//! CreditDiamondsBatch (issue 13) over real gRPC, on SQLite and PostgreSQL: each item is
//! applied or refused alone, exactly as CreditDiamonds would answer it; a retried batch
//! applies nothing twice; a creator credited many times in one batch gets the sum once
//! and a journal entry per gift; and, concurrently, batches sharing creators in any
//! order, batches racing a suspension, and single credits racing a batch with the same
//! operation ids.

use std::collections::BTreeMap;

use ovation_payout::domain::CreditRequest;
use ovation_payout::operations::{PayoutError, ledger};
use ovation_proto::common::ItemError;
use ovation_proto::payout as pb;
use ovation_proto::payout::credit_diamonds_result::Outcome;
use ovation_store::sqlx;
use ovation_store::{Db, DbOptions};
use ovation_testkit::{TestDatabase, code, databases, reason};
use ovation_types::{Bps, Coins, ResourceId};
use tonic::Code;

use crate::suite::*;

/// What one item of a batch came to.
fn outcome(result: &pb::CreditDiamondsResult) -> Result<pb::Credit, ItemError> {
    match result.outcome.clone() {
        Some(Outcome::Credit(credit)) => Ok(credit),
        Some(Outcome::Error(error)) => Err(error),
        None => panic!("a result without an outcome: {result:?}"),
    }
}

/// `gifting` sends `items` as one batch; one outcome per item, in order.
async fn send(
    gifting: &mut ovation_testkit::PayoutClient,
    items: Vec<pb::CreditDiamondsItem>,
) -> Vec<Result<pb::Credit, ItemError>> {
    let n = items.len();
    let results = gifting
        .credit_diamonds_batch(credit_batch(items))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), n, "one result per item");
    results.iter().map(outcome).collect()
}

/// The credits recorded under `ids` (ListCredits), by operation id.
async fn recorded(c: &Clients, ids: &[String]) -> BTreeMap<String, pb::Credit> {
    let mut admin = c.admin.clone();
    admin
        .list_credits(pb::ListCreditsRequest {
            operation_ids: ids.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .credits
        .into_iter()
        .map(|c| (c.operation_id.clone(), c))
        .collect()
}

/// A creator's balance is what their credits earned (no payouts in these tests), and
/// lifetime = available + held + paid out.
async fn assert_earned(c: &Clients, id: &str, diamonds: i64, db: &TestDatabase) {
    let b = balance(&mut c.admin.clone(), id).await;
    assert_eq!(
        (b.available_diamonds, b.lifetime_earned_diamonds),
        (diamonds, diamonds),
        "{id} on {}",
        db.backend()
    );
    assert_eq!(
        b.lifetime_earned_diamonds,
        b.available_diamonds + b.held_diamonds + b.paid_out_diamonds
    );
}

fn millis(t: &Option<prost_types::Timestamp>) -> i64 {
    let t = t.as_ref().expect("a timestamp");
    t.seconds * 1_000 + i64::from(t.nanos) / 1_000_000
}

#[tokio::test]
async fn a_batch_applies_its_good_items_and_refuses_each_bad_one_alone() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, _sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        let mut gifting = c.gifting.clone();
        for id in ["ann", "bob", "sue"] {
            register(&c, id).await;
        }
        c.admin
            .clone()
            .suspend_creator(suspend_request("sue", "suspend-sue"))
            .await
            .unwrap();
        let used = earn(&c, "used", "ann", 10).await;

        let mut malformed = credit_item("", "ann", 0);
        malformed.creator_share_bps = 10_001;
        let outcomes = send(
            &mut gifting,
            vec![
                credit_item("good-1", "ann", 100),
                credit_item("good-2", "bob", 40),
                credit_item("unknown", "nobody", 10),
                credit_item("suspended", "sue", 10),
                credit_item("used", "ann", 999),
                malformed.clone(),
                credit_item("good-3", "ann", 60),
                credit_item("used", "ann", 20),
                credit_item("good-1", "ann", 100),
            ],
        )
        .await;

        let credited: Vec<_> = outcomes.iter().map(|o| o.as_ref().ok().cloned()).collect();
        let good1 = credited[0].clone().expect("good-1 applied");
        assert_eq!((good1.creator_id.as_str(), good1.diamonds), ("ann", 50));
        assert_eq!(credited[1].as_ref().map(|c| c.diamonds), Some(20));
        assert_eq!(credited[6].as_ref().map(|c| c.diamonds), Some(30));
        assert_eq!(
            credited[7].as_ref(),
            Some(&used),
            "a replay of the recorded credit"
        );
        assert_eq!(
            credited[8].as_ref(),
            Some(&good1),
            "a repeat within the batch"
        );

        // Each refusal is what CreditDiamonds answers for that item alone.
        let single = |item: &pb::CreditDiamondsItem, key: &str| pb::CreditDiamondsRequest {
            idempotency_key: key.into(),
            operation_id: item.operation_id.clone(),
            creator_id: item.creator_id.clone(),
            coins: item.coins,
            creator_share_bps: item.creator_share_bps,
            sender_user_id: item.sender_user_id.clone(),
            stream_id: item.stream_id.clone(),
            gift_id: item.gift_id.clone(),
            gift_version: item.gift_version,
        };
        for (i, item, code_expected, reason_expected) in [
            (
                2,
                credit_item("unknown", "nobody", 10),
                Code::FailedPrecondition,
                "CREATOR_NOT_FOUND",
            ),
            (
                3,
                credit_item("suspended", "sue", 10),
                Code::FailedPrecondition,
                "CREATOR_SUSPENDED",
            ),
            (
                4,
                credit_item("used", "ann", 999),
                Code::AlreadyExists,
                "OPERATION_ID_REUSED",
            ),
            (
                5,
                malformed.clone(),
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
            ),
        ] {
            let error = outcomes[i].clone().expect_err("refused");
            let alone = gifting
                .credit_diamonds(single(&item, &format!("alone-{i}")))
                .await
                .expect_err("refused alone too");
            assert_eq!(
                (error.code, error.reason.as_str()),
                (i32::from(code_expected), reason_expected),
                "item {i} on {}: {error:?}",
                db.backend()
            );
            assert_eq!(
                (error.code, error.reason.as_str(), error.message.as_str()),
                (
                    i32::from(alone.code()),
                    reason(&alone).as_str(),
                    alone.message()
                ),
                "item {i} answers as CreditDiamonds does on {}",
                db.backend()
            );
        }
        let malformed_error = outcomes[5].clone().unwrap_err();
        for field in ["operation_id", "coins", "creator_share_bps"] {
            assert!(
                malformed_error.message.contains(field),
                "{field} named in {malformed_error:?}"
            );
        }

        // Applied: the good items once; refused: nothing.
        let ids: Vec<String> = ["good-1", "good-2", "good-3", "unknown", "suspended", "used"]
            .map(String::from)
            .to_vec();
        let credits = recorded(&c, &ids).await;
        assert_eq!(
            credits.keys().cloned().collect::<Vec<_>>(),
            vec!["good-1", "good-2", "good-3", "used"],
            "on {}",
            db.backend()
        );
        assert_eq!(credits["used"], used, "the recorded credit is untouched");
        assert_earned(&c, "ann", 10 + 50 + 30, &db).await;
        assert_earned(&c, "bob", 20, &db).await;
        assert_earned(&c, "sue", 0, &db).await;
        let summary = assert_ledger_sound(&c, &db).await;
        assert_eq!(
            (summary.credit_count, summary.journal_entry_count),
            (4, 4),
            "on {}",
            db.backend()
        );
        assert_eq!(summary.credited_diamonds, 110);
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_hundred_credits_to_one_creator_are_one_sum_and_a_hundred_entries_once() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, _sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        let mut gifting = c.gifting.clone();
        register(&c, "star").await;
        let items: Vec<_> = (0..100)
            .map(|i| credit_item(&format!("gift-{i:03}"), "star", 2 * (i + 1)))
            .collect();
        let expected: i64 = (0..100).map(|i| i + 1).sum();

        let first = send(&mut gifting, items.clone()).await;
        let first: Vec<pb::Credit> = first.into_iter().map(|o| o.unwrap()).collect();
        assert_eq!(first.iter().map(|c| c.diamonds).sum::<i64>(), expected);
        assert_earned(&c, "star", expected, &db).await;

        let earnings = c
            .admin
            .clone()
            .list_earnings(pb::ListEarningsRequest {
                creator_id: "star".into(),
                page_size: 500,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .credits;
        assert_eq!(earnings.len(), 100, "on {}", db.backend());
        let ids: Vec<String> = items.iter().map(|i| i.operation_id.clone()).collect();
        assert_eq!(recorded(&c, &ids).await.len(), 100);
        let summary = assert_ledger_sound(&c, &db).await;
        assert_eq!(
            (
                summary.credit_count,
                summary.journal_entry_count,
                summary.credited_diamonds
            ),
            (100, 100, expected),
            "a journal entry per gift on {}",
            db.backend()
        );

        // The same batch again: the original credits, nothing applied twice.
        let again: Vec<pb::Credit> = send(&mut gifting, items)
            .await
            .into_iter()
            .map(|o| o.unwrap())
            .collect();
        assert_eq!(again, first, "on {}", db.backend());
        assert_earned(&c, "star", expected, &db).await;
        let summary = assert_ledger_sound(&c, &db).await;
        assert_eq!(
            (summary.credit_count, summary.journal_entry_count),
            (100, 100)
        );
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn batches_of_no_items_or_too_many_are_invalid_and_write_nothing() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, _sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        let mut gifting = c.gifting.clone();
        register(&c, "ann").await;
        let max = ovation_types::limits::BATCH_ITEMS_MAX;
        for n in [0, max + 1] {
            let items = (0..n)
                .map(|i| credit_item(&format!("op-{i}"), "ann", 2))
                .collect();
            let refused = gifting
                .credit_diamonds_batch(credit_batch(items))
                .await
                .expect_err("refused whole");
            assert_eq!(refused.code(), Code::InvalidArgument, "{n} items");
            assert_eq!(ovation_testkit::violated_fields(&refused), vec!["items"]);
        }
        let full = (0..max)
            .map(|i| credit_item(&format!("op-{i}"), "ann", 2))
            .collect();
        assert_eq!(
            code(gifting.credit_diamonds_batch(credit_batch(full)).await),
            Code::Ok,
            "{max} items are allowed"
        );
        assert_earned(&c, "ann", max as i64, &db).await;
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn concurrent_batches_over_shared_creators_in_any_order_credit_exact_sums() {
    const CREATORS: usize = 6;
    const BATCHES: usize = 8;
    const ROUNDS: usize = 4;
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, _sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        let creators: Vec<String> = (0..CREATORS).map(|i| format!("shared-{i}")).collect();
        for id in &creators {
            register(&c, id).await;
        }
        let mut earned: BTreeMap<String, i64> = BTreeMap::new();
        for round in 0..ROUNDS {
            let mut calls = Vec::new();
            for b in 0..BATCHES {
                // Each batch visits every creator, several times, in its own order:
                // forwards, backwards, or rotated.
                let mut order: Vec<usize> = (0..CREATORS * 3).map(|i| i % CREATORS).collect();
                match b % 3 {
                    0 => {}
                    1 => order.reverse(),
                    _ => order.rotate_left(b),
                }
                let items: Vec<_> = order
                    .iter()
                    .enumerate()
                    .map(|(i, &k)| {
                        let coins = 2 * (1 + ((round + b + i) % 7) as i64);
                        *earned.entry(creators[k].clone()).or_default() += coins / 2;
                        credit_item(&format!("r{round}-b{b}-i{i}"), &creators[k], coins)
                    })
                    .collect();
                let mut gifting = c.gifting.clone();
                calls.push(tokio::spawn(async move { send(&mut gifting, items).await }));
            }
            for call in calls {
                for outcome in call.await.unwrap() {
                    outcome.unwrap_or_else(|e| panic!("refused on {}: {e:?}", db.backend()));
                }
            }
        }
        for (id, diamonds) in &earned {
            assert_earned(&c, id, *diamonds, &db).await;
        }
        let summary = assert_ledger_sound(&c, &db).await;
        assert_eq!(
            summary.credit_count,
            (ROUNDS * BATCHES * CREATORS * 3) as i64,
            "on {}",
            db.backend()
        );
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn batches_racing_a_suspension_land_before_it_or_are_refused() {
    const ROUNDS: usize = 12;
    const BATCHES: usize = 4;
    const ITEMS: usize = 5;
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, _sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        register(&c, "bystander").await;
        let mut bystander_earned = 0;
        let mut landed_total = 0;
        for r in 0..ROUNDS {
            let id = format!("batch-race-{r}");
            register(&c, &id).await;
            let calls: Vec<_> = (0..BATCHES)
                .map(|b| {
                    // The suspended creator's gifts, and one for a bystander, together.
                    let mut items: Vec<_> = (0..ITEMS)
                        .map(|i| credit_item(&format!("{id}-b{b}-{i}"), &id, 2 * (i as i64 + 1)))
                        .collect();
                    items.push(credit_item(&format!("{id}-b{b}-bystander"), "bystander", 2));
                    let mut gifting = c.gifting.clone();
                    tokio::spawn(async move { send(&mut gifting, items).await })
                })
                .collect();
            let mut admin = c.admin.clone();
            let suspension = suspend_request(&id, &format!("s-{id}"));
            let suspended = tokio::spawn(async move { admin.suspend_creator(suspension).await });
            let mut landed = Vec::new();
            for call in calls {
                let outcomes = call.await.unwrap();
                let (bystander, own) = outcomes.split_last().unwrap();
                assert_eq!(bystander.as_ref().map(|c| c.diamonds).ok(), Some(1));
                bystander_earned += 1;
                for outcome in own {
                    match outcome {
                        Ok(credit) => landed.push(credit.clone()),
                        Err(e) => {
                            assert_eq!(
                                (e.code, e.reason.as_str()),
                                (i32::from(Code::FailedPrecondition), "CREATOR_SUSPENDED"),
                                "{e:?}"
                            );
                        }
                    }
                }
            }
            let suspended_at = millis(
                &suspended
                    .await
                    .unwrap()
                    .unwrap()
                    .into_inner()
                    .creator
                    .unwrap()
                    .suspension
                    .unwrap()
                    .suspend_time,
            );
            for credit in &landed {
                assert!(
                    millis(&credit.create_time) <= suspended_at,
                    "credit {} landed after the suspension on {}",
                    credit.operation_id,
                    db.backend()
                );
            }
            // Landed credits are recorded and counted; refused ones left no trace.
            let ids: Vec<String> = (0..BATCHES)
                .flat_map(|b| {
                    let id = &id;
                    (0..ITEMS).map(move |i| format!("{id}-b{b}-{i}"))
                })
                .collect();
            let recorded_ids: Vec<String> = recorded(&c, &ids).await.into_keys().collect();
            let mut landed_ids: Vec<String> =
                landed.iter().map(|c| c.operation_id.clone()).collect();
            landed_ids.sort();
            assert_eq!(recorded_ids, landed_ids, "on {}", db.backend());
            assert_earned(&c, &id, landed.iter().map(|c| c.diamonds).sum(), &db).await;
            landed_total += landed.len();
        }
        assert_earned(&c, "bystander", bystander_earned, &db).await;
        eprintln!(
            "{}: {landed_total} of {} batched credits landed before their suspension",
            db.backend(),
            ROUNDS * BATCHES * ITEMS
        );
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn single_credits_racing_batches_with_the_same_operation_ids_apply_each_once() {
    const ROUNDS: usize = 6;
    const OPS: usize = 12;
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, _sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        register(&c, "ann").await;
        register(&c, "bob").await;
        let mut ann_earned = 0;
        let mut bob_earned = 0;
        for round in 0..ROUNDS {
            let op = |i: usize| format!("twin-r{round}-{i}");
            // The batch credits ann; its twins are the same credits (even ops) or the
            // same operation ids for bob (odd ops): whichever commits first is the credit.
            let items: Vec<_> = (0..OPS).map(|i| credit_item(&op(i), "ann", 4)).collect();
            let batches: Vec<_> = (0..2)
                .map(|_| {
                    let mut gifting = c.gifting.clone();
                    let items = items.clone();
                    tokio::spawn(async move { send(&mut gifting, items).await })
                })
                .collect();
            let singles: Vec<_> = (0..OPS)
                .map(|i| {
                    let creator = if i % 2 == 0 { "ann" } else { "bob" };
                    let mut request = credit_request(&op(i), creator, 4);
                    request.idempotency_key = format!("single-{}", op(i));
                    let mut gifting = c.gifting.clone();
                    tokio::spawn(async move { gifting.credit_diamonds(request).await })
                })
                .collect();
            let mut answers: Vec<Vec<Result<pb::Credit, (i32, String)>>> = vec![Vec::new(); OPS];
            for batch in batches {
                for (i, outcome) in batch.await.unwrap().into_iter().enumerate() {
                    answers[i].push(outcome.map_err(|e| (e.code, e.reason)));
                }
            }
            for (i, single) in singles.into_iter().enumerate() {
                answers[i].push(
                    single
                        .await
                        .unwrap()
                        .map(|r| r.into_inner().credit.unwrap())
                        .map_err(|s| (i32::from(s.code()), reason(&s))),
                );
            }
            let ids: Vec<String> = (0..OPS).map(op).collect();
            let credits = recorded(&c, &ids).await;
            for (i, answers) in answers.iter().enumerate() {
                let credit = &credits[&op(i)];
                for answer in answers {
                    match answer {
                        // Every credit answered is the one recorded.
                        Ok(answered) => assert_eq!(answered, credit, "on {}", db.backend()),
                        // Only a twin for the other creator may lose, as a reuse.
                        Err(refusal) => assert_eq!(
                            (refusal.0, refusal.1.as_str(), i % 2),
                            (i32::from(Code::AlreadyExists), "OPERATION_ID_REUSED", 1),
                            "op {i} on {}",
                            db.backend()
                        ),
                    }
                }
                match credit.creator_id.as_str() {
                    "ann" => ann_earned += credit.diamonds,
                    _ => bob_earned += credit.diamonds,
                }
            }
        }
        assert_earned(&c, "ann", ann_earned, &db).await;
        assert_earned(&c, "bob", bob_earned, &db).await;
        let summary = assert_ledger_sound(&c, &db).await;
        assert_eq!(
            summary.credit_count,
            (ROUNDS * OPS) as i64,
            "once each on {}",
            db.backend()
        );
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn an_operation_id_a_concurrent_credit_records_first_for_another_creator_is_refused_alone() {
    // PostgreSQL only: SQLite runs one write transaction at a time, so a batch there always
    // sees a twin before it writes.
    let Some(db) = TestDatabase::postgres().await else {
        return;
    };
    let catalog = start_catalog().await;
    let (running, _sandbox) = start(&db, &catalog).await;
    let c = Clients::new(&running).await;
    register(&c, "ann").await;
    register(&c, "bob").await;
    let store = Db::connect(db.url(), &DbOptions::default()).await.unwrap();
    let request = |op: &str, creator: &str| CreditRequest {
        operation_id: ResourceId::parse(op).unwrap(),
        creator_id: ResourceId::parse(creator).unwrap(),
        coins: Coins::parse(10).unwrap(),
        share: Bps::parse(5_000).unwrap(),
        sender_user_id: None,
        stream_id: None,
        gift_id: None,
        gift_version: 0,
    };

    // The twin credits "x" to bob and stays uncommitted; the batch credits "x" and "y" to
    // ann under ann's lock, does not see the twin, and waits on its row of "x".
    let mut twin = store.begin_write().await.unwrap();
    let credited = ledger::credit_batch(&mut twin, vec![request("x", "bob")], &Default::default())
        .await
        .unwrap();
    assert!(credited[0].is_ok());
    let batch = {
        let store = store.clone();
        let requests = vec![request("x", "ann"), request("y", "ann")];
        tokio::spawn(async move {
            let mut tx = store.begin_write().await.unwrap();
            let results = ledger::credit_batch(&mut tx, requests, &Default::default()).await.unwrap();
            tx.commit().await.unwrap();
            results
        })
    };
    eventually("the batch waits on the twin's row", || {
        let store = store.clone();
        async move {
            let mut conn = store.conn().await.unwrap();
            let waiting: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&mut *conn)
            .await
            .unwrap();
            (waiting > 0).then_some(())
        }
    })
    .await;
    twin.commit().await.unwrap();

    let results = batch.await.unwrap();
    assert!(
        matches!(&results[0], Err(PayoutError::OperationIdReused(id)) if id.as_str() == "x"),
        "{results:?}"
    );
    assert_eq!(results[1].as_ref().map(|c| c.diamonds).ok(), Some(5));
    assert_earned(&c, "ann", 5, &db).await;
    assert_earned(&c, "bob", 5, &db).await;
    let summary = assert_ledger_sound(&c, &db).await;
    assert_eq!((summary.credit_count, summary.journal_entry_count), (2, 2));
    store.close().await;
    running.stop().await.unwrap();
}
