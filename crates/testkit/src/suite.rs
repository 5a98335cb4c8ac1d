//! The four services in this process, each on a database of its own of one backend, with
//! clients for the roles tests play. Wallet, payout and gifting can be stopped and started
//! again on their address and database, so tests can take a peer away mid-saga.

use std::net::SocketAddr;
use std::sync::Arc;

use ovation_gifting::GiftingSettings;
use ovation_wallet::WalletSettings;
use tonic::transport::Channel;

use crate::clients::SuiteClients;
use ovation_server::peer::PayoutPeerArgs;

use crate::services::{
    GiftingPeers, catalog_config, gifting_config, payout_config, start_catalog, start_gifting,
    start_payout, start_wallet, wallet_config,
};
use crate::{Running, TestDatabase, free_addr};

/// One of the four services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Catalog,
    Wallet,
    Payout,
    Gifting,
}

impl Service {
    const ALL: [Service; 4] = [
        Service::Catalog,
        Service::Wallet,
        Service::Payout,
        Service::Gifting,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// A service's place in the suite: its address and database stay; it runs or not.
struct Slot {
    addr: SocketAddr,
    db: TestDatabase,
    running: Option<Running>,
}

/// Catalog (seeded with the demo economy), wallet, payout and gifting on loopback.
pub struct InProcessSuite {
    /// Clients of the four services; they reach a restarted service too.
    pub clients: SuiteClients,
    /// "sqlite" or "postgres", for test output.
    pub backend: &'static str,
    gifting_settings: GiftingSettings,
    /// Payout's clock (the system's unless a test set a manual one).
    payout_clock: ovation_types::Clock,
    slots: [Slot; 4],
}

impl InProcessSuite {
    /// Starts the four services; `gifting_db` is gifting's database and the others get
    /// fresh ones of the same backend.
    pub async fn start(gifting_db: TestDatabase, settings: GiftingSettings) -> InProcessSuite {
        Self::start_with_payout_clock(gifting_db, settings, ovation_types::Clock::system()).await
    }

    /// [`InProcessSuite::start`], with payout on `payout_clock` (a manual clock lets a test
    /// move diamond maturity and payout rules forward without sleeping).
    pub async fn start_with_payout_clock(
        gifting_db: TestDatabase,
        settings: GiftingSettings,
        payout_clock: ovation_types::Clock,
    ) -> InProcessSuite {
        let backend = gifting_db.backend();
        let catalog_db = database_like(&gifting_db).await;
        let wallet_db = database_like(&gifting_db).await;
        let payout_db = database_like(&gifting_db).await;
        let slot = |db| Slot {
            addr: free_addr(),
            db,
            running: None,
        };
        let slots = [
            slot(catalog_db),
            slot(wallet_db),
            slot(payout_db),
            slot(gifting_db),
        ];
        let url = |slot: &Slot| format!("http://{}", slot.addr);
        let mut suite = InProcessSuite {
            clients: SuiteClients {
                catalog: url(&slots[0]),
                wallet: url(&slots[1]),
                payout: url(&slots[2]),
                gifting: url(&slots[3]),
            },
            backend,
            gifting_settings: settings,
            payout_clock,
            slots,
        };
        for service in Service::ALL {
            suite.start_service(service).await;
        }
        suite
    }

    /// Where `service` listens (the same across its restarts).
    pub fn addr(&self, service: Service) -> SocketAddr {
        self.slots[service.index()].addr
    }

    /// `http://` and [`InProcessSuite::addr`].
    pub fn endpoint(&self, service: Service) -> String {
        format!("http://{}", self.addr(service))
    }

    /// A channel to `service` ([`crate::channel`]).
    pub async fn channel(&self, service: Service) -> Channel {
        crate::clients::channel(&self.endpoint(service)).await
    }

    /// `service`'s database.
    pub fn db(&self, service: Service) -> &TestDatabase {
        &self.slots[service.index()].db
    }

    /// Stops `service` (it drains and ends); its address and database stay for a restart.
    pub async fn stop_service(&mut self, service: Service) {
        let running = self.slots[service.index()]
            .running
            .take()
            .unwrap_or_else(|| panic!("{service:?} is not running"));
        running
            .stop()
            .await
            .unwrap_or_else(|e| panic!("{service:?} did not stop cleanly: {e}"));
    }

    /// Starts `service` on its address and database, as it was configured first.
    pub async fn start_service(&mut self, service: Service) {
        let slot = &self.slots[service.index()];
        assert!(slot.running.is_none(), "{service:?} is already running");
        let (addr, db_url) = (slot.addr, slot.db.url().to_owned());
        let catalog = self.clients.catalog.clone();
        let running = match service {
            Service::Catalog => {
                let mut config = catalog_config(&db_url, true);
                config.server.listen_addr = addr;
                start_catalog(config).await
            }
            Service::Wallet => {
                let provider = Arc::new(ovation_wallet::payment::SandboxProvider::new());
                let settings = WalletSettings::default();
                let mut config = wallet_config(&db_url, &catalog, settings, provider);
                config.server.listen_addr = addr;
                // Reversed purchases' clawback orders go to this suite's payout.
                config.payout = PayoutPeerArgs::plaintext(self.clients.payout.clone());
                start_wallet(config).await
            }
            Service::Payout => {
                let provider = Arc::new(ovation_payout::provider::SandboxProvider::in_memory());
                let mut config = payout_config(&db_url, &catalog, provider);
                config.server.listen_addr = addr;
                config.clock = self.payout_clock.clone();
                start_payout(config).await
            }
            Service::Gifting => {
                let peers = GiftingPeers {
                    catalog,
                    wallet: self.clients.wallet.clone(),
                    payout: self.clients.payout.clone(),
                };
                let settings = self.gifting_settings.clone();
                let mut config = gifting_config(&db_url, &peers, settings);
                config.server.listen_addr = addr;
                start_gifting(config).await
            }
        };
        self.slots[service.index()].running = Some(running);
    }

    /// Stops every service still running, gifting first.
    pub async fn stop(mut self) {
        for service in Service::ALL.into_iter().rev() {
            if self.slots[service.index()].running.is_some() {
                self.stop_service(service).await;
            }
        }
    }

    /// [`SuiteClients::funded_viewer`]; a refusal fails the test.
    pub async fn funded_viewer(&self, user: &str, package: &str) -> i64 {
        self.clients
            .funded_viewer(user, package)
            .await
            .unwrap_or_else(|e| panic!("[{}] funding {user} with {package}: {e}", self.backend))
    }

    /// [`SuiteClients::register_creator`]; a refusal fails the test.
    pub async fn creator(&self, id: &str) {
        self.clients
            .register_creator(id)
            .await
            .unwrap_or_else(|e| panic!("[{}] registering creator {id}: {e}", self.backend))
    }

    /// [`SuiteClients::coins`]; a refusal fails the test.
    pub async fn coins(&self, user: &str) -> i64 {
        self.clients
            .coins(user)
            .await
            .unwrap_or_else(|e| panic!("[{}] {user}'s coins: {e}", self.backend))
    }

    /// [`SuiteClients::diamonds`]; a refusal fails the test.
    pub async fn diamonds(&self, id: &str) -> i64 {
        self.clients
            .diamonds(id)
            .await
            .unwrap_or_else(|e| panic!("[{}] {id}'s diamonds: {e}", self.backend))
    }
}

/// A fresh database of the same backend as `like`.
async fn database_like(like: &TestDatabase) -> TestDatabase {
    match like.backend() {
        "postgres" => TestDatabase::postgres()
            .await
            .expect("PostgreSQL is configured: `like` is on it"),
        _ => TestDatabase::sqlite(),
    }
}
