//! `ovation audit`: proves I1–I5 on a live suite from the three services' own data, read
//! through their gRPC APIs (admin reads; no database is touched).
//!
//! - I1, I2: each ledger's summary (wallet coins, payout diamonds): sums to zero, every
//!   entry balanced, no negative balance. Always the whole ledgers (one cheap summary each).
//! - I3: every terminal saga moved coins and diamonds together or not at all: COMPLETED
//!   has its debit (not refunded) and its credit; COMPENSATED has its debit fully refunded
//!   and no credit; REJECTED has neither.
//! - I4: no operation twice: at most one debit and one credit per saga (their ids are the
//!   saga id), and no debit or credit without a saga.
//! - I5: coins debited for completed gifts = coins gifting recorded for them; diamonds
//!   credited = Σ floor(coins × recorded share / 10000).
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

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use futures::StreamExt;
use ovation_auth::dev::existing_dev_keys;
use ovation_auth::{Role, Signer};
use ovation_proto::gifting::gifting_service_client::GiftingServiceClient;
use ovation_proto::payout::payout_service_client::PayoutServiceClient;
use ovation_proto::wallet::wallet_service_client::WalletServiceClient;
use ovation_proto::{gifting as gpb, payout as ppb, wallet as wpb};
use ovation_server::edge::to_timestamp;
use ovation_types::UnixMillis;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const PAGE: i32 = 500;
/// Most operation ids one ListDebits or ListCredits by id may name.
const IDS_PER_CALL: usize = 500;
/// Sagas looked up by id at once.
const LOOKUPS_IN_FLIGHT: usize = 16;

/// How far before `--since` and after `--until` debits and credits are read: 15 minutes.
///
/// A saga's debit and credit are posted right after it is recorded (milliseconds). With
/// gifting's default retry budget (12 attempts per step, each ≤ 5 s of step timeout plus
/// ≤ 5 s of backoff: ≤ 2 min per step, ≤ 6 min for resolve, debit and credit) and a
/// restart (10 s lease), a saga that finishes on its own has both within ~6 minutes; 15
/// minutes leaves room for that and for clock skew between the three services. Anything
/// later is looked up by operation id (see the module doc).
pub const SLACK_MS: i64 = 15 * 60 * 1_000;

/// Latest instant the services accept (9999-12-31T23:59:59.999Z).
const MILLIS_MAX: i64 = 253_402_300_799_999;

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

/// The time window of `ovation audit` (flags only: a window left in the environment
/// would silently narrow every later audit).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WindowArgs {
    /// Audit the gift sagas created at or after this instant (RFC 3339, e.g.
    /// 2025-06-01T00:00:00Z or 2025-06-01T02:00:00.250+02:00). Default: from the first.
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    pub since: Option<i64>,
    /// Audit the gift sagas created before this instant (exclusive; RFC 3339).
    /// Default: up to the last.
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    pub until: Option<i64>,
}

/// `ovation audit`'s command line: the suite and the window.
#[derive(clap::Args, Debug, Clone)]
pub struct AuditCommand {
    #[command(flatten)]
    pub suite: AuditArgs,
    #[command(flatten)]
    pub window: WindowArgs,
}

