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
}
