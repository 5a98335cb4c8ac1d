//! Migrations 102 (maturity and clawbacks) and 103 (payout controls) rebuild tables with new
//! CHECKs: a database made by the earlier migrations keeps its rows and balances, on SQLite and
//! (when `OVATION_TEST_POSTGRES_URL` is set) PostgreSQL.

use ovation_payout::store;
use ovation_store::Db;
use ovation_store::sqlx;
use ovation_testkit::databases;
use ovation_types::ResourceId;
use sqlx::migrate::Migrator;

fn migrations_up_to(version: i64) -> Migrator {
    Migrator::with_migrations(
        ovation_payout::migrations()
            .iter()
            .filter(|m| m.version <= version)
            .cloned()
            .collect::<Vec<_>>(),
    )
}

#[tokio::test]
async fn ledger_rows_and_balances_survive_the_maturity_and_clawback_migration() {
    for test_db in databases().await {
        let backend = test_db.backend();
        let db = Db::connect(test_db.url(), &Default::default())
            .await
            .unwrap();
        db.migrate(&migrations_up_to(101)).await.unwrap();
        let mut conn = db.conn().await.unwrap();
        // ann as version 101 wrote her: credited 1500, 1000 of it held by a payout.
        for sql in [
            "INSERT INTO creators (creator_id, display_name, state, created_at_ms, updated_at_ms) \
             VALUES ('ann', 'Ann', 'ACTIVE', 1, 1)",
            "INSERT INTO ledger_accounts (account_id, kind, creator_id) VALUES \
             ('creator:ann', 'CREATOR', 'ann'), ('creator_held:ann', 'CREATOR_HELD', 'ann')",
            "INSERT INTO credits (operation_id, creator_id, coins, creator_share_bps, diamonds, \
             sender_user_id, stream_id, gift_id, gift_version, created_at_ms) \
             VALUES ('g1', 'ann', 3000, 5000, 1500, 'v', 's', 'rose', 1, 2)",
            "INSERT INTO journal_entries (entry_id, kind, creator_id, reference, created_at_ms) \
             VALUES ('credit:g1', 'CREDIT', 'ann', 'g1', 2), ('hold:p1', 'HOLD', 'ann', 'p1', 3)",
            "INSERT INTO postings (entry_id, account_id, amount_diamonds) VALUES \
             ('credit:g1', 'system:gift_issuance', -1500), ('credit:g1', 'creator:ann', 1500), \
             ('hold:p1', 'creator:ann', -1000), ('hold:p1', 'creator_held:ann', 1000)",
            "INSERT INTO creator_balances (creator_id, available_diamonds, held_diamonds, \
             lifetime_earned_diamonds, paid_out_diamonds) VALUES ('ann', 500, 1000, 1500, 0)",
        ] {
            sqlx::query(sql).execute(&mut *conn).await.unwrap();
        }
        let entries_before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM postings")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        drop(conn);

        db.migrate(&ovation_payout::migrations()).await.unwrap();
        let mut conn = db.conn().await.unwrap();
        let ann = ResourceId::parse("ann").unwrap();
        let balance = store::get_balance(&mut conn, &ann).await.unwrap().unwrap();
        assert_eq!(
            (
                balance.pending,
                balance.available,
                balance.held,
                balance.lifetime_earned,
                balance.debt
            ),
            (0, 500, 1_000, 1_500, 0),
            "on {backend}"
        );
        let credit = store::get_credits(&mut conn, &[&ResourceId::parse("g1").unwrap()])
            .await
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!((credit.diamonds, credit.pending), (1_500, 0), "matured");
        let after = store::ledger_summary(&mut conn).await.unwrap();
        let entries_after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM postings")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(
            (after.entries, entries_after),
            (2, entries_before),
            "on {backend}"
        );
        assert_eq!(after.total, 0);
        assert_eq!(
            (
                after.unbalanced_entries,
                after.negative_balances,
                after.balance_mismatches,
                after.lifetime_mismatches
            ),
            (0, 0, 0, 0),
            "on {backend}"
        );
        // The new accounts exist, and the new CHECKs hold: a pending credit of ann's posts.
        let entry = ovation_payout::domain::JournalEntry::credit(
            &ann,
            &ResourceId::parse("g2").unwrap(),
            10,
            0,
        );
        assert_eq!(
            store::post_entry(&mut conn, &entry).await.unwrap(),
            store::Posted::Yes,
            "on {backend}"
        );
        let raw = sqlx::query(
            "UPDATE creator_balances SET lifetime_earned_diamonds = 1 WHERE creator_id = 'ann'",
        )
        .execute(&mut *conn)
        .await;
        assert!(
            raw.is_err(),
            "the lifetime identity is a CHECK on {backend}"
        );
        drop(conn);
        db.close().await;
    }
}

