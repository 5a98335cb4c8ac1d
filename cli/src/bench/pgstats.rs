//! What PostgreSQL says about itself: its settings for the report's header, and per
//! database the transactions (`pg_stat_database`: commits + rollbacks) and, when the
//! pg_stat_statements extension is loaded and created, the statements (sum of `calls`).
//!
//! PostgreSQL 15+ backends report their counts to the statistics when idle, at most every
//! 10 s ([`STATS_SETTLE`]); the bench waits that long before each reading.

use std::collections::BTreeMap;
use std::time::Duration;

use ovation_store::db::redact;
use sqlx::{Connection, Row};

/// How long a backend may hold its counts before PostgreSQL's statistics show them
/// (PGSTAT_IDLE_INTERVAL, 10 s), plus a margin.
pub const STATS_SETTLE: Duration = Duration::from_secs(11);
/// Longest a statistics query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Per database: transactions, and statements when pg_stat_statements can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbCounts {
    pub transactions: BTreeMap<String, u64>,
    /// `Err`: why there are no statement counts.
    pub statements: Result<BTreeMap<String, u64>, String>,
}

/// A connection to a PostgreSQL server for its statistics.
pub struct PgStats {
    conn: sqlx::PgConnection,
    url: String,
}

impl PgStats {
    pub async fn connect(server_url: &str) -> Result<PgStats, String> {
        let conn = tokio::time::timeout(QUERY_TIMEOUT, sqlx::PgConnection::connect(server_url))
            .await
            .map_err(|_| format!("PostgreSQL at {} did not answer", redact(server_url)))?
            .map_err(|e| format!("cannot reach PostgreSQL at {}: {e}", redact(server_url)))?;
        Ok(PgStats {
            conn,
            url: redact(server_url),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `PostgreSQL 15.20, fsync on, synchronous_commit on, shared_buffers 128MB,
    /// max_connections 100`.
    pub async fn settings(&mut self) -> Result<String, String> {
        let row = tokio::time::timeout(
            QUERY_TIMEOUT,
            sqlx::query(
                "SELECT current_setting('server_version'), current_setting('fsync'),
                        current_setting('synchronous_commit'), current_setting('shared_buffers'),
                        current_setting('max_connections')",
            )
            .fetch_one(&mut self.conn),
        )
        .await
        .map_err(|_| "the settings query timed out".to_owned())?
        .map_err(|e| e.to_string())?;
        let get = |i: usize| row.try_get::<String, _>(i).unwrap_or_default();
        Ok(format!(
            "PostgreSQL {}, fsync {}, synchronous_commit {}, shared_buffers {}, max_connections {}",
            get(0),
            get(1),
            get(2),
            get(3),
            get(4)
        ))
    }

    /// Which of `names` exist on the server.
    pub async fn existing(&mut self, names: &[String]) -> Result<Vec<String>, String> {
        let rows = tokio::time::timeout(
            QUERY_TIMEOUT,
            sqlx::query("SELECT datname FROM pg_database WHERE datname = ANY($1) ORDER BY 1")
                .bind(names)
                .fetch_all(&mut self.conn),
        )
        .await
        .map_err(|_| "the query timed out".to_owned())?
        .map_err(|e| e.to_string())?;
        Ok(rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>(0).ok())
            .collect())
    }

    /// Transactions and statements so far in each of `databases`.
    pub async fn counts(&mut self, databases: &[String]) -> Result<DbCounts, String> {
        let rows = tokio::time::timeout(
            QUERY_TIMEOUT,
            sqlx::query(
                "SELECT datname, (xact_commit + xact_rollback)::BIGINT
                 FROM pg_stat_database WHERE datname = ANY($1)",
            )
            .bind(databases)
            .fetch_all(&mut self.conn),
        )
        .await
        .map_err(|_| "the pg_stat_database query timed out".to_owned())?
        .map_err(|e| format!("pg_stat_database: {e}"))?;
        let transactions = rows
            .iter()
            .filter_map(|r| {
                let n: i64 = r.try_get(1).ok()?;
                Some((r.try_get::<String, _>(0).ok()?, u64::try_from(n).ok()?))
            })
            .collect();
        Ok(DbCounts {
            transactions,
            statements: self.statements(databases).await,
        })
    }

    async fn statements(&mut self, databases: &[String]) -> Result<BTreeMap<String, u64>, String> {
        let created = tokio::time::timeout(
            QUERY_TIMEOUT,
            sqlx::query("SELECT COUNT(*) FROM pg_extension WHERE extname = 'pg_stat_statements'")
                .fetch_one(&mut self.conn),
        )
        .await
        .map_err(|_| "the query timed out".to_owned())?
        .map_err(|e| e.to_string())?
        .try_get::<i64, _>(0)
        .map_err(|e| e.to_string())?;
        if created == 0 {
            return Err(STATEMENTS_HOW_TO.into());
        }
        let rows = tokio::time::timeout(
            QUERY_TIMEOUT,
            sqlx::query(
                "SELECT d.datname, SUM(s.calls)::BIGINT
                 FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
                 WHERE d.datname = ANY($1) GROUP BY d.datname",
            )
            .bind(databases)
            .fetch_all(&mut self.conn),
        )
        .await
        .map_err(|_| "the pg_stat_statements query timed out".to_owned())?
        .map_err(|e| format!("{STATEMENTS_HOW_TO} ({e})"))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let n: i64 = r.try_get(1).ok()?;
                Some((r.try_get::<String, _>(0).ok()?, u64::try_from(n).ok()?))
            })
            .collect())
    }

    pub async fn close(self) {
        let _ = self.conn.close().await;
    }
}

