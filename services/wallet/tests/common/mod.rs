//! A catalog and a wallet on loopback, on one test database each, and clients for the
//! roles the tests play.
#![allow(dead_code)]

use std::sync::Arc;

use ovation_auth::Role;
use ovation_catalog::CatalogConfig;
use ovation_proto::wallet as pb;
use ovation_proto::wallet::wallet_service_client::WalletServiceClient;
use ovation_server::peer::{CatalogPeerArgs, IdentityArgs};
use ovation_testkit::{Bearer, Running, TestDatabase, server_config, test_keys_file, token};
use ovation_wallet::payment::SandboxProvider;
use ovation_wallet::{WalletConfig, WalletSettings};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub type Client = WalletServiceClient<InterceptedService<Channel, Bearer>>;

pub struct Suite {
    pub catalog: Running,
    pub wallet: Running,
    pub sandbox: Arc<SandboxProvider>,
    pub catalog_db: TestDatabase,
    pub wallet_db_url: String,
    pub backend: &'static str,
}

pub fn wallet_config(
    db_url: &str,
    catalog: &Running,
    sandbox: Arc<SandboxProvider>,
    settings: WalletSettings,
) -> WalletConfig {
    WalletConfig {
        server: server_config(db_url),
        wallet: settings,
        catalog: CatalogPeerArgs::plaintext(catalog.endpoint()),
        identity: IdentityArgs {
            service_keys_file: Some(test_keys_file()),
            service_token_file: None,
        },
        provider: sandbox,
    }
}

pub async fn start_wallet(config: WalletConfig) -> Running {
    Running::start(|listener, shutdown| ovation_wallet::run(config, listener, shutdown))
        .await
        .expect("wallet starts")
}

impl Suite {
    pub async fn start(wallet_db: &TestDatabase) -> Suite {
        Self::start_with(wallet_db, WalletSettings::default()).await
    }

    pub async fn start_with(wallet_db: &TestDatabase, settings: WalletSettings) -> Suite {
        let catalog_db = TestDatabase::sqlite();
        let catalog_config = CatalogConfig {
            server: server_config(catalog_db.url()),
            seed_demo: true,
        };
        let catalog = Running::start(|listener, shutdown| {
            ovation_catalog::run(catalog_config, listener, shutdown)
        })
        .await
        .expect("catalog starts");
        let sandbox = Arc::new(SandboxProvider::new());
        let wallet = start_wallet(wallet_config(
            wallet_db.url(),
            &catalog,
            sandbox.clone(),
            settings,
        ))
        .await;
        Suite {
            catalog,
            wallet,
            sandbox,
            catalog_db,
            wallet_db_url: wallet_db.url().to_owned(),
            backend: wallet_db.backend(),
        }
    }

    pub async fn client(&self, bearer: Bearer) -> Client {
        WalletServiceClient::with_interceptor(self.wallet.channel().await, bearer)
    }

    pub async fn user(&self, user: &str) -> Client {
        self.client(Bearer::new(&token(user, &[Role::Viewer])))
            .await
    }

    pub async fn gifting(&self) -> Client {
        self.client(Bearer::new(&token("gifting", &[Role::GiftingService])))
            .await
    }

    pub async fn admin(&self) -> Client {
        self.client(Bearer::admin()).await
    }

    pub async fn stop(self) {
        self.wallet.stop().await.expect("wallet stops");
        self.catalog.stop().await.expect("catalog stops");
    }
}

pub async fn open_account(client: &mut Client, user: &str) {
    client
        .create_account(pb::CreateAccountRequest {
            idempotency_key: format!("open-{user}"),
            user_id: user.into(),
            minor: false,
        })
        .await
        .expect("account opens");
}

pub async fn buy(
    client: &mut Client,
    user: &str,
    key: &str,
    package: &str,
    token: &str,
) -> pb::Purchase {
    client
        .purchase_coins(pb::PurchaseCoinsRequest {
            idempotency_key: key.into(),
            user_id: user.into(),
            package_id: package.into(),
            currency_code: "USD".into(),
            payment_token: token.into(),
            expected_price: None,
        })
        .await
        .expect("purchase answers")
        .into_inner()
        .purchase
        .expect("purchase in the answer")
}

pub async fn balance(client: &mut Client, user: &str) -> pb::Balance {
    client
        .get_balance(pb::GetBalanceRequest {
            user_id: user.into(),
        })
        .await
        .expect("balance")
        .into_inner()
        .balance
        .expect("balance in the answer")
}

pub fn debit(op: &str, user: &str, coins: i64) -> pb::DebitCoinsRequest {
    pb::DebitCoinsRequest {
        idempotency_key: format!("key-{op}"),
        operation_id: op.into(),
        user_id: user.into(),
        coins,
        saga_id: String::new(),
        note: String::new(),
    }
}

pub async fn summary(admin: &mut Client) -> pb::GetLedgerSummaryResponse {
    admin
        .get_ledger_summary(pb::GetLedgerSummaryRequest {})
        .await
        .expect("summary")
        .into_inner()
}

/// I1 and I2 hold: every entry balanced, the ledger sums to zero, no negative balance.
pub async fn assert_ledger_sound(admin: &mut Client, context: &str) {
    let s = summary(admin).await;
    assert_eq!(
        s.total_coins, 0,
        "{context}: ledger does not sum to zero: {s:?}"
    );
    assert_eq!(
        s.unbalanced_entry_count, 0,
        "{context}: unbalanced entries: {s:?}"
    );
    assert_eq!(
        s.negative_balance_count, 0,
        "{context}: negative balances: {s:?}"
    );
}
