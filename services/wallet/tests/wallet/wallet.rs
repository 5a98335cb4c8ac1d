//! The wallet over real gRPC on loopback, against SQLite and (when
//! `OVATION_TEST_POSTGRES_URL` is set) PostgreSQL, with a real catalog beside it.

use ovation_proto::wallet as pb;
use ovation_testkit::{databases, reason, violated_fields};
use ovation_wallet::WalletSettings;
use ovation_wallet::payment::{TOKEN_DECLINE, TOKEN_LOST, TOKEN_OK};
use tonic::Code;

use crate::suite::*;

#[tokio::test]
async fn a_purchase_credits_package_and_bonus_once_per_key() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let mut alice = suite.user("alice").await;
        open_account(&mut alice, "alice").await;
        let first = buy(&mut alice, "alice", "buy-1", "coins_100", TOKEN_OK).await;
        assert_eq!(
            first.state,
            pb::PurchaseState::Completed as i32,
            "[{}] {first:?}",
            suite.backend
        );
        assert_eq!(
            (first.package_coins, first.bonus_coins, first.coins_credited),
            (100, 10, 110)
        );
        assert_eq!(first.promotion_id, "launch_bonus");
        assert_eq!(first.price.as_ref().unwrap().amount_minor, 139);
        let again = buy(&mut alice, "alice", "buy-1", "coins_100", TOKEN_OK).await;
        assert_eq!(
            again.purchase_id, first.purchase_id,
            "the key replays the purchase"
        );
        assert_eq!(
            balance(&mut alice, "alice").await.available_coins,
            110,
            "[{}] credited once",
            suite.backend
        );
        assert_eq!(suite.sandbox.charges().len(), 1, "charged once");

        let reused = alice
            .purchase_coins(purchase_request("alice", "buy-1", "coins_500", TOKEN_OK))
            .await
            .unwrap_err();
        assert_eq!(reused.code(), Code::AlreadyExists);

        let history = alice
            .list_transactions(pb::ListTransactionsRequest {
                user_id: "alice".into(),
                page_size: 10,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .transactions;
        let reasons: Vec<i32> = history.iter().map(|t| t.reason).collect();
        assert_eq!(
            reasons,
            [
                pb::TransactionReason::PromotionBonus as i32,
                pb::TransactionReason::Purchase as i32
            ],
            "newest first"
        );
        assert!(history.iter().all(|t| t.purchase_id == first.purchase_id));
        let mut admin = suite.admin().await;
        assert_ledger_sound(&mut admin, suite.backend).await;
        suite.stop().await;
    }
}

#[tokio::test]
async fn a_declined_card_credits_nothing() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let mut bob = suite.user("bob").await;
        open_account(&mut bob, "bob").await;
        let declined = buy(&mut bob, "bob", "buy-d", "coins_500", TOKEN_DECLINE).await;
        assert_eq!(
            declined.state,
            pb::PurchaseState::Declined as i32,
            "[{}]",
            suite.backend
        );
        assert_eq!(declined.decline_reason, "card_declined");
        assert_eq!(balance(&mut bob, "bob").await.posted_coins, 0);
        let mut admin = suite.admin().await;
        assert_eq!(
            summary(&mut admin).await.journal_entry_count,
            0,
            "nothing journaled"
        );
        suite.stop().await;
    }
}

