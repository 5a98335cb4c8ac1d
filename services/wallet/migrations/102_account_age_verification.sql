-- The age rule is not self-declared: an account's adulthood is verified by the identity
-- provider's token claim (age_verified_adult) or by an operator, and recorded here, so the
-- gift saga's debits (service calls, which carry no user claim) are judged by it too.
-- Existing accounts start unverified: with OVATION_WALLET_REQUIRE_AGE_VERIFICATION they may
-- not buy or spend until a verified sign-in or an operator vouches for them.
ALTER TABLE accounts ADD COLUMN adult_verified BIGINT NOT NULL DEFAULT 0
    CHECK (adult_verified IN (0, 1));