/// Parses an RFC 3339 instant (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, `T` or a
/// space, any case) into Unix milliseconds. A fraction finer than a millisecond rounds
/// up, which keeps `[since, until)` exact on the services' millisecond timestamps.
pub fn parse_rfc3339(raw: &str) -> Result<i64, String> {
    let invalid = || format!("{raw:?} is not an RFC 3339 instant (e.g. 2025-06-01T00:00:00Z)");
    let bytes = raw.as_bytes();
    let number = |from: usize, to: usize| -> Result<i64, String> {
        let digits = raw.get(from..to).ok_or_else(invalid)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        digits.parse::<i64>().map_err(|_| invalid())
    };
    let at = |i: usize, allowed: &[u8]| bytes.get(i).is_some_and(|b| allowed.contains(b));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return Err(invalid());
    }
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    let mut i = 19;
    let mut nanos = 0;
    if at(i, b".") {
        let start = i + 1;
        i = start;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start || i - start > 9 {
            return Err(invalid());
        }
        nanos = number(start, i)? * 10i64.pow(9 - (i - start) as u32);
    }
    let offset_minutes = match &raw[i..] {
        "Z" | "z" => 0,
        zone if zone.len() == 6 && at(i, b"+-") && at(i + 3, b":") => {
            let (h, m) = (number(i + 1, i + 3)?, number(i + 4, i + 6)?);
            if h > 23 || m > 59 {
                return Err(invalid());
            }
            if at(i, b"-") {
                -(h * 60 + m)
            } else {
                h * 60 + m
            }
        }
        _ => return Err(invalid()),
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(invalid()),
    };
    if !(1..=days_in_month).contains(&day) || hour > 23 || minute > 59 || second > 59 {
        return Err(invalid());
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second
        - offset_minutes * 60;
    let ms = seconds * 1_000 + (nanos + 999_999) / 1_000_000;
    if !(0..=MILLIS_MAX).contains(&ms) {
        return Err(format!("{raw:?} is not between 1970-01-01 and 9999-12-31"));
    }
    Ok(ms)
}

/// Unix milliseconds as RFC 3339 in UTC with milliseconds (`2025-06-01T00:00:00.000Z`).
pub fn format_rfc3339(ms: i64) -> String {
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1_000 % 60,
        in_day % 1_000
    )
}

// Howard Hinnant's civil-date algorithms (public domain), proleptic Gregorian, UTC.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Which sagas an audit covers (see the module doc): those created in `[since, until)`,
/// unbounded where unset; debits and credits are read `slack_ms` around that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub slack_ms: i64,
}

impl Window {
    /// Every saga, debit and credit.
    pub const EVERYTHING: Window = Window {
        since: None,
        until: None,
        slack_ms: SLACK_MS,
    };

    /// The window of the command line; `--since` must be before `--until`.
    pub fn new(args: &WindowArgs) -> Result<Window, String> {
        if let (Some(since), Some(until)) = (args.since, args.until)
            && since >= until
        {
            return Err(format!(
                "--since ({}) must be before --until ({})",
                format_rfc3339(since),
                format_rfc3339(until)
            ));
        }
        Ok(Window {
            since: args.since,
            until: args.until,
            ..Window::EVERYTHING
        })
    }

    pub fn is_everything(&self) -> bool {
        self.since.is_none() && self.until.is_none()
    }

    /// Whether an instant is in `[since, until)`: a saga created then is this window's,
    /// and so is the orphan check of a debit or credit created then.
    pub fn contains(&self, at: i64) -> bool {
        self.since.is_none_or(|s| at >= s) && self.until.is_none_or(|u| at < u)
    }

    /// Where debits and credits are read from (inclusive) and to (exclusive).
    fn read_from(&self) -> Option<i64> {
        self.since.map(|s| s.saturating_sub(self.slack_ms))
    }

    fn read_until(&self) -> Option<i64> {
        self.until.map(|u| u.saturating_add(self.slack_ms))
    }

    fn reads(&self, at: i64) -> bool {
        self.read_from().is_none_or(|s| at >= s) && self.read_until().is_none_or(|u| at < u)
    }

    /// The `audit window:` line.
    pub fn describe(&self) -> String {
        if self.is_everything() {
            return "everything: every saga, debit and credit (I1, I2: the whole ledgers)".into();
        }
        let bound = |at: Option<i64>, open: &str| at.map_or(open.to_string(), format_rfc3339);
        format!(
            "sagas created in [{}, {}); their debits and credits read from {} to {} \
             ({} min slack), later ones by id; I1, I2: the whole ledgers",
            bound(self.since, "-∞"),
            bound(self.until, "+∞"),
            bound(self.read_from(), "-∞"),
            bound(self.read_until(), "+∞"),
            self.slack_ms / 60_000
        )
    }
}

