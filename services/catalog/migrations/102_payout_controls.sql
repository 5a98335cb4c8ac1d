-- Issue 14, payout controls: a per-creator cap on the diamonds cashed out per UTC day, the
-- payout size from which an admin reviews it, and the hours after a payout account is set
-- before a payout may go to it. 0 means none of each, which is what versions written before
-- meant.
ALTER TABLE economy_versions ADD COLUMN payout_daily_cap_diamonds BIGINT NOT NULL DEFAULT 0
    CHECK (payout_daily_cap_diamonds BETWEEN 0 AND 1000000000000);
ALTER TABLE economy_versions ADD COLUMN payout_review_threshold_diamonds BIGINT NOT NULL DEFAULT 0
    CHECK (payout_review_threshold_diamonds BETWEEN 0 AND 1000000000000);
ALTER TABLE economy_versions ADD COLUMN payout_account_cooling_off_hours BIGINT NOT NULL DEFAULT 0
    CHECK (payout_account_cooling_off_hours BETWEEN 0 AND 8760);
