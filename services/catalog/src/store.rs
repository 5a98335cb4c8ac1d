//! All of the catalog's SQL, in one place. Every function takes a connection, so the
//! caller decides the transaction; the SQL text is portable (PostgreSQL and SQLite).
//!
//! Versioning: each item has a head row (`latest_version`) and immutable version rows.
//! Creating inserts head + version 1; updating advances the head with a compare-and-set
//! (`WHERE latest_version = $current`) and inserts the new version row, so two concurrent
//! updates cannot both write version N+1. [`VersionRows`] is that, for each kind.

use ovation_store::StoreError;
use ovation_store::db::Conn;
use ovation_store::sqlx::{self, Row, any::AnyRow};
use ovation_types::{Bps, Coins, Diamonds, Money, Name, ResourceId, Text, UnixMillis};

use crate::domain::{
    CoinPackage, DiamondLimit, EconomyParameters, Gift, GiftPrice, Prices, Promotion, RuleHours,
    TheEconomy, Versioned, Window,
};

/// A kind's head table: one row per item naming its latest version. The economy parameters
/// have none: the primary key of their version rows is their compare-and-set.
#[derive(Clone, Copy, Debug)]
pub enum HeadTable {
    Gifts,
    CoinPackages,
    Promotions,
}

impl HeadTable {
    fn table(self) -> &'static str {
        match self {
            HeadTable::Gifts => "gifts",
            HeadTable::CoinPackages => "coin_packages",
            HeadTable::Promotions => "promotions",
        }
    }

    fn id_column(self) -> &'static str {
        match self {
            HeadTable::Gifts => "gift_id",
            HeadTable::CoinPackages => "package_id",
            HeadTable::Promotions => "promotion_id",
        }
    }

    fn versions_table(self) -> &'static str {
        match self {
            HeadTable::Gifts => "gift_versions",
            HeadTable::CoinPackages => "coin_package_versions",
            HeadTable::Promotions => "promotion_versions",
        }
    }

    /// The columns of a version row, as `v.*`.
    fn version_columns(self) -> &'static str {
        match self {
            HeadTable::Gifts => GIFT_COLUMNS,
            HeadTable::CoinPackages => PACKAGE_COLUMNS,
            HeadTable::Promotions => PROMOTION_COLUMNS,
        }
    }
}

/// What writing one version did.
#[derive(Debug, PartialEq, Eq)]
pub enum VersionWrite {
    /// Written; it is now the latest version.
    Written,
    /// Version 1: the id is taken.
    Exists,
    /// A later version: no such item.
    Missing,
    /// A later version: the latest version is no longer the one it follows.
    Moved { latest: i64 },
    /// That version is written already by a concurrent writer (the economy parameters,
    /// which have no head row to tell more).
    Taken,
}

/// The store's side of [`Versioned`]: how one kind's versions are read and written.
pub trait VersionRows: Versioned + Send + Sync {
    /// The item at `version`, or at its latest version when `None`.
    fn get(
        conn: &mut Conn,
        id: &Self::Id,
        version: Option<i64>,
    ) -> impl Future<Output = Result<Option<Self>, StoreError>> + Send;

    /// Writes this version, unless a concurrent writer claimed it first (then nothing).
    fn write(
        &self,
        conn: &mut Conn,
    ) -> impl Future<Output = Result<VersionWrite, StoreError>> + Send;
}

/// Claims `version` of an item on its head row: version 1 inserts the head, a later one
/// moves it on from the version before with a compare-and-set.
async fn claim_head(
    conn: &mut Conn,
    head: HeadTable,
    id: &ResourceId,
    version: i64,
) -> Result<VersionWrite, StoreError> {
    if version == 1 {
        create_head(conn, head, id).await
    } else {
        advance_head(conn, head, id, version - 1).await
    }
}

/// The version row of an item at `version`, or at its latest version when `None`.
async fn version_row(
    conn: &mut Conn,
    head: HeadTable,
    id: &ResourceId,
    version: Option<i64>,
) -> Result<Option<AnyRow>, StoreError> {
    let (heads, versions, id_column, columns) = (
        head.table(),
        head.versions_table(),
        head.id_column(),
        head.version_columns(),
    );
    let query = match version {
        Some(version) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {columns} FROM {versions} v WHERE v.{id_column} = $1 AND v.version = $2"
        )))
        .bind(id.as_str())
        .bind(version),
        None => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {columns} FROM {heads} h JOIN {versions} v \
             ON v.{id_column} = h.{id_column} AND v.version = h.latest_version \
             WHERE h.{id_column} = $1"
        )))
        .bind(id.as_str()),
    };
    Ok(query.fetch_optional(&mut *conn).await?)
}

