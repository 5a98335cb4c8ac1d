//! The sandbox provider: test tokens choose the outcome, no real money moves. It runs only
//! with `OVATION_ALLOW_SANDBOX=true` (development, tests, demos).

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::BoxFuture;

use super::{ChargeOutcome, ChargeRequest, PaymentProvider};

/// Sandbox tokens (documented in the README):
pub const TOKEN_OK: &str = "tok_sandbox_ok";
/// Declined: `card_declined`.
pub const TOKEN_DECLINE: &str = "tok_sandbox_decline";
/// The provider errors (without charging) on the first attempt; a retry succeeds.
pub const TOKEN_TRANSIENT: &str = "tok_sandbox_transient";
/// The first attempt charges but its answer is lost; a retry returns the same charge.
pub const TOKEN_LOST: &str = "tok_sandbox_lost";

/// The sandbox provider. It stands for an external system, so its state (who was
/// charged) lives as long as the value does: share one across a simulated restart.
#[derive(Debug, Default)]
pub struct SandboxProvider {
    state: Mutex<SandboxState>,
}

#[derive(Debug, Default)]
struct SandboxState {
    /// purchase id → (reference, amount, currency)
    charges: HashMap<String, (String, i64, String)>,
    /// purchase id → attempts seen
    attempts: HashMap<String, u32>,
}

impl SandboxProvider {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times money was actually taken for a purchase (0 or 1 if idempotent).
    pub fn charges_for(&self, purchase_id: &str) -> usize {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        usize::from(state.charges.contains_key(purchase_id))
    }

    /// Every charge: (purchase id, amount, currency).
    pub fn charges(&self) -> Vec<(String, i64, String)> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .charges
            .iter()
            .map(|(id, (_, amount, currency))| (id.clone(), *amount, currency.clone()))
            .collect()
    }

    fn decide(&self, request: &ChargeRequest) -> ChargeOutcome {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let attempt = {
            let n = state
                .attempts
                .entry(request.purchase_id.clone())
                .or_insert(0);
            *n += 1;
            *n
        };
        if let Some((reference, _, _)) = state.charges.get(&request.purchase_id) {
            return ChargeOutcome::Charged {
                reference: reference.clone(),
            };
        }
        let charge = |state: &mut SandboxState| {
            let reference = format!("sandbox_ch_{}", request.purchase_id);
            state.charges.insert(
                request.purchase_id.clone(),
                (
                    reference.clone(),
                    request.amount_minor,
                    request.currency_code.clone(),
                ),
            );
            reference
        };
        match request.payment_token.as_str() {
            TOKEN_OK => ChargeOutcome::Charged {
                reference: charge(&mut state),
            },
            TOKEN_DECLINE => ChargeOutcome::Declined {
                reason: "card_declined".into(),
            },
            TOKEN_TRANSIENT if attempt == 1 => ChargeOutcome::Unknown {
                detail: "sandbox: provider temporarily unavailable".into(),
            },
            TOKEN_TRANSIENT => ChargeOutcome::Charged {
                reference: charge(&mut state),
            },
            TOKEN_LOST => {
                charge(&mut state);
                ChargeOutcome::Unknown {
                    detail: "sandbox: charged, but the answer was lost".into(),
                }
            }
            _ => ChargeOutcome::Declined {
                reason: "sandbox: unknown test token".into(),
            },
        }
    }
}

impl PaymentProvider for SandboxProvider {
    fn charge<'a>(&'a self, request: &'a ChargeRequest) -> BoxFuture<'a, ChargeOutcome> {
        Box::pin(async move { self.decide(request) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str, token: &str) -> ChargeRequest {
        ChargeRequest {
            purchase_id: id.into(),
            currency_code: "USD".into(),
            amount_minor: 139,
            payment_token: token.into(),
            provider_reference: None,
        }
    }

    #[tokio::test]
    async fn a_lost_answer_is_charged_once_and_answered_on_retry() {
        let sandbox = SandboxProvider::new();
        let first = sandbox.charge(&request("p1", TOKEN_LOST)).await;
        assert!(matches!(first, ChargeOutcome::Unknown { .. }));
        assert_eq!(sandbox.charges_for("p1"), 1);
        let again = sandbox.charge(&request("p1", TOKEN_LOST)).await;
        assert!(matches!(again, ChargeOutcome::Charged { .. }));
        assert_eq!(sandbox.charges().len(), 1);
    }

    #[tokio::test]
    async fn tokens_choose_the_outcome() {
        let sandbox = SandboxProvider::new();
        assert!(matches!(
            sandbox.charge(&request("a", TOKEN_OK)).await,
            ChargeOutcome::Charged { .. }
        ));
        assert!(matches!(
            sandbox.charge(&request("b", TOKEN_DECLINE)).await,
            ChargeOutcome::Declined { .. }
        ));
        assert!(matches!(
            sandbox.charge(&request("c", TOKEN_TRANSIENT)).await,
            ChargeOutcome::Unknown { .. }
        ));
        assert_eq!(sandbox.charges_for("c"), 0);
        assert!(matches!(
            sandbox.charge(&request("c", TOKEN_TRANSIENT)).await,
            ChargeOutcome::Charged { .. }
        ));
    }
}
