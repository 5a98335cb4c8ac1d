//! One `parse_*` per request: the proto request in, a domain command (or a read query) out,
//! or every bad field at once. Pure, so each is tested without a server.

use ovation_proto::catalog as pb;
use ovation_server::edge::{money, optional_timestamp, timestamp};
use ovation_types::Parsed;
use ovation_types::{
    Bps, Coins, Diamonds, IdempotencyKey, Name, PageSize, PageToken, Quantity, ResourceId, Text,
    UnixMillis, Violations,
};

use crate::domain::{
    CoinPackage, CoinPackageChange, DiamondLimit, EconomyChange, EconomyParameters, Edit, Gift,
    GiftChange, GiftPrice, NewCoinPackage, NewGift, NewPromotion, Prices, Promotion,
    PromotionChange, RuleHours, TheEconomy, Update, Window, parse_bonus_bps, parse_package_ids,
    parse_per_user_cap,
};

/// One item, at a version or (`None`) its latest.
#[derive(Debug, PartialEq)]
pub struct Lookup {
    pub id: ResourceId,
    pub version: Option<i64>,
}

/// A page of a list ordered by id.
#[derive(Debug, PartialEq)]
pub struct Page {
    pub size: PageSize,
    pub token: PageToken,
}

/// A page of a list of versions, oldest first: those after version `after` (0: from the
/// first).
#[derive(Debug, PartialEq)]
pub struct VersionPage {
    pub size: PageSize,
    pub after: i64,
}

/// Which gifts to list: `sendable_at`, only those that can be sent then.
#[derive(Debug, PartialEq)]
pub struct GiftList {
    pub page: Page,
    pub sendable_at: Option<UnixMillis>,
}

/// Which promotions to list: those active at `active_at` and applying to `package`, when
/// given.
#[derive(Debug, PartialEq)]
pub struct PromotionList {
    pub page: Page,
    pub active_at: Option<UnixMillis>,
    pub package: Option<ResourceId>,
}

/// What to price: `quantity` of one gift.
#[derive(Debug, PartialEq)]
pub struct QuoteQuery {
    pub gift_id: ResourceId,
    pub quantity: Quantity,
}

/// A version in a Get request, or `expected_version` in an Update: 0 means latest (any).
fn parse_version(raw: i64) -> Result<Option<i64>, String> {
    match raw {
        0 => Ok(None),
        v if v < 0 => Err("must not be negative".into()),
        v => Ok(Some(v)),
    }
}

fn parse_page(v: &mut Violations, page_size: i32, page_token: &str) -> Option<Page> {
    let size = v.check("page_size", PageSize::parse(page_size));
    let token = v.check("page_token", PageToken::parse(page_token));
    Some(Page {
        size: size?,
        token: token?,
    })
}

fn parse_version_page(v: &mut Violations, page_size: i32, page_token: &str) -> Option<VersionPage> {
    let size = v.check("page_size", PageSize::parse(page_size));
    let after = v.check(
        "page_token",
        PageToken::parse(page_token).and_then(|t| t.cursor_i64()),
    );
    Some(VersionPage {
        size: size?,
        after: after?.unwrap_or(0),
    })
}

fn parse_lookup(id_field: &str, id: &str, version: i64) -> Parsed<Lookup> {
    let mut v = Violations::default();
    let id = v.check(id_field, ResourceId::parse(id));
    let version = v.check("version", parse_version(version));
    v.finish(|| {
        Some(Lookup {
            id: id?,
            version: version?,
        })
    })
}

fn parse_key(v: &mut Violations, raw: &str) -> Option<IdempotencyKey> {
    v.check("idempotency_key", IdempotencyKey::parse(raw))
}

/// An optional field of an update: absent keeps the current value; present must parse.
/// `Some(None)` is a present field that did not parse (already recorded in `v`).
fn optional<R, T>(
    v: &mut Violations,
    field: &str,
    raw: Option<R>,
    parse: impl FnOnce(R) -> Result<T, String>,
) -> Option<Option<T>> {
    raw.map(|r| v.check(field, parse(r)))
}

