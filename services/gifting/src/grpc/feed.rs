//! The WatchStreamGifts feed: a watcher's task that sends a stream's gift events from the
//! outbox, catch-up first, then live ones as they are published (woken at once by this
//! replica's sagas, by polling for other replicas'), and the feed's cursors.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ovation_proto::gifting as pb;
use ovation_server::ApiError;
use ovation_store::{Db, StoreError};
use ovation_types::{PageToken, UnixMillis};
use tokio::sync::mpsc;
use tonic::Status;

use super::to_proto;
use crate::saga::SagaEngine;
use crate::store;

/// Limits of the live feed.
#[derive(Clone, Copy, Debug)]
pub struct FeedLimits {
    /// Most concurrent WatchStreamGifts calls per replica.
    pub watchers_max: usize,
    /// Events buffered per watcher; a watcher that does not drain them within
    /// `slow_watcher_ms` is disconnected (it resumes from its last cursor).
    pub buffer_events: usize,
    pub slow_watcher_ms: u64,
    /// How often a watcher polls for events published by other replicas.
    pub poll_interval_ms: u64,
}

impl Default for FeedLimits {
    fn default() -> Self {
        FeedLimits {
            watchers_max: 1_000,
            buffer_events: 64,
            slow_watcher_ms: 5_000,
            poll_interval_ms: 500,
        }
    }
}

/// Events read from the database per batch.
const FEED_BATCH: i64 = 100;

/// Splits a cursor into stream and event number: it cannot occur in an id, so the pair
/// splits unambiguously.
const CURSOR_SEPARATOR: char = '\u{1f}';

/// The cursor of event `seq` of `stream`'s feed.
pub fn cursor(stream: &str, seq: i64) -> String {
    PageToken::after(&format!("{stream}{CURSOR_SEPARATOR}{seq}"))
}

/// The event number `raw` is a cursor of, if it is a cursor of `stream`'s feed.
pub fn seq_of_cursor(raw: &str, stream: &str) -> Option<i64> {
    let token = PageToken::parse(raw).ok()?;
    let (of, seq) = token.cursor()?.split_once(CURSOR_SEPARATOR)?;
    if of != stream {
        return None;
    }
    seq.parse::<i64>().ok()
}

/// A watcher's place under `watchers_max`, given back when the watcher ends; counted in
/// the watchers gauge while it lives.
pub struct WatcherSlot(Arc<AtomicUsize>, ovation_metrics::FeedWatcherGauge);

impl WatcherSlot {
    pub fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<WatcherSlot> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| WatcherSlot(count.clone(), ovation_metrics::FeedWatcherGauge::open()))
    }
}

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where a watcher is in its stream's feed.
#[derive(Clone, Copy, Debug)]
pub struct FeedPosition {
    /// The last event sent (or skipped): the feed goes on after it.
    pub seq: i64,
    /// The stream's newest event when the watcher started: later events are live, and
    /// their delivery lag is measured; earlier ones are catch-up.
    pub live_after: i64,
}

/// One watcher's feed of `stream`, on a task of its own that ends when the watcher goes
/// away, falls too far behind, or the database fails it.
pub struct Watcher {
    pub db: Db,
    pub engine: SagaEngine,
    pub stream: String,
    pub position: FeedPosition,
    pub limits: FeedLimits,
    pub slot: WatcherSlot,
}

/// What a watcher is sent.
pub type FeedMessage = Result<pb::WatchStreamGiftsResponse, Status>;

impl Watcher {
    /// Starts the watcher's task; its messages come out of the receiver.
    pub fn spawn(self) -> mpsc::Receiver<FeedMessage> {
        let (tx, rx) = mpsc::channel(self.limits.buffer_events.max(1));
        tokio::spawn(self.run(tx));
        rx
    }

    /// Events after `seq`, then live ones as they are published.
    async fn run(self, tx: mpsc::Sender<FeedMessage>) {
        let Watcher {
            db,
            engine,
            stream,
            position,
            limits,
            slot: _slot,
        } = self;
        let mut published = engine.subscribe();
        let mut seq = position.seq;
        loop {
            let events = match db.pool().acquire().await {
                Ok(mut conn) => store::events_after(&mut conn, &stream, seq, FEED_BATCH).await,
                Err(e) => Err(StoreError::from(e)),
            };
            let events = match events {
                Ok(events) => events,
                Err(e) => {
                    let _ = tx.send(Err(ApiError::from(e).into())).await;
                    return;
                }
            };
            let full_batch = events.len() as i64 == FEED_BATCH;
            for event in events {
                seq = event.seq;
                let completed_at = event.completed_at;
                let message = pb::WatchStreamGiftsResponse {
                    event: Some(to_proto::event(&event)),
                };
                match tokio::time::timeout(
                    Duration::from_millis(limits.slow_watcher_ms),
                    tx.send(Ok(message)),
                )
                .await
                {
                    Ok(Ok(())) => {
                        if seq > position.live_after {
                            ovation_metrics::global()
                                .feed_delivered(UnixMillis::now().0.saturating_sub(completed_at.0));
                        }
                    }
                    Ok(Err(_)) => return, // the watcher went away
                    Err(_) => {
                        let _ = tx.try_send(Err(Status::resource_exhausted(
                            "this watcher fell too far behind; resume from the last cursor it saw",
                        )));
                        return;
                    }
                }
            }
            if full_batch {
                continue;
            }
            tokio::select! {
                _ = published.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(limits.poll_interval_ms)) => {}
                _ = tx.closed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_only_for_its_own_stream() {
        let c = cursor("s-1", 42);
        assert_eq!(seq_of_cursor(&c, "s-1"), Some(42));
        assert_eq!(seq_of_cursor(&c, "s-2"), None);
        assert_eq!(seq_of_cursor("not a cursor", "s-1"), None);
        assert_eq!(seq_of_cursor("", "s-1"), None);
    }
}