/// Inserts the head row of a new item at version 1.
async fn create_head(
    conn: &mut Conn,
    head: HeadTable,
    id: &ResourceId,
) -> Result<VersionWrite, StoreError> {
    let sql = format!(
        "INSERT INTO {} ({}, latest_version) VALUES ($1, 1) ON CONFLICT DO NOTHING",
        head.table(),
        head.id_column()
    );
    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(if done.rows_affected() == 1 {
        VersionWrite::Written
    } else {
        VersionWrite::Exists
    })
}

/// The latest version of an item, if it exists.
pub async fn latest_version(
    conn: &mut Conn,
    head: HeadTable,
    id: &ResourceId,
) -> Result<Option<i64>, StoreError> {
    let sql = format!(
        "SELECT latest_version FROM {} WHERE {} = $1",
        head.table(),
        head.id_column()
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(row) => Some(row.try_get::<i64, _>(0)?),
        None => None,
    })
}

/// Moves an item's head from `current` to `current + 1`, unless someone else did first.
async fn advance_head(
    conn: &mut Conn,
    head: HeadTable,
    id: &ResourceId,
    current: i64,
) -> Result<VersionWrite, StoreError> {
    let sql = format!(
        "UPDATE {} SET latest_version = $1 WHERE {} = $2 AND latest_version = $3",
        head.table(),
        head.id_column()
    );
    let next = current + 1;
    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(next)
        .bind(id.as_str())
        .bind(current)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 1 {
        return Ok(VersionWrite::Written);
    }
    Ok(match latest_version(conn, head, id).await? {
        Some(latest) => VersionWrite::Moved { latest },
        None => VersionWrite::Missing,
    })
}

// ---- gifts -------------------------------------------------------------------------

const GIFT_COLUMNS: &str = "v.gift_id, v.version, v.name, v.coin_price, v.asset_url, v.enabled, \
                            v.active_from_ms, v.active_until_ms, v.created_at_ms";

impl VersionRows for Gift {
    async fn get(
        conn: &mut Conn,
        id: &ResourceId,
        version: Option<i64>,
    ) -> Result<Option<Gift>, StoreError> {
        let row = version_row(conn, HeadTable::Gifts, id, version).await?;
        row.as_ref().map(gift_from_row).transpose()
    }

    async fn write(&self, conn: &mut Conn) -> Result<VersionWrite, StoreError> {
        let claim = claim_head(conn, HeadTable::Gifts, &self.id, self.version).await?;
        if claim != VersionWrite::Written {
            return Ok(claim);
        }
        sqlx::query(
            "INSERT INTO gift_versions (gift_id, version, name, coin_price, asset_url, enabled, \
             active_from_ms, active_until_ms, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(self.id.as_str())
        .bind(self.version)
        .bind(self.name.as_str())
        .bind(self.coin_price.get())
        .bind(self.asset_url.as_str())
        .bind(i64::from(self.enabled))
        .bind(self.window.from.map(|t| t.0))
        .bind(self.window.until.map(|t| t.0))
        .bind(self.created_at.0)
        .execute(&mut *conn)
        .await?;
        Ok(claim)
    }
}

/// Latest version of each gift with id > `after`, by id, at most `limit`.
pub async fn list_gifts(
    conn: &mut Conn,
    after: Option<&str>,
    sendable_at: Option<UnixMillis>,
    limit: i64,
) -> Result<Vec<Gift>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {GIFT_COLUMNS} FROM gifts h \
         JOIN gift_versions v ON v.gift_id = h.gift_id AND v.version = h.latest_version \
         WHERE h.gift_id > $1 \
           AND ($2 IS NULL OR (v.enabled = 1 \
                AND (v.active_from_ms IS NULL OR v.active_from_ms <= $2) \
                AND (v.active_until_ms IS NULL OR $2 < v.active_until_ms))) \
         ORDER BY h.gift_id LIMIT $3"
    )))
    .bind(after.unwrap_or(""))
    .bind(sendable_at.map(|t| t.0))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(gift_from_row).collect()
}

/// Versions of one gift with version > `after`, oldest first, at most `limit`.
pub async fn list_gift_versions(
    conn: &mut Conn,
    id: &ResourceId,
    after: i64,
    limit: i64,
) -> Result<Vec<Gift>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {GIFT_COLUMNS} FROM gift_versions v WHERE v.gift_id = $1 AND v.version > $2 \
         ORDER BY v.version LIMIT $3"
    )))
    .bind(id.as_str())
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(gift_from_row).collect()
}

