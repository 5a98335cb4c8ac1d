//! The idempotency-key store on SQLite and PostgreSQL: keys are scoped to the caller and
//! the RPC, and keys stored before scoping still answer a retry of the same request.

use ovation_store::sqlx::migrate::Migrator;
use ovation_store::{Db, DbOptions, Fingerprint, KeyScope, Replayed, StoreError};
use ovation_testkit::databases;
use ovation_types::{IdempotencyKey, UnixMillis};

async fn migrated(url: &str) -> Db {
    let db = Db::connect(url, &DbOptions::default()).await.unwrap();
    db.migrate(&Migrator::with_migrations(Vec::new()))
        .await
        .unwrap();
    db
}

/// Runs an operation that answers `answer` (and counts that it ran) under a key.
async fn run(
    db: &Db,
    scope: &KeyScope,
    key: &str,
    request: &str,
    answer: &str,
) -> Result<(String, Replayed), StoreError> {
    let key = IdempotencyKey::parse(key).unwrap();
    let fingerprint = Fingerprint::of("Test", &request.to_owned());
    let answer = answer.to_owned();
    db.idempotent(scope, &key, &fingerprint, move |_conn| {
        Box::pin(async move { Ok::<_, StoreError>(answer) })
    })
    .await
}

#[tokio::test]
async fn two_callers_never_collide_on_a_key() {
    for database in databases().await {
        let db = migrated(database.url()).await;
        let alice = KeyScope::new("user:alice", "PurchaseCoins");
        let bob = KeyScope::new("user:bob", "PurchaseCoins");
        let backend = database.backend();

        let first = run(&db, &alice, "buy-1", "alice buys 100", "alice-1").await;
        assert_eq!(
            first.unwrap(),
            ("alice-1".into(), Replayed::No),
            "{backend}"
        );
        // Another user, the same key, another request: their own key, not a reuse.
        let other = run(&db, &bob, "buy-1", "bob buys 500", "bob-1").await;
        assert_eq!(other.unwrap(), ("bob-1".into(), Replayed::No), "{backend}");
        // Each still replays their own answer.
        let again = run(&db, &alice, "buy-1", "alice buys 100", "not run").await;
        assert_eq!(
            again.unwrap(),
            ("alice-1".into(), Replayed::Yes),
            "{backend}"
        );
        let again = run(&db, &bob, "buy-1", "bob buys 500", "not run").await;
        assert_eq!(again.unwrap(), ("bob-1".into(), Replayed::Yes), "{backend}");
        // The same caller, the same key, other parameters: a reuse, refused.
        let reused = run(&db, &alice, "buy-1", "alice buys 5000", "not run").await;
        assert!(
            matches!(reused, Err(StoreError::KeyReused)),
            "{backend}: {reused:?}"
        );
        // The same caller and key on another RPC is another scope.
        let account = KeyScope::new("user:alice", "CreateAccount");
        let other_rpc = run(&db, &account, "buy-1", "alice opens", "opened").await;
        assert_eq!(
            other_rpc.unwrap(),
            ("opened".into(), Replayed::No),
            "{backend}"
        );
        // A service identity is its own scope, even with a user's subject.
        let service = KeyScope::new("service:alice", "PurchaseCoins");
        let as_service = run(&db, &service, "buy-1", "alice buys 100", "service").await;
        assert_eq!(
            as_service.unwrap(),
            ("service".into(), Replayed::No),
            "{backend}"
        );
    }
}

#[tokio::test]
async fn a_key_stored_before_scoping_replays_only_the_same_request() {
    for database in databases().await {
        let db = migrated(database.url()).await;
        let backend = database.backend();
        // A row as the unscoped store left it (scope ''), its response "legacy".
        let fingerprint = Fingerprint::of("Test", &"alice buys 100".to_owned());
        let response = prost::Message::encode_to_vec(&"legacy".to_owned());
        ovation_store::sqlx::query(
            "INSERT INTO idempotency_keys (scope, idempotency_key, fingerprint, response, \
             created_at_ms) VALUES ('', 'old-1', $1, $2, $3)",
        )
        .bind(fingerprint.as_str())
        .bind(response)
        .bind(UnixMillis::now().0)
        .execute(db.pool())
        .await
        .unwrap();

        let alice = KeyScope::new("user:alice", "PurchaseCoins");
        let retry = run(&db, &alice, "old-1", "alice buys 100", "ran twice").await;
        assert_eq!(
            retry.unwrap(),
            ("legacy".into(), Replayed::Yes),
            "{backend}"
        );
        // Another caller's request under that key is not the old one: it runs.
        let bob = KeyScope::new("user:bob", "PurchaseCoins");
        let fresh = run(&db, &bob, "old-1", "bob buys 500", "bob-1").await;
        assert_eq!(fresh.unwrap(), ("bob-1".into(), Replayed::No), "{backend}");
    }
}

/// Concurrent duplicates of one scoped key run the operation once; the same key in another
/// scope runs beside them (PostgreSQL waits on the key's row; SQLite on the write lock).
#[tokio::test]
async fn concurrent_duplicates_of_a_scoped_key_run_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    for database in databases().await {
        let db = migrated(database.url()).await;
        let backend = database.backend();
        let runs = Arc::new(AtomicUsize::new(0));
        let mut calls = Vec::new();
        for i in 0..10 {
            let (db, runs) = (db.clone(), runs.clone());
            // Half alice's, half bob's: the same key, two scopes.
            let user = if i % 2 == 0 { "alice" } else { "bob" };
            calls.push(tokio::spawn(async move {
                let scope = KeyScope::new(&format!("user:{user}"), "PurchaseCoins");
                let key = IdempotencyKey::parse("buy-1").unwrap();
                let fingerprint = Fingerprint::of("Test", &format!("{user} buys 100"));
                db.idempotent(&scope, &key, &fingerprint, move |_conn| {
                    Box::pin(async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        Ok::<_, StoreError>(format!("{user}-1"))
                    })
                })
                .await
            }));
        }
        let mut answers = Vec::new();
        for call in calls {
            match call.await.unwrap() {
                Ok((answer, _)) => answers.push(answer),
                // A duplicate that finds the first still running is told to retry.
                Err(StoreError::KeyInProgress) => {}
                Err(e) => panic!("{backend}: {e:?}"),
            }
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2, "{backend}: once per scope");
        assert!(
            answers.iter().all(|a| a == "alice-1" || a == "bob-1"),
            "{backend}"
        );
    }
}
