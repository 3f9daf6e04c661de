//! The double-entry ledger: every movement of a merchant's money is a [`Posting`] whose entries
//! sum to zero, and every balance is a sum of entries (never stored apart from them).
//!
//! Accounts, per merchant and currency (a positive balance is money in it):
//! - `pending`: paid by payers, not yet settled by WeChat;
//! - `settled`: settled by WeChat into the merchant's account; what is available;
//! - `reserved`: held for payouts on their way to a payee (moved out of `settled` when the
//!   payout is made; on to `payouts` when it succeeds, or back when it fails or is cancelled);
//! - `refunds`, `fees`, `payouts`: what went out, each its own running total;
//! - `discounts`: what merchant-funded coupons (免充值券) took off payments, so WeChat never
//!   settled it: moved out of `pending` when the bill shows a payment settled for less than its
//!   amount, and back into `settled` for the coupon's share of a refund, which WeChat does not
//!   take from the merchant;
//! - `revenue`: the other side of every payment (its balance is minus all payments);
//! - `conversion`: money between currencies, for a merchant WeChat settles in another currency
//!   than a payment's: the payment leaves `settled` in its own currency into `conversion`, and
//!   arrives in the settlement currency out of it (and the other way for a refund). Its
//!   balance in the pricing currency is what was converted away, in the settlement currency
//!   minus what that became.
//!
//! So `available` (the `settled` balance) is settled − refunds − fees + fees returned −
//! payouts − reserved (± conversions), and the accounts of each currency together hold nothing
//! at every moment.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Account {
    Revenue,
    Pending,
    Settled,
    Refunds,
    Fees,
    Payouts,
    Reserved,
    Conversion,
    Discounts,
}

