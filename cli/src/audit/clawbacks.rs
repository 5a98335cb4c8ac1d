//! I6 on what the audit read (pure: unit-tested below): payout's clawbacks against the
//! credits they reach, wallet's clawback orders (reversed purchases) and gifting's gift
//! reversals against payout's clawbacks, and payout's creator balances.

use std::collections::{HashMap, HashSet};

use ovation_proto::{payout as ppb, wallet as wpb};

use super::checks::diamonds_for;
use super::facts::{CreditFacts, SagaFacts};
use super::report::Report;

/// One of payout's clawbacks.
#[derive(Clone, Debug)]
pub struct ClawbackFacts {
    pub clawback_id: String,
    pub operation_id: String,
    pub cause: ppb::ClawbackCause,
    pub cause_id: String,
    pub coins_requested: i64,
    pub coins: i64,
    pub share_bps: i32,
    pub diamonds: i64,
    pub from_pending: i64,
    pub from_available: i64,
    pub to_debt: i64,
}

impl From<ppb::Clawback> for ClawbackFacts {
    fn from(c: ppb::Clawback) -> ClawbackFacts {
        ClawbackFacts {
            cause: ppb::ClawbackCause::try_from(c.cause).unwrap_or(ppb::ClawbackCause::Unspecified),
            clawback_id: c.clawback_id,
            operation_id: c.operation_id,
            cause_id: c.cause_id,
            coins_requested: c.coins_requested,
            coins: c.coins,
            share_bps: c.creator_share_bps,
            diamonds: c.diamonds,
            from_pending: c.from_pending_diamonds,
            from_available: c.from_available_diamonds,
            to_debt: c.to_debt_diamonds,
        }
    }
}

/// One of wallet's clawback orders (coins of a reversed purchase attributed to a gift).
#[derive(Clone, Debug)]
pub struct OrderFacts {
    pub clawback_id: String,
    pub purchase_id: String,
    pub operation_id: String,
    pub coins: i64,
    pub state: wpb::ClawbackOrderState,
    pub applied_coins: i64,
    pub diamonds: i64,
}

impl From<wpb::ClawbackOrder> for OrderFacts {
    fn from(o: wpb::ClawbackOrder) -> OrderFacts {
        OrderFacts {
            state: wpb::ClawbackOrderState::try_from(o.state)
                .unwrap_or(wpb::ClawbackOrderState::Unspecified),
            clawback_id: o.clawback_id,
            purchase_id: o.purchase_id,
            operation_id: o.operation_id,
            coins: o.coins,
            applied_coins: o.applied_coins,
            diamonds: o.diamonds,
        }
    }
}

/// Payout's per-creator figures from its ledger summary.
#[derive(Clone, Debug, Default)]
pub struct CreatorFacts {
    /// Creators whose lifetime ≠ pending + available + held + paid out.
    pub lifetime_mismatches: i64,
    /// Payouts sent while their creator was in debt.
    pub payouts_sent_in_debt: i64,
    /// Debt outstanding, all creators.
    pub debt_diamonds: i64,
}

impl From<&ppb::GetLedgerSummaryResponse> for CreatorFacts {
    fn from(s: &ppb::GetLedgerSummaryResponse) -> CreatorFacts {
        CreatorFacts {
            lifetime_mismatches: s.lifetime_mismatch_count,
            payouts_sent_in_debt: s.payouts_sent_in_debt_count,
            debt_diamonds: s.debt_diamonds,
        }
    }
}

/// What I6 is judged on. Clawbacks are read whole (they are rare), not by window.
#[derive(Debug, Default)]
pub struct ClawbackEvidence {
    pub clawbacks: Vec<ClawbackFacts>,
    pub orders: Vec<OrderFacts>,
    /// The credits the clawbacks and NO_CREDIT orders name, by operation id (read by id).
    pub credits: HashMap<String, CreditFacts>,
    pub creators: CreatorFacts,
}

impl ClawbackEvidence {
    /// The operation ids whose credits the checks need.
    pub fn credits_needed(&self) -> Vec<String> {
        let ids: HashSet<&str> = self
            .clawbacks
            .iter()
            .map(|c| c.operation_id.as_str())
            .chain(
                self.orders
                    .iter()
                    .filter(|o| o.state == wpb::ClawbackOrderState::NoCredit)
                    .map(|o| o.operation_id.as_str()),
            )
            .collect();
        let mut ids: Vec<String> = ids.into_iter().map(str::to_owned).collect();
        ids.sort();
        ids
    }
}

