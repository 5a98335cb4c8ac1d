//! The wallet's migrations keep the rows of a database made by earlier versions, on SQLite
//! and (when `OVATION_TEST_POSTGRES_URL` is set) PostgreSQL.

use ovation_store::Db;
use ovation_testkit::databases;
use ovation_types::ResourceId;
use ovation_wallet::domain::AgeStatus;
use ovation_wallet::store;
use sqlx::Row;
use sqlx::migrate::Migrator;

/// Columns version 100 wrote: id, key, buyer, state, amount, coins, token, debt,
/// reversal time, update time.
type Recorded = (
    String,
    String,
    String,
    i64,
    i64,
    i64,
    String,
    i64,
    Option<i64>,
    i64,
);

/// What version 100 recorded of each purchase, by id.
async fn recorded(conn: &mut ovation_store::db::Conn) -> Vec<Recorded> {
    let rows = sqlx::query(
        "SELECT purchase_id, idempotency_key, user_id, state, amount_minor, package_coins, \
         payment_token, reversal_debt_coins, reversed_at_ms, updated_at_ms FROM purchases \
         ORDER BY purchase_id",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    rows.iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
                r.get(7),
                r.get(8),
                r.get(9),
            )
        })
        .collect()
}

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
/// existing accounts keep their minor flag and start unverified. 103 finds each credited
/// purchase's credit entry, and reversals made before it attribute nothing.
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
        // ann's purchase was credited: its entry in her ledger (103 finds it).
        sqlx::query(
            "INSERT INTO journal_entries (entry_id, user_id, user_seq, reason, \
             user_delta_coins, balance_after_coins, purchase_id, operation_id, saga_id, actor, \
             note, created_at_ms) VALUES ('e1', 'ann', 1, 1, 100, 100, 'p1', '', '', 'ann', '', 2)",
        )
        .execute(&mut *conn)
        .await
        .unwrap();
        drop(conn);
        let before = {
            let mut conn = db.conn().await.unwrap();
            recorded(&mut conn).await
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
        assert_eq!(
            recorded(&mut conn).await,
            before,
            "[{backend}] kept as they were"
        );
        let p1 = store::get_purchase(&mut conn, "p1").await.unwrap().unwrap();
        let p2 = store::get_purchase(&mut conn, "p2").await.unwrap().unwrap();
        assert_eq!(
            (p1.credited_seq, p2.credited_seq),
            (Some(1), None),
            "[{backend}] 103: a credited purchase knows its credit entry"
        );
        assert_eq!(
            p2.attribution,
            Default::default(),
            "[{backend}] 103: a reversal made before it attributes nothing"
        );
        assert_eq!(
            store::list_purchases(&mut conn, "ann", None, None, 10)
                .await
                .unwrap()
                .len(),
            1,
            "[{backend}] the buyer index answers"
        );
        let mut again = p1.clone();
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
