//! The four services in this process on loopback, each on a fresh SQLite database, as the
//! README walkthrough and the every-RPC auth test need them.
#![allow(dead_code)]

use std::sync::Arc;

use ovation_server::peer::{CatalogPeerArgs, IdentityArgs, PayoutPeerArgs, WalletPeerArgs};
use ovation_testkit::{Running, TestDatabase, server_config, test_keys_file};

pub struct InProcessSuite {
    pub catalog: Running,
    pub wallet: Running,
    pub payout: Running,
    pub gifting: Running,
    _dbs: Vec<TestDatabase>,
}

fn identity() -> IdentityArgs {
    IdentityArgs {
        service_keys_file: Some(test_keys_file()),
        service_token_file: None,
    }
}

impl InProcessSuite {
    pub async fn start() -> InProcessSuite {
        let dbs: Vec<TestDatabase> = (0..4).map(|_| TestDatabase::sqlite()).collect();
        let catalog_config = ovation_catalog::CatalogConfig {
            server: server_config(dbs[0].url()),
            seed_demo: true,
        };
        let catalog = Running::start(|l, s| ovation_catalog::run(catalog_config, l, s))
            .await
            .expect("catalog starts");
        let wallet_config = ovation_wallet::WalletConfig {
            server: server_config(dbs[1].url()),
            wallet: ovation_wallet::WalletSettings::default(),
            catalog: CatalogPeerArgs::plaintext(catalog.endpoint()),
            identity: identity(),
            provider: Arc::new(ovation_wallet::payment::SandboxProvider::new()),
        };
        let wallet = Running::start(|l, s| ovation_wallet::run(wallet_config, l, s))
            .await
            .expect("wallet starts");
        let payout_config = ovation_payout::PayoutConfig {
            server: server_config(dbs[2].url()),
            catalog: CatalogPeerArgs::plaintext(catalog.endpoint()),
            identity: identity(),
            provider: Arc::new(ovation_payout::provider::SandboxProvider::in_memory()),
            worker: ovation_payout::worker::WorkerConfig::FAST_TESTS,
        };
        let payout = Running::start(|l, s| ovation_payout::run(payout_config, l, s))
            .await
            .expect("payout starts");
        let gifting_config = ovation_gifting::GiftingConfig {
            server: server_config(dbs[3].url()),
            gifting: ovation_gifting::GiftingSettings::default(),
            catalog: CatalogPeerArgs::plaintext(catalog.endpoint()),
            wallet: WalletPeerArgs::plaintext(wallet.endpoint()),
            payout: PayoutPeerArgs::plaintext(payout.endpoint()),
            identity: identity(),
        };
        let gifting = Running::start(|l, s| ovation_gifting::run(gifting_config, l, s))
            .await
            .expect("gifting starts");
        InProcessSuite {
            catalog,
            wallet,
            payout,
            gifting,
            _dbs: dbs,
        }
    }

    /// (address as the README writes it, address of the service started here)
    pub fn addresses(&self) -> [(&'static str, String); 4] {
        [
            ("127.0.0.1:50051", self.wallet.addr.to_string()),
            ("127.0.0.1:50052", self.catalog.addr.to_string()),
            ("127.0.0.1:50053", self.gifting.addr.to_string()),
            ("127.0.0.1:50054", self.payout.addr.to_string()),
        ]
    }

    pub async fn stop(self) {
        self.gifting.stop().await.expect("gifting stops");
        self.payout.stop().await.expect("payout stops");
        self.wallet.stop().await.expect("wallet stops");
        self.catalog.stop().await.expect("catalog stops");
    }
}
