//! Requests into domain commands: one `parse_*` per request, every bad field named at
//! once (the handler's one INVALID_ARGUMENT), nothing looked up. Pure, so tested below
//! without a server.
//!
//! The actor of record of every mutation is the authenticated caller; a request's
//! `actor` field is only ever a note on the reason.

use ovation_auth::Caller;
use ovation_proto::wallet as pb;
use ovation_server::edge::{idempotency_key, keyed, money, optional_id, time_window};
use ovation_store::Fingerprint;
use ovation_types::Parsed;
use ovation_types::limits::AMOUNT_MAX;
use ovation_types::{
    Coins, CurrencyCode, IdempotencyKey, PageSize, PageToken, ResourceId, Text, TimeWindow,
    Violation, Violations,
};

use crate::accounts::{OpenAccountCmd, SetLimitsCmd, SetMinorCmd};
use crate::domain::{
    Caps, ClawbackOrderState, DEBIT_IDS_MAX, HOLD_TTL_MS_DEFAULT, HOLD_TTL_MS_MAX, HOLD_TTL_MS_MIN,
    PaymentMethod, PurchaseState, VerifiedAge,
};
use crate::ledger::{CaptureCmd, DebitCmd, RefundCmd, ReserveCmd, ReverseCmd};
use crate::purchases::PurchaseCmd;

/// Longest payment token a provider may hand out, in bytes (a sandbox token, a Stripe
/// payment method id, a Google Play product id).
const PAYMENT_TOKEN_BYTES_MAX: usize = 255;
/// Longest App Store signed transaction (a JWS with its x5c chain: a few KiB), in bytes.
const SIGNED_TRANSACTION_BYTES_MAX: usize = 16 * 1024;
/// Longest Google Play purchase token, in bytes.
const PURCHASE_TOKEN_BYTES_MAX: usize = 4 * 1024;

/// A page of a user's purchases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurchasesPage {
    pub user_id: ResourceId,
    /// `None`: every state.
    pub state: Option<PurchaseState>,
    pub size: PageSize,
    /// The (created_at, purchase id) to continue before.
    pub before: Option<(i64, String)>,
}

/// A page of a user's journal entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionsPage {
    pub user_id: ResourceId,
    pub size: PageSize,
    /// The sequence number to continue before.
    pub before: Option<i64>,
}

/// Which debits ListDebits answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DebitsQuery {
    /// These operations' debits, in one answer.
    Ids(Vec<ResourceId>),
    /// A page of every debit created in `window`.
    Page {
        size: PageSize,
        /// The (created_at, operation id) to continue after.
        after: Option<(i64, String)>,
        window: TimeWindow,
    },
}

pub fn parse_create_account(
    req: &pb::CreateAccountRequest,
    caller: &Caller,
) -> Parsed<(IdempotencyKey, OpenAccountCmd)> {
    let mut v = Violations::default();
    let key = idempotency_key(&mut v, &req.idempotency_key);
    let user = v.check("user_id", ResourceId::parse(&req.user_id));
    keyed(v, key, || {
        let user = user?;
        let verified_age = verified_age_of(caller, user.as_str());
        Some(OpenAccountCmd {
            user_id: user,
            minor: req.minor,
            verified_age,
        })
    })
}

pub fn parse_get_account(req: &pb::GetAccountRequest) -> Parsed<ResourceId> {
    id("user_id", &req.user_id)
}

pub fn parse_set_account_minor(
    req: &pb::SetAccountMinorRequest,
    caller: &Caller,
) -> Parsed<(IdempotencyKey, SetMinorCmd)> {
    let mut v = Violations::default();
    let key = idempotency_key(&mut v, &req.idempotency_key);
    let user = v.check("user_id", ResourceId::parse(&req.user_id));
    let reason = v.noted_reason(
        Text::parse_required(&req.reason),
        &req.actor,
        caller.subject(),
    );
    keyed(v, key, || {
        Some(SetMinorCmd {
            user_id: user?,
            minor: req.minor,
            actor: caller.subject().to_owned(),
            reason: reason?,
        })
    })
}

pub fn parse_get_balance(req: &pb::GetBalanceRequest) -> Parsed<ResourceId> {
    id("user_id", &req.user_id)
}

