//! `ovation audit`: proves I1–I6 on a live suite from the three services' own data, read
//! through their gRPC APIs (admin reads; no database is touched).
//!
//! - I1, I2: each ledger's summary (wallet coins, payout diamonds): sums to zero, every
//!   entry balanced, no negative balance. Always the whole ledgers (one cheap summary each).
//! - I3: every terminal saga moved coins and diamonds together or not at all: COMPLETED
//!   has its debit (not refunded) and its credit; COMPENSATED has its debit fully refunded
//!   and no credit; REJECTED has neither.
//! - I4: no operation twice: at most one debit and one credit per saga (their ids are the
//!   saga id), and no debit or credit without a saga.
//! - I5: coins debited for completed gifts = coins gifting recorded for them (less coins an
//!   admin's gift reversal returned); diamonds credited = Σ floor(coins × recorded share /
//!   10000).
//! - I6: each clawback took floor(coins attributed × the credit's recorded share / 10000)
//!   diamonds, split into pending + available + debt, and no credit lost more coins than
//!   it had; wallet's answered clawback orders (reversed purchases) and gifting's done gift
//!   reversals are payout's clawbacks with the same figures, and payout has none nobody
//!   ordered; every creator's lifetime = pending + available + held + paid out; no payout
//!   was sent to a creator in debt. Clawbacks and orders are read whole (they are rare);
//!   the gift reversals judged are the window's sagas'.
//!
//! # Time windows
//!
//! `--since` / `--until` (RFC 3339) audit the sagas created (by gifting's clock) in
//! `[since, until)`; either may be left out, and with neither the audit covers everything.
//! Adjacent windows (`--until T`, then `--since T`) audit every saga exactly once.
//!
//! - A window's sagas are matched to their debits and credits by operation id (= saga id).
//!   Debits and credits are posted after their saga is recorded, so they are read from
//!   `[since − SLACK, until + SLACK)` ([`SLACK_MS`]: 15 min); the lower slack absorbs
//!   clock skew between the services, the upper one the saga's own duration. A window saga
//!   still without a debit or credit after that read (one that took longer: retried by an
//!   operator, a long outage) is looked up by operation id, so the slack decides how much
//!   is read, never the verdict.
//! - Orphans (I4): each debit and credit is checked once, by the window its own creation
//!   time falls in: one created in `[since, until)` that is no window saga's must be a
//!   saga gifting knows (looked up by id; those are the sagas created just before `since`,
//!   audited with their own window), or it is an orphan. Debits and credits read in the
//!   slack and matching no window saga belong to neighbouring windows and are ignored.
//! - A saga near the end of the window whose steps ran after `until` is audited whole in
//!   this window; a saga still PENDING (or NEEDS_OPERATOR) is noted, not judged: audit the
//!   window again once it has ended.
//!
//! Limits: memory holds the window's sagas and the debits and credits created within the
//! slack around it (a few hundred bytes each); pages of 500. Wallet filters debits by time
//! (`ListDebitsRequest.start_time/end_time`); ListSagas and ListCredits have no time filter
//! yet, so their pages are read oldest first, skipping rows before the window (not kept)
//! and stopping at its end.

mod checks;
mod clawbacks;
mod facts;
mod fetch;
#[cfg(test)]
mod fixtures;
mod report;
mod window;

use std::error::Error;
use std::path::PathBuf;

use ovation_auth::dev::existing_dev_keys;
use ovation_auth::{Role, Signer};

pub use checks::diamonds_for;
use checks::{check_gifts, check_ledger};
use clawbacks::check_clawbacks;
use fetch::Suite;
use report::Report;
use window::{Window, WindowArgs};

/// The addresses of the services the audit reads (`ovation bench` takes them too).
#[derive(clap::Args, Debug, Clone)]
pub struct Addresses {
    /// Wallet address.
    #[arg(
        long,
        env = "OVATION_WALLET_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub wallet_url: String,
    /// Payout address.
    #[arg(
        long,
        env = "OVATION_PAYOUT_URL",
        default_value = "http://127.0.0.1:50054"
    )]
    pub payout_url: String,
    /// Gifting address.
    #[arg(
        long,
        env = "OVATION_GIFTING_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    pub gifting_url: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct AuditArgs {
    #[command(flatten)]
    pub addresses: Addresses,
    /// An admin token; without one, one is minted with the dev key of `--data-dir`.
    #[arg(long, env = "OVATION_ADMIN_TOKEN")]
    pub token: Option<String>,
    /// The data directory of the `ovation up` to audit (its dev key mints the token).
    #[arg(long, env = "OVATION_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
}

/// `ovation audit`'s command line: the suite and the window.
#[derive(clap::Args, Debug, Clone)]
pub struct AuditCommand {
    #[command(flatten)]
    pub suite: AuditArgs,
    #[command(flatten)]
    pub window: WindowArgs,
}

/// Runs the audit on everything (as `ovation bench` does); `Ok(false)` on any violation.
pub async fn run(args: AuditArgs) -> Result<bool, Box<dyn Error>> {
    run_window(args, Window::EVERYTHING).await
}

/// Runs `ovation audit` as its command line says.
pub async fn run_command(command: AuditCommand) -> Result<bool, Box<dyn Error>> {
    let window = Window::new(&command.window)?;
    run_window(command.suite, window).await
}

/// Runs the audit of `window`; prints what it checked; `Ok(false)` on any violation.
pub async fn run_window(args: AuditArgs, window: Window) -> Result<bool, Box<dyn Error>> {
    println!("audit window: {}", window.describe());
    let token = admin_token(&args)?;
    let suite = Suite::connect(&args.addresses, &token).await?;
    let mut report = Report::default();
    let (ledgers, creators) = suite.ledgers().await?;
    for ledger in ledgers {
        check_ledger(&ledger, &mut report);
    }
    let facts = suite.facts(&window, &mut report).await?;
    check_gifts(&window, &facts, &mut report);
    let evidence = suite.clawback_evidence(creators, &mut report).await?;
    let sagas: Vec<_> = facts.window_sagas(&window).collect();
    check_clawbacks(&evidence, &sagas, window.is_everything(), &mut report);
    report.print();
    Ok(report.is_clean())
}

/// `--token`, or one minted with the dev key of `--data-dir`.
fn admin_token(args: &AuditArgs) -> Result<String, Box<dyn Error>> {
    if let Some(token) = &args.token {
        return Ok(token.clone());
    }
    // Never create a key here: a fresh one signs tokens no running suite accepts.
    let keys = existing_dev_keys(&args.data_dir)
        .map_err(|e| format!("{e}, or an admin token with --token"))?;
    Ok(Signer::from_keys_file(&keys, &[Role::Admin])?.mint("ovation-audit", &[Role::Admin], 600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_audit_without_a_dev_key_says_so_and_creates_none() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let data_dir = std::env::temp_dir().join(format!("ovation-audit-{nanos}"));
        let args = AuditArgs {
            addresses: Addresses {
                wallet_url: "http://127.0.0.1:1".into(),
                payout_url: "http://127.0.0.1:1".into(),
                gifting_url: "http://127.0.0.1:1".into(),
            },
            token: None,
            data_dir: data_dir.clone(),
        };
        let window = Window::new(&WindowArgs::default()).unwrap();
        let refused = run_window(args, window).await.unwrap_err().to_string();
        assert!(refused.contains("no dev key found"), "{refused}");
        assert!(refused.contains("--data-dir"), "{refused}");
        assert!(refused.contains("--token"), "{refused}");
        assert!(
            !data_dir.exists(),
            "a read-only command created {data_dir:?}"
        );
    }
}
