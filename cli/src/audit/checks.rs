//! The I1–I5 checks on what the audit read (I6: `clawbacks.rs`) (pure: unit-tested below).

use std::collections::{HashMap, HashSet};

use ovation_proto::{gifting as gpb, payout as ppb, wallet as wpb};

use super::facts::{CreditFacts, DebitFacts, Facts, SagaFacts};
use super::report::Report;
use super::window::Window;

/// floor(coins × bps / 10000), as the suite computes it.
pub fn diamonds_for(coins: i64, bps: i32) -> i64 {
    (i128::from(coins) * i128::from(bps) / 10_000) as i64
}

/// One ledger's summary as I1 and I2 judge it.
#[derive(Debug)]
pub struct LedgerSummary {
    /// What it counts: "coins" or "diamonds".
    pub unit: &'static str,
    /// Whose balances it keeps: "user" or "creator".
    pub owner: &'static str,
    pub total: i64,
    pub journal_entries: i64,
    pub unbalanced_entries: i64,
    pub negative_balances: i64,
}

impl From<wpb::GetLedgerSummaryResponse> for LedgerSummary {
    fn from(coins: wpb::GetLedgerSummaryResponse) -> LedgerSummary {
        LedgerSummary {
            unit: "coins",
            owner: "user",
            total: coins.total_coins,
            journal_entries: coins.journal_entry_count,
            unbalanced_entries: coins.unbalanced_entry_count,
            negative_balances: coins.negative_balance_count,
        }
    }
}

impl From<ppb::GetLedgerSummaryResponse> for LedgerSummary {
    fn from(diamonds: ppb::GetLedgerSummaryResponse) -> LedgerSummary {
        LedgerSummary {
            unit: "diamonds",
            owner: "creator",
            total: diamonds.total_diamonds,
            journal_entries: diamonds.journal_entry_count,
            unbalanced_entries: diamonds.unbalanced_entry_count,
            negative_balances: diamonds.negative_balance_count,
        }
    }
}

/// I1 and I2 on one ledger: it sums to zero with every entry balanced, and no balance is
/// negative.
pub fn check_ledger(ledger: &LedgerSummary, report: &mut Report) {
    let LedgerSummary {
        unit,
        owner,
        total,
        journal_entries,
        unbalanced_entries,
        negative_balances,
    } = ledger;
    report.check(
        *total == 0 && *unbalanced_entries == 0,
        format!(
            "I1 {unit}: {journal_entries} journal entries, every one balanced, the ledger sums to 0"
        ),
        || {
            format!(
                "I1 {unit}: ledger sums to {total} with {unbalanced_entries} unbalanced entries"
            )
        },
    );
    report.check(
        *negative_balances == 0,
        format!("I2 {unit}: no {owner} balance is negative"),
        || format!("I2 {unit}: {negative_balances} negative balances"),
    );
}

/// The I3–I5 checks of one window on the services' data.
pub fn check_gifts(window: &Window, facts: &Facts, report: &mut Report) {
    let sagas: Vec<&SagaFacts> = facts.window_sagas(window).collect();
    let by_operation = ByOperation::index(facts);
    let duplicates = by_operation.duplicates;
    report.check(
        duplicates == 0,
        "I4: one debit and one credit per operation id".into(),
        || format!("I4: {duplicates} operation ids appear twice"),
    );
    let tally = Tally::of(&sagas, &by_operation);
    tally.check_all_or_nothing(report);
    let vouched_credits = check_orphans(window, facts, &sagas, report);
    tally.check_amounts(report);
    check_credit_shares(&vouched_credits, report);
}

/// Debits and credits by operation id (= saga id), and how many ids appear twice.
struct ByOperation<'a> {
    debits: HashMap<&'a str, &'a DebitFacts>,
    credits: HashMap<&'a str, &'a CreditFacts>,
    duplicates: usize,
}

