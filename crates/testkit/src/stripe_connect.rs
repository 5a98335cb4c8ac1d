//! A stand-in for Stripe's Connect transfers API, on loopback, following its documented
//! behaviour so payout's real client can be tested against it:
//!
//! - `POST /v1/transfers` (form: amount, currency, destination, transfer_group,
//!   metadata[…]) under an `Idempotency-Key`: the first request's answer (success or a
//!   4xx refusal) is stored and replayed for every later request with that key, which
//!   never makes a second transfer; the same key with other parameters is 400
//!   `idempotency_error`. The answer is stored as soon as the work is done, before a
//!   slow answer goes back (the fake runs one request's work at a time, so Stripe's 409
//!   for a concurrent request with the same key never arises here).
//! - `GET /v1/transfers?transfer_group=…`: the group's transfers, newest first.
//! - `POST /v1/transfers/{id}/reversals` (idempotent the same way): reverses the rest of
//!   the transfer; a destination that already paid the money out (`acct_paidout…`) is
//!   400 `balance_insufficient`.
//! - Destinations: `acct_…` pays; `acct_blocked…` is 400 `transfers_not_allowed`; a
//!   destination not starting with `acct_` is 400 `resource_missing` (param
//!   destination). Every request needs `Authorization: Bearer <the key>` (else 401).
//! - Faults a test sets: the next N requests answer 500 before running (nothing stored,
//!   like a failure in front of the API), and a delay after a transfer is made and
//!   before the answer (so a client that gives up has left a transfer behind).
//!
//! [`FakeStripe::transfers`] is Stripe's record: what a test checks "paid once" against.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The secret key the fake expects.
pub const TEST_SECRET_KEY: &str = "sk_test_ovation_fake";

/// One transfer as the fake recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeTransfer {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub destination: String,
    pub transfer_group: String,
    pub payout_id: String,
    pub amount_reversed: i64,
}

impl FakeTransfer {
    fn json(&self) -> Value {
        json!({
            "id": self.id, "object": "transfer", "amount": self.amount,
            "amount_reversed": self.amount_reversed, "currency": self.currency,
            "destination": self.destination, "transfer_group": self.transfer_group,
            "metadata": {"payout_id": self.payout_id},
            "reversed": self.amount_reversed >= self.amount, "livemode": false,
        })
    }
}

/// A stored idempotent answer.
#[derive(Clone, Debug)]
struct Keyed {
    fingerprint: String,
    status: u16,
    body: Value,
}

#[derive(Debug, Default)]
struct State_ {
    transfers: Vec<FakeTransfer>,
    keys: HashMap<String, Keyed>,
    /// Requests answered 500 before running, still to come.
    failures_to_serve: u32,
    /// Delay between making a transfer and answering.
    delay: Duration,
    requests: u64,
    next_id: u64,
}

/// The fake Stripe, serving until dropped.
pub struct FakeStripe {
    state: Arc<Mutex<State_>>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Shared = Arc<Mutex<State_>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, State_> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeStripe {
    /// Starts the fake on an ephemeral loopback port.
    pub async fn start() -> FakeStripe {
        let state: Shared = Arc::default();
        let app = Router::new()
            .route("/v1/transfers", post(create_transfer).get(list_transfers))
            .route("/v1/transfers/{id}/reversals", post(reverse_transfer))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeStripe { state, addr, task }
    }

    /// The base URL to give the client (`OVATION_STRIPE_API_BASE`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next `n` requests answer 500 before doing anything.
    pub fn fail_next(&self, n: u32) {
        lock(&self.state).failures_to_serve = n;
    }

    /// Answers come `delay` after the work is done.
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.state).delay = delay;
    }

    /// Every transfer made, in order.
    pub fn transfers(&self) -> Vec<FakeTransfer> {
        lock(&self.state).transfers.clone()
    }

    /// The transfers made for payout `payout_id`.
    pub fn transfers_for(&self, payout_id: &str) -> Vec<FakeTransfer> {
        self.transfers()
            .into_iter()
            .filter(|t| t.payout_id == payout_id)
            .collect()
    }

    /// Requests received.
    pub fn requests(&self) -> u64 {
        lock(&self.state).requests
    }

    /// Reverses `amount` more of transfer `id` as an operator would in Stripe's
    /// dashboard; the transfer as it is then.
    pub fn reverse_by_hand(&self, id: &str, amount: i64) -> Option<FakeTransfer> {
        let mut state = lock(&self.state);
        let t = state.transfers.iter_mut().find(|t| t.id == id)?;
        t.amount_reversed = (t.amount_reversed + amount).min(t.amount);
        Some(t.clone())
    }
}

fn stripe_error(
    status: StatusCode,
    kind: &str,
    code: &str,
    param: &str,
    message: &str,
) -> (u16, Value) {
    let mut error = json!({"type": kind, "message": message});
    if !code.is_empty() {
        error["code"] = json!(code);
    }
    if !param.is_empty() {
        error["param"] = json!(param);
    }
    (status.as_u16(), json!({ "error": error }))
}

