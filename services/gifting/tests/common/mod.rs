//! The whole suite on loopback: catalog, wallet, payout and gifting, each on its own test
//! database (all SQLite, or all PostgreSQL), and clients for the roles tests play.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use ovation_auth::Role;
use ovation_gifting::{GiftingConfig, GiftingSettings};
use ovation_proto::gifting as pb;
use ovation_proto::gifting::gifting_service_client::GiftingServiceClient;
use ovation_proto::payout as payout_pb;
use ovation_proto::payout::payout_service_client::PayoutServiceClient;
use ovation_proto::wallet as wallet_pb;
use ovation_proto::wallet::wallet_service_client::WalletServiceClient;
use ovation_server::peer::{CatalogPeerArgs, IdentityArgs, PayoutPeerArgs, WalletPeerArgs};
use ovation_testkit::{Bearer, Running, TestDatabase, server_config, test_keys_file, token};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub type Gifting = GiftingServiceClient<InterceptedService<Channel, Bearer>>;
pub type Wallet = WalletServiceClient<InterceptedService<Channel, Bearer>>;
pub type Payout = PayoutServiceClient<InterceptedService<Channel, Bearer>>;

pub struct Suite {
    pub catalog: Running,
    pub wallet: Running,
    pub wallet_addr: SocketAddr,
    pub wallet_db: TestDatabase,
    pub payout: Running,
    pub payout_addr: SocketAddr,
    pub payout_db: TestDatabase,
    pub gifting: Running,
    pub gifting_db: TestDatabase,
    pub backend: &'static str,
    pub _dbs: Vec<TestDatabase>,
}

pub fn identity() -> IdentityArgs {
    IdentityArgs {
        service_keys_file: Some(test_keys_file()),
        service_token_file: None,
    }
}

/// A fresh database of the same kind as `like`.
pub async fn database_like(like: &TestDatabase) -> TestDatabase {
    if like.backend() == "postgres" {
        TestDatabase::postgres()
            .await
            .expect("postgres is configured")
    } else {
        TestDatabase::sqlite()
    }
}

pub fn gifting_config(
    db: &TestDatabase,
    catalog: &str,
    wallet: &str,
    payout: &str,
    settings: GiftingSettings,
) -> GiftingConfig {
    GiftingConfig {
        server: server_config(db.url()),
        gifting: settings,
        catalog: CatalogPeerArgs::plaintext(catalog),
        wallet: WalletPeerArgs::plaintext(wallet),
        payout: PayoutPeerArgs::plaintext(payout),
        identity: identity(),
    }
}

pub async fn start_gifting(config: GiftingConfig) -> Running {
    Running::start(|l, s| ovation_gifting::run(config, l, s))
        .await
        .expect("gifting starts")
}

pub fn fast_retries() -> GiftingSettings {
    GiftingSettings {
        retry_base_ms: 10,
        retry_max_ms: 100,
        recovery_interval_ms: 50,
        ..GiftingSettings::default()
    }
}

pub async fn start_wallet_on(addr: SocketAddr, db: &TestDatabase, catalog: &Running) -> Running {
    let config = ovation_wallet::WalletConfig {
        server: server_config(db.url()),
        wallet: ovation_wallet::WalletSettings::default(),
        catalog: CatalogPeerArgs::plaintext(catalog.endpoint()),
        identity: identity(),
        provider: Arc::new(ovation_wallet::payment::SandboxProvider::new()),
    };
    Running::start_on(addr, |l, s| ovation_wallet::run(config, l, s))
        .await
        .expect("wallet starts")
}

pub async fn start_payout_on(addr: SocketAddr, db: &TestDatabase, catalog: &Running) -> Running {
    let config = ovation_payout::PayoutConfig {
        server: server_config(db.url()),
        catalog: CatalogPeerArgs::plaintext(catalog.endpoint()),
        identity: identity(),
        provider: Arc::new(ovation_payout::provider::SandboxProvider::in_memory()),
        worker: ovation_payout::worker::WorkerConfig::FAST_TESTS,
    };
    Running::start_on(addr, |l, s| ovation_payout::run(config, l, s))
        .await
        .expect("payout starts")
}

impl Suite {
    pub async fn start(db: TestDatabase) -> Suite {
        Self::start_with(db, fast_retries()).await
    }

