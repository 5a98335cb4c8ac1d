//! The `google.rpc.ErrorInfo.reason` codes each service sends, one module per contract.
//!
//! They are part of the contract, as the `.proto` files are: clients branch on them, so the
//! strings never change once published. The code that raises a reason and the code that
//! matches it (gifting's saga judging wallet's and payout's refusals) both name these
//! constants, so neither can drift from the other; a client needs only this crate, not the
//! service that raises them.

/// Reasons any service may send: the shared server layer raises them.
pub mod common {
    /// ALREADY_EXISTS: the idempotency key was used before with different parameters.
    pub const IDEMPOTENCY_KEY_REUSED: &str = "IDEMPOTENCY_KEY_REUSED";
    /// ABORTED: a request with this idempotency key is still running; retry.
    pub const IDEMPOTENCY_KEY_IN_PROGRESS: &str = "IDEMPOTENCY_KEY_IN_PROGRESS";
    /// RESOURCE_EXHAUSTED: a velocity limit (purchases per hour, gifts from one sender to
    /// one creator per minute) would be exceeded; nothing was recorded.
    pub const VELOCITY_LIMIT: &str = "VELOCITY_LIMIT";
}

/// `ovation.catalog.v1`.
pub mod catalog {
    /// ABORTED: the `expected_version` is not the current one; re-read and retry.
    pub const VERSION_MISMATCH: &str = "VERSION_MISMATCH";
    /// ALREADY_EXISTS: an item with this id exists.
    pub const ALREADY_EXISTS: &str = "ALREADY_EXISTS";
    /// ABORTED: a concurrent update won; re-read and retry.
    pub const CONCURRENT_UPDATE: &str = "CONCURRENT_UPDATE";
    /// FAILED_PRECONDITION: the gift exists but may not be sent now.
    pub const GIFT_NOT_SENDABLE: &str = "GIFT_NOT_SENDABLE";
    /// FAILED_PRECONDITION: no economy parameters are set yet.
    pub const ECONOMY_NOT_CONFIGURED: &str = "ECONOMY_NOT_CONFIGURED";
}

