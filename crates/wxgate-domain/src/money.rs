//! Money: an integer number of the currency's minor unit, with the ISO 4217 exponent. Never
//! floats.

use serde::{Deserialize, Serialize};

/// An ISO 4217 currency that WeChat Pay prices in, with its exponent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Currency {
    CNY,
    HKD,
    USD,
    EUR,
    GBP,
    JPY,
    KRW,
    SGD,
    AUD,
    CAD,
    NZD,
    CHF,
    MOP,
    THB,
    MYR,
}

const ALL: [Currency; 15] = [
    Currency::CNY,
    Currency::HKD,
    Currency::USD,
    Currency::EUR,
    Currency::GBP,
    Currency::JPY,
    Currency::KRW,
    Currency::SGD,
    Currency::AUD,
    Currency::CAD,
    Currency::NZD,
    Currency::CHF,
    Currency::MOP,
    Currency::THB,
    Currency::MYR,
];

impl Currency {
    /// Parses an upper-case ISO 4217 code that wxgate supports.
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        ALL.iter()
            .copied()
            .find(|c| c.code() == code)
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_string()))
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::CNY => "CNY",
            Self::HKD => "HKD",
            Self::USD => "USD",
            Self::EUR => "EUR",
            Self::GBP => "GBP",
            Self::JPY => "JPY",
            Self::KRW => "KRW",
            Self::SGD => "SGD",
            Self::AUD => "AUD",
            Self::CAD => "CAD",
            Self::NZD => "NZD",
            Self::CHF => "CHF",
            Self::MOP => "MOP",
            Self::THB => "THB",
            Self::MYR => "MYR",
        }
    }

    /// Decimal places of the minor unit (ISO 4217).
    pub fn exponent(self) -> u32 {
        match self {
            Self::JPY | Self::KRW => 0,
            _ => 2,
        }
    }

    /// An amount in minor units written in the major unit: 1234 → `12.34` (CNY), `1234` (JPY).
    pub fn format_minor(self, minor: i64) -> String {
        let exponent = self.exponent();
        if exponent == 0 {
            return minor.to_string();
        }
        let unit = 10i64.pow(exponent);
        format!(
            "{}.{:0width$}",
            minor / unit,
            minor % unit,
            width = exponent as usize
        )
    }

    /// A plain decimal as a person enters it (`12.34`, `12`) in minor units; `None` for
    /// anything else, or more decimals than the currency has.
    pub fn parse_major(self, entered: &str) -> Option<i64> {
        let exponent = self.exponent() as usize;
        let entered = entered.trim();
        let (whole, fraction) = entered.split_once('.').unwrap_or((entered, ""));
        if whole.is_empty()
            || whole.len() > 12
            || fraction.len() > exponent
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let mut minor: i64 = whole.parse().ok()?;
        for i in 0..exponent {
            let digit = fraction.as_bytes().get(i).map_or(0, |b| (b - b'0') as i64);
            minor = minor.checked_mul(10)?.checked_add(digit)?;
        }
        Some(minor)
    }
}

/// The largest amount wxgate accepts in one payment, in minor units. WeChat's fields are
/// 32-bit integers in fen; this keeps every sum of refunds far from overflow too.
pub const AMOUNT_MAX: i64 = 2_147_483_647;

/// A positive amount in a currency's minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

impl Money {
    /// Only amounts from 1 to [`AMOUNT_MAX`] minor units exist.
    pub fn new(minor: i64, currency: Currency) -> Result<Self, MoneyError> {
        if minor <= 0 {
            return Err(MoneyError::NotPositive(minor));
        }
        if minor > AMOUNT_MAX {
            return Err(MoneyError::TooLarge(minor));
        }
        Ok(Self { minor, currency })
    }

    pub fn minor(self) -> i64 {
        self.minor
    }

    pub fn currency(self) -> Currency {
        self.currency
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount must be a whole number of minor units above 0, got {0}")]
    NotPositive(i64),
    #[error("amount must be at most {AMOUNT_MAX} minor units, got {0}")]
    TooLarge(i64),
    #[error("{0:?} is not a supported ISO 4217 currency code")]
    UnknownCurrency(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_round_trip_and_know_their_exponent() {
        for c in ALL {
            assert_eq!(Currency::parse(c.code()), Ok(c));
        }
        assert_eq!(Currency::CNY.exponent(), 2);
        assert_eq!(Currency::JPY.exponent(), 0);
        assert!(Currency::parse("cny").is_err());
        assert!(Currency::parse("XXX").is_err());
    }

    #[test]
    fn money_is_positive_and_bounded() {
        assert_eq!(Money::new(1, Currency::CNY).unwrap().minor(), 1);
        assert_eq!(
            Money::new(0, Currency::CNY),
            Err(MoneyError::NotPositive(0))
        );
        assert_eq!(
            Money::new(-5, Currency::CNY),
            Err(MoneyError::NotPositive(-5))
        );
        assert_eq!(
            Money::new(AMOUNT_MAX + 1, Currency::CNY),
            Err(MoneyError::TooLarge(AMOUNT_MAX + 1))
        );
    }

    #[test]
    fn amounts_in_the_major_unit() {
        assert_eq!(Currency::CNY.format_minor(1999), "19.99");
        assert_eq!(Currency::USD.format_minor(5), "0.05");
        assert_eq!(Currency::JPY.format_minor(1999), "1999");
        let cny = Currency::CNY;
        assert_eq!(cny.parse_major("12.34"), Some(1234));
        assert_eq!(cny.parse_major("12"), Some(1200));
        assert_eq!(cny.parse_major(" 0.5 "), Some(50));
        assert_eq!(Currency::JPY.parse_major("1000"), Some(1000));
        for bad in ["", "1.234", "-1", "1e3", "abc", ".5", "99999999999999"] {
            assert_eq!(cny.parse_major(bad), None, "{bad}");
        }
        assert_eq!(Currency::JPY.parse_major("1.5"), None);
    }
}
