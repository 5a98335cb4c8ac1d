//! The gRPC layer, kept thin: check who may call (first line of every RPC), parse the
//! request into domain values (every bound checked here, every bad field reported), call
//! the domain and the store, map the outcome to a response or an [`ApiError`]. Proto
//! types stop here.
//!
//! Authorization: reads (Get*, List*, QuoteGift) are open to every authenticated caller
//! (viewers, creators, the gateway, services: the catalog is what the product shows);
//! writes (Create*, Update*) need the admin role.

use futures::FutureExt;
use ovation_auth::Role;
use ovation_proto::catalog as pb;
use ovation_proto::catalog::catalog_service_server::CatalogService;
use ovation_proto::reasons;
use ovation_server::edge::{money, optional_timestamp, timestamp, to_money, to_timestamp};
use ovation_server::{ApiError, access};
use ovation_store::db::Conn;
use ovation_store::sqlx::Any;
use ovation_store::sqlx::pool::PoolConnection;
use ovation_store::{Db, Fingerprint, KeyScope};
use ovation_types::{
    Bps, Coins, Diamonds, IdempotencyKey, Name, PageSize, PageToken, Quantity, ResourceId, Text,
    UnixMillis, Violations,
};
use tonic::{Request, Response, Status};

use crate::domain::{
    CatalogRule, CoinPackage, CoinPackageChange, EconomyChange, EconomyParameters, Edit, Gift,
    GiftChange, GiftPrice, NewCoinPackage, NewGift, NewPromotion, Prices, Promotion,
    PromotionChange, TheEconomy, Update, Window, parse_bonus_bps, parse_package_ids,
    parse_per_user_cap,
};
use crate::operations::{self, CatalogError};
use crate::store;

type Reply<T> = Result<Response<T>, Status>;

/// The catalog's gRPC service.
#[derive(Clone, Debug)]
pub struct Catalog {
    db: Db,
}

impl Catalog {
    pub fn new(db: Db) -> Self {
        Catalog { db }
    }

    async fn read(&self) -> Result<PoolConnection<Any>, ApiError> {
        Ok(self.db.conn().await?)
    }
}