/// `ovation.wallet.v1`.
pub mod wallet {
    /// FAILED_PRECONDITION: the account belongs to a minor, who may not spend or buy.
    pub const MINOR_ACCOUNT: &str = "MINOR_ACCOUNT";
    /// FAILED_PRECONDITION: the caller's age is not verified and the wallet requires it.
    pub const AGE_NOT_VERIFIED: &str = "AGE_NOT_VERIFIED";
    /// FAILED_PRECONDITION: the account owes coins (a reversed purchase) and may not spend.
    pub const ACCOUNT_IN_DEBT: &str = "ACCOUNT_IN_DEBT";
    /// FAILED_PRECONDITION: the balance does not cover the debit.
    pub const INSUFFICIENT_COINS: &str = "INSUFFICIENT_COINS";
    /// RESOURCE_EXHAUSTED: the debit would pass the account's spending cap.
    pub const SPEND_CAP_EXCEEDED: &str = "SPEND_CAP_EXCEEDED";
    /// RESOURCE_EXHAUSTED: the purchase would pass the account's purchase cap.
    pub const PURCHASE_CAP_EXCEEDED: &str = "PURCHASE_CAP_EXCEEDED";
    /// ALREADY_EXISTS: the operation id was used before with other parameters.
    pub const OPERATION_ID_REUSED: &str = "OPERATION_ID_REUSED";
    /// ALREADY_EXISTS: the account is open already.
    pub const ACCOUNT_EXISTS: &str = "ACCOUNT_EXISTS";
    /// FAILED_PRECONDITION: the coin package is not on sale.
    pub const PACKAGE_UNAVAILABLE: &str = "PACKAGE_UNAVAILABLE";
    /// FAILED_PRECONDITION: the package's price is not the one the caller saw.
    pub const PRICE_CHANGED: &str = "PRICE_CHANGED";
    /// FAILED_PRECONDITION: the refund is larger than what is left of the debit.
    pub const REFUND_EXCEEDS_DEBIT: &str = "REFUND_EXCEEDS_DEBIT";
    /// FAILED_PRECONDITION: the debit was refunded already.
    pub const ALREADY_REFUNDED: &str = "ALREADY_REFUNDED";
    /// FAILED_PRECONDITION: the credit would take the balance beyond its limit.
    pub const BALANCE_LIMIT: &str = "BALANCE_LIMIT";
    /// FAILED_PRECONDITION: the hold changed during the request; read it and retry.
    pub const HOLD_CHANGED: &str = "HOLD_CHANGED";
    /// FAILED_PRECONDITION: the hold was captured (with other parameters, or it cannot be released).
    pub const HOLD_CAPTURED: &str = "HOLD_CAPTURED";
    /// FAILED_PRECONDITION: the hold is not active.
    pub const HOLD_NOT_ACTIVE: &str = "HOLD_NOT_ACTIVE";
    /// FAILED_PRECONDITION: the hold expired.
    pub const HOLD_EXPIRED: &str = "HOLD_EXPIRED";
    /// FAILED_PRECONDITION: the capture is larger than the hold.
    pub const CAPTURE_EXCEEDS_HOLD: &str = "CAPTURE_EXCEEDS_HOLD";
    /// FAILED_PRECONDITION: the hold is not covered by the account.
    pub const HOLD_INCONSISTENT: &str = "HOLD_INCONSISTENT";
    /// FAILED_PRECONDITION: debt settlement found too few coins.
    pub const DEBT_SETTLEMENT: &str = "DEBT_SETTLEMENT";
    /// FAILED_PRECONDITION: the purchase to reverse has not completed.
    pub const PURCHASE_NOT_COMPLETED: &str = "PURCHASE_NOT_COMPLETED";
    /// FAILED_PRECONDITION: the balance changed during the reversal; retry.
    pub const REVERSAL_RACE: &str = "REVERSAL_RACE";
    /// ALREADY_EXISTS: this App Store transaction was already redeemed (by this account
    /// under another idempotency key, or by another account); it credits once.
    pub const APP_STORE_TRANSACTION_REDEEMED: &str = "APP_STORE_TRANSACTION_REDEEMED";
    /// FAILED_PRECONDITION: the purchase's payment method belongs to a provider this
    /// wallet is not configured with (OVATION_PAYMENT_PROVIDERS); nothing recorded.
    pub const PAYMENT_PROVIDER_NOT_CONFIGURED: &str = "PAYMENT_PROVIDER_NOT_CONFIGURED";
}