fn gift_from_row(row: &AnyRow) -> Result<Gift, StoreError> {
    let from: Option<i64> = row.try_get("active_from_ms")?;
    let until: Option<i64> = row.try_get("active_until_ms")?;
    Ok(Gift {
        id: stored(ResourceId::parse(&row.try_get::<String, _>("gift_id")?))?,
        version: row.try_get("version")?,
        name: stored(Name::parse(&row.try_get::<String, _>("name")?))?,
        coin_price: stored(GiftPrice::parse(row.try_get("coin_price")?))?,
        asset_url: stored(Text::parse(&row.try_get::<String, _>("asset_url")?))?,
        enabled: flag(row.try_get("enabled")?)?,
        window: stored(Window::new(from.map(UnixMillis), until.map(UnixMillis)))?,
        created_at: UnixMillis(row.try_get("created_at_ms")?),
    })
}

// ---- coin packages -----------------------------------------------------------------

const PACKAGE_COLUMNS: &str =
    "v.package_id, v.version, v.name, v.coins, v.enabled, v.created_at_ms";

impl VersionRows for CoinPackage {
    async fn get(
        conn: &mut Conn,
        id: &ResourceId,
        version: Option<i64>,
    ) -> Result<Option<CoinPackage>, StoreError> {
        let row = version_row(conn, HeadTable::CoinPackages, id, version).await?;
        match row {
            Some(row) => Ok(Some(package_from_row(conn, &row).await?)),
            None => Ok(None),
        }
    }

    async fn write(&self, conn: &mut Conn) -> Result<VersionWrite, StoreError> {
        let claim = claim_head(conn, HeadTable::CoinPackages, &self.id, self.version).await?;
        if claim != VersionWrite::Written {
            return Ok(claim);
        }
        sqlx::query(
            "INSERT INTO coin_package_versions (package_id, version, name, coins, enabled, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(self.id.as_str())
        .bind(self.version)
        .bind(self.name.as_str())
        .bind(self.coins.get())
        .bind(i64::from(self.enabled))
        .bind(self.created_at.0)
        .execute(&mut *conn)
        .await?;
        for price in self.prices.as_slice() {
            sqlx::query(
                "INSERT INTO coin_package_prices (package_id, version, currency_code, amount_minor) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(self.id.as_str())
            .bind(self.version)
            .bind(price.currency.as_str())
            .bind(price.amount_minor())
            .execute(&mut *conn)
            .await?;
        }
        Ok(claim)
    }
}

pub async fn list_packages(
    conn: &mut Conn,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<CoinPackage>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PACKAGE_COLUMNS} FROM coin_packages h JOIN coin_package_versions v \
         ON v.package_id = h.package_id AND v.version = h.latest_version \
         WHERE h.package_id > $1 ORDER BY h.package_id LIMIT $2"
    )))
    .bind(after.unwrap_or(""))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut packages = Vec::with_capacity(rows.len());
    for row in &rows {
        packages.push(package_from_row(conn, row).await?);
    }
    Ok(packages)
}