/// `fingerprint`: the request's, which the purchase keeps so a retry under its key must
/// repeat it.
pub fn parse_purchase_coins(
    req: &pb::PurchaseCoinsRequest,
    caller: &Caller,
    fingerprint: &Fingerprint,
) -> Parsed<PurchaseCmd> {
    let mut v = Violations::default();
    let key = idempotency_key(&mut v, &req.idempotency_key);
    let user = v.check("user_id", ResourceId::parse(&req.user_id));
    let package = v.check("package_id", ResourceId::parse(&req.package_id));
    let currency = v.check("currency_code", CurrencyCode::parse(&req.currency_code));
    let payment = payment_method(&mut v, req);
    let expected = match &req.expected_price {
        Some(m) => money(&mut v, "expected_price", Some(m)).map(Some),
        None => Some(None),
    };
    v.finish(|| {
        let user = user?;
        let verified_age = verified_age_of(caller, user.as_str());
        Some(PurchaseCmd {
            idempotency_key: key?,
            fingerprint: fingerprint.as_str().to_owned(),
            user_id: user,
            package_id: package?,
            currency: currency?,
            payment: payment?,
            expected_price: expected?,
            verified_age,
        })
    })
}

pub fn parse_get_purchase(req: &pb::GetPurchaseRequest) -> Parsed<ResourceId> {
    id("purchase_id", &req.purchase_id)
}

pub fn parse_list_purchases(req: &pb::ListPurchasesRequest) -> Parsed<PurchasesPage> {
    let mut v = Violations::default();
    let user = v.check("user_id", ResourceId::parse(&req.user_id));
    let size = v.check("page_size", PageSize::parse(req.page_size));
    let before = v.check(
        "page_token",
        PageToken::parse(&req.page_token).and_then(|t| t.keyset()),
    );
    let state = v.check("state", purchase_state_filter(req.state));
    v.finish(|| {
        Some(PurchasesPage {
            user_id: user?,
            state: state?,
            size: size?,
            before: before?,
        })
    })
}

pub fn parse_reverse_purchase(
    req: &pb::ReversePurchaseRequest,
    caller: &Caller,
) -> Parsed<(IdempotencyKey, ReverseCmd)> {
    let mut v = Violations::default();
    let key = idempotency_key(&mut v, &req.idempotency_key);
    let purchase = v.check("purchase_id", ResourceId::parse(&req.purchase_id));
    let reason = v.noted_reason(
        Text::parse_required(&req.reason),
        &req.actor,
        caller.subject(),
    );
    keyed(v, key, || {
        Some(ReverseCmd {
            purchase_id: purchase?,
            actor: caller.subject().to_owned(),
            reason: reason?,
        })
    })
}

pub fn parse_debit_coins(
    req: &pb::DebitCoinsRequest,
    caller: &Caller,
) -> Parsed<(IdempotencyKey, DebitCmd)> {
    let mut v = Violations::default();
    let key = idempotency_key(&mut v, &req.idempotency_key);
    let cmd = debit_fields(
        &mut v,
        DebitFields {
            operation_id: &req.operation_id,
            user_id: &req.user_id,
            coins: req.coins,
            saga_id: &req.saga_id,
            note: &req.note,
        },
        caller,
    );
    keyed(v, key, || cmd)
}

/// One item of a DebitCoinsBatch: DebitCoins' fields and rules, without a key (the
/// operation id is the item's key).
pub fn parse_debit_item(item: &pb::DebitCoinsItem, caller: &Caller) -> Parsed<DebitCmd> {
    let mut v = Violations::default();
    let cmd = debit_fields(
        &mut v,
        DebitFields {
            operation_id: &item.operation_id,
            user_id: &item.user_id,
            coins: item.coins,
            saga_id: &item.saga_id,
            note: &item.note,
        },
        caller,
    );
    v.finish(|| cmd)
}

/// The fields a debit has, in DebitCoins and in each item of DebitCoinsBatch.
struct DebitFields<'a> {
    operation_id: &'a str,
    user_id: &'a str,
    coins: i64,
    saga_id: &'a str,
    note: &'a str,
}