impl<'a> ByOperation<'a> {
    fn index(facts: &'a Facts) -> ByOperation<'a> {
        let mut duplicates = 0;
        let debits = by_id(&facts.debits, |d| d.operation_id.as_str(), &mut duplicates);
        let credits = by_id(&facts.credits, |c| c.operation_id.as_str(), &mut duplicates);
        ByOperation {
            debits,
            credits,
            duplicates,
        }
    }
}

/// `rows` by id, counting into `duplicates` each row whose id came before.
fn by_id<'a, T>(
    rows: &'a [T],
    id: impl Fn(&'a T) -> &'a str,
    duplicates: &mut usize,
) -> HashMap<&'a str, &'a T> {
    let mut index = HashMap::new();
    for row in rows {
        if index.insert(id(row), row).is_some() {
            *duplicates += 1;
        }
    }
    index
}

/// The window's sagas judged one by one (I3), and the sums I5 compares.
#[derive(Debug, Default)]
struct Tally {
    /// What is wrong with each saga that did not move coins and diamonds together.
    half_done: Vec<String>,
    terminal: u64,
    unsettled: u64,
    coins_recorded: i64,
    coins_debited: i64,
    diamonds_expected: i64,
    diamonds_credited: i64,
}

impl Tally {
    fn of(sagas: &[&SagaFacts], by_operation: &ByOperation) -> Tally {
        let mut tally = Tally::default();
        for s in sagas {
            let debit = by_operation.debits.get(s.saga_id.as_str()).copied();
            let credit = by_operation.credits.get(s.saga_id.as_str()).copied();
            tally.add(s, debit, credit);
        }
        tally
    }

    /// COMPLETED has its debit (not refunded) and its credit; COMPENSATED has its debit
    /// fully refunded and no credit; REJECTED has neither; others are not judged yet.
    fn add(&mut self, s: &SagaFacts, debit: Option<&DebitFacts>, credit: Option<&CreditFacts>) {
        let (status, all_or_nothing) = match s.status {
            gpb::SagaStatus::Completed => {
                self.add_completed(s, debit, credit);
                let ok = debit
                    .is_some_and(|d| d.coins == s.total_coins && refund_is_expected(s, d.refunded))
                    && credit.is_some_and(|c| c.coins == s.total_coins);
                ("COMPLETED", ok)
            }
            gpb::SagaStatus::Compensated => {
                let ok = debit.is_some_and(|d| d.refunded == d.coins) && credit.is_none();
                ("COMPENSATED", ok)
            }
            gpb::SagaStatus::Rejected => ("REJECTED", debit.is_none() && credit.is_none()),
            _ => {
                self.unsettled += 1;
                return;
            }
        };
        self.terminal += 1;
        if !all_or_nothing {
            self.half_done.push(format!(
                "{} {status} but debit {debit:?} credit {credit:?}",
                s.saga_id
            ));
        }
        if s.status == gpb::SagaStatus::Completed {
            self.check_recorded_diamonds(s);
        }
    }

    /// A completed saga's part in I5's sums.
    fn add_completed(
        &mut self,
        s: &SagaFacts,
        debit: Option<&DebitFacts>,
        credit: Option<&CreditFacts>,
    ) {
        // Coins an admin's reversal returned to the sender are no longer spent on the gift.
        let returned = debit
            .map(|d| d.refunded)
            .filter(|&r| r > 0 && refund_is_expected(s, r))
            .unwrap_or(0);
        self.coins_recorded += s.total_coins - returned;
        self.coins_debited += debit.map_or(0, |d| d.coins - d.refunded);
        self.diamonds_expected += diamonds_for(s.total_coins, s.share_bps);
        self.diamonds_credited += credit.map_or(0, |c| c.diamonds);
    }

    /// Gifting recorded the diamonds its share makes.
    fn check_recorded_diamonds(&mut self, s: &SagaFacts) {
        let expected = diamonds_for(s.total_coins, s.share_bps);
        if s.diamonds_recorded != expected {
            self.half_done.push(format!(
                "{} recorded {} diamonds, expected {expected}",
                s.saga_id, s.diamonds_recorded
            ));
        }
    }

    /// I3, and a note of the sagas not terminal yet.
    fn check_all_or_nothing(&self, report: &mut Report) {
        let (n, terminal) = (self.half_done.len(), self.terminal);
        report.check(
            n == 0,
            format!(
                "I3: {terminal} terminal sagas moved coins and diamonds together or not at all"
            ),
            || {
                let some: Vec<&str> = self.half_done.iter().take(5).map(String::as_str).collect();
                format!("I3: {n} sagas half done: {}", some.join("; "))
            },
        );
        if self.unsettled > 0 {
            report.notes.push(format!(
                "{} sagas not terminal yet (PENDING or NEEDS_OPERATOR): I3 applies once they finish",
                self.unsettled
            ));
        }
    }

