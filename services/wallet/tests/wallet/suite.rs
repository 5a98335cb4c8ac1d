//! A catalog and a wallet on loopback, each on a test database (and, for the clawback
//! tests, a payout service the wallet delivers to), clients for the roles the tests play,
//! and the wallet's requests and reads the tests share.

use std::net::SocketAddr;
use std::sync::Arc;

use ovation_auth::Role;
use ovation_proto::payout::payout_service_client::PayoutServiceClient;
use ovation_proto::wallet as pb;
use ovation_proto::wallet::wallet_service_client::WalletServiceClient;
use ovation_server::peer::PayoutPeerArgs;
use ovation_testkit::services::{
    catalog_config, payout_config, start_catalog, start_payout, start_wallet, wallet_config,
};
use ovation_testkit::{Bearer, PayoutClient, Running, TestDatabase, WalletClient, free_addr};
use ovation_types::Clock;
use ovation_wallet::WalletSettings;
use ovation_wallet::domain::PaymentProviderKind;
use ovation_wallet::payment::SandboxProvider;
use ovation_wallet::payment::app_store::AppStore;
use ovation_wallet::payment::stripe::StripeProvider;
use ovation_webhooks::stripe_signature::{Secrets, Verifier};

pub struct Suite {
    catalog: Running,
    /// None only while it restarts.
    wallet: Option<Running>,
    pub sandbox: Arc<SandboxProvider>,
    _catalog_db: TestDatabase,
    pub wallet_db_url: String,
    pub backend: &'static str,
    /// The wallet's clock (the system's unless the test moves time).
    pub clock: Clock,
    /// The payout service the wallet delivers clawback orders to, when the test has one.
    payout: Option<PayoutSlot>,
    stripe: Option<StripeOptions>,
    app_store: Option<AppStore>,
    /// Where the wallet receives provider webhooks (when Stripe is configured).
    webhook_addr: SocketAddr,
}

/// A payout service on a fixed address and database, so it can be stopped and started
/// again where the wallet expects it.
struct PayoutSlot {
    addr: SocketAddr,
    db: TestDatabase,
    running: Option<Running>,
}

/// What a suite starts besides the defaults.
#[derive(Clone, Debug, Default)]
pub struct SuiteOptions {
    pub settings: WalletSettings,
    /// `None`: the system clock.
    pub clock: Option<Clock>,
    /// Start a real payout service and deliver clawback orders to it.
    pub payout: bool,
    /// Take card payments through Stripe (an in-test server standing for it) and receive
    /// its webhooks on [`Suite::webhook_url`].
    pub stripe: Option<StripeOptions>,
    /// Redeem App Store purchases (and receive its notifications on the webhook port).
    pub app_store: Option<AppStore>,
}

/// Where the suite's wallet finds "Stripe" and how it verifies Stripe's webhooks.
#[derive(Clone, Debug)]
pub struct StripeOptions {
    pub api_base: String,
    pub secret_key: String,
    pub webhook_secret: String,
    pub request_timeout_ms: u64,
}

impl Suite {
    pub async fn start(wallet_db: &TestDatabase) -> Suite {
        Self::start_with(wallet_db, WalletSettings::default()).await
    }

    pub async fn start_with(wallet_db: &TestDatabase, settings: WalletSettings) -> Suite {
        Self::start_custom(
            wallet_db,
            SuiteOptions {
                settings,
                ..SuiteOptions::default()
            },
        )
        .await
    }

    pub async fn start_custom(wallet_db: &TestDatabase, options: SuiteOptions) -> Suite {
        let catalog_db = TestDatabase::sqlite();
        let catalog = start_catalog(catalog_config(catalog_db.url(), true)).await;
        let sandbox = Arc::new(SandboxProvider::new());
        let payout = if options.payout {
            let db = match wallet_db.backend() {
                "postgres" => TestDatabase::postgres()
                    .await
                    .expect("PostgreSQL is configured: the wallet's database is on it"),
                _ => TestDatabase::sqlite(),
            };
            Some(PayoutSlot {
                addr: free_addr(),
                db,
                running: None,
            })
        } else {
            None
        };
        let mut suite = Suite {
            catalog,
            wallet: None,
            sandbox,
            _catalog_db: catalog_db,
            wallet_db_url: wallet_db.url().to_owned(),
            backend: wallet_db.backend(),
            clock: options.clock.unwrap_or_default(),
            payout,
            stripe: options.stripe,
            app_store: options.app_store,
            webhook_addr: free_addr(),
        };
        if suite.payout.is_some() {
            suite.start_payout().await;
        }
        suite.start_wallet(options.settings).await;
        suite
    }