/// Checks a debit's fields into `v`; the command if all of them are good. The actor of
/// record is the caller.
fn debit_fields(v: &mut Violations, f: DebitFields<'_>, caller: &Caller) -> Option<DebitCmd> {
    let op = v.check("operation_id", ResourceId::parse(f.operation_id));
    let user = v.check("user_id", ResourceId::parse(f.user_id));
    let coins = v.check("coins", Coins::parse(f.coins));
    let saga = v.check("saga_id", optional_id(f.saga_id));
    let note = v.check("note", Text::parse(f.note));
    Some(DebitCmd {
        operation_id: op?,
        user_id: user?,
        coins: coins?,
        saga_id: saga?,
        note: note?,
        actor: caller.subject().to_owned(),
    })
}

pub fn parse_refund_coins(
    req: &pb::RefundCoinsRequest,
    caller: &Caller,
) -> Parsed<(IdempotencyKey, RefundCmd)> {
    let mut v = Violations::default();
    let key = idempotency_key(&mut v, &req.idempotency_key);
    let op = v.check("operation_id", ResourceId::parse(&req.operation_id));
    let debit = v.check(
        "debit_operation_id",
        ResourceId::parse(&req.debit_operation_id),
    );
    let coins = v.check("coins", optional_coins(req.coins));
    let note = v.check("note", Text::parse(&req.note));
    keyed(v, key, || {
        Some(RefundCmd {
            operation_id: op?,
            debit_operation_id: debit?,
            coins: coins?,
            note: note?,
            actor: caller.subject().to_owned(),
        })
    })
}

pub fn parse_reserve_coins(req: &pb::ReserveCoinsRequest) -> Parsed<(IdempotencyKey, ReserveCmd)> {
    let mut v = Violations::default();
    let key = idempotency_key(&mut v, &req.idempotency_key);
    let op = v.check("operation_id", ResourceId::parse(&req.operation_id));
    let user = v.check("user_id", ResourceId::parse(&req.user_id));
    let coins = v.check("coins", Coins::parse(req.coins));
    let ttl = v.check("ttl", hold_ttl_ms(req.ttl.as_ref()));
    let saga = v.check("saga_id", optional_id(&req.saga_id));
    let note = v.check("note", Text::parse(&req.note));
    keyed(v, key, || {
        Some(ReserveCmd {
            operation_id: op?,
            user_id: user?,
            coins: coins?,
            ttl_ms: ttl?,
            saga_id: saga?,
            note: note?,
        })
    })
}

pub fn parse_capture_hold(
    req: &pb::CaptureHoldRequest,
    caller: &Caller,
) -> Parsed<(IdempotencyKey, CaptureCmd)> {
    let mut v = Violations::default();
    let key = idempotency_key(&mut v, &req.idempotency_key);
    let op = v.check("operation_id", ResourceId::parse(&req.operation_id));
    let coins = v.check("coins", optional_coins(req.coins));
    keyed(v, key, || {
        Some(CaptureCmd {
            operation_id: op?,
            coins: coins?,
            actor: caller.subject().to_owned(),
        })
    })
}

/// The hold's operation id.
pub fn parse_release_hold(req: &pb::ReleaseHoldRequest) -> Parsed<(IdempotencyKey, ResourceId)> {
    let mut v = Violations::default();
    let key = idempotency_key(&mut v, &req.idempotency_key);
    let op = v.check("operation_id", ResourceId::parse(&req.operation_id));
    keyed(v, key, || op)
}

pub fn parse_get_hold(req: &pb::GetHoldRequest) -> Parsed<ResourceId> {
    id("operation_id", &req.operation_id)
}

pub fn parse_set_spending_limits(
    req: &pb::SetSpendingLimitsRequest,
    caller: &Caller,
) -> Parsed<(IdempotencyKey, SetLimitsCmd)> {
    let mut v = Violations::default();
    let key = idempotency_key(&mut v, &req.idempotency_key);
    let user = v.check("user_id", ResourceId::parse(&req.user_id));
    let reason = v.noted_reason(Text::parse(&req.reason), &req.actor, caller.subject());
    let caps = spending_caps(&mut v, req.caps.as_ref());
    keyed(v, key, || {
        Some(SetLimitsCmd {
            user_id: user?,
            caps: caps?,
            actor: caller.subject().to_owned(),
            reason: reason?,
        })
    })
}

