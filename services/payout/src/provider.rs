//! The payout provider: whoever turns a payout into real money (a bank, a payments
//! company). Real providers plug in behind [`PayoutProvider`]: [`stripe_connect`]
//! (transfers to the creators' Stripe connected accounts) for production;
//! [`SandboxProvider`] for development and tests only (it runs only where
//! `OVATION_ALLOW_SANDBOX=true`).
//!
//! The contract a provider must keep: [`PayoutProvider::pay`] is **idempotent by payout
//! id**. The worker calls it again after a timeout, an error or a restart, with the same
//! [`PayoutOrder`]; a provider that already paid (or refused) that payout id answers with
//! the same outcome and does not pay again. That is what makes "never paid twice" hold
//! when our side cannot know whether a call that timed out went through.
//!
//! [`PayoutProvider::cancel`] stops a payout the provider has not paid (a creator was
//! suspended after it was sent): the provider answers how the payout ends for good. Paid
//! if it was paid (a transfer is not recalled: the payout is recorded PAID); declined if
//! it is now cancelled (or was refused), after which `pay` for that id must answer
//! declined and never pay. Like `pay`, it is idempotent and may fail without a definite
//! answer (retried).
//!
//! # Sandbox outcomes
//!
//! The sandbox picks its behaviour from the payout account reference (set with
//! `SetPayoutAccount`), by prefix:
//!
//! | reference starts with | outcome |
//! |---|---|
//! | `sandbox-fail` | refused: the payout ends FAILED → RELEASED, the hold is released |
//! | `sandbox-transient` | the first N calls for the payout fail transiently (N from a `-N` suffix, default 3, at most 100), then it is paid |
//! | `sandbox-slow` | paid, but the first call answers only after MS milliseconds (a `-MS` suffix, default 3000, at most 600000); the payment is recorded when the call starts, as a real provider accepts a transfer before it answers |
//! | anything else (e.g. `sandbox-ok`) | paid at once |
//!
//! A call for a payout id the sandbox has already decided answers that decision at once.
//! A cancellation records a refusal unless a decision is recorded (first decision wins),
//! so a payout the sandbox had not paid is never paid after it.
//!
//! # Where the sandbox keeps its records
//!
//! The sandbox stands for an external system, so its records must outlive the payout
//! service: [`SandboxProvider::in_dir`] keeps one file per payout id in a directory
//! (written to a temporary file and hard-linked into place, so the first decision wins
//! and a crash never leaves half a record); [`SandboxProvider::in_memory`] keeps them in
//! memory, for tests, which share one `Arc` across a simulated restart. The count of
//! transient failures served so far is kept in memory only (a restart starts it again).

pub mod stripe_connect;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use ovation_types::Money;

/// What the provider is asked to pay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutOrder {
    /// The idempotency key at the provider.
    pub payout_id: String,
    pub creator_id: String,
    pub amount: Money,
    /// Where to pay (the reference recorded at request time).
    pub account_reference: String,
}

/// A definite answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderOutcome {
    /// Paid; the provider's reference for the transfer.
    Paid { provider_reference: String },
    /// Refused for good (closed account, compliance); the hold is released.
    Declined { reason: String },
}

/// No definite answer: the payout may or may not have been made. Retried with the same
/// payout id, never treated as a refusal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("payout provider did not answer definitely: {0}")]
pub struct ProviderError(pub String);

/// A payout provider. See the module documentation for the idempotency contract.
pub trait PayoutProvider: Send + Sync + std::fmt::Debug {
    /// Pays `order`, or answers how an earlier call for the same payout id ended.
    fn pay<'a>(
        &'a self,
        order: &'a PayoutOrder,
    ) -> BoxFuture<'a, Result<ProviderOutcome, ProviderError>>;

    /// Cancels `order` unless it is paid already, and answers how it ends for good:
    /// [`ProviderOutcome::Paid`] if it was paid, [`ProviderOutcome::Declined`] if it is
    /// cancelled or was refused (then `pay` of that payout id never pays).
    fn cancel<'a>(
        &'a self,
        order: &'a PayoutOrder,
    ) -> BoxFuture<'a, Result<ProviderOutcome, ProviderError>>;
}

/// Failures of `sandbox-transient` without a count.
const TRANSIENT_FAILURES_DEFAULT: u32 = 3;
const TRANSIENT_FAILURES_MAX: u32 = 100;
/// Delay of `sandbox-slow` without a number.
const SLOW_MS_DEFAULT: u64 = 3_000;
const SLOW_MS_MAX: u64 = 600_000;
/// Most payouts the in-memory sandbox remembers; beyond it, calls fail transiently.
pub const SANDBOX_RECORDS_MAX: usize = 100_000;

/// The behaviour the sandbox picks for an account reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxBehaviour {
    Pay,
    Decline,
    Transient { failures: u32 },
    Slow { delay_ms: u64 },
}

