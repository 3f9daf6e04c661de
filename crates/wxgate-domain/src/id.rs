//! Prefixed, opaque identifiers: `pay_…`, `mch_…`, `key_…`, `evt_…`.

use rand::Rng;

const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const RANDOM_LEN: usize = 24;

/// A new id: the prefix, an underscore and 24 random characters of `[0-9a-z]` (~124 bits).
pub fn generate(prefix: &str) -> String {
    let mut rng = rand::rng();
    let tail: String = (0..RANDOM_LEN)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}_{tail}")
}

/// Whether `value` has the shape of an id with `prefix` (it may still not exist).
pub fn is_valid(prefix: &str, value: &str) -> bool {
    value
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|tail| tail.len() == RANDOM_LEN && tail.bytes().all(|b| ALPHABET.contains(&b)))
}

macro_rules! typed_ids {
    ($($name:ident = $prefix:literal, $what:literal;)*) => {$(
        #[doc = concat!("The id of ", $what, ": `", $prefix, "_…`. A distinct type, so one kind of id is never passed for another.")]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new, random id.
            pub fn generate() -> Self {
                Self(generate($prefix))
            }

            /// An id from outside (a path, a body): `None` unless it has this kind's shape, so
            /// the caller can answer "no such object" without asking the database.
            pub fn parse(value: &str) -> Option<Self> {
                is_valid($prefix, value).then(|| Self(value.to_string()))
            }

            /// An id read back from this gateway's own store.
            pub fn stored(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        /// Reads as text where text is wanted (the store's queries); text never becomes an id
        /// without [`parse`](Self::parse) or [`stored`](Self::stored).
        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    )*};
}

typed_ids! {
    MerchantId = "mch", "a merchant";
    PaymentId = "pay", "a payment";
    RefundId = "re", "a refund";
    EventId = "evt", "an event";
    EndpointId = "we", "a webhook endpoint";
    LinkId = "plink", "a payment link";
    ReconciliationId = "recon", "a reconciliation";
    DiscrepancyId = "disc", "a discrepancy";
    PostingId = "txn", "a ledger posting (a balance transaction)";
    ReportId = "rpt", "a report";
    PayoutId = "po", "a payout";
}

impl PayoutId {
    /// The transfer's `out_bill_no` at WeChat: the id without its underscore (WeChat takes
    /// letters and digits only), fixed for the payout's life.
    pub fn out_bill_no(&self) -> String {
        self.0.replacen('_', "", 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_checkable() {
        let id = generate("pay");
        assert!(id.starts_with("pay_") && id.len() == 28);
        assert!(is_valid("pay", &id));
        assert!(!is_valid("mch", &id));
        assert!(!is_valid("pay", "pay_short"));
        assert!(!is_valid("pay", "pay_ABCDEFGHIJKLMNOPQRSTUVWX"));
        assert_ne!(generate("pay"), generate("pay"));
    }

    #[test]
    fn typed_ids_parse_only_their_own_kind() {
        let payment = PaymentId::generate();
        assert_eq!(PaymentId::parse(payment.as_str()), Some(payment.clone()));
        assert_eq!(MerchantId::parse(payment.as_str()), None);
        assert_eq!(RefundId::parse("re_x"), None);
        assert!(LinkId::generate().as_str().starts_with("plink_"));
        let payout = PayoutId::generate();
        let no = payout.out_bill_no();
        assert!(
            no.len() == 26 && no.starts_with("po") && no.bytes().all(|b| b.is_ascii_alphanumeric())
        );
    }
}