/// The provider charged, the process stopped before crediting; the next process to
/// start credits exactly once and never charges again.
#[tokio::test]
async fn a_charge_whose_answer_was_lost_is_credited_once_after_a_restart() {
    for db in databases().await {
        let slow_retry = WalletSettings {
            charge_retry_base_ms: 1_000,
            ..WalletSettings::default()
        };
        let mut suite = Suite::start_with(&db, slow_retry).await;
        let backend = suite.backend;
        let mut carol = suite.user("carol").await;
        open_account(&mut carol, "carol").await;
        let pending = buy(&mut carol, "carol", "buy-lost", "coins_1000", TOKEN_LOST).await;
        assert_eq!(
            pending.state,
            pb::PurchaseState::Pending as i32,
            "[{}]",
            suite.backend
        );
        assert_eq!(
            suite.sandbox.charges_for(&pending.purchase_id),
            1,
            "the money was taken"
        );
        assert_eq!(
            balance(&mut carol, "carol").await.posted_coins,
            0,
            "but nothing credited yet"
        );

        // "Crash": stop the wallet before its retry, start a new one on the same database.
        suite.restart_wallet(WalletSettings::default()).await;
        let mut carol = suite.user("carol").await;
        let mut completed = None;
        for _ in 0..200 {
            let p = carol
                .get_purchase(pb::GetPurchaseRequest {
                    purchase_id: pending.purchase_id.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .purchase
                .unwrap();
            if p.state == pb::PurchaseState::Completed as i32 {
                completed = Some(p);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let completed = completed.unwrap_or_else(|| {
            panic!("[{backend}] the purchase never completed after the restart")
        });
        assert_eq!(completed.coins_credited, 1_100);
        assert_eq!(
            balance(&mut carol, "carol").await.posted_coins,
            1_100,
            "[{backend}] credited exactly once"
        );
        assert_eq!(
            suite.sandbox.charges().len(),
            1,
            "[{backend}] charged exactly once"
        );
        suite.stop().await;
    }
}

#[tokio::test]
async fn concurrent_debits_never_overdraw() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let mut dave = suite.user("dave").await;
        open_account(&mut dave, "dave").await;
        buy(&mut dave, "dave", "buy-100", "coins_100", TOKEN_OK).await; // 110 coins
        let mut gifting = suite.gifting().await;
        gifting.debit_coins(debit("pre", "dave", 10)).await.unwrap();
        assert_eq!(balance(&mut dave, "dave").await.available_coins, 100);

        let calls = (0..100).map(|i| {
            let mut gifting = gifting.clone();
            tokio::spawn(async move {
                gifting
                    .debit_coins(debit(&format!("op-{i}"), "dave", 10))
                    .await
            })
        });
        let mut ok = 0;
        for call in calls {
            match call.await.unwrap() {
                Ok(_) => ok += 1,
                Err(status) => {
                    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                    assert_eq!(reason(&status), "INSUFFICIENT_COINS");
                }
            }
        }
        assert_eq!(
            ok, 10,
            "[{}] exactly ten debits of 10 fit in 100",
            suite.backend
        );
        assert_eq!(balance(&mut dave, "dave").await.posted_coins, 0);
        let mut admin = suite.admin().await;
        assert_ledger_sound(&mut admin, suite.backend).await;
        suite.stop().await;
    }
}

#[tokio::test]
async fn refunds_happen_once_and_never_exceed_the_debit() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let mut erin = suite.user("erin").await;
        open_account(&mut erin, "erin").await;
        buy(&mut erin, "erin", "b", "coins_100", TOKEN_OK).await;
        let mut gifting = suite.gifting().await;
        gifting.debit_coins(debit("d1", "erin", 40)).await.unwrap();
        // Same operation id, same parameters, another key: the original debit.
        let mut again = debit("d1", "erin", 40);
        again.idempotency_key = "another-key".into();
        assert_eq!(
            gifting
                .debit_coins(again)
                .await
                .unwrap()
                .into_inner()
                .debit
                .unwrap()
                .coins,
            40
        );
        let conflict = gifting
            .debit_coins(pb::DebitCoinsRequest {
                idempotency_key: "k3".into(),
                ..debit("d1", "erin", 41)
            })
            .await
            .unwrap_err();
        assert_eq!(conflict.code(), Code::AlreadyExists);

        let refund = |op: &str, coins: Option<i64>| pb::RefundCoinsRequest {
            idempotency_key: format!("rk-{op}"),
            operation_id: op.into(),
            debit_operation_id: "d1".into(),
            coins,
            note: "saga compensation".into(),
        };
        let too_much = gifting
            .refund_coins(refund("r0", Some(41)))
            .await
            .unwrap_err();
        assert_eq!(reason(&too_much), "REFUND_EXCEEDS_DEBIT");
        let done = gifting
            .refund_coins(refund("r1", None))
            .await
            .unwrap()
            .into_inner()
            .refund
            .unwrap();
        assert_eq!(done.coins, 40);
        let replay = gifting
            .refund_coins(refund("r1", None))
            .await
            .unwrap()
            .into_inner()
            .refund
            .unwrap();
        assert_eq!(replay, done, "a retried refund is the same refund");
        let twice = gifting.refund_coins(refund("r2", None)).await.unwrap_err();
        assert_eq!(reason(&twice), "ALREADY_REFUNDED", "[{}]", suite.backend);
        let missing = gifting
            .refund_coins(pb::RefundCoinsRequest {
                debit_operation_id: "nope".into(),
                ..refund("r3", None)
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        assert_eq!(balance(&mut erin, "erin").await.posted_coins, 110);
        let mut admin = suite.admin().await;
        assert_ledger_sound(&mut admin, suite.backend).await;
        suite.stop().await;
    }
}

#[tokio::test]
async fn a_reversal_claws_back_and_leaves_spent_coins_as_debt_until_settled() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let mut frank = suite.user("frank").await;
        open_account(&mut frank, "frank").await;
        let purchase = buy(&mut frank, "frank", "b1", "coins_100", TOKEN_OK).await; // 110
        let mut gifting = suite.gifting().await;
        gifting
            .debit_coins(debit("spend", "frank", 100))
            .await
            .unwrap();
        let mut admin = suite.admin().await;
        let reversed = reverse(
            &mut admin,
            pb::ReversePurchaseRequest {
                idempotency_key: "rev-1".into(),
                purchase_id: purchase.purchase_id.clone(),
                actor: "ops-jane".into(),
                reason: "chargeback CB-123".into(),
            },
        )
        .await;
        let reversal = reversed.reversal.unwrap();
        assert_eq!(
            (reversal.clawed_back_coins, reversal.debt_coins),
            (10, 100),
            "[{}]",
            suite.backend
        );
        assert_eq!(
            reversal.actor, "test-admin",
            "the caller, not the request's actor"
        );
        let b = balance(&mut frank, "frank").await;
        assert_eq!((b.posted_coins, b.debt_coins), (0, 100));
        let blocked = gifting
            .debit_coins(debit("blocked", "frank", 1))
            .await
            .unwrap_err();
        assert_eq!(reason(&blocked), "ACCOUNT_IN_DEBT");
        let twice = admin
            .reverse_purchase(pb::ReversePurchaseRequest {
                idempotency_key: "rev-2".into(),
                purchase_id: purchase.purchase_id.clone(),
                actor: "ops-jane".into(),
                reason: "again".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(reason(&twice), "PURCHASE_NOT_COMPLETED");

        buy(&mut frank, "frank", "b2", "coins_100", TOKEN_OK).await; // +110, 100 settle the debt
        let b = balance(&mut frank, "frank").await;
        assert_eq!(
            (b.posted_coins, b.debt_coins),
            (10, 0),
            "[{}] the debt is settled",
            suite.backend
        );
        let history = frank
            .list_transactions(pb::ListTransactionsRequest {
                user_id: "frank".into(),
                page_size: 1,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            history.transactions[0].reason,
            pb::TransactionReason::DebtSettlement as i32
        );
        assert!(!history.next_page_token.is_empty());
        assert_ledger_sound(&mut admin, suite.backend).await;
        suite.stop().await;
    }
}

#[tokio::test]
async fn spend_caps_bind_at_once_when_lowered_and_later_when_raised() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let mut gina = suite.user("gina").await;
        open_account(&mut gina, "gina").await;
        buy(&mut gina, "gina", "b", "coins_500", TOKEN_OK).await;
        let set = |key: &str, daily: i64| pb::SetSpendingLimitsRequest {
            idempotency_key: key.into(),
            user_id: "gina".into(),
            caps: Some(pb::SpendingCaps {
                daily_spend_coins: Some(daily),
                ..Default::default()
            }),
            actor: "gina".into(),
            reason: String::new(),
        };
        gina.set_spending_limits(set("cap-50", 50)).await.unwrap();
        let mut gifting = suite.gifting().await;
        let over = gifting
            .debit_coins(debit("big", "gina", 60))
            .await
            .unwrap_err();
        assert_eq!(over.code(), Code::ResourceExhausted, "[{}]", suite.backend);
        assert_eq!(reason(&over), "SPEND_CAP_EXCEEDED");
        gifting
            .debit_coins(debit("fits", "gina", 50))
            .await
            .unwrap();
        let limits = gina
            .set_spending_limits(set("cap-1000", 1_000))
            .await
            .unwrap()
            .into_inner()
            .limits
            .unwrap();
        assert_eq!(
            limits.effective.unwrap().daily_spend_coins,
            Some(50),
            "raising waits"
        );
        assert_eq!(limits.pending.unwrap().daily_spend_coins, Some(1_000));
        assert_eq!(limits.usage.unwrap().spent_today_coins, 50);
        let still = gifting
            .debit_coins(debit("one-more", "gina", 1))
            .await
            .unwrap_err();
        assert_eq!(still.code(), Code::ResourceExhausted);

        // A purchase cap stops purchases too.
        let purchase_cap = pb::SetSpendingLimitsRequest {
            idempotency_key: "pcap".into(),
            user_id: "gina".into(),
            caps: Some(pb::SpendingCaps {
                daily_spend_coins: Some(50),
                daily_purchase_coins: Some(600),
                ..Default::default()
            }),
            actor: "guardian-1".into(),
            reason: "guardian".into(),
        };
        gina.set_spending_limits(purchase_cap).await.unwrap();
        let refused = gina
            .purchase_coins(purchase_request("gina", "b-capped", "coins_500", TOKEN_OK))
            .await
            .unwrap_err();
        assert_eq!(reason(&refused), "PURCHASE_CAP_EXCEEDED");
        suite.stop().await;
    }
}

#[tokio::test]
async fn minors_can_neither_buy_nor_spend() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let mut hal = suite.user("hal").await;
        open_account(&mut hal, "hal").await;
        buy(&mut hal, "hal", "b", "coins_100", TOKEN_OK).await;
        let mut admin = suite.admin().await;
        admin
            .set_account_minor(pb::SetAccountMinorRequest {
                idempotency_key: "minor".into(),
                user_id: "hal".into(),
                minor: true,
                actor: "ops-jane".into(),
                reason: "age check failed".into(),
            })
            .await
            .unwrap();
        let buying = hal
            .purchase_coins(purchase_request("hal", "b2", "coins_100", TOKEN_OK))
            .await
            .unwrap_err();
        assert_eq!(
            (buying.code(), reason(&buying).as_str()),
            (Code::FailedPrecondition, "MINOR_ACCOUNT")
        );
        let mut gifting = suite.gifting().await;
        let spending = gifting.debit_coins(debit("m", "hal", 1)).await.unwrap_err();
        assert_eq!(reason(&spending), "MINOR_ACCOUNT", "[{}]", suite.backend);
        suite.stop().await;
    }
}

