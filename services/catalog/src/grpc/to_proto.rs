//! The way out: domain values become proto messages, and a [`CatalogError`] becomes the
//! [`ApiError`] (code, reason, message) the contract promises.

use ovation_proto::catalog as pb;
use ovation_proto::reasons;
use ovation_server::ApiError;
use ovation_server::edge::{to_money, to_timestamp};
use tonic::Status;

use crate::domain::{CatalogRule, CoinPackage, EconomyParameters, Gift, Promotion};
use crate::operations::CatalogError;

impl From<&Gift> for pb::Gift {
    fn from(g: &Gift) -> pb::Gift {
        pb::Gift {
            gift_id: g.id.to_string(),
            version: g.version,
            name: g.name.as_str().to_owned(),
            coin_price: g.coin_price.get(),
            asset_url: g.asset_url.as_str().to_owned(),
            enabled: g.enabled,
            active_from: g.window.from.map(to_timestamp),
            active_until: g.window.until.map(to_timestamp),
            create_time: Some(to_timestamp(g.created_at)),
        }
    }
}

impl From<&CoinPackage> for pb::CoinPackage {
    fn from(p: &CoinPackage) -> pb::CoinPackage {
        pb::CoinPackage {
            package_id: p.id.to_string(),
            version: p.version,
            name: p.name.as_str().to_owned(),
            coins: p.coins.get(),
            prices: p.prices.as_slice().iter().map(to_money).collect(),
            enabled: p.enabled,
            create_time: Some(to_timestamp(p.created_at)),
        }
    }
}

impl From<&Promotion> for pb::Promotion {
    fn from(p: &Promotion) -> pb::Promotion {
        pb::Promotion {
            promotion_id: p.id.to_string(),
            version: p.version,
            name: p.name.as_str().to_owned(),
            bonus_bps: p.bonus_bps,
            package_ids: p.package_ids.iter().map(ToString::to_string).collect(),
            starts_at: Some(to_timestamp(p.starts_at)),
            ends_at: Some(to_timestamp(p.ends_at)),
            per_user_cap: p.per_user_cap,
            enabled: p.enabled,
            create_time: Some(to_timestamp(p.created_at)),
        }
    }
}

impl From<&EconomyParameters> for pb::EconomyParameters {
    fn from(e: &EconomyParameters) -> pb::EconomyParameters {
        pb::EconomyParameters {
            version: e.version,
            creator_share_bps: e.creator_share.get(),
            payout_per_unit: Some(to_money(&e.payout_per_unit)),
            diamonds_per_payout_unit: e.diamonds_per_payout_unit.get(),
            payout_minimum_diamonds: e.payout_minimum.get(),
            // 0..=8760 (RuleHours): always fits.
            diamond_maturity_hours: i32::try_from(e.diamond_maturity.get()).unwrap_or(i32::MAX),
            payout_daily_cap_diamonds: e.payout_daily_cap.get(),
            payout_review_threshold_diamonds: e.payout_review_threshold.get(),
            // 0..=8760 (RuleHours): always fits.
            payout_account_cooling_off_hours: i32::try_from(e.payout_account_cooling_off.get())
                .unwrap_or(i32::MAX),
            create_time: Some(to_timestamp(e.created_at)),
        }
    }
}

/// The one place a catalog error becomes an API error: its code, reason and message.
impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> ApiError {
        let message = e.to_string();
        match e {
            CatalogError::Store(e) => e.into(),
            CatalogError::Rule(rule) => rule_error(rule),
            CatalogError::NotFound { kind, id } => ApiError::not_found(kind, id),
            CatalogError::AlreadyExists { .. } => ApiError::AlreadyExists {
                reason: reasons::catalog::ALREADY_EXISTS,
                message,
            },
            CatalogError::VersionMismatch { .. } => ApiError::Aborted {
                reason: reasons::catalog::VERSION_MISMATCH,
                message,
            },
            CatalogError::Moved { .. } | CatalogError::Taken { .. } => ApiError::Aborted {
                reason: reasons::catalog::CONCURRENT_UPDATE,
                message,
            },
            CatalogError::EconomyMissing => {
                ApiError::failed_precondition(reasons::catalog::ECONOMY_NOT_CONFIGURED, message)
            }
        }
    }
}

