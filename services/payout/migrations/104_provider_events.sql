-- Issue 15: the payout provider's (Stripe's) webhook events, each applied exactly once.
--
-- An event is recorded by its id in the transaction that applies it; a second delivery
-- finds the row and does nothing. outcome: APPLIED (it recorded something below) or
-- IGNORED (a type payout does not act on, or about nothing it knows), with why in detail.
CREATE TABLE provider_events (
    event_id TEXT PRIMARY KEY CHECK (length(event_id) BETWEEN 1 AND 255),
    event_type TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('APPLIED', 'IGNORED')),
    detail TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL
);

-- Money Stripe reported reversed (returned to the platform) on a payout's transfer
-- (transfer.reversed), one row per payout holding the transfer's cumulative
-- amount_reversed: a later figure only raises it, so events out of order are harmless.
-- Nothing moves in the diamond ledger: a PAID payout with a row here needs an operator
-- (README, "Payout provider"); a HELD one is being cancelled and settles by the worker.
CREATE TABLE payout_reversals (
    payout_id TEXT PRIMARY KEY,
    transfer_id TEXT NOT NULL,
    currency_code TEXT NOT NULL,
    amount_reversed_minor BIGINT NOT NULL CHECK (amount_reversed_minor > 0),
    first_event_id TEXT NOT NULL,
    reported_at_ms BIGINT NOT NULL
);

-- Bank payouts of creators' connected accounts that failed (payout.failed): the money is
-- back in the connected account, whose bank details need fixing. For an operator; nothing
-- moves in the diamond ledger. creator_id: the creator whose current payout account it was
-- when the event came ('' if none).
CREATE TABLE bank_payout_failures (
    event_id TEXT PRIMARY KEY,
    account_reference TEXT NOT NULL,
    creator_id TEXT NOT NULL,
    bank_payout_id TEXT NOT NULL,
    currency_code TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    failure_code TEXT NOT NULL,
    failure_message TEXT NOT NULL,
    reported_at_ms BIGINT NOT NULL
);
CREATE INDEX bank_payout_failures_by_account ON bank_payout_failures (account_reference);
