//! Stripe cards: a PaymentIntent created and confirmed server-side.
//!
//! `POST /v1/payment_intents` (form-encoded: amount, currency, payment_method,
//! `payment_method_types[]=card`, confirm=true, `metadata[purchase_id]`) with the
//! purchase id as `Idempotency-Key`: Stripe answers a replayed key with the first answer
//! and never creates a second intent, so the wallet's retries (an answer lost, a 5xx, a
//! timeout) charge once. How Stripe's answers map:
//! - 200 `succeeded` → Charged (reference = the intent id);
//! - 200 `requires_action` → NeedsAction (the client secret and `next_action` for the
//!   client; `payment_intent.succeeded` arrives by webhook once the customer authenticated);
//! - 200 `requires_payment_method` / `canceled`, 402 `card_error`, 400 → Declined (the
//!   decline code, else the error code): definitely not charged;
//! - 200 `processing`, 401/403/409/429/5xx, a transport error or timeout → Unknown: the
//!   wallet retries with the same key.
//!
//! A purchase whose intent is known (it waited for the customer) is looked up with
//! `GET /v1/payment_intents/{id}` instead.

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use ovation_server::StartError;
use serde_json::Value;

use super::{ChargeOutcome, ChargeRequest, PaymentProvider};
use crate::domain::NextAction;

/// Stripe's API, unless configured otherwise (tests point it at an in-test server).
pub const API_BASE_DEFAULT: &str = "https://api.stripe.com";

/// The Stripe settings.
#[derive(clap::Args, Clone, Debug)]
pub struct StripeArgs {
    /// Stripe's API base URL.
    #[arg(id = "stripe_api_base", long = "stripe-api-base", env = "OVATION_STRIPE_API_BASE", default_value = API_BASE_DEFAULT)]
    pub api_base: String,
    /// A file holding the Stripe secret key (sk_…); never logged.
    #[arg(
        id = "stripe_secret_key_file",
        long = "stripe-secret-key-file",
        env = "OVATION_STRIPE_SECRET_KEY_FILE"
    )]
    pub secret_key_file: Option<PathBuf>,
    /// A file holding the webhook endpoint's signing secrets (whsec_…), one per line (two
    /// while rolling a secret).
    #[arg(
        id = "stripe_webhook_secrets_file",
        long = "stripe-webhook-secrets-file",
        env = "OVATION_STRIPE_WEBHOOK_SECRETS_FILE"
    )]
    pub webhook_secrets_file: Option<PathBuf>,
    /// Largest accepted age of a webhook's signature timestamp, in seconds (replay
    /// protection).
    #[arg(
        id = "stripe_webhook_tolerance_secs", long = "stripe-webhook-tolerance-secs",
        env = "OVATION_STRIPE_WEBHOOK_TOLERANCE_SECS",
        default_value_t = ovation_webhooks::stripe_signature::TOLERANCE_SECS_DEFAULT
    )]
    pub webhook_tolerance_secs: u64,
    /// Longest one call to Stripe may take, in milliseconds (then the outcome is unknown
    /// and retried with the same key). Keep it below OVATION_WALLET_CHARGE_TIMEOUT_MS.
    #[arg(
        id = "stripe_request_timeout_ms",
        long = "stripe-request-timeout-ms",
        env = "OVATION_STRIPE_REQUEST_TIMEOUT_MS",
        default_value_t = 2_500
    )]
    pub request_timeout_ms: u64,
    /// Where Stripe sends the customer back after a redirect-based authentication; unset:
    /// only in-app (Stripe.js / SDK) authentication (`use_stripe_sdk`).
    #[arg(
        id = "stripe_return_url",
        long = "stripe-return-url",
        env = "OVATION_STRIPE_RETURN_URL"
    )]
    pub return_url: Option<String>,
}

