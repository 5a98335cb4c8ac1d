-- The catalog: gifts, coin packages, promotions and economy parameters, every one
-- versioned. A head row per item points at its latest version; version rows are never
-- updated or deleted, so every version stays readable. Portable SQL (PostgreSQL, SQLite): flags are BIGINT 0/1 because
-- sqlx's Any driver cannot decode SQLite booleans.

CREATE TABLE gifts (
    gift_id TEXT PRIMARY KEY,
    latest_version BIGINT NOT NULL CHECK (latest_version >= 1)
);

CREATE TABLE gift_versions (
    gift_id TEXT NOT NULL REFERENCES gifts (gift_id),
    version BIGINT NOT NULL CHECK (version >= 1),
    name TEXT NOT NULL,
    coin_price BIGINT NOT NULL CHECK (coin_price BETWEEN 1 AND 50000),
    asset_url TEXT NOT NULL,
    enabled BIGINT NOT NULL CHECK (enabled IN (0, 1)),
    active_from_ms BIGINT,
    active_until_ms BIGINT,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (gift_id, version),
    CHECK (active_from_ms IS NULL OR active_until_ms IS NULL OR active_from_ms < active_until_ms)
);

CREATE TABLE coin_packages (
    package_id TEXT PRIMARY KEY,
    latest_version BIGINT NOT NULL CHECK (latest_version >= 1)
);

CREATE TABLE coin_package_versions (
    package_id TEXT NOT NULL REFERENCES coin_packages (package_id),
    version BIGINT NOT NULL CHECK (version >= 1),
    name TEXT NOT NULL,
    coins BIGINT NOT NULL CHECK (coins BETWEEN 1 AND 1000000000000),
    enabled BIGINT NOT NULL CHECK (enabled IN (0, 1)),
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (package_id, version)
);

CREATE TABLE coin_package_prices (
    package_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    currency_code TEXT NOT NULL CHECK (length(currency_code) = 3),
    amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
    PRIMARY KEY (package_id, version, currency_code),
    FOREIGN KEY (package_id, version) REFERENCES coin_package_versions (package_id, version)
);

CREATE TABLE promotions (
    promotion_id TEXT PRIMARY KEY,
    latest_version BIGINT NOT NULL CHECK (latest_version >= 1)
);

CREATE TABLE promotion_versions (
    promotion_id TEXT NOT NULL REFERENCES promotions (promotion_id),
    version BIGINT NOT NULL CHECK (version >= 1),
    name TEXT NOT NULL,
    bonus_bps BIGINT NOT NULL CHECK (bonus_bps BETWEEN 1 AND 100000),
    per_user_cap BIGINT NOT NULL CHECK (per_user_cap BETWEEN 0 AND 1000000),
    starts_at_ms BIGINT NOT NULL,
    ends_at_ms BIGINT NOT NULL,
    enabled BIGINT NOT NULL CHECK (enabled IN (0, 1)),
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (promotion_id, version),
    CHECK (starts_at_ms < ends_at_ms)
);

CREATE TABLE promotion_packages (
    promotion_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    package_id TEXT NOT NULL,
    PRIMARY KEY (promotion_id, version, package_id),
    FOREIGN KEY (promotion_id, version) REFERENCES promotion_versions (promotion_id, version)
);

CREATE TABLE economy_versions (
    version BIGINT PRIMARY KEY CHECK (version >= 1),
    creator_share_bps BIGINT NOT NULL CHECK (creator_share_bps BETWEEN 0 AND 10000),
    payout_currency TEXT NOT NULL CHECK (length(payout_currency) = 3),
    payout_amount_minor BIGINT NOT NULL CHECK (payout_amount_minor > 0),
    diamonds_per_payout_unit BIGINT NOT NULL CHECK (diamonds_per_payout_unit > 0),
    payout_minimum_diamonds BIGINT NOT NULL CHECK (payout_minimum_diamonds > 0),
    created_at_ms BIGINT NOT NULL
);
