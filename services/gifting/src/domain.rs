//! The gift saga as a state machine: plain data and pure transitions, no I/O.
//!
//! Steps: resolve the gift (catalog) → debit coins (wallet, compensatable) → credit
//! diamonds (payout, the pivot) → done; a definite refusal of the credit runs the
//! compensation (refund coins) instead. An ambiguous outcome never moves the saga to
//! another step: the same step is retried with the same operation id until it answers
//! definitely.
//!
//! How long a step is retried depends on why it failed ([`judge`]): a peer that is down,
//! slow or shedding load (a pod restart, a rollout) is waited for, with capped backoff,
//! until the saga reaches its maximum age; an answer no retry is known to fix gets a
//! small attempt budget. Either way, what is left goes to an operator (NEEDS_OPERATOR).

use ovation_proto::reasons;
use ovation_types::{Quantity, ResourceId, Text, UnixMillis};
use tonic::Code;

/// Gives an enum its stored codes (the contract's numbers) from one table, both ways:
/// `code()` and `from_code()`.
macro_rules! stored_codes {
    ($ty:ident { $($variant:ident = $code:literal),+ $(,)? }) => {
        impl $ty {
            /// The code stored (and sent in the contract) for this value.
            pub fn code(self) -> i64 {
                match self {
                    $($ty::$variant => $code,)+
                }
            }

            /// The value stored as `code`; `None` for a code no value has.
            pub fn from_code(code: i64) -> Option<Self> {
                match code {
                    $($code => Some($ty::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

/// Status of a saga.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pending,
    Completed,
    Rejected,
    Compensated,
    NeedsOperator,
}

stored_codes!(Status {
    Pending = 1,
    Completed = 2,
    Rejected = 3,
    Compensated = 4,
    NeedsOperator = 5,
});

impl Status {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Rejected | Status::Compensated
        )
    }
}

/// The step a saga runs next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    ResolveGift,
    DebitCoins,
    CreditDiamonds,
    RefundCoins,
    Done,
}

stored_codes!(Step {
    ResolveGift = 1,
    DebitCoins = 2,
    CreditDiamonds = 3,
    RefundCoins = 4,
    Done = 5,
});

/// Why a saga was REJECTED or COMPENSATED.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    None,
    InsufficientCoins,
    SpendCapExceeded,
    MinorAccount,
    AccountInDebt,
    SenderNotFound,
    GiftNotFound,
    GiftUnavailable,
    CreatorNotFound,
    CreatorSuspended,
    Other,
}

stored_codes!(Rejection {
    None = 0,
    InsufficientCoins = 1,
    SpendCapExceeded = 2,
    MinorAccount = 3,
    AccountInDebt = 4,
    SenderNotFound = 5,
    GiftNotFound = 6,
    GiftUnavailable = 7,
    CreatorNotFound = 8,
    CreatorSuspended = 9,
    Other = 10,
});

/// What the catalog said a gift costs and earns, recorded at send time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quote {
    pub gift_version: i64,
    pub unit_price_coins: i64,
    pub total_coins: i64,
    pub creator_share_bps: i32,
    pub economy_version: i64,
}

/// What one step's call came back with, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Quoted(Quote),
    Debited {
        available_after: i64,
    },
    Credited {
        diamonds: i64,
    },
    Refunded {
        available_after: i64,
    },
    /// A definite business refusal: the step did not and will not happen.
    Refused {
        reason: Rejection,
        detail: String,
    },
    /// The peer is unreachable, slow or shedding load (no answer, UNAVAILABLE, a
    /// timeout, RESOURCE_EXHAUSTED without a business reason): nothing definite happened,
    /// and the peer coming back fixes it. Retry the same step until then, within the
    /// saga's maximum age.
    Transient {
        detail: String,
    },
    /// An answer that is neither success nor a definite refusal, and that waiting is not
    /// known to fix (INTERNAL, UNAUTHENTICATED, a key reused with other parameters, ...).
    /// Still ambiguous, so never compensated: retried within a small attempt budget, then
    /// an operator looks.
    Unexpected {
        detail: String,
    },
}

/// A step's call that failed, as far as the saga needs to know: what the client saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallFailure {
    /// Which peer was called (`catalog`, `wallet`, `payout`), for the record.
    pub peer: &'static str,
    /// The gRPC status code.
    pub code: Code,
    /// The `google.rpc.ErrorInfo` reason the peer sent, empty if none.
    pub reason: String,
    pub message: String,
    /// The client made the status itself: the call got no answer from the peer (connection
    /// refused, reset or broken mid-call, the call's own deadline).
    pub no_answer: bool,
}

/// Classifies a failed call of `step`: a definite refusal (which ends or compensates the
/// saga), a transient failure (wait for the peer), or an unexpected answer (a few more
/// tries, then an operator).
///
/// RESOURCE_EXHAUSTED is both: the wallet refuses a debit over a spend cap with it and
/// ErrorInfo reason `SPEND_CAP_EXCEEDED` (a business refusal), while load shedding and
/// rate limits send it without an ErrorInfo (transient).
pub fn judge(step: Step, failure: &CallFailure) -> Outcome {
    let detail = truncate(
        &format!("{}: {:?}: {}", failure.peer, failure.code, failure.message),
        DETAIL_CHARS_MAX,
    );
    if is_transient(failure) {
        return Outcome::Transient { detail };
    }
    let refusal = match (step, failure.code, failure.reason.as_str()) {
        (Step::ResolveGift, Code::NotFound, _) => Some(Rejection::GiftNotFound),
        (Step::ResolveGift, Code::FailedPrecondition, _) => Some(Rejection::GiftUnavailable),
        (Step::ResolveGift, Code::InvalidArgument, _) => Some(Rejection::Other),
        (Step::DebitCoins, Code::FailedPrecondition, reasons::wallet::INSUFFICIENT_COINS) => {
            Some(Rejection::InsufficientCoins)
        }
        (Step::DebitCoins, Code::FailedPrecondition, reasons::wallet::MINOR_ACCOUNT) => {
            Some(Rejection::MinorAccount)
        }
        (Step::DebitCoins, Code::FailedPrecondition, reasons::wallet::ACCOUNT_IN_DEBT) => {
            Some(Rejection::AccountInDebt)
        }
        (Step::DebitCoins, Code::FailedPrecondition, _) => Some(Rejection::Other),
        (Step::DebitCoins, Code::ResourceExhausted, reasons::wallet::SPEND_CAP_EXCEEDED) => {
            Some(Rejection::SpendCapExceeded)
        }
        (Step::DebitCoins, Code::NotFound, _) => Some(Rejection::SenderNotFound),
        (Step::DebitCoins, Code::InvalidArgument, _) => Some(Rejection::Other),
        (Step::CreditDiamonds, Code::FailedPrecondition, reasons::payout::CREATOR_NOT_FOUND)
        | (Step::CreditDiamonds, Code::NotFound, _) => Some(Rejection::CreatorNotFound),
        (Step::CreditDiamonds, Code::FailedPrecondition, reasons::payout::CREATOR_SUSPENDED) => {
            Some(Rejection::CreatorSuspended)
        }
        (Step::CreditDiamonds, Code::FailedPrecondition | Code::InvalidArgument, _) => {
            Some(Rejection::Other)
        }
        (
            Step::RefundCoins,
            Code::FailedPrecondition | Code::NotFound | Code::InvalidArgument,
            _,
        ) => Some(Rejection::Other),
        _ => None,
    };
    match refusal {
        Some(reason) => Outcome::Refused {
            reason,
            detail: truncate(&failure.message, DETAIL_CHARS_MAX),
        },
        None => Outcome::Unexpected { detail },
    }
}

