-- The payout service: creators, the double-entry diamond ledger, credits and payouts.
-- Portable SQL (PostgreSQL, SQLite): amounts and instants are BIGINT (Unix ms), states are
-- TEXT with CHECKs, flags are BIGINT 0/1 because sqlx's Any driver cannot decode SQLite
-- booleans.

CREATE TABLE creators (
    creator_id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('ACTIVE', 'SUSPENDED')),
    suspended_by TEXT,
    suspend_reason TEXT,
    suspended_at_ms BIGINT,
    account_reference TEXT CHECK (length(account_reference) BETWEEN 1 AND 255),
    holder_name TEXT,
    verification TEXT CHECK (verification IN ('PENDING', 'VERIFIED', 'REJECTED')),
    reviewed_by TEXT,
    review_reason TEXT,
    reviewed_at_ms BIGINT,
    account_set_at_ms BIGINT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    CHECK ((state = 'SUSPENDED') = (suspended_at_ms IS NOT NULL)),
    CHECK ((account_reference IS NULL) = (verification IS NULL))
);

-- Everything done to a creator (registration, payout account, verification, suspension),
-- by whom and why. Append-only.
CREATE TABLE creator_journal (
    event_id TEXT PRIMARY KEY,
    creator_id TEXT NOT NULL REFERENCES creators (creator_id),
    action TEXT NOT NULL CHECK (action IN ('REGISTER', 'SET_PAYOUT_ACCOUNT', 'VERIFY', 'REJECT',
                                           'SUSPEND', 'REINSTATE')),
    -- the operator named in the request (admin actions), or the caller
    actor TEXT NOT NULL,
    -- the authenticated caller that made the call
    caller TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX creator_journal_by_creator ON creator_journal (creator_id, created_at_ms);

-- The chart of accounts: two per creator (available, held) and two system accounts.
CREATE TABLE ledger_accounts (
    account_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('CREATOR', 'CREATOR_HELD', 'GIFT_ISSUANCE', 'PAID_OUT')),
    creator_id TEXT REFERENCES creators (creator_id),
    CHECK ((kind IN ('CREATOR', 'CREATOR_HELD')) = (creator_id IS NOT NULL))
);
INSERT INTO ledger_accounts (account_id, kind, creator_id)
VALUES ('system:gift_issuance', 'GIFT_ISSUANCE', NULL), ('system:paid_out', 'PAID_OUT', NULL);

-- One balanced movement of diamonds; ids name their cause (credit:<operation>,
-- hold:<payout>, settle:<payout>), so nothing is posted twice. Append-only.
CREATE TABLE journal_entries (
    entry_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('CREDIT', 'HOLD', 'CAPTURE', 'RELEASE')),
    creator_id TEXT NOT NULL REFERENCES creators (creator_id),
    reference TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- The lines of each entry; per entry they sum to zero (I1). Append-only.
CREATE TABLE postings (
    entry_id TEXT NOT NULL REFERENCES journal_entries (entry_id),
    account_id TEXT NOT NULL REFERENCES ledger_accounts (account_id),
    amount_diamonds BIGINT NOT NULL CHECK (amount_diamonds <> 0),
    PRIMARY KEY (entry_id, account_id)
);
CREATE INDEX postings_by_account ON postings (account_id);

-- Each creator's balances, moved in the same transaction as the postings by conditional
-- updates; never negative (I2), and lifetime = available + held + paid out.
CREATE TABLE creator_balances (
    creator_id TEXT PRIMARY KEY REFERENCES creators (creator_id),
    available_diamonds BIGINT NOT NULL CHECK (available_diamonds >= 0),
    held_diamonds BIGINT NOT NULL CHECK (held_diamonds >= 0),
    lifetime_earned_diamonds BIGINT NOT NULL
        CHECK (lifetime_earned_diamonds BETWEEN 0 AND 1000000000000000000),
    paid_out_diamonds BIGINT NOT NULL CHECK (paid_out_diamonds >= 0),
    CHECK (lifetime_earned_diamonds = available_diamonds + held_diamonds + paid_out_diamonds)
);

-- Diamonds credited for gifts, one row per operation id (the gift saga's id).
CREATE TABLE credits (
    operation_id TEXT PRIMARY KEY,
    creator_id TEXT NOT NULL REFERENCES creators (creator_id),
    coins BIGINT NOT NULL CHECK (coins BETWEEN 1 AND 1000000000000),
    creator_share_bps BIGINT NOT NULL CHECK (creator_share_bps BETWEEN 0 AND 10000),
    diamonds BIGINT NOT NULL CHECK (diamonds BETWEEN 0 AND coins),
    sender_user_id TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    gift_id TEXT NOT NULL,
    gift_version BIGINT NOT NULL CHECK (gift_version >= 0),
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX credits_by_creator ON credits (creator_id, created_at_ms, operation_id);
CREATE INDEX credits_by_time ON credits (created_at_ms, operation_id);

-- Cash-outs. Stored states: HELD (diamonds held, provider working), PAID, RELEASED. The
-- worker claims a due HELD payout with a lease; attempts, next_attempt_at_ms and
-- attention drive retries with backoff and a budget.
CREATE TABLE payouts (
    payout_id TEXT PRIMARY KEY,
    creator_id TEXT NOT NULL REFERENCES creators (creator_id),
    diamonds BIGINT NOT NULL CHECK (diamonds BETWEEN 1 AND 1000000000000),
    currency_code TEXT NOT NULL CHECK (length(currency_code) = 3),
    amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
    economy_version BIGINT NOT NULL CHECK (economy_version >= 1),
    rate_amount_minor BIGINT NOT NULL CHECK (rate_amount_minor > 0),
    diamonds_per_payout_unit BIGINT NOT NULL CHECK (diamonds_per_payout_unit > 0),
    minimum_diamonds BIGINT NOT NULL CHECK (minimum_diamonds > 0),
    state TEXT NOT NULL CHECK (state IN ('HELD', 'PAID', 'RELEASED')),
    account_reference TEXT NOT NULL,
    provider_reference TEXT NOT NULL,
    failure_reason TEXT NOT NULL,
    attempts BIGINT NOT NULL CHECK (attempts >= 0),
    next_attempt_at_ms BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until_ms BIGINT,
    attention BIGINT NOT NULL CHECK (attention IN (0, 1)),
    last_error TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    settled_at_ms BIGINT,
    CHECK ((state = 'HELD') = (settled_at_ms IS NULL))
);
CREATE INDEX payouts_due ON payouts (state, next_attempt_at_ms);
CREATE INDEX payouts_by_creator ON payouts (creator_id, created_at_ms, payout_id);
CREATE INDEX payouts_by_time ON payouts (created_at_ms, payout_id);