#[tokio::test]
async fn holds_reserve_capture_release_and_expire() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let mut ivy = suite.user("ivy").await;
        open_account(&mut ivy, "ivy").await;
        buy(&mut ivy, "ivy", "b", "coins_100", TOKEN_OK).await; // 110
        let mut gifting = suite.gifting().await;
        gifting
            .reserve_coins(reserve("h1", "ivy", 50, 60))
            .await
            .unwrap();
        let b = balance(&mut ivy, "ivy").await;
        assert_eq!(
            (b.posted_coins, b.held_coins, b.available_coins),
            (110, 50, 60),
            "[{}]",
            suite.backend
        );
        let over = gifting
            .reserve_coins(reserve("h2", "ivy", 61, 60))
            .await
            .unwrap_err();
        assert_eq!(reason(&over), "INSUFFICIENT_COINS");
        let captured = gifting
            .capture_hold(pb::CaptureHoldRequest {
                idempotency_key: "cap-h1".into(),
                operation_id: "h1".into(),
                coins: Some(30),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(captured.debit.unwrap().coins, 30);
        let b = balance(&mut ivy, "ivy").await;
        assert_eq!(
            (b.posted_coins, b.held_coins),
            (80, 0),
            "the remainder was released"
        );
        gifting
            .reserve_coins(reserve("h3", "ivy", 20, 60))
            .await
            .unwrap();
        let released = gifting
            .release_hold(pb::ReleaseHoldRequest {
                idempotency_key: "rel-h3".into(),
                operation_id: "h3".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .hold
            .unwrap();
        assert_eq!(released.state, pb::HoldState::Released as i32);
        gifting
            .reserve_coins(reserve("h4", "ivy", 20, 1))
            .await
            .unwrap();
        let mut expired = false;
        for _ in 0..100 {
            let hold = hold(&mut gifting, "h4").await;
            if hold.state == pb::HoldState::Expired as i32 {
                expired = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(
            expired,
            "[{}] the recovery worker expires holds",
            suite.backend
        );
        assert_eq!(balance(&mut ivy, "ivy").await.held_coins, 0);
        let mut admin = suite.admin().await;
        assert_ledger_sound(&mut admin, suite.backend).await;
        suite.stop().await;
    }
}

#[tokio::test]
async fn bad_inputs_are_refused_and_write_nothing() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let mut jay = suite.user("jay").await;
        open_account(&mut jay, "jay").await;
        let mut gifting = suite.gifting().await;
        for coins in [0, -5, i64::MAX] {
            let s = gifting
                .debit_coins(debit("x", "jay", coins))
                .await
                .unwrap_err();
            assert_eq!(
                (s.code(), violated_fields(&s)),
                (Code::InvalidArgument, vec!["coins".to_string()]),
                "coins {coins}"
            );
        }
        let s = gifting
            .debit_coins(pb::DebitCoinsRequest {
                idempotency_key: String::new(),
                ..debit("x", "jay", 1)
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&s), ["idempotency_key"]);
        let s = gifting
            .debit_coins(debit(&"o".repeat(65), "jay", 1))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&s), ["operation_id"]);
        let s = gifting
            .debit_coins(pb::DebitCoinsRequest {
                note: "n".repeat(501),
                ..debit("x", "jay", 1)
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&s), ["note"]);
        let s = gifting
            .debit_coins(debit("x", "nobody", 1))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::NotFound);
        let unknown_package = jay
            .purchase_coins(purchase_request("jay", "bp", "coins_7", TOKEN_OK))
            .await
            .unwrap_err();
        assert_eq!(
            unknown_package.code(),
            Code::NotFound,
            "[{}]",
            suite.backend
        );
        let bad_currency = jay
            .purchase_coins(pb::PurchaseCoinsRequest {
                idempotency_key: "bc".into(),
                user_id: "jay".into(),
                package_id: "coins_100".into(),
                currency_code: "usd".into(),
                payment_token: String::new(),
                expected_price: None,
                payment_method: None,
            })
            .await
            .unwrap_err();
        assert_eq!(
            violated_fields(&bad_currency),
            ["currency_code", "payment_token"]
        );
        let mut admin = suite.admin().await;
        let s = summary(&mut admin).await;
        assert_eq!(
            s.journal_entry_count, 0,
            "[{}] nothing written",
            suite.backend
        );
        assert!(suite.sandbox.charges().is_empty());
        suite.stop().await;
    }
}

