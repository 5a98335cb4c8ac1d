//! Domain → proto: receipts (with their reversal), operator views of sagas, gift events,
//! leaderboards, and the saga enums both ways (each value named, never cast).

use ovation_proto::gifting as pb;
use ovation_server::edge::to_timestamp;

use super::feed;
use crate::domain::{EventKind, Rejection, Reversal, ReversalState, Status, Step};
use crate::store::{EventRow, Leaderboard, SagaRow};

impl From<Status> for pb::SagaStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Pending => pb::SagaStatus::Pending,
            Status::Completed => pb::SagaStatus::Completed,
            Status::Rejected => pb::SagaStatus::Rejected,
            Status::Compensated => pb::SagaStatus::Compensated,
            Status::NeedsOperator => pb::SagaStatus::NeedsOperator,
        }
    }
}

/// A saga status a request names; UNSPECIFIED is none.
impl TryFrom<pb::SagaStatus> for Status {
    type Error = String;

    fn try_from(s: pb::SagaStatus) -> Result<Self, String> {
        Ok(match s {
            pb::SagaStatus::Pending => Status::Pending,
            pb::SagaStatus::Completed => Status::Completed,
            pb::SagaStatus::Rejected => Status::Rejected,
            pb::SagaStatus::Compensated => Status::Compensated,
            pb::SagaStatus::NeedsOperator => Status::NeedsOperator,
            pb::SagaStatus::Unspecified => return Err("is not a saga status".into()),
        })
    }
}

impl From<Step> for pb::SagaStep {
    fn from(s: Step) -> Self {
        match s {
            Step::ResolveGift => pb::SagaStep::ResolveGift,
            Step::DebitCoins => pb::SagaStep::DebitCoins,
            Step::CreditDiamonds => pb::SagaStep::CreditDiamonds,
            Step::RefundCoins => pb::SagaStep::RefundCoins,
            Step::Done => pb::SagaStep::Done,
        }
    }
}

impl From<Rejection> for pb::RejectionReason {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::None => pb::RejectionReason::Unspecified,
            Rejection::InsufficientCoins => pb::RejectionReason::InsufficientCoins,
            Rejection::SpendCapExceeded => pb::RejectionReason::SpendCapExceeded,
            Rejection::MinorAccount => pb::RejectionReason::MinorAccount,
            Rejection::AccountInDebt => pb::RejectionReason::AccountInDebt,
            Rejection::SenderNotFound => pb::RejectionReason::SenderNotFound,
            Rejection::GiftNotFound => pb::RejectionReason::GiftNotFound,
            Rejection::GiftUnavailable => pb::RejectionReason::GiftUnavailable,
            Rejection::CreatorNotFound => pb::RejectionReason::CreatorNotFound,
            Rejection::CreatorSuspended => pb::RejectionReason::CreatorSuspended,
            Rejection::Other => pb::RejectionReason::Other,
        }
    }
}

impl From<ReversalState> for pb::GiftReversalState {
    fn from(s: ReversalState) -> Self {
        match s {
            ReversalState::Pending => pb::GiftReversalState::Pending,
            ReversalState::Done => pb::GiftReversalState::Done,
            ReversalState::NeedsOperator => pb::GiftReversalState::NeedsOperator,
        }
    }
}

impl From<EventKind> for pb::GiftEventKind {
    fn from(k: EventKind) -> Self {
        match k {
            EventKind::Sent => pb::GiftEventKind::Sent,
            EventKind::Reversed => pb::GiftEventKind::Reversed,
        }
    }
}

fn reversal(r: &Reversal) -> pb::GiftReversal {
    pb::GiftReversal {
        actor: r.actor.clone(),
        reason: r.reason.clone(),
        return_coins: r.return_coins,
        state: pb::GiftReversalState::from(r.state).into(),
        clawed_back_diamonds: r.clawed_back_diamonds,
        returned_coins: r.returned_coins,
        create_time: Some(to_timestamp(r.created_at)),
        done_time: r.done_at.map(to_timestamp),
    }
}

/// The receipt of a saga, with its reversal; the sender's balance only for those who may
/// see it.
pub fn receipt(row: &SagaRow, with_balance: bool) -> pb::GiftReceipt {
    let s = &row.saga;
    let q = s.quote;
    pb::GiftReceipt {
        saga_id: s.saga_id.clone(),
        status: pb::SagaStatus::from(s.status).into(),
        sender_user_id: s.sender_user_id.clone(),
        creator_id: s.creator_id.clone(),
        stream_id: s.stream_id.clone(),
        gift_id: s.gift_id.clone(),
        quantity: s.quantity,
        message: s.message.clone(),
        gift_version: q.map_or(0, |q| q.gift_version),
        unit_price_coins: q.map_or(0, |q| q.unit_price_coins),
        total_coins: q.map_or(0, |q| q.total_coins),
        creator_share_bps: q.map_or(0, |q| q.creator_share_bps),
        economy_version: q.map_or(0, |q| q.economy_version),
        coins_spent: s.coins_spent,
        diamonds_credited: s.diamonds_credited,
        sender_balance_after_coins: if with_balance {
            s.sender_balance_after
        } else {
            None
        },
        rejection_reason: pb::RejectionReason::from(s.rejection).into(),
        rejection_detail: s.rejection_detail.clone(),
        create_time: Some(to_timestamp(s.created_at)),
        complete_time: s.completed_at.map(to_timestamp),
        reversal: row.reversal.as_ref().map(|r| reversal(&r.reversal)),
    }
}