impl SandboxBehaviour {
    pub fn for_reference(reference: &str) -> SandboxBehaviour {
        if reference.starts_with("sandbox-fail") {
            SandboxBehaviour::Decline
        } else if let Some(rest) = reference.strip_prefix("sandbox-transient") {
            let failures = suffix_number(rest)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(TRANSIENT_FAILURES_DEFAULT)
                .min(TRANSIENT_FAILURES_MAX);
            SandboxBehaviour::Transient { failures }
        } else if let Some(rest) = reference.strip_prefix("sandbox-slow") {
            let delay_ms = suffix_number(rest)
                .unwrap_or(SLOW_MS_DEFAULT)
                .min(SLOW_MS_MAX);
            SandboxBehaviour::Slow { delay_ms }
        } else {
            SandboxBehaviour::Pay
        }
    }
}

/// `-123…` → 123.
fn suffix_number(rest: &str) -> Option<u64> {
    let digits: String = rest
        .strip_prefix('-')?
        .chars()
        .take_while(char::is_ascii_digit)
        .take(12)
        .collect();
    digits.parse().ok()
}

/// One payment the sandbox made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxPayment {
    pub payout_id: String,
    pub creator_id: String,
    pub amount: Money,
}

#[derive(Debug, Default)]
struct SandboxState {
    /// Decided payouts (in-memory mode).
    records: HashMap<String, ProviderOutcome>,
    /// Transient failures served, per payout id.
    failures: HashMap<String, u32>,
    /// Calls, per payout id.
    calls: HashMap<String, u32>,
    /// Payments made, in order (each payout id at most once).
    payments: Vec<SandboxPayment>,
}

/// The sandbox payout provider. Outcomes and storage: see the module documentation.
#[derive(Debug)]
pub struct SandboxProvider {
    dir: Option<PathBuf>,
    state: Mutex<SandboxState>,
}

impl SandboxProvider {
    /// Records kept in memory (tests: share the `Arc` across a simulated restart).
    pub fn in_memory() -> Self {
        SandboxProvider {
            dir: None,
            state: Mutex::new(SandboxState::default()),
        }
    }

