//! Stripe Connect as the payout provider: a payout is a Stripe **transfer** from the
//! platform's balance to the creator's connected account (`acct_…`, the payout account
//! reference), and Stripe is the record of "paid once".
//!
//! # pay
//! 1. Look the payout's transfer up: `GET /v1/transfers?transfer_group=<payout id>`. A
//!    transfer found answers at once (this also covers a retry after Stripe forgot the
//!    idempotency key, which it keeps 24 hours).
//! 2. Otherwise `POST /v1/transfers` (amount and currency of the payout's recorded money,
//!    `destination` = the account reference, `transfer_group` and `metadata[payout_id]` =
//!    the payout id) with `Idempotency-Key: <payout id>`: a retry from any replica replays
//!    the first answer and never makes a second transfer.
//!
//! A transfer, found or made, is **Paid** (reference = the transfer id) unless it is fully
//! reversed, which only a cancellation (below) or an operator does: then **Declined**.
//!
//! A refusal is **Declined** only when it is definite: Stripe stores the answer of a
//! request it started executing under its key, so retrying the same key can only repeat
//! it. These codes are definite ([`DEFINITE_REFUSALS`]): the platform balance cannot cover
//! it (`balance_insufficient`, `insufficient_funds`: the creator may ask again once the
//! platform is funded), the destination cannot receive transfers
//! (`transfers_not_allowed`, `insufficient_capabilities_for_transfer`, `account_invalid`,
//! `account_closed`, and `resource_missing` naming `destination`), the amount is outside
//! Stripe's bounds (`amount_too_small`, `amount_too_large`). Everything else is **no
//! definite answer** ([`ProviderError`], retried by the worker with the same key, flagged
//! for an operator after its retry budget): 5xx, 429, 401/403 (our key or permissions:
//! fixed by an operator, not a reason to give up on the payout), 409 (a concurrent request
//! with the same key is running), unknown 4xx codes, timeouts and unreadable answers.
//!
//! # cancel
//! Stripe cannot refuse a key in advance, so a cancellation makes the key's outcome final
//! there: the transfer is looked up and, if none is found, the same idempotent
//! `POST /v1/transfers` is sent (a request of an earlier attempt still running at Stripe
//! answers 409 and is retried; one that finished is replayed), then the transfer is
//! reversed in full, `POST /v1/transfers/<id>/reversals` with
//! `Idempotency-Key: reverse-<payout id>`. Reversed → **Declined** (and every later `pay`
//! finds the reversed transfer and answers Declined); a definite refusal to reverse (the
//! connected account already paid the money out) → **Paid**; a definite refusal of the
//! transfer itself → **Declined** (nothing moved).

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use super::{PayoutOrder, PayoutProvider, ProviderError, ProviderOutcome};

/// Stripe's API unless `OVATION_STRIPE_API_BASE` says otherwise.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

/// Largest answer read from Stripe; a longer one is "no definite answer".
pub const RESPONSE_BYTES_MAX: usize = 1024 * 1024;

/// Transfers listed per lookup (a payout has one; more means someone else used its group).
const LOOKUP_LIMIT: u32 = 10;

/// Error codes that refuse a transfer for good (see the module documentation).
pub const DEFINITE_REFUSALS: &[&str] = &[
    "balance_insufficient",
    "insufficient_funds",
    "transfers_not_allowed",
    "insufficient_capabilities_for_transfer",
    "account_invalid",
    "account_closed",
    "amount_too_small",
    "amount_too_large",
];

/// Error codes that refuse a reversal for good: the connected account cannot give the
/// money back (it was paid out), or the transfer is already fully reversed.
const DEFINITE_REVERSAL_REFUSALS: &[&str] = &["balance_insufficient", "insufficient_funds"];

/// How to reach Stripe.
#[derive(Clone)]
pub struct StripeConnectSettings {
    /// `https://api.stripe.com`, or a stand-in (tests).
    pub api_base: String,
    /// The platform's secret key (`sk_…`); never logged.
    pub secret_key: String,
    /// Longest one HTTP request may take (the worker has its own deadline too).
    pub request_timeout: Duration,
}

impl std::fmt::Debug for StripeConnectSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeConnectSettings")
            .field("api_base", &self.api_base)
            .field("secret_key", &"<redacted>")
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// The Stripe Connect payout provider.
#[derive(Debug)]
pub struct StripeConnect {
    http: reqwest::Client,
    settings: StripeConnectSettings,
}

/// What Stripe answered.
enum Answer {
    /// 2xx with its JSON body.
    Ok(Value),
    /// A 4xx whose error code makes it definite.
    Refused { code: String, message: String },
}

