//! Amounts as bills write them: yuan as decimal text, converted exactly to integers.
//!
//! Money columns carry two decimals (fen). Fee columns carry five (`0.01000`): they are kept
//! in units of 10⁻⁵ yuan ([`Fee`]) and rounded to fen only where asked. Summary counts are
//! printed as decimals too (`45.0`).

use super::error::BillError;

/// Units of 10⁻⁵ yuan in one fen.
pub const FEE_UNITS_PER_FEN: i64 = 1_000;

/// A fee with the five decimals the bill gives it, in units of 10⁻⁵ yuan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Fee(pub i64);

impl Fee {
    /// The fee in fen, rounded half away from zero (WeChat's own fees are whole fen already).
    pub fn fen_rounded(self) -> i64 {
        let half = FEE_UNITS_PER_FEN / 2;
        if self.0 >= 0 {
            (self.0 + half) / FEE_UNITS_PER_FEN
        } else {
            -((-self.0 + half) / FEE_UNITS_PER_FEN)
        }
    }

    /// Five-decimal text, as bills print fees (`1` fen → `0.01000`).
    pub fn to_bill_text(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        format!("{sign}{}.{:05}", abs / 100_000, abs % 100_000)
    }

    pub fn from_fen(fen: i64) -> Self {
        Self(fen * FEE_UNITS_PER_FEN)
    }
}

/// Parses decimal text into an integer count of 10^-`scale` units, exactly. More decimals than
/// `scale` are accepted only when they are zeros (`0.01000` at scale 2 is 1).
pub(crate) fn scaled(field: &str, text: &str, scale: u32) -> Result<i64, BillError> {
    let bad = || BillError::Amount {
        field: field.to_string(),
        value: text.to_string(),
    };
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 15 || !all_digits(whole) || !all_digits(frac) {
        return Err(bad());
    }
    let (kept, dropped) = frac.split_at(frac.len().min(scale as usize));
    if dropped.bytes().any(|b| b != b'0') {
        return Err(bad());
    }
    let mut value: i64 = whole.parse().map_err(|_| bad())?;
    for i in 0..scale as usize {
        let digit = kept.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
        value = value * 10 + digit;
    }
    Ok(if negative { -value } else { value })
}

/// Yuan text with up to two decimals (more only if zeros) → fen.
pub fn fen(field: &str, text: &str) -> Result<i64, BillError> {
    scaled(field, text, 2)
}

/// Fee text with up to five decimals → [`Fee`].
pub fn fee(field: &str, text: &str) -> Result<Fee, BillError> {
    scaled(field, text, 5).map(Fee)
}

/// A count printed as a decimal (`45.0`) → 45.
pub fn count(field: &str, text: &str) -> Result<u64, BillError> {
    let n = scaled(field, text, 0)?;
    u64::try_from(n).map_err(|_| BillError::Amount {
        field: field.to_string(),
        value: text.to_string(),
    })
}

/// Formats fen as yuan with two decimals (`1234` → `12.34`).
pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_text_becomes_exact_fen() {
        assert_eq!(fen("f", "0.01").unwrap(), 1);
        assert_eq!(fen("f", "12.3").unwrap(), 1230);
        assert_eq!(fen("f", "7").unwrap(), 700);
        assert_eq!(fen("f", "-0.47").unwrap(), -47);
        assert_eq!(fen("f", "0.01000").unwrap(), 1);
        assert!(fen("f", "0.011").is_err());
        assert!(fen("f", "").is_err());
        assert!(fen("f", ".5").is_err());
        assert!(fen("f", "1e3").is_err());
        assert!(fen("f", "1,000.00").is_err());
        assert_eq!(yuan(fen("f", "123456789.99").unwrap()), "123456789.99");
    }

    #[test]
    fn fees_keep_five_decimals() {
        assert_eq!(fee("f", "0.01000").unwrap(), Fee(1_000));
        assert_eq!(fee("f", "0.00006").unwrap(), Fee(6));
        assert_eq!(fee("f", "0.08").unwrap(), Fee(8_000));
        assert_eq!(Fee(1_499).fen_rounded(), 1);
        assert_eq!(Fee(1_500).fen_rounded(), 2);
        assert_eq!(Fee(-1_500).fen_rounded(), -2);
        assert_eq!(Fee(1_000).to_bill_text(), "0.01000");
        assert_eq!(Fee(-6).to_bill_text(), "-0.00006");
        assert!(fee("f", "0.000001").is_err());
    }

    #[test]
    fn counts_tolerate_a_decimal_zero() {
        assert_eq!(count("n", "45.0").unwrap(), 45);
        assert_eq!(count("n", "3").unwrap(), 3);
        assert!(count("n", "4.5").is_err());
        assert!(count("n", "-1").is_err());
    }
}
