//! Clients of the services under test, each presenting a caller's token, what most tests do
//! first through them (fund a viewer, register a creator, read coins and diamonds), and a
//! gift to send.

use std::time::Duration;

use ovation_proto::catalog::catalog_service_client::CatalogServiceClient;
use ovation_proto::gifting as gifting_pb;
use ovation_proto::gifting::gifting_service_client::GiftingServiceClient;
use ovation_proto::payout as payout_pb;
use ovation_proto::payout::payout_service_client::PayoutServiceClient;
use ovation_proto::wallet as wallet_pb;
use ovation_proto::wallet::wallet_service_client::WalletServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::Bearer;

pub type CatalogClient = CatalogServiceClient<InterceptedService<Channel, Bearer>>;
pub type WalletClient = WalletServiceClient<InterceptedService<Channel, Bearer>>;
pub type PayoutClient = PayoutServiceClient<InterceptedService<Channel, Bearer>>;
pub type GiftingClient = GiftingServiceClient<InterceptedService<Channel, Bearer>>;

/// A channel to `url` that connects on first use, and again after its service restarts on
/// the same address.
pub fn lazy_channel(url: &str) -> Channel {
    endpoint(url).connect_lazy()
}

/// A channel to `url`, connected now if the service answers (so a call with a short deadline
/// does not spend it connecting), else on first use.
pub async fn channel(url: &str) -> Channel {
    let endpoint = endpoint(url);
    match endpoint.connect().await {
        Ok(channel) => channel,
        Err(_) => endpoint.connect_lazy(),
    }
}

fn endpoint(url: &str) -> Endpoint {
    Channel::from_shared(url.to_owned())
        .expect("a service URL")
        .connect_timeout(Duration::from_secs(2))
}

/// The URLs of a suite's services, and clients of them for the roles tests play. Every
/// client has a connection of its own, which it makes again after its service restarts on
/// the same address.
#[derive(Clone, Debug)]
pub struct SuiteClients {
    pub catalog: String,
    pub wallet: String,
    pub payout: String,
    pub gifting: String,
}

impl SuiteClients {
    pub async fn catalog(&self, bearer: Bearer) -> CatalogClient {
        CatalogServiceClient::with_interceptor(channel(&self.catalog).await, bearer)
    }

    pub async fn wallet(&self, bearer: Bearer) -> WalletClient {
        WalletServiceClient::with_interceptor(channel(&self.wallet).await, bearer)
    }

    pub async fn payout(&self, bearer: Bearer) -> PayoutClient {
        PayoutServiceClient::with_interceptor(channel(&self.payout).await, bearer)
    }

    pub async fn gifting(&self, bearer: Bearer) -> GiftingClient {
        GiftingServiceClient::with_interceptor(channel(&self.gifting).await, bearer)
    }

    /// The wallet, as viewer `user`.
    pub async fn wallet_as(&self, user: &str) -> WalletClient {
        self.wallet(Bearer::viewer(user)).await
    }

    /// Payout, as creator `id`.
    pub async fn payout_as(&self, id: &str) -> PayoutClient {
        self.payout(Bearer::creator(id)).await
    }

    pub async fn payout_admin(&self) -> PayoutClient {
        self.payout(Bearer::admin()).await
    }

    /// Gifting, as viewer `user`.
    pub async fn gifting_as(&self, user: &str) -> GiftingClient {
        self.gifting(Bearer::viewer(user)).await
    }

    pub async fn gifting_admin(&self) -> GiftingClient {
        self.gifting(Bearer::admin()).await
    }

    /// Opens `user`'s account and buys `package` with a card that pays; the coins credited
    /// (the package's and any promotion's).
    pub async fn funded_viewer(&self, user: &str, package: &str) -> Result<i64, tonic::Status> {
        let mut wallet = self.wallet_as(user).await;
        wallet
            .create_account(wallet_pb::CreateAccountRequest {
                idempotency_key: format!("open-{user}"),
                user_id: user.into(),
                minor: false,
            })
            .await?;
        let purchase = wallet
            .purchase_coins(wallet_pb::PurchaseCoinsRequest {
                idempotency_key: format!("buy-{user}-{package}"),
                user_id: user.into(),
                package_id: package.into(),
                currency_code: "USD".into(),
                payment_token: ovation_wallet::payment::TOKEN_OK.into(),
                expected_price: None,
                payment_method: None,
            })
            .await?
            .into_inner()
            .purchase
            .ok_or_else(|| missing("PurchaseCoins", "purchase"))?;
        Ok(purchase.coins_credited)
    }

    /// Registers creator `id` with payout, as the creator.
    pub async fn register_creator(&self, id: &str) -> Result<(), tonic::Status> {
        self.payout_as(id)
            .await
            .register_creator(payout_pb::RegisterCreatorRequest {
                idempotency_key: format!("reg-{id}"),
                creator_id: id.into(),
                display_name: format!("Creator {id}"),
            })
            .await?;
        Ok(())
    }

    /// `user`'s posted coins, as they read them.
    pub async fn coins(&self, user: &str) -> Result<i64, tonic::Status> {
        let balance = self
            .wallet_as(user)
            .await
            .get_balance(wallet_pb::GetBalanceRequest {
                user_id: user.into(),
            })
            .await?
            .into_inner()
            .balance
            .ok_or_else(|| missing("GetBalance", "balance"))?;
        Ok(balance.posted_coins)
    }

    /// Creator `id`'s diamonds not cashed out, as they read them: pending (credited, not
    /// yet matured) and available.
    pub async fn diamonds(&self, id: &str) -> Result<i64, tonic::Status> {
        let balance = self
            .payout_as(id)
            .await
            .get_diamond_balance(payout_pb::GetDiamondBalanceRequest {
                creator_id: id.into(),
            })
            .await?
            .into_inner()
            .balance
            .ok_or_else(|| missing("GetDiamondBalance", "balance"))?;
        Ok(balance.pending_diamonds + balance.available_diamonds)
    }
}

/// A SendGift of `quantity` × `gift` from `sender` to `creator` on `stream`, under `key`,
/// without a message.
pub fn gift_request(
    stream: &str,
    key: &str,
    sender: &str,
    creator: &str,
    gift: &str,
    quantity: i32,
) -> gifting_pb::SendGiftRequest {
    gifting_pb::SendGiftRequest {
        idempotency_key: key.into(),
        sender_user_id: sender.into(),
        creator_id: creator.into(),
        stream_id: stream.into(),
        gift_id: gift.into(),
        quantity,
        message: String::new(),
    }
}

/// An answer without the message it must carry.
fn missing(rpc: &str, what: &str) -> tonic::Status {
    tonic::Status::internal(format!("{rpc} answered without a {what}"))
}