#[tokio::test]
async fn payouts_survive_the_payout_controls_migration() {
    for test_db in databases().await {
        let backend = test_db.backend();
        let db = Db::connect(test_db.url(), &Default::default())
            .await
            .unwrap();
        db.migrate(&migrations_up_to(102)).await.unwrap();
        let mut conn = db.conn().await.unwrap();
        // As version 102 wrote them: one payout HELD and sent, one PAID.
        for sql in [
            "INSERT INTO creators (creator_id, display_name, state, created_at_ms, updated_at_ms) \
             VALUES ('ann', 'Ann', 'ACTIVE', 1, 1)",
            "INSERT INTO payouts (payout_id, creator_id, diamonds, currency_code, amount_minor, \
             economy_version, rate_amount_minor, diamonds_per_payout_unit, minimum_diamonds, \
             state, account_reference, provider_reference, failure_reason, attempts, \
             next_attempt_at_ms, attention, last_error, created_at_ms, updated_at_ms, \
             settled_at_ms, sent_at_ms, sent_in_debt) VALUES \
             ('p1', 'ann', 1000, 'USD', 500, 1, 500, 1000, 1000, 'HELD', 'sandbox-ok', '', '', \
              1, 5, 0, 'timeout', 2, 3, NULL, 3, 0), \
             ('p2', 'ann', 2000, 'USD', 1000, 1, 500, 1000, 1000, 'PAID', 'sandbox-ok', 'ref-2', \
              '', 1, 2, 0, '', 2, 4, 4, 3, 0)",
        ] {
            sqlx::query(sql).execute(&mut *conn).await.unwrap();
        }
        drop(conn);

        db.migrate(&ovation_payout::migrations()).await.unwrap();
        let mut conn = db.conn().await.unwrap();
        let held = store::get_payout(&mut conn, "p1").await.unwrap().unwrap();
        assert_eq!(
            (
                held.state,
                held.sent_at.map(|t| t.0),
                held.account_version,
                held.account_set_by.as_str(),
                held.review.is_none() && held.cancellation.is_none()
            ),
            (
                ovation_payout::domain::PayoutState::Held,
                Some(3),
                0,
                "",
                true
            ),
            "on {backend}"
        );
        let paid = store::get_payout(&mut conn, "p2").await.unwrap().unwrap();
        assert_eq!(
            (
                paid.state,
                paid.provider_reference.as_str(),
                paid.settled_at.map(|t| t.0)
            ),
            (ovation_payout::domain::PayoutState::Paid, "ref-2", Some(4)),
            "on {backend}"
        );
        // REVIEW is a state now, and a payout in review is never settled nor sent.
        let review = |id: &str, settled: &str, sent: &str| {
            format!(
                "INSERT INTO payouts (payout_id, creator_id, diamonds, currency_code, \
                 amount_minor, economy_version, rate_amount_minor, diamonds_per_payout_unit, \
                 minimum_diamonds, state, account_reference, provider_reference, failure_reason, \
                 attempts, next_attempt_at_ms, attention, last_error, created_at_ms, \
                 updated_at_ms, settled_at_ms, sent_at_ms) VALUES ('{id}', 'ann', 20000, 'USD', \
                 10000, 1, 500, 1000, 1000, 'REVIEW', 'sandbox-ok', '', '', 0, 6, 0, '', 6, 6, \
                 {settled}, {sent})"
            )
        };
        for (sql, allowed) in [
            (review("p3", "NULL", "NULL"), true),
            (review("p4", "7", "NULL"), false),
            (review("p5", "NULL", "7"), false),
        ] {
            let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut *conn)
                .await;
            assert_eq!(done.is_ok(), allowed, "{done:?} on {backend}");
        }
        drop(conn);
        db.close().await;
    }
}
