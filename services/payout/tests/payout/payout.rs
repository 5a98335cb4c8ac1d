//! The payout service over real gRPC on loopback, next to a real catalog, against SQLite
//! and (when `OVATION_TEST_POSTGRES_URL` is set) PostgreSQL: the same assertions on both.

use std::sync::Arc;

use ovation_payout::provider::SandboxProvider;
use ovation_proto::catalog as catalog_pb;
use ovation_proto::catalog::catalog_service_client::CatalogServiceClient;
use ovation_proto::payout as pb;
use ovation_store::{Db, DbOptions};
use ovation_testkit::services::{payout_config, start_payout};
use ovation_testkit::{Bearer, PayoutClient, TestDatabase, databases, reason, violated_fields};
use tonic::Code;

use crate::suite::*;

#[tokio::test]
async fn creators_register_get_accounts_reviewed_and_suspended_with_a_journal() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, _sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        let mut ann = c.creator("ann");

        let registered = register(&c, "ann").await;
        assert_eq!(registered.state, pb::CreatorState::Active as i32);
        assert!(registered.payout_account.is_none());
        // The same key replays; another key for the same id finds it taken.
        assert_eq!(register(&c, "ann").await, registered, "on {}", db.backend());
        let taken = ann
            .register_creator(pb::RegisterCreatorRequest {
                idempotency_key: "register-again".into(),
                creator_id: "ann".into(),
                display_name: "Ann".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(taken.code(), Code::AlreadyExists);
        assert_eq!(reason(&taken), "CREATOR_EXISTS");

        let pending = set_account(&c, "ann", "sandbox-ok-ann").await;
        let account = pending.payout_account.unwrap();
        assert_eq!(
            account.verification_status,
            pb::VerificationStatus::Pending as i32
        );
        assert_eq!(account.account_reference, "sandbox-ok-ann");

        assert_eq!((account.version, account.set_by.as_str()), (1, "ann"));
        let review = |key: &str, decision: pb::VerificationStatus, reviewed: &str| {
            pb::VerifyPayoutAccountRequest {
                idempotency_key: key.into(),
                creator_id: "ann".into(),
                decision: decision as i32,
                account_reference: reviewed.into(),
                actor: "ops-1".into(),
                reason: "id documents match".into(),
                account_version: 1,
            }
        };
        let mut admin = c.admin.clone();
        let stale = admin
            .verify_payout_account(review(
                "v1",
                pb::VerificationStatus::Verified,
                "sandbox-old",
            ))
            .await
            .unwrap_err();
        assert_eq!(stale.code(), Code::FailedPrecondition);
        assert_eq!(reason(&stale), "PAYOUT_ACCOUNT_CHANGED");
        let undecided = admin
            .verify_payout_account(review("v2", pb::VerificationStatus::Pending, ""))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&undecided), ["decision"]);
        let verified = account_reviewed(
            &mut admin,
            review("v3", pb::VerificationStatus::Verified, "sandbox-ok-ann"),
        )
        .await;
        assert_eq!(
            verified.verification_status,
            pb::VerificationStatus::Verified as i32
        );
        assert_eq!(
            (
                verified.reviewed_by.as_str(),
                verified.review_reason.as_str()
            ),
            ("test-admin", "id documents match (reported by: ops-1)"),
            "the caller decided; the named actor is a note"
        );
        assert!(verified.review_time.is_some());

        let suspend = |key: &str| pb::SuspendCreatorRequest {
            idempotency_key: key.into(),
            creator_id: "ann".into(),
            actor: "ops-2".into(),
            reason: "chargeback investigation".into(),
        };
        let suspended = admin
            .suspend_creator(suspend("s1"))
            .await
            .unwrap()
            .into_inner()
            .creator
            .unwrap();
        assert_eq!(suspended.state, pb::CreatorState::Suspended as i32);
        let suspension = suspended.suspension.clone().unwrap();
        assert_eq!(suspension.actor, "test-admin");
        assert_eq!(
            suspension.reason,
            "chargeback investigation (reported by: ops-2)"
        );
        // Suspending again changes nothing (and journals nothing).
        let again = admin
            .suspend_creator(suspend("s2"))
            .await
            .unwrap()
            .into_inner()
            .creator
            .unwrap();
        assert_eq!(again.suspension, Some(suspension));
        let reinstated = admin
            .reinstate_creator(pb::ReinstateCreatorRequest {
                idempotency_key: "r1".into(),
                creator_id: "ann".into(),
                actor: "ops-3".into(),
                reason: "cleared".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .creator
            .unwrap();
        assert_eq!(reinstated.state, pb::CreatorState::Active as i32);
        assert!(reinstated.suspension.is_none());

        let read = creator(&mut ann, "ann").await;
        assert_eq!(read, reinstated, "on {}", db.backend());
        let missing = admin
            .get_creator(pb::GetCreatorRequest {
                creator_id: "nobody".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);

        // Every change is journaled with the authenticated caller as the actor, and the
        // reason with the request's actor as a note.
        let journal = journal(&db, "ann").await;
        let lines: Vec<_> = journal
            .iter()
            .map(|(a, b, c, d)| (a.as_str(), b.as_str(), c.as_str(), d.as_str()))
            .collect();
        assert_eq!(
            lines,
            [
                ("REGISTER", "ann", "ann", ""),
                ("SET_PAYOUT_ACCOUNT", "ann", "ann", ""),
                (
                    "VERIFY",
                    "test-admin",
                    "test-admin",
                    "id documents match (reported by: ops-1)"
                ),
                (
                    "SUSPEND",
                    "test-admin",
                    "test-admin",
                    "chargeback investigation (reported by: ops-2)"
                ),
                (
                    "REINSTATE",
                    "test-admin",
                    "test-admin",
                    "cleared (reported by: ops-3)"
                ),
            ],
            "on {}",
            db.backend()
        );
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn credits_apply_once_per_operation_id_and_refuse_unknown_or_suspended_creators() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, _sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        let mut gifting = c.gifting.clone();
        register(&c, "ann").await;

        let credit = gifting
            .credit_diamonds(credit_request("saga-1", "ann", 99))
            .await
            .unwrap()
            .into_inner()
            .credit
            .unwrap();
        assert_eq!(credit.diamonds, 49, "floor(99 × 5000 / 10000)");
        // The same operation id and parameters under another idempotency key: the
        // original credit, applied once.
        let mut retry = credit_request("saga-1", "ann", 99);
        retry.idempotency_key = "another-key".into();
        let replay = gifting
            .credit_diamonds(retry)
            .await
            .unwrap()
            .into_inner()
            .credit
            .unwrap();
        assert_eq!(replay, credit, "on {}", db.backend());
        let mut ann = c.creator("ann");
        let b = balance(&mut ann, "ann").await;
        assert_eq!((b.available_diamonds, b.lifetime_earned_diamonds), (49, 49));

        // The same operation id with other parameters is refused.
        let mut other = credit_request("saga-1", "ann", 100);
        other.idempotency_key = "third-key".into();
        let reused = gifting.credit_diamonds(other).await.unwrap_err();
        assert_eq!(reused.code(), Code::AlreadyExists);
        assert_eq!(reason(&reused), "OPERATION_ID_REUSED");
        // …and so is the same idempotency key with other parameters.
        let reused_key = gifting
            .credit_diamonds(credit_request("saga-1", "ann", 101))
            .await
            .unwrap_err();
        assert_eq!(reason(&reused_key), "IDEMPOTENCY_KEY_REUSED");

        // Unknown or suspended creators: a permanent refusal, so the gift saga compensates.
        let unknown = gifting
            .credit_diamonds(credit_request("saga-2", "nobody", 10))
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::FailedPrecondition);
        assert_eq!(reason(&unknown), "CREATOR_NOT_FOUND");
        let mut admin = c.admin.clone();
        admin
            .suspend_creator(pb::SuspendCreatorRequest {
                idempotency_key: "s".into(),
                creator_id: "ann".into(),
                actor: "ops".into(),
                reason: "fraud review".into(),
            })
            .await
            .unwrap();
        let suspended = gifting
            .credit_diamonds(credit_request("saga-3", "ann", 10))
            .await
            .unwrap_err();
        assert_eq!(suspended.code(), Code::FailedPrecondition);
        assert_eq!(reason(&suspended), "CREATOR_SUSPENDED");
        // A retry of a credit recorded before the suspension still answers the original.
        let mut late_retry = credit_request("saga-1", "ann", 99);
        late_retry.idempotency_key = "late".into();
        assert_eq!(
            gifting
                .credit_diamonds(late_retry)
                .await
                .unwrap()
                .into_inner()
                .credit
                .unwrap(),
            credit
        );
        admin
            .reinstate_creator(pb::ReinstateCreatorRequest {
                idempotency_key: "r".into(),
                creator_id: "ann".into(),
                actor: "ops".into(),
                reason: "cleared".into(),
            })
            .await
            .unwrap();

        // A gift worth less than one diamond is recorded, moving nothing.
        let zero = gifting
            .credit_diamonds(credit_request("saga-4", "ann", 1))
            .await
            .unwrap()
            .into_inner()
            .credit
            .unwrap();
        assert_eq!(zero.diamonds, 0);

        // Concurrent duplicates of one operation under different keys: credited once.
        let calls = (0..16).map(|i| {
            let mut gifting = gifting.clone();
            let mut request = credit_request("saga-5", "ann", 1_000);
            request.idempotency_key = format!("dup-{i}");
            tokio::spawn(async move { gifting.credit_diamonds(request).await })
        });
        for call in calls {
            let credit = call.await.unwrap().unwrap().into_inner().credit.unwrap();
            assert_eq!(credit.diamonds, 500, "on {}", db.backend());
        }
        let b = balance(&mut ann, "ann").await;
        assert_eq!(b.available_diamonds, 549, "on {}", db.backend());

        // Earnings: newest first, page by page, with their saga references.
        for (i, stream) in ["s-a", "s-b", "s-a"].iter().enumerate() {
            let mut request = credit_request(&format!("saga-s{i}"), "ann", 10);
            request.stream_id = (*stream).into();
            gifting.credit_diamonds(request).await.unwrap();
        }
        let mut ops = Vec::new();
        let mut token = String::new();
        loop {
            let page = ann
                .list_earnings(pb::ListEarningsRequest {
                    creator_id: "ann".into(),
                    stream_id: String::new(),
                    page_size: 2,
                    page_token: token.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            assert!(page.credits.len() <= 2);
            ops.extend(page.credits.into_iter().map(|c| c.operation_id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(ops.len(), 6, "{ops:?} on {}", db.backend());
        let mut sorted = ops.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 6, "no credit twice: {ops:?}");
        assert_eq!(
            ops.last().map(String::as_str),
            Some("saga-1"),
            "oldest last"
        );
        let stream_a = ann
            .list_earnings(pb::ListEarningsRequest {
                creator_id: "ann".into(),
                stream_id: "s-a".into(),
                page_size: 0,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .credits;
        assert_eq!(
            stream_a
                .iter()
                .map(|c| c.operation_id.as_str())
                .collect::<Vec<_>>(),
            ["saga-s2", "saga-s0"]
        );

        // The audit view: by operation id (unknown ids left out), or every credit in order.
        let by_id = admin
            .list_credits(pb::ListCreditsRequest {
                operation_ids: vec!["saga-5".into(), "saga-2".into(), "saga-1".into()],
                page_size: 0,
                page_token: String::new(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .credits;
        assert_eq!(
            by_id
                .iter()
                .map(|c| c.operation_id.as_str())
                .collect::<Vec<_>>(),
            ["saga-1", "saga-5"]
        );
        let all = admin
            .list_credits(pb::ListCreditsRequest {
                operation_ids: vec![],
                page_size: 500,
                page_token: String::new(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .credits;
        assert_eq!(all.len(), 6);
        assert_eq!(all[0].operation_id, "saga-1", "oldest first");
        let summary = assert_ledger_sound(&c, &db).await;
        assert_eq!(summary.credit_count, 6);
        assert_eq!(summary.credited_diamonds, 49 + 500 + 15);
        assert_eq!(
            kind_balance(&summary, pb::AccountKind::GiftIssuance),
            -(49 + 500 + 15)
        );
        running.stop().await.unwrap();
    }
}

/// One page of a list: the ids served, and the next page's token.
type Page = Result<(Vec<String>, String), tonic::Status>;

async fn earnings_page(mut client: PayoutClient, page_size: i32, page_token: String) -> Page {
    let request = pb::ListEarningsRequest {
        creator_id: "ann".into(),
        stream_id: String::new(),
        page_size,
        page_token,
    };
    let page = client.list_earnings(request).await?.into_inner();
    let ids = page.credits.into_iter().map(|c| c.operation_id).collect();
    Ok((ids, page.next_page_token))
}

async fn credits_page(admin: PayoutClient, page_size: i32, page_token: String) -> Page {
    credits_in(admin, (None, None), page_size, page_token).await
}

/// A page of the credits created in `[start_ms, end_ms)` (either bound open).
async fn credits_in(
    mut admin: PayoutClient,
    (start_ms, end_ms): (Option<i64>, Option<i64>),
    page_size: i32,
    page_token: String,
) -> Page {
    let at = |ms: i64| prost_types::Timestamp {
        seconds: ms.div_euclid(1_000),
        nanos: (ms.rem_euclid(1_000) * 1_000_000) as i32,
    };
    let request = pb::ListCreditsRequest {
        operation_ids: vec![],
        page_size,
        page_token,
        start_time: start_ms.map(at),
        end_time: end_ms.map(at),
    };
    let page = admin.list_credits(request).await?.into_inner();
    let ids = page.credits.into_iter().map(|c| c.operation_id).collect();
    Ok((ids, page.next_page_token))
}

/// PAID payouts of `creator_id` (every creator's when empty).
async fn paid_page(
    mut client: PayoutClient,
    creator_id: &str,
    page_size: i32,
    token: String,
) -> Page {
    let request = pb::ListPayoutsRequest {
        creator_id: creator_id.into(),
        state: pb::PayoutState::Paid as i32,
        page_size,
        page_token: token,
    };
    let page = client.list_payouts(request).await?.into_inner();
    let ids = page.payouts.into_iter().map(|p| p.payout_id).collect();
    Ok((ids, page.next_page_token))
}

/// Every page of a list, `page_size` at a time: the ids in the order served. Each page is
/// full but the last, and the last one has no next token.
async fn walk<F, Fut>(page_size: i32, mut fetch: F) -> Vec<String>
where
    F: FnMut(i32, String) -> Fut,
    Fut: Future<Output = Page>,
{
    let mut ids = Vec::new();
    let mut token = String::new();
    for _ in 0..100 {
        let (page, next) = fetch(page_size, token).await.unwrap();
        assert!(
            page.len() <= page_size as usize,
            "page of {page_size}: {page:?}"
        );
        ids.extend(page.iter().cloned());
        if next.is_empty() {
            return ids;
        }
        assert_eq!(
            page.len(),
            page_size as usize,
            "only the last page is short"
        );
        token = next;
    }
    panic!("more than 100 pages of {page_size}: {ids:?}");
}

/// Sets the creation time of the `table` rows whose `column` is `id`, straight in the
/// service's database: rows created within one test rarely share a millisecond by chance.
async fn set_created_at(db: &TestDatabase, table: &str, column: &str, at: &[(&str, i64)]) {
    let store = Db::connect(db.url(), &DbOptions::default()).await.unwrap();
    let sql = format!("UPDATE {table} SET created_at_ms = $1 WHERE {column} = $2");
    for (id, ms) in at {
        let done = ovation_store::sqlx::query(ovation_store::sqlx::AssertSqlSafe(sql.clone()))
            .bind(*ms)
            .bind(*id)
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1, "{table} {id}");
    }
    store.close().await;
}

#[tokio::test]
async fn every_list_pages_through_ties_once_in_order_and_refuses_foreign_tokens() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, _sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        let ann = c.creator("ann");
        verified_creator(&c, "ann", "sandbox-ok").await;

        // Seven credits: five at one millisecond, the newest with the smallest id and the
        // oldest with the largest, credited out of order.
        for op in ["t-d", "t-a", "t-f", "t-z", "t-b", "t-e", "t-c"] {
            earn(&c, op, "ann", 1_000).await;
        }
        let times = [
            ("t-a", 3_000),
            ("t-b", 2_000),
            ("t-c", 2_000),
            ("t-d", 2_000),
            ("t-e", 2_000),
            ("t-f", 2_000),
            ("t-z", 1_000),
        ];
        set_created_at(&db, "credits", "operation_id", &times).await;
        let oldest_first = ["t-z", "t-b", "t-c", "t-d", "t-e", "t-f", "t-a"];
        let newest_first: Vec<&str> = oldest_first.iter().rev().copied().collect();
        for size in [1, 2, 3, 6, 7, 8] {
            let earnings = walk(size, |n, token| earnings_page(ann.clone(), n, token)).await;
            assert_eq!(
                earnings,
                newest_first,
                "ListEarnings by {size} on {}",
                db.backend()
            );
            let credits = walk(size, |n, token| credits_page(c.admin.clone(), n, token)).await;
            assert_eq!(
                credits,
                oldest_first,
                "ListCredits by {size} on {}",
                db.backend()
            );
        }

        // A window of creation times, kept across pages: [2000, 3000) holds the five ties.
        for size in [1, 2, 5, 6] {
            let window = (Some(2_000), Some(3_000));
            let listed = walk(size, |n, token| {
                credits_in(c.admin.clone(), window, n, token)
            });
            assert_eq!(
                listed.await,
                oldest_first[1..6],
                "ListCredits in [2000, 3000) by {size} on {}",
                db.backend()
            );
        }
        let from_ties = walk(3, |n, token| {
            credits_in(c.admin.clone(), (Some(2_000), None), n, token)
        });
        assert_eq!(
            from_ties.await,
            oldest_first[1..],
            "start_time is inclusive"
        );
        let before_ties = walk(3, |n, token| {
            credits_in(c.admin.clone(), (None, Some(2_000)), n, token)
        });
        assert_eq!(before_ties.await, ["t-z"], "end_time is exclusive");
        let empty = credits_in(
            c.admin.clone(),
            (Some(2_000), Some(2_000)),
            0,
            String::new(),
        )
        .await
        .expect_err("an empty window is refused");
        assert_eq!(violated_fields(&empty), ["end_time"]);
        let with_ids = c
            .admin
            .clone()
            .list_credits(pb::ListCreditsRequest {
                operation_ids: vec!["t-a".into()],
                start_time: Some(prost_types::Timestamp::default()),
                ..Default::default()
            })
            .await
            .expect_err("ids and a window do not mix");
        assert_eq!(violated_fields(&with_ids), ["start_time"]);

        // Five payouts, paid: four at one millisecond, and the last requested (the largest
        // id) older than them all.
        let mut payouts = Vec::new();
        for i in 0..5 {
            let payout =
                requested_payout(&mut ann.clone(), &format!("cash-{i}"), "ann", 1_000).await;
            settled(&ann, &payout.payout_id).await;
            payouts.push(payout.payout_id);
        }
        let mut times: Vec<(&str, i64)> = payouts.iter().map(|id| (id.as_str(), 5_000)).collect();
        times[4].1 = 4_000;
        set_created_at(&db, "payouts", "payout_id", &times).await;
        let mut newest_first: Vec<String> = payouts[..4].to_vec();
        newest_first.sort_by(|a, b| b.cmp(a));
        newest_first.push(payouts[4].clone());
        for size in [1, 2, 4, 5, 6] {
            for (creator, client) in [("ann", &ann), ("", &c.admin)] {
                let listed = walk(size, |n, token| {
                    paid_page(client.clone(), creator, n, token)
                });
                assert_eq!(
                    listed.await,
                    newest_first,
                    "ListPayouts of {creator:?} by {size} on {}",
                    db.backend()
                );
            }
        }

        // A token from another list (the catalog's gifts, by id; a list by sequence
        // number) or garbage is refused, naming page_token, on every list.
        let gifts = CatalogServiceClient::with_interceptor(
            catalog.running.channel().await,
            Bearer::admin(),
        )
        .list_gifts(catalog_pb::ListGiftsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
        assert!(!gifts.next_page_token.is_empty(), "the demo has two gifts");
        let foreign = [
            gifts.next_page_token,
            ovation_types::PageToken::after("42"),
            ovation_types::PageToken::after("x:po_1"),
            "zz".into(),
            "abc".into(),
            "not a token".into(),
        ];
        for token in foreign {
            let refused = [
                (
                    "ListEarnings",
                    earnings_page(ann.clone(), 0, token.clone()).await,
                ),
                (
                    "ListPayouts",
                    paid_page(ann.clone(), "ann", 0, token.clone()).await,
                ),
                (
                    "ListCredits",
                    credits_page(c.admin.clone(), 0, token.clone()).await,
                ),
            ];
            for (rpc, result) in refused {
                let status = result.expect_err(&format!("{rpc} takes {token:?}"));
                assert_eq!(status.code(), Code::InvalidArgument, "{rpc} {token:?}");
                assert_eq!(violated_fields(&status), ["page_token"], "{rpc} {token:?}");
            }
        }
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn refused_payout_requests_hold_nothing() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        verified_creator(&c, "ann", "sandbox-ok").await;
        earn(&c, "g1", "ann", 1_500).await;
        let mut ann = c.creator("ann");
        let before = balance(&mut ann, "ann").await;
        let entries_before = assert_ledger_sound(&c, &db).await.journal_entry_count;

        let below = ann
            .request_payout(request_payout("p1", "ann", 999))
            .await
            .unwrap_err();
        assert_eq!(
            below.code(),
            Code::FailedPrecondition,
            "on {}",
            db.backend()
        );
        assert_eq!(reason(&below), "BELOW_PAYOUT_MINIMUM");
        let over = ann
            .request_payout(request_payout("p2", "ann", 1_501))
            .await
            .unwrap_err();
        assert_eq!(over.code(), Code::FailedPrecondition);
        assert_eq!(reason(&over), "INSUFFICIENT_DIAMONDS");
        assert!(over.message().contains("1500"), "{}", over.message());

        // Not verified: no account, pending, rejected.
        register(&c, "bob").await;
        earn(&c, "g2", "bob", 2_000).await;
        let mut bob = c.creator("bob");
        let no_account = bob
            .request_payout(request_payout("p3", "bob", 1_000))
            .await
            .unwrap_err();
        assert_eq!(reason(&no_account), "PAYOUT_ACCOUNT_NOT_VERIFIED");
        set_account(&c, "bob", "sandbox-ok").await;
        let pending = bob
            .request_payout(request_payout("p4", "bob", 1_000))
            .await
            .unwrap_err();
        assert_eq!(reason(&pending), "PAYOUT_ACCOUNT_NOT_VERIFIED");
        // Suspended.
        let mut admin = c.admin.clone();
        admin
            .suspend_creator(pb::SuspendCreatorRequest {
                idempotency_key: "s".into(),
                creator_id: "ann".into(),
                actor: "ops".into(),
                reason: "review".into(),
            })
            .await
            .unwrap();
        let suspended = ann
            .request_payout(request_payout("p5", "ann", 1_000))
            .await
            .unwrap_err();
        assert_eq!(reason(&suspended), "CREATOR_SUSPENDED");
        // Unknown creator (an admin may ask for anyone).
        let unknown = admin
            .request_payout(request_payout("p6", "nobody", 1_000))
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound);

        assert_eq!(balance(&mut ann, "ann").await, before, "nothing held");
        let b = balance(&mut bob, "bob").await;
        assert_eq!((b.available_diamonds, b.held_diamonds), (2_000, 0));
        let payouts = admin
            .list_payouts(pb::ListPayoutsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .payouts;
        assert!(payouts.is_empty(), "no payout recorded on {}", db.backend());
        let summary = assert_ledger_sound(&c, &db).await;
        assert_eq!(
            summary.journal_entry_count,
            entries_before + 1,
            "only bob's credit"
        );
        assert!(sandbox.payments().is_empty());
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn concurrent_payouts_never_together_exceed_the_balance() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;

        // Two at once on 1500 diamonds: exactly one is held.
        verified_creator(&c, "ann", "sandbox-ok").await;
        earn(&c, "g-ann", "ann", 1_500).await;
        let ann = c.creator("ann");
        let two = (0..2).map(|i| {
            let mut ann = ann.clone();
            tokio::spawn(async move {
                ann.request_payout(request_payout(&format!("two-{i}"), "ann", 1_000))
                    .await
            })
        });
        let mut ok = 0;
        for call in two {
            match call.await.unwrap() {
                Ok(_) => ok += 1,
                Err(s) => assert_eq!(reason(&s), "INSUFFICIENT_DIAMONDS", "{s:?}"),
            }
        }
        assert_eq!(ok, 1, "on {}", db.backend());

        // Twenty at once on 5500 diamonds: exactly five are held.
        verified_creator(&c, "bob", "sandbox-ok").await;
        earn(&c, "g-bob", "bob", 5_500).await;
        let bob = c.creator("bob");
        let twenty = (0..20).map(|i| {
            let mut bob = bob.clone();
            tokio::spawn(async move {
                bob.request_payout(request_payout(&format!("twenty-{i}"), "bob", 1_000))
                    .await
            })
        });
        let mut held = Vec::new();
        for call in twenty {
            match call.await.unwrap() {
                Ok(reply) => held.push(reply.into_inner().payout.unwrap().payout_id),
                Err(s) => assert_eq!(reason(&s), "INSUFFICIENT_DIAMONDS", "{s:?}"),
            }
        }
        assert_eq!(held.len(), 5, "on {}", db.backend());
        for id in &held {
            let payout = settled(&bob, id).await;
            assert_eq!(payout.state, pb::PayoutState::Paid as i32);
        }
        let mut bob = bob.clone();
        let b = balance(&mut bob, "bob").await;
        assert_eq!(
            (
                b.available_diamonds,
                b.held_diamonds,
                b.paid_out_diamonds,
                b.lifetime_earned_diamonds
            ),
            (500, 0, 5_000, 5_500),
            "on {}",
            db.backend()
        );
        let paid_to_bob: Vec<_> = sandbox
            .payments()
            .into_iter()
            .filter(|p| p.creator_id == "bob")
            .collect();
        assert_eq!(paid_to_bob.len(), 5);
        assert!(paid_to_bob.iter().all(|p| p.amount.amount_minor() == 500));
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_paid_payout_captures_the_hold_at_the_rate_recorded_when_requested() {
    for db in databases().await {
        // A catalog of its own per run: this test changes the economy.
        let catalog = start_catalog().await;
        let mut catalog_admin = CatalogServiceClient::with_interceptor(
            catalog.running.channel().await,
            Bearer::admin(),
        );
        let (running, sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        verified_creator(&c, "ann", "sandbox-ok").await;
        earn(&c, "g1", "ann", 5_000).await;
        let mut ann = c.creator("ann");

        let requested = requested_payout(&mut ann, "cash-1", "ann", 1_999).await;
        assert_eq!(requested.state, pb::PayoutState::Held as i32, "as recorded");
        assert_eq!(requested.diamonds, 1_999);
        let amount = requested.amount.clone().unwrap();
        assert_eq!(
            (amount.currency_code.as_str(), amount.amount_minor),
            ("USD", 999)
        );
        assert_eq!(requested.diamonds_per_payout_unit, 1_000);
        assert_eq!(requested.account_reference, "sandbox-ok");
        let version = requested.economy_version;
        let paid = settled(&ann, &requested.payout_id).await;
        assert_eq!(
            paid.state,
            pb::PayoutState::Paid as i32,
            "on {}",
            db.backend()
        );
        assert!(!paid.provider_reference.is_empty());
        assert!(paid.settle_time.is_some());
        let b = balance(&mut ann, "ann").await;
        assert_eq!(
            (b.available_diamonds, b.held_diamonds, b.paid_out_diamonds),
            (3_001, 0, 1_999)
        );

        // A replay answers the payout as it is now, and pays nothing more.
        let replay = requested_payout(&mut ann, "cash-1", "ann", 1_999).await;
        assert_eq!(replay.payout_id, requested.payout_id);
        assert_eq!(replay.state, pb::PayoutState::Paid as i32);
        let reused = ann
            .request_payout(request_payout("cash-1", "ann", 2_000))
            .await
            .unwrap_err();
        assert_eq!(reused.code(), Code::AlreadyExists);
        assert_eq!(balance(&mut ann, "ann").await, b);
        assert_eq!(sandbox.payments().len(), 1);

        // A new rate applies to new payouts; the old one keeps what it recorded.
        let economy = catalog_admin
            .update_economy_parameters(catalog_pb::UpdateEconomyParametersRequest {
                idempotency_key: "rate-2".into(),
                payout_per_unit: Some(ovation_proto::common::Money {
                    currency_code: "USD".into(),
                    amount_minor: 700,
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .economy_parameters
            .unwrap();
        let second = requested_payout(&mut ann, "cash-2", "ann", 1_000).await;
        assert_eq!(second.economy_version, economy.version);
        assert_eq!(second.amount.unwrap().amount_minor, 700);
        // The version current when the first was requested (the suite's maturity-0 one).
        assert_eq!(version + 1, economy.version);
        assert_eq!(
            get_payout(&mut ann, &requested.payout_id)
                .await
                .economy_version,
            version
        );
        settled(&ann, &second.payout_id).await;

        let listed = ann
            .list_payouts(pb::ListPayoutsRequest {
                creator_id: "ann".into(),
                state: pb::PayoutState::Paid as i32,
                page_size: 1,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            listed.payouts[0].payout_id, second.payout_id,
            "newest first"
        );
        let rest = ann
            .list_payouts(pb::ListPayoutsRequest {
                creator_id: "ann".into(),
                state: pb::PayoutState::Paid as i32,
                page_size: 1,
                page_token: listed.next_page_token,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rest.payouts[0].payout_id, requested.payout_id);
        assert!(rest.next_page_token.is_empty());
        let held = ann
            .list_payouts(pb::ListPayoutsRequest {
                creator_id: "ann".into(),
                state: pb::PayoutState::Held as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(held.payouts.is_empty());

        let summary = assert_ledger_sound(&c, &db).await;
        assert_eq!(kind_balance(&summary, pb::AccountKind::PaidOut), 2_999);
        assert_eq!(kind_balance(&summary, pb::AccountKind::CreatorHeld), 0);
        assert_eq!(
            kind_balance(&summary, pb::AccountKind::Creator),
            5_000 - 2_999
        );
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_failed_provider_releases_the_hold_exactly() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        verified_creator(&c, "ann", "sandbox-fail").await;
        earn(&c, "g1", "ann", 2_345).await;
        let mut ann = c.creator("ann");
        let before = balance(&mut ann, "ann").await;
        let payout = requested_payout(&mut ann, "cash", "ann", 1_234).await;
        let released = settled(&ann, &payout.payout_id).await;
        assert_eq!(
            released.state,
            pb::PayoutState::Released as i32,
            "on {}",
            db.backend()
        );
        assert!(!released.failure_reason.is_empty());
        assert!(released.provider_reference.is_empty());
        assert_eq!(balance(&mut ann, "ann").await, before, "released exactly");
        assert!(sandbox.payments().is_empty());
        let summary = assert_ledger_sound(&c, &db).await;
        assert_eq!(kind_balance(&summary, pb::AccountKind::PaidOut), 0);
        // credit + mature (cashable at once: maturity 0) + hold + release
        assert_eq!(summary.journal_entry_count, 4);
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn transient_provider_failures_are_retried_until_paid() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        verified_creator(&c, "ann", "sandbox-transient-3").await;
        earn(&c, "g1", "ann", 1_000).await;
        let ann = c.creator("ann");
        let payout = requested_payout(&mut ann.clone(), "cash", "ann", 1_000).await;
        let paid = settled(&ann, &payout.payout_id).await;
        assert_eq!(
            paid.state,
            pb::PayoutState::Paid as i32,
            "on {}",
            db.backend()
        );
        assert_eq!(
            sandbox.calls(&payout.payout_id),
            4,
            "three failures, then paid"
        );
        assert_eq!(sandbox.payments().len(), 1);
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_restart_during_a_payout_ends_with_exactly_one_provider_payment() {
    let catalog = start_catalog().await;
    for db in databases().await {
        // The provider stands for an external system: it outlives the service.
        let sandbox = Arc::new(SandboxProvider::in_memory());
        let config = payout_config(db.url(), &catalog.running.endpoint(), sandbox.clone());
        let first = start_payout(config.clone()).await;
        let c = Clients::new(&first).await;
        // The provider accepts the transfer at once but answers only after ten minutes.
        verified_creator(&c, "ann", "sandbox-slow-600000").await;
        earn(&c, "g1", "ann", 3_000).await;
        let payout = requested_payout(&mut c.creator("ann"), "cash", "ann", 2_000).await;
        eventually("the provider call is in flight", || {
            let calls = sandbox.calls(&payout.payout_id);
            async move { (calls >= 1).then_some(()) }
        })
        .await;
        first.stop().await.unwrap();

        let second = start_payout(config).await;
        let c = Clients::new(&second).await;
        let ann = c.creator("ann");
        let paid = settled(&ann, &payout.payout_id).await;
        assert_eq!(
            paid.state,
            pb::PayoutState::Paid as i32,
            "on {}",
            db.backend()
        );
        assert!(
            sandbox.calls(&payout.payout_id) >= 2,
            "the payout was resumed after the restart"
        );
        let payments = sandbox.payments();
        assert_eq!(payments.len(), 1, "exactly one payment: {payments:?}");
        assert_eq!(payments[0].payout_id, payout.payout_id);
        let b = balance(&mut ann.clone(), "ann").await;
        assert_eq!(
            (b.available_diamonds, b.held_diamonds, b.paid_out_diamonds),
            (1_000, 0, 2_000),
            "captured once on {}",
            db.backend()
        );
        assert_ledger_sound(&c, &db).await;
        second.stop().await.unwrap();
    }
}

#[tokio::test]
async fn bad_inputs_are_refused_clearly_and_write_nothing() {
    let catalog = start_catalog().await;
    for db in databases().await {
        let (running, _sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        verified_creator(&c, "ann", "sandbox-ok").await;
        earn(&c, "g1", "ann", 2_000).await;
        register(&c, "bob").await;
        let mut ann = c.creator("ann");
        let mut admin = c.admin.clone();
        let mut gifting = c.gifting.clone();
        let before_balance = balance(&mut ann, "ann").await;
        let before = assert_ledger_sound(&c, &db).await;

        for diamonds in [0, -1, i64::MAX, 1_000_000_000_001] {
            let bad = ann
                .request_payout(request_payout(&format!("d{diamonds}"), "ann", diamonds))
                .await
                .unwrap_err();
            assert_eq!(bad.code(), Code::InvalidArgument, "{diamonds}");
            assert_eq!(violated_fields(&bad), ["diamonds"]);
        }
        let no_key = ann
            .request_payout(request_payout("", "ann", 1_000))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&no_key), ["idempotency_key"]);
        let long_key = ann
            .request_payout(request_payout(&"k".repeat(256), "ann", 1_000))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&long_key), ["idempotency_key"]);

        for coins in [0, -5, i64::MAX] {
            let bad = gifting
                .credit_diamonds(credit_request(&format!("c{coins}"), "ann", coins))
                .await
                .unwrap_err();
            assert_eq!(violated_fields(&bad), ["coins"], "{coins}");
        }
        let mut everything = credit_request(&"o".repeat(65), "has space", 10);
        everything.idempotency_key = String::new();
        everything.creator_share_bps = 10_001;
        everything.stream_id = "s".repeat(65);
        everything.gift_version = -1;
        let bad = gifting.credit_diamonds(everything).await.unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert_eq!(
            violated_fields(&bad),
            [
                "idempotency_key",
                "operation_id",
                "creator_id",
                "creator_share_bps",
                "stream_id",
                "gift_version"
            ]
        );

        let bad = admin
            .register_creator(pb::RegisterCreatorRequest {
                idempotency_key: "r".into(),
                creator_id: "x".repeat(65),
                display_name: "n".repeat(129),
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&bad), ["creator_id", "display_name"]);
        let bad = ann
            .set_payout_account(pb::SetPayoutAccountRequest {
                idempotency_key: "a".into(),
                creator_id: "ann".into(),
                account_reference: "r".repeat(256),
                holder_name: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&bad), ["account_reference", "holder_name"]);
        let bad = admin
            .suspend_creator(pb::SuspendCreatorRequest {
                idempotency_key: "s".into(),
                creator_id: "ann".into(),
                actor: "a".repeat(129),
                reason: "r".repeat(501),
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&bad), ["actor", "reason"]);
        let bad = admin
            .suspend_creator(pb::SuspendCreatorRequest {
                idempotency_key: "s".into(),
                creator_id: "ann".into(),
                actor: "ops".into(),
                reason: "  ".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&bad), ["reason"]);
        let bad = ann
            .list_earnings(pb::ListEarningsRequest {
                creator_id: "ann".into(),
                stream_id: String::new(),
                page_size: 501,
                page_token: "zz".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&bad), ["page_size", "page_token"]);
        let bad = admin
            .list_credits(pb::ListCreditsRequest {
                operation_ids: vec!["a".into(); 501],
                page_size: 0,
                page_token: String::new(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&bad), ["operation_ids"]);
        let bad = admin
            .list_payouts(pb::ListPayoutsRequest {
                state: 42,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&bad), ["state"]);

        // Unknown things: NOT_FOUND (or the credit's permanent refusal).
        let missing = c
            .creator("nobody")
            .set_payout_account(pb::SetPayoutAccountRequest {
                idempotency_key: "m".into(),
                creator_id: "nobody".into(),
                account_reference: "sandbox-ok".into(),
                holder_name: "No Body".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        for status in [
            admin
                .get_diamond_balance(pb::GetDiamondBalanceRequest {
                    creator_id: "nobody".into(),
                })
                .await
                .unwrap_err(),
            admin
                .list_earnings(pb::ListEarningsRequest {
                    creator_id: "nobody".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err(),
            admin
                .get_payout(pb::GetPayoutRequest {
                    payout_id: "po_nope".into(),
                })
                .await
                .unwrap_err(),
            admin
                .suspend_creator(pb::SuspendCreatorRequest {
                    idempotency_key: "sn".into(),
                    creator_id: "nobody".into(),
                    actor: "ops".into(),
                    reason: "r".into(),
                })
                .await
                .unwrap_err(),
        ] {
            assert_eq!(status.code(), Code::NotFound, "{status:?}");
        }
        let unknown = gifting
            .credit_diamonds(credit_request("g-x", "nobody", 10))
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::FailedPrecondition);
        let no_account = admin
            .verify_payout_account(pb::VerifyPayoutAccountRequest {
                idempotency_key: "v".into(),
                creator_id: "bob".into(),
                decision: pb::VerificationStatus::Verified as i32,
                account_reference: String::new(),
                actor: "ops".into(),
                reason: "r".into(),
                account_version: 1,
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&no_account), "NO_PAYOUT_ACCOUNT");

        // Nothing was written by any of them.
        assert_eq!(balance(&mut ann, "ann").await, before_balance);
        let after = assert_ledger_sound(&c, &db).await;
        assert_eq!(after.journal_entry_count, before.journal_entry_count);
        assert_eq!(
            after.credit_count,
            before.credit_count,
            "on {}",
            db.backend()
        );
        let creator = creator(&mut ann, "ann").await;
        assert_eq!(creator.state, pb::CreatorState::Active as i32);
        assert_eq!(
            creator.payout_account.unwrap().verification_status,
            pb::VerificationStatus::Verified as i32
        );
        assert!(
            admin
                .list_payouts(pb::ListPayoutsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .payouts
                .is_empty()
        );
        running.stop().await.unwrap();
    }
}

#[tokio::test]
async fn a_catalog_that_cannot_be_reached_is_unavailable_and_nothing_is_held() {
    for db in databases().await {
        let catalog = start_catalog().await;
        let (running, _sandbox) = start(&db, &catalog).await;
        let c = Clients::new(&running).await;
        verified_creator(&c, "ann", "sandbox-ok").await;
        earn(&c, "g1", "ann", 3_000).await;
        let mut ann = c.creator("ann");
        let first = requested_payout(&mut ann, "cash-1", "ann", 1_000).await;
        settled(&ann, &first.payout_id).await;

        catalog.running.stop().await.unwrap();
        let refused = ann
            .request_payout(request_payout("cash-2", "ann", 1_000))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable, "on {}", db.backend());
        let b = balance(&mut ann, "ann").await;
        assert_eq!(
            (b.available_diamonds, b.held_diamonds, b.paid_out_diamonds),
            (2_000, 0, 1_000),
            "nothing held"
        );
        // A replay needs no rate: it answers the recorded payout, as it is now.
        let replay = requested_payout(&mut ann, "cash-1", "ann", 1_000).await;
        assert_eq!(replay.payout_id, first.payout_id);
        assert_eq!(replay.state, pb::PayoutState::Paid as i32);
        assert_ledger_sound(&c, &db).await;
        running.stop().await.unwrap();
    }
}
