//! The wallet's migrations keep the rows of a database made by earlier versions, on SQLite
//! and (when `OVATION_TEST_POSTGRES_URL` is set) PostgreSQL.

use ovation_store::Db;
use ovation_testkit::databases;
use ovation_types::ResourceId;
use ovation_wallet::domain::AgeStatus;
use ovation_wallet::store;
use sqlx::migrate::Migrator;

/// The wallet's migrations up to and including `version`.
fn migrations_up_to(version: i64) -> Migrator {
    Migrator::with_migrations(
        ovation_wallet::migrations()
            .iter()
            .filter(|m| m.version <= version)
            .cloned()
            .collect::<Vec<_>>(),
    )
}

/// 101 rebuilds `purchases` with keys unique per buyer: purchases recorded under the
/// global uniqueness are all still there, unchanged, and afterwards another buyer may use
/// a taken key while the same buyer may not. 102 adds the accounts' verified adulthood:
/// existing accounts keep their minor flag and start unverified.
#[tokio::test]
async fn purchase_rows_survive_the_per_buyer_key_migration() {
    for test_db in databases().await {
        let backend = test_db.backend();
        let db = Db::connect(test_db.url(), &Default::default())
            .await
            .unwrap();
        db.migrate(&migrations_up_to(100)).await.unwrap();
        let mut conn = db.conn().await.unwrap();
        for (user, minor) in [("ann", 0), ("ben", 1)] {
            sqlx::query(
                "INSERT INTO accounts (user_id, minor, balance_coins, held_coins, debt_coins, \
                 entry_count, created_at_ms, updated_at_ms) VALUES ($1, $2, 0, 0, 0, 0, 1, 1)",
            )
            .bind(user)
            .bind(minor)
            .execute(&mut *conn)
            .await
            .unwrap();
        }
        for (id, key, user, state) in [("p1", "k1", "ann", 2), ("p2", "k2", "ben", 4)] {
            // The version-100 schema, written as version 100 wrote it.
            sqlx::query(
                "INSERT INTO purchases (purchase_id, idempotency_key, fingerprint, user_id, \
                 package_id, package_version, currency_code, amount_minor, package_coins, \
                 bonus_coins, promotion_id, promotion_version, payment_token, state, \
                 decline_reason, provider_reference, charge_attempts, next_attempt_at_ms, \
                 reversal_actor, reversal_reason, reversal_clawed_back_coins, \
                 reversal_debt_coins, reversed_at_ms, created_at_ms, updated_at_ms) \
                 VALUES ($1, $2, 'fp', $3, 'coins_100', 1, 'USD', 139, 100, 10, 'launch', 1, \
                 'tok', $4, '', 'ref', 1, 0, 'ops', 'why', 5, 105, 7, 2, 3)",
            )
            .bind(id)
            .bind(key)
            .bind(user)
            .bind(state)
            .execute(&mut *conn)
            .await
            .unwrap();
        }
        drop(conn);
        let before: Vec<_> = {
            let mut conn = db.conn().await.unwrap();
            let mut rows = Vec::new();
            for id in ["p1", "p2"] {
                rows.push(store::get_purchase(&mut conn, id).await.unwrap().unwrap());
            }
            rows
        };
        db.migrate(&ovation_wallet::migrations()).await.unwrap();
        let mut conn = db.conn().await.unwrap();
        for (user, minor) in [("ann", false), ("ben", true)] {
            let account = store::get_account(&mut conn, user).await.unwrap().unwrap();
            assert_eq!(
                account.age,
                AgeStatus {
                    minor,
                    adult_verified: false
                },
                "[{backend}] {user}"
            );
        }
        for row in &before {
            let after = store::get_purchase(&mut conn, row.purchase_id.as_str())
                .await
                .unwrap();
            assert_eq!(after.as_ref(), Some(row), "[{backend}] kept as it was");
        }
        assert_eq!(
            store::list_purchases(&mut conn, "ann", None, None, 10)
                .await
                .unwrap()
                .len(),
            1,
            "[{backend}] the buyer index answers"
        );
        let mut again = before[0].clone();
        again.purchase_id = ResourceId::parse("p3").unwrap();
        assert!(
            !store::insert_purchase(&mut conn, &again).await.unwrap(),
            "[{backend}] ann's key k1 stays taken for ann"
        );
        again.user_id = ResourceId::parse("ben").unwrap();
        assert!(
            store::insert_purchase(&mut conn, &again).await.unwrap(),
            "[{backend}] ben may use k1"
        );
        assert_eq!(
            store::get_purchase_by_key(&mut conn, "ben", "k1")
                .await
                .unwrap()
                .map(|p| p.purchase_id.into_string()),
            Some("p3".to_string())
        );
        drop(conn);
        db.close().await;
    }
}