/// Whether a failed call is one waiting fixes: no answer, UNAVAILABLE, DEADLINE_EXCEEDED,
/// CANCELLED, ABORTED, or RESOURCE_EXHAUSTED without a business reason (load shedding,
/// rate limits).
fn is_transient(failure: &CallFailure) -> bool {
    failure.no_answer
        || matches!(
            failure.code,
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted
        )
        || (failure.code == Code::ResourceExhausted && failure.reason.is_empty())
}

/// Longest error text kept with a saga.
pub const DETAIL_CHARS_MAX: usize = 400;

/// The first `chars` characters of `s`.
pub fn truncate(s: &str, chars: usize) -> String {
    s.chars().take(chars).collect()
}

/// A saga's state, as persisted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Saga {
    pub saga_id: String,
    pub sender_user_id: String,
    pub creator_id: String,
    pub stream_id: String,
    pub gift_id: String,
    pub quantity: i32,
    pub message: String,
    pub quote: Option<Quote>,
    pub status: Status,
    pub step: Step,
    pub coins_spent: i64,
    pub diamonds_credited: i64,
    pub sender_balance_after: Option<i64>,
    pub rejection: Rejection,
    pub rejection_detail: String,
    pub refund_started: bool,
    /// Failed attempts of the current step (its backoff grows with them).
    pub attempts: i64,
    /// Of those, the [`Outcome::Unexpected`] ones (the budget of
    /// [`RetryPolicy::attempts_max`]).
    pub unexpected_failures: i64,
    pub last_error: String,
    pub next_attempt_at: UnixMillis,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    pub completed_at: Option<UnixMillis>,
}

/// What a sender asked for: the parts of a saga that come from the SendGift request,
/// as validated there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GiftOrder {
    pub sender_user_id: ResourceId,
    pub creator_id: ResourceId,
    pub stream_id: ResourceId,
    pub gift_id: ResourceId,
    pub quantity: Quantity,
    pub message: Text,
}

impl Saga {
    /// A new saga for `order`: PENDING at its first step, nothing quoted, nothing moved.
    pub fn start(saga_id: String, order: GiftOrder, now: UnixMillis) -> Saga {
        Saga {
            saga_id,
            sender_user_id: order.sender_user_id.into_string(),
            creator_id: order.creator_id.into_string(),
            stream_id: order.stream_id.into_string(),
            gift_id: order.gift_id.into_string(),
            quantity: order.quantity.get(),
            message: order.message.into_string(),
            quote: None,
            status: Status::Pending,
            step: Step::ResolveGift,
            coins_spent: 0,
            diamonds_credited: 0,
            sender_balance_after: None,
            rejection: Rejection::None,
            rejection_detail: String::new(),
            refund_started: false,
            attempts: 0,
            unexpected_failures: 0,
            last_error: String::new(),
            next_attempt_at: now,
            created_at: now,
            updated_at: now,
            completed_at: None,
        }
    }
}

/// Retry policy for a step that failed without a definite answer.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Unexpected answers ([`Outcome::Unexpected`]) a step may get before the saga is
    /// handed to an operator. Transient failures do not count: they are retried until the
    /// saga is `max_age_ms` old.
    pub attempts_max: i64,
    pub backoff_base_ms: i64,
    /// The backoff's cap: how long after a peer comes back a waiting saga notices, at most.
    pub backoff_max_ms: i64,
    /// Past this age (from its creation) a saga still failing is handed to an operator:
    /// how long a peer may be down before gifts wait for a person.
    pub max_age_ms: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts_max: 12,
            backoff_base_ms: 50,
            backoff_max_ms: 30_000,
            max_age_ms: 24 * 3_600_000,
        }
    }
}

impl RetryPolicy {
    /// When a saga created at `created_at` stops being retried.
    pub fn give_up_at(&self, created_at: UnixMillis) -> UnixMillis {
        UnixMillis(created_at.0.saturating_add(self.max_age_ms.max(0)))
    }

    /// When a step of something started at `created_at` that failed `attempts` times is
    /// tried next (backoff, never past the maximum age); `None` once it has reached that
    /// age: it goes to an operator.
    pub fn next_attempt(
        &self,
        created_at: UnixMillis,
        attempts: i64,
        now: UnixMillis,
        jitter: f64,
    ) -> Option<UnixMillis> {
        let give_up_at = self.give_up_at(created_at);
        if now.0 >= give_up_at.0 {
            return None;
        }
        let next = now.0.saturating_add(self.delay_ms(attempts, jitter));
        Some(UnixMillis(next.min(give_up_at.0)))
    }

