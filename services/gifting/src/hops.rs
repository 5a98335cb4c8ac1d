//! The saga's hops to wallet and payout, batched across sagas: every saga driven at the
//! same moment hands its debit (or credit) to one [`HopBatcher`] and awaits its own item's
//! answer; the batcher sends the items queued at that moment as one `DebitCoinsBatch` (or
//! `CreditDiamondsBatch`), which the peer applies in one transaction.
//!
//! Why: a gift is three hops (quote, debit, credit). One RPC and one transaction per hop
//! per gift cost more CPU than the gift itself; shared by many gifts, one RPC, one commit
//! and one row lock per creator serve them all (issue 13's measurements in ARCHITECTURE.md).
//!
//! What does not change for a saga: its item carries the same operation id as the single
//! call did, so a batch retried after a lost answer applies each item at most once; each
//! item is answered alone (a refusal is that item's [`CallFailure`], judged as the single
//! call's would be); a batch that got no answer fails each of its items as a call with no
//! answer would (transient: the saga retries).
//!
//! How batches form: at most [`HopLimits::in_flight_max`] batches are on the wire at once;
//! while they are, new items queue, and the next batch takes all of them (up to
//! `BATCH_ITEMS_MAX`). An idle peer gets a lone item at once, so a single gift waits for
//! nobody. Bounded: at most [`QUEUE_MAX`] items wait (senders wait beyond it).
//!
//! Traces: a batch serves many sagas' traces. Its call runs in a span whose parent is the
//! first item's span and which follows from every other item's span (OpenTelemetry links),
//! so each trace can find the batch that carried its hop.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ovation_proto::common::ItemError;
use ovation_types::limits::BATCH_ITEMS_MAX;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::Status as RpcStatus;
use tonic_types::StatusExt;

use crate::domain::{CallFailure, DETAIL_CHARS_MAX, truncate};

/// Most items waiting for a batch.
pub const QUEUE_MAX: usize = 4_096;

/// How a batcher sends.
#[derive(Clone, Copy, Debug)]
pub struct HopLimits {
    /// Batches on the wire at once. More overlap waits in the peer; fewer makes bigger
    /// batches. A handful keeps the peer's pool and both cores busy without a queue there.
    pub in_flight_max: usize,
}

impl Default for HopLimits {
    fn default() -> Self {
        HopLimits { in_flight_max: 4 }
    }
}

/// The answer to a batch: one result per item, in order, or why the whole call failed.
pub type BatchReply<R> = Result<Vec<Result<R, ItemError>>, RpcStatus>;

/// Sends one batch; given the items in queue order.
pub type SendBatch<I, R> = Arc<dyn Fn(Vec<I>) -> BoxFuture<'static, BatchReply<R>> + Send + Sync>;

struct Queued<I, R> {
    item: I,
    span: tracing::Span,
    reply: oneshot::Sender<Result<R, CallFailure>>,
}

/// A handle on one peer's batcher task (cheap to clone); the task ends with the last handle.
pub struct HopBatcher<I, R> {
    queue: mpsc::Sender<Queued<I, R>>,
    peer: &'static str,
}

impl<I, R> Clone for HopBatcher<I, R> {
    fn clone(&self) -> Self {
        HopBatcher {
            queue: self.queue.clone(),
            peer: self.peer,
        }
    }
}

impl<I, R> std::fmt::Debug for HopBatcher<I, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HopBatcher")
            .field("peer", &self.peer)
            .finish()
    }
}

impl<I: Send + 'static, R: Send + 'static> HopBatcher<I, R> {
    /// Starts the batcher task of `peer` (its name in failures and spans) on the current
    /// runtime.
    pub fn start(
        peer: &'static str,
        span_name: &'static str,
        limits: HopLimits,
        send: SendBatch<I, R>,
    ) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE_MAX);
        tokio::spawn(run(peer, span_name, limits, send, waiting));
        HopBatcher { queue, peer }
    }

    /// Sends `item` with whatever else is queued and returns its own answer.
    pub async fn call(&self, item: I) -> Result<R, CallFailure> {
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            item,
            span: tracing::Span::current(),
            reply,
        };
        if self.queue.send(queued).await.is_err() {
            return Err(no_answer(self.peer, "the batcher stopped"));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(no_answer(self.peer, "the batch was dropped unanswered")))
    }
}

async fn run<I: Send + 'static, R: Send + 'static>(
    peer: &'static str,
    span_name: &'static str,
    limits: HopLimits,
    send: SendBatch<I, R>,
    mut waiting: mpsc::Receiver<Queued<I, R>>,
) {
    let slots = Arc::new(Semaphore::new(limits.in_flight_max.max(1)));
    while let Some(first) = waiting.recv().await {
        // Wait for a free slot first: what queues meanwhile joins this batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < BATCH_ITEMS_MAX {
            match waiting.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let send = send.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let span = tracing::info_span!(parent: &batch[0].span, "hop_batch", peer, batch = span_name, items = batch.len());
            for other in &batch[1..] {
                span.follows_from(&other.span);
            }
            let mut items = Vec::with_capacity(batch.len());
            let mut replies = Vec::with_capacity(batch.len());
            for queued in batch {
                items.push(queued.item);
                replies.push(queued.reply);
            }
            let count = items.len();
            ovation_metrics::global().hop_batch(span_name, count);
            let answer = tracing::Instrument::instrument(send(items), span).await;
            deliver(peer, count, answer, replies);
        });
    }
}

