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
use tonic_types::StatusExt;

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

/// A client of the wallet `wallet`, presenting `bearer`.
pub async fn client_on(wallet: &Running, bearer: Bearer) -> Client {
    WalletServiceClient::with_interceptor(wallet.channel().await, bearer)
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
        client_on(&self.wallet, bearer).await
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

/// `user` buys `package` with `token` under `key`.
pub fn purchase_request(
    user: &str,
    key: &str,
    package: &str,
    token: &str,
) -> pb::PurchaseCoinsRequest {
    pb::PurchaseCoinsRequest {
        idempotency_key: key.into(),
        user_id: user.into(),
        package_id: package.into(),
        currency_code: "USD".into(),
        payment_token: token.into(),
        expected_price: None,
    }
}

pub async fn buy(
    client: &mut Client,
    user: &str,
    key: &str,
    package: &str,
    token: &str,
) -> pb::Purchase {
    client
        .purchase_coins(purchase_request(user, key, package, token))
        .await
        .expect("purchase answers")
        .into_inner()
        .purchase
        .expect("purchase in the answer")
}

/// An admin reverses a purchase (a chargeback); the purchase as reversed.
pub async fn reverse(admin: &mut Client, request: pb::ReversePurchaseRequest) -> pb::Purchase {
    admin
        .reverse_purchase(request)
        .await
        .expect("reversal answers")
        .into_inner()
        .purchase
        .expect("purchase in the answer")
}

pub async fn account(client: &mut Client, user: &str) -> pb::Account {
    client
        .get_account(pb::GetAccountRequest {
            user_id: user.into(),
        })
        .await
        .expect("account")
        .into_inner()
        .account
        .expect("account in the answer")
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

/// A hold of `coins` on `user` for operation `op`, for `ttl_s` seconds.
pub fn reserve(op: &str, user: &str, coins: i64, ttl_s: i64) -> pb::ReserveCoinsRequest {
    pb::ReserveCoinsRequest {
        idempotency_key: format!("key-{op}"),
        operation_id: op.into(),
        user_id: user.into(),
        coins,
        ttl: Some(prost_types::Duration {
            seconds: ttl_s,
            nanos: 0,
        }),
        saga_id: String::new(),
        note: String::new(),
    }
}

pub async fn hold(client: &mut Client, op: &str) -> pb::Hold {
    client
        .get_hold(pb::GetHoldRequest {
            operation_id: op.into(),
        })
        .await
        .expect("hold")
        .into_inner()
        .hold
        .expect("hold in the answer")
}

/// Every journal entry of `user`, newest first.
pub async fn all_transactions(client: &mut Client, user: &str) -> Vec<pb::Transaction> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_transactions(pb::ListTransactionsRequest {
                user_id: user.into(),
                page_size: 500,
                page_token,
            })
            .await
            .expect("transactions")
            .into_inner();
        all.extend(page.transactions);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// The ErrorInfo reason of a refusal ("" if it has none).
pub fn reason(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
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
