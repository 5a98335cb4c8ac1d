//! The catalog's use cases: create or update any versioned item (one create and one update
//! for all four kinds), read one, quote a gift. Each takes a connection inside the caller's
//! transaction and domain values, and returns the domain's answer or a [`CatalogError`]
//! (after which the caller rolls back: nothing is written).

use ovation_store::StoreError;
use ovation_store::db::Conn;
use ovation_types::{Quantity, ResourceId, UnixMillis};

use crate::domain::{
    CatalogRule, CoinPackage, EconomyParameters, Gift, GiftQuote, Item, NewPromotion, Promotion,
    TheEconomy, Update, Versioned,
};
use crate::store::{self, HeadTable, VersionRows, VersionWrite};

/// Why a catalog operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Rule(#[from] CatalogRule),
    /// `kind` is what the caller asked for: an item's noun, or `economy parameters version`.
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{item} {id} already exists")]
    AlreadyExists { item: Item, id: String },
    /// The admin changed a version other than the latest.
    #[error("expected version {expected}, but the latest version is {latest}")]
    VersionMismatch { expected: i64, latest: i64 },
    /// A concurrent update wrote the version this one would have.
    #[error("{item} {id} was updated concurrently (now version {latest}); re-read and retry")]
    Moved { item: Item, id: String, latest: i64 },
    /// As [`Moved`](Self::Moved), for the economy parameters: with no head row, the store
    /// cannot tell which version is latest now.
    #[error("the {item} were updated concurrently; re-read and retry")]
    Taken { item: Item },
    /// Nothing can be priced before the economy parameters exist.
    #[error("no economy parameters are set; an admin must call UpdateEconomyParameters first")]
    EconomyMissing,
}

/// One item at `version`, or at its latest version when `None`.
pub async fn get<V: VersionRows>(
    conn: &mut Conn,
    id: &V::Id,
    version: Option<i64>,
) -> Result<V, CatalogError> {
    V::get(conn, id, version)
        .await?
        .ok_or_else(|| missing::<V>(id, version))
}

/// Writes `first`, version 1 of a new item, unless its id is taken.
pub async fn create<V: VersionRows>(conn: &mut Conn, first: V) -> Result<V, CatalogError> {
    write(conn, &first).await?;
    Ok(first)
}

/// Writes the next version of an item: the latest with the admin's change applied. Refused
/// when the admin read another version than the latest, or when the change breaks a rule;
/// of two concurrent updates, one writes and the other is refused.
pub async fn update<V: VersionRows>(
    conn: &mut Conn,
    update: Update<V>,
    now: UnixMillis,
) -> Result<V, CatalogError> {
    let next = match V::get(conn, &update.id, None).await? {
        Some(latest) => {
            check_expected(update.expected_version, latest.version())?;
            latest.next_version(update.change, now)?
        }
        None => match V::first_by_update(update.change, now) {
            Some(first) => first?,
            None => return Err(missing::<V>(&update.id, None)),
        },
    };
    write(conn, &next).await?;
    Ok(next)
}

/// Creates a promotion; every package it names must exist.
pub async fn create_promotion(
    conn: &mut Conn,
    new: NewPromotion,
    now: UnixMillis,
) -> Result<Promotion, CatalogError> {
    require_packages(conn, &new.package_ids).await?;
    create(conn, Promotion::create(new, now)?).await
}

/// Updates a promotion; every package a new package list names must exist.
pub async fn update_promotion(
    conn: &mut Conn,
    change: Update<Promotion>,
    now: UnixMillis,
) -> Result<Promotion, CatalogError> {
    if let Some(ids) = &change.change.package_ids {
        require_packages(conn, ids).await?;
    }
    update(conn, change, now).await
}

/// Versions of one gift after version `after`, oldest first, at most `limit`.
pub async fn gift_versions(
    conn: &mut Conn,
    id: &ResourceId,
    after: i64,
    limit: i64,
) -> Result<Vec<Gift>, CatalogError> {
    if store::latest_version(conn, HeadTable::Gifts, id)
        .await?
        .is_none()
    {
        return Err(missing::<Gift>(id, None));
    }
    Ok(store::list_gift_versions(conn, id, after, limit).await?)
}