/// A version in a Get request: 0 means latest.
fn parse_version(raw: i64) -> Result<Option<i64>, String> {
    match raw {
        0 => Ok(None),
        v if v < 0 => Err("must not be negative".into()),
        v => Ok(Some(v)),
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

#[tonic::async_trait]
impl CatalogService for Catalog {
    async fn get_gift(&self, request: Request<pb::GetGiftRequest>) -> Reply<pb::GetGiftResponse> {
        access::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let id = v.check("gift_id", ResourceId::parse(&req.gift_id));
        let version = v.check("version", parse_version(req.version));
        let (id, version) = v.finish(|| Some((id?, version?))).map_err(ApiError::from)?;
        let mut conn = self.read().await?;
        let gift = operations::get::<Gift>(&mut conn, &id, version)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetGiftResponse {
            gift: Some(gift_to_proto(&gift)),
        }))
    }

    async fn list_gifts(
        &self,
        request: Request<pb::ListGiftsRequest>,
    ) -> Reply<pb::ListGiftsResponse> {
        access::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let size = v.check("page_size", PageSize::parse(req.page_size));
        let token = v.check("page_token", PageToken::parse(&req.page_token));
        let (size, token) = v.finish(|| Some((size?, token?))).map_err(ApiError::from)?;
        let sendable_at = req.active_only.then(UnixMillis::now);
        let mut conn = self.read().await?;
        let rows = store::list_gifts(&mut conn, token.cursor(), sendable_at, size.fetch_limit())
            .await
            .map_err(ApiError::from)?;
        let mut gifts = rows;
        let next_page_token = size.cut(&mut gifts, |g| g.id.to_string());
        Ok(Response::new(pb::ListGiftsResponse {
            gifts: gifts.iter().map(gift_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn list_gift_versions(
        &self,
        request: Request<pb::ListGiftVersionsRequest>,
    ) -> Reply<pb::ListGiftVersionsResponse> {
        access::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let id = v.check("gift_id", ResourceId::parse(&req.gift_id));
        let size = v.check("page_size", PageSize::parse(req.page_size));
        let after = v.check(
            "page_token",
            PageToken::parse(&req.page_token).and_then(|t| t.cursor_i64()),
        );
        let (id, size, after) = v
            .finish(|| Some((id?, size?, after?)))
            .map_err(ApiError::from)?;
        let mut conn = self.read().await?;
        let rows =
            operations::gift_versions(&mut conn, &id, after.unwrap_or(0), size.fetch_limit())
                .await
                .map_err(ApiError::from)?;
        let mut gifts = rows;
        let next_page_token = size.cut(&mut gifts, |g| g.version.to_string());
        Ok(Response::new(pb::ListGiftVersionsResponse {
            gifts: gifts.iter().map(gift_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn create_gift(
        &self,
        request: Request<pb::CreateGiftRequest>,
    ) -> Reply<pb::CreateGiftResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let fingerprint = Fingerprint::of("CreateGift", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
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
        let (key, new) = v
            .finish(|| {
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
            .map_err(ApiError::from)?;
        let (response, _) = self
            .db
            .idempotent(
                &KeyScope::new(&caller.principal(), "CreateGift"),
                &key,
                &fingerprint,
                |conn: &mut Conn| {
                    async move {
                        let gift =
                            operations::create(conn, Gift::create(new, UnixMillis::now())).await?;
                        Ok::<_, ApiError>(pb::CreateGiftResponse {
                            gift: Some(gift_to_proto(&gift)),
                        })
                    }
                    .boxed()
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn update_gift(
        &self,
        request: Request<pb::UpdateGiftRequest>,
    ) -> Reply<pb::UpdateGiftResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let fingerprint = Fingerprint::of("UpdateGift", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
        let id = v.check("gift_id", ResourceId::parse(&req.gift_id));
        let expected = v.check("expected_version", parse_version(req.expected_version));
        let name = req.name.as_deref().map(|n| v.check("name", Name::parse(n)));
        let price = req
            .coin_price
            .map(|p| v.check("coin_price", GiftPrice::parse(p)));
        let url = req
            .asset_url
            .as_deref()
            .map(|u| v.check("asset_url", Text::parse(u)));
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
        let (key, update) = v
            .finish(|| {
                Some((
                    key?,
                    Update::<Gift> {
                        id: id?,
                        expected_version: expected?,
                        change: GiftChange {
                            name: name.map(|n| n.ok_or(())).transpose().ok()?,
                            coin_price: price.map(|p| p.ok_or(())).transpose().ok()?,
                            asset_url: url.map(|u| u.ok_or(())).transpose().ok()?,
                            enabled: req.enabled,
                            active_from: from?,
                            active_until: until?,
                        },
                    },
                ))
            })
            .map_err(ApiError::from)?;
        let (response, _) = self
            .db
            .idempotent(
                &KeyScope::new(&caller.principal(), "UpdateGift"),
                &key,
                &fingerprint,
                |conn: &mut Conn| {
                    async move {
                        let next = operations::update(conn, update, UnixMillis::now()).await?;
                        Ok::<_, ApiError>(pb::UpdateGiftResponse {
                            gift: Some(gift_to_proto(&next)),
                        })
                    }
                    .boxed()
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn quote_gift(
        &self,
        request: Request<pb::QuoteGiftRequest>,
    ) -> Reply<pb::QuoteGiftResponse> {
        access::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let id = v.check("gift_id", ResourceId::parse(&req.gift_id));
        let quantity = v.check("quantity", Quantity::parse(req.quantity));
        let (id, quantity) = v
            .finish(|| Some((id?, quantity?)))
            .map_err(ApiError::from)?;
        let mut conn = self.read().await?;
        let quote = operations::quote(&mut conn, &id, quantity, UnixMillis::now())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::QuoteGiftResponse {
            gift: Some(gift_to_proto(&quote.gift)),
            total_coins: quote.total_coins,
            creator_share_bps: quote.creator_share.get(),
            economy_version: quote.economy_version,
            creator_diamonds: quote.creator_diamonds,
        }))
    }

    async fn get_coin_package(
        &self,
        request: Request<pb::GetCoinPackageRequest>,
    ) -> Reply<pb::GetCoinPackageResponse> {
        access::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let id = v.check("package_id", ResourceId::parse(&req.package_id));
        let version = v.check("version", parse_version(req.version));
        let (id, version) = v.finish(|| Some((id?, version?))).map_err(ApiError::from)?;
        let mut conn = self.read().await?;
        let package = operations::get::<CoinPackage>(&mut conn, &id, version)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetCoinPackageResponse {
            coin_package: Some(package_to_proto(&package)),
        }))
    }

    async fn list_coin_packages(
        &self,
        request: Request<pb::ListCoinPackagesRequest>,
    ) -> Reply<pb::ListCoinPackagesResponse> {
        access::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let size = v.check("page_size", PageSize::parse(req.page_size));
        let token = v.check("page_token", PageToken::parse(&req.page_token));
        let (size, token) = v.finish(|| Some((size?, token?))).map_err(ApiError::from)?;
        let mut conn = self.read().await?;
        let rows = store::list_packages(&mut conn, token.cursor(), size.fetch_limit())
            .await
            .map_err(ApiError::from)?;
        let mut packages = rows;
        let next_page_token = size.cut(&mut packages, |p| p.id.to_string());
        Ok(Response::new(pb::ListCoinPackagesResponse {
            coin_packages: packages.iter().map(package_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn create_coin_package(
        &self,
        request: Request<pb::CreateCoinPackageRequest>,
    ) -> Reply<pb::CreateCoinPackageResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let fingerprint = Fingerprint::of("CreateCoinPackage", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
        let id = v.check("package_id", ResourceId::parse(&req.package_id));
        let name = v.check("name", Name::parse(&req.name));
        let coins = v.check("coins", Coins::parse(req.coins));
        let prices = parse_prices(&mut v, &req.prices);
        let (key, new) = v
            .finish(|| {
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
            .map_err(ApiError::from)?;
        let (response, _) = self
            .db
            .idempotent(
                &KeyScope::new(&caller.principal(), "CreateCoinPackage"),
                &key,
                &fingerprint,
                |conn: &mut Conn| {
                    async move {
                        let package =
                            operations::create(conn, CoinPackage::create(new, UnixMillis::now()))
                                .await?;
                        Ok::<_, ApiError>(pb::CreateCoinPackageResponse {
                            coin_package: Some(package_to_proto(&package)),
                        })
                    }
                    .boxed()
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn update_coin_package(
        &self,
        request: Request<pb::UpdateCoinPackageRequest>,
    ) -> Reply<pb::UpdateCoinPackageResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let fingerprint = Fingerprint::of("UpdateCoinPackage", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
        let id = v.check("package_id", ResourceId::parse(&req.package_id));
        let expected = v.check("expected_version", parse_version(req.expected_version));
        let name = req.name.as_deref().map(|n| v.check("name", Name::parse(n)));
        let coins = req.coins.map(|c| v.check("coins", Coins::parse(c)));
        let prices = (!req.prices.is_empty()).then(|| parse_prices(&mut v, &req.prices));
        let (key, update) = v
            .finish(|| {
                Some((
                    key?,
                    Update::<CoinPackage> {
                        id: id?,
                        expected_version: expected?,
                        change: CoinPackageChange {
                            name: name.map(|n| n.ok_or(())).transpose().ok()?,
                            coins: coins.map(|c| c.ok_or(())).transpose().ok()?,
                            prices: prices.map(|p| p.ok_or(())).transpose().ok()?,
                            enabled: req.enabled,
                        },
                    },
                ))
            })
            .map_err(ApiError::from)?;
        let (response, _) = self
            .db
            .idempotent(
                &KeyScope::new(&caller.principal(), "UpdateCoinPackage"),
                &key,
                &fingerprint,
                |conn: &mut Conn| {
                    async move {
                        let next = operations::update(conn, update, UnixMillis::now()).await?;
                        Ok::<_, ApiError>(pb::UpdateCoinPackageResponse {
                            coin_package: Some(package_to_proto(&next)),
                        })
                    }
                    .boxed()
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn get_promotion(
        &self,
        request: Request<pb::GetPromotionRequest>,
    ) -> Reply<pb::GetPromotionResponse> {
        access::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let id = v.check("promotion_id", ResourceId::parse(&req.promotion_id));
        let version = v.check("version", parse_version(req.version));
        let (id, version) = v.finish(|| Some((id?, version?))).map_err(ApiError::from)?;
        let mut conn = self.read().await?;
        let promotion = operations::get::<Promotion>(&mut conn, &id, version)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetPromotionResponse {
            promotion: Some(promotion_to_proto(&promotion)),
        }))
    }

    async fn list_promotions(
        &self,
        request: Request<pb::ListPromotionsRequest>,
    ) -> Reply<pb::ListPromotionsResponse> {
        access::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let size = v.check("page_size", PageSize::parse(req.page_size));
        let token = v.check("page_token", PageToken::parse(&req.page_token));
        let active_at = v.check("active_at", optional_timestamp(req.active_at.as_ref()));
        let package = if req.package_id.is_empty() {
            Some(None)
        } else {
            v.check("package_id", ResourceId::parse(&req.package_id))
                .map(Some)
        };
        let (size, token, active_at, package) = v
            .finish(|| Some((size?, token?, active_at?, package?)))
            .map_err(ApiError::from)?;
        let mut conn = self.read().await?;
        let rows = store::list_promotions(
            &mut conn,
            token.cursor(),
            active_at,
            package.as_ref(),
            size.fetch_limit(),
        )
        .await
        .map_err(ApiError::from)?;
        let mut promotions = rows;
        let next_page_token = size.cut(&mut promotions, |p| p.id.to_string());
        Ok(Response::new(pb::ListPromotionsResponse {
            promotions: promotions.iter().map(promotion_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn create_promotion(
        &self,
        request: Request<pb::CreatePromotionRequest>,
    ) -> Reply<pb::CreatePromotionResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let fingerprint = Fingerprint::of("CreatePromotion", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
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
        let (key, new) = v
            .finish(|| {
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
            .map_err(ApiError::from)?;
        let (response, _) = self
            .db
            .idempotent(
                &KeyScope::new(&caller.principal(), "CreatePromotion"),
                &key,
                &fingerprint,
                |conn: &mut Conn| {
                    async move {
                        let promotion =
                            operations::create_promotion(conn, new, UnixMillis::now()).await?;
                        Ok::<_, ApiError>(pb::CreatePromotionResponse {
                            promotion: Some(promotion_to_proto(&promotion)),
                        })
                    }
                    .boxed()
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn update_promotion(
        &self,
        request: Request<pb::UpdatePromotionRequest>,
    ) -> Reply<pb::UpdatePromotionResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let fingerprint = Fingerprint::of("UpdatePromotion", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
        let id = v.check("promotion_id", ResourceId::parse(&req.promotion_id));
        let expected = v.check("expected_version", parse_version(req.expected_version));
        let name = req.name.as_deref().map(|n| v.check("name", Name::parse(n)));
        let bonus = req
            .bonus_bps
            .map(|b| v.check("bonus_bps", parse_bonus_bps(b)));
        let packages = req
            .replace_package_ids
            .then(|| v.check("package_ids", parse_package_ids(&req.package_ids)));
        let starts = req
            .starts_at
            .as_ref()
            .map(|t| v.check("starts_at", timestamp(Some(t))));
        let ends = req
            .ends_at
            .as_ref()
            .map(|t| v.check("ends_at", timestamp(Some(t))));
        let cap = req
            .per_user_cap
            .map(|c| v.check("per_user_cap", parse_per_user_cap(c)));
        let (key, update) = v
            .finish(|| {
                Some((
                    key?,
                    Update::<Promotion> {
                        id: id?,
                        expected_version: expected?,
                        change: PromotionChange {
                            name: name.map(|n| n.ok_or(())).transpose().ok()?,
                            bonus_bps: bonus.map(|b| b.ok_or(())).transpose().ok()?,
                            package_ids: packages.map(|p| p.ok_or(())).transpose().ok()?,
                            starts_at: starts.map(|s| s.ok_or(())).transpose().ok()?,
                            ends_at: ends.map(|e| e.ok_or(())).transpose().ok()?,
                            per_user_cap: cap.map(|c| c.ok_or(())).transpose().ok()?,
                            enabled: req.enabled,
                        },
                    },
                ))
            })
            .map_err(ApiError::from)?;
        let (response, _) = self
            .db
            .idempotent(
                &KeyScope::new(&caller.principal(), "UpdatePromotion"),
                &key,
                &fingerprint,
                |conn: &mut Conn| {
                    async move {
                        let next =
                            operations::update_promotion(conn, update, UnixMillis::now()).await?;
                        Ok::<_, ApiError>(pb::UpdatePromotionResponse {
                            promotion: Some(promotion_to_proto(&next)),
                        })
                    }
                    .boxed()
                },
            )
            .await?;
        Ok(Response::new(response))
    }

    async fn get_economy_parameters(
        &self,
        request: Request<pb::GetEconomyParametersRequest>,
    ) -> Reply<pb::GetEconomyParametersResponse> {
        access::caller(&request)?;
        let req = request.into_inner();
        let version = parse_version(req.version).map_err(|e| ApiError::invalid("version", e))?;
        let mut conn = self.read().await?;
        let economy = operations::get::<EconomyParameters>(&mut conn, &TheEconomy, version)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetEconomyParametersResponse {
            economy_parameters: Some(economy_to_proto(&economy)),
        }))
    }

    async fn list_economy_parameters_versions(
        &self,
        request: Request<pb::ListEconomyParametersVersionsRequest>,
    ) -> Reply<pb::ListEconomyParametersVersionsResponse> {
        access::caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let size = v.check("page_size", PageSize::parse(req.page_size));
        let after = v.check(
            "page_token",
            PageToken::parse(&req.page_token).and_then(|t| t.cursor_i64()),
        );
        let (size, after) = v.finish(|| Some((size?, after?))).map_err(ApiError::from)?;
        let mut conn = self.read().await?;
        let rows = store::list_economy_versions(&mut conn, after.unwrap_or(0), size.fetch_limit())
            .await
            .map_err(ApiError::from)?;
        let mut versions = rows;
        let next_page_token = size.cut(&mut versions, |e| e.version.to_string());
        Ok(Response::new(pb::ListEconomyParametersVersionsResponse {
            economy_parameters: versions.iter().map(economy_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn update_economy_parameters(
        &self,
        request: Request<pb::UpdateEconomyParametersRequest>,
    ) -> Reply<pb::UpdateEconomyParametersResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let fingerprint = Fingerprint::of("UpdateEconomyParameters", &req);
        let mut v = Violations::default();
        let key = v.check(
            "idempotency_key",
            IdempotencyKey::parse(&req.idempotency_key),
        );
        let expected = v.check("expected_version", parse_version(req.expected_version));
        let share = req
            .creator_share_bps
            .map(|s| v.check("creator_share_bps", Bps::parse(s)));
        let per_unit = req
            .payout_per_unit
            .as_ref()
            .map(|m| money(&mut v, "payout_per_unit", Some(m)));
        let per = req
            .diamonds_per_payout_unit
            .map(|d| v.check("diamonds_per_payout_unit", Diamonds::parse(d)));
        let minimum = req
            .payout_minimum_diamonds
            .map(|d| v.check("payout_minimum_diamonds", Diamonds::parse(d)));
        let (key, update) = v
            .finish(|| {
                Some((
                    key?,
                    Update::<EconomyParameters> {
                        id: TheEconomy,
                        expected_version: expected?,
                        change: EconomyChange {
                            creator_share: share.map(|s| s.ok_or(())).transpose().ok()?,
                            payout_per_unit: per_unit.map(|m| m.ok_or(())).transpose().ok()?,
                            diamonds_per_payout_unit: per.map(|d| d.ok_or(())).transpose().ok()?,
                            payout_minimum: minimum.map(|d| d.ok_or(())).transpose().ok()?,
                        },
                    },
                ))
            })
            .map_err(ApiError::from)?;
        let (response, _) = self
            .db
            .idempotent(
                &KeyScope::new(&caller.principal(), "UpdateEconomyParameters"),
                &key,
                &fingerprint,
                |conn: &mut Conn| {
                    async move {
                        let next = operations::update(conn, update, UnixMillis::now()).await?;
                        Ok::<_, ApiError>(pb::UpdateEconomyParametersResponse {
                            economy_parameters: Some(economy_to_proto(&next)),
                        })
                    }
                    .boxed()
                },
            )
            .await?;
        Ok(Response::new(response))
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

pub(crate) fn gift_to_proto(g: &Gift) -> pb::Gift {
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

fn package_to_proto(p: &CoinPackage) -> pb::CoinPackage {
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

fn promotion_to_proto(p: &Promotion) -> pb::Promotion {
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

fn economy_to_proto(e: &EconomyParameters) -> pb::EconomyParameters {
    pb::EconomyParameters {
        version: e.version,
        creator_share_bps: e.creator_share.get(),
        payout_per_unit: Some(to_money(&e.payout_per_unit)),
        diamonds_per_payout_unit: e.diamonds_per_payout_unit.get(),
        payout_minimum_diamonds: e.payout_minimum.get(),
        create_time: Some(to_timestamp(e.created_at)),
    }
}