impl Default for StripeArgs {
    fn default() -> Self {
        StripeArgs {
            api_base: API_BASE_DEFAULT.to_owned(),
            secret_key_file: None,
            webhook_secrets_file: None,
            webhook_tolerance_secs: ovation_webhooks::stripe_signature::TOLERANCE_SECS_DEFAULT,
            request_timeout_ms: 2_500,
            return_url: None,
        }
    }
}

/// The secret key: sent as a bearer token, never printed.
#[derive(Clone)]
struct SecretKey(String);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(redacted)")
    }
}

/// Stripe as a payment provider.
#[derive(Clone, Debug)]
pub struct StripeProvider {
    http: reqwest::Client,
    api_base: String,
    secret_key: SecretKey,
    return_url: Option<String>,
}

impl StripeProvider {
    /// A client for `api_base` with `secret_key`, every call bounded by `request_timeout`.
    pub fn new(
        api_base: &str,
        secret_key: String,
        request_timeout: Duration,
        return_url: Option<String>,
    ) -> Result<StripeProvider, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout)
            .build()?;
        Ok(StripeProvider {
            http,
            api_base: api_base.trim_end_matches('/').to_owned(),
            secret_key: SecretKey(secret_key),
            return_url,
        })
    }

    /// The provider the settings describe (the secret key read from its file).
    pub fn from_args(args: &StripeArgs) -> Result<StripeProvider, StartError> {
        let path = args.secret_key_file.as_ref().ok_or_else(|| {
            StartError::Config(
                "the payment provider `stripe` needs OVATION_STRIPE_SECRET_KEY_FILE".into(),
            )
        })?;
        let key = std::fs::read_to_string(path)
            .map_err(|e| {
                StartError::Config(format!(
                    "OVATION_STRIPE_SECRET_KEY_FILE: cannot read {}: {e}",
                    path.display()
                ))
            })?
            .trim()
            .to_owned();
        if key.is_empty() {
            return Err(StartError::Config(format!(
                "OVATION_STRIPE_SECRET_KEY_FILE: {} is empty",
                path.display()
            )));
        }
        StripeProvider::new(
            &args.api_base,
            key,
            Duration::from_millis(args.request_timeout_ms.max(1)),
            args.return_url.clone(),
        )
        .map_err(|e| StartError::Config(format!("cannot build the Stripe client: {e}")))
    }

    async fn create_and_confirm(&self, request: &ChargeRequest) -> ChargeOutcome {
        let mut form = vec![
            ("amount", request.amount_minor.to_string()),
            ("currency", request.currency_code.to_ascii_lowercase()),
            ("payment_method", request.payment_token.clone()),
            ("payment_method_types[]", "card".to_owned()),
            ("confirm", "true".to_owned()),
            ("metadata[purchase_id]", request.purchase_id.clone()),
        ];
        if let Some(url) = &self.return_url {
            form.push(("return_url", url.clone()));
        }
        let call = self
            .http
            .post(format!("{}/v1/payment_intents", self.api_base))
            .bearer_auth(&self.secret_key.0)
            .header("Idempotency-Key", &request.purchase_id)
            .form(&form);
        self.answer(call, request).await
    }

    async fn retrieve(&self, intent_id: &str, request: &ChargeRequest) -> ChargeOutcome {
        if !intent_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return ChargeOutcome::Unknown {
                detail: format!("stored PaymentIntent id {intent_id:?} is not an id"),
            };
        }
        let call = self
            .http
            .get(format!("{}/v1/payment_intents/{intent_id}", self.api_base))
            .bearer_auth(&self.secret_key.0);
        self.answer(call, request).await
    }

    async fn answer(
        &self,
        call: reqwest::RequestBuilder,
        request: &ChargeRequest,
    ) -> ChargeOutcome {
        let response = match call.send().await {
            Ok(response) => response,
            Err(e) => {
                return ChargeOutcome::Unknown {
                    detail: format!("stripe: no answer: {}", without_url(e)),
                };
            }
        };
        let status = response.status().as_u16();
        let body: Value = match response.json().await {
            Ok(body) => body,
            Err(e) => {
                return ChargeOutcome::Unknown {
                    detail: format!("stripe: HTTP {status}, unreadable body: {}", without_url(e)),
                };
            }
        };
        if status == 200 {
            outcome_of_intent(&body, request)
        } else {
            outcome_of_error(status, &body)
        }
    }
}