/// A transfer as far as we read it.
#[derive(Debug)]
struct Transfer {
    id: String,
    amount: i64,
    amount_reversed: i64,
}

impl Transfer {
    fn from_json(value: &Value) -> Result<Transfer, ProviderError> {
        let id = value["id"]
            .as_str()
            .filter(|id| id.starts_with("tr_"))
            .ok_or_else(|| unreadable("a transfer without an id"))?;
        let amount = value["amount"]
            .as_i64()
            .ok_or_else(|| unreadable("a transfer without an amount"))?;
        Ok(Transfer {
            id: id.to_owned(),
            amount,
            amount_reversed: value["amount_reversed"].as_i64().unwrap_or(0),
        })
    }

    fn fully_reversed(&self) -> bool {
        self.amount_reversed >= self.amount
    }

    /// A transfer stands as paid unless it was reversed in full.
    fn outcome(&self) -> ProviderOutcome {
        if self.fully_reversed() {
            ProviderOutcome::Declined {
                reason: format!("stripe: transfer {} was reversed (cancelled)", self.id),
            }
        } else {
            ProviderOutcome::Paid {
                provider_reference: self.id.clone(),
            }
        }
    }
}

fn unreadable(what: &str) -> ProviderError {
    ProviderError(format!("stripe answered {what}"))
}

impl StripeConnect {
    pub fn new(settings: StripeConnectSettings) -> Result<StripeConnect, String> {
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| format!("cannot build the Stripe HTTP client: {e}"))?;
        Ok(StripeConnect { http, settings })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.settings.api_base.trim_end_matches('/'))
    }

    /// Sends `request` and sorts the answer: 2xx, a definite refusal, or no definite
    /// answer.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        definite: &[&str],
    ) -> Result<Answer, ProviderError> {
        let response = request
            .bearer_auth(&self.settings.secret_key)
            .send()
            .await
            .map_err(|e| ProviderError(format!("stripe unreachable: {}", without_url(e))))?;
        let status = response.status();
        let body = read_bounded(response).await?;
        let json: Value = serde_json::from_slice(&body).map_err(|_| {
            ProviderError(format!(
                "stripe answered {status} with a body that is not JSON"
            ))
        })?;
        if status.is_success() {
            return Ok(Answer::Ok(json));
        }
        let error = &json["error"];
        let code = error["code"].as_str().unwrap_or("").to_owned();
        let message = error["message"].as_str().unwrap_or("").to_owned();
        let param = error["param"].as_str().unwrap_or("");
        let definite_status = matches!(status.as_u16(), 400 | 402 | 404);
        let definite_code = definite.contains(&code.as_str())
            || (code == "resource_missing" && param == "destination");
        if definite_status && definite_code {
            Ok(Answer::Refused { code, message })
        } else {
            Err(ProviderError(format!(
                "stripe answered {status} ({}{}): {message}",
                error["type"].as_str().unwrap_or("unknown"),
                if code.is_empty() {
                    String::new()
                } else {
                    format!(", {code}")
                }
            )))
        }
    }

    /// The payout's transfer, if Stripe has one (by its transfer group, checked against
    /// the metadata).
    async fn find(&self, order: &PayoutOrder) -> Result<Option<Transfer>, ProviderError> {
        let request = self.http.get(self.url("/v1/transfers")).query(&[
            ("transfer_group", order.payout_id.as_str()),
            ("limit", &LOOKUP_LIMIT.to_string()),
        ]);
        let Answer::Ok(list) = self.send(request, &[]).await? else {
            return Err(unreadable("a refusal to list transfers"));
        };
        let data = list["data"]
            .as_array()
            .ok_or_else(|| unreadable("a transfer list without data"))?;
        data.iter()
            .filter(|t| {
                t["metadata"]["payout_id"].as_str() == Some(order.payout_id.as_str())
                    || t["transfer_group"].as_str() == Some(order.payout_id.as_str())
            })
            .map(Transfer::from_json)
            .next()
            .transpose()
    }

    /// `POST /v1/transfers` under the payout id's key: the transfer (made now or replayed),
    /// or Stripe's definite refusal.
    async fn create(&self, order: &PayoutOrder) -> Result<Result<Transfer, String>, ProviderError> {
        let amount = order.amount.amount_minor().to_string();
        let currency = order.amount.currency.as_str().to_ascii_lowercase();
        let form = [
            ("amount", amount.as_str()),
            ("currency", currency.as_str()),
            ("destination", order.account_reference.as_str()),
            ("transfer_group", order.payout_id.as_str()),
            ("metadata[payout_id]", order.payout_id.as_str()),
            ("metadata[creator_id]", order.creator_id.as_str()),
        ];
        let request = self
            .http
            .post(self.url("/v1/transfers"))
            .header("Idempotency-Key", order.payout_id.as_str())
            .form(&form);
        match self.send(request, DEFINITE_REFUSALS).await? {
            Answer::Ok(json) => Ok(Ok(Transfer::from_json(&json)?)),
            Answer::Refused { code, message } => Ok(Err(format!(
                "stripe refused the transfer ({code}): {message}"
            ))),
        }
    }

    async fn pay_order(&self, order: &PayoutOrder) -> Result<ProviderOutcome, ProviderError> {
        if let Some(transfer) = self.find(order).await? {
            return Ok(transfer.outcome());
        }
        Ok(match self.create(order).await? {
            Ok(transfer) => {
                tracing::info!(payout_id = %order.payout_id, transfer_id = %transfer.id,
                    amount_minor = order.amount.amount_minor(), "stripe transfer made");
                transfer.outcome()
            }
            Err(reason) => ProviderOutcome::Declined { reason },
        })
    }

    async fn cancel_order(&self, order: &PayoutOrder) -> Result<ProviderOutcome, ProviderError> {
        let transfer = match self.find(order).await? {
            Some(transfer) => transfer,
            // Make the key's outcome final at Stripe (see the module documentation).
            None => match self.create(order).await? {
                Ok(transfer) => transfer,
                Err(reason) => return Ok(ProviderOutcome::Declined { reason }),
            },
        };
        if transfer.fully_reversed() {
            return Ok(transfer.outcome());
        }
        let request = self
            .http
            .post(self.url(&format!("/v1/transfers/{}/reversals", transfer.id)))
            .header("Idempotency-Key", format!("reverse-{}", order.payout_id))
            .form(&[("metadata[payout_id]", order.payout_id.as_str())]);
        match self.send(request, DEFINITE_REVERSAL_REFUSALS).await? {
            Answer::Ok(reversal) => {
                tracing::info!(payout_id = %order.payout_id, transfer_id = %transfer.id,
                    reversal_id = reversal["id"].as_str().unwrap_or(""),
                    "stripe transfer reversed: the payout is cancelled");
                // The same answer a later look at the reversed transfer gives.
                Ok(Transfer {
                    amount_reversed: transfer.amount,
                    ..transfer
                }
                .outcome())
            }
            Answer::Refused { code, message } => {
                tracing::warn!(payout_id = %order.payout_id, transfer_id = %transfer.id, %code,
                    %message, "stripe refused to reverse the transfer: the payout stands as paid");
                Ok(ProviderOutcome::Paid {
                    provider_reference: transfer.id,
                })
            }
        }
    }
}