/// A saga as the audit needs it.
#[derive(Clone, Debug)]
pub struct SagaFacts {
    pub saga_id: String,
    pub status: gpb::SagaStatus,
    pub total_coins: i64,
    pub share_bps: i32,
    pub diamonds_recorded: i64,
    /// When gifting recorded it (Unix ms).
    pub created_at_ms: i64,
}

#[derive(Clone, Debug)]
pub struct DebitFacts {
    pub operation_id: String,
    pub coins: i64,
    pub refunded: i64,
    /// When wallet posted it (Unix ms).
    pub created_at_ms: i64,
}

#[derive(Clone, Debug)]
pub struct CreditFacts {
    pub operation_id: String,
    pub coins: i64,
    pub share_bps: i32,
    pub diamonds: i64,
    /// When payout posted it (Unix ms).
    pub created_at_ms: i64,
}

/// What the audit read for one window.
#[derive(Debug, Default)]
pub struct Facts {
    /// The window's sagas (others are ignored).
    pub sagas: Vec<SagaFacts>,
    /// Debits read around the window, and those of its sagas looked up by id.
    pub debits: Vec<DebitFacts>,
    /// Credits likewise.
    pub credits: Vec<CreditFacts>,
    /// Operation ids of debits or credits created in the window that are sagas gifting
    /// recorded outside it (looked up by id).
    pub sagas_elsewhere: HashSet<String>,
}

/// What the listing left unmatched, to be looked up by id.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unmatched {
    /// Window sagas with no debit read.
    pub sagas_without_debit: Vec<String>,
    /// Window sagas with no credit read.
    pub sagas_without_credit: Vec<String>,
    /// Operation ids of debits and credits created in the window that are no window saga.
    pub strays: Vec<String>,
}

