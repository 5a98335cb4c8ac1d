//! `ovation audit`: proves I1–I5 on a live suite from the three services' own data, read
//! through their gRPC APIs (admin reads; no database is touched).
//!
//! - I1, I2: each ledger's summary (wallet coins, payout diamonds): sums to zero, every
//!   entry balanced, no negative balance.
//! - I3: every terminal saga moved coins and diamonds together or not at all: COMPLETED
//!   has its debit (not refunded) and its credit; COMPENSATED has its debit fully refunded
//!   and no credit; REJECTED has neither.
//! - I4: no operation twice: at most one debit and one credit per saga (their ids are the
//!   saga id), and no debit or credit without a saga.
//! - I5: coins debited for completed gifts = coins gifting recorded for them; diamonds
//!   credited = Σ floor(coins × recorded share / 10000).
//!
//! Limits: it holds every saga, debit and credit in memory (a few hundred bytes each);
//! pages of 500.

use std::collections::HashMap;
use std::path::PathBuf;

use ovation_auth::dev::ensure_dev_keys;
use ovation_auth::{Role, Signer};
use ovation_proto::gifting::gifting_service_client::GiftingServiceClient;
use ovation_proto::payout::payout_service_client::PayoutServiceClient;
use ovation_proto::wallet::wallet_service_client::WalletServiceClient;
use ovation_proto::{gifting as gpb, payout as ppb, wallet as wpb};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

const PAGE: i32 = 500;

#[derive(clap::Args, Debug, Clone)]
pub struct AuditArgs {
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
    /// An admin token; without one, one is minted with the dev key of `--data-dir`.
    #[arg(long, env = "OVATION_ADMIN_TOKEN")]
    pub token: Option<String>,
    /// The data directory of the `ovation up` to audit (its dev key mints the token).
    #[arg(long, env = "OVATION_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
}

/// A saga as the audit needs it.
#[derive(Clone, Debug)]
pub struct SagaFacts {
    pub saga_id: String,
    pub status: gpb::SagaStatus,
    pub total_coins: i64,
    pub share_bps: i32,
    pub diamonds_recorded: i64,
}

#[derive(Clone, Debug)]
pub struct DebitFacts {
    pub operation_id: String,
    pub coins: i64,
    pub refunded: i64,
}

#[derive(Clone, Debug)]
pub struct CreditFacts {
    pub operation_id: String,
    pub coins: i64,
    pub share_bps: i32,
    pub diamonds: i64,
}

/// What the audit found.
#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<String>,
    pub violations: Vec<String>,
    pub notes: Vec<String>,
}

impl Report {
    fn check(&mut self, ok: bool, what: String, violation: impl FnOnce() -> String) {
        if ok {
            self.checks.push(what);
        } else {
            self.violations.push(violation());
        }
    }
}

fn share(coins: i64, bps: i32) -> i64 {
    (i128::from(coins) * i128::from(bps) / 10_000) as i64
}

