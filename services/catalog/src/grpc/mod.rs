//! The gRPC edge, kept thin: each handler checks who may call (its first line), parses the
//! request into a domain command (`parse`), runs the operation ([`crate::operations`]) or
//! the store's read, and answers (`to_proto`). Proto types stop here.
//!
//! Authorization: reads (Get*, List*, QuoteGift) are open to every authenticated caller
//! (viewers, creators, the gateway, services: the catalog is what the product shows);
//! writes (Create*, Update*) need the admin role.

mod parse;
mod to_proto;

use futures::FutureExt;
use ovation_auth::Role;
use ovation_proto::catalog as pb;
use ovation_proto::catalog::catalog_service_server::CatalogService;
use ovation_server::{ApiError, IdempotentCall, access};
use ovation_store::Db;
use ovation_types::UnixMillis;
use tonic::{Request, Response, Status};

use self::parse::{
    parse_create_coin_package, parse_create_gift, parse_create_promotion, parse_get_coin_package,
    parse_get_economy_parameters, parse_get_gift, parse_get_promotion, parse_list_coin_packages,
    parse_list_economy_parameters_versions, parse_list_gift_versions, parse_list_gifts,
    parse_list_promotions, parse_quote_gift, parse_update_coin_package,
    parse_update_economy_parameters, parse_update_gift, parse_update_promotion,
};
use crate::domain::{CoinPackage, EconomyParameters, Gift, Promotion, TheEconomy};
use crate::operations;
use crate::store;

type Reply<T> = Result<Response<T>, Status>;

/// The catalog's gRPC service.
#[derive(Clone, Debug)]
pub struct CatalogApi {
    db: Db,
}

impl CatalogApi {
    pub fn new(db: Db) -> Self {
        CatalogApi { db }
    }
}

#[tonic::async_trait]
impl CatalogService for CatalogApi {
    async fn get_gift(&self, request: Request<pb::GetGiftRequest>) -> Reply<pb::GetGiftResponse> {
        access::caller(&request)?;
        let lookup = parse_get_gift(request.get_ref()).map_err(ApiError::from)?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let gift = operations::get::<Gift>(&mut conn, &lookup.id, lookup.version).await?;
        Ok(Response::new(pb::GetGiftResponse {
            gift: Some((&gift).into()),
        }))
    }

    async fn list_gifts(
        &self,
        request: Request<pb::ListGiftsRequest>,
    ) -> Reply<pb::ListGiftsResponse> {
        access::caller(&request)?;
        let list =
            parse_list_gifts(request.get_ref(), UnixMillis::now()).map_err(ApiError::from)?;
        let (page, limit) = (list.page.token.cursor(), list.page.size.fetch_limit());
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let mut gifts = store::list_gifts(&mut conn, page, list.sendable_at, limit)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = list.page.size.cut(&mut gifts, |g| g.id.to_string());
        Ok(Response::new(pb::ListGiftsResponse {
            gifts: gifts.iter().map(pb::Gift::from).collect(),
            next_page_token,
        }))
    }

    async fn list_gift_versions(
        &self,
        request: Request<pb::ListGiftVersionsRequest>,
    ) -> Reply<pb::ListGiftVersionsResponse> {
        access::caller(&request)?;
        let (id, page) = parse_list_gift_versions(request.get_ref()).map_err(ApiError::from)?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let mut gifts =
            operations::gift_versions(&mut conn, &id, page.after, page.size.fetch_limit()).await?;
        let next_page_token = page.size.cut(&mut gifts, |g| g.version.to_string());
        Ok(Response::new(pb::ListGiftVersionsResponse {
            gifts: gifts.iter().map(pb::Gift::from).collect(),
            next_page_token,
        }))
    }

