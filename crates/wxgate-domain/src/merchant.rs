//! A merchant's settings that steer the gateway: how it reaches WeChat, and what it does with a
//! payment that arrives after its order was closed.

/// Where a merchant's requests go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MerchantMode {
    /// Wired to a simulator: sandbox credentials, webpage authorization at the simulator.
    #[default]
    Sandbox,
    /// Real WeChat Pay.
    Live,
}

impl MerchantMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sandbox => "sandbox",
            Self::Live => "live",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Sandbox, Self::Live]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

impl TryFrom<String> for MerchantMode {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or_else(|| format!("unknown merchant mode {value:?}"))
    }
}

/// What happens to a payment that is paid after its order was closed (cancelled or expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PaidAfterClosePolicy {
    /// It stays `paid_after_close` for the merchant to handle.
    #[default]
    Accept,
    /// It is refunded in full at once.
    Refund,
}

impl PaidAfterClosePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Refund => "refund",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Accept, Self::Refund]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

impl TryFrom<String> for PaidAfterClosePolicy {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or_else(|| format!("unknown paid-after-close policy {value:?}"))
    }
}