/// ListDebits' optional `[start_time, end_time)` filter (for the audit's time windows):
/// bounds are inclusive / exclusive, pages keep the filter, bad bounds are refused.
#[tokio::test]
async fn debits_are_listed_by_creation_time() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let mut kim = suite.user("kim").await;
        open_account(&mut kim, "kim").await;
        buy(&mut kim, "kim", "b", "coins_100", TOKEN_OK).await;
        let mut gifting = suite.gifting().await;
        let mut times = Vec::new();
        for op in ["w1", "w2", "w3"] {
            let d = gifting
                .debit_coins(debit(op, "kim", 5))
                .await
                .unwrap()
                .into_inner()
                .debit
                .unwrap();
            times.push(d.create_time.unwrap());
            // Distinct milliseconds, so each debit has its own instant.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let mut admin = suite.admin().await;
        let list = |start: Option<usize>, end: Option<usize>, size: i32, token: String| {
            pb::ListDebitsRequest {
                page_size: size,
                page_token: token,
                start_time: start.map(|i| times[i]),
                end_time: end.map(|i| times[i]),
                ..Default::default()
            }
        };
        let mut ids = async |request: pb::ListDebitsRequest| -> (Vec<String>, String) {
            let page = admin.list_debits(request).await.unwrap().into_inner();
            (
                page.debits.into_iter().map(|d| d.operation_id).collect(),
                page.next_page_token,
            )
        };
        let backend = suite.backend;
        assert_eq!(
            ids(list(None, None, 0, String::new())).await.0,
            ["w1", "w2", "w3"]
        );
        assert_eq!(
            ids(list(Some(1), None, 0, String::new())).await.0,
            ["w2", "w3"],
            "[{backend}] start_time is inclusive"
        );
        assert_eq!(
            ids(list(None, Some(2), 0, String::new())).await.0,
            ["w1", "w2"],
            "[{backend}] end_time is exclusive"
        );
        assert_eq!(
            ids(list(Some(1), Some(2), 0, String::new())).await.0,
            ["w2"]
        );
        // Pages keep the window.
        let (first, token) = ids(list(Some(0), Some(2), 1, String::new())).await;
        assert_eq!(first, ["w1"]);
        assert!(!token.is_empty());
        let (second, last) = ids(list(Some(0), Some(2), 1, token)).await;
        assert_eq!(second, ["w2"], "[{backend}]");
        assert!(last.is_empty(), "[{backend}] w3 is outside the window");

        let empty = admin
            .list_debits(list(Some(1), Some(1), 0, String::new()))
            .await
            .unwrap_err();
        assert_eq!(empty.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&empty), ["end_time"]);
        let with_ids = admin
            .list_debits(pb::ListDebitsRequest {
                operation_ids: vec!["w1".into()],
                start_time: Some(times[0]),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&with_ids), ["start_time"]);
        let bad = admin
            .list_debits(pb::ListDebitsRequest {
                start_time: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: -1,
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&bad), ["start_time"]);
        suite.stop().await;
    }
}

