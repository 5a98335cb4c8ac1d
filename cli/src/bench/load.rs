//! The load phase the suite and the baseline both run: workers take the numbers of the
//! gifts to send until the limit, time each call into an HDR histogram (µs, 3 significant
//! figures) and count what it came to.

use std::error::Error;
use std::time::Instant;

use hdrhistogram::Histogram;
use ovation_proto::gifting as gpb;
use tokio::task::JoinSet;

use super::plan::{LoadLimit, Turns};
use super::report::{LoadResult, Outcomes};

/// Highest latency the histograms track, µs (beyond: recorded as this).
const LATENCY_HIGH_US: u64 = 600_000_000;

/// What one gift's call came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// The gift's saga status (a baseline transaction: COMPLETED or REJECTED).
    Ended(gpb::SagaStatus),
    /// The call failed: the kind (gRPC code, or the baseline's error class) and why.
    Failed { kind: String, message: String },
}

pub fn histogram() -> Result<Histogram<u64>, Box<dyn Error>> {
    Ok(Histogram::new_with_bounds(1, LATENCY_HIGH_US, 3)?)
}

fn elapsed_us(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Runs a load phase: `concurrency` workers send gifts until `limit`, each gift `i` by
/// `send(i)`. Only the future `send` returns is timed: whatever `send` prepares before it
/// (the request, the key) is not.
pub async fn drive<F, Fut>(
    concurrency: u32,
    limit: LoadLimit,
    send: F,
) -> Result<LoadResult, Box<dyn Error>>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Call> + Send,
{
    let started = Instant::now();
    let turns = Turns::new(limit, started);
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (send, turns, mut hist) = (send.clone(), turns.clone(), histogram()?);
        workers.spawn(async move {
            let mut out = Outcomes::default();
            while let Some(i) = turns.next() {
                let call = send(i);
                let t = Instant::now();
                let came_to = call.await;
                hist.saturating_record(elapsed_us(t));
                out.record(came_to);
            }
            (hist, out)
        });
    }
    collect(workers, started).await
}

async fn collect(
    mut workers: JoinSet<(Histogram<u64>, Outcomes)>,
    started: Instant,
) -> Result<LoadResult, Box<dyn Error>> {
    let mut latency_us = histogram()?;
    let mut outcomes = Outcomes::default();
    while let Some(joined) = workers.join_next().await {
        let (h, o) = joined.map_err(|e| format!("a load worker failed: {e}"))?;
        latency_us.add(&h)?;
        outcomes.merge(o);
    }
    Ok(LoadResult {
        latency_us,
        outcomes,
        wall: started.elapsed(),
    })
}