pub fn parse_get_spending_limits(req: &pb::GetSpendingLimitsRequest) -> Parsed<ResourceId> {
    id("user_id", &req.user_id)
}

pub fn parse_list_transactions(req: &pb::ListTransactionsRequest) -> Parsed<TransactionsPage> {
    let mut v = Violations::default();
    let user = v.check("user_id", ResourceId::parse(&req.user_id));
    let size = v.check("page_size", PageSize::parse(req.page_size));
    let before = v.check(
        "page_token",
        PageToken::parse(&req.page_token).and_then(|t| t.cursor_i64()),
    );
    v.finish(|| {
        Some(TransactionsPage {
            user_id: user?,
            size: size?,
            before: before?,
        })
    })
}

/// Either operation ids (then no paging and no time window) or a page of a window.
pub fn parse_list_debits(req: &pb::ListDebitsRequest) -> Parsed<DebitsQuery> {
    let mut v = Violations::default();
    let by_ids = !req.operation_ids.is_empty();
    if req.operation_ids.len() > DEBIT_IDS_MAX {
        v.add("operation_ids", format!("at most {DEBIT_IDS_MAX} ids"));
    }
    if by_ids && (req.page_size != 0 || !req.page_token.is_empty()) {
        v.add("page_size", "must be unset when operation_ids are given");
    }
    if by_ids && (req.start_time.is_some() || req.end_time.is_some()) {
        v.add("start_time", "must be unset when operation_ids are given");
    }
    let window = time_window(&mut v, req.start_time.as_ref(), req.end_time.as_ref());
    let ids: Vec<Option<ResourceId>> = req
        .operation_ids
        .iter()
        .enumerate()
        .take(DEBIT_IDS_MAX)
        .map(|(i, id)| v.check(&format!("operation_ids[{i}]"), ResourceId::parse(id)))
        .collect();
    let size = v.check("page_size", PageSize::parse(req.page_size));
    let after = v.check(
        "page_token",
        PageToken::parse(&req.page_token).and_then(|t| t.keyset()),
    );
    v.finish(|| {
        if by_ids {
            return Some(DebitsQuery::Ids(ids.into_iter().collect::<Option<_>>()?));
        }
        Some(DebitsQuery::Page {
            size: size?,
            after: after?,
            window: window?,
        })
    })
}

/// A page of clawback orders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClawbackOrdersPage {
    /// `None`: every purchase's.
    pub purchase_id: Option<ResourceId>,
    /// `None`: every state.
    pub state: Option<ClawbackOrderState>,
    pub size: PageSize,
    /// The (created_at, clawback id) to continue after.
    pub after: Option<(i64, String)>,
}

pub fn parse_list_clawback_orders(
    req: &pb::ListClawbackOrdersRequest,
) -> Parsed<ClawbackOrdersPage> {
    let mut v = Violations::default();
    let purchase_id = v.check("purchase_id", optional_id(&req.purchase_id));
    let state = v.check("state", clawback_order_state_filter(req.state));
    let size = v.check("page_size", PageSize::parse(req.page_size));
    let after = v.check(
        "page_token",
        PageToken::parse(&req.page_token).and_then(|t| t.keyset()),
    );
    v.finish(|| {
        Some(ClawbackOrdersPage {
            purchase_id: purchase_id?,
            state: state?,
            size: size?,
            after: after?,
        })
    })
}

fn clawback_order_state_filter(raw: i32) -> Result<Option<ClawbackOrderState>, String> {
    let state = pb::ClawbackOrderState::try_from(raw)
        .map_err(|_| "is not a clawback order state".to_string())?;
    Ok(match state {
        pb::ClawbackOrderState::Unspecified => None,
        pb::ClawbackOrderState::Pending => Some(ClawbackOrderState::Pending),
        pb::ClawbackOrderState::Applied => Some(ClawbackOrderState::Applied),
        pb::ClawbackOrderState::NoCredit => Some(ClawbackOrderState::NoCredit),
    })
}