/// A purchase's idempotency key is its buyer's: another user choosing the same key buys
/// their own coins (not refused, not handed someone else's purchase); each user's retry
/// replays their own purchase; one user reusing a key for another purchase is refused.
#[tokio::test]
async fn purchase_keys_are_scoped_to_the_buyer() {
    for db in databases().await {
        let suite = Suite::start(&db).await;
        let backend = suite.backend;
        let mut pat = suite.user("pat").await;
        let mut quinn = suite.user("quinn").await;
        open_account(&mut pat, "pat").await;
        open_account(&mut quinn, "quinn").await;
        let pats = buy(&mut pat, "pat", "buy-1", "coins_100", TOKEN_OK).await;
        let quinns = buy(&mut quinn, "quinn", "buy-1", "coins_500", TOKEN_OK).await;
        for p in [&pats, &quinns] {
            assert_eq!(
                p.state,
                pb::PurchaseState::Completed as i32,
                "[{backend}] {p:?}"
            );
        }
        assert_ne!(pats.purchase_id, quinns.purchase_id, "[{backend}]");
        assert_eq!(quinns.user_id, "quinn");
        let replayed = buy(&mut pat, "pat", "buy-1", "coins_100", TOKEN_OK).await;
        assert_eq!(
            replayed.purchase_id, pats.purchase_id,
            "[{backend}] pat's retry"
        );
        let replayed = buy(&mut quinn, "quinn", "buy-1", "coins_500", TOKEN_OK).await;
        assert_eq!(
            replayed.purchase_id, quinns.purchase_id,
            "[{backend}] quinn's retry"
        );
        assert_eq!(balance(&mut pat, "pat").await.posted_coins, 110);
        assert_eq!(balance(&mut quinn, "quinn").await.posted_coins, 550);
        assert_eq!(suite.sandbox.charges().len(), 2, "[{backend}] two charges");
        let reused = quinn
            .purchase_coins(purchase_request("quinn", "buy-1", "coins_100", TOKEN_OK))
            .await
            .unwrap_err();
        assert_eq!(reused.code(), Code::AlreadyExists, "[{backend}]");
        let mut admin = suite.admin().await;
        assert_ledger_sound(&mut admin, backend).await;
        suite.stop().await;
    }
}