impl PaymentProvider for StripeProvider {
    fn charge<'a>(&'a self, request: &'a ChargeRequest) -> BoxFuture<'a, ChargeOutcome> {
        Box::pin(async move {
            match request.provider_reference.as_deref() {
                Some(intent_id) if !intent_id.is_empty() => self.retrieve(intent_id, request).await,
                _ => self.create_and_confirm(request).await,
            }
        })
    }
}

/// A transport error's text without the URL (it names our configuration, not the fault).
fn without_url(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value.get(field).and_then(Value::as_str).unwrap_or("")
}

/// What a PaymentIntent says about the charge.
pub fn outcome_of_intent(intent: &Value, request: &ChargeRequest) -> ChargeOutcome {
    let id = text(intent, "id");
    if id.is_empty() {
        return ChargeOutcome::Unknown {
            detail: "stripe: a PaymentIntent without an id".into(),
        };
    }
    // Never settle a purchase on another purchase's intent, or for another amount.
    let for_purchase = intent
        .get("metadata")
        .map(|m| text(m, "purchase_id"))
        .unwrap_or("");
    let amount = intent.get("amount").and_then(Value::as_i64);
    let currency = text(intent, "currency");
    if for_purchase != request.purchase_id
        || amount != Some(request.amount_minor)
        || !currency.eq_ignore_ascii_case(&request.currency_code)
    {
        tracing::error!(intent = id, purchase_id = %request.purchase_id,
            "stripe answered with a PaymentIntent of another purchase or amount; not settled");
        return ChargeOutcome::Unknown {
            detail: format!("stripe: PaymentIntent {id} does not match the purchase"),
        };
    }
    match text(intent, "status") {
        "succeeded" => ChargeOutcome::Charged {
            reference: id.to_owned(),
        },
        "requires_action" => {
            let next = intent.get("next_action").unwrap_or(&Value::Null);
            ChargeOutcome::NeedsAction {
                reference: id.to_owned(),
                action: NextAction {
                    action_type: text(next, "type").to_owned(),
                    client_secret: text(intent, "client_secret").to_owned(),
                    redirect_url: next
                        .get("redirect_to_url")
                        .map(|r| text(r, "url"))
                        .unwrap_or("")
                        .to_owned(),
                },
            }
        }
        "requires_payment_method" => ChargeOutcome::Declined {
            reason: decline_reason(intent.get("last_payment_error"), "requires_payment_method"),
        },
        "canceled" => ChargeOutcome::Declined {
            reason: format!(
                "canceled: {}",
                Some(text(intent, "cancellation_reason"))
                    .filter(|r| !r.is_empty())
                    .unwrap_or("unspecified")
            ),
        },
        other => ChargeOutcome::Unknown {
            detail: format!("stripe: PaymentIntent {id} is {other:?}"),
        },
    }
}

/// What an error answer says about the charge.
pub fn outcome_of_error(status: u16, body: &Value) -> ChargeOutcome {
    let error = body.get("error").unwrap_or(&Value::Null);
    let error_type = text(error, "type");
    match status {
        // A decline: the intent exists, but no money moved.
        402 if error_type == "card_error" => ChargeOutcome::Declined {
            reason: decline_reason(Some(error), "card_declined"),
        },
        // Stripe refused the request as made (a bad payment method id, a currency the
        // account cannot charge): nothing was charged, and the same request would fail again.
        400 | 402 | 404 => ChargeOutcome::Declined {
            reason: format!(
                "{}: {}",
                if error_type.is_empty() {
                    "invalid_request_error"
                } else {
                    error_type
                },
                Some(text(error, "code"))
                    .filter(|c| !c.is_empty())
                    .unwrap_or("refused")
            ),
        },
        // 401/403 (our key), 409 (the same key in flight), 424, 429, 5xx: not known.
        _ => ChargeOutcome::Unknown {
            detail: format!("stripe: HTTP {status} {error_type} {}", text(error, "code")),
        },
    }
}