fn answer((status, body): (u16, Value)) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// What every request goes through first: the key, and an injected failure.
fn admit(state: &Shared, headers: &HeaderMap) -> Result<(), (u16, Value)> {
    let mut s = lock(state);
    s.requests += 1;
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TEST_SECRET_KEY}"));
    if !authorized {
        return Err(stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "",
            "",
            "Invalid API Key provided",
        ));
    }
    if s.failures_to_serve > 0 {
        s.failures_to_serve -= 1;
        return Err(stripe_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "",
            "",
            "An unknown error occurred",
        ));
    }
    Ok(())
}

/// Runs `work` once per idempotency key (see the module documentation).
async fn idempotent(
    state: &Shared,
    headers: &HeaderMap,
    scope: &str,
    fingerprint: String,
    work: impl FnOnce(&mut State_) -> (u16, Value),
) -> Response {
    if let Err(refused) = admit(state, headers) {
        return answer(refused);
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| format!("{scope}:{k}"));
    let delay;
    let result = {
        let mut s = lock(state);
        delay = s.delay;
        if let Some(stored) = key.as_ref().and_then(|k| s.keys.get(k)) {
            if stored.fingerprint != fingerprint {
                return answer(stripe_error(
                    StatusCode::BAD_REQUEST,
                    "idempotency_error",
                    "",
                    "",
                    "Keys for idempotent requests can only be used with the same parameters they were first used with",
                ));
            }
            return answer((stored.status, stored.body.clone()));
        }
        let result = work(&mut s);
        // Stored as soon as it ran: the slow part is the answer's way back, so a client
        // that gives up meanwhile has left the work done, and its retry is a replay.
        if let Some(key) = key {
            let stored = Keyed {
                fingerprint,
                status: result.0,
                body: result.1.clone(),
            };
            s.keys.insert(key, stored);
        }
        result
    };
    tokio::time::sleep(delay).await;
    answer(result)
}

async fn create_transfer(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let form = parse_form(&body);
    let fingerprint = {
        let mut pairs: Vec<_> = form.iter().collect();
        pairs.sort();
        format!("{pairs:?}")
    };
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    idempotent(&state, &headers, "transfers", fingerprint, |s| {
        let amount: i64 = field("amount").parse().unwrap_or(0);
        let destination = field("destination");
        if amount <= 0 {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "parameter_invalid_integer",
                "amount",
                "Invalid positive integer",
            );
        }
        if !destination.starts_with("acct_") {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "resource_missing",
                "destination",
                "No such destination",
            );
        }
        if destination.starts_with("acct_blocked") {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "transfers_not_allowed",
                "destination",
                "The destination account cannot receive transfers",
            );
        }
        s.next_id += 1;
        let transfer = FakeTransfer {
            id: format!("tr_fake{:08}", s.next_id),
            amount,
            currency: field("currency"),
            destination,
            transfer_group: field("transfer_group"),
            payout_id: field("metadata[payout_id]"),
            amount_reversed: 0,
        };
        s.transfers.push(transfer.clone());
        (200, transfer.json())
    })
    .await
}

async fn list_transfers(
    State(state): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(refused) = admit(&state, &headers) {
        return answer(refused);
    }
    let query = parse_form(query.unwrap_or_default().as_bytes());
    let group = query.get("transfer_group").cloned();
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let data: Vec<Value> = lock(&state)
        .transfers
        .iter()
        .rev()
        .filter(|t| group.as_ref().is_none_or(|g| &t.transfer_group == g))
        .take(limit)
        .map(FakeTransfer::json)
        .collect();
    answer((
        200,
        json!({"object": "list", "data": data, "has_more": false, "url": "/v1/transfers"}),
    ))
}

async fn reverse_transfer(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fingerprint = format!("{id}:{:?}", parse_form(&body));
    idempotent(&state, &headers, "reversals", fingerprint, |s| {
        let Some(t) = s.transfers.iter_mut().find(|t| t.id == id) else {
            return stripe_error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "resource_missing",
                "id",
                "No such transfer",
            );
        };
        if t.destination.starts_with("acct_paidout") {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "balance_insufficient",
                "",
                "The connected account's balance cannot cover the reversal",
            );
        }
        let rest = t.amount - t.amount_reversed;
        if rest <= 0 {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "transfer_already_reversed",
                "",
                "The transfer is already fully reversed",
            );
        }
        t.amount_reversed = t.amount;
        s.next_id += 1;
        (
            200,
            json!({"id": format!("trr_fake{:08}", s.next_id), "object": "transfer_reversal",
                   "amount": rest, "transfer": id}),
        )
    })
    .await
}

/// `a=1&b=x%20y` → map (form bodies and query strings).
fn parse_form(raw: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(raw)
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}
