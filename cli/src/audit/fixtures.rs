//! Sagas, debits and credits for the audit's unit tests.

use std::collections::HashSet;

use ovation_proto::gifting as gpb;

use super::diamonds_for;
use super::facts::{CreditFacts, DebitFacts, Facts, SagaFacts};
use super::window::{Window, WindowArgs};

pub fn saga(id: &str, status: gpb::SagaStatus, coins: i64) -> SagaFacts {
    let diamonds = if status == gpb::SagaStatus::Completed {
        diamonds_for(coins, 5_000)
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
        reversal: None,
    }
}

pub fn debit(id: &str, coins: i64, refunded: i64) -> DebitFacts {
    DebitFacts {
        operation_id: id.into(),
        coins,
        refunded,
        created_at_ms: 0,
    }
}

pub fn credit(id: &str, coins: i64) -> CreditFacts {
    CreditFacts {
        operation_id: id.into(),
        coins,
        share_bps: 5_000,
        diamonds: diamonds_for(coins, 5_000),
        created_at_ms: 0,
    }
}

/// A saga created at `at`.
pub fn saga_at(id: &str, status: gpb::SagaStatus, coins: i64, at: i64) -> SagaFacts {
    SagaFacts {
        created_at_ms: at,
        ..saga(id, status, coins)
    }
}

pub fn debit_at(id: &str, coins: i64, refunded: i64, at: i64) -> DebitFacts {
    DebitFacts {
        created_at_ms: at,
        ..debit(id, coins, refunded)
    }
}

pub fn credit_at(id: &str, coins: i64, at: i64) -> CreditFacts {
    CreditFacts {
        created_at_ms: at,
        ..credit(id, coins)
    }
}

pub fn facts(sagas: Vec<SagaFacts>, debits: Vec<DebitFacts>, credits: Vec<CreditFacts>) -> Facts {
    Facts {
        sagas,
        debits,
        credits,
        sagas_elsewhere: HashSet::new(),
    }
}

/// `[since, until)` with the default slack.
pub fn window(since: Option<i64>, until: Option<i64>) -> Window {
    Window::new(&WindowArgs { since, until }).unwrap()
}
