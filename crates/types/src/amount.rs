//! Integer amounts: coins, diamonds, basis points, quantities and money. Never floats.

use crate::limits::{AMOUNT_MAX, BPS_WHOLE, GIFT_QUANTITY_MAX, MONEY_MINOR_MAX};

/// A positive number of coins in one operation: 1..=10^12.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Coins(i64);

/// A positive number of diamonds in one operation: 1..=10^12.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Diamonds(i64);

macro_rules! positive_amount {
    ($t:ident) => {
        impl $t {
            pub fn parse(raw: i64) -> Result<Self, String> {
                if raw <= 0 {
                    return Err("must be greater than 0".into());
                }
                if raw > AMOUNT_MAX {
                    return Err(format!("must be at most {AMOUNT_MAX}"));
                }
                Ok($t(raw))
            }

            pub fn get(self) -> i64 {
                self.0
            }
        }
    };
}
positive_amount!(Coins);
positive_amount!(Diamonds);

/// A share in basis points: 0..=10000 (10000 = 100 %).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bps(i32);

impl Bps {
    pub fn parse(raw: i32) -> Result<Self, String> {
        if !(0..=BPS_WHOLE).contains(&raw) {
            return Err(format!("must be between 0 and {BPS_WHOLE} basis points"));
        }
        Ok(Bps(raw))
    }

    pub fn get(self) -> i32 {
        self.0
    }

    /// `floor(amount × self / 10000)`, or `None` on overflow. Amounts are ≤ 10^12 and
    /// shares ≤ 10^4, so the product fits easily in i128 and the result in i64.
    pub fn share_of(self, amount: i64) -> Option<i64> {
        let product = i128::from(amount).checked_mul(i128::from(self.0))?;
        i64::try_from(product.div_euclid(i128::from(BPS_WHOLE))).ok()
    }
}

/// How many of one gift in one send: 1..=99.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity(i32);

impl Quantity {
    pub fn parse(raw: i32) -> Result<Self, String> {
        if !(1..=GIFT_QUANTITY_MAX).contains(&raw) {
            return Err(format!("must be between 1 and {GIFT_QUANTITY_MAX}"));
        }
        Ok(Quantity(raw))
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// An ISO 4217 alphabetic currency code: three upper-case ASCII letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CurrencyCode([u8; 3]);

impl CurrencyCode {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let bytes = raw.as_bytes();
        if bytes.len() != 3 || !bytes.iter().all(u8::is_ascii_uppercase) {
            return Err("must be an ISO 4217 code: three upper-case letters, e.g. USD".into());
        }
        Ok(CurrencyCode([bytes[0], bytes[1], bytes[2]]))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters get in through `parse`.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl std::fmt::Display for CurrencyCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A positive amount of real money in minor units (cents): 1..=10^13.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Money {
    pub currency: CurrencyCode,
    amount_minor: i64,
}

impl Money {
    /// Parses the two fields; the error names which one is wrong (`currency_code` or
    /// `amount_minor`) so the caller can prefix its own field path.
    pub fn parse(currency_code: &str, amount_minor: i64) -> Result<Self, (&'static str, String)> {
        let currency = CurrencyCode::parse(currency_code).map_err(|e| ("currency_code", e))?;
        if amount_minor <= 0 {
            return Err(("amount_minor", "must be greater than 0".into()));
        }
        if amount_minor > MONEY_MINOR_MAX {
            return Err(("amount_minor", format!("must be at most {MONEY_MINOR_MAX}")));
        }
        Ok(Money {
            currency,
            amount_minor,
        })
    }

    pub fn amount_minor(&self) -> i64 {
        self.amount_minor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn amounts_are_positive_and_bounded() {
        assert!(Coins::parse(0).is_err());
        assert!(Coins::parse(-1).is_err());
        assert!(Coins::parse(i64::MAX).is_err());
        assert!(Coins::parse(AMOUNT_MAX).is_ok());
        assert!(Diamonds::parse(1).is_ok());
    }

    #[test]
    fn currency_codes() {
        assert!(CurrencyCode::parse("USD").is_ok());
        assert!(CurrencyCode::parse("usd").is_err());
        assert!(CurrencyCode::parse("USDT").is_err());
        assert!(Money::parse("EUR", 0).is_err());
    }

    proptest! {
        #[test]
        fn share_is_floor_and_never_exceeds_amount(amount in 0..=AMOUNT_MAX, bps in 0..=BPS_WHOLE) {
            let share = Bps::parse(bps).unwrap().share_of(amount).unwrap();
            prop_assert!(share <= amount);
            prop_assert!(share >= 0);
            prop_assert_eq!(i128::from(share), i128::from(amount) * i128::from(bps) / 10_000);
        }
    }
}