    /// I5: coins and diamonds of the completed gifts match what gifting recorded.
    fn check_amounts(&self, report: &mut Report) {
        let (recorded, debited) = (self.coins_recorded, self.coins_debited);
        let (expected, credited) = (self.diamonds_expected, self.diamonds_credited);
        report.check(
            recorded == debited,
            format!("I5: coins debited for completed gifts = coins gifting recorded ({recorded})"),
            || format!("I5: gifting recorded {recorded} coins for completed gifts, wallet debited {debited}"),
        );
        report.check(
            expected == credited,
            format!("I5: diamonds credited = Σ floor(coins × share / 10000) ({expected})"),
            || format!("I5: expected {expected} diamonds from the recorded shares, payout credited {credited}"),
        );
    }
}

/// Whether a completed gift's debit may have `refunded` coins given back: none, unless an
/// admin reversed the gift with its coins returned (all of them once the reversal is
/// done; none or all while it runs).
fn refund_is_expected(s: &SagaFacts, refunded: i64) -> bool {
    match &s.reversal {
        Some(r) if r.return_coins && r.done => {
            refunded == s.total_coins && r.returned_coins == s.total_coins
        }
        Some(r) if r.return_coins => refunded == 0 || refunded == s.total_coins,
        _ => refunded == 0,
    }
}

/// I4: every debit and credit belongs to a saga. Each is this window's to vouch for if it
/// matches a window saga, or if it was created in the window (then it must be a saga
/// gifting knows). Returns the credits the window vouches for.
fn check_orphans<'a>(
    window: &Window,
    facts: &'a Facts,
    sagas: &[&SagaFacts],
    report: &mut Report,
) -> Vec<&'a CreditFacts> {
    let saga_ids: HashSet<&str> = sagas.iter().map(|s| s.saga_id.as_str()).collect();
    let orphan = |id: &str, at: i64| window.contains(at) && !facts.sagas_elsewhere.contains(id);
    let (mut orphan_debits, mut orphan_credits, mut elsewhere) = (0, 0, 0);
    for d in facts
        .debits
        .iter()
        .filter(|d| !saga_ids.contains(d.operation_id.as_str()))
    {
        if orphan(&d.operation_id, d.created_at_ms) {
            orphan_debits += 1;
        } else {
            elsewhere += 1;
        }
    }
    let mut vouched = Vec::new();
    for c in &facts.credits {
        if saga_ids.contains(c.operation_id.as_str()) {
            vouched.push(c);
        } else if orphan(&c.operation_id, c.created_at_ms) {
            orphan_credits += 1;
            vouched.push(c);
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
    vouched
}

/// I5 per credit: its diamonds are its coins' share.
fn check_credit_shares(credits: &[&CreditFacts], report: &mut Report) {
    for c in credits {
        if c.diamonds != diamonds_for(c.coins, c.share_bps) {
            report.violations.push(format!(
                "I5: credit {} has {} diamonds for {} coins at {} bps",
                c.operation_id, c.diamonds, c.coins, c.share_bps
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::facts::Unmatched;
    use crate::audit::fixtures::*;

    fn audit(window: &Window, facts: &Facts) -> Report {
        let mut r = Report::default();
        check_gifts(window, facts, &mut r);
        r
    }

    #[test]
    fn diamonds_are_the_floor_of_the_share() {
        assert_eq!(diamonds_for(1, 5_000), 0);
        assert_eq!(diamonds_for(3, 5_000), 1);
        assert_eq!(diamonds_for(10_000, 5_000), 5_000);
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

    /// A completed gift's debit is refunded only by an admin's reversal that returns the
    /// coins: all of them once done, none or all while it runs; I5 then counts the gift's
    /// coins as given back.
    #[test]
    fn only_a_reversal_returning_coins_refunds_a_completed_gift() {
        use crate::audit::facts::ReversalFacts;
        let reversal = |done: bool, return_coins: bool, returned: i64| ReversalFacts {
            done,
            return_coins,
            clawed_back_diamonds: 1,
            returned_coins: returned,
        };
        let reversed = |r: ReversalFacts| SagaFacts {
            reversal: Some(r),
            ..saga("a", gpb::SagaStatus::Completed, 3)
        };
        let judge = |s: SagaFacts, refunded: i64| {
            let r = audit(
                &Window::EVERYTHING,
                &facts(vec![s], vec![debit("a", 3, refunded)], vec![credit("a", 3)]),
            );
            r.violations
        };
        assert!(judge(reversed(reversal(true, true, 3)), 3).is_empty());
        assert!(judge(reversed(reversal(false, true, 0)), 3).is_empty());
        assert!(judge(reversed(reversal(false, true, 0)), 0).is_empty());
        assert!(judge(reversed(reversal(true, false, 0)), 0).is_empty());
        // Refunded without a reversal asking for it, or only in part, or not yet although done.
        assert!(!judge(reversed(reversal(true, false, 0)), 3).is_empty());
        assert!(!judge(reversed(reversal(false, true, 0)), 2).is_empty());
        assert!(!judge(reversed(reversal(true, true, 3)), 0).is_empty());
        assert!(!judge(saga("a", gpb::SagaStatus::Completed, 3), 3).is_empty());
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
}
