-- The wallet: user coin accounts and the double-entry coin ledger.
-- Portable SQL (PostgreSQL and SQLite): amounts and instants are BIGINT (Unix ms), flags
-- are BIGINT 0/1 (sqlx's Any driver cannot decode SQLite booleans).

-- A user's coin account. balance_coins is the user's ledger account, materialized so that
-- "never negative" is one conditional UPDATE (and a CHECK as the backstop, I2).
CREATE TABLE accounts (
    user_id TEXT PRIMARY KEY,
    minor BIGINT NOT NULL CHECK (minor IN (0, 1)),
    balance_coins BIGINT NOT NULL CHECK (balance_coins >= 0),
    held_coins BIGINT NOT NULL CHECK (held_coins >= 0 AND held_coins <= balance_coins),
    debt_coins BIGINT NOT NULL CHECK (debt_coins >= 0),
    -- entries written for this user so far: the position of the next one in its history
    entry_count BIGINT NOT NULL CHECK (entry_count >= 0),
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- One balanced journal entry. Every entry moves coins between one user account and one
-- system account; its postings (below) sum to zero (I1).
CREATE TABLE journal_entries (
    entry_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES accounts (user_id),
    -- position in the user's history, 1-based, for newest-first paging
    user_seq BIGINT NOT NULL,
    reason BIGINT NOT NULL CHECK (reason BETWEEN 1 AND 7),
    user_delta_coins BIGINT NOT NULL CHECK (user_delta_coins <> 0),
    balance_after_coins BIGINT NOT NULL CHECK (balance_after_coins >= 0),
    purchase_id TEXT NOT NULL,
    operation_id TEXT NOT NULL,
    saga_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    note TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (user_id, user_seq)
);

-- Postings: 'user:<id>' or 'system:<kind>' accounts. System balances are sums of
-- postings, never a hot row that every gift would have to lock.
CREATE TABLE postings (
    entry_id TEXT NOT NULL REFERENCES journal_entries (entry_id),
    account TEXT NOT NULL,
    amount_coins BIGINT NOT NULL CHECK (amount_coins <> 0),
    PRIMARY KEY (entry_id, account)
);
CREATE INDEX postings_account ON postings (account);

-- Purchases: recorded PENDING before the charge, so a crash between charge and credit
-- is finished on restart (never losing paid coins, never charging twice).
CREATE TABLE purchases (
    purchase_id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES accounts (user_id),
    package_id TEXT NOT NULL,
    package_version BIGINT NOT NULL,
    currency_code TEXT NOT NULL,
    amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
    package_coins BIGINT NOT NULL CHECK (package_coins > 0),
    bonus_coins BIGINT NOT NULL CHECK (bonus_coins >= 0),
    promotion_id TEXT NOT NULL,
    promotion_version BIGINT NOT NULL,
    -- opaque provider token, kept to retry the charge; never returned
    payment_token TEXT NOT NULL,
    state BIGINT NOT NULL CHECK (state BETWEEN 1 AND 4),
    decline_reason TEXT NOT NULL,
    provider_reference TEXT NOT NULL,
    charge_attempts BIGINT NOT NULL,
    next_attempt_at_ms BIGINT NOT NULL,
    reversal_actor TEXT NOT NULL,
    reversal_reason TEXT NOT NULL,
    reversal_clawed_back_coins BIGINT NOT NULL,
    reversal_debt_coins BIGINT NOT NULL,
    reversed_at_ms BIGINT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX purchases_user ON purchases (user_id, created_at_ms);
CREATE INDEX purchases_pending ON purchases (state, next_attempt_at_ms);

-- Debits (direct or hold captures), keyed by the caller's operation id.
CREATE TABLE debits (
    operation_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES accounts (user_id),
    coins BIGINT NOT NULL CHECK (coins > 0),
    saga_id TEXT NOT NULL,
    note TEXT NOT NULL,
    from_hold BIGINT NOT NULL CHECK (from_hold IN (0, 1)),
    available_after_coins BIGINT NOT NULL,
    refunded_coins BIGINT NOT NULL CHECK (refunded_coins >= 0 AND refunded_coins <= coins),
    refund_operation_id TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    refunded_at_ms BIGINT
);
CREATE INDEX debits_user ON debits (user_id, created_at_ms);
CREATE INDEX debits_created ON debits (created_at_ms, operation_id);

-- Refunds: at most one per debit (UNIQUE), at most its amount (CHECK on debits).
CREATE TABLE refunds (
    operation_id TEXT PRIMARY KEY,
    debit_operation_id TEXT NOT NULL UNIQUE REFERENCES debits (operation_id),
    user_id TEXT NOT NULL,
    coins BIGINT NOT NULL CHECK (coins > 0),
    note TEXT NOT NULL,
    available_after_coins BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- Holds: reservations, not postings, until captured.
CREATE TABLE holds (
    operation_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES accounts (user_id),
    coins BIGINT NOT NULL CHECK (coins > 0),
    state BIGINT NOT NULL CHECK (state BETWEEN 1 AND 4),
    captured_coins BIGINT NOT NULL CHECK (captured_coins >= 0 AND captured_coins <= coins),
    saga_id TEXT NOT NULL,
    note TEXT NOT NULL,
    expire_at_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX holds_active ON holds (state, expire_at_ms);
CREATE INDEX holds_user ON holds (user_id, state);

-- Spending controls; NULL cap = no cap. pending_* replace the effective caps at
-- pending_effective_at_ms (raising a cap waits for a cooling-off delay).
CREATE TABLE spending_limits (
    user_id TEXT PRIMARY KEY REFERENCES accounts (user_id),
    daily_spend_coins BIGINT,
    monthly_spend_coins BIGINT,
    daily_purchase_coins BIGINT,
    monthly_purchase_coins BIGINT,
    has_pending BIGINT NOT NULL CHECK (has_pending IN (0, 1)),
    pending_daily_spend_coins BIGINT,
    pending_monthly_spend_coins BIGINT,
    pending_daily_purchase_coins BIGINT,
    pending_monthly_purchase_coins BIGINT,
    pending_effective_at_ms BIGINT,
    updated_by TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

-- Admin actions that are not ledger movements (minor flag, caps set by an operator):
-- who did what, when and why.
CREATE TABLE admin_actions (
    action_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
