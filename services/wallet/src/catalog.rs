//! What the wallet needs from the catalog (a package's price and coins, the promotions
//! that apply to it), read over gRPC and cached briefly: catalog reads are hot and a
//! price change may take up to the TTL to reach purchases.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ovation_proto::catalog as pb;
use ovation_proto::catalog::catalog_service_client::CatalogServiceClient;
use ovation_server::peer::Outbound;
use ovation_types::UnixMillis;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Most packages cached at once.
const CACHE_ENTRIES_MAX: usize = 1_024;
/// Most promotions read for one package.
const PROMOTIONS_MAX: i32 = 500;

/// A package as the wallet prices it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageOffer {
    pub package_id: String,
    pub version: i64,
    pub coins: i64,
    pub enabled: bool,
    /// (currency code, amount in minor units)
    pub prices: Vec<(String, i64)>,
    pub promotions: Vec<Promotion>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Promotion {
    pub id: String,
    pub version: i64,
    pub bonus_bps: i32,
    pub per_user_cap: i32,
    pub starts_at: UnixMillis,
    pub ends_at: UnixMillis,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("coin package {0} not found")]
    PackageNotFound(String),
    #[error("catalog unavailable: {0}")]
    Unavailable(String),
}

/// Package offers by package id, with when they were read.
type OfferCache = HashMap<String, (Instant, Arc<PackageOffer>)>;

/// The catalog, as the wallet reads it.
#[derive(Clone, Debug)]
pub struct CatalogReader {
    client: CatalogServiceClient<InterceptedService<Channel, Outbound>>,
    cache: Arc<Mutex<OfferCache>>,
    ttl: Duration,
}

impl CatalogReader {
    pub fn new(channel: Channel, outbound: Outbound, ttl: Duration) -> Self {
        CatalogReader {
            client: CatalogServiceClient::with_interceptor(channel, outbound),
            cache: Arc::new(Mutex::new(HashMap::new())),
            ttl,
        }
    }

    /// The package and its promotions, from the cache if fresh.
    pub async fn offer(&self, package_id: &str) -> Result<Arc<PackageOffer>, CatalogError> {
        if let Some((at, offer)) = self.lock().get(package_id)
            && at.elapsed() < self.ttl
        {
            return Ok(offer.clone());
        }
        let offer = Arc::new(self.fetch(package_id).await?);
        let mut cache = self.lock();
        if cache.len() >= CACHE_ENTRIES_MAX {
            let ttl = self.ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= CACHE_ENTRIES_MAX {
                cache.clear();
            }
        }
        cache.insert(package_id.to_owned(), (Instant::now(), offer.clone()));
        Ok(offer)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OfferCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn fetch(&self, package_id: &str) -> Result<PackageOffer, CatalogError> {
        let mut client = self.client.clone();
        let package = client
            .get_coin_package(pb::GetCoinPackageRequest {
                package_id: package_id.to_owned(),
                version: 0,
            })
            .await
            .map_err(|s| match s.code() {
                Code::NotFound | Code::InvalidArgument => {
                    CatalogError::PackageNotFound(package_id.to_owned())
                }
                _ => CatalogError::Unavailable(format!("{}: {}", s.code(), s.message())),
            })?
            .into_inner()
            .coin_package
            .ok_or_else(|| {
                CatalogError::Unavailable("catalog answered without a package".into())
            })?;
        let promotions = client
            .list_promotions(pb::ListPromotionsRequest {
                page_size: PROMOTIONS_MAX,
                page_token: String::new(),
                active_at: None,
                package_id: package_id.to_owned(),
            })
            .await
            .map_err(|s| CatalogError::Unavailable(format!("{}: {}", s.code(), s.message())))?
            .into_inner()
            .promotions;
        let millis = |t: Option<prost_types::Timestamp>| {
            t.and_then(|t| UnixMillis::from_parts(t.seconds, t.nanos).ok())
                .unwrap_or(UnixMillis(0))
        };
        Ok(PackageOffer {
            package_id: package.package_id,
            version: package.version,
            coins: package.coins,
            enabled: package.enabled,
            prices: package
                .prices
                .into_iter()
                .map(|m| (m.currency_code, m.amount_minor))
                .collect(),
            promotions: promotions
                .into_iter()
                .filter(|p| p.enabled)
                .map(|p| Promotion {
                    id: p.promotion_id,
                    version: p.version,
                    bonus_bps: p.bonus_bps,
                    per_user_cap: p.per_user_cap,
                    starts_at: millis(p.starts_at),
                    ends_at: millis(p.ends_at),
                })
                .collect(),
        })
    }
}