/// A saga as operators see it: its receipt (with the balance), step, operations, lease.
/// For a completed gift whose reversal is not done, the attempts, last error, next attempt
/// and lease are the reversal's: that is what runs, or waits for the operator.
pub fn saga(r: &SagaRow) -> pb::Saga {
    if let Some(rev) = r
        .reversal
        .as_ref()
        .filter(|rev| rev.reversal.state != ReversalState::Done)
    {
        let live = rev.reversal.state == ReversalState::Pending;
        return pb::Saga {
            attempts: i32::try_from(rev.reversal.attempts).unwrap_or(i32::MAX),
            last_error: rev.reversal.last_error.clone(),
            next_attempt_time: live.then(|| to_timestamp(rev.reversal.next_attempt_at)),
            lease_owner: rev.lease_owner.clone(),
            lease_expire_time: (!rev.lease_owner.is_empty())
                .then(|| to_timestamp(rev.lease_expires_at)),
            update_time: Some(to_timestamp(rev.reversal.updated_at)),
            ..saga_itself(r)
        };
    }
    saga_itself(r)
}

fn saga_itself(r: &SagaRow) -> pb::Saga {
    let s = &r.saga;
    let live = s.status == Status::Pending;
    pb::Saga {
        receipt: Some(receipt(r, true)),
        step: pb::SagaStep::from(s.step).into(),
        debit_operation_id: s.operation_id().to_owned(),
        credit_operation_id: s.operation_id().to_owned(),
        refund_operation_id: if s.refund_started {
            s.refund_operation_id()
        } else {
            String::new()
        },
        attempts: i32::try_from(s.attempts).unwrap_or(i32::MAX),
        last_error: s.last_error.clone(),
        next_attempt_time: live.then(|| to_timestamp(s.next_attempt_at)),
        lease_owner: r.lease_owner.clone(),
        lease_expire_time: (!r.lease_owner.is_empty()).then(|| to_timestamp(r.lease_expires_at)),
        update_time: Some(to_timestamp(s.updated_at)),
    }
}

pub fn event(e: &EventRow) -> pb::GiftEvent {
    pb::GiftEvent {
        cursor: feed::cursor(&e.stream_id, e.seq),
        saga_id: e.saga_id.clone(),
        stream_id: e.stream_id.clone(),
        sender_user_id: e.sender_user_id.clone(),
        creator_id: e.creator_id.clone(),
        gift_id: e.gift_id.clone(),
        gift_version: e.gift_version,
        quantity: i32::try_from(e.quantity).unwrap_or(0),
        coins: e.coins,
        diamonds: e.diamonds,
        message: e.message.clone(),
        complete_time: Some(to_timestamp(e.completed_at)),
        kind: pb::GiftEventKind::from(e.kind).into(),
    }
}

pub fn leaderboard(stream_id: String, board: &Leaderboard) -> pb::GetStreamLeaderboardResponse {
    pb::GetStreamLeaderboardResponse {
        stream_id,
        entries: board
            .entries
            .iter()
            .enumerate()
            .map(|(i, (sender, coins, count))| pb::LeaderboardEntry {
                rank: i32::try_from(i + 1).unwrap_or(i32::MAX),
                sender_user_id: sender.clone(),
                coins: *coins,
                gift_count: *count,
            })
            .collect(),
        totals: Some(pb::StreamTotals {
            gift_count: board.gift_count,
            gift_quantity: board.quantity,
            coins: board.coins,
            diamonds: board.diamonds,
            gifter_count: board.gifters,
            last_gift_time: board.last_gift_at.map(to_timestamp),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value goes on the wire as the contract's number, which is also its stored
    /// code (pinned in the domain's tests); a status named in a request reads back.
    #[test]
    fn saga_enums_go_out_as_the_contracts_numbers() {
        for code in 0..=11 {
            if let Some(status) = Status::from_code(code) {
                assert_eq!(i64::from(i32::from(pb::SagaStatus::from(status))), code);
                assert_eq!(Status::try_from(pb::SagaStatus::from(status)), Ok(status));
            }
            if let Some(step) = Step::from_code(code) {
                assert_eq!(i64::from(i32::from(pb::SagaStep::from(step))), code);
            }
            if let Some(rejection) = Rejection::from_code(code) {
                assert_eq!(
                    i64::from(i32::from(pb::RejectionReason::from(rejection))),
                    code
                );
            }
        }
        assert!(Status::try_from(pb::SagaStatus::Unspecified).is_err());
    }
}
