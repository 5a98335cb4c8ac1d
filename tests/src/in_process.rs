//! The four services in this process, as the README walkthrough, the bench and the
//! every-RPC credentials test run them: each on a fresh SQLite database, gifting with its
//! shipped settings. The suite itself is testkit's [`InProcessSuite`], which gifting's own
//! tests share.

use ovation_gifting::GiftingSettings;
use ovation_testkit::{InProcessSuite, TestDatabase};

/// Starts catalog, wallet, payout and gifting on loopback.
pub async fn start() -> InProcessSuite {
    InProcessSuite::start(TestDatabase::sqlite(), GiftingSettings::default()).await
}