    /// `db` is gifting's database; the others are made alike.
    pub async fn start_with(gifting_db: TestDatabase, settings: GiftingSettings) -> Suite {
        let backend = gifting_db.backend();
        let catalog_db = database_like(&gifting_db).await;
        let wallet_db = database_like(&gifting_db).await;
        let payout_db = database_like(&gifting_db).await;
        let catalog_config = ovation_catalog::CatalogConfig {
            server: server_config(catalog_db.url()),
            seed_demo: true,
        };
        let catalog = Running::start(|l, s| ovation_catalog::run(catalog_config, l, s))
            .await
            .unwrap();
        let wallet = start_wallet_on(ovation_testkit::free_addr(), &wallet_db, &catalog).await;
        let wallet_addr = wallet.addr;
        let payout = start_payout_on(ovation_testkit::free_addr(), &payout_db, &catalog).await;
        let payout_addr = payout.addr;
        let gifting = start_gifting(gifting_config(
            &gifting_db,
            &catalog.endpoint(),
            &wallet.endpoint(),
            &payout.endpoint(),
            settings,
        ))
        .await;
        Suite {
            catalog,
            wallet,
            wallet_addr,
            wallet_db,
            payout,
            payout_addr,
            payout_db,
            gifting,
            gifting_db,
            backend,
            _dbs: vec![catalog_db],
        }
    }

    pub async fn gifting_as(&self, user: &str) -> Gifting {
        GiftingServiceClient::with_interceptor(
            self.gifting.channel().await,
            Bearer::new(&token(user, &[Role::Viewer])),
        )
    }

    pub async fn gifting_admin(&self) -> Gifting {
        GiftingServiceClient::with_interceptor(self.gifting.channel().await, Bearer::admin())
    }

    pub async fn wallet_as(&self, user: &str) -> Wallet {
        WalletServiceClient::with_interceptor(
            self.wallet.channel().await,
            Bearer::new(&token(user, &[Role::Viewer])),
        )
    }

    pub async fn payout_admin(&self) -> Payout {
        PayoutServiceClient::with_interceptor(self.payout.channel().await, Bearer::admin())
    }

    pub async fn payout_as(&self, creator: &str) -> Payout {
        PayoutServiceClient::with_interceptor(
            self.payout.channel().await,
            Bearer::new(&token(creator, &[Role::Creator])),
        )
    }

    /// A viewer with an account and `package`'s coins (plus the demo launch bonus).
    pub async fn funded_viewer(&self, user: &str, package: &str) -> i64 {
        let mut w = self.wallet_as(user).await;
        w.create_account(wallet_pb::CreateAccountRequest {
            idempotency_key: format!("open-{user}"),
            user_id: user.into(),
            minor: false,
        })
        .await
        .unwrap();
        let p = w
            .purchase_coins(wallet_pb::PurchaseCoinsRequest {
                idempotency_key: format!("buy-{user}-{package}"),
                user_id: user.into(),
                package_id: package.into(),
                currency_code: "USD".into(),
                payment_token: ovation_wallet::payment::TOKEN_OK.into(),
                expected_price: None,
            })
            .await
            .unwrap()
            .into_inner()
            .purchase
            .unwrap();
        p.coins_credited
    }

    pub async fn creator(&self, id: &str) {
        let mut p = self.payout_as(id).await;
        p.register_creator(payout_pb::RegisterCreatorRequest {
            idempotency_key: format!("reg-{id}"),
            creator_id: id.into(),
            display_name: format!("Creator {id}"),
        })
        .await
        .unwrap();
    }

    pub async fn coins(&self, user: &str) -> i64 {
        let mut w = self.wallet_as(user).await;
        w.get_balance(wallet_pb::GetBalanceRequest {
            user_id: user.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .balance
        .unwrap()
        .posted_coins
    }

    pub async fn diamonds(&self, creator: &str) -> i64 {
        let mut p = self.payout_as(creator).await;
        p.get_diamond_balance(payout_pb::GetDiamondBalanceRequest {
            creator_id: creator.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .balance
        .unwrap()
        .available_diamonds
    }

    pub async fn stop(self) {
        self.gifting.stop().await.unwrap();
        self.payout.stop().await.unwrap();
        self.wallet.stop().await.unwrap();
        self.catalog.stop().await.unwrap();
    }
}

pub fn send(
    key: &str,
    sender: &str,
    creator: &str,
    gift: &str,
    quantity: i32,
) -> pb::SendGiftRequest {
    pb::SendGiftRequest {
        idempotency_key: key.into(),
        sender_user_id: sender.into(),
        creator_id: creator.into(),
        stream_id: "stream-1".into(),
        gift_id: gift.into(),
        quantity,
        message: String::new(),
    }
}

/// Polls a saga until it is terminal (bounded), returning its receipt.
pub async fn settled(client: &mut Gifting, saga_id: &str) -> pb::GiftReceipt {
    for _ in 0..400 {
        let r = client
            .get_sent_gift(pb::GetSentGiftRequest {
                saga_id: saga_id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .receipt
            .unwrap();
        if ![
            pb::SagaStatus::Pending as i32,
            pb::SagaStatus::NeedsOperator as i32,
        ]
        .contains(&r.status)
        {
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("saga {saga_id} did not settle within 10 s");
}