/// The I6 checks. `sagas` are the window's; `whole` says whether they are every saga
/// (then a gift-reversal clawback must belong to one of them).
pub fn check_clawbacks(
    evidence: &ClawbackEvidence,
    sagas: &[&SagaFacts],
    whole: bool,
    report: &mut Report,
) {
    check_amounts(evidence, report);
    check_orders(evidence, report);
    check_gift_reversals(evidence, sagas, whole, report);
    let creators = &evidence.creators;
    let mismatches = creators.lifetime_mismatches;
    report.check(
        mismatches == 0,
        "I6: every creator's lifetime = pending + available + held + paid out".into(),
        || format!("I6: {mismatches} creators' lifetime ≠ pending + available + held + paid out"),
    );
    let in_debt = creators.payouts_sent_in_debt;
    report.check(
        in_debt == 0,
        "I6: no payout was sent to a creator in clawback debt".into(),
        || format!("I6: {in_debt} payouts were sent to creators in clawback debt"),
    );
    if creators.debt_diamonds > 0 {
        report.notes.push(format!(
            "creators owe {} clawed-back diamonds (settled first by their next credits)",
            creators.debt_diamonds
        ));
    }
}

/// Each clawback took floor(coins × its credit's share / 10000), split into its parts, and
/// no credit lost more coins than it had.
fn check_amounts(evidence: &ClawbackEvidence, report: &mut Report) {
    let mut wrong = Vec::new();
    let mut coins_by_credit: HashMap<&str, i64> = HashMap::new();
    for c in &evidence.clawbacks {
        let Some(credit) = evidence.credits.get(&c.operation_id) else {
            wrong.push(format!(
                "{} claws back credit {}, which payout does not have",
                c.clawback_id, c.operation_id
            ));
            continue;
        };
        *coins_by_credit.entry(c.operation_id.as_str()).or_default() += c.coins;
        let expected = diamonds_for(c.coins, credit.share_bps);
        let parts = c.from_pending + c.from_available + c.to_debt;
        if c.share_bps != credit.share_bps
            || c.diamonds != expected
            || parts != c.diamonds
            || c.coins > c.coins_requested
            || c.coins < 0
        {
            wrong.push(format!(
                "{}: {} diamonds ({} pending + {} available + {} debt) for {} of {} coins at \
                 {} bps; the credit's share is {} bps, so {expected} expected",
                c.clawback_id,
                c.diamonds,
                c.from_pending,
                c.from_available,
                c.to_debt,
                c.coins,
                c.coins_requested,
                c.share_bps,
                credit.share_bps
            ));
        }
    }
    for (operation_id, coins) in &coins_by_credit {
        if let Some(credit) = evidence.credits.get(*operation_id)
            && *coins > credit.coins
        {
            wrong.push(format!(
                "credit {operation_id} of {} coins was clawed back for {coins} coins",
                credit.coins
            ));
        }
    }
    let n = evidence.clawbacks.len();
    report.check(
        wrong.is_empty(),
        format!(
            "I6: {n} clawbacks each took floor(coins attributed × the credit's share / 10000), \
             none beyond its credit's coins"
        ),
        || format!("I6: {}", wrong.join("; ")),
    );
}

/// Wallet's orders and payout's purchase-reversal clawbacks are the same set: an answered
/// order is payout's clawback with the same figures, and payout has no purchase-reversal
/// clawback wallet did not order.
fn check_orders(evidence: &ClawbackEvidence, report: &mut Report) {
    let clawbacks: HashMap<&str, &ClawbackFacts> = evidence
        .clawbacks
        .iter()
        .map(|c| (c.clawback_id.as_str(), c))
        .collect();
    let ordered: HashSet<&str> = evidence
        .orders
        .iter()
        .map(|o| o.clawback_id.as_str())
        .collect();
    let (mut wrong, mut pending) = (Vec::new(), 0);
    for o in &evidence.orders {
        match o.state {
            wpb::ClawbackOrderState::Applied => match clawbacks.get(o.clawback_id.as_str()) {
                Some(c)
                    if c.cause == ppb::ClawbackCause::PurchaseReversal
                        && c.cause_id == o.purchase_id
                        && c.operation_id == o.operation_id
                        && c.coins_requested == o.coins
                        && c.coins == o.applied_coins
                        && c.diamonds == o.diamonds => {}
                Some(c) => wrong.push(format!(
                    "order {} ({} coins, {} applied, {} diamonds) differs from payout's \
                     clawback ({} coins, {} applied, {} diamonds)",
                    o.clawback_id,
                    o.coins,
                    o.applied_coins,
                    o.diamonds,
                    c.coins_requested,
                    c.coins,
                    c.diamonds
                )),
                None => wrong.push(format!(
                    "order {} is APPLIED but payout has no such clawback",
                    o.clawback_id
                )),
            },
            wpb::ClawbackOrderState::NoCredit => {
                if evidence.credits.contains_key(&o.operation_id) {
                    wrong.push(format!(
                        "order {} ended NO_CREDIT but payout credited {}",
                        o.clawback_id, o.operation_id
                    ));
                }
            }
            _ => pending += 1,
        }
    }
    for c in &evidence.clawbacks {
        if c.cause == ppb::ClawbackCause::PurchaseReversal
            && !ordered.contains(c.clawback_id.as_str())
        {
            wrong.push(format!(
                "payout's clawback {} names purchase {}, which wallet ordered no clawback for",
                c.clawback_id, c.cause_id
            ));
        }
    }
    let n = evidence.orders.len() - pending;
    report.check(
        wrong.is_empty(),
        format!("I6: {n} answered clawback orders of reversed purchases match payout's clawbacks"),
        || format!("I6: {}", wrong.join("; ")),
    );
    if pending > 0 {
        report.notes.push(format!(
            "{pending} clawback orders still being delivered to payout: I6 judges them once answered"
        ));
    }
}

