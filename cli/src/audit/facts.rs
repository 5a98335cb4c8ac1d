//! What the audit reads from the services: sagas, debits and credits, as the checks need
//! them, and which of them a window's listings left to look up by id.

use std::collections::HashSet;

use ovation_proto::{gifting as gpb, payout as ppb, wallet as wpb};
use ovation_types::UnixMillis;
use prost_types::Timestamp;

use super::window::Window;

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
    /// An admin's reversal of the gift, if any.
    pub reversal: Option<ReversalFacts>,
}

/// A gift reversal as the audit needs it (I3, I5 with returned coins; I6).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReversalFacts {
    /// DONE: the clawback (and refund) went through; otherwise still being applied.
    pub done: bool,
    pub return_coins: bool,
    pub clawed_back_diamonds: i64,
    pub returned_coins: i64,
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

/// Unix ms of a proto timestamp; 0 if unset or out of range.
fn millis(ts: Option<Timestamp>) -> i64 {
    ts.and_then(|t| UnixMillis::from_parts(t.seconds, t.nanos).ok())
        .map_or(0, |t| t.0)
}

impl From<gpb::GiftReceipt> for SagaFacts {
    fn from(r: gpb::GiftReceipt) -> SagaFacts {
        SagaFacts {
            created_at_ms: millis(r.create_time),
            saga_id: r.saga_id,
            status: gpb::SagaStatus::try_from(r.status).unwrap_or(gpb::SagaStatus::Unspecified),
            total_coins: r.total_coins,
            share_bps: r.creator_share_bps,
            diamonds_recorded: r.diamonds_credited,
            reversal: r.reversal.map(|v| ReversalFacts {
                done: gpb::GiftReversalState::try_from(v.state) == Ok(gpb::GiftReversalState::Done),
                return_coins: v.return_coins,
                clawed_back_diamonds: v.clawed_back_diamonds,
                returned_coins: v.returned_coins,
            }),
        }
    }
}

impl From<wpb::Debit> for DebitFacts {
    fn from(d: wpb::Debit) -> DebitFacts {
        DebitFacts {
            created_at_ms: millis(d.create_time),
            operation_id: d.operation_id,
            coins: d.coins,
            refunded: d.refunded_coins,
        }
    }
}

impl From<ppb::Credit> for CreditFacts {
    fn from(c: ppb::Credit) -> CreditFacts {
        CreditFacts {
            created_at_ms: millis(c.create_time),
            operation_id: c.operation_id,
            coins: c.coins,
            share_bps: c.creator_share_bps,
            diamonds: c.diamonds,
        }
    }
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
    /// The window's sagas (those read are already the window's; tests give others too).
    pub fn window_sagas<'a>(&'a self, window: &'a Window) -> impl Iterator<Item = &'a SagaFacts> {
        self.sagas
            .iter()
            .filter(|s| window.contains(s.created_at_ms))
    }

    /// The lookups the window needs after its listings (see the module doc of `audit`).
    pub fn unmatched(&self, window: &Window) -> Unmatched {
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
        for s in self.window_sagas(window) {
            if !debited.contains(s.saga_id.as_str()) {
                unmatched.sagas_without_debit.push(s.saga_id.clone());
            }
            if !credited.contains(s.saga_id.as_str()) {
                unmatched.sagas_without_credit.push(s.saga_id.clone());
            }
        }
        unmatched.strays = self.strays(window);
        unmatched
    }

    /// Operation ids of the debits and credits created in the window that are no window
    /// saga's, sorted, each once.
    fn strays(&self, window: &Window) -> Vec<String> {
        let sagas: HashSet<&str> = self
            .window_sagas(window)
            .map(|s| s.saga_id.as_str())
            .collect();
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
        strays
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::fixtures::*;

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
}