async fn package_from_row(conn: &mut Conn, row: &AnyRow) -> Result<CoinPackage, StoreError> {
    let id: String = row.try_get("package_id")?;
    let version: i64 = row.try_get("version")?;
    let price_rows = sqlx::query(
        "SELECT currency_code, amount_minor FROM coin_package_prices \
         WHERE package_id = $1 AND version = $2 ORDER BY currency_code",
    )
    .bind(id.as_str())
    .bind(version)
    .fetch_all(&mut *conn)
    .await?;
    let prices = price_rows
        .iter()
        .map(|p| {
            let code: String = p.try_get("currency_code")?;
            let amount: i64 = p.try_get("amount_minor")?;
            stored(Money::parse(&code, amount).map_err(|(_, e)| e))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(CoinPackage {
        id: stored(ResourceId::parse(&id))?,
        version,
        name: stored(Name::parse(&row.try_get::<String, _>("name")?))?,
        coins: stored(Coins::parse(row.try_get("coins")?))?,
        prices: stored(Prices::new(prices))?,
        enabled: flag(row.try_get("enabled")?)?,
        created_at: UnixMillis(row.try_get("created_at_ms")?),
    })
}

// ---- promotions --------------------------------------------------------------------

const PROMOTION_COLUMNS: &str = "v.promotion_id, v.version, v.name, v.bonus_bps, v.per_user_cap, \
                                 v.starts_at_ms, v.ends_at_ms, v.enabled, v.created_at_ms";

impl VersionRows for Promotion {
    async fn get(
        conn: &mut Conn,
        id: &ResourceId,
        version: Option<i64>,
    ) -> Result<Option<Promotion>, StoreError> {
        let row = version_row(conn, HeadTable::Promotions, id, version).await?;
        match row {
            Some(row) => Ok(Some(promotion_from_row(conn, &row).await?)),
            None => Ok(None),
        }
    }

    async fn write(&self, conn: &mut Conn) -> Result<VersionWrite, StoreError> {
        let claim = claim_head(conn, HeadTable::Promotions, &self.id, self.version).await?;
        if claim != VersionWrite::Written {
            return Ok(claim);
        }
        sqlx::query(
            "INSERT INTO promotion_versions (promotion_id, version, name, bonus_bps, per_user_cap, \
             starts_at_ms, ends_at_ms, enabled, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(self.id.as_str())
        .bind(self.version)
        .bind(self.name.as_str())
        .bind(i64::from(self.bonus_bps))
        .bind(i64::from(self.per_user_cap))
        .bind(self.starts_at.0)
        .bind(self.ends_at.0)
        .bind(i64::from(self.enabled))
        .bind(self.created_at.0)
        .execute(&mut *conn)
        .await?;
        for package_id in &self.package_ids {
            sqlx::query(
                "INSERT INTO promotion_packages (promotion_id, version, package_id) VALUES ($1, $2, $3)",
            )
            .bind(self.id.as_str())
            .bind(self.version)
            .bind(package_id.as_str())
            .execute(&mut *conn)
            .await?;
        }
        Ok(claim)
    }
}

/// Latest version of each promotion with id > `after`, optionally only those active at
/// `active_at` and applying to `package_id`.
pub async fn list_promotions(
    conn: &mut Conn,
    after: Option<&str>,
    active_at: Option<UnixMillis>,
    package_id: Option<&ResourceId>,
    limit: i64,
) -> Result<Vec<Promotion>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PROMOTION_COLUMNS} FROM promotions h JOIN promotion_versions v \
         ON v.promotion_id = h.promotion_id AND v.version = h.latest_version \
         WHERE h.promotion_id > $1 \
           AND ($2 IS NULL OR (v.enabled = 1 AND v.starts_at_ms <= $2 AND $2 < v.ends_at_ms)) \
           AND ($3 IS NULL \
                OR NOT EXISTS (SELECT 1 FROM promotion_packages p \
                               WHERE p.promotion_id = v.promotion_id AND p.version = v.version) \
                OR EXISTS (SELECT 1 FROM promotion_packages p WHERE p.promotion_id = v.promotion_id \
                           AND p.version = v.version AND p.package_id = $3)) \
         ORDER BY h.promotion_id LIMIT $4"
    )))
    .bind(after.unwrap_or(""))
    .bind(active_at.map(|t| t.0))
    .bind(package_id.map(ResourceId::as_str))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut promotions = Vec::with_capacity(rows.len());
    for row in &rows {
        promotions.push(promotion_from_row(conn, row).await?);
    }
    Ok(promotions)
}