/// Unwraps what [`optional`] parsed: `None` when a present field did not parse.
fn kept<T>(parsed: Option<Option<T>>) -> Option<Option<T>> {
    match parsed {
        None => Some(None),
        Some(value) => value.map(Some),
    }
}

fn window_edit(
    v: &mut Violations,
    field: &str,
    set: Option<&prost_types::Timestamp>,
    clear: bool,
) -> Option<Edit<UnixMillis>> {
    match (set, clear) {
        (Some(_), true) => {
            v.add(field, format!("cannot both set {field} and clear it"));
            None
        }
        (Some(ts), false) => v.check(field, timestamp(Some(ts))).map(Edit::Set),
        (None, true) => Some(Edit::Clear),
        (None, false) => Some(Edit::Keep),
    }
}

fn parse_prices(v: &mut Violations, prices: &[ovation_proto::common::Money]) -> Option<Prices> {
    let mut parsed = Vec::with_capacity(prices.len());
    for (i, price) in prices.iter().enumerate() {
        parsed.push(money(v, &format!("prices[{i}]"), Some(price)));
    }
    let parsed: Option<Vec<_>> = parsed.into_iter().collect();
    v.check("prices", Prices::new(parsed?))
}

pub fn parse_get_gift(req: &pb::GetGiftRequest) -> Parsed<Lookup> {
    parse_lookup("gift_id", &req.gift_id, req.version)
}

/// `now`: when "sendable" is judged, for `active_only`.
pub fn parse_list_gifts(req: &pb::ListGiftsRequest, now: UnixMillis) -> Parsed<GiftList> {
    let mut v = Violations::default();
    let page = parse_page(&mut v, req.page_size, &req.page_token);
    v.finish(|| {
        Some(GiftList {
            page: page?,
            sendable_at: req.active_only.then_some(now),
        })
    })
}

pub fn parse_list_gift_versions(
    req: &pb::ListGiftVersionsRequest,
) -> Parsed<(ResourceId, VersionPage)> {
    let mut v = Violations::default();
    let id = v.check("gift_id", ResourceId::parse(&req.gift_id));
    let page = parse_version_page(&mut v, req.page_size, &req.page_token);
    v.finish(|| Some((id?, page?)))
}

pub fn parse_create_gift(req: &pb::CreateGiftRequest) -> Parsed<(IdempotencyKey, NewGift)> {
    let mut v = Violations::default();
    let key = parse_key(&mut v, &req.idempotency_key);
    let id = v.check("gift_id", ResourceId::parse(&req.gift_id));
    let name = v.check("name", Name::parse(&req.name));
    let price = v.check("coin_price", GiftPrice::parse(req.coin_price));
    let asset_url = v.check("asset_url", Text::parse(&req.asset_url));
    let from = v.check("active_from", optional_timestamp(req.active_from.as_ref()));
    let until = v.check(
        "active_until",
        optional_timestamp(req.active_until.as_ref()),
    );
    let window = match (from, until) {
        (Some(f), Some(u)) => v.check("active_until", Window::new(f, u)),
        _ => None,
    };
    v.finish(|| {
        Some((
            key?,
            NewGift {
                id: id?,
                name: name?,
                coin_price: price?,
                asset_url: asset_url?,
                enabled: req.enabled,
                window: window?,
            },
        ))
    })
}

