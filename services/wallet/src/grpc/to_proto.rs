//! Domain values into the contract's messages. Enums map by `match`, never by casts, so
//! a domain value the contract cannot say is a compile error, not a wrong number.

use ovation_proto::wallet as pb;
use ovation_server::edge::to_timestamp;
use ovation_types::{ResourceId, UnixMillis};

use crate::domain::{
    self, AccountKind, Caps, ClawbackOrderState, HoldState, LimitsStatus, PaymentProviderKind,
    PurchaseState, Reason,
};
use crate::store::{
    AccountRow, ClawbackOrderRow, DebitRow, EntryRow, HoldRow, LedgerSummary, PurchaseRow,
    RefundRow,
};

pub fn balance(a: &AccountRow) -> pb::Balance {
    pb::Balance {
        user_id: a.user_id.as_str().to_owned(),
        posted_coins: a.balance.posted,
        held_coins: a.balance.held,
        available_coins: a.balance.available(),
        debt_coins: a.balance.debt,
    }
}

pub fn account(a: &AccountRow) -> pb::Account {
    pb::Account {
        user_id: a.user_id.as_str().to_owned(),
        minor: a.age.minor,
        adult_verified: a.age.adult_verified,
        balance: Some(balance(a)),
        create_time: Some(to_timestamp(a.created_at)),
        update_time: Some(to_timestamp(a.updated_at)),
    }
}

pub fn purchase(p: &PurchaseRow) -> pb::Purchase {
    pb::Purchase {
        purchase_id: p.purchase_id.as_str().to_owned(),
        user_id: p.user_id.as_str().to_owned(),
        package_id: p.package_id.as_str().to_owned(),
        package_version: p.package_version,
        price: Some(ovation_proto::common::Money {
            currency_code: p.currency_code.as_str().to_owned(),
            amount_minor: p.amount_minor,
        }),
        package_coins: p.package_coins.get(),
        bonus_coins: p.bonus_coins,
        coins_credited: p.package_coins.get() + p.bonus_coins,
        promotion_id: p.promotion_id.clone(),
        promotion_version: p.promotion_version,
        state: pb::PurchaseState::from(p.state).into(),
        decline_reason: p.decline_reason.clone(),
        provider_reference: p.provider_reference.clone(),
        reversal: p.reversed_at.map(|at| pb::PurchaseReversal {
            actor: p.reversal_actor.clone(),
            reason: p.reversal_reason.clone(),
            clawed_back_coins: p.reversal_clawed_back,
            debt_coins: p.reversal_debt,
            reverse_time: Some(to_timestamp(at)),
            attributed_coins: p.attribution.attributed_coins,
            clawback_order_count: count(p.attribution.order_count),
            clawback_orders_done_count: count(p.attribution.orders_done_count),
        }),
        create_time: Some(to_timestamp(p.created_at)),
        update_time: Some(to_timestamp(p.updated_at)),
        payment_provider: payment_provider(p.payment_provider).into(),
        next_action: (!p.next_action.is_empty()).then(|| pb::PaymentNextAction {
            r#type: p.next_action.action_type.clone(),
            client_secret: p.next_action.client_secret.clone(),
            redirect_url: p.next_action.redirect_url.clone(),
        }),
    }
}

fn payment_provider(kind: PaymentProviderKind) -> pb::PaymentProvider {
    match kind {
        PaymentProviderKind::Sandbox => pb::PaymentProvider::Sandbox,
        PaymentProviderKind::Stripe => pb::PaymentProvider::Stripe,
        PaymentProviderKind::AppStore => pb::PaymentProvider::AppStore,
        PaymentProviderKind::GooglePlay => pb::PaymentProvider::GooglePlay,
    }
}