impl Facts {
    /// The lookups the window needs after its listings (see the module doc).
    pub fn unmatched(&self, window: &Window) -> Unmatched {
        let sagas: HashSet<&str> = self
            .sagas
            .iter()
            .filter(|s| window.contains(s.created_at_ms))
            .map(|s| s.saga_id.as_str())
            .collect();
        let debited: HashSet<&str> = self
            .debits
            .iter()
            .map(|d| d.operation_id.as_str())
            .collect();
        let credited: HashSet<&str> = self
            .credits
            .iter()
            .map(|c| c.operation_id.as_str())
            .collect();
        let mut unmatched = Unmatched::default();
        for s in self
            .sagas
            .iter()
            .filter(|s| window.contains(s.created_at_ms))
        {
            if !debited.contains(s.saga_id.as_str()) {
                unmatched.sagas_without_debit.push(s.saga_id.clone());
            }
            if !credited.contains(s.saga_id.as_str()) {
                unmatched.sagas_without_credit.push(s.saga_id.clone());
            }
        }
        let mut strays: Vec<String> = self
            .debits
            .iter()
            .map(|d| (d.operation_id.as_str(), d.created_at_ms))
            .chain(
                self.credits
                    .iter()
                    .map(|c| (c.operation_id.as_str(), c.created_at_ms)),
            )
            .filter(|(id, at)| window.contains(*at) && !sagas.contains(id))
            .map(|(id, _)| id.to_owned())
            .collect();
        strays.sort();
        strays.dedup();
        unmatched.strays = strays;
        unmatched
    }
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

/// The I3–I5 checks of one window on the services' data (pure: unit-tested below).
pub fn check_gifts(window: &Window, facts: &Facts, report: &mut Report) {
    let sagas: Vec<&SagaFacts> = facts
        .sagas
        .iter()
        .filter(|s| window.contains(s.created_at_ms))
        .collect();
    let (debits, credits) = (&facts.debits, &facts.credits);
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
    for s in &sagas {
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

    // Each debit and credit is this window's to vouch for if it matches a window saga, or
    // if it was created in the window (then it must be a saga gifting knows).
    let saga_ids: HashSet<&str> = sagas.iter().map(|s| s.saga_id.as_str()).collect();
    let orphan = |id: &str, at: i64| window.contains(at) && !facts.sagas_elsewhere.contains(id);
    let (mut orphan_debits, mut orphan_credits, mut elsewhere) = (0, 0, 0);
    for d in debits
        .iter()
        .filter(|d| !saga_ids.contains(d.operation_id.as_str()))
    {
        if orphan(&d.operation_id, d.created_at_ms) {
            orphan_debits += 1;
        } else {
            elsewhere += 1;
        }
    }
    let mut own_credits = Vec::new();
    for c in credits {
        if saga_ids.contains(c.operation_id.as_str()) {
            own_credits.push(c);
        } else if orphan(&c.operation_id, c.created_at_ms) {
            orphan_credits += 1;
            own_credits.push(c);
        } else {
            elsewhere += 1;
        }
    }
    report.check(
        orphan_debits == 0 && orphan_credits == 0,
        "I4: every debit and credit belongs to a saga".into(),
        || format!("I4: {orphan_debits} debits and {orphan_credits} credits belong to no saga"),
    );
    if elsewhere > 0 {
        report.notes.push(format!(
            "{elsewhere} debits and credits read are no saga of the window and were created \
             outside it or for a saga gifting recorded outside it: left to their own windows"
        ));
    }
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
    for c in own_credits {
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

type Gifting = GiftingServiceClient<InterceptedService<Channel, Admin>>;

/// Unix ms of a proto timestamp's (seconds, nanos); 0 if unset or out of range.
fn millis(ts: Option<(i64, i32)>) -> i64 {
    ts.and_then(|(seconds, nanos)| UnixMillis::from_parts(seconds, nanos).ok())
        .map_or(0, |t| t.0)
}

/// Runs the audit on everything (as `ovation bench` does); `Ok(false)` on any violation.
pub async fn run(args: AuditArgs) -> Result<bool, Box<dyn std::error::Error>> {
    run_window(args, Window::EVERYTHING).await
}

/// Runs `ovation audit` as its command line says.
pub async fn run_command(command: AuditCommand) -> Result<bool, Box<dyn std::error::Error>> {
    let window = Window::new(&command.window)?;
    run_window(command.suite, window).await
}

/// Runs the audit of `window`; prints what it checked; `Ok(false)` on any violation.
pub async fn run_window(
    args: AuditArgs,
    window: Window,
) -> Result<bool, Box<dyn std::error::Error>> {
    println!("audit window: {}", window.describe());
    let token = match args.token {
        Some(t) => t,
        // Never create a key here: a fresh one signs tokens no running suite accepts.
        None => {
            let keys = existing_dev_keys(&args.data_dir)
                .map_err(|e| format!("{e}, or an admin token with --token"))?;
            Signer::from_keys_file(&keys, &[Role::Admin])?.mint(
                "ovation-audit",
                &[Role::Admin],
                600,
            )
        }
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

    let mut facts = Facts::default();
    // ListSagas has no time filter: oldest first, skip (and drop) what is before the
    // window, stop at its end.
    let (mut skipped_sagas, mut skipped_credits) = (0u64, 0u64);
    // Gifting filters sagas by creation time (an older gifting ignores the filter: the
    // client-side one below still holds).
    let sagas_from = window.since.map(|t| to_timestamp(UnixMillis(t.max(0))));
    let sagas_until = window
        .until
        .filter(|t| *t <= MILLIS_MAX)
        .map(|t| to_timestamp(UnixMillis(t)));
    let mut token = String::new();
    'sagas: loop {
        let page = gifting
            .list_sagas(gpb::ListSagasRequest {
                statuses: vec![],
                page_size: PAGE,
                page_token: token,
                start_time: sagas_from,
                end_time: sagas_until,
            })
            .await?
            .into_inner();
        for s in page.sagas {
            let r = s.receipt.unwrap_or_default();
            let at = millis(r.create_time.map(|t| (t.seconds, t.nanos)));
            if window.until.is_some_and(|u| at >= u) {
                break 'sagas;
            }
            if !window.contains(at) {
                skipped_sagas += 1;
                continue;
            }
            facts.sagas.push(SagaFacts {
                saga_id: r.saga_id,
                status: gpb::SagaStatus::try_from(r.status).unwrap_or(gpb::SagaStatus::Unspecified),
                total_coins: r.total_coins,
                share_bps: r.creator_share_bps,
                diamonds_recorded: r.diamonds_credited,
                created_at_ms: at,
            });
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    // Wallet and payout filter by time (an older server ignores the filter: the
    // client-side one below still holds).
    let start_time = window
        .read_from()
        .map(|t| to_timestamp(UnixMillis(t.max(0))));
    let end_time = window
        .read_until()
        .filter(|t| *t <= MILLIS_MAX)
        .map(|t| to_timestamp(UnixMillis(t)));
    let mut token = String::new();
    'debits: loop {
        let page = wallet
            .list_debits(wpb::ListDebitsRequest {
                operation_ids: vec![],
                page_size: PAGE,
                page_token: token,
                start_time,
                end_time,
            })
            .await?
            .into_inner();
        for d in page.debits {
            let at = millis(d.create_time.map(|t| (t.seconds, t.nanos)));
            if window.read_until().is_some_and(|u| at >= u) {
                break 'debits;
            }
            if window.reads(at) {
                facts.debits.push(debit_facts(d));
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    // ListCredits has no time filter: like ListSagas.
    let mut token = String::new();
    'credits: loop {
        let page = payout
            .list_credits(ppb::ListCreditsRequest {
                operation_ids: vec![],
                page_size: PAGE,
                page_token: token,
                start_time,
                end_time,
            })
            .await?
            .into_inner();
        for c in page.credits {
            let at = millis(c.create_time.map(|t| (t.seconds, t.nanos)));
            if window.read_until().is_some_and(|u| at >= u) {
                break 'credits;
            }
            if window.reads(at) {
                facts.credits.push(credit_facts(c));
            } else {
                skipped_credits += 1;
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    report.notes.push(format!(
        "read {} sagas, {} debits, {} credits",
        facts.sagas.len(),
        facts.debits.len(),
        facts.credits.len()
    ));
    if skipped_sagas + skipped_credits > 0 {
        report.notes.push(format!(
            "paged past {skipped_sagas} sagas and {skipped_credits} credits created before the \
             window (ListSagas and ListCredits have no time filter yet)"
        ));
    }

    // Lookups by id: the window's sagas whose debit or credit came after the slack (only
    // a bounded read can miss them), and the sagas of strays created in the window.
    let unmatched = facts.unmatched(&window);
    let (mut by_id_debits, mut by_id_credits) = (0, 0);
    if !window.is_everything() {
        for ids in unmatched.sagas_without_debit.chunks(IDS_PER_CALL) {
            let page = wallet
                .list_debits(wpb::ListDebitsRequest {
                    operation_ids: ids.to_vec(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            by_id_debits += page.debits.len();
            facts
                .debits
                .extend(page.debits.into_iter().map(debit_facts));
        }
        for ids in unmatched.sagas_without_credit.chunks(IDS_PER_CALL) {
            let page = payout
                .list_credits(ppb::ListCreditsRequest {
                    operation_ids: ids.to_vec(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            by_id_credits += page.credits.len();
            facts
                .credits
                .extend(page.credits.into_iter().map(credit_facts));
        }
    }
    facts.sagas_elsewhere = sagas_known(&gifting, unmatched.strays).await?;
    if by_id_debits + by_id_credits > 0 {
        report.notes.push(format!(
            "{by_id_debits} debits and {by_id_credits} credits of the window's sagas came \
             after the slack (read by id)"
        ));
    }
    check_gifts(&window, &facts, &mut report);

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

fn debit_facts(d: wpb::Debit) -> DebitFacts {
    DebitFacts {
        created_at_ms: millis(d.create_time.map(|t| (t.seconds, t.nanos))),
        operation_id: d.operation_id,
        coins: d.coins,
        refunded: d.refunded_coins,
    }
}

fn credit_facts(c: ppb::Credit) -> CreditFacts {
    CreditFacts {
        created_at_ms: millis(c.create_time.map(|t| (t.seconds, t.nanos))),
        operation_id: c.operation_id,
        coins: c.coins,
        share_bps: c.creator_share_bps,
        diamonds: c.diamonds,
    }
}

/// Which of `ids` are sagas gifting knows (by id, a few at once).
async fn sagas_known(
    gifting: &Gifting,
    ids: Vec<String>,
) -> Result<HashSet<String>, Box<dyn std::error::Error>> {
    let answers: Vec<Result<Option<String>, tonic::Status>> = futures::stream::iter(ids)
        .map(|saga_id| {
            let mut gifting = gifting.clone();
            async move {
                match gifting
                    .get_sent_gift(gpb::GetSentGiftRequest {
                        saga_id: saga_id.clone(),
                    })
                    .await
                {
                    Ok(_) => Ok(Some(saga_id)),
                    Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
                    Err(status) => Err(status),
                }
            }
        })
        .buffer_unordered(LOOKUPS_IN_FLIGHT)
        .collect()
        .await;
    let mut known = HashSet::new();
    for answer in answers {
        if let Some(id) = answer? {
            known.insert(id);
        }
    }
    Ok(known)
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
            wallet_url: "http://127.0.0.1:1".into(),
            payout_url: "http://127.0.0.1:1".into(),
            gifting_url: "http://127.0.0.1:1".into(),
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
            created_at_ms: 0,
        }
    }

    fn debit(id: &str, coins: i64, refunded: i64) -> DebitFacts {
        DebitFacts {
            operation_id: id.into(),
            coins,
            refunded,
            created_at_ms: 0,
        }
    }

    fn credit(id: &str, coins: i64) -> CreditFacts {
        CreditFacts {
            operation_id: id.into(),
            coins,
            share_bps: 5_000,
            diamonds: share(coins, 5_000),
            created_at_ms: 0,
        }
    }

    /// A saga created at `at`.
    fn saga_at(id: &str, status: gpb::SagaStatus, coins: i64, at: i64) -> SagaFacts {
        SagaFacts {
            created_at_ms: at,
            ..saga(id, status, coins)
        }
    }

    fn debit_at(id: &str, coins: i64, refunded: i64, at: i64) -> DebitFacts {
        DebitFacts {
            created_at_ms: at,
            ..debit(id, coins, refunded)
        }
    }

    fn credit_at(id: &str, coins: i64, at: i64) -> CreditFacts {
        CreditFacts {
            created_at_ms: at,
            ..credit(id, coins)
        }
    }

    fn facts(sagas: Vec<SagaFacts>, debits: Vec<DebitFacts>, credits: Vec<CreditFacts>) -> Facts {
        Facts {
            sagas,
            debits,
            credits,
            sagas_elsewhere: HashSet::new(),
        }
    }

    fn audit(window: &Window, facts: &Facts) -> Report {
        let mut r = Report::default();
        check_gifts(window, facts, &mut r);
        r
    }

    /// `[since, until)` with the default slack.
    fn window(since: Option<i64>, until: Option<i64>) -> Window {
        Window::new(&WindowArgs { since, until }).unwrap()
    }

    #[test]
    fn a_consistent_suite_passes() {
        let r = audit(
            &Window::EVERYTHING,
            &facts(
                vec![
                    saga("a", gpb::SagaStatus::Completed, 3),
                    saga("b", gpb::SagaStatus::Compensated, 5),
                    saga("c", gpb::SagaStatus::Rejected, 7),
                ],
                vec![debit("a", 3, 0), debit("b", 5, 5)],
                vec![credit("a", 3)],
            ),
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
            // a debit with no saga
            (vec![], vec![debit("y", 1, 0)], vec![]),
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
            let facts = facts(sagas, debits, credits);
            let r = audit(&Window::EVERYTHING, &facts);
            assert!(!r.violations.is_empty(), "missed: {facts:?}");
            // A window holding them (the facts are at t = 0) finds them too.
            let r = audit(&window(Some(0), Some(1)), &facts);
            assert!(!r.violations.is_empty(), "missed in a window: {facts:?}");
        }
    }

    /// A window judges the sagas created in it and the debits and credits created in it;
    /// what is outside is another window's business; no window sees everything.
    #[test]
    fn a_window_reports_what_is_in_it_and_nothing_outside() {
        let minute = 60_000;
        let (since, until) = (100 * minute, 200 * minute);
        let facts = facts(
            vec![
                // Before the window, half done (no credit).
                saga_at("old", gpb::SagaStatus::Completed, 3, since - minute),
                // In the window, half done (debit refunded).
                saga_at("in", gpb::SagaStatus::Completed, 5, since + minute),
                // In the window, sound.
                saga_at("fine", gpb::SagaStatus::Completed, 7, since + 2 * minute),
            ],
            vec![
                debit_at("old", 3, 0, since - minute),
                debit_at("in", 5, 5, since + minute),
                debit_at("fine", 7, 0, since + 2 * minute),
                // An orphan debit after the window.
                debit_at("stray-after", 2, 0, until + minute),
            ],
            vec![
                credit_at("in", 5, since + minute),
                credit_at("fine", 7, since + 2 * minute),
                // An orphan credit in the window.
                credit_at("stray-in", 4, since + 3 * minute),
            ],
        );
        let all = |r: &Report| r.violations.join("\n");

        let windowed = audit(&window(Some(since), Some(until)), &facts);
        let text = all(&windowed);
        assert!(text.contains("in COMPLETED"), "{text}");
        assert!(
            text.contains("0 debits and 1 credits belong to no saga"),
            "{text}"
        );
        assert!(!text.contains("old"), "a saga before the window: {text}");

        let later = audit(&window(Some(until), None), &facts);
        let text = all(&later);
        assert!(
            text.contains("1 debits and 0 credits belong to no saga"),
            "{text}"
        );
        assert!(!text.contains("COMPLETED"), "{text}");

        let everything = audit(&Window::EVERYTHING, &facts);
        let text = all(&everything);
        for wanted in [
            "old COMPLETED",
            "in COMPLETED",
            "1 debits and 1 credits belong to no saga",
        ] {
            assert!(text.contains(wanted), "{wanted}: {text}");
        }

        // A window with nothing wrong in it is clean, whatever is around it.
        let clean = audit(
            &window(Some(since + 2 * minute), Some(since + 3 * minute)),
            &facts,
        );
        assert!(clean.violations.is_empty(), "{:?}", clean.violations);
        assert_eq!(clean.checks.len(), 5, "{:?}", clean.checks);
    }

    /// Sagas near the edges: one created just before `until` whose credit came after it
    /// (read within the slack) is this window's and sound; one created just before
    /// `since` whose debit and credit came after it is the previous window's, provided
    /// gifting knows it; the next window's debits read in the slack are ignored.
    #[test]
    fn sagas_at_the_edges_of_a_window() {
        let (since, until) = (1_000_000, 2_000_000);
        let w = window(Some(since), Some(until));
        let mut facts = facts(
            vec![saga_at("late", gpb::SagaStatus::Completed, 3, until - 1)],
            vec![
                debit_at("late", 3, 0, until + 5),
                debit_at("early", 5, 0, since + 5),
                debit_at("next", 7, 0, until + 10),
            ],
            vec![
                credit_at("late", 3, until + 9),
                credit_at("early", 5, since + 9),
                credit_at("next", 7, until + 11),
            ],
        );
        assert_eq!(
            facts.unmatched(&w),
            Unmatched {
                sagas_without_debit: vec![],
                sagas_without_credit: vec![],
                strays: vec!["early".into()],
            }
        );
        // Gifting does not know "early": its debit and credit are orphans.
        let r = audit(&w, &facts);
        assert!(
            r.violations
                .iter()
                .any(|v| v.contains("1 debits and 1 credits belong to no saga")),
            "{:?}",
            r.violations
        );
        // Gifting knows it (created before the window): nothing wrong here.
        facts.sagas_elsewhere.insert("early".into());
        let r = audit(&w, &facts);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("4 debits and credits read are no saga of the window")),
            "{:?}",
            r.notes
        );
    }

    /// After the listing, the window's sagas without a debit or credit are looked up by
    /// id (a step later than the slack).
    #[test]
    fn what_the_listing_missed_is_looked_up() {
        let w = window(Some(0), Some(10));
        let facts = facts(
            vec![
                saga_at("a", gpb::SagaStatus::Completed, 3, 1),
                saga_at("b", gpb::SagaStatus::Rejected, 3, 2),
                saga_at("outside", gpb::SagaStatus::Rejected, 3, 10),
            ],
            vec![debit_at("a", 3, 0, 1)],
            vec![],
        );
        assert_eq!(
            facts.unmatched(&w),
            Unmatched {
                sagas_without_debit: vec!["b".into()],
                sagas_without_credit: vec!["a".into(), "b".into()],
                strays: vec![],
            }
        );
    }

    #[test]
    fn instants_are_rfc3339() {
        let ok = [
            ("1970-01-01T00:00:00Z", 0),
            ("2025-06-01T00:00:00Z", 1_748_736_000_000),
            ("2025-06-01t02:00:00.25+02:00", 1_748_736_000_250),
            ("2025-05-31 19:30:00.000-04:30", 1_748_736_000_000),
            // Finer than a millisecond rounds up.
            ("2025-06-01T00:00:00.0000001Z", 1_748_736_000_001),
            ("2024-02-29T23:59:59.999Z", 1_709_251_199_999),
            ("9999-12-31T23:59:59.999Z", MILLIS_MAX),
        ];
        for (raw, ms) in ok {
            assert_eq!(parse_rfc3339(raw), Ok(ms), "{raw}");
        }
        for bad in [
            "",
            "1748736000000",
            "2025-06-01",
            "2025-06-01T00:00:00",
            "2025-06-01T00:00:00+0200",
            "2025-06-01T24:00:00Z",
            "2025-06-01T00:00:60Z",
            "2025-02-29T00:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-06-01T00:00:00.Z",
            "2025-06-01T00:00:00.1234567890Z",
            "1969-12-31T23:59:59Z",
            "+025-06-01T00:00:00Z",
            "2025-06-01T00:00:00ZZ",
            "2025-06-01T00:00:00Zé",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} accepted");
        }
        for ms in [0, 1, 999, 1_748_736_000_250, 951_782_400_000, MILLIS_MAX] {
            assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Ok(ms), "{ms}");
        }
        assert_eq!(
            format_rfc3339(1_748_736_000_250),
            "2025-06-01T00:00:00.250Z"
        );
    }

    #[test]
    fn the_window_comes_from_the_command_line() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            audit: AuditCommand,
        }
        let parse = |args: &[&str]| {
            <Cli as clap::Parser>::try_parse_from(
                std::iter::once("audit").chain(args.iter().copied()),
            )
            .map_err(|e| e.to_string())
            .and_then(|c| Window::new(&c.audit.window))
        };
        assert_eq!(parse(&[]), Ok(Window::EVERYTHING));
        let w = parse(&[
            "--since",
            "2025-06-01T00:00:00Z",
            "--until",
            "2025-06-02T00:00:00Z",
        ])
        .unwrap();
        assert_eq!(
            (w.since, w.until),
            (Some(1_748_736_000_000), Some(1_748_822_400_000))
        );
        assert!(w.contains(1_748_736_000_000) && !w.contains(1_748_822_400_000));
        assert!(
            w.describe()
                .contains("[2025-06-01T00:00:00.000Z, 2025-06-02T00:00:00.000Z)")
        );
        assert!(Window::EVERYTHING.describe().starts_with("everything"));
        let open = parse(&["--until", "2025-06-02T00:00:00Z"]).unwrap();
        assert!(open.contains(0) && open.read_from().is_none());
        assert!(
            parse(&[
                "--since",
                "2025-06-02T00:00:00Z",
                "--until",
                "2025-06-01T00:00:00Z"
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "--since",
                "2025-06-01T00:00:00Z",
                "--until",
                "2025-06-01T00:00:00Z"
            ])
            .is_err()
        );
        assert!(parse(&["--since", "1748736000000"]).is_err());
    }
}