    /// Exponential backoff with full jitter: uniform in [0, min(max, base × 2^attempt)].
    /// `jitter` is a uniform sample in [0, 1).
    pub fn delay_ms(&self, attempts: i64, jitter: f64) -> i64 {
        let exponent = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
        let ceiling = self
            .backoff_base_ms
            .saturating_mul(1i64 << exponent)
            .min(self.backoff_max_ms);
        ((ceiling as f64) * jitter.clamp(0.0, 1.0)) as i64
    }
}

impl Saga {
    /// The operation id of the debit and of the credit: the saga id, so a retried step is
    /// recognised downstream as the same operation.
    pub fn operation_id(&self) -> &str {
        &self.saga_id
    }

    /// The operation id of the compensation.
    pub fn refund_operation_id(&self) -> String {
        format!("{}.refund", self.saga_id)
    }

    /// Applies the outcome of the current step.
    pub fn apply(&mut self, outcome: Outcome, now: UnixMillis, policy: &RetryPolicy, jitter: f64) {
        debug_assert!(!self.status.is_terminal(), "a terminal saga runs no step");
        self.updated_at = now;
        match (self.step, outcome) {
            (_, Outcome::Transient { detail }) => {
                self.attempts = self.attempts.saturating_add(1);
                self.last_error = detail;
                self.retry_later(now, policy, jitter);
                return;
            }
            (_, Outcome::Unexpected { detail }) => {
                self.attempts = self.attempts.saturating_add(1);
                self.unexpected_failures = self.unexpected_failures.saturating_add(1);
                self.last_error = detail;
                if self.unexpected_failures >= policy.attempts_max {
                    self.last_error = format!(
                        "{} (gave up after {} unexpected answers)",
                        self.last_error, self.unexpected_failures
                    );
                    self.status = Status::NeedsOperator;
                } else {
                    self.retry_later(now, policy, jitter);
                }
                return;
            }
            (Step::ResolveGift, Outcome::Quoted(quote)) => {
                self.quote = Some(quote);
                self.step = Step::DebitCoins;
            }
            (Step::DebitCoins, Outcome::Debited { available_after }) => {
                self.sender_balance_after = Some(available_after);
                self.step = Step::CreditDiamonds;
            }
            (Step::CreditDiamonds, Outcome::Credited { diamonds }) => {
                self.coins_spent = self.quote.map_or(0, |q| q.total_coins);
                self.diamonds_credited = diamonds;
                self.finish(Status::Completed, now);
            }
            (Step::RefundCoins, Outcome::Refunded { available_after }) => {
                self.sender_balance_after = Some(available_after);
                self.coins_spent = 0;
                self.finish(Status::Compensated, now);
            }
            // Nothing moved yet: a refusal ends the saga.
            (Step::ResolveGift | Step::DebitCoins, Outcome::Refused { reason, detail }) => {
                self.rejection = reason;
                self.rejection_detail = detail;
                self.finish(Status::Rejected, now);
            }
            // The pivot refused definitely: compensate the debit.
            (Step::CreditDiamonds, Outcome::Refused { reason, detail }) => {
                self.rejection = reason;
                self.rejection_detail = detail;
                self.refund_started = true;
                self.step = Step::RefundCoins;
            }
            // A refund refused is not something retries fix: an operator must look.
            (Step::RefundCoins, Outcome::Refused { detail, .. }) => {
                self.last_error = detail;
                self.status = Status::NeedsOperator;
                return;
            }
            (step, outcome) => {
                // An answer that does not belong to the step: a bug somewhere; stop here.
                self.last_error = format!("unexpected outcome {outcome:?} at step {step:?}");
                self.status = Status::NeedsOperator;
                return;
            }
        }
        self.attempts = 0;
        self.unexpected_failures = 0;
        self.last_error.clear();
        self.next_attempt_at = now;
    }

    /// Schedules the next attempt of the current step after a failure (exponential backoff
    /// with full jitter, never past the saga's maximum age), or hands the saga to an
    /// operator if it has reached that age.
    fn retry_later(&mut self, now: UnixMillis, policy: &RetryPolicy, jitter: f64) {
        match policy.next_attempt(self.created_at, self.attempts, now, jitter) {
            Some(next) => self.next_attempt_at = next,
            None => {
                self.last_error = format!(
                    "{} (gave up: the saga reached its maximum age of {} ms)",
                    self.last_error, policy.max_age_ms
                );
                self.status = Status::NeedsOperator;
            }
        }
    }

    fn finish(&mut self, status: Status, now: UnixMillis) {
        self.status = status;
        self.step = Step::Done;
        self.completed_at = Some(now);
    }

    /// Whether the saga may go on to its next step without saving this transition (saves
    /// are what a gift costs most besides the hops). Only one transition may: a debit's
    /// success, moving on to the credit. Should the replica die before the next save,
    /// recovery redoes the debit from the last save, and the wallet answers it by its
    /// operation id with the original debit, whatever happened since; the credit had not
    /// run (it is saved, with the completion, before anyone learns of it).
    ///
    /// Every other transition is saved first: a quote (re-quoted after a price change, the
    /// debit's replay would carry other coins and be refused as a reused operation id), the
    /// turn to compensation (replayed from the debit, a reinstated creator could be credited
    /// after the refund), a wait (recovery must know when to resume) and an end.
    pub fn may_go_on_unsaved(&self, step_before: Step, now: UnixMillis) -> bool {
        step_before == Step::DebitCoins
            && self.step == Step::CreditDiamonds
            && self.status == Status::Pending
            && !self.refund_started
            && self.next_attempt_at.0 <= now.0
    }

    /// An operator's retry: a fresh budget for the step the saga stopped at. (Not a fresh
    /// age: past its maximum age a saga gets one attempt per operator retry.)
    pub fn retry(&mut self, now: UnixMillis) {
        self.status = Status::Pending;
        self.attempts = 0;
        self.unexpected_failures = 0;
        self.next_attempt_at = now;
        self.updated_at = now;
    }
}

/// What a feed event says about its gift.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The gift completed.
    Sent,
    /// An admin reversed the completed gift.
    Reversed,
}

stored_codes!(EventKind {
    Sent = 1,
    Reversed = 2,
});

/// The gift velocity limit: at most `max` sagas from one sender to one creator recorded
/// within any [`VELOCITY_WINDOW_MS`] (a sliding window, every status counted). Checked
/// when a new saga is recorded, in the same statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VelocityLimit {
    pub max: i64,
}