/// `ovation.payout.v1`.
pub mod payout {
    /// FAILED_PRECONDITION: no creator is registered under this id (a credit is refused for good).
    pub const CREATOR_NOT_FOUND: &str = "CREATOR_NOT_FOUND";
    /// FAILED_PRECONDITION: the creator is suspended.
    pub const CREATOR_SUSPENDED: &str = "CREATOR_SUSPENDED";
    /// ALREADY_EXISTS: the creator is registered already.
    pub const CREATOR_EXISTS: &str = "CREATOR_EXISTS";
    /// FAILED_PRECONDITION: the payout account is not verified.
    pub const PAYOUT_ACCOUNT_NOT_VERIFIED: &str = "PAYOUT_ACCOUNT_NOT_VERIFIED";
    /// FAILED_PRECONDITION: the creator has no payout account to review.
    pub const NO_PAYOUT_ACCOUNT: &str = "NO_PAYOUT_ACCOUNT";
    /// FAILED_PRECONDITION: the payout account changed since the version the reviewer read.
    pub const PAYOUT_ACCOUNT_CHANGED: &str = "PAYOUT_ACCOUNT_CHANGED";
    /// FAILED_PRECONDITION: the payout is below the minimum.
    pub const BELOW_PAYOUT_MINIMUM: &str = "BELOW_PAYOUT_MINIMUM";
    /// FAILED_PRECONDITION: the creator's available diamonds do not cover the payout.
    pub const INSUFFICIENT_DIAMONDS: &str = "INSUFFICIENT_DIAMONDS";
    /// FAILED_PRECONDITION: the diamonds are worth less than one minor unit of money.
    pub const AMOUNT_TOO_SMALL: &str = "AMOUNT_TOO_SMALL";
    /// FAILED_PRECONDITION: the amount of money exceeds the bound of one operation.
    pub const AMOUNT_TOO_LARGE: &str = "AMOUNT_TOO_LARGE";
    /// FAILED_PRECONDITION: the creator's lifetime earnings limit is reached.
    pub const LIFETIME_LIMIT_REACHED: &str = "LIFETIME_LIMIT_REACHED";
    /// ABORTED: a concurrent credit with this operation id is in progress; retry.
    pub const CONCURRENT_CREDIT: &str = "CONCURRENT_CREDIT";
    /// ALREADY_EXISTS: the operation id was credited before with other parameters.
    pub const OPERATION_ID_REUSED: &str = "OPERATION_ID_REUSED";
    /// FAILED_PRECONDITION: the catalog has no payout rate.
    pub const ECONOMY_NOT_CONFIGURED: &str = "ECONOMY_NOT_CONFIGURED";
    /// FAILED_PRECONDITION: the creator owes clawed-back diamonds; nothing is paid out
    /// until later credits settle the debt.
    pub const CREATOR_IN_DEBT: &str = "CREATOR_IN_DEBT";
    /// FAILED_PRECONDITION: the creator has enough diamonds, but some are still pending
    /// (not matured); the message says when the next ones mature.
    pub const DIAMONDS_NOT_MATURE: &str = "DIAMONDS_NOT_MATURE";
    /// NOT_FOUND: no credit with this operation id (a clawback's gift was never credited).
    pub const CREDIT_NOT_FOUND: &str = "CREDIT_NOT_FOUND";
    /// ALREADY_EXISTS: the clawback id was used before with other parameters.
    pub const CLAWBACK_ID_REUSED: &str = "CLAWBACK_ID_REUSED";
    /// RESOURCE_EXHAUSTED: the creator's payouts requested this UTC day would pass the
    /// catalog's daily payout cap; it resets at 00:00 UTC.
    pub const DAILY_PAYOUT_CAP_EXCEEDED: &str = "DAILY_PAYOUT_CAP_EXCEEDED";
    /// FAILED_PRECONDITION: the payout account was set too recently (cooling-off); the
    /// message says when a payout may go to it.
    pub const PAYOUT_ACCOUNT_COOLING_OFF: &str = "PAYOUT_ACCOUNT_COOLING_OFF";
    /// FAILED_PRECONDITION: ReviewPayout on a payout that is not in REVIEW.
    pub const PAYOUT_NOT_IN_REVIEW: &str = "PAYOUT_NOT_IN_REVIEW";
    /// FAILED_PRECONDITION: CancelPayout on a payout already sent to the provider.
    pub const PAYOUT_ALREADY_SENT: &str = "PAYOUT_ALREADY_SENT";
    /// FAILED_PRECONDITION: CancelPayout on a payout already PAID or RELEASED.
    pub const PAYOUT_ALREADY_SETTLED: &str = "PAYOUT_ALREADY_SETTLED";
}

/// `ovation.gifting.v1`.
pub mod gifting {
    /// FAILED_PRECONDITION: the saga is terminal; there is nothing to retry.
    pub const SAGA_TERMINAL: &str = "SAGA_TERMINAL";
    /// FAILED_PRECONDITION: only a COMPLETED gift can be reversed.
    pub const GIFT_NOT_COMPLETED: &str = "GIFT_NOT_COMPLETED";
    /// FAILED_PRECONDITION: the gift was reversed already (by another request).
    pub const GIFT_ALREADY_REVERSED: &str = "GIFT_ALREADY_REVERSED";
}