/// What `quantity` of a gift costs and earns now, under the latest economy.
pub async fn quote(
    conn: &mut Conn,
    gift_id: &ResourceId,
    quantity: Quantity,
    now: UnixMillis,
) -> Result<GiftQuote, CatalogError> {
    let gift = get::<Gift>(conn, gift_id, None).await?;
    let economy = get::<EconomyParameters>(conn, &TheEconomy, None).await?;
    Ok(GiftQuote::new(gift, &economy, quantity, now)?)
}

/// Writes one version, or says who got there first.
async fn write<V: VersionRows>(conn: &mut Conn, version: &V) -> Result<(), CatalogError> {
    let item = V::ITEM;
    match version.write(conn).await? {
        VersionWrite::Written => Ok(()),
        VersionWrite::Exists => Err(CatalogError::AlreadyExists {
            item,
            id: version.id().to_string(),
        }),
        VersionWrite::Missing => Err(missing::<V>(version.id(), None)),
        VersionWrite::Moved { latest } => Err(CatalogError::Moved {
            item,
            id: version.id().to_string(),
            latest,
        }),
        VersionWrite::Taken => Err(CatalogError::Taken { item }),
    }
}

/// `expected` is the version the admin read; `None` accepts any.
fn check_expected(expected: Option<i64>, latest: i64) -> Result<(), CatalogError> {
    match expected {
        Some(expected) if expected != latest => {
            Err(CatalogError::VersionMismatch { expected, latest })
        }
        _ => Ok(()),
    }
}

/// The item asked for is not there (at that version).
fn missing<V: Versioned>(id: &V::Id, version: Option<i64>) -> CatalogError {
    let (kind, id) = match (V::ITEM, version) {
        (Item::EconomyParameters, None) => return CatalogError::EconomyMissing,
        (Item::EconomyParameters, Some(v)) => ("economy parameters version", v.to_string()),
        (item, Some(v)) => (item.noun(), format!("{id}@{v}")),
        (item, None) => (item.noun(), id.to_string()),
    };
    CatalogError::NotFound { kind, id }
}