/// The velocity limit's window: the last minute.
pub const VELOCITY_WINDOW_MS: i64 = 60_000;

impl VelocityLimit {
    /// The limit of a setting: `None` (no limit) for 0 or less.
    pub fn of_setting(max: i64) -> Option<VelocityLimit> {
        (max > 0).then_some(VelocityLimit { max })
    }

    /// A saga recorded at `now` counts the pair's sagas created after this instant.
    pub fn window_after(now: UnixMillis) -> UnixMillis {
        UnixMillis(now.0.saturating_sub(VELOCITY_WINDOW_MS))
    }

    /// How many more sagas of a pair may be recorded when `earlier` of the same pair
    /// come before it in the same write: the limit's room, less those.
    pub fn room_after(self, earlier: i64) -> i64 {
        self.max.saturating_sub(earlier)
    }
}

/// Where a gift's admin reversal is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReversalState {
    /// Recorded (the gift is out of leaderboards and the REVERSED event published); the
    /// clawback (and refund) are being applied.
    Pending,
    /// Diamonds clawed back, and coins returned if asked.
    Done,
    /// A step got an answer no retry fixes, or ran out of retries: an operator looks
    /// (ListStuckSagas shows it; RetrySaga resumes it).
    NeedsOperator,
}

stored_codes!(ReversalState {
    Pending = 1,
    Done = 2,
    NeedsOperator = 3,
});

/// The step a reversal runs next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReversalStep {
    /// Payout takes back the diamonds the gift minted (`ClawbackDiamonds`).
    Clawback,
    /// The wallet refunds the gift's coins to the sender (`RefundCoins`), if asked.
    ReturnCoins,
    Done,
}

stored_codes!(ReversalStep {
    Clawback = 1,
    ReturnCoins = 2,
    Done = 3,
});

/// What one reversal step's call came back with, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReversalOutcome {
    /// Payout applied the clawback (or answered the original one to a retry).
    ClawedBack { diamonds: i64 },
    /// The wallet refunded the coins (or answered the original refund to a retry).
    CoinsReturned { coins: i64 },
    /// A definite answer that there is nothing to do at this step: payout has no credit for
    /// the gift (nothing was minted, nothing to take back), or the wallet says the debit was
    /// refunded already (the coins are back). The step counts as done with 0.
    NothingToDo { detail: String },
    /// Any other definite refusal (the debit unknown, the balance limit, an id reused with
    /// other parameters, ...): retrying with the same ids gets the same answer, so an
    /// operator looks at once.
    Refused { detail: String },
    /// As for a saga step: the peer is down, slow or shedding load; retried until the
    /// reversal's maximum age.
    Transient { detail: String },
    /// As for a saga step: retried within the attempt budget, then an operator looks.
    Unexpected { detail: String },
}

/// Classifies a failed call of a reversal step as the saga's [`judge`] does: waiting
/// fixes the transient failures; of the definite answers, "no credit" (clawback) and
/// "already refunded" (refund) leave nothing to do, the others need an operator.
pub fn judge_reversal(step: ReversalStep, failure: &CallFailure) -> ReversalOutcome {
    let detail = truncate(
        &format!("{}: {:?}: {}", failure.peer, failure.code, failure.message),
        DETAIL_CHARS_MAX,
    );
    if is_transient(failure) {
        return ReversalOutcome::Transient { detail };
    }
    match (step, failure.code, failure.reason.as_str()) {
        (ReversalStep::Clawback, Code::NotFound, reasons::payout::CREDIT_NOT_FOUND)
        | (
            ReversalStep::ReturnCoins,
            Code::FailedPrecondition,
            reasons::wallet::ALREADY_REFUNDED,
        ) => ReversalOutcome::NothingToDo { detail },
        (
            _,
            Code::NotFound | Code::FailedPrecondition | Code::InvalidArgument | Code::AlreadyExists,
            _,
        ) => ReversalOutcome::Refused { detail },
        _ => ReversalOutcome::Unexpected { detail },
    }
}

/// An admin's reversal of a completed gift, as persisted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reversal {
    pub saga_id: String,
    /// Who: the authenticated caller.
    pub actor: String,
    /// Why, with any "reported by" note.
    pub reason: String,
    pub return_coins: bool,
    pub state: ReversalState,
    pub step: ReversalStep,
    /// Diamonds payout took back (its answer); 0 until the clawback is done.
    pub clawed_back_diamonds: i64,
    /// Coins the wallet refunded; 0 unless asked and done.
    pub returned_coins: i64,
    /// Failed attempts of the current step.
    pub attempts: i64,
    /// Of those, the unexpected ones (the attempt budget).
    pub unexpected_failures: i64,
    pub last_error: String,
    pub next_attempt_at: UnixMillis,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    pub done_at: Option<UnixMillis>,
}

impl Reversal {
    /// A new reversal of `saga_id`: PENDING at the clawback, nothing applied.
    pub fn start(
        saga_id: String,
        actor: String,
        reason: String,
        return_coins: bool,
        now: UnixMillis,
    ) -> Reversal {
        Reversal {
            saga_id,
            actor,
            reason,
            return_coins,
            state: ReversalState::Pending,
            step: ReversalStep::Clawback,
            clawed_back_diamonds: 0,
            returned_coins: 0,
            attempts: 0,
            unexpected_failures: 0,
            last_error: String::new(),
            next_attempt_at: now,
            created_at: now,
            updated_at: now,
            done_at: None,
        }
    }

    /// Payout's clawback id: one per gift, so a retried clawback is applied once.
    pub fn clawback_id(&self) -> String {
        format!("gift:{}", self.saga_id)
    }

    /// The wallet's operation id of the coins returned (the saga's compensation is
    /// `<saga>.refund`; a completed gift never had one).
    pub fn refund_operation_id(&self) -> String {
        format!("{}.reversal", self.saga_id)
    }