/// So a handler's `?` takes a catalog error straight to the response.
impl From<CatalogError> for Status {
    fn from(e: CatalogError) -> Status {
        ApiError::from(e).into()
    }
}

fn rule_error(rule: CatalogRule) -> ApiError {
    match rule {
        CatalogRule::WindowOrder { end, message } => ApiError::invalid(end, message),
        CatalogRule::GiftNotSendable(m) => {
            ApiError::failed_precondition(reasons::catalog::GIFT_NOT_SENDABLE, m)
        }
        // Only a quote multiplies: its quantity made the total too large.
        CatalogRule::Overflow => ApiError::invalid("quantity", "total is out of range"),
        CatalogRule::Incomplete(missing) => ApiError::InvalidArgument(missing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Item;
    use ovation_types::Violation;
    use tonic::Code;

    fn answer(e: CatalogError) -> (Code, String) {
        let api = ApiError::from(e);
        let status = Status::from(api);
        (status.code(), status.message().to_owned())
    }

    #[test]
    fn each_catalog_error_keeps_its_code_reason_and_message() {
        let moved = ApiError::from(CatalogError::Moved {
            item: Item::CoinPackage,
            id: "coins_100".into(),
            latest: 3,
        });
        assert!(matches!(
            moved,
            ApiError::Aborted { reason, ref message }
                if reason == reasons::catalog::CONCURRENT_UPDATE
                    && message == "coin package coins_100 was updated concurrently \
                                   (now version 3); re-read and retry"
        ));
        let taken = ApiError::from(CatalogError::Taken {
            item: Item::EconomyParameters,
        });
        assert!(matches!(
            taken,
            ApiError::Aborted { reason, .. } if reason == reasons::catalog::CONCURRENT_UPDATE
        ));
        let mismatch = ApiError::from(CatalogError::VersionMismatch {
            expected: 2,
            latest: 1,
        });
        assert!(matches!(
            mismatch,
            ApiError::Aborted { reason, .. } if reason == reasons::catalog::VERSION_MISMATCH
        ));
        let exists = ApiError::from(CatalogError::AlreadyExists {
            item: Item::Gift,
            id: "rose".into(),
        });
        assert!(matches!(
            exists,
            ApiError::AlreadyExists { reason, ref message }
                if reason == reasons::catalog::ALREADY_EXISTS && message == "gift rose already exists"
        ));
        assert!(matches!(
            ApiError::from(CatalogError::EconomyMissing),
            ApiError::FailedPrecondition { reason, .. }
                if reason == reasons::catalog::ECONOMY_NOT_CONFIGURED
        ));
        assert_eq!(
            answer(CatalogError::NotFound {
                kind: "gift",
                id: "rose@3".into()
            })
            .0,
            Code::NotFound
        );
    }

    #[test]
    fn a_broken_rule_names_the_field_to_fix() {
        let window = CatalogRule::WindowOrder {
            end: "ends_at",
            message: "ends_at must be after starts_at".into(),
        };
        assert!(matches!(
            ApiError::from(CatalogError::Rule(window)),
            ApiError::InvalidArgument(v) if v == [Violation::new("ends_at", "ends_at must be after starts_at")]
        ));
        assert!(matches!(
            ApiError::from(CatalogError::Rule(CatalogRule::Overflow)),
            ApiError::InvalidArgument(v) if v[0].field == "quantity"
        ));
        let (code, _) = answer(CatalogError::Rule(CatalogRule::GiftNotSendable(
            "gift rose is disabled".into(),
        )));
        assert_eq!(code, Code::FailedPrecondition);
    }
}