/// A request whose only field is one id.
fn id(field: &str, raw: &str) -> Parsed<ResourceId> {
    ResourceId::parse(raw).map_err(|e| vec![Violation::new(field, e)])
}

/// The age the caller's token vouches for, about account `user`: only the user's own
/// token (or the gateway's for them) speaks for the account holder; an operator's or a
/// service's token describes someone else.
fn verified_age_of(caller: &Caller, user: &str) -> Option<VerifiedAge> {
    if !caller.is_user(user) {
        return None;
    }
    caller.verified_age().map(|age| match age {
        ovation_auth::VerifiedAge::Adult => VerifiedAge::Adult,
        ovation_auth::VerifiedAge::Minor => VerifiedAge::Minor,
    })
}

/// An optional id field: empty means none.
/// An optional `coins` field: unset means "all of it".
fn optional_coins(raw: Option<i64>) -> Result<Option<Coins>, String> {
    raw.map(Coins::parse).transpose()
}

/// `payment_method`, or the deprecated `payment_token` (a sandbox token) in its place.
fn payment_method(v: &mut Violations, req: &pb::PurchaseCoinsRequest) -> Option<PaymentMethod> {
    use pb::payment_method::Method;
    let Some(method) = &req.payment_method else {
        let token = v.check(
            "payment_token",
            bounded_text(&req.payment_token, PAYMENT_TOKEN_BYTES_MAX),
        );
        return token.map(|token| PaymentMethod::Sandbox { token });
    };
    if !req.payment_token.is_empty() {
        v.check::<()>(
            "payment_token",
            Err("must be empty when payment_method is set".into()),
        );
        return None;
    }
    match &method.method {
        None => v.check("payment_method", Err("names no method".into())),
        Some(Method::Sandbox(s)) => v
            .check(
                "payment_method.sandbox.token",
                bounded_text(&s.token, PAYMENT_TOKEN_BYTES_MAX),
            )
            .map(|token| PaymentMethod::Sandbox { token }),
        Some(Method::StripeCard(c)) => v
            .check(
                "payment_method.stripe_card.payment_method_id",
                stripe_id(&c.payment_method_id, "pm_"),
            )
            .map(|payment_method_id| PaymentMethod::StripeCard { payment_method_id }),
        Some(Method::AppStore(a)) => v
            .check(
                "payment_method.app_store.signed_transaction",
                bounded_text(&a.signed_transaction, SIGNED_TRANSACTION_BYTES_MAX),
            )
            .map(|signed_transaction| PaymentMethod::AppStore { signed_transaction }),
        Some(Method::GooglePlay(g)) => {
            let product = v.check(
                "payment_method.google_play.product_id",
                bounded_text(&g.product_id, PAYMENT_TOKEN_BYTES_MAX),
            );
            let token = v.check(
                "payment_method.google_play.purchase_token",
                bounded_text(&g.purchase_token, PURCHASE_TOKEN_BYTES_MAX),
            );
            Some(PaymentMethod::GooglePlay {
                product_id: product?,
                purchase_token: token?,
            })
        }
    }
}

/// A required opaque text of at most `bytes_max` bytes.
fn bounded_text(raw: &str, bytes_max: usize) -> Result<String, String> {
    if raw.is_empty() || raw.len() > bytes_max {
        return Err(format!("is required, at most {bytes_max} characters"));
    }
    Ok(raw.to_owned())
}

/// A Stripe object id with its `prefix` (letters, digits and `_`), ≤ 255 bytes.
fn stripe_id(raw: &str, prefix: &str) -> Result<String, String> {
    let well_formed = raw.len() > prefix.len()
        && raw.len() <= PAYMENT_TOKEN_BYTES_MAX
        && raw.starts_with(prefix)
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !well_formed {
        return Err(format!(
            "must be a Stripe id \"{prefix}…\" (letters, digits, _), at most \
             {PAYMENT_TOKEN_BYTES_MAX} characters"
        ));
    }
    Ok(raw.to_owned())
}