    /// Applies the outcome of the current step.
    pub fn apply(
        &mut self,
        outcome: ReversalOutcome,
        now: UnixMillis,
        policy: &RetryPolicy,
        jitter: f64,
    ) {
        debug_assert_eq!(
            self.state,
            ReversalState::Pending,
            "only a pending reversal runs"
        );
        self.updated_at = now;
        match (self.step, outcome) {
            (_, ReversalOutcome::Transient { detail }) => {
                self.attempts = self.attempts.saturating_add(1);
                self.last_error = detail;
                self.retry_later(now, policy, jitter);
                return;
            }
            (_, ReversalOutcome::Unexpected { detail }) => {
                self.attempts = self.attempts.saturating_add(1);
                self.unexpected_failures = self.unexpected_failures.saturating_add(1);
                self.last_error = detail;
                if self.unexpected_failures >= policy.attempts_max {
                    self.last_error = format!(
                        "{} (gave up after {} unexpected answers)",
                        self.last_error, self.unexpected_failures
                    );
                    self.state = ReversalState::NeedsOperator;
                } else {
                    self.retry_later(now, policy, jitter);
                }
                return;
            }
            (_, ReversalOutcome::Refused { detail }) => {
                self.last_error = detail;
                self.state = ReversalState::NeedsOperator;
                return;
            }
            (ReversalStep::Clawback, ReversalOutcome::ClawedBack { diamonds }) => {
                self.clawed_back_diamonds = diamonds;
                self.after_clawback(now);
            }
            (ReversalStep::Clawback, ReversalOutcome::NothingToDo { .. }) => {
                self.clawed_back_diamonds = 0;
                self.after_clawback(now);
            }
            (ReversalStep::ReturnCoins, ReversalOutcome::CoinsReturned { coins }) => {
                self.returned_coins = coins;
                self.finish(now);
            }
            (ReversalStep::ReturnCoins, ReversalOutcome::NothingToDo { .. }) => {
                self.returned_coins = 0;
                self.finish(now);
            }
            (step, outcome) => {
                self.last_error = format!("unexpected outcome {outcome:?} at step {step:?}");
                self.state = ReversalState::NeedsOperator;
                return;
            }
        }
        self.attempts = 0;
        self.unexpected_failures = 0;
        self.last_error.clear();
        self.next_attempt_at = now;
    }

    fn after_clawback(&mut self, now: UnixMillis) {
        if self.return_coins {
            self.step = ReversalStep::ReturnCoins;
        } else {
            self.finish(now);
        }
    }

    fn finish(&mut self, now: UnixMillis) {
        self.state = ReversalState::Done;
        self.step = ReversalStep::Done;
        self.done_at = Some(now);
    }

