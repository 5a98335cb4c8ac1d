//! Gauges read from a service's database (ledger totals, sagas in flight, payouts awaiting
//! attention), refreshed on a timer by one task per service.
//!
//! Every replica refreshes its own copy of the same figures, so in Prometheus aggregate
//! them with `max` (not `sum`) across a service's pods.

use std::future::Future;
use std::time::Duration;

use ovation_store::Db;

use crate::Shutdown;

/// Runs `refresh(db)` now and then every `interval_ms` until `shutdown`; `0` turns it off.
/// A failed refresh is logged and leaves the gauges as they were (a scrape shows the last
/// good figures, never half-updated ones from a failed pass).
pub fn spawn_refresher<F, Fut, E>(
    what: &'static str,
    interval_ms: u64,
    shutdown: Shutdown,
    db: Db,
    refresh: F,
) where
    F: Fn(Db) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display,
{
    if interval_ms == 0 {
        return;
    }
    // A floor, so a typo cannot turn a ledger-wide sum into a busy loop.
    let interval = Duration::from_millis(interval_ms.max(100));
    tokio::spawn(async move {
        loop {
            if let Err(e) = refresh(db.clone()).await {
                tracing::warn!(gauges = what, error = %e, "refreshing gauges failed; will retry");
            }
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    });
}