/// Hands each item its result; a reply that does not match the batch fails every item.
fn deliver<R>(
    peer: &'static str,
    count: usize,
    answer: BatchReply<R>,
    replies: Vec<oneshot::Sender<Result<R, CallFailure>>>,
) {
    match answer {
        Ok(results) if results.len() == count => {
            for (result, reply) in results.into_iter().zip(replies) {
                let _ = reply.send(result.map_err(|e| item_failure(peer, e)));
            }
        }
        Ok(results) => {
            let message = format!(
                "{peer} answered {} results for a batch of {count} items",
                results.len()
            );
            for reply in replies {
                let _ = reply.send(Err(CallFailure {
                    peer,
                    code: tonic::Code::Internal,
                    reason: String::new(),
                    message: message.clone(),
                    no_answer: false,
                }));
            }
        }
        Err(status) => {
            for reply in replies {
                let _ = reply.send(Err(call_failure(peer, &status)));
            }
        }
    }
}

/// An item the peer refused, as the single call's failure would read.
fn item_failure(peer: &'static str, e: ItemError) -> CallFailure {
    CallFailure {
        peer,
        code: tonic::Code::from_i32(e.code),
        reason: e.reason,
        message: truncate(&e.message, DETAIL_CHARS_MAX),
        no_answer: false,
    }
}

fn no_answer(peer: &'static str, message: &str) -> CallFailure {
    CallFailure {
        peer,
        code: tonic::Code::Unavailable,
        reason: String::new(),
        message: message.to_owned(),
        no_answer: true,
    }
}

/// What the saga needs to know of a failed call (the judgement is the domain's).
pub fn call_failure(peer: &'static str, status: &RpcStatus) -> CallFailure {
    CallFailure {
        peer,
        code: status.code(),
        reason: status
            .get_error_details()
            .error_info()
            .map(|i| i.reason.clone())
            .unwrap_or_default(),
        message: truncate(status.message(), DETAIL_CHARS_MAX),
        // tonic attaches the underlying error to a status it made itself from a transport
        // failure (connect, reset, broken stream, the call's own timeout); a status the peer
        // sent has none.
        no_answer: std::error::Error::source(status).is_some(),
    }
}

/// A request with the hop's deadline.
pub fn timed<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A peer that records the batches it was sent and answers each item by a rule.
    fn recording_peer(seen: Arc<Mutex<Vec<Vec<u32>>>>, delay: Duration) -> SendBatch<u32, u32> {
        Arc::new(move |items: Vec<u32>| {
            let seen = seen.clone();
            Box::pin(async move {
                seen.lock().unwrap().push(items.clone());
                tokio::time::sleep(delay).await;
                Ok(items
                    .into_iter()
                    .map(|n| {
                        if n % 10 == 7 {
                            Err(ItemError {
                                code: i32::from(tonic::Code::FailedPrecondition),
                                reason: "SEVEN".into(),
                                message: format!("{n} refused"),
                            })
                        } else {
                            Ok(n * 2)
                        }
                    })
                    .collect())
            })
        })
    }

    #[tokio::test]
    async fn concurrent_items_share_batches_and_each_gets_its_own_answer() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let batcher = HopBatcher::start(
            "wallet",
            "debit",
            HopLimits { in_flight_max: 1 },
            recording_peer(seen.clone(), Duration::from_millis(20)),
        );
        let calls: Vec<_> = (0..50u32)
            .map(|n| {
                let b = batcher.clone();
                tokio::spawn(async move { (n, b.call(n).await) })
            })
            .collect();
        for call in calls {
            let (n, answer) = call.await.unwrap();
            if n % 10 == 7 {
                let failure = answer.unwrap_err();
                assert_eq!(failure.code, tonic::Code::FailedPrecondition);
                assert_eq!(failure.reason, "SEVEN");
                assert!(!failure.no_answer);
            } else {
                assert_eq!(answer.unwrap(), n * 2);
            }
        }
        let batches = seen.lock().unwrap().clone();
        let mut all: Vec<u32> = batches.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..50).collect::<Vec<_>>(),
            "every item sent exactly once"
        );
        assert!(
            batches.len() < 50,
            "one batch in flight at a time: items queued meanwhile travel together ({} batches)",
            batches.len()
        );
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_item_as_its_call_would() {
        let send: SendBatch<u32, u32> = Arc::new(|_items| {
            Box::pin(async { Err(RpcStatus::unavailable("wallet is restarting")) })
        });
        let batcher = HopBatcher::start("wallet", "debit", HopLimits::default(), send);
        let failure = batcher.call(1).await.unwrap_err();
        assert_eq!(failure.code, tonic::Code::Unavailable);
        assert_eq!(failure.peer, "wallet");
        assert!(failure.message.contains("restarting"));
    }

    #[tokio::test]
    async fn a_reply_of_the_wrong_length_fails_every_item() {
        let send: SendBatch<u32, u32> = Arc::new(|_items| Box::pin(async { Ok(Vec::new()) }));
        let batcher = HopBatcher::start("payout", "credit", HopLimits::default(), send);
        let failure = batcher.call(1).await.unwrap_err();
        assert_eq!(failure.code, tonic::Code::Internal);
        assert!(failure.message.contains("0 results for a batch of 1"));
    }
}
