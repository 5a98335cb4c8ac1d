-- Issue 11: four eyes on where money goes, and suspensions that stop payouts.
--
-- A payout account carries a version (one more with every SetPayoutAccount), which a
-- verification must name, and who set it (the authenticated caller), who may not be the
-- one who verifies it. Existing accounts: the version counts their SET_PAYOUT_ACCOUNT
-- journal lines (at least 1), and the setter is the caller of the latest one.
ALTER TABLE creators ADD COLUMN account_version BIGINT NOT NULL DEFAULT 0
    CHECK (account_version >= 0);
ALTER TABLE creators ADD COLUMN account_set_by TEXT;
UPDATE creators SET account_version = (
    SELECT COUNT(*) FROM creator_journal j
    WHERE j.creator_id = creators.creator_id AND j.action = 'SET_PAYOUT_ACCOUNT'
) WHERE account_reference IS NOT NULL;
UPDATE creators SET account_version = 1
WHERE account_reference IS NOT NULL AND account_version = 0;
UPDATE creators SET account_set_by = (
    SELECT j.caller FROM creator_journal j
    WHERE j.creator_id = creators.creator_id AND j.action = 'SET_PAYOUT_ACCOUNT'
    ORDER BY j.created_at_ms DESC, j.event_id DESC LIMIT 1
) WHERE account_reference IS NOT NULL;
UPDATE creators SET account_set_by = creator_id
WHERE account_reference IS NOT NULL AND account_set_by IS NULL;

-- When the worker first handed a payout to the provider. A suspension releases HELD
-- payouts without it; one with it may be paid already and is settled by asking the
-- provider. A HELD payout already attempted before this migration counts as sent.
ALTER TABLE payouts ADD COLUMN sent_at_ms BIGINT;
UPDATE payouts SET sent_at_ms = updated_at_ms WHERE state = 'HELD' AND attempts > 0;
-- Every payout settled before this migration had been sent (PAID, or RELEASED on the
-- provider's refusal).
UPDATE payouts SET sent_at_ms = settled_at_ms WHERE state IN ('PAID', 'RELEASED');
