//! The gift saga as a state machine: plain data and pure transitions, no I/O.
//!
//! Steps: resolve the gift (catalog) → debit coins (wallet, compensatable) → credit
//! diamonds (payout, the pivot) → done; a definite refusal of the credit runs the
//! compensation (refund coins) instead. An ambiguous outcome never moves the saga to
//! another step: the same step is retried with the same operation id until it answers
//! definitely, or the retry budget runs out and an operator is asked (NEEDS_OPERATOR).

use ovation_types::UnixMillis;

/// Status of a saga (values as in the contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pending = 1,
    Completed = 2,
    Rejected = 3,
    Compensated = 4,
    NeedsOperator = 5,
}

impl Status {
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => Status::Pending,
            2 => Status::Completed,
            3 => Status::Rejected,
            4 => Status::Compensated,
            5 => Status::NeedsOperator,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Rejected | Status::Compensated
        )
    }
}

/// The step a saga runs next (values as in the contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    ResolveGift = 1,
    DebitCoins = 2,
    CreditDiamonds = 3,
    RefundCoins = 4,
    Done = 5,
}

impl Step {
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => Step::ResolveGift,
            2 => Step::DebitCoins,
            3 => Step::CreditDiamonds,
            4 => Step::RefundCoins,
            5 => Step::Done,
            _ => return None,
        })
    }
}

/// Why a saga was REJECTED or COMPENSATED (values as in the contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
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
}

impl Rejection {
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Rejection::None,
            1 => Rejection::InsufficientCoins,
            2 => Rejection::SpendCapExceeded,
            3 => Rejection::MinorAccount,
            4 => Rejection::AccountInDebt,
            5 => Rejection::SenderNotFound,
            6 => Rejection::GiftNotFound,
            7 => Rejection::GiftUnavailable,
            8 => Rejection::CreatorNotFound,
            9 => Rejection::CreatorSuspended,
            10 => Rejection::Other,
            _ => return None,
        })
    }
}

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
    /// No definite answer (timeout, UNAVAILABLE, lost reply): retry the same step.
    Transient {
        detail: String,
    },
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
    pub attempts: i64,
    pub last_error: String,
    pub next_attempt_at: UnixMillis,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    pub completed_at: Option<UnixMillis>,
}

/// What a sender asked for: the parts of a saga that come from the SendGift request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GiftOrder {
    pub sender_user_id: String,
    pub creator_id: String,
    pub stream_id: String,
    pub gift_id: String,
    pub quantity: i32,
    pub message: String,
}

impl Saga {
    /// A new saga for `order`: PENDING at its first step, nothing quoted, nothing moved.
    pub fn start(saga_id: String, order: GiftOrder, now: UnixMillis) -> Saga {
        Saga {
            saga_id,
            sender_user_id: order.sender_user_id,
            creator_id: order.creator_id,
            stream_id: order.stream_id,
            gift_id: order.gift_id,
            quantity: order.quantity,
            message: order.message,
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
            last_error: String::new(),
            next_attempt_at: now,
            created_at: now,
            updated_at: now,
            completed_at: None,
        }
    }
}

/// Retry policy for a step's transient failures.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts per step before the saga is handed to an operator.
    pub attempts_max: i64,
    pub backoff_base_ms: i64,
    pub backoff_max_ms: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts_max: 12,
            backoff_base_ms: 50,
            backoff_max_ms: 5_000,
        }
    }
}

impl RetryPolicy {
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
                self.attempts += 1;
                self.last_error = detail;
                if self.attempts >= policy.attempts_max {
                    self.status = Status::NeedsOperator;
                } else {
                    self.next_attempt_at =
                        UnixMillis(now.0.saturating_add(policy.delay_ms(self.attempts, jitter)));
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
        self.last_error.clear();
        self.next_attempt_at = now;
    }

    fn finish(&mut self, status: Status, now: UnixMillis) {
        self.status = status;
        self.step = Step::Done;
        self.completed_at = Some(now);
    }

    /// An operator's retry: a fresh budget for the step the saga stopped at.
    pub fn retry(&mut self, now: UnixMillis) {
        self.status = Status::Pending;
        self.attempts = 0;
        self.next_attempt_at = now;
        self.updated_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn saga() -> Saga {
        Saga::start(
            "sg_1".into(),
            GiftOrder {
                sender_user_id: "alice".into(),
                creator_id: "bob".into(),
                stream_id: "s1".into(),
                gift_id: "rose".into(),
                quantity: 3,
                message: String::new(),
            },
            UnixMillis(0),
        )
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
    fn the_budget_hands_the_saga_to_an_operator() {
        let mut s = saga();
        let p = RetryPolicy {
            attempts_max: 2,
            ..Default::default()
        };
        s.apply(
            Outcome::Transient {
                detail: "down".into(),
            },
            UnixMillis(1),
            &p,
            0.5,
        );
        s.apply(
            Outcome::Transient {
                detail: "down".into(),
            },
            UnixMillis(2),
            &p,
            0.5,
        );
        assert_eq!(s.status, Status::NeedsOperator);
        s.retry(UnixMillis(3));
        assert_eq!(
            (s.status, s.attempts, s.step),
            (Status::Pending, 0, Step::ResolveGift)
        );
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
                    (_, Outcome::Transient { .. }) | (_, Outcome::Refused { .. })
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
    }
}