async fn require_packages(conn: &mut Conn, ids: &[ResourceId]) -> Result<(), CatalogError> {
    for id in ids {
        if store::latest_version(conn, HeadTable::CoinPackages, id)
            .await?
            .is_none()
        {
            return Err(missing::<CoinPackage>(id, None));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EconomyChange, GiftChange, GiftPrice, NewGift, Window};
    use ovation_store::{Db, DbOptions};
    use ovation_testkit::{TestDatabase, databases};
    use ovation_types::{Bps, Diamonds, Money, Name, Text};

    /// Every test database (SQLite; PostgreSQL when configured), migrated and empty.
    async fn catalogs() -> Vec<(TestDatabase, Db)> {
        let mut all = Vec::new();
        for test_db in databases().await {
            let db = Db::connect(test_db.url(), &DbOptions::default())
                .await
                .unwrap();
            db.migrate(&crate::MIGRATIONS).await.unwrap();
            all.push((test_db, db));
        }
        all
    }

    fn id(raw: &str) -> ResourceId {
        ResourceId::parse(raw).unwrap()
    }

    fn rose() -> Gift {
        let new = NewGift {
            id: id("rose"),
            name: Name::parse("Rose").unwrap(),
            coin_price: GiftPrice::parse(1).unwrap(),
            asset_url: Text::default(),
            enabled: true,
            window: Window::default(),
        };
        Gift::create(new, UnixMillis(1_000))
    }

    fn repricing(gift: &str, expected_version: Option<i64>, price: i64) -> Update<Gift> {
        Update {
            id: id(gift),
            expected_version,
            change: GiftChange {
                coin_price: Some(GiftPrice::parse(price).unwrap()),
                ..Default::default()
            },
        }
    }

    #[tokio::test]
    async fn an_item_is_created_once_and_updated_only_from_its_latest_version() {
        for (test_db, db) in catalogs().await {
            let backend = test_db.backend();
            let mut conn = db.conn().await.unwrap();
            let now = UnixMillis(2_000);
            let v1 = create(&mut conn, rose()).await.unwrap();
            let again = create(&mut conn, rose()).await.unwrap_err();
            assert_eq!(again.to_string(), "gift rose already exists", "{backend}");
            let stale = update(&mut conn, repricing("rose", Some(2), 5), now).await;
            assert_eq!(
                stale.unwrap_err().to_string(),
                "expected version 2, but the latest version is 1"
            );
            let v2 = update(&mut conn, repricing("rose", Some(1), 5), now)
                .await
                .unwrap();
            assert_eq!((v2.version, v2.coin_price.get()), (2, 5), "{backend}");
            // A second writer that read version 1 too loses to the first.
            let lost = v1.next_version(GiftChange::default(), now).unwrap();
            assert_eq!(
                write(&mut conn, &lost).await.unwrap_err().to_string(),
                "gift rose was updated concurrently (now version 2); re-read and retry"
            );
            let latest = get::<Gift>(&mut conn, &id("rose"), None).await.unwrap();
            assert_eq!(latest, v2, "{backend}");
            let old = get::<Gift>(&mut conn, &id("rose"), Some(1)).await.unwrap();
            assert_eq!(old, v1, "{backend}");
            assert!(matches!(
                get::<Gift>(&mut conn, &id("rose"), Some(3)).await,
                Err(CatalogError::NotFound { kind: "gift", id }) if id == "rose@3"
            ));
            assert!(matches!(
                update(&mut conn, repricing("tulip", None, 5), now).await,
                Err(CatalogError::NotFound { kind: "gift", id }) if id == "tulip"
            ));
        }
    }

    #[tokio::test]
    async fn the_first_economy_update_sets_every_number_and_a_concurrent_one_loses() {
        for (test_db, db) in catalogs().await {
            let backend = test_db.backend();
            let mut conn = db.conn().await.unwrap();
            let now = UnixMillis(2_000);
            assert!(matches!(
                get::<EconomyParameters>(&mut conn, &TheEconomy, None).await,
                Err(CatalogError::EconomyMissing)
            ));
            let share_only = EconomyChange {
                creator_share: Some(Bps::parse(5_000).unwrap()),
                ..Default::default()
            };
            let partial = Update::<EconomyParameters> {
                id: TheEconomy,
                expected_version: None,
                change: share_only.clone(),
            };
            match update(&mut conn, partial, now).await {
                Err(CatalogError::Rule(CatalogRule::Incomplete(missing))) => {
                    let fields: Vec<_> = missing.into_iter().map(|v| v.field).collect();
                    assert_eq!(
                        fields,
                        [
                            "payout_per_unit",
                            "diamonds_per_payout_unit",
                            "payout_minimum_diamonds"
                        ],
                        "{backend}"
                    );
                }
                other => panic!("{backend}: {other:?}"),
            }
            let whole = EconomyChange {
                payout_per_unit: Some(Money::parse("USD", 500).unwrap()),
                diamonds_per_payout_unit: Some(Diamonds::parse(1_000).unwrap()),
                payout_minimum: Some(Diamonds::parse(1_000).unwrap()),
                ..share_only
            };
            let first = Update::<EconomyParameters> {
                id: TheEconomy,
                expected_version: Some(7),
                change: whole,
            };
            let v1 = update(&mut conn, first, now).await.unwrap();
            assert_eq!(v1.version, 1, "{backend}");
            assert_eq!(
                write(&mut conn, &v1).await.unwrap_err().to_string(),
                "the economy parameters were updated concurrently; re-read and retry"
            );
            assert!(matches!(
                get::<EconomyParameters>(&mut conn, &TheEconomy, Some(9)).await,
                Err(CatalogError::NotFound { kind: "economy parameters version", id }) if id == "9"
            ));
        }
    }

    #[tokio::test]
    async fn a_promotion_names_only_packages_that_exist() {
        for (_test_db, db) in catalogs().await {
            let mut conn = db.conn().await.unwrap();
            let new = NewPromotion {
                id: id("launch"),
                name: Name::parse("Launch").unwrap(),
                bonus_bps: 1_000,
                package_ids: vec![id("coins_100")],
                starts_at: UnixMillis(1_000),
                ends_at: UnixMillis(2_000),
                per_user_cap: 0,
                enabled: true,
            };
            assert!(matches!(
                create_promotion(&mut conn, new, UnixMillis(1_000)).await,
                Err(CatalogError::NotFound { kind: "coin package", id }) if id == "coins_100"
            ));
        }
    }
}