impl Account {
    pub const ALL: [Account; 9] = [
        Self::Revenue,
        Self::Pending,
        Self::Settled,
        Self::Refunds,
        Self::Fees,
        Self::Payouts,
        Self::Reserved,
        Self::Conversion,
        Self::Discounts,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revenue => "revenue",
            Self::Pending => "pending",
            Self::Settled => "settled",
            Self::Refunds => "refunds",
            Self::Fees => "fees",
            Self::Payouts => "payouts",
            Self::Reserved => "reserved",
            Self::Conversion => "conversion",
            Self::Discounts => "discounts",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// What caused a posting. One cause posts once per source (the store keeps them unique), so
/// replaying a callback or re-running a reconciliation never posts twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostingKind {
    /// A WeChat order was paid (source: its out_trade_no).
    Payment,
    /// WeChat settled a payment (source: the fund-flow movement).
    Settlement,
    /// WeChat took its fee on a payment (source: the fund-flow movement).
    Fee,
    /// WeChat returned part of a fee with a refund (source: the fund-flow movement).
    FeeReturn,
    /// A refund succeeded (source: the refund).
    Refund,
    /// A payout was made: its amount is held (source: the payout).
    PayoutReserve,
    /// A payout succeeded: the held amount left (source: the payout).
    Payout,
    /// A payout failed or was cancelled: the held amount is available again (source: the
    /// payout).
    PayoutRelease,
    /// Settled money left this currency to be converted into another (source: the
    /// reconciliation and the currency).
    ConversionOut,
    /// Converted money arrived in this currency (source: the reconciliation and the currency).
    ConversionIn,
    /// Merchant-funded coupons took this off the day's payments: WeChat settled that much less
    /// (source: the reconciliation and the currency).
    Discount,
    /// The coupons' share of the day's refunds: the refund took that much less of the settled
    /// money (source: the reconciliation and the currency).
    DiscountReturn,
}

impl PostingKind {
    pub const ALL: [PostingKind; 12] = [
        Self::Payment,
        Self::Settlement,
        Self::Fee,
        Self::FeeReturn,
        Self::Refund,
        Self::PayoutReserve,
        Self::Payout,
        Self::PayoutRelease,
        Self::ConversionOut,
        Self::ConversionIn,
        Self::Discount,
        Self::DiscountReturn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payment => "payment",
            Self::Settlement => "settlement",
            Self::Fee => "fee",
            Self::FeeReturn => "fee_return",
            Self::Refund => "refund",
            Self::PayoutReserve => "payout_reserve",
            Self::Payout => "payout",
            Self::PayoutRelease => "payout_release",
            Self::ConversionOut => "conversion_out",
            Self::ConversionIn => "conversion_in",
            Self::Discount => "discount",
            Self::DiscountReturn => "discount_return",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The two accounts this kind moves `amount` between: (debited, credited). The debited
    /// account's balance grows by the amount, the credited one's shrinks.
    fn accounts(self) -> (Account, Account) {
        match self {
            Self::Payment => (Account::Pending, Account::Revenue),
            Self::Settlement => (Account::Settled, Account::Pending),
            Self::Fee => (Account::Fees, Account::Settled),
            Self::FeeReturn => (Account::Settled, Account::Fees),
            Self::Refund => (Account::Refunds, Account::Settled),
            Self::PayoutReserve => (Account::Reserved, Account::Settled),
            Self::Payout => (Account::Payouts, Account::Reserved),
            Self::PayoutRelease => (Account::Settled, Account::Reserved),
            Self::ConversionOut => (Account::Conversion, Account::Settled),
            Self::ConversionIn => (Account::Settled, Account::Conversion),
            Self::Discount => (Account::Discounts, Account::Pending),
            Self::DiscountReturn => (Account::Settled, Account::Discounts),
        }
    }
}

try_from_string!(PostingKind, "posting kind");
try_from_string!(Account, "ledger account");

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PostingError {
    #[error("a posting moves a positive amount, not {0}")]
    NotPositive(i64),
}

/// One balanced movement: its entries (account, signed amount) sum to zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub kind: PostingKind,
    pub amount: i64,
    pub entries: [(Account, i64); 2],
}

impl Posting {
    pub fn new(kind: PostingKind, amount: i64) -> Result<Self, PostingError> {
        if amount <= 0 {
            return Err(PostingError::NotPositive(amount));
        }
        let (debit, credit) = kind.accounts();
        let posting = Self {
            kind,
            amount,
            entries: [(debit, amount), (credit, -amount)],
        };
        assert_eq!(posting.entries.iter().map(|(_, a)| a).sum::<i64>(), 0);
        Ok(posting)
    }
}

/// Balances by account, summed from entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Balances {
    pub revenue: i64,
    pub pending: i64,
    pub settled: i64,
    pub refunds: i64,
    pub fees: i64,
    pub payouts: i64,
    pub reserved: i64,
    pub conversion: i64,
    pub discounts: i64,
}

impl Balances {
    pub fn add(&mut self, account: Account, amount: i64) {
        let slot = match account {
            Account::Revenue => &mut self.revenue,
            Account::Pending => &mut self.pending,
            Account::Settled => &mut self.settled,
            Account::Refunds => &mut self.refunds,
            Account::Fees => &mut self.fees,
            Account::Payouts => &mut self.payouts,
            Account::Reserved => &mut self.reserved,
            Account::Conversion => &mut self.conversion,
            Account::Discounts => &mut self.discounts,
        };
        *slot += amount;
    }

    /// What the merchant can use: the settled account.
    pub fn available(&self) -> i64 {
        self.settled
    }