/// The I3–I5 checks on the services' data (pure: unit-tested below).
pub fn check_gifts(
    sagas: &[SagaFacts],
    debits: &[DebitFacts],
    credits: &[CreditFacts],
    report: &mut Report,
) {
    let mut debit_by_op: HashMap<&str, &DebitFacts> = HashMap::new();
    let mut duplicates = 0;
    for d in debits {
        if debit_by_op.insert(&d.operation_id, d).is_some() {
            duplicates += 1;
        }
    }
    let mut credit_by_op: HashMap<&str, &CreditFacts> = HashMap::new();
    for c in credits {
        if credit_by_op.insert(&c.operation_id, c).is_some() {
            duplicates += 1;
        }
    }
    report.check(
        duplicates == 0,
        "I4: one debit and one credit per operation id".into(),
        || format!("I4: {duplicates} operation ids appear twice"),
    );

    let mut i3_bad = Vec::new();
    let (mut coins_recorded, mut coins_debited, mut diamonds_expected, mut diamonds_credited) =
        (0i64, 0i64, 0i64, 0i64);
    let mut terminal = 0;
    let mut unsettled = 0;
    for s in sagas {
        let debit = debit_by_op.get(s.saga_id.as_str());
        let credit = credit_by_op.get(s.saga_id.as_str());
        match s.status {
            gpb::SagaStatus::Completed => {
                terminal += 1;
                let ok = debit.is_some_and(|d| d.coins == s.total_coins && d.refunded == 0)
                    && credit.is_some_and(|c| c.coins == s.total_coins);
                if !ok {
                    i3_bad.push(format!(
                        "{} COMPLETED but debit {debit:?} credit {credit:?}",
                        s.saga_id
                    ));
                }
                coins_recorded += s.total_coins;
                coins_debited += debit.map_or(0, |d| d.coins - d.refunded);
                diamonds_expected += share(s.total_coins, s.share_bps);
                diamonds_credited += credit.map_or(0, |c| c.diamonds);
                if s.diamonds_recorded != share(s.total_coins, s.share_bps) {
                    i3_bad.push(format!(
                        "{} recorded {} diamonds, expected {}",
                        s.saga_id,
                        s.diamonds_recorded,
                        share(s.total_coins, s.share_bps)
                    ));
                }
            }
            gpb::SagaStatus::Compensated => {
                terminal += 1;
                let ok = debit.is_some_and(|d| d.refunded == d.coins) && credit.is_none();
                if !ok {
                    i3_bad.push(format!(
                        "{} COMPENSATED but debit {debit:?} credit {credit:?}",
                        s.saga_id
                    ));
                }
            }
            gpb::SagaStatus::Rejected => {
                terminal += 1;
                if debit.is_some() || credit.is_some() {
                    i3_bad.push(format!(
                        "{} REJECTED but debit {debit:?} credit {credit:?}",
                        s.saga_id
                    ));
                }
            }
            _ => unsettled += 1,
        }
    }
    let n = i3_bad.len();
    report.check(
        n == 0,
        format!("I3: {terminal} terminal sagas moved coins and diamonds together or not at all"),
        || {
            format!(
                "I3: {n} sagas half done: {}",
                i3_bad
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        },
    );
    if unsettled > 0 {
        report.notes.push(format!("{unsettled} sagas not terminal yet (PENDING or NEEDS_OPERATOR): I3 applies once they finish"));
    }

    let saga_ids: std::collections::HashSet<&str> =
        sagas.iter().map(|s| s.saga_id.as_str()).collect();
    let orphan_debits = debits
        .iter()
        .filter(|d| !saga_ids.contains(d.operation_id.as_str()))
        .count();
    let orphan_credits = credits
        .iter()
        .filter(|c| !saga_ids.contains(c.operation_id.as_str()))
        .count();
    report.check(
        orphan_debits == 0 && orphan_credits == 0,
        "I4: every debit and credit belongs to a saga".into(),
        || format!("I4: {orphan_debits} debits and {orphan_credits} credits belong to no saga"),
    );
    report.check(
        coins_recorded == coins_debited,
        format!("I5: coins debited for completed gifts = coins gifting recorded ({coins_recorded})"),
        || format!("I5: gifting recorded {coins_recorded} coins for completed gifts, wallet debited {coins_debited}"),
    );
    report.check(
        diamonds_expected == diamonds_credited,
        format!("I5: diamonds credited = Σ floor(coins × share / 10000) ({diamonds_expected})"),
        || format!("I5: expected {diamonds_expected} diamonds from the recorded shares, payout credited {diamonds_credited}"),
    );
    for c in credits {
        if c.diamonds != share(c.coins, c.share_bps) {
            report.violations.push(format!(
                "I5: credit {} has {} diamonds for {} coins at {} bps",
                c.operation_id, c.diamonds, c.coins, c.share_bps
            ));
        }
    }
}

#[derive(Clone)]
struct Admin(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Admin {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

async fn channel(url: &str) -> Result<Channel, Box<dyn std::error::Error>> {
    Ok(Channel::from_shared(url.to_owned())?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30))
        .connect()
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?)
}

/// Runs the audit; prints what it checked; `Ok(false)` on any violation.
pub async fn run(args: AuditArgs) -> Result<bool, Box<dyn std::error::Error>> {
    let token = match args.token {
        Some(t) => t,
        None => Signer::from_keys_file(&ensure_dev_keys(&args.data_dir)?)?.mint(
            "ovation-audit",
            &[Role::Admin],
            600,
        ),
    };
    let admin = Admin(format!("Bearer {token}").parse()?);
    let mut wallet =
        WalletServiceClient::with_interceptor(channel(&args.wallet_url).await?, admin.clone());
    let mut payout =
        PayoutServiceClient::with_interceptor(channel(&args.payout_url).await?, admin.clone());
    let mut gifting =
        GiftingServiceClient::with_interceptor(channel(&args.gifting_url).await?, admin);

    let mut report = Report::default();
    let coins = wallet
        .get_ledger_summary(wpb::GetLedgerSummaryRequest {})
        .await?
        .into_inner();
    report.check(
        coins.total_coins == 0 && coins.unbalanced_entry_count == 0,
        format!(
            "I1 coins: {} journal entries, every one balanced, the ledger sums to 0",
            coins.journal_entry_count
        ),
        || {
            format!(
                "I1 coins: ledger sums to {} with {} unbalanced entries",
                coins.total_coins, coins.unbalanced_entry_count
            )
        },
    );
    report.check(
        coins.negative_balance_count == 0,
        "I2 coins: no user balance is negative".into(),
        || {
            format!(
                "I2 coins: {} negative balances",
                coins.negative_balance_count
            )
        },
    );
    let diamonds = payout
        .get_ledger_summary(ppb::GetLedgerSummaryRequest {})
        .await?
        .into_inner();
    report.check(
        diamonds.total_diamonds == 0 && diamonds.unbalanced_entry_count == 0,
        format!(
            "I1 diamonds: {} journal entries, every one balanced, the ledger sums to 0",
            diamonds.journal_entry_count
        ),
        || {
            format!(
                "I1 diamonds: ledger sums to {} with {} unbalanced entries",
                diamonds.total_diamonds, diamonds.unbalanced_entry_count
            )
        },
    );
    report.check(
        diamonds.negative_balance_count == 0,
        "I2 diamonds: no creator balance is negative".into(),
        || {
            format!(
                "I2 diamonds: {} negative balances",
                diamonds.negative_balance_count
            )
        },
    );

    let mut sagas = Vec::new();
    let mut token = String::new();
    loop {
        let page = gifting
            .list_sagas(gpb::ListSagasRequest {
                statuses: vec![],
                page_size: PAGE,
                page_token: token,
            })
            .await?
            .into_inner();
        for s in page.sagas {
            let r = s.receipt.unwrap_or_default();
            sagas.push(SagaFacts {
                saga_id: r.saga_id,
                status: gpb::SagaStatus::try_from(r.status).unwrap_or(gpb::SagaStatus::Unspecified),
                total_coins: r.total_coins,
                share_bps: r.creator_share_bps,
                diamonds_recorded: r.diamonds_credited,
            });
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut debits = Vec::new();
    let mut token = String::new();
    loop {
        let page = wallet
            .list_debits(wpb::ListDebitsRequest {
                operation_ids: vec![],
                page_size: PAGE,
                page_token: token,
            })
            .await?
            .into_inner();
        debits.extend(page.debits.into_iter().map(|d| DebitFacts {
            operation_id: d.operation_id,
            coins: d.coins,
            refunded: d.refunded_coins,
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut credits = Vec::new();
    let mut token = String::new();
    loop {
        let page = payout
            .list_credits(ppb::ListCreditsRequest {
                operation_ids: vec![],
                page_size: PAGE,
                page_token: token,
            })
            .await?
            .into_inner();
        credits.extend(page.credits.into_iter().map(|c| CreditFacts {
            operation_id: c.operation_id,
            coins: c.coins,
            share_bps: c.creator_share_bps,
            diamonds: c.diamonds,
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    report.notes.push(format!(
        "read {} sagas, {} debits, {} credits",
        sagas.len(),
        debits.len(),
        credits.len()
    ));
    check_gifts(&sagas, &debits, &credits, &mut report);

    for c in &report.checks {
        println!("ok    {c}");
    }
    for n in &report.notes {
        println!("note  {n}");
    }
    for v in &report.violations {
        println!("FAIL  {v}");
    }
    println!(
        "{}",
        if report.violations.is_empty() {
            "audit: no violation".to_string()
        } else {
            format!("audit: {} violations", report.violations.len())
        }
    );
    Ok(report.violations.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saga(id: &str, status: gpb::SagaStatus, coins: i64) -> SagaFacts {
        let diamonds = if status == gpb::SagaStatus::Completed {
            share(coins, 5_000)
        } else {
            0
        };
        SagaFacts {
            saga_id: id.into(),
            status,
            total_coins: coins,
            share_bps: 5_000,
            diamonds_recorded: diamonds,
        }
    }

    fn debit(id: &str, coins: i64, refunded: i64) -> DebitFacts {
        DebitFacts {
            operation_id: id.into(),
            coins,
            refunded,
        }
    }

    fn credit(id: &str, coins: i64) -> CreditFacts {
        CreditFacts {
            operation_id: id.into(),
            coins,
            share_bps: 5_000,
            diamonds: share(coins, 5_000),
        }
    }

    #[test]
    fn a_consistent_suite_passes() {
        let mut r = Report::default();
        check_gifts(
            &[
                saga("a", gpb::SagaStatus::Completed, 3),
                saga("b", gpb::SagaStatus::Compensated, 5),
                saga("c", gpb::SagaStatus::Rejected, 7),
            ],
            &[debit("a", 3, 0), debit("b", 5, 5)],
            &[credit("a", 3)],
            &mut r,
        );
        assert!(r.violations.is_empty(), "{:?}", r.violations);
    }

    #[test]
    fn half_done_orphaned_or_miscounted_gifts_are_violations() {
        let cases: Vec<(Vec<SagaFacts>, Vec<DebitFacts>, Vec<CreditFacts>)> = vec![
            // debited, never credited
            (
                vec![saga("a", gpb::SagaStatus::Completed, 3)],
                vec![debit("a", 3, 0)],
                vec![],
            ),
            // compensated without the refund
            (
                vec![saga("b", gpb::SagaStatus::Compensated, 5)],
                vec![debit("b", 5, 0)],
                vec![],
            ),
            // rejected but debited
            (
                vec![saga("c", gpb::SagaStatus::Rejected, 7)],
                vec![debit("c", 7, 0)],
                vec![],
            ),
            // a credit with no saga
            (vec![], vec![], vec![credit("z", 1)]),
            // a credit whose diamonds are not the share
            (
                vec![saga("d", gpb::SagaStatus::Completed, 9)],
                vec![debit("d", 9, 0)],
                vec![CreditFacts {
                    diamonds: 5,
                    ..credit("d", 9)
                }],
            ),
        ];
        for (sagas, debits, credits) in cases {
            let mut r = Report::default();
            check_gifts(&sagas, &debits, &credits, &mut r);
            assert!(
                !r.violations.is_empty(),
                "missed: {sagas:?} {debits:?} {credits:?}"
            );
        }
    }
}