/// A done gift reversal clawed back what payout recorded for it; with every saga at hand,
/// every gift-reversal clawback belongs to a reversed gift.
fn check_gift_reversals(
    evidence: &ClawbackEvidence,
    sagas: &[&SagaFacts],
    whole: bool,
    report: &mut Report,
) {
    let by_id: HashMap<&str, &ClawbackFacts> = evidence
        .clawbacks
        .iter()
        .map(|c| (c.clawback_id.as_str(), c))
        .collect();
    let mut wrong = Vec::new();
    let mut done = 0;
    for s in sagas {
        let Some(reversal) = s.reversal.as_ref().filter(|r| r.done) else {
            continue;
        };
        done += 1;
        let id = format!("gift:{}", s.saga_id);
        match by_id.get(id.as_str()) {
            Some(c)
                if c.cause == ppb::ClawbackCause::GiftReversal
                    && c.operation_id == s.saga_id
                    && c.diamonds == reversal.clawed_back_diamonds => {}
            Some(c) => wrong.push(format!(
                "gift {} reversal clawed back {} diamonds, payout's {} says {}",
                s.saga_id, reversal.clawed_back_diamonds, c.clawback_id, c.diamonds
            )),
            None => wrong.push(format!(
                "gift {} is reversed but payout has no clawback {id}",
                s.saga_id
            )),
        }
    }
    if whole {
        let reversed: HashSet<&str> = sagas
            .iter()
            .filter(|s| s.reversal.is_some())
            .map(|s| s.saga_id.as_str())
            .collect();
        for c in &evidence.clawbacks {
            if c.cause == ppb::ClawbackCause::GiftReversal
                && !reversed.contains(c.cause_id.as_str())
            {
                wrong.push(format!(
                    "payout's clawback {} names gift {}, which gifting has not reversed",
                    c.clawback_id, c.cause_id
                ));
            }
        }
    }
    report.check(
        wrong.is_empty(),
        format!("I6: {done} reversed gifts clawed back what payout recorded"),
        || format!("I6: {}", wrong.join("; ")),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::facts::ReversalFacts;
    use crate::audit::fixtures::*;
    use ovation_proto::gifting as gpb;

    fn clawback(id: &str, operation_id: &str, coins: i64) -> ClawbackFacts {
        let diamonds = diamonds_for(coins, 5_000);
        ClawbackFacts {
            clawback_id: id.into(),
            operation_id: operation_id.into(),
            cause: ppb::ClawbackCause::PurchaseReversal,
            cause_id: "p1".into(),
            coins_requested: coins,
            coins,
            share_bps: 5_000,
            diamonds,
            from_pending: diamonds,
            from_available: 0,
            to_debt: 0,
        }
    }

    fn order(id: &str, operation_id: &str, coins: i64) -> OrderFacts {
        OrderFacts {
            clawback_id: id.into(),
            purchase_id: "p1".into(),
            operation_id: operation_id.into(),
            coins,
            state: wpb::ClawbackOrderState::Applied,
            applied_coins: coins,
            diamonds: diamonds_for(coins, 5_000),
        }
    }

    fn evidence(clawbacks: Vec<ClawbackFacts>, orders: Vec<OrderFacts>) -> ClawbackEvidence {
        let credits = [credit("g1", 100), credit("g2", 7)]
            .into_iter()
            .map(|c| (c.operation_id.clone(), c))
            .collect();
        ClawbackEvidence {
            clawbacks,
            orders,
            credits,
            creators: CreatorFacts::default(),
        }
    }

    fn reversed(id: &str, coins: i64, clawed: i64) -> SagaFacts {
        SagaFacts {
            reversal: Some(ReversalFacts {
                done: true,
                return_coins: false,
                clawed_back_diamonds: clawed,
                returned_coins: 0,
            }),
            ..saga(id, gpb::SagaStatus::Completed, coins)
        }
    }

    fn judge(e: &ClawbackEvidence, sagas: &[SagaFacts]) -> Report {
        let sagas: Vec<&SagaFacts> = sagas.iter().collect();
        let mut r = Report::default();
        check_clawbacks(e, &sagas, true, &mut r);
        r
    }

    #[test]
    fn matching_clawbacks_orders_and_reversals_pass() {
        let gift = ClawbackFacts {
            cause: ppb::ClawbackCause::GiftReversal,
            cause_id: "g2".into(),
            ..clawback("gift:g2", "g2", 7)
        };
        let e = evidence(
            vec![
                clawback("purchase:p1:g1", "g1", 60),
                // A second reversal reaching g1 for what is left of it.
                ClawbackFacts {
                    coins: 40,
                    diamonds: 20,
                    from_pending: 0,
                    from_available: 15,
                    to_debt: 5,
                    ..clawback("purchase:p2:g1", "g1", 90)
                },
                gift,
            ],
            vec![
                order("purchase:p1:g1", "g1", 60),
                OrderFacts {
                    applied_coins: 40,
                    diamonds: 20,
                    ..order("purchase:p2:g1", "g1", 90)
                },
            ],
        );
        let r = judge(&e, &[reversed("g2", 7, 3)]);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.checks.len(), 5, "{:?}", r.checks);
    }

    #[test]
    fn wrong_amounts_missing_sides_and_debt_payouts_are_violations() {
        let cases: Vec<(ClawbackEvidence, Vec<SagaFacts>)> = vec![
            // diamonds not the floor of the share
            (
                evidence(
                    vec![ClawbackFacts {
                        diamonds: 31,
                        from_pending: 31,
                        ..clawback("purchase:p1:g1", "g1", 60)
                    }],
                    vec![],
                ),
                vec![],
            ),
            // parts do not add up
            (
                evidence(
                    vec![ClawbackFacts {
                        to_debt: 1,
                        ..clawback("purchase:p1:g1", "g1", 60)
                    }],
                    vec![order("purchase:p1:g1", "g1", 60)],
                ),
                vec![],
            ),
            // more coins than the credit had
            (
                evidence(
                    vec![
                        clawback("purchase:p1:g1", "g1", 60),
                        clawback("purchase:p2:g1", "g1", 60),
                    ],
                    vec![
                        order("purchase:p1:g1", "g1", 60),
                        order("purchase:p2:g1", "g1", 60),
                    ],
                ),
                vec![],
            ),
            // a clawback of a credit payout does not have
            (
                evidence(vec![clawback("purchase:p1:zz", "zz", 2)], vec![]),
                vec![],
            ),
            // an applied order payout has no clawback for
            (
                evidence(vec![], vec![order("purchase:p1:g1", "g1", 60)]),
                vec![],
            ),
            // a purchase clawback wallet never ordered
            (
                evidence(vec![clawback("purchase:p1:g1", "g1", 60)], vec![]),
                vec![],
            ),
            // NO_CREDIT although payout credited the gift
            (
                evidence(
                    vec![],
                    vec![OrderFacts {
                        state: wpb::ClawbackOrderState::NoCredit,
                        ..order("purchase:p1:g1", "g1", 60)
                    }],
                ),
                vec![],
            ),
            // a reversed gift without its clawback
            (evidence(vec![], vec![]), vec![reversed("g2", 7, 3)]),
            // a gift clawback for a gift gifting did not reverse
            (
                evidence(
                    vec![ClawbackFacts {
                        cause: ppb::ClawbackCause::GiftReversal,
                        cause_id: "g2".into(),
                        ..clawback("gift:g2", "g2", 7)
                    }],
                    vec![],
                ),
                vec![saga("g2", gpb::SagaStatus::Completed, 7)],
            ),
        ];
        for (e, sagas) in cases {
            let r = judge(&e, &sagas);
            assert!(!r.violations.is_empty(), "missed: {e:?} {sagas:?}");
        }
        let mut e = evidence(vec![], vec![]);
        e.creators.lifetime_mismatches = 1;
        assert_eq!(judge(&e, &[]).violations.len(), 1);
        let mut e = evidence(vec![], vec![]);
        e.creators.payouts_sent_in_debt = 2;
        assert_eq!(judge(&e, &[]).violations.len(), 1);
    }

    #[test]
    fn orders_not_yet_answered_are_noted_not_judged() {
        let e = evidence(
            vec![],
            vec![OrderFacts {
                state: wpb::ClawbackOrderState::Pending,
                applied_coins: 0,
                diamonds: 0,
                ..order("purchase:p1:g1", "g1", 60)
            }],
        );
        let r = judge(&e, &[]);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("1 clawback orders still"))
        );
    }
}