async fn promotion_from_row(conn: &mut Conn, row: &AnyRow) -> Result<Promotion, StoreError> {
    let id: String = row.try_get("promotion_id")?;
    let version: i64 = row.try_get("version")?;
    let package_rows = sqlx::query(
        "SELECT package_id FROM promotion_packages WHERE promotion_id = $1 AND version = $2 \
         ORDER BY package_id",
    )
    .bind(id.as_str())
    .bind(version)
    .fetch_all(&mut *conn)
    .await?;
    let package_ids = package_rows
        .iter()
        .map(|p| stored(ResourceId::parse(&p.try_get::<String, _>(0)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Promotion {
        id: stored(ResourceId::parse(&id))?,
        version,
        name: stored(Name::parse(&row.try_get::<String, _>("name")?))?,
        bonus_bps: narrow(row.try_get("bonus_bps")?)?,
        package_ids,
        starts_at: UnixMillis(row.try_get("starts_at_ms")?),
        ends_at: UnixMillis(row.try_get("ends_at_ms")?),
        per_user_cap: narrow(row.try_get("per_user_cap")?)?,
        enabled: flag(row.try_get("enabled")?)?,
        created_at: UnixMillis(row.try_get("created_at_ms")?),
    })
}

// ---- economy parameters ------------------------------------------------------------

const ECONOMY_COLUMNS: &str = "version, creator_share_bps, payout_currency, payout_amount_minor, \
                               diamonds_per_payout_unit, payout_minimum_diamonds, diamond_maturity_hours, \
                               payout_daily_cap_diamonds, payout_review_threshold_diamonds, \
                               payout_account_cooling_off_hours, created_at_ms";

impl VersionRows for EconomyParameters {
    async fn get(
        conn: &mut Conn,
        _: &TheEconomy,
        version: Option<i64>,
    ) -> Result<Option<EconomyParameters>, StoreError> {
        let query = match version {
            Some(version) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {ECONOMY_COLUMNS} FROM economy_versions WHERE version = $1"
            )))
            .bind(version),
            None => sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {ECONOMY_COLUMNS} FROM economy_versions ORDER BY version DESC LIMIT 1"
            ))),
        };
        let row = query.fetch_optional(&mut *conn).await?;
        row.as_ref().map(economy_from_row).transpose()
    }

    /// The version row's primary key is the compare-and-set: of two concurrent writers of
    /// one version, the second inserts nothing.
    async fn write(&self, conn: &mut Conn) -> Result<VersionWrite, StoreError> {
        let done = sqlx::query(
            "INSERT INTO economy_versions (version, creator_share_bps, payout_currency, \
             payout_amount_minor, diamonds_per_payout_unit, payout_minimum_diamonds, created_at_ms, \
             diamond_maturity_hours, payout_daily_cap_diamonds, payout_review_threshold_diamonds, \
             payout_account_cooling_off_hours) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (version) DO NOTHING",
        )
        .bind(self.version)
        .bind(i64::from(self.creator_share.get()))
        .bind(self.payout_per_unit.currency.as_str())
        .bind(self.payout_per_unit.amount_minor())
        .bind(self.diamonds_per_payout_unit.get())
        .bind(self.payout_minimum.get())
        .bind(self.created_at.0)
        .bind(self.diamond_maturity.get())
        .bind(self.payout_daily_cap.get())
        .bind(self.payout_review_threshold.get())
        .bind(self.payout_account_cooling_off.get())
        .execute(&mut *conn)
        .await?;
        Ok(if done.rows_affected() == 1 {
            VersionWrite::Written
        } else {
            VersionWrite::Taken
        })
    }
}

pub async fn list_economy_versions(
    conn: &mut Conn,
    after: i64,
    limit: i64,
) -> Result<Vec<EconomyParameters>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ECONOMY_COLUMNS} FROM economy_versions WHERE version > $1 ORDER BY version LIMIT $2"
    )))
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(economy_from_row).collect()
}

fn economy_from_row(row: &AnyRow) -> Result<EconomyParameters, StoreError> {
    let currency: String = row.try_get("payout_currency")?;
    Ok(EconomyParameters {
        version: row.try_get("version")?,
        creator_share: stored(Bps::parse(narrow(row.try_get("creator_share_bps")?)?))?,
        payout_per_unit: stored(
            Money::parse(&currency, row.try_get("payout_amount_minor")?).map_err(|(_, e)| e),
        )?,
        diamonds_per_payout_unit: stored(Diamonds::parse(
            row.try_get("diamonds_per_payout_unit")?,
        ))?,
        payout_minimum: stored(Diamonds::parse(row.try_get("payout_minimum_diamonds")?))?,
        diamond_maturity: stored(RuleHours::parse(row.try_get("diamond_maturity_hours")?))?,
        payout_daily_cap: stored(DiamondLimit::parse(
            row.try_get("payout_daily_cap_diamonds")?,
        ))?,
        payout_review_threshold: stored(DiamondLimit::parse(
            row.try_get("payout_review_threshold_diamonds")?,
        ))?,
        payout_account_cooling_off: stored(RuleHours::parse(
            row.try_get("payout_account_cooling_off_hours")?,
        ))?,
        created_at: UnixMillis(row.try_get("created_at_ms")?),
    })
}

/// True when the catalog holds nothing at all (first start: seed it).
pub async fn is_empty(conn: &mut Conn) -> Result<bool, StoreError> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM gifts) + (SELECT COUNT(*) FROM coin_packages) \
         + (SELECT COUNT(*) FROM economy_versions)",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get::<i64, _>(0)? == 0)
}

/// A stored value that no longer parses: the CHECK constraints should make this
/// impossible, so it is reported as a database error, not served.
fn stored<T>(parsed: Result<T, String>) -> Result<T, StoreError> {
    parsed.map_err(|e| {
        StoreError::Database(sqlx::Error::Decode(
            format!("stored catalog row is invalid: {e}").into(),
        ))
    })
}

/// A BIGINT 0/1 flag (portable stand-in for BOOLEAN).
fn flag(value: i64) -> Result<bool, StoreError> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        other => stored(Err(format!("flag is {other}, not 0 or 1"))),
    }
}

fn narrow(value: i64) -> Result<i32, StoreError> {
    stored(i32::try_from(value).map_err(|_| format!("{value} does not fit in 32 bits")))
}
