//! An in-test HTTP server standing for Stripe's PaymentIntents API, following its documented
//! behaviour: form-encoded requests with a bearer secret key; an `Idempotency-Key` whose
//! first answer (once the endpoint began executing, errors included) is saved and replayed,
//! never creating a second intent; declines as 402 `card_error` with the intent in
//! `requires_payment_method`; a 503 before execution (not saved, `Stripe-Should-Retry`);
//! `requires_action` with `next_action` and the client secret. Payment method ids choose
//! the card's behaviour, as Stripe's test cards do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The key the wallet presents (made up for the test; no real credential).
pub const SECRET_KEY: &str = "sk_test_in_test_server";
/// The webhook signing secret the wallet verifies with (made up for the test).
pub const WEBHOOK_SECRET: &str = "whsec_in_test_server";

/// Succeeds.
pub const PM_OK: &str = "pm_card_visa";
/// Declined by the issuer: 402 card_error, decline_code generic_decline.
pub const PM_DECLINE: &str = "pm_card_chargeDeclined";
/// Needs 3-D Secure: requires_action until the test authenticates it.
pub const PM_3DS: &str = "pm_card_authenticationRequired";
/// The first request gets a 503 before Stripe executes it (nothing saved); then succeeds.
pub const PM_UNAVAILABLE_ONCE: &str = "pm_card_unavailableOnce";
/// The first request creates and charges the intent but answers only after the client
/// gave up (the answer is lost); a replay of the key answers at once.
pub const PM_SLOW_ONCE: &str = "pm_card_slowOnce";

/// How late the lost answer of [`PM_SLOW_ONCE`] comes.
const SLOW_ANSWER_MS: u64 = 1_500;

#[derive(Default)]
struct Ledger {
    /// Idempotency key → the saved answer.
    saved: HashMap<String, (u16, Value)>,
    /// Intent id → the intent as it is now.
    intents: HashMap<String, Value>,
    created_per_key: HashMap<String, u32>,
    requests_per_key: HashMap<String, u32>,
    seq: u64,
}

#[derive(Clone)]
pub struct FakeStripe {
    pub base: String,
    ledger: Arc<Mutex<Ledger>>,
}

impl FakeStripe {
    pub async fn start() -> FakeStripe {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let fake = FakeStripe {
            base,
            ledger: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/v1/payment_intents", post(create_intent))
            .route("/v1/payment_intents/{id}", get(retrieve_intent))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Intents created under an idempotency key (Stripe's record of "charged once").
    pub fn intents_created(&self, key: &str) -> u32 {
        self.ledger().created_per_key.get(key).copied().unwrap_or(0)
    }

    /// Requests made under an idempotency key (first answers and replays).
    pub fn requests(&self, key: &str) -> u32 {
        self.ledger()
            .requests_per_key
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    pub fn intent(&self, id: &str) -> Value {
        self.ledger().intents.get(id).cloned().expect("an intent")
    }

    /// The customer completes 3-D Secure: the intent succeeds (its charge is made).
    pub fn authenticate(&self, id: &str) -> Value {
        let mut ledger = self.ledger();
        let intent = ledger.intents.get_mut(id).expect("an intent");
        intent["status"] = json!("succeeded");
        intent["next_action"] = Value::Null;
        intent["latest_charge"] = json!(format!("ch_{}", &id[3..]));
        intent.clone()
    }
}

fn answer(status: u16, body: &Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [(http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(kind: &str, code: &str) -> Value {
    json!({"error": {"type": kind, "code": code, "message": format!("{kind}: {code}")}})
}

async fn create_intent(
    State(fake): State<FakeStripe>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let authorized = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {SECRET_KEY}"));
    if !authorized {
        return answer(401, &error("invalid_request_error", "api_key_invalid"));
    }
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return answer(
            400,
            &error("invalid_request_error", "idempotency_key_missing"),
        );
    };
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (status, body, slow) = {
        let mut ledger = fake.ledger();
        let requests = {
            let n = ledger.requests_per_key.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        if let Some((status, body)) = ledger.saved.get(&key) {
            return answer(*status, body);
        }
        let payment_method = field("payment_method");
        if payment_method == PM_UNAVAILABLE_ONCE && requests == 1 {
            // Refused before execution began: nothing saved, safe to retry.
            let mut response = answer(503, &error("api_error", "service_unavailable"));
            response.headers_mut().insert(
                "stripe-should-retry",
                http::HeaderValue::from_static("true"),
            );
            return response;
        }
        ledger.seq += 1;
        let id = format!("pi_{}", ledger.seq);
        let mut intent = json!({
            "id": id, "object": "payment_intent",
            "amount": field("amount").parse::<i64>().unwrap_or(0),
            "currency": field("currency"),
            "payment_method": payment_method,
            "client_secret": format!("{id}_secret_test"),
            "metadata": {"purchase_id": field("metadata[purchase_id]")},
            "status": "succeeded",
            "latest_charge": format!("ch_{}", ledger.seq),
            "next_action": null,
            "last_payment_error": null,
        });
        let (status, body) = match payment_method.as_str() {
            PM_DECLINE => {
                let failure = json!({"type": "card_error", "code": "card_declined",
                    "decline_code": "generic_decline", "message": "Your card was declined."});
                intent["status"] = json!("requires_payment_method");
                intent["latest_charge"] = Value::Null;
                intent["last_payment_error"] = failure.clone();
                let mut body = json!({"error": failure});
                body["error"]["payment_intent"] = intent.clone();
                (402, body)
            }
            PM_3DS => {
                intent["status"] = json!("requires_action");
                intent["latest_charge"] = Value::Null;
                intent["next_action"] = json!({"type": "use_stripe_sdk", "use_stripe_sdk": {}});
                (200, intent.clone())
            }
            PM_OK | PM_UNAVAILABLE_ONCE | PM_SLOW_ONCE => (200, intent.clone()),
            _ => {
                return answer(400, &error("invalid_request_error", "resource_missing"));
            }
        };
        ledger.intents.insert(id.clone(), intent);
        *ledger.created_per_key.entry(key.clone()).or_insert(0) += 1;
        ledger.saved.insert(key.clone(), (status, body.clone()));
        (
            status,
            body,
            payment_method == PM_SLOW_ONCE && requests == 1,
        )
    };
    if slow {
        tokio::time::sleep(Duration::from_millis(SLOW_ANSWER_MS)).await;
    }
    answer(status, &body)
}

async fn retrieve_intent(
    State(fake): State<FakeStripe>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let authorized = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {SECRET_KEY}"));
    if !authorized {
        return answer(401, &error("invalid_request_error", "api_key_invalid"));
    }
    match fake.ledger().intents.get(&id) {
        Some(intent) => answer(200, intent),
        None => answer(404, &error("invalid_request_error", "resource_missing")),
    }
}