    async fn create_gift(
        &self,
        request: Request<pb::CreateGiftRequest>,
    ) -> Reply<pb::CreateGiftResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "CreateGift", &req);
        let (key, new) = parse_create_gift(&req).map_err(ApiError::from)?;
        let response = call
            .run(&self.db, &key, |conn| {
                async move {
                    let gift = Gift::create(new, UnixMillis::now());
                    let gift = operations::create(conn, gift).await?;
                    Ok::<_, ApiError>(pb::CreateGiftResponse {
                        gift: Some((&gift).into()),
                    })
                }
                .boxed()
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn update_gift(
        &self,
        request: Request<pb::UpdateGiftRequest>,
    ) -> Reply<pb::UpdateGiftResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "UpdateGift", &req);
        let (key, update) = parse_update_gift(&req).map_err(ApiError::from)?;
        let response = call
            .run(&self.db, &key, |conn| {
                async move {
                    let gift = operations::update(conn, update, UnixMillis::now()).await?;
                    Ok::<_, ApiError>(pb::UpdateGiftResponse {
                        gift: Some((&gift).into()),
                    })
                }
                .boxed()
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn quote_gift(
        &self,
        request: Request<pb::QuoteGiftRequest>,
    ) -> Reply<pb::QuoteGiftResponse> {
        access::caller(&request)?;
        let query = parse_quote_gift(request.get_ref()).map_err(ApiError::from)?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let quote =
            operations::quote(&mut conn, &query.gift_id, query.quantity, UnixMillis::now()).await?;
        Ok(Response::new(pb::QuoteGiftResponse {
            gift: Some((&quote.gift).into()),
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
        let lookup = parse_get_coin_package(request.get_ref()).map_err(ApiError::from)?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let package = operations::get::<CoinPackage>(&mut conn, &lookup.id, lookup.version).await?;
        Ok(Response::new(pb::GetCoinPackageResponse {
            coin_package: Some((&package).into()),
        }))
    }

    async fn list_coin_packages(
        &self,
        request: Request<pb::ListCoinPackagesRequest>,
    ) -> Reply<pb::ListCoinPackagesResponse> {
        access::caller(&request)?;
        let page = parse_list_coin_packages(request.get_ref()).map_err(ApiError::from)?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let mut packages =
            store::list_packages(&mut conn, page.token.cursor(), page.size.fetch_limit())
                .await
                .map_err(ApiError::from)?;
        let next_page_token = page.size.cut(&mut packages, |p| p.id.to_string());
        Ok(Response::new(pb::ListCoinPackagesResponse {
            coin_packages: packages.iter().map(pb::CoinPackage::from).collect(),
            next_page_token,
        }))
    }

    async fn create_coin_package(
        &self,
        request: Request<pb::CreateCoinPackageRequest>,
    ) -> Reply<pb::CreateCoinPackageResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "CreateCoinPackage", &req);
        let (key, new) = parse_create_coin_package(&req).map_err(ApiError::from)?;
        let response = call
            .run(&self.db, &key, |conn| {
                async move {
                    let package = CoinPackage::create(new, UnixMillis::now());
                    let package = operations::create(conn, package).await?;
                    Ok::<_, ApiError>(pb::CreateCoinPackageResponse {
                        coin_package: Some((&package).into()),
                    })
                }
                .boxed()
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn update_coin_package(
        &self,
        request: Request<pb::UpdateCoinPackageRequest>,
    ) -> Reply<pb::UpdateCoinPackageResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "UpdateCoinPackage", &req);
        let (key, update) = parse_update_coin_package(&req).map_err(ApiError::from)?;
        let response = call
            .run(&self.db, &key, |conn| {
                async move {
                    let package = operations::update(conn, update, UnixMillis::now()).await?;
                    Ok::<_, ApiError>(pb::UpdateCoinPackageResponse {
                        coin_package: Some((&package).into()),
                    })
                }
                .boxed()
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn get_promotion(
        &self,
        request: Request<pb::GetPromotionRequest>,
    ) -> Reply<pb::GetPromotionResponse> {
        access::caller(&request)?;
        let lookup = parse_get_promotion(request.get_ref()).map_err(ApiError::from)?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let promotion = operations::get::<Promotion>(&mut conn, &lookup.id, lookup.version).await?;
        Ok(Response::new(pb::GetPromotionResponse {
            promotion: Some((&promotion).into()),
        }))
    }

    async fn list_promotions(
        &self,
        request: Request<pb::ListPromotionsRequest>,
    ) -> Reply<pb::ListPromotionsResponse> {
        access::caller(&request)?;
        let list = parse_list_promotions(request.get_ref()).map_err(ApiError::from)?;
        let (page, limit) = (list.page.token.cursor(), list.page.size.fetch_limit());
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let package = list.package.as_ref();
        let mut promotions =
            store::list_promotions(&mut conn, page, list.active_at, package, limit)
                .await
                .map_err(ApiError::from)?;
        let next_page_token = list.page.size.cut(&mut promotions, |p| p.id.to_string());
        Ok(Response::new(pb::ListPromotionsResponse {
            promotions: promotions.iter().map(pb::Promotion::from).collect(),
            next_page_token,
        }))
    }

    async fn create_promotion(
        &self,
        request: Request<pb::CreatePromotionRequest>,
    ) -> Reply<pb::CreatePromotionResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "CreatePromotion", &req);
        let (key, new) = parse_create_promotion(&req).map_err(ApiError::from)?;
        let response = call
            .run(&self.db, &key, |conn| {
                async move {
                    let promotion =
                        operations::create_promotion(conn, new, UnixMillis::now()).await?;
                    Ok::<_, ApiError>(pb::CreatePromotionResponse {
                        promotion: Some((&promotion).into()),
                    })
                }
                .boxed()
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn update_promotion(
        &self,
        request: Request<pb::UpdatePromotionRequest>,
    ) -> Reply<pb::UpdatePromotionResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "UpdatePromotion", &req);
        let (key, update) = parse_update_promotion(&req).map_err(ApiError::from)?;
        let response = call
            .run(&self.db, &key, |conn| {
                async move {
                    let promotion =
                        operations::update_promotion(conn, update, UnixMillis::now()).await?;
                    Ok::<_, ApiError>(pb::UpdatePromotionResponse {
                        promotion: Some((&promotion).into()),
                    })
                }
                .boxed()
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn get_economy_parameters(
        &self,
        request: Request<pb::GetEconomyParametersRequest>,
    ) -> Reply<pb::GetEconomyParametersResponse> {
        access::caller(&request)?;
        let version = parse_get_economy_parameters(request.get_ref()).map_err(ApiError::from)?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let economy = operations::get::<EconomyParameters>(&mut conn, &TheEconomy, version).await?;
        Ok(Response::new(pb::GetEconomyParametersResponse {
            economy_parameters: Some((&economy).into()),
        }))
    }

    async fn list_economy_parameters_versions(
        &self,
        request: Request<pb::ListEconomyParametersVersionsRequest>,
    ) -> Reply<pb::ListEconomyParametersVersionsResponse> {
        access::caller(&request)?;
        let page =
            parse_list_economy_parameters_versions(request.get_ref()).map_err(ApiError::from)?;
        let mut conn = self.db.conn().await.map_err(ApiError::from)?;
        let mut versions =
            store::list_economy_versions(&mut conn, page.after, page.size.fetch_limit())
                .await
                .map_err(ApiError::from)?;
        let next_page_token = page.size.cut(&mut versions, |e| e.version.to_string());
        Ok(Response::new(pb::ListEconomyParametersVersionsResponse {
            economy_parameters: versions.iter().map(pb::EconomyParameters::from).collect(),
            next_page_token,
        }))
    }

    async fn update_economy_parameters(
        &self,
        request: Request<pb::UpdateEconomyParametersRequest>,
    ) -> Reply<pb::UpdateEconomyParametersResponse> {
        let caller = access::require(&request, &[Role::Admin])?;
        let req = request.into_inner();
        let call = IdempotentCall::new(&caller, "UpdateEconomyParameters", &req);
        let (key, update) = parse_update_economy_parameters(&req).map_err(ApiError::from)?;
        let response = call
            .run(&self.db, &key, |conn| {
                async move {
                    let economy = operations::update(conn, update, UnixMillis::now()).await?;
                    Ok::<_, ApiError>(pb::UpdateEconomyParametersResponse {
                        economy_parameters: Some((&economy).into()),
                    })
                }
                .boxed()
            })
            .await?;
        Ok(Response::new(response))
    }
}