pub fn parse_update_gift(req: &pb::UpdateGiftRequest) -> Parsed<(IdempotencyKey, Update<Gift>)> {
    let mut v = Violations::default();
    let key = parse_key(&mut v, &req.idempotency_key);
    let id = v.check("gift_id", ResourceId::parse(&req.gift_id));
    let expected = v.check("expected_version", parse_version(req.expected_version));
    let name = optional(&mut v, "name", req.name.as_deref(), Name::parse);
    let price = optional(&mut v, "coin_price", req.coin_price, GiftPrice::parse);
    let url = optional(&mut v, "asset_url", req.asset_url.as_deref(), Text::parse);
    let from = window_edit(
        &mut v,
        "active_from",
        req.active_from.as_ref(),
        req.clear_active_from,
    );
    let until = window_edit(
        &mut v,
        "active_until",
        req.active_until.as_ref(),
        req.clear_active_until,
    );
    v.finish(|| {
        let change = GiftChange {
            name: kept(name)?,
            coin_price: kept(price)?,
            asset_url: kept(url)?,
            enabled: req.enabled,
            active_from: from?,
            active_until: until?,
        };
        Some((key?, update(id?, expected?, change)))
    })
}

pub fn parse_quote_gift(req: &pb::QuoteGiftRequest) -> Parsed<QuoteQuery> {
    let mut v = Violations::default();
    let id = v.check("gift_id", ResourceId::parse(&req.gift_id));
    let quantity = v.check("quantity", Quantity::parse(req.quantity));
    v.finish(|| {
        Some(QuoteQuery {
            gift_id: id?,
            quantity: quantity?,
        })
    })
}

pub fn parse_get_coin_package(req: &pb::GetCoinPackageRequest) -> Parsed<Lookup> {
    parse_lookup("package_id", &req.package_id, req.version)
}

pub fn parse_list_coin_packages(req: &pb::ListCoinPackagesRequest) -> Parsed<Page> {
    let mut v = Violations::default();
    let page = parse_page(&mut v, req.page_size, &req.page_token);
    v.finish(|| page)
}

pub fn parse_create_coin_package(
    req: &pb::CreateCoinPackageRequest,
) -> Parsed<(IdempotencyKey, NewCoinPackage)> {
    let mut v = Violations::default();
    let key = parse_key(&mut v, &req.idempotency_key);
    let id = v.check("package_id", ResourceId::parse(&req.package_id));
    let name = v.check("name", Name::parse(&req.name));
    let coins = v.check("coins", Coins::parse(req.coins));
    let prices = parse_prices(&mut v, &req.prices);
    v.finish(|| {
        Some((
            key?,
            NewCoinPackage {
                id: id?,
                name: name?,
                coins: coins?,
                prices: prices?,
                enabled: req.enabled,
            },
        ))
    })
}

/// An empty `prices` keeps the package's prices.
pub fn parse_update_coin_package(
    req: &pb::UpdateCoinPackageRequest,
) -> Parsed<(IdempotencyKey, Update<CoinPackage>)> {
    let mut v = Violations::default();
    let key = parse_key(&mut v, &req.idempotency_key);
    let id = v.check("package_id", ResourceId::parse(&req.package_id));
    let expected = v.check("expected_version", parse_version(req.expected_version));
    let name = optional(&mut v, "name", req.name.as_deref(), Name::parse);
    let coins = optional(&mut v, "coins", req.coins, Coins::parse);
    let prices = (!req.prices.is_empty()).then(|| parse_prices(&mut v, &req.prices));
    v.finish(|| {
        let change = CoinPackageChange {
            name: kept(name)?,
            coins: kept(coins)?,
            prices: kept(prices)?,
            enabled: req.enabled,
        };
        Some((key?, update(id?, expected?, change)))
    })
}

pub fn parse_get_promotion(req: &pb::GetPromotionRequest) -> Parsed<Lookup> {
    parse_lookup("promotion_id", &req.promotion_id, req.version)
}

/// An empty `package_id` lists promotions for every package.
pub fn parse_list_promotions(req: &pb::ListPromotionsRequest) -> Parsed<PromotionList> {
    let mut v = Violations::default();
    let page = parse_page(&mut v, req.page_size, &req.page_token);
    let active_at = v.check("active_at", optional_timestamp(req.active_at.as_ref()));
    let package = if req.package_id.is_empty() {
        Some(None)
    } else {
        v.check("package_id", ResourceId::parse(&req.package_id))
            .map(Some)
    };
    v.finish(|| {
        Some(PromotionList {
            page: page?,
            active_at: active_at?,
            package: package?,
        })
    })
}