/// What to do for statement counts (README, "Benchmark").
pub const STATEMENTS_HOW_TO: &str = "n/a — load pg_stat_statements \
    (shared_preload_libraries = 'pg_stat_statements', restart, then \
    CREATE EXTENSION pg_stat_statements in the server URL's database)";

/// After minus before, per database (a database missing before counts from 0).
pub fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, &n)| {
            (
                k.clone(),
                n.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_differences_per_database() {
        let before = BTreeMap::from([
            ("ovation_wallet".to_owned(), 100),
            ("ovation_catalog".to_owned(), 7),
        ]);
        let after = BTreeMap::from([
            ("ovation_wallet".to_owned(), 4_100),
            ("ovation_catalog".to_owned(), 7),
            ("ovation_gifting".to_owned(), 9),
        ]);
        let d = delta(&before, &after);
        assert_eq!(d["ovation_wallet"], 4_000);
        assert_eq!(d["ovation_catalog"], 0);
        assert_eq!(d["ovation_gifting"], 9);
    }

    /// The statistics are read from a real server: transactions of a database show up
    /// (after the backend that ran them reports), statements say why they are missing
    /// or count.
    #[tokio::test]
    async fn a_real_server_reports_transactions_per_database() {
        let Some(db) = ovation_testkit::TestDatabase::postgres().await else {
            return;
        };
        let server =
            std::env::var("OVATION_TEST_POSTGRES_URL").expect("set when a database was made");
        let name = db
            .url()
            .rsplit('/')
            .next()
            .and_then(|n| n.split('?').next())
            .unwrap_or_default()
            .to_owned();
        let mut stats = PgStats::connect(&server).await.unwrap();
        let settings = stats.settings().await.unwrap();
        assert!(settings.starts_with("PostgreSQL "), "{settings}");
        assert!(settings.contains("fsync "), "{settings}");
        let names = vec![name.clone(), "ovation_no_such_database".to_owned()];
        assert_eq!(stats.existing(&names).await.unwrap(), vec![name.clone()]);
        let before = stats.counts(&names).await.unwrap();
        // Five transactions in the database; the backend reports them when it exits.
        let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
        for _ in 0..5 {
            sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
        }
        conn.close().await.unwrap();
        let mut after = stats.counts(&names).await.unwrap();
        for _ in 0..100 {
            if delta(&before.transactions, &after.transactions)[&name] >= 5 {
                break;
            }
            // The exiting backend's report is the synchronisation: poll for it.
            tokio::time::sleep(Duration::from_millis(100)).await;
            after = stats.counts(&names).await.unwrap();
        }
        assert!(delta(&before.transactions, &after.transactions)[&name] >= 5);
        match &after.statements {
            Ok(per_db) => assert!(per_db.get(&name).copied().unwrap_or(0) >= 5),
            Err(why) => assert!(why.contains("pg_stat_statements"), "{why}"),
        }
        stats.close().await;
    }
}