/// A hold's time to live: the default when unset, else 1 s..=1 h.
fn hold_ttl_ms(ttl: Option<&prost_types::Duration>) -> Result<i64, String> {
    let Some(d) = ttl else {
        return Ok(HOLD_TTL_MS_DEFAULT);
    };
    let ms = d
        .seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(d.nanos / 1_000_000));
    if (HOLD_TTL_MS_MIN..=HOLD_TTL_MS_MAX).contains(&ms) && d.nanos >= 0 {
        Ok(ms)
    } else {
        Err("must be between 1 s and 1 h".to_string())
    }
}

/// ListPurchases' `state`: unset means every state.
fn purchase_state_filter(raw: i32) -> Result<Option<PurchaseState>, String> {
    let state =
        pb::PurchaseState::try_from(raw).map_err(|_| "is not a purchase state".to_string())?;
    Ok(match state {
        pb::PurchaseState::Unspecified => None,
        pb::PurchaseState::Pending => Some(PurchaseState::Pending),
        pb::PurchaseState::Completed => Some(PurchaseState::Completed),
        pb::PurchaseState::Declined => Some(PurchaseState::Declined),
        pb::PurchaseState::Reversed => Some(PurchaseState::Reversed),
    })
}

/// The complete new set of caps (required; an unset cap means none).
fn spending_caps(v: &mut Violations, caps: Option<&pb::SpendingCaps>) -> Option<Caps> {
    let Some(c) = caps else {
        v.add(
            "caps",
            "is required: the complete new set of caps (an unset cap means none)",
        );
        return None;
    };
    let daily_spend = v.check("caps.daily_spend_coins", cap(c.daily_spend_coins));
    let monthly_spend = v.check("caps.monthly_spend_coins", cap(c.monthly_spend_coins));
    let daily_purchase = v.check("caps.daily_purchase_coins", cap(c.daily_purchase_coins));
    let monthly_purchase = v.check("caps.monthly_purchase_coins", cap(c.monthly_purchase_coins));
    Some(Caps {
        daily_spend: daily_spend?,
        monthly_spend: monthly_spend?,
        daily_purchase: daily_purchase?,
        monthly_purchase: monthly_purchase?,
    })
}