pub fn parse_create_promotion(
    req: &pb::CreatePromotionRequest,
) -> Parsed<(IdempotencyKey, NewPromotion)> {
    let mut v = Violations::default();
    let key = parse_key(&mut v, &req.idempotency_key);
    let id = v.check("promotion_id", ResourceId::parse(&req.promotion_id));
    let name = v.check("name", Name::parse(&req.name));
    let bonus = v.check("bonus_bps", parse_bonus_bps(req.bonus_bps));
    let packages = v.check("package_ids", parse_package_ids(&req.package_ids));
    let starts = v.check("starts_at", timestamp(req.starts_at.as_ref()));
    let ends = v.check("ends_at", timestamp(req.ends_at.as_ref()));
    if let (Some(s), Some(e)) = (starts, ends)
        && s >= e
    {
        v.add("ends_at", "must be after starts_at");
    }
    let cap = v.check("per_user_cap", parse_per_user_cap(req.per_user_cap));
    v.finish(|| {
        Some((
            key?,
            NewPromotion {
                id: id?,
                name: name?,
                bonus_bps: bonus?,
                package_ids: packages?,
                starts_at: starts?,
                ends_at: ends?,
                per_user_cap: cap?,
                enabled: req.enabled,
            },
        ))
    })
}

/// `replace_package_ids` says whether `package_ids` (perhaps empty: every package) is new.
pub fn parse_update_promotion(
    req: &pb::UpdatePromotionRequest,
) -> Parsed<(IdempotencyKey, Update<Promotion>)> {
    let mut v = Violations::default();
    let key = parse_key(&mut v, &req.idempotency_key);
    let id = v.check("promotion_id", ResourceId::parse(&req.promotion_id));
    let expected = v.check("expected_version", parse_version(req.expected_version));
    let name = optional(&mut v, "name", req.name.as_deref(), Name::parse);
    let bonus = optional(&mut v, "bonus_bps", req.bonus_bps, parse_bonus_bps);
    let packages = optional(
        &mut v,
        "package_ids",
        req.replace_package_ids.then_some(&req.package_ids[..]),
        parse_package_ids,
    );
    let starts = optional(&mut v, "starts_at", req.starts_at.as_ref(), |t| {
        timestamp(Some(t))
    });
    let ends = optional(&mut v, "ends_at", req.ends_at.as_ref(), |t| {
        timestamp(Some(t))
    });
    let cap = optional(&mut v, "per_user_cap", req.per_user_cap, parse_per_user_cap);
    v.finish(|| {
        let change = PromotionChange {
            name: kept(name)?,
            bonus_bps: kept(bonus)?,
            package_ids: kept(packages)?,
            starts_at: kept(starts)?,
            ends_at: kept(ends)?,
            per_user_cap: kept(cap)?,
            enabled: req.enabled,
        };
        Some((key?, update(id?, expected?, change)))
    })
}

pub fn parse_get_economy_parameters(req: &pb::GetEconomyParametersRequest) -> Parsed<Option<i64>> {
    let mut v = Violations::default();
    let version = v.check("version", parse_version(req.version));
    v.finish(|| version)
}

pub fn parse_list_economy_parameters_versions(
    req: &pb::ListEconomyParametersVersionsRequest,
) -> Parsed<VersionPage> {
    let mut v = Violations::default();
    let page = parse_version_page(&mut v, req.page_size, &req.page_token);
    v.finish(|| page)
}