    /// The ledger's own check: all accounts together hold nothing.
    pub fn is_balanced(&self) -> bool {
        self.revenue
            + self.pending
            + self.settled
            + self.refunds
            + self.fees
            + self.payouts
            + self.reserved
            + self.conversion
            + self.discounts
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payment_settled_with_its_fee_and_a_partial_refund() {
        let mut b = Balances::default();
        for (kind, amount) in [
            (PostingKind::Payment, 10_000),
            (PostingKind::Settlement, 10_000),
            (PostingKind::Fee, 60),
            (PostingKind::Refund, 2_500),
            (PostingKind::FeeReturn, 15),
        ] {
            for (account, a) in Posting::new(kind, amount).unwrap().entries {
                b.add(account, a);
            }
        }
        assert!(b.is_balanced());
        assert_eq!(b.pending, 0);
        assert_eq!(b.available(), 10_000 - 60 - 2_500 + 15);
        assert_eq!((b.refunds, b.fees, b.revenue), (2_500, 45, -10_000));
    }

    #[test]
    fn a_payment_with_a_merchant_funded_coupon_and_a_partial_refund() {
        // 100.00 paid, 10.00 of it by a 免充值 coupon: WeChat settles 90.00 (fee 0.54); half
        // refunded, 5.00 of which goes back to the coupon, not out of the settled money.
        let mut b = Balances::default();
        for (kind, amount) in [
            (PostingKind::Payment, 10_000),
            (PostingKind::Settlement, 9_000),
            (PostingKind::Discount, 1_000),
            (PostingKind::Fee, 54),
            (PostingKind::Refund, 5_000),
            (PostingKind::DiscountReturn, 500),
            (PostingKind::FeeReturn, 27),
        ] {
            for (account, a) in Posting::new(kind, amount).unwrap().entries {
                b.add(account, a);
            }
        }
        assert!(b.is_balanced());
        assert_eq!(b.pending, 0);
        assert_eq!(b.available(), 9_000 - 54 - 4_500 + 27);
        assert_eq!((b.refunds, b.discounts), (5_000, 500));
    }

    #[test]
    fn a_payout_reserves_then_leaves_or_comes_back() {
        let mut b = Balances::default();
        for (kind, amount) in [
            (PostingKind::Payment, 10_000),
            (PostingKind::Settlement, 10_000),
            (PostingKind::PayoutReserve, 3_000),
            (PostingKind::PayoutReserve, 500),
            (PostingKind::Payout, 3_000),
            (PostingKind::PayoutRelease, 500),
        ] {
            for (account, a) in Posting::new(kind, amount).unwrap().entries {
                b.add(account, a);
            }
        }
        assert!(b.is_balanced());
        assert_eq!((b.available(), b.reserved, b.payouts), (7_000, 0, 3_000));
    }

    #[test]
    fn a_payment_settled_in_another_currency_and_a_refund_converted_back() {
        // 100.00 HKD paid and settled as 12.81 USD with a 0.08 USD fee; 25.00 HKD refunded,
        // which took 3.20 USD, 0.02 USD of fee returned.
        let (mut hkd, mut usd) = (Balances::default(), Balances::default());
        let post = |b: &mut Balances, kind, amount| {
            for (account, a) in Posting::new(kind, amount).unwrap().entries {
                b.add(account, a);
            }
        };
        post(&mut hkd, PostingKind::Payment, 10_000);
        post(&mut hkd, PostingKind::Settlement, 10_000);
        post(&mut hkd, PostingKind::ConversionOut, 10_000);
        post(&mut usd, PostingKind::ConversionIn, 1_281);
        post(&mut usd, PostingKind::Fee, 8);
        post(&mut hkd, PostingKind::Refund, 2_500);
        post(&mut hkd, PostingKind::ConversionIn, 2_500);
        post(&mut usd, PostingKind::ConversionOut, 320);
        post(&mut usd, PostingKind::FeeReturn, 2);
        assert!(hkd.is_balanced() && usd.is_balanced());
        assert_eq!((hkd.available(), hkd.pending), (0, 0));
        assert_eq!(hkd.conversion, 7_500);
        assert_eq!(usd.available(), 1_281 - 8 - 320 + 2);
        assert_eq!(usd.conversion, -1_281 + 320);
    }

    #[test]
    fn postings_move_positive_amounts_and_names_round_trip() {
        assert_eq!(
            Posting::new(PostingKind::Fee, 0),
            Err(PostingError::NotPositive(0))
        );
        for k in PostingKind::ALL {
            assert_eq!(PostingKind::parse(k.as_str()), Some(k));
        }
        for a in Account::ALL {
            assert_eq!(Account::parse(a.as_str()), Some(a));
        }
    }
}