    async fn start_wallet(&mut self, settings: WalletSettings) {
        let mut config = wallet_config(
            &self.wallet_db_url,
            &self.catalog.endpoint(),
            settings,
            self.sandbox.clone(),
        );
        config.clock = self.clock.clone();
        if let Some(stripe) = &self.stripe {
            let client = StripeProvider::new(
                &stripe.api_base,
                stripe.secret_key.clone(),
                std::time::Duration::from_millis(stripe.request_timeout_ms),
                None,
            )
            .expect("the Stripe client builds");
            let secrets = Secrets::new([stripe.webhook_secret.clone()]).expect("a secret");
            config.providers = config
                .providers
                .with(PaymentProviderKind::Stripe, Arc::new(client))
                .with_stripe_webhook(Verifier::new(secrets));
            config.webhook_addr = Some(self.webhook_addr);
        }
        if let Some(app_store) = &self.app_store {
            config.providers = config.providers.with_app_store(app_store.clone());
            config.webhook_addr = Some(self.webhook_addr);
        }
        if let Some(payout) = &self.payout {
            config.payout = PayoutPeerArgs::plaintext(format!("http://{}", payout.addr));
        }
        self.wallet = Some(start_wallet(config).await);
    }

    /// Starts payout (again) on its address and database.
    pub async fn start_payout(&mut self) {
        let catalog = self.catalog.endpoint();
        let slot = self
            .payout
            .as_mut()
            .expect("the suite has a payout service");
        assert!(slot.running.is_none(), "payout is already running");
        let provider = Arc::new(ovation_payout::provider::SandboxProvider::in_memory());
        let mut config = payout_config(slot.db.url(), &catalog, provider);
        config.server.listen_addr = slot.addr;
        slot.running = Some(start_payout(config).await);
    }

    /// Stops payout; its address and database stay for [`Suite::start_payout`].
    pub async fn stop_payout(&mut self) {
        let slot = self
            .payout
            .as_mut()
            .expect("the suite has a payout service");
        let running = slot.running.take().expect("payout is running");
        running.stop().await.expect("payout stops");
    }

    /// A client of payout, presenting `bearer`.
    pub async fn payout(&self, bearer: Bearer) -> PayoutClient {
        let slot = self
            .payout
            .as_ref()
            .expect("the suite has a payout service");
        let running = slot.running.as_ref().expect("payout is running");
        PayoutServiceClient::with_interceptor(running.channel().await, bearer)
    }

    /// Stops the wallet and starts another on its database with `settings` and the same
    /// payment provider: a crash and a restart, as far as the wallet's data can tell.
    pub async fn restart_wallet(&mut self, settings: WalletSettings) {
        if let Some(wallet) = self.wallet.take() {
            wallet.stop().await.expect("wallet stops");
        }
        self.start_wallet(settings).await;
    }

    /// The wallet's Stripe webhook URL.
    pub fn webhook_url(&self) -> String {
        format!(
            "http://{}{}",
            self.webhook_addr,
            ovation_wallet::webhooks::STRIPE_PATH
        )
    }

    /// Where the wallet receives App Store Server Notifications.
    pub fn app_store_webhook_url(&self) -> String {
        format!(
            "http://{}{}",
            self.webhook_addr,
            ovation_wallet::webhooks::APP_STORE_PATH
        )
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
        if let Some(running) = self.payout.and_then(|p| p.running) {
            running.stop().await.expect("payout stops");
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
        payment_method: None,
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