    /// Records kept as one file per payout id under `dir` (created when first needed).
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        SandboxProvider {
            dir: Some(dir.into()),
            state: Mutex::new(SandboxState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SandboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many times `pay` was called for `payout_id` (by this process).
    pub fn calls(&self, payout_id: &str) -> u32 {
        self.state().calls.get(payout_id).copied().unwrap_or(0)
    }

    /// Every payment this sandbox made (by this process), in order (the latest
    /// [`SANDBOX_RECORDS_MAX`]).
    pub fn payments(&self) -> Vec<SandboxPayment> {
        self.state().payments.clone()
    }

    /// The decision recorded for `payout_id`, if any.
    fn recorded(&self, payout_id: &str) -> Result<Option<ProviderOutcome>, ProviderError> {
        match &self.dir {
            None => Ok(self.state().records.get(payout_id).cloned()),
            Some(dir) => match std::fs::read_to_string(dir.join(file_name(payout_id))) {
                Ok(text) => decode(&text).map(Some).ok_or_else(|| {
                    ProviderError(format!("sandbox record of {payout_id} is unreadable"))
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(ProviderError(format!("sandbox storage: {e}"))),
            },
        }
    }

    /// Records `outcome` for `payout_id` unless one is recorded already; returns the
    /// recorded outcome and whether it is the one just written.
    fn record(
        &self,
        payout_id: &str,
        outcome: ProviderOutcome,
    ) -> Result<(ProviderOutcome, bool), ProviderError> {
        let Some(dir) = &self.dir else {
            let mut state = self.state();
            if let Some(existing) = state.records.get(payout_id) {
                return Ok((existing.clone(), false));
            }
            if state.records.len() >= SANDBOX_RECORDS_MAX {
                return Err(ProviderError(format!(
                    "the in-memory sandbox remembers at most {SANDBOX_RECORDS_MAX} payouts"
                )));
            }
            state.records.insert(payout_id.to_owned(), outcome.clone());
            return Ok((outcome, true));
        };
        let io = |e: std::io::Error| ProviderError(format!("sandbox storage: {e}"));
        std::fs::create_dir_all(dir).map_err(io)?;
        let target = dir.join(file_name(payout_id));
        let temp = dir.join(format!(
            ".{}.{}.tmp",
            file_name(payout_id),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&temp, encode(&outcome)).map_err(io)?;
        let linked = std::fs::hard_link(&temp, &target);
        let _ = std::fs::remove_file(&temp);
        match linked {
            Ok(()) => Ok((outcome, true)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                match self.recorded(payout_id)? {
                    Some(existing) => Ok((existing, false)),
                    None => Err(ProviderError("sandbox record vanished".into())),
                }
            }
            Err(e) => Err(io(e)),
        }
    }

    async fn decide(&self, order: &PayoutOrder) -> Result<ProviderOutcome, ProviderError> {
        {
            let mut state = self.state();
            // Diagnostics stay bounded: past the bound they start over (a transient
            // account then fails its N times again).
            if state.calls.len() >= SANDBOX_RECORDS_MAX {
                state.calls.clear();
                state.failures.clear();
            }
            *state.calls.entry(order.payout_id.clone()).or_default() += 1;
        }
        if let Some(outcome) = self.recorded(&order.payout_id)? {
            return Ok(outcome);
        }
        let paid = ProviderOutcome::Paid {
            provider_reference: format!("sandbox-{}", order.payout_id),
        };
        match SandboxBehaviour::for_reference(&order.account_reference) {
            SandboxBehaviour::Pay => self.pay_once(order, paid),
            SandboxBehaviour::Decline => Ok(self
                .record(
                    &order.payout_id,
                    ProviderOutcome::Declined {
                        reason: "sandbox: the destination account refused the transfer".into(),
                    },
                )?
                .0),
            SandboxBehaviour::Transient { failures } => {
                {
                    let mut state = self.state();
                    let served = state.failures.entry(order.payout_id.clone()).or_default();
                    if *served < failures {
                        *served += 1;
                        return Err(ProviderError(format!(
                            "sandbox: transient failure {} of {failures}",
                            *served
                        )));
                    }
                }
                self.pay_once(order, paid)
            }
            SandboxBehaviour::Slow { delay_ms } => {
                // Accepted (and paid) now; the answer comes late.
                let outcome = self.pay_once(order, paid)?;
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                Ok(outcome)
            }
        }
    }

    async fn cancel_order(&self, order: &PayoutOrder) -> Result<ProviderOutcome, ProviderError> {
        if let Some(outcome) = self.recorded(&order.payout_id)? {
            return Ok(outcome);
        }
        let cancelled = ProviderOutcome::Declined {
            reason: "sandbox: cancelled before it was paid (the creator was suspended)".into(),
        };
        // First decision wins: a payment recorded meanwhile is the answer.
        let (outcome, _) = self.record(&order.payout_id, cancelled)?;
        tracing::info!(payout_id = %order.payout_id, paid = matches!(outcome, ProviderOutcome::Paid { .. }),
            "sandbox provider asked to cancel");
        Ok(outcome)
    }

    fn pay_once(
        &self,
        order: &PayoutOrder,
        paid: ProviderOutcome,
    ) -> Result<ProviderOutcome, ProviderError> {
        let (outcome, fresh) = self.record(&order.payout_id, paid)?;
        if fresh && matches!(outcome, ProviderOutcome::Paid { .. }) {
            let mut state = self.state();
            if state.payments.len() >= SANDBOX_RECORDS_MAX {
                state.payments.remove(0);
            }
            state.payments.push(SandboxPayment {
                payout_id: order.payout_id.clone(),
                creator_id: order.creator_id.clone(),
                amount: order.amount,
            });
            tracing::info!(payout_id = %order.payout_id, amount_minor = order.amount.amount_minor(),
                currency = %order.amount.currency, "sandbox provider paid");
        }
        Ok(outcome)
    }
}

impl PayoutProvider for SandboxProvider {
    fn pay<'a>(
        &'a self,
        order: &'a PayoutOrder,
    ) -> BoxFuture<'a, Result<ProviderOutcome, ProviderError>> {
        Box::pin(self.decide(order))
    }

    fn cancel<'a>(
        &'a self,
        order: &'a PayoutOrder,
    ) -> BoxFuture<'a, Result<ProviderOutcome, ProviderError>> {
        Box::pin(self.cancel_order(order))
    }
}

/// Payout ids are `[A-Za-z0-9_.:-]`; `:` is not welcome in every file system.
fn file_name(payout_id: &str) -> String {
    payout_id.replace(':', "_")
}

fn encode(outcome: &ProviderOutcome) -> String {
    match outcome {
        ProviderOutcome::Paid { provider_reference } => format!("paid {provider_reference}\n"),
        ProviderOutcome::Declined { reason } => format!("declined {reason}\n"),
    }
}

fn decode(text: &str) -> Option<ProviderOutcome> {
    let (kind, rest) = text.trim_end_matches('\n').split_once(' ')?;
    match kind {
        "paid" => Some(ProviderOutcome::Paid {
            provider_reference: rest.to_owned(),
        }),
        "declined" => Some(ProviderOutcome::Declined {
            reason: rest.to_owned(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str, reference: &str) -> PayoutOrder {
        PayoutOrder {
            payout_id: id.into(),
            creator_id: "ann".into(),
            amount: Money::parse("USD", 500).unwrap(),
            account_reference: reference.into(),
        }
    }

    #[test]
    fn behaviour_follows_the_reference() {
        use SandboxBehaviour::*;
        assert_eq!(SandboxBehaviour::for_reference("sandbox-ok"), Pay);
        assert_eq!(SandboxBehaviour::for_reference("acct_123"), Pay);
        assert_eq!(SandboxBehaviour::for_reference("sandbox-fail-x"), Decline);
        assert_eq!(
            SandboxBehaviour::for_reference("sandbox-transient"),
            Transient { failures: 3 }
        );
        assert_eq!(
            SandboxBehaviour::for_reference("sandbox-transient-7-a"),
            Transient { failures: 7 }
        );
        assert_eq!(
            SandboxBehaviour::for_reference("sandbox-transient-99999"),
            Transient { failures: 100 }
        );
        assert_eq!(
            SandboxBehaviour::for_reference("sandbox-slow-250"),
            Slow { delay_ms: 250 }
        );
        assert_eq!(
            SandboxBehaviour::for_reference("sandbox-slow-x"),
            Slow { delay_ms: 3_000 }
        );
    }

    #[tokio::test]
    async fn payments_are_idempotent_by_payout_id() {
        let sandbox = SandboxProvider::in_memory();
        let first = sandbox.pay(&order("p1", "sandbox-ok")).await.unwrap();
        let again = sandbox.pay(&order("p1", "sandbox-ok")).await.unwrap();
        assert_eq!(first, again);
        assert_eq!(sandbox.payments().len(), 1);
        assert_eq!(sandbox.calls("p1"), 2);
    }

    #[tokio::test]
    async fn transient_then_paid_and_declines_are_remembered() {
        let sandbox = SandboxProvider::in_memory();
        let o = order("p2", "sandbox-transient-2");
        assert!(sandbox.pay(&o).await.is_err());
        assert!(sandbox.pay(&o).await.is_err());
        assert!(matches!(
            sandbox.pay(&o).await,
            Ok(ProviderOutcome::Paid { .. })
        ));
        let d = order("p3", "sandbox-fail");
        let declined = sandbox.pay(&d).await.unwrap();
        assert!(matches!(declined, ProviderOutcome::Declined { .. }));
        assert_eq!(sandbox.pay(&d).await.unwrap(), declined);
        assert_eq!(sandbox.payments().len(), 1);
    }

    #[tokio::test]
    async fn a_cancellation_stops_an_unpaid_payout_and_cannot_undo_a_paid_one() {
        let sandbox = SandboxProvider::in_memory();
        // Sent, failed transiently, then cancelled: never paid afterwards.
        let t = order("p4", "sandbox-transient-1");
        assert!(sandbox.pay(&t).await.is_err());
        let cancelled = sandbox.cancel(&t).await.unwrap();
        assert!(matches!(cancelled, ProviderOutcome::Declined { .. }));
        assert_eq!(sandbox.pay(&t).await.unwrap(), cancelled);
        assert_eq!(sandbox.cancel(&t).await.unwrap(), cancelled, "idempotent");
        // Paid already: the cancellation answers paid.
        let p = order("p5", "sandbox-ok");
        let paid = sandbox.pay(&p).await.unwrap();
        assert_eq!(sandbox.cancel(&p).await.unwrap(), paid);
        assert_eq!(
            sandbox
                .payments()
                .iter()
                .map(|x| x.payout_id.as_str())
                .collect::<Vec<_>>(),
            ["p5"]
        );
        // In a directory too.
        let dir = std::env::temp_dir().join(format!("ovation-sandbox-{}", uuid::Uuid::new_v4()));
        let on_disk = SandboxProvider::in_dir(&dir);
        let d = order("po:6", "sandbox-ok");
        assert!(matches!(
            on_disk.cancel(&d).await.unwrap(),
            ProviderOutcome::Declined { .. }
        ));
        assert!(matches!(
            on_disk.pay(&d).await.unwrap(),
            ProviderOutcome::Declined { .. }
        ));
        assert!(on_disk.payments().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn records_in_a_directory_outlive_the_provider() {
        let dir = std::env::temp_dir().join(format!("ovation-sandbox-{}", uuid::Uuid::new_v4()));
        let first = SandboxProvider::in_dir(&dir);
        first.pay(&order("po:1", "sandbox-ok")).await.unwrap();
        assert_eq!(first.payments().len(), 1);
        let restarted = SandboxProvider::in_dir(&dir);
        let again = restarted.pay(&order("po:1", "sandbox-ok")).await.unwrap();
        assert!(matches!(again, ProviderOutcome::Paid { .. }));
        assert!(
            restarted.payments().is_empty(),
            "the second provider found the record and paid nothing"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