/// One cap: unset is none, 0 blocks everything.
fn cap(raw: Option<i64>) -> Result<Option<i64>, String> {
    match raw {
        Some(c) if !(0..=AMOUNT_MAX).contains(&c) => {
            Err(format!("must be between 0 and {AMOUNT_MAX}"))
        }
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use ovation_auth::Role;

    use super::*;

    fn gifting() -> Caller {
        Caller::new("gifting", vec![Role::GiftingService], None)
    }

    fn admin() -> Caller {
        Caller::new("admin-1", vec![Role::Admin], None)
    }

    /// The fields the violations name, in order.
    fn fields<T: std::fmt::Debug>(parsed: Parsed<T>) -> Vec<String> {
        match parsed {
            Err(violations) => violations.into_iter().map(|v| v.field).collect(),
            Ok(parsed) => panic!("expected violations, got {parsed:?}"),
        }
    }

    fn debit_request() -> pb::DebitCoinsRequest {
        pb::DebitCoinsRequest {
            idempotency_key: "k1".into(),
            operation_id: "op-1".into(),
            user_id: "ann".into(),
            coins: 5,
            saga_id: String::new(),
            note: "rose".into(),
        }
    }

    #[test]
    fn a_debit_becomes_a_command_acted_by_the_caller() {
        let (key, cmd) = parse_debit_coins(&debit_request(), &gifting()).unwrap();
        assert_eq!(key.as_str(), "k1");
        assert_eq!(cmd.operation_id.as_str(), "op-1");
        assert_eq!(cmd.coins.get(), 5);
        assert_eq!(cmd.saga_id, None, "an empty saga id is none");
        assert_eq!(cmd.actor, "gifting");
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let req = pb::DebitCoinsRequest {
            idempotency_key: String::new(),
            operation_id: "a b".into(),
            coins: 0,
            saga_id: "bad id".into(),
            note: "\u{0}".into(),
            ..debit_request()
        };
        assert_eq!(
            fields(parse_debit_coins(&req, &gifting())),
            [
                "idempotency_key",
                "operation_id",
                "coins",
                "saga_id",
                "note"
            ]
        );
    }

    #[test]
    fn a_batch_item_has_the_debits_fields_and_rules() {
        let item = pb::DebitCoinsItem {
            operation_id: "op-1".into(),
            user_id: "ann".into(),
            coins: 5,
            saga_id: "saga-1".into(),
            note: "rose".into(),
        };
        let cmd = parse_debit_item(&item, &gifting()).unwrap();
        assert_eq!(
            (
                cmd.operation_id.as_str(),
                cmd.user_id.as_str(),
                cmd.coins.get()
            ),
            ("op-1", "ann", 5)
        );
        assert_eq!(cmd.saga_id.as_ref().map(ResourceId::as_str), Some("saga-1"));
        assert_eq!(cmd.actor, "gifting");
        let bad = pb::DebitCoinsItem {
            operation_id: String::new(),
            coins: -1,
            note: "\u{0}".into(),
            ..item
        };
        assert_eq!(
            fields(parse_debit_item(&bad, &gifting())),
            ["operation_id", "coins", "note"]
        );
    }

    #[test]
    fn unset_coins_mean_all_of_it() {
        let req = pb::RefundCoinsRequest {
            idempotency_key: "k".into(),
            operation_id: "r-1".into(),
            debit_operation_id: "op-1".into(),
            coins: None,
            note: String::new(),
        };
        assert_eq!(parse_refund_coins(&req, &gifting()).unwrap().1.coins, None);
        let zero = pb::RefundCoinsRequest {
            coins: Some(0),
            ..req
        };
        assert_eq!(fields(parse_refund_coins(&zero, &gifting())), ["coins"]);
        let capture = pb::CaptureHoldRequest {
            idempotency_key: "k".into(),
            operation_id: "h-1".into(),
            coins: Some(-1),
        };
        assert_eq!(fields(parse_capture_hold(&capture, &gifting())), ["coins"]);
    }

    #[test]
    fn a_hold_lives_one_second_to_one_hour() {
        let ttl = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
        assert_eq!(hold_ttl_ms(None), Ok(HOLD_TTL_MS_DEFAULT));
        assert_eq!(hold_ttl_ms(ttl(1, 0).as_ref()), Ok(1_000));
        assert_eq!(hold_ttl_ms(ttl(3_600, 0).as_ref()), Ok(3_600_000));
        assert!(hold_ttl_ms(ttl(0, 999_000_000).as_ref()).is_err());
        assert!(hold_ttl_ms(ttl(3_600, 1_000_000).as_ref()).is_err());
        assert!(hold_ttl_ms(ttl(2, -1).as_ref()).is_err());
        assert!(hold_ttl_ms(ttl(i64::MAX, 0).as_ref()).is_err());
    }

    #[test]
    fn a_token_vouches_only_for_its_own_user() {
        let req = pb::CreateAccountRequest {
            idempotency_key: "k".into(),
            user_id: "ann".into(),
            minor: false,
        };
        let ann = Caller::new("ann", vec![Role::Viewer], None)
            .with_verified_age(Some(ovation_auth::VerifiedAge::Adult));
        let (_, own) = parse_create_account(&req, &ann).unwrap();
        assert_eq!(own.verified_age, Some(VerifiedAge::Adult));
        let operator = admin().with_verified_age(Some(ovation_auth::VerifiedAge::Adult));
        let (_, other) = parse_create_account(&req, &operator).unwrap();
        assert_eq!(other.verified_age, None, "the admin's age is not ann's");
    }

    #[test]
    fn a_reported_actor_is_a_note_and_the_caller_acts() {
        let req = pb::SetAccountMinorRequest {
            idempotency_key: "k".into(),
            user_id: "ann".into(),
            minor: true,
            reason: "guardian's request".into(),
            actor: "ops-jane".into(),
        };
        let (_, cmd) = parse_set_account_minor(&req, &admin()).unwrap();
        assert_eq!(cmd.actor, "admin-1");
        assert_eq!(
            cmd.reason.as_str(),
            "guardian's request (reported by: ops-jane)"
        );
        let blank = pb::SetAccountMinorRequest {
            reason: " ".into(),
            ..req
        };
        assert_eq!(
            fields(parse_set_account_minor(&blank, &admin())),
            ["reason"]
        );
    }

    #[test]
    fn spending_limits_need_the_complete_set_of_caps() {
        let req = pb::SetSpendingLimitsRequest {
            idempotency_key: "k".into(),
            user_id: "ann".into(),
            caps: None,
            reason: String::new(),
            actor: String::new(),
        };
        assert_eq!(fields(parse_set_spending_limits(&req, &admin())), ["caps"]);
        let caps = pb::SpendingCaps {
            daily_spend_coins: Some(0),
            monthly_spend_coins: Some(-1),
            daily_purchase_coins: None,
            monthly_purchase_coins: Some(AMOUNT_MAX + 1),
        };
        let bad = pb::SetSpendingLimitsRequest {
            caps: Some(caps),
            ..req
        };
        assert_eq!(
            fields(parse_set_spending_limits(&bad, &admin())),
            ["caps.monthly_spend_coins", "caps.monthly_purchase_coins"]
        );
    }

    #[test]
    fn a_purchase_keeps_the_request_fingerprint() {
        let req = pb::PurchaseCoinsRequest {
            idempotency_key: "k".into(),
            user_id: "ann".into(),
            package_id: "coins_100".into(),
            currency_code: "USD".into(),
            payment_token: "tok".into(),
            expected_price: None,
            payment_method: None,
        };
        let fingerprint = Fingerprint::of("PurchaseCoins", &req);
        let ann = Caller::new("ann", vec![Role::Viewer], None);
        let cmd = parse_purchase_coins(&req, &ann, &fingerprint).unwrap();
        assert_eq!(cmd.fingerprint, fingerprint.as_str());
        assert_eq!(cmd.currency.as_str(), "USD");
        let bad = pb::PurchaseCoinsRequest {
            currency_code: "usd".into(),
            payment_token: "t".repeat(256),
            expected_price: Some(ovation_proto::common::Money {
                currency_code: "USD".into(),
                amount_minor: 0,
            }),
            ..req
        };
        assert_eq!(
            fields(parse_purchase_coins(&bad, &ann, &fingerprint)),
            [
                "currency_code",
                "payment_token",
                "expected_price.amount_minor"
            ]
        );
    }

    #[test]
    fn purchases_filter_by_a_known_state() {
        let req = |state| pb::ListPurchasesRequest {
            user_id: "ann".into(),
            page_size: 0,
            page_token: String::new(),
            state,
        };
        assert_eq!(parse_list_purchases(&req(0)).unwrap().state, None);
        assert_eq!(
            parse_list_purchases(&req(4)).unwrap().state,
            Some(PurchaseState::Reversed)
        );
        assert_eq!(fields(parse_list_purchases(&req(9))), ["state"]);
    }

    #[test]
    fn debits_are_asked_for_by_ids_or_by_page() {
        let by_ids = pb::ListDebitsRequest {
            operation_ids: vec!["op-2".into(), "op-1".into()],
            ..Default::default()
        };
        assert!(matches!(
            parse_list_debits(&by_ids),
            Ok(DebitsQuery::Ids(ids)) if ids.len() == 2
        ));
        assert!(matches!(
            parse_list_debits(&pb::ListDebitsRequest::default()),
            Ok(DebitsQuery::Page { after: None, .. })
        ));
        let mixed = pb::ListDebitsRequest {
            page_size: 10,
            start_time: Some(prost_types::Timestamp::default()),
            ..by_ids
        };
        assert_eq!(
            fields(parse_list_debits(&mixed)),
            ["page_size", "start_time"]
        );
        let too_many = pb::ListDebitsRequest {
            operation_ids: vec!["op".into(); DEBIT_IDS_MAX + 1],
            ..Default::default()
        };
        assert_eq!(fields(parse_list_debits(&too_many)), ["operation_ids"]);
    }

    #[test]
    fn reads_name_their_one_field() {
        let hold = pb::GetHoldRequest {
            operation_id: String::new(),
        };
        assert_eq!(fields(parse_get_hold(&hold)), ["operation_id"]);
        let purchase = pb::GetPurchaseRequest {
            purchase_id: "pur_1".into(),
        };
        assert_eq!(parse_get_purchase(&purchase).unwrap().as_str(), "pur_1");
    }
}