    fn retry_later(&mut self, now: UnixMillis, policy: &RetryPolicy, jitter: f64) {
        match policy.next_attempt(self.created_at, self.attempts, now, jitter) {
            Some(next) => self.next_attempt_at = next,
            None => {
                self.last_error = format!(
                    "{} (gave up: the reversal reached its maximum age of {} ms)",
                    self.last_error, policy.max_age_ms
                );
                self.state = ReversalState::NeedsOperator;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_a_debits_success_goes_on_unsaved() {
        let policy = RetryPolicy::default();
        let now = UnixMillis(1_000);
        let quote = Quote {
            gift_version: 1,
            unit_price_coins: 10,
            total_coins: 10,
            creator_share_bps: 5_000,
            economy_version: 1,
        };
        let mut saga = saga();
        saga.apply(Outcome::Quoted(quote), now, &policy, 0.5);
        assert!(
            !saga.may_go_on_unsaved(Step::ResolveGift, now),
            "a quote is saved"
        );
        let mut waiting = saga.clone();
        waiting.apply(
            Outcome::Transient {
                detail: "down".into(),
            },
            now,
            &policy,
            0.5,
        );
        assert!(
            !waiting.may_go_on_unsaved(Step::DebitCoins, now),
            "a wait is saved"
        );
        saga.apply(Outcome::Debited { available_after: 0 }, now, &policy, 0.5);
        assert!(saga.may_go_on_unsaved(Step::DebitCoins, now));
        let mut refused = saga.clone();
        refused.apply(
            Outcome::Refused {
                reason: Rejection::CreatorSuspended,
                detail: "suspended".into(),
            },
            now,
            &policy,
            0.5,
        );
        assert!(
            !refused.may_go_on_unsaved(Step::CreditDiamonds, now),
            "the turn to compensation is saved"
        );
        saga.apply(Outcome::Credited { diamonds: 5 }, now, &policy, 0.5);
        assert!(
            !saga.may_go_on_unsaved(Step::CreditDiamonds, now),
            "an end is saved"
        );
    }

    fn id(raw: &str) -> ResourceId {
        ResourceId::parse(raw).unwrap()
    }

    fn saga() -> Saga {
        Saga::start(
            "sg_1".into(),
            GiftOrder {
                sender_user_id: id("alice"),
                creator_id: id("bob"),
                stream_id: id("s1"),
                gift_id: id("rose"),
                quantity: Quantity::parse(3).unwrap(),
                message: Text::parse("").unwrap(),
            },
            UnixMillis(0),
        )
    }

    /// Each value's code, and that the code reads back as the value.
    fn assert_codes<T: Copy + PartialEq + std::fmt::Debug>(
        table: &[(T, i64)],
        code: fn(T) -> i64,
        from_code: fn(i64) -> Option<T>,
    ) {
        for &(value, expected) in table {
            assert_eq!((code(value), from_code(expected)), (expected, Some(value)));
        }
    }

    /// The stored codes are the contract's numbers, and each reads back as its value.
    #[test]
    fn stored_codes_read_back() {
        use Rejection as R;
        use Status as S;
        use Step as T;
        let statuses = [(S::Pending, 1), (S::Completed, 2), (S::Rejected, 3)];
        assert_codes(&statuses, S::code, S::from_code);
        assert_codes(
            &[(S::Compensated, 4), (S::NeedsOperator, 5)],
            S::code,
            S::from_code,
        );
        let steps = [
            (T::ResolveGift, 1),
            (T::DebitCoins, 2),
            (T::CreditDiamonds, 3),
        ];
        assert_codes(&steps, T::code, T::from_code);
        assert_codes(&[(T::RefundCoins, 4), (T::Done, 5)], T::code, T::from_code);
        let refusals = [
            (R::None, 0),
            (R::InsufficientCoins, 1),
            (R::SpendCapExceeded, 2),
            (R::MinorAccount, 3),
            (R::AccountInDebt, 4),
            (R::SenderNotFound, 5),
            (R::GiftNotFound, 6),
            (R::GiftUnavailable, 7),
            (R::CreatorNotFound, 8),
            (R::CreatorSuspended, 9),
            (R::Other, 10),
        ];
        assert_codes(&refusals, R::code, R::from_code);
        assert_eq!(
            (S::from_code(0), T::from_code(6), R::from_code(11)),
            (None, None, None)
        );
    }

    const QUOTE: Quote = Quote {
        gift_version: 1,
        unit_price_coins: 10,
        total_coins: 30,
        creator_share_bps: 5_000,
        economy_version: 1,
    };

    #[test]
    fn the_happy_path_completes() {
        let mut s = saga();
        let p = RetryPolicy::default();
        s.apply(Outcome::Quoted(QUOTE), UnixMillis(1), &p, 0.5);
        s.apply(
            Outcome::Debited {
                available_after: 70,
            },
            UnixMillis(2),
            &p,
            0.5,
        );
        s.apply(Outcome::Credited { diamonds: 15 }, UnixMillis(3), &p, 0.5);
        assert_eq!(
            (s.status, s.coins_spent, s.diamonds_credited),
            (Status::Completed, 30, 15)
        );
    }

    #[test]
    fn a_refused_credit_is_compensated_and_an_ambiguous_one_is_retried() {
        let mut s = saga();
        let p = RetryPolicy {
            attempts_max: 3,
            ..Default::default()
        };
        s.apply(Outcome::Quoted(QUOTE), UnixMillis(1), &p, 0.5);
        s.apply(
            Outcome::Debited {
                available_after: 70,
            },
            UnixMillis(2),
            &p,
            0.5,
        );
        s.apply(
            Outcome::Transient {
                detail: "timeout".into(),
            },
            UnixMillis(3),
            &p,
            0.5,
        );
        assert_eq!(
            (s.status, s.step, s.attempts),
            (Status::Pending, Step::CreditDiamonds, 1),
            "never compensate on ambiguity"
        );
        s.apply(
            Outcome::Refused {
                reason: Rejection::CreatorSuspended,
                detail: "suspended".into(),
            },
            UnixMillis(4),
            &p,
            0.5,
        );
        assert_eq!(s.step, Step::RefundCoins);
        s.apply(
            Outcome::Refunded {
                available_after: 100,
            },
            UnixMillis(5),
            &p,
            0.5,
        );
        assert_eq!(
            (s.status, s.coins_spent, s.rejection),
            (Status::Compensated, 0, Rejection::CreatorSuspended)
        );
    }

    #[test]
    fn unexpected_answers_spend_the_budget_and_then_ask_an_operator() {
        let mut s = saga();
        let p = RetryPolicy {
            attempts_max: 2,
            ..Default::default()
        };
        s.apply(
            Outcome::Unexpected {
                detail: "odd".into(),
            },
            UnixMillis(1),
            &p,
            0.5,
        );
        assert_eq!(s.status, Status::Pending);
        s.apply(
            Outcome::Unexpected {
                detail: "odd".into(),
            },
            UnixMillis(2),
            &p,
            0.5,
        );
        assert_eq!(s.status, Status::NeedsOperator);
        assert!(
            s.last_error.contains("2 unexpected answers"),
            "{}",
            s.last_error
        );
        s.retry(UnixMillis(3));
        assert_eq!(
            (s.status, s.attempts, s.unexpected_failures, s.step),
            (Status::Pending, 0, 0, Step::ResolveGift)
        );
    }

    /// The issue-11 outage: with the shipped policy, a peer down for two minutes (or an
    /// hour) is waited for; the old policy (12 attempts capped at 5 s) gave up within
    /// about 16 s on average.
    #[test]
    fn a_peer_down_for_an_hour_is_waited_for_and_a_day_is_too_long() {
        let p = RetryPolicy::default();
        let mut s = saga();
        s.apply(Outcome::Quoted(QUOTE), UnixMillis(0), &p, 0.5);
        let mut now = UnixMillis(0);
        let mut attempts = 0;
        while now.0 < 3_600_000 {
            s.apply(
                Outcome::Transient {
                    detail: "wallet: Unavailable: tcp connect error".into(),
                },
                now,
                &p,
                0.999,
            );
            attempts += 1;
            assert_eq!((s.status, s.step), (Status::Pending, Step::DebitCoins));
            assert!(s.next_attempt_at.0 > now.0 && s.next_attempt_at.0 <= now.0 + 30_000);
            now = s.next_attempt_at;
        }
        assert_eq!(s.attempts, attempts);
        // The wallet is back: the saga goes on with a fresh count.
        s.apply(
            Outcome::Debited {
                available_after: 70,
            },
            now,
            &p,
            0.5,
        );
        assert_eq!((s.step, s.attempts), (Step::CreditDiamonds, 0));
        // Past the maximum age a transient failure is handed to an operator.
        s.apply(
            Outcome::Transient {
                detail: "payout: Unavailable".into(),
            },
            UnixMillis(p.max_age_ms),
            &p,
            0.5,
        );
        assert_eq!(s.status, Status::NeedsOperator);
        assert!(s.last_error.contains("maximum age"), "{}", s.last_error);
    }

    fn failure(code: Code, reason: &str, no_answer: bool) -> CallFailure {
        CallFailure {
            peer: "wallet",
            code,
            reason: reason.into(),
            message: "m".into(),
            no_answer,
        }
    }

    #[test]
    fn a_spend_cap_is_a_refusal_and_load_shedding_is_transient() {
        assert_eq!(
            judge(
                Step::DebitCoins,
                &failure(
                    Code::ResourceExhausted,
                    reasons::wallet::SPEND_CAP_EXCEEDED,
                    false
                )
            ),
            Outcome::Refused {
                reason: Rejection::SpendCapExceeded,
                detail: "m".into()
            }
        );
        for step in [Step::DebitCoins, Step::CreditDiamonds, Step::RefundCoins] {
            assert!(matches!(
                judge(step, &failure(Code::ResourceExhausted, "", false)),
                Outcome::Transient { .. }
            ));
        }
        // A business reason the saga does not know: not waited for forever.
        assert!(matches!(
            judge(
                Step::DebitCoins,
                &failure(Code::ResourceExhausted, "SOME_QUOTA", false)
            ),
            Outcome::Unexpected { .. }
        ));
        assert!(matches!(
            judge(Step::CreditDiamonds, &failure(Code::Internal, "", false)),
            Outcome::Unexpected { .. }
        ));
        // A connection broken mid-call comes back as INTERNAL or UNKNOWN made by the
        // client: transient.
        for code in [Code::Internal, Code::Unknown] {
            assert!(matches!(
                judge(Step::CreditDiamonds, &failure(code, "", true)),
                Outcome::Transient { .. }
            ));
        }
    }

    fn reversal(return_coins: bool) -> Reversal {
        Reversal::start(
            "sg_1".into(),
            "ops".into(),
            "fraud".into(),
            return_coins,
            UnixMillis(0),
        )
    }

    #[test]
    fn a_reversal_claws_back_then_returns_the_coins_if_asked() {
        let p = RetryPolicy::default();
        let mut kept = reversal(false);
        kept.apply(
            ReversalOutcome::ClawedBack { diamonds: 50 },
            UnixMillis(1),
            &p,
            0.5,
        );
        assert_eq!(
            (
                kept.state,
                kept.step,
                kept.clawed_back_diamonds,
                kept.returned_coins
            ),
            (ReversalState::Done, ReversalStep::Done, 50, 0)
        );
        let mut returned = reversal(true);
        returned.apply(
            ReversalOutcome::ClawedBack { diamonds: 50 },
            UnixMillis(1),
            &p,
            0.5,
        );
        assert_eq!(returned.step, ReversalStep::ReturnCoins);
        returned.apply(
            ReversalOutcome::Transient {
                detail: "down".into(),
            },
            UnixMillis(2),
            &p,
            0.5,
        );
        assert_eq!(
            (returned.state, returned.step, returned.attempts),
            (ReversalState::Pending, ReversalStep::ReturnCoins, 1)
        );
        returned.apply(
            ReversalOutcome::CoinsReturned { coins: 100 },
            UnixMillis(3),
            &p,
            0.5,
        );
        assert_eq!(
            (returned.state, returned.returned_coins, returned.done_at),
            (ReversalState::Done, 100, Some(UnixMillis(3)))
        );
        assert_eq!(
            (returned.clawback_id(), returned.refund_operation_id()),
            ("gift:sg_1".to_string(), "sg_1.reversal".to_string())
        );
    }

    #[test]
    fn a_reversal_step_refused_for_good_asks_an_operator_and_nothing_to_do_is_done() {
        let p = RetryPolicy::default();
        let payout = |code, reason: &str| CallFailure {
            peer: "payout",
            code,
            reason: reason.into(),
            message: "m".into(),
            no_answer: false,
        };
        let no_credit = judge_reversal(
            ReversalStep::Clawback,
            &payout(Code::NotFound, reasons::payout::CREDIT_NOT_FOUND),
        );
        assert!(matches!(no_credit, ReversalOutcome::NothingToDo { .. }));
        let refunded = judge_reversal(
            ReversalStep::ReturnCoins,
            &payout(Code::FailedPrecondition, reasons::wallet::ALREADY_REFUNDED),
        );
        assert!(matches!(refunded, ReversalOutcome::NothingToDo { .. }));
        let mut r = reversal(true);
        r.apply(no_credit, UnixMillis(1), &p, 0.5);
        r.apply(refunded, UnixMillis(2), &p, 0.5);
        assert_eq!(
            (r.state, r.clawed_back_diamonds, r.returned_coins),
            (ReversalState::Done, 0, 0)
        );

        let limit = judge_reversal(
            ReversalStep::ReturnCoins,
            &payout(Code::FailedPrecondition, reasons::wallet::BALANCE_LIMIT),
        );
        assert!(matches!(limit, ReversalOutcome::Refused { .. }));
        let mut r = reversal(true);
        r.apply(
            ReversalOutcome::ClawedBack { diamonds: 5 },
            UnixMillis(1),
            &p,
            0.5,
        );
        r.apply(limit, UnixMillis(2), &p, 0.5);
        assert_eq!(
            (r.state, r.step, r.clawed_back_diamonds),
            (ReversalState::NeedsOperator, ReversalStep::ReturnCoins, 5)
        );
        assert!(matches!(
            judge_reversal(ReversalStep::Clawback, &payout(Code::Unavailable, "")),
            ReversalOutcome::Transient { .. }
        ));
        assert!(matches!(
            judge_reversal(ReversalStep::Clawback, &payout(Code::Unimplemented, "")),
            ReversalOutcome::Unexpected { .. }
        ));
    }

    #[test]
    fn the_velocity_window_is_the_last_minute_and_zero_is_no_limit() {
        assert_eq!(VelocityLimit::of_setting(0), None);
        let limit = VelocityLimit::of_setting(3).unwrap();
        assert_eq!(
            VelocityLimit::window_after(UnixMillis(100_000)),
            UnixMillis(40_000)
        );
        assert_eq!((limit.room_after(0), limit.room_after(3)), (3, 0));
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            Just(Step::ResolveGift),
            Just(Step::DebitCoins),
            Just(Step::CreditDiamonds),
            Just(Step::RefundCoins),
        ]
    }

    fn any_code() -> impl Strategy<Value = Code> {
        (0i32..17).prop_map(Code::from_i32)
    }

    fn reason() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just(reasons::wallet::SPEND_CAP_EXCEEDED.to_owned()),
            Just(reasons::wallet::INSUFFICIENT_COINS.to_owned()),
            Just(reasons::payout::CREATOR_SUSPENDED.to_owned()),
            "[A-Z_]{1,20}",
        ]
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Outcome::Quoted(QUOTE)),
            (0i64..1000).prop_map(|a| Outcome::Debited { available_after: a }),
            Just(Outcome::Credited { diamonds: 15 }),
            (0i64..1000).prop_map(|a| Outcome::Refunded { available_after: a }),
            Just(Outcome::Refused {
                reason: Rejection::Other,
                detail: "no".into()
            }),
            Just(Outcome::Transient { detail: "?".into() }),
            Just(Outcome::Unexpected { detail: "!".into() }),
        ]
    }

    proptest! {
        /// I3 at the state machine: a terminal saga moved coins and diamonds together or
        /// not at all. Outcomes are applied the way the driver applies them: each is the
        /// answer of the step the saga is at, when that step is a call that could give it.
        #[test]
        fn terminal_sagas_are_all_or_nothing(outcomes in proptest::collection::vec(outcome(), 1..30), jitter in 0.0f64..1.0) {
            let mut s = saga();
            let p = RetryPolicy { attempts_max: 5, ..Default::default() };
            let (mut debited, mut credited, mut refunded) = (false, false, false);
            for (i, o) in outcomes.into_iter().enumerate() {
                if s.status != Status::Pending { break; }
                let fits = matches!(
                    (s.step, &o),
                    (_, Outcome::Transient { .. }) | (_, Outcome::Unexpected { .. })
                        | (_, Outcome::Refused { .. })
                        | (Step::ResolveGift, Outcome::Quoted(_))
                        | (Step::DebitCoins, Outcome::Debited { .. })
                        | (Step::CreditDiamonds, Outcome::Credited { .. })
                        | (Step::RefundCoins, Outcome::Refunded { .. })
                );
                if !fits { continue; }
                match &o {
                    Outcome::Debited { .. } => debited = true,
                    Outcome::Credited { .. } => credited = true,
                    Outcome::Refunded { .. } => refunded = true,
                    _ => {}
                }
                s.apply(o, UnixMillis(i as i64), &p, jitter);
            }
            match s.status {
                Status::Completed => prop_assert!(debited && credited && !refunded && s.coins_spent == 30),
                Status::Compensated => prop_assert!(debited && !credited && refunded && s.coins_spent == 0),
                Status::Rejected => prop_assert!(!debited && !credited && s.coins_spent == 0),
                Status::Pending | Status::NeedsOperator => prop_assert_eq!(s.coins_spent, 0),
            }
        }

        /// A peer that does not answer, or answers UNAVAILABLE, DEADLINE_EXCEEDED,
        /// CANCELLED, ABORTED or a reason-less RESOURCE_EXHAUSTED, is never a refusal and
        /// never an unexpected answer, at any step: it is waited for.
        #[test]
        fn an_unreachable_or_overloaded_peer_is_transient(
            step in step(),
            code in any_code(),
            reason in reason(),
            no_answer in any::<bool>(),
        ) {
            let outcome = judge(step, &failure(code, &reason, no_answer));
            let waitable = no_answer
                || matches!(code, Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted)
                || (code == Code::ResourceExhausted && reason.is_empty());
            prop_assert_eq!(matches!(outcome, Outcome::Transient { .. }), waitable, "{:?}", outcome);
            if let Outcome::Refused { reason: r, .. } = outcome {
                // A refusal is only ever the peer's own definite answer.
                prop_assert!(matches!(code, Code::NotFound | Code::FailedPrecondition | Code::InvalidArgument | Code::ResourceExhausted));
                prop_assert!(code != Code::ResourceExhausted || r == Rejection::SpendCapExceeded);
            }
        }

        /// Transient failures at any times within the maximum age keep the saga PENDING at
        /// its step, each next attempt after the failure, at most the cap later, never
        /// past the maximum age; the first one at or past that age hands it to an operator.
        #[test]
        fn transient_failures_wait_until_the_maximum_age(
            gaps in proptest::collection::vec(0i64..120_000, 1..200),
            jitters in proptest::collection::vec(0.0f64..1.0, 200),
            max_age_ms in 1i64..10_000_000,
            backoff_max_ms in 1i64..60_000,
            attempts_max in 1i64..20,
        ) {
            let p = RetryPolicy { attempts_max, backoff_base_ms: 50, backoff_max_ms, max_age_ms };
            let mut s = saga();
            let mut now = 0i64;
            for (gap, jitter) in gaps.into_iter().zip(jitters) {
                now += gap;
                let before = s.clone();
                s.apply(Outcome::Transient { detail: "down".into() }, UnixMillis(now), &p, jitter);
                prop_assert_eq!(s.step, Step::ResolveGift);
                prop_assert_eq!(s.attempts, before.attempts + 1);
                prop_assert_eq!(s.unexpected_failures, 0);
                if now >= max_age_ms {
                    prop_assert_eq!(s.status, Status::NeedsOperator);
                    break;
                }
                prop_assert_eq!(s.status, Status::Pending);
                prop_assert!(s.next_attempt_at.0 >= now);
                prop_assert!(s.next_attempt_at.0 <= (now + backoff_max_ms).min(max_age_ms));
            }
        }

        /// However many transient failures came first, the unexpected answers alone spend
        /// the attempt budget.
        #[test]
        fn only_unexpected_answers_spend_the_attempt_budget(
            kinds in proptest::collection::vec(any::<bool>(), 1..100),
            attempts_max in 1i64..10,
        ) {
            let p = RetryPolicy { attempts_max, ..Default::default() };
            let mut s = saga();
            let mut unexpected = 0;
            for (i, is_unexpected) in kinds.into_iter().enumerate() {
                let outcome = if is_unexpected {
                    unexpected += 1;
                    Outcome::Unexpected { detail: "odd".into() }
                } else {
                    Outcome::Transient { detail: "down".into() }
                };
                s.apply(outcome, UnixMillis(i as i64), &p, 0.5);
                if unexpected >= attempts_max {
                    prop_assert_eq!(s.status, Status::NeedsOperator);
                    break;
                }
                prop_assert_eq!(s.status, Status::Pending);
                prop_assert_eq!(s.unexpected_failures, unexpected);
            }
        }

        /// Full jitter: a delay is within [0, min(cap, base × 2^attempts)].
        #[test]
        fn a_delay_is_within_its_ceiling(
            attempts in 0i64..1_000,
            jitter in 0.0f64..1.0,
            base in 1i64..1_000,
            cap in 1i64..120_000,
        ) {
            let p = RetryPolicy { backoff_base_ms: base, backoff_max_ms: cap, ..Default::default() };
            let d = p.delay_ms(attempts, jitter);
            let ceiling = base.saturating_mul(1i64 << attempts.clamp(0, 20)).min(cap);
            prop_assert!((0..=ceiling).contains(&d), "{} not in 0..={}", d, ceiling);
        }
    }
}