pub fn parse_update_economy_parameters(
    req: &pb::UpdateEconomyParametersRequest,
) -> Parsed<(IdempotencyKey, Update<EconomyParameters>)> {
    let mut v = Violations::default();
    let key = parse_key(&mut v, &req.idempotency_key);
    let expected = v.check("expected_version", parse_version(req.expected_version));
    let share = optional(
        &mut v,
        "creator_share_bps",
        req.creator_share_bps,
        Bps::parse,
    );
    let per_unit = req
        .payout_per_unit
        .as_ref()
        .map(|m| money(&mut v, "payout_per_unit", Some(m)));
    let per = optional(
        &mut v,
        "diamonds_per_payout_unit",
        req.diamonds_per_payout_unit,
        Diamonds::parse,
    );
    let minimum = optional(
        &mut v,
        "payout_minimum_diamonds",
        req.payout_minimum_diamonds,
        Diamonds::parse,
    );
    let maturity = optional(
        &mut v,
        "diamond_maturity_hours",
        req.diamond_maturity_hours,
        |h| RuleHours::parse(i64::from(h)),
    );
    let daily_cap = optional(
        &mut v,
        "payout_daily_cap_diamonds",
        req.payout_daily_cap_diamonds,
        DiamondLimit::parse,
    );
    let review_threshold = optional(
        &mut v,
        "payout_review_threshold_diamonds",
        req.payout_review_threshold_diamonds,
        DiamondLimit::parse,
    );
    let cooling_off = optional(
        &mut v,
        "payout_account_cooling_off_hours",
        req.payout_account_cooling_off_hours,
        |h| RuleHours::parse(i64::from(h)),
    );
    v.finish(|| {
        let change = EconomyChange {
            creator_share: kept(share)?,
            payout_per_unit: kept(per_unit)?,
            diamonds_per_payout_unit: kept(per)?,
            payout_minimum: kept(minimum)?,
            diamond_maturity: kept(maturity)?,
            payout_daily_cap: kept(daily_cap)?,
            payout_review_threshold: kept(review_threshold)?,
            payout_account_cooling_off: kept(cooling_off)?,
        };
        Some((key?, update(TheEconomy, expected?, change)))
    })
}