/// A stored count as the contract's int32 (saturating: counts are bounded far below).
fn count(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

pub fn clawback_order(o: &ClawbackOrderRow) -> pb::ClawbackOrder {
    pb::ClawbackOrder {
        clawback_id: o.clawback_id.clone(),
        purchase_id: o.purchase_id.as_str().to_owned(),
        operation_id: o.operation_id.as_str().to_owned(),
        user_id: o.user_id.as_str().to_owned(),
        coins: o.coins,
        state: pb::ClawbackOrderState::from(o.state).into(),
        diamonds: o.diamonds,
        applied_coins: o.applied_coins,
        attempts: count(o.attempts),
        last_error: o.last_error.clone(),
        create_time: Some(to_timestamp(o.created_at)),
        done_time: o.done_at.map(to_timestamp),
    }
}

/// An optional id as the contract has it: "" when there is none.
fn id_or_empty(id: Option<&ResourceId>) -> String {
    id.map_or_else(String::new, |id| id.as_str().to_owned())
}

pub fn debit(d: &DebitRow) -> pb::Debit {
    pb::Debit {
        operation_id: d.operation_id.as_str().to_owned(),
        user_id: d.user_id.as_str().to_owned(),
        coins: d.coins.get(),
        saga_id: id_or_empty(d.saga_id.as_ref()),
        note: d.note.as_str().to_owned(),
        from_hold: d.from_hold,
        available_coins_after: d.available_after,
        refunded_coins: d.refunded_coins,
        refund_operation_id: id_or_empty(d.refund_operation_id.as_ref()),
        create_time: Some(to_timestamp(d.created_at)),
        refund_time: d.refunded_at.map(to_timestamp),
    }
}

pub fn refund(r: &RefundRow) -> pb::Refund {
    pb::Refund {
        operation_id: r.operation_id.as_str().to_owned(),
        debit_operation_id: r.debit_operation_id.as_str().to_owned(),
        user_id: r.user_id.as_str().to_owned(),
        coins: r.coins.get(),
        note: r.note.as_str().to_owned(),
        available_coins_after: r.available_after,
        create_time: Some(to_timestamp(r.created_at)),
    }
}

pub fn hold(h: &HoldRow) -> pb::Hold {
    pb::Hold {
        operation_id: h.operation_id.as_str().to_owned(),
        user_id: h.user_id.as_str().to_owned(),
        coins: h.coins.get(),
        state: pb::HoldState::from(h.state).into(),
        captured_coins: h.captured_coins,
        saga_id: id_or_empty(h.saga_id.as_ref()),
        note: h.note.as_str().to_owned(),
        expire_time: Some(to_timestamp(h.expire_at)),
        create_time: Some(to_timestamp(h.created_at)),
        update_time: Some(to_timestamp(h.updated_at)),
    }
}

pub fn transaction(e: &EntryRow) -> pb::Transaction {
    pb::Transaction {
        transaction_id: e.entry_id.clone(),
        user_id: e.user_id.as_str().to_owned(),
        reason: pb::TransactionReason::from(e.reason).into(),
        coins: e.delta,
        posted_coins_after: e.posted_after,
        purchase_id: id_or_empty(e.purchase_id.as_ref()),
        operation_id: id_or_empty(e.operation_id.as_ref()),
        saga_id: id_or_empty(e.saga_id.as_ref()),
        actor: e.actor.clone(),
        note: e.note.clone(),
        create_time: Some(to_timestamp(e.created_at)),
    }
}

pub fn ledger_summary(summary: &LedgerSummary, as_of: UnixMillis) -> pb::GetLedgerSummaryResponse {
    pb::GetLedgerSummaryResponse {
        kinds: summary
            .kinds
            .iter()
            .map(
                |&(kind, account_count, balance_coins)| pb::AccountKindSummary {
                    kind: pb::AccountKind::from(kind).into(),
                    account_count,
                    balance_coins,
                },
            )
            .collect(),
        total_coins: summary.total,
        unbalanced_entry_count: summary.unbalanced_entries + summary.balance_mismatches,
        negative_balance_count: summary.negative_balances,
        journal_entry_count: summary.entries,
        total_debt_coins: summary.total_debt,
        as_of_time: Some(to_timestamp(as_of)),
    }
}

impl From<PurchaseState> for pb::PurchaseState {
    fn from(state: PurchaseState) -> Self {
        match state {
            PurchaseState::Pending => pb::PurchaseState::Pending,
            PurchaseState::Completed => pb::PurchaseState::Completed,
            PurchaseState::Declined => pb::PurchaseState::Declined,
            PurchaseState::Reversed => pb::PurchaseState::Reversed,
        }
    }
}

impl From<ClawbackOrderState> for pb::ClawbackOrderState {
    fn from(state: ClawbackOrderState) -> Self {
        match state {
            ClawbackOrderState::Pending => pb::ClawbackOrderState::Pending,
            ClawbackOrderState::Applied => pb::ClawbackOrderState::Applied,
            ClawbackOrderState::NoCredit => pb::ClawbackOrderState::NoCredit,
        }
    }
}

impl From<HoldState> for pb::HoldState {
    fn from(state: HoldState) -> Self {
        match state {
            HoldState::Active => pb::HoldState::Active,
            HoldState::Captured => pb::HoldState::Captured,
            HoldState::Released => pb::HoldState::Released,
            HoldState::Expired => pb::HoldState::Expired,
        }
    }
}

impl From<Reason> for pb::TransactionReason {
    fn from(reason: Reason) -> Self {
        match reason {
            Reason::Purchase => pb::TransactionReason::Purchase,
            Reason::PromotionBonus => pb::TransactionReason::PromotionBonus,
            Reason::GiftDebit => pb::TransactionReason::GiftDebit,
            Reason::HoldCapture => pb::TransactionReason::HoldCapture,
            Reason::GiftRefund => pb::TransactionReason::GiftRefund,
            Reason::PurchaseReversal => pb::TransactionReason::PurchaseReversal,
            Reason::DebtSettlement => pb::TransactionReason::DebtSettlement,
        }
    }
}

impl From<AccountKind> for pb::AccountKind {
    fn from(kind: AccountKind) -> Self {
        match kind {
            AccountKind::User => pb::AccountKind::User,
            AccountKind::Issuance => pb::AccountKind::Issuance,
            AccountKind::Promotion => pb::AccountKind::Promotion,
            AccountKind::GiftSink => pb::AccountKind::GiftSink,
            AccountKind::Adjustment => pb::AccountKind::Adjustment,
        }
    }
}

fn caps(c: &Caps) -> pb::SpendingCaps {
    pb::SpendingCaps {
        daily_spend_coins: c.daily_spend,
        monthly_spend_coins: c.monthly_spend,
        daily_purchase_coins: c.daily_purchase,
        monthly_purchase_coins: c.monthly_purchase,
    }
}

pub fn limits(status: &LimitsStatus) -> pb::SpendingLimits {
    let limits = &status.limits;
    pb::SpendingLimits {
        user_id: status.user_id.as_str().to_owned(),
        effective: Some(caps(&limits.effective)),
        pending: limits.pending.map(|(c, _)| caps(&c)),
        pending_effective_time: limits.pending.map(|(_, at)| to_timestamp(at)),
        usage: Some(pb::SpendingUsage {
            spent_today_coins: status.spent.today,
            spent_this_month_coins: status.spent.this_month,
            purchased_today_coins: status.bought.today,
            purchased_this_month_coins: status.bought.this_month,
            day_reset_time: Some(to_timestamp(domain::day_window(status.at).1)),
            month_reset_time: Some(to_timestamp(domain::month_window(status.at).1)),
        }),
        updated_by: limits.updated_by.clone(),
        update_time: limits.updated_at.map(to_timestamp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract's numbers are the stored ones: what the database keeps and what the
    /// wire carries never drift apart.
    #[test]
    fn enums_carry_their_stored_numbers() {
        let wire = |n: i32| i64::from(n);
        for state in PurchaseState::ALL {
            assert_eq!(wire(pb::PurchaseState::from(state).into()), state.code());
        }
        for state in HoldState::ALL {
            assert_eq!(wire(pb::HoldState::from(state).into()), state.code());
        }
        for reason in Reason::ALL {
            assert_eq!(
                wire(pb::TransactionReason::from(reason).into()),
                reason.code()
            );
        }
        let kinds: Vec<i32> = AccountKind::ALL
            .into_iter()
            .map(|k| pb::AccountKind::from(k).into())
            .collect();
        assert_eq!(
            kinds,
            [1, 2, 3, 4, 5],
            "in enum order, as the summary lists them"
        );
    }
}