/// The decline code, else the error code, else `fallback`.
fn decline_reason(error: Option<&Value>, fallback: &str) -> String {
    let error = error.unwrap_or(&Value::Null);
    [text(error, "decline_code"), text(error, "code")]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or(fallback)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request() -> ChargeRequest {
        ChargeRequest {
            purchase_id: "pur_1".into(),
            currency_code: "USD".into(),
            amount_minor: 499,
            payment_token: "pm_card_visa".into(),
            provider_reference: None,
        }
    }

    fn intent(status: &str) -> Value {
        json!({"id": "pi_1", "object": "payment_intent", "amount": 499, "currency": "usd",
               "status": status, "client_secret": "pi_1_secret_x",
               "metadata": {"purchase_id": "pur_1"}})
    }

    #[test]
    fn intents_map_to_outcomes() {
        assert_eq!(
            outcome_of_intent(&intent("succeeded"), &request()),
            ChargeOutcome::Charged {
                reference: "pi_1".into()
            }
        );
        let mut action = intent("requires_action");
        action["next_action"] = json!({"type": "redirect_to_url",
            "redirect_to_url": {"url": "https://bank.example/3ds", "return_url": "x"}});
        assert_eq!(
            outcome_of_intent(&action, &request()),
            ChargeOutcome::NeedsAction {
                reference: "pi_1".into(),
                action: NextAction {
                    action_type: "redirect_to_url".into(),
                    client_secret: "pi_1_secret_x".into(),
                    redirect_url: "https://bank.example/3ds".into(),
                }
            }
        );
        let mut declined = intent("requires_payment_method");
        declined["last_payment_error"] = json!({"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds"});
        assert_eq!(
            outcome_of_intent(&declined, &request()),
            ChargeOutcome::Declined {
                reason: "insufficient_funds".into()
            }
        );
        assert!(matches!(
            outcome_of_intent(&intent("processing"), &request()),
            ChargeOutcome::Unknown { .. }
        ));
    }

    #[test]
    fn an_intent_of_another_purchase_or_amount_settles_nothing() {
        let mut other = intent("succeeded");
        other["metadata"]["purchase_id"] = json!("pur_2");
        assert!(matches!(
            outcome_of_intent(&other, &request()),
            ChargeOutcome::Unknown { .. }
        ));
        let mut cheaper = intent("succeeded");
        cheaper["amount"] = json!(1);
        assert!(matches!(
            outcome_of_intent(&cheaper, &request()),
            ChargeOutcome::Unknown { .. }
        ));
    }

    #[test]
    fn errors_map_to_outcomes() {
        let decline = json!({"error": {"type": "card_error", "code": "card_declined",
            "decline_code": "generic_decline", "message": "Your card was declined."}});
        assert_eq!(
            outcome_of_error(402, &decline),
            ChargeOutcome::Declined {
                reason: "generic_decline".into()
            }
        );
        let invalid =
            json!({"error": {"type": "invalid_request_error", "code": "resource_missing"}});
        assert_eq!(
            outcome_of_error(400, &invalid),
            ChargeOutcome::Declined {
                reason: "invalid_request_error: resource_missing".into()
            }
        );
        for status in [401, 409, 429, 500, 503] {
            assert!(matches!(
                outcome_of_error(status, &json!({"error": {"type": "api_error"}})),
                ChargeOutcome::Unknown { .. }
            ));
        }
    }
}
