//! A catalog and a wallet on loopback, each on a test database, clients for the roles the
//! tests play, and the wallet's requests and reads the tests share.

use std::sync::Arc;

use ovation_auth::Role;
use ovation_proto::wallet as pb;
use ovation_proto::wallet::wallet_service_client::WalletServiceClient;
use ovation_testkit::services::{catalog_config, start_catalog, start_wallet, wallet_config};
use ovation_testkit::{Bearer, Running, TestDatabase, WalletClient};
use ovation_wallet::WalletSettings;
use ovation_wallet::payment::SandboxProvider;

pub struct Suite {
    catalog: Running,
    /// None only while it restarts.
    wallet: Option<Running>,
    pub sandbox: Arc<SandboxProvider>,
    _catalog_db: TestDatabase,
    pub wallet_db_url: String,
    pub backend: &'static str,
}

impl Suite {
    pub async fn start(wallet_db: &TestDatabase) -> Suite {
        Self::start_with(wallet_db, WalletSettings::default()).await
    }

    pub async fn start_with(wallet_db: &TestDatabase, settings: WalletSettings) -> Suite {
        let catalog_db = TestDatabase::sqlite();
        let catalog = start_catalog(catalog_config(catalog_db.url(), true)).await;
        let sandbox = Arc::new(SandboxProvider::new());
        let mut suite = Suite {
            catalog,
            wallet: None,
            sandbox,
            _catalog_db: catalog_db,
            wallet_db_url: wallet_db.url().to_owned(),
            backend: wallet_db.backend(),
        };
        suite.start_wallet(settings).await;
        suite
    }

    async fn start_wallet(&mut self, settings: WalletSettings) {
        let config = wallet_config(
            &self.wallet_db_url,
            &self.catalog.endpoint(),
            settings,
            self.sandbox.clone(),
        );
        self.wallet = Some(start_wallet(config).await);
    }

    /// Stops the wallet and starts another on its database with `settings` and the same
    /// payment provider: a crash and a restart, as far as the wallet's data can tell.
    pub async fn restart_wallet(&mut self, settings: WalletSettings) {
        if let Some(wallet) = self.wallet.take() {
            wallet.stop().await.expect("wallet stops");
        }
        self.start_wallet(settings).await;
    }

    /// A client of the wallet, presenting `bearer`.
    pub async fn client(&self, bearer: Bearer) -> WalletClient {
        let wallet = self.wallet.as_ref().expect("the wallet runs");
        WalletServiceClient::with_interceptor(wallet.channel().await, bearer)
    }

    pub async fn user(&self, user: &str) -> WalletClient {
        self.client(Bearer::viewer(user)).await
    }

    pub async fn gifting(&self) -> WalletClient {
        self.client(Bearer::role("gifting", Role::GiftingService))
            .await
    }

    pub async fn admin(&self) -> WalletClient {
        self.client(Bearer::admin()).await
    }

    pub async fn stop(self) {
        if let Some(wallet) = self.wallet {
            wallet.stop().await.expect("wallet stops");
        }
        self.catalog.stop().await.expect("catalog stops");
    }
}

pub async fn open_account(client: &mut WalletClient, user: &str) {
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
    client: &mut WalletClient,
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
pub async fn reverse(
    admin: &mut WalletClient,
    request: pb::ReversePurchaseRequest,
) -> pb::Purchase {
    admin
        .reverse_purchase(request)
        .await
        .expect("reversal answers")
        .into_inner()
        .purchase
        .expect("purchase in the answer")
}

pub async fn account(client: &mut WalletClient, user: &str) -> pb::Account {
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

pub async fn balance(client: &mut WalletClient, user: &str) -> pb::Balance {
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

pub async fn hold(client: &mut WalletClient, op: &str) -> pb::Hold {
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
pub async fn all_transactions(client: &mut WalletClient, user: &str) -> Vec<pb::Transaction> {
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

pub async fn summary(admin: &mut WalletClient) -> pb::GetLedgerSummaryResponse {
    admin
        .get_ledger_summary(pb::GetLedgerSummaryRequest {})
        .await
        .expect("summary")
        .into_inner()
}

/// I1 and I2 hold: every entry balanced, the ledger sums to zero, no negative balance.
pub async fn assert_ledger_sound(admin: &mut WalletClient, context: &str) {
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
