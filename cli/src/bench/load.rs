//! The load phase the suite and the baseline both run, closed or open loop, each call
//! timed into an HDR histogram (µs, 3 significant figures) and counted by what it came to.
//!
//! - Closed loop (`--concurrency C`): C workers take the numbers of the gifts to send until
//!   the limit; each sends its next gift when its last one is answered, so the offered
//!   load follows the system's speed (queueing is hidden: max throughput).
//! - Open loop (`--rate N`): gift i is due at start + i/N whatever came back; each send
//!   is its own task and its latency runs from the DUE time, so time a send waited behind
//!   a slow scheduler or a full in-flight bound counts (no coordinated omission). At most
//!   `--rate-inflight-max` sends are in flight; a gift due when the bound is full is not
//!   sent and counts as dropped.

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ovation_proto::gifting as gpb;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::plan::{LoadLimit, Turns};
use super::report::{LoadResult, OpenLoop, Outcomes};

/// How a load phase sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// `concurrency` workers, each sending its next gift when the last is answered.
    Closed { concurrency: u32 },
    /// `rate` gifts per second on a fixed schedule, at most `inflight_max` in flight.
    Open { rate: u32, inflight_max: u32 },
}

impl Pace {
    pub fn describe(self) -> String {
        match self {
            Pace::Closed { concurrency } => format!("closed loop, concurrency {concurrency}"),
            Pace::Open { rate, inflight_max } => {
                format!("open loop at {rate} gifts/s (at most {inflight_max} in flight)")
            }
        }
    }
}

/// When each gift of an open-loop phase is due, from the phase's start.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    rate: u32,
    limit: LoadLimit,
}

impl Schedule {
    pub fn new(rate: u32, limit: LoadLimit) -> Schedule {
        Schedule { rate, limit }
    }

    /// Gift `i` is due `i / rate` seconds after the start; `None` once the limit is
    /// reached (the gift count, or a due time at or past the duration).
    pub fn offset(&self, i: u64) -> Option<Duration> {
        if self.rate == 0 || i >= self.limit.gift_cap() {
            return None;
        }
        let nanos = u128::from(i) * 1_000_000_000 / u128::from(self.rate);
        let offset = Duration::from_nanos(u64::try_from(nanos).ok()?);
        match self.limit {
            LoadLimit::Duration(d) if offset >= d => None,
            _ => Some(offset),
        }
    }
}

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

/// Runs a load phase at `pace` until `limit`, each gift `i` sent by `send(i)`.
pub async fn drive<F, Fut>(
    pace: Pace,
    limit: LoadLimit,
    send: F,
) -> Result<LoadResult, Box<dyn Error>>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Call> + Send + 'static,
{
    match pace {
        Pace::Closed { concurrency } => drive_closed(concurrency, limit, send).await,
        Pace::Open { rate, inflight_max } => {
            drive_open(Schedule::new(rate, limit), inflight_max, send).await
        }
    }
}

/// Closed loop: `concurrency` workers send gifts until `limit`. Only the future `send`
/// returns is timed: whatever `send` prepares before it (the request, the key) is not.
async fn drive_closed<F, Fut>(
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
        open_loop: None,
    })
}

/// Open loop: every gift sent at its due time as a task of its own, timed from that due
/// time; a gift due while `inflight_max` sends are outstanding is dropped (counted).
async fn drive_open<F, Fut>(
    schedule: Schedule,
    inflight_max: u32,
    send: F,
) -> Result<LoadResult, Box<dyn Error>>
where
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: Future<Output = Call> + Send + 'static,
{
    let started = Instant::now();
    let inflight = Arc::new(Semaphore::new(inflight_max as usize));
    let mut sends = JoinSet::new();
    let (mut latency_us, mut outcomes) = (histogram()?, Outcomes::default());
    let mut record = |joined: Result<(u64, Call), tokio::task::JoinError>| {
        let (us, came_to) = joined.map_err(|e| format!("a send failed: {e}"))?;
        latency_us.saturating_record(us);
        outcomes.record(came_to);
        Ok::<(), String>(())
    };
    let (mut scheduled, mut dropped) = (0u64, 0u64);
    let mut i = 0u64;
    while let Some(offset) = schedule.offset(i) {
        let due = started + offset;
        // A send already due goes at once (a timer would wait for the next tick).
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        scheduled += 1;
        match inflight.clone().try_acquire_owned() {
            Ok(permit) => {
                let call = send(i);
                sends.spawn(async move {
                    let came_to = call.await;
                    drop(permit);
                    (elapsed_us(due), came_to)
                });
            }
            Err(_) => dropped += 1,
        }
        // Keep only what is in flight: a long run would otherwise hold every result.
        while let Some(joined) = sends.try_join_next() {
            record(joined)?;
        }
        i += 1;
    }
    let sending = started.elapsed();
    while let Some(joined) = sends.join_next().await {
        record(joined)?;
    }
    Ok(LoadResult {
        latency_us,
        outcomes,
        wall: started.elapsed(),
        open_loop: Some(OpenLoop {
            rate: schedule.rate,
            scheduled,
            dropped,
            sending,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_loop_schedule_is_fixed_and_stops_at_its_limit() {
        let s = Schedule::new(4, LoadLimit::Gifts(6));
        let offsets: Vec<Duration> = (0..).map_while(|i| s.offset(i)).collect();
        let ms: Vec<u128> = offsets.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![0, 250, 500, 750, 1_000, 1_250]);
        // A duration run: due times before the end only (10/s for 2 s = 20 gifts).
        let s = Schedule::new(10, LoadLimit::Duration(Duration::from_secs(2)));
        assert_eq!((0..).map_while(|i| s.offset(i)).count(), 20);
        // A high rate keeps sub-millisecond spacing exact (no drift from rounding).
        let s = Schedule::new(3_000, LoadLimit::Gifts(10_000_000));
        assert_eq!(s.offset(3_000), Some(Duration::from_secs(1)));
        assert_eq!(s.offset(1), Some(Duration::from_nanos(333_333)));
        assert_eq!(s.offset(9_000_000), Some(Duration::from_secs(3_000)));
        assert_eq!(s.offset(10_000_000), None);
        assert_eq!(Schedule::new(0, LoadLimit::Gifts(5)).offset(0), None);
    }

    #[tokio::test]
    async fn an_open_loop_drops_what_would_exceed_the_in_flight_bound() {
        // Every gift is due at once: the scheduler sends 0 and 1 without yielding, so
        // neither has been answered (this runtime has one thread) when 2, 3 and 4 are due.
        let send = |_i: u64| async { Call::Ended(gpb::SagaStatus::Completed) };
        let pace = Pace::Open {
            rate: u32::MAX,
            inflight_max: 2,
        };
        let result = drive(pace, LoadLimit::Gifts(5), send).await.unwrap();
        let open = result.open_loop.unwrap();
        assert_eq!((open.scheduled, open.dropped), (5, 3));
        assert_eq!(result.outcomes.completed, 2);
        assert_eq!(result.latency_us.len(), 2);
    }
}