impl PayoutProvider for StripeConnect {
    fn pay<'a>(
        &'a self,
        order: &'a PayoutOrder,
    ) -> BoxFuture<'a, Result<ProviderOutcome, ProviderError>> {
        Box::pin(self.pay_order(order))
    }

    fn cancel<'a>(
        &'a self,
        order: &'a PayoutOrder,
    ) -> BoxFuture<'a, Result<ProviderOutcome, ProviderError>> {
        Box::pin(self.cancel_order(order))
    }
}

/// A transport error's text without its URL (which carries no secret, but a query).
fn without_url(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    };
    format!("{kind}: {}", e.without_url())
}

/// The body, refusing one past [`RESPONSE_BYTES_MAX`].
async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, ProviderError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ProviderError(format!("stripe's answer was cut: {}", without_url(e))))?
    {
        if body.len() + chunk.len() > RESPONSE_BYTES_MAX {
            return Err(ProviderError(format!(
                "stripe answered more than {RESPONSE_BYTES_MAX} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_key_is_never_printed() {
        let settings = StripeConnectSettings {
            api_base: DEFAULT_API_BASE.into(),
            secret_key: "sk_test_secret".into(),
            request_timeout: Duration::from_secs(1),
        };
        assert!(!format!("{settings:?}").contains("sk_test_secret"));
        let provider = StripeConnect::new(settings).unwrap();
        assert!(!format!("{provider:?}").contains("sk_test_secret"));
    }

    #[test]
    fn a_transfer_reversed_in_full_is_declined_otherwise_paid() {
        let t = |reversed| Transfer {
            id: "tr_1".into(),
            amount: 500,
            amount_reversed: reversed,
        };
        assert_eq!(
            t(0).outcome(),
            ProviderOutcome::Paid {
                provider_reference: "tr_1".into()
            }
        );
        assert!(matches!(t(100).outcome(), ProviderOutcome::Paid { .. }));
        assert!(matches!(t(500).outcome(), ProviderOutcome::Declined { .. }));
    }
}