fn update<V: crate::domain::Versioned>(
    id: V::Id,
    expected_version: Option<i64>,
    change: V::Change,
) -> Update<V> {
    Update {
        id,
        expected_version,
        change,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Timestamp;

    fn fields(violations: Vec<ovation_types::Violation>) -> Vec<String> {
        violations.into_iter().map(|v| v.field).collect()
    }

    fn at(seconds: i64) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos: 0 })
    }

    fn usd(amount_minor: i64) -> ovation_proto::common::Money {
        ovation_proto::common::Money {
            currency_code: "USD".into(),
            amount_minor,
        }
    }

    #[test]
    fn a_gift_to_create_names_every_bad_field_in_request_order() {
        let req = pb::CreateGiftRequest {
            idempotency_key: String::new(),
            gift_id: "no spaces".into(),
            name: "Star".into(),
            coin_price: 0,
            active_from: at(20),
            active_until: at(10),
            ..Default::default()
        };
        assert_eq!(
            fields(parse_create_gift(&req).unwrap_err()),
            ["idempotency_key", "gift_id", "coin_price", "active_until"]
        );
    }

    #[test]
    fn a_gift_to_create_parses_whole() {
        let req = pb::CreateGiftRequest {
            idempotency_key: "k1".into(),
            gift_id: "star".into(),
            name: "Star".into(),
            coin_price: 7,
            enabled: true,
            active_until: at(10),
            ..Default::default()
        };
        let (key, new) = parse_create_gift(&req).unwrap();
        assert_eq!(key.as_str(), "k1");
        assert_eq!(new.id.as_str(), "star");
        assert_eq!(new.coin_price.get(), 7);
        assert!(new.enabled);
        assert_eq!(new.window.from, None);
        assert_eq!(new.window.until, Some(UnixMillis(10_000)));
    }

    #[test]
    fn a_gift_update_keeps_what_it_leaves_unset_and_zero_expects_any_version() {
        let req = pb::UpdateGiftRequest {
            idempotency_key: "k1".into(),
            gift_id: "star".into(),
            coin_price: Some(9),
            clear_active_until: true,
            ..Default::default()
        };
        let (_, update) = parse_update_gift(&req).unwrap();
        assert_eq!(update.id.as_str(), "star");
        assert_eq!(update.expected_version, None);
        assert_eq!(update.change.name, None);
        assert_eq!(update.change.coin_price.map(GiftPrice::get), Some(9));
        assert_eq!(update.change.active_from, Edit::Keep);
        assert_eq!(update.change.active_until, Edit::Clear);
    }

    #[test]
    fn a_gift_update_may_not_set_and_clear_one_window_end() {
        let req = pb::UpdateGiftRequest {
            idempotency_key: "k1".into(),
            gift_id: "star".into(),
            expected_version: -1,
            name: Some(String::new()),
            active_from: at(5),
            clear_active_from: true,
            ..Default::default()
        };
        let violations = parse_update_gift(&req).unwrap_err();
        assert_eq!(
            fields(violations.clone()),
            ["expected_version", "name", "active_from"]
        );
        assert_eq!(
            violations[2].description,
            "cannot both set active_from and clear it"
        );
    }

    #[test]
    fn a_package_update_keeps_its_prices_unless_it_names_new_ones() {
        let mut req = pb::UpdateCoinPackageRequest {
            idempotency_key: "k1".into(),
            package_id: "coins_100".into(),
            expected_version: 3,
            ..Default::default()
        };
        let (_, update) = parse_update_coin_package(&req).unwrap();
        assert_eq!(update.expected_version, Some(3));
        assert!(update.change.prices.is_none());
        req.prices = vec![usd(139)];
        let (_, update) = parse_update_coin_package(&req).unwrap();
        assert_eq!(update.change.prices.map(|p| p.as_slice().len()), Some(1));
        req.prices = vec![usd(139), usd(140)];
        assert_eq!(
            fields(parse_update_coin_package(&req).unwrap_err()),
            ["prices"]
        );
    }

    #[test]
    fn a_promotion_update_replaces_its_packages_only_when_told() {
        let mut req = pb::UpdatePromotionRequest {
            idempotency_key: "k1".into(),
            promotion_id: "launch".into(),
            package_ids: vec!["coins_100".into()],
            ..Default::default()
        };
        let (_, update) = parse_update_promotion(&req).unwrap();
        assert_eq!(update.change.package_ids, None);
        req.replace_package_ids = true;
        req.package_ids.clear();
        let (_, update) = parse_update_promotion(&req).unwrap();
        assert_eq!(update.change.package_ids, Some(vec![]));
        req.package_ids = vec!["a".into(), "a".into()];
        req.bonus_bps = Some(0);
        assert_eq!(
            fields(parse_update_promotion(&req).unwrap_err()),
            ["bonus_bps", "package_ids"]
        );
    }

    #[test]
    fn a_promotion_to_create_must_end_after_it_starts() {
        let req = pb::CreatePromotionRequest {
            idempotency_key: "k1".into(),
            promotion_id: "launch".into(),
            name: "Launch".into(),
            bonus_bps: 1_000,
            starts_at: at(10),
            ends_at: at(10),
            ..Default::default()
        };
        let violations = parse_create_promotion(&req).unwrap_err();
        assert_eq!(fields(violations.clone()), ["ends_at"]);
        assert_eq!(violations[0].description, "must be after starts_at");
    }

    #[test]
    fn promotions_are_listed_for_one_package_or_all() {
        let mut req = pb::ListPromotionsRequest::default();
        let list = parse_list_promotions(&req).unwrap();
        assert_eq!(list.package, None);
        assert_eq!(list.active_at, None);
        req.package_id = "coins_100".into();
        req.active_at = at(3);
        let list = parse_list_promotions(&req).unwrap();
        assert_eq!(
            list.package.map(ResourceId::into_string),
            Some("coins_100".into())
        );
        assert_eq!(list.active_at, Some(UnixMillis(3_000)));
        req.package_id = "bad id".into();
        req.page_size = -1;
        assert_eq!(
            fields(parse_list_promotions(&req).unwrap_err()),
            ["page_size", "package_id"]
        );
    }

    #[test]
    fn only_active_gifts_are_listed_as_sendable_now() {
        let mut req = pb::ListGiftsRequest::default();
        assert_eq!(
            parse_list_gifts(&req, UnixMillis(5)).unwrap().sendable_at,
            None
        );
        req.active_only = true;
        assert_eq!(
            parse_list_gifts(&req, UnixMillis(5)).unwrap().sendable_at,
            Some(UnixMillis(5))
        );
    }

    #[test]
    fn version_lists_start_after_their_token() {
        let req = pb::ListGiftVersionsRequest {
            gift_id: "rose".into(),
            page_token: "nonsense".into(),
            ..Default::default()
        };
        assert_eq!(
            fields(parse_list_gift_versions(&req).unwrap_err()),
            ["page_token"]
        );
        let (id, page) = parse_list_gift_versions(&pb::ListGiftVersionsRequest {
            gift_id: "rose".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(id.as_str(), "rose");
        assert_eq!(page.after, 0);
    }

    #[test]
    fn versions_are_zero_for_latest_and_never_negative() {
        let get =
            |version| parse_get_economy_parameters(&pb::GetEconomyParametersRequest { version });
        assert_eq!(get(0), Ok(None));
        assert_eq!(get(4), Ok(Some(4)));
        assert_eq!(fields(get(-4).unwrap_err()), ["version"]);
        let lookup = parse_get_gift(&pb::GetGiftRequest {
            gift_id: "rose".into(),
            version: 2,
        })
        .unwrap();
        assert_eq!(lookup.version, Some(2));
    }

    #[test]
    fn an_economy_update_names_each_bad_number() {
        let req = pb::UpdateEconomyParametersRequest {
            idempotency_key: "k1".into(),
            creator_share_bps: Some(10_001),
            diamonds_per_payout_unit: Some(0),
            payout_minimum_diamonds: Some(1_000),
            diamond_maturity_hours: Some(8_761),
            ..Default::default()
        };
        assert_eq!(
            fields(parse_update_economy_parameters(&req).unwrap_err()),
            [
                "creator_share_bps",
                "diamonds_per_payout_unit",
                "diamond_maturity_hours"
            ]
        );
        let req = pb::UpdateEconomyParametersRequest {
            idempotency_key: "k1".into(),
            diamond_maturity_hours: Some(-1),
            ..Default::default()
        };
        assert_eq!(
            fields(parse_update_economy_parameters(&req).unwrap_err()),
            ["diamond_maturity_hours"]
        );
        let req = pb::UpdateEconomyParametersRequest {
            idempotency_key: "k1".into(),
            payout_daily_cap_diamonds: Some(-1),
            payout_review_threshold_diamonds: Some(1_000_000_000_001),
            payout_account_cooling_off_hours: Some(8_761),
            ..Default::default()
        };
        assert_eq!(
            fields(parse_update_economy_parameters(&req).unwrap_err()),
            [
                "payout_daily_cap_diamonds",
                "payout_review_threshold_diamonds",
                "payout_account_cooling_off_hours"
            ]
        );
        let req = pb::UpdateEconomyParametersRequest {
            idempotency_key: "k1".into(),
            payout_per_unit: Some(usd(500)),
            ..Default::default()
        };
        let (_, update) = parse_update_economy_parameters(&req).unwrap();
        assert_eq!(update.change.creator_share, None);
        assert_eq!(update.change.diamond_maturity, None);
        assert_eq!(update.change.payout_daily_cap, None);
        assert_eq!(update.change.payout_review_threshold, None);
        assert_eq!(update.change.payout_account_cooling_off, None);
        assert_eq!(
            update.change.payout_per_unit.map(|m| m.amount_minor()),
            Some(500)
        );
    }
}
