-- Purchase idempotency keys are the buyer's own: two users choosing the same key never
-- collide (docs/economy.md: keys are scoped to the caller). UNIQUE (idempotency_key) becomes
-- UNIQUE (user_id, idempotency_key). SQLite cannot drop an inline UNIQUE, so the table is
-- rebuilt (one text for both engines); every row is kept as it is: keys unique across all
-- users are unique per user too. Nothing references purchases by foreign key.
CREATE TABLE purchases_new (
    purchase_id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL,
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
    updated_at_ms BIGINT NOT NULL,
    CONSTRAINT purchases_buyer_key UNIQUE (user_id, idempotency_key)
);

INSERT INTO purchases_new (purchase_id, idempotency_key, fingerprint, user_id, package_id,
    package_version, currency_code, amount_minor, package_coins, bonus_coins, promotion_id,
    promotion_version, payment_token, state, decline_reason, provider_reference,
    charge_attempts, next_attempt_at_ms, reversal_actor, reversal_reason,
    reversal_clawed_back_coins, reversal_debt_coins, reversed_at_ms, created_at_ms,
    updated_at_ms)
SELECT purchase_id, idempotency_key, fingerprint, user_id, package_id,
    package_version, currency_code, amount_minor, package_coins, bonus_coins, promotion_id,
    promotion_version, payment_token, state, decline_reason, provider_reference,
    charge_attempts, next_attempt_at_ms, reversal_actor, reversal_reason,
    reversal_clawed_back_coins, reversal_debt_coins, reversed_at_ms, created_at_ms,
    updated_at_ms
FROM purchases;

-- Dropping the old table drops its indexes (purchases_user, purchases_pending) with it.
DROP TABLE purchases;
ALTER TABLE purchases_new RENAME TO purchases;
CREATE INDEX purchases_user ON purchases (user_id, created_at_ms);
CREATE INDEX purchases_pending ON purchases (state, next_attempt_at_ms);
