-- Issue 14, payout controls: payouts at or above the catalog's review threshold wait in
-- state REVIEW (their diamonds held, like HELD ones) until an admin approves (→ HELD) or
-- rejects (→ RELEASED) them; an admin may cancel a payout not yet sent (→ RELEASED). A
-- payout records the account version it goes to, with who set and who verified that
-- version, so the four-eyes rule of a review is judged against the account the money goes
-- to, not the creator's current one.
--
-- The state CHECKs change, and SQLite cannot alter a CHECK: payouts is rebuilt as
-- payouts_v2, rows copied, the old table dropped (with its indexes) and the new one renamed
-- (nothing references payouts). One text, both engines. Payouts recorded before keep their
-- meaning: account version 0 and empty setter and verifier mean "not recorded"; none is in
-- REVIEW, none was reviewed or cancelled.

CREATE TABLE payouts_v2 (
    payout_id TEXT PRIMARY KEY,
    creator_id TEXT NOT NULL REFERENCES creators (creator_id),
    diamonds BIGINT NOT NULL CHECK (diamonds BETWEEN 1 AND 1000000000000),
    currency_code TEXT NOT NULL CHECK (length(currency_code) = 3),
    amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
    economy_version BIGINT NOT NULL CHECK (economy_version >= 1),
    rate_amount_minor BIGINT NOT NULL CHECK (rate_amount_minor > 0),
    diamonds_per_payout_unit BIGINT NOT NULL CHECK (diamonds_per_payout_unit > 0),
    minimum_diamonds BIGINT NOT NULL CHECK (minimum_diamonds > 0),
    state TEXT NOT NULL CHECK (state IN ('REVIEW', 'HELD', 'PAID', 'RELEASED')),
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
    sent_at_ms BIGINT,
    sent_in_debt BIGINT NOT NULL DEFAULT 0 CHECK (sent_in_debt IN (0, 1)),
    account_version BIGINT NOT NULL DEFAULT 0 CHECK (account_version >= 0),
    account_set_by TEXT NOT NULL DEFAULT '',
    account_verified_by TEXT NOT NULL DEFAULT '',
    review_decision TEXT CHECK (review_decision IN ('APPROVE', 'REJECT')),
    reviewed_by TEXT,
    review_reason TEXT,
    reviewed_at_ms BIGINT,
    cancelled_by TEXT,
    cancel_reason TEXT,
    cancelled_at_ms BIGINT,
    CHECK ((state IN ('REVIEW', 'HELD')) = (settled_at_ms IS NULL)),
    -- A payout in review was never sent nor reviewed.
    CHECK (state <> 'REVIEW' OR (sent_at_ms IS NULL AND review_decision IS NULL)),
    CHECK ((review_decision IS NULL) = (reviewed_by IS NULL)
           AND (reviewed_by IS NULL) = (review_reason IS NULL)
           AND (review_reason IS NULL) = (reviewed_at_ms IS NULL)),
    CHECK ((cancelled_by IS NULL) = (cancel_reason IS NULL)
           AND (cancel_reason IS NULL) = (cancelled_at_ms IS NULL)),
    -- Only a payout that was never sent is cancelled, and a cancelled one is RELEASED.
    CHECK (cancelled_by IS NULL OR (state = 'RELEASED' AND sent_at_ms IS NULL))
);

INSERT INTO payouts_v2 (payout_id, creator_id, diamonds, currency_code, amount_minor,
    economy_version, rate_amount_minor, diamonds_per_payout_unit, minimum_diamonds, state,
    account_reference, provider_reference, failure_reason, attempts, next_attempt_at_ms,
    lease_owner, lease_until_ms, attention, last_error, created_at_ms, updated_at_ms,
    settled_at_ms, sent_at_ms, sent_in_debt)
SELECT payout_id, creator_id, diamonds, currency_code, amount_minor, economy_version,
    rate_amount_minor, diamonds_per_payout_unit, minimum_diamonds, state, account_reference,
    provider_reference, failure_reason, attempts, next_attempt_at_ms, lease_owner,
    lease_until_ms, attention, last_error, created_at_ms, updated_at_ms, settled_at_ms,
    sent_at_ms, sent_in_debt
FROM payouts;

DROP TABLE payouts;
ALTER TABLE payouts_v2 RENAME TO payouts;
CREATE INDEX payouts_due ON payouts (state, next_attempt_at_ms);
-- Also what the daily cap sums: one creator's payouts of one UTC day.
CREATE INDEX payouts_by_creator ON payouts (creator_id, created_at_ms, payout_id);
CREATE INDEX payouts_by_time ON payouts (created_at_ms, payout_id);
