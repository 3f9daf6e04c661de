//! Front doors: other systems' APIs that wxgate serves over the same payments. A payment made
//! through a door keeps which one, so its `notify_url` hears that system's notification.

/// A front door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Door {
    /// A PSP's payment intents (`/mch-api/v1/pa/payment_intents/…`).
    PaymentIntents,
    /// 2Checkout's API 6.0 orders over JSON-RPC (`login`, `placeOrder`, `getOrder`).
    TwoCheckout,
    /// Worldline Connect's server API (`/v1/{merchantId}/payments`, hosted checkouts), on its
    /// own listener.
    Connect,
    /// A multi-country PSP's open API: `{appId, param, sign}` requests signed with RSA.
    OpenApi,
}

try_from_string!(Door, "front door");

impl Door {
    pub const ALL: [Door; 4] = [
        Self::PaymentIntents,
        Self::TwoCheckout,
        Self::Connect,
        Self::OpenApi,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PaymentIntents => "payment_intents",
            Self::TwoCheckout => "two_checkout",
            Self::Connect => "connect",
            Self::OpenApi => "open_api",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// The gateway events this door's system notifies a payment's `notify_url` of.
    pub fn notified_events(self) -> &'static [&'static str] {
        match self {
            // A payment made after its order closed took the shopper's money too: notified as
            // a success, as WeChat's own late callback would be.
            Self::PaymentIntents => &["payment.succeeded", "payment.paid_after_close"],
            // Its orders are followed by getOrder and the shopper's return; no notification.
            Self::TwoCheckout | Self::Connect => &[],
            // Its unified notification: a payment that completed or failed.
            Self::OpenApi => &[
                "payment.succeeded",
                "payment.paid_after_close",
                "payment.failed",
                "payment.expired",
                "payment.cancelled",
                "refund.succeeded",
                "refund.failed",
                "payout.succeeded",
                "payout.failed",
                "payout.cancelled",
            ],
        }
    }

    /// The `endpoint_id` of a delivery to a payment's notify_url in this door's format.
    pub fn delivery_endpoint(self) -> String {
        format!("door:{}", self.as_str())
    }

    /// The door whose format a delivery's `endpoint_id` names, if it names one.
    pub fn of_delivery_endpoint(endpoint_id: &str) -> Option<Self> {
        endpoint_id.strip_prefix("door:").and_then(Self::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in Door::ALL {
            assert_eq!(Door::parse(d.as_str()), Some(d));
            assert_eq!(Door::of_delivery_endpoint(&d.delivery_endpoint()), Some(d));
        }
        assert_eq!(Door::of_delivery_endpoint("notify_url"), None);
    }

    /// A door that tells its merchant of a payment's success also tells of a payment made after
    /// its order closed: either way the shopper's money was taken.
    #[test]
    fn every_payment_that_took_money_is_notified() {
        for d in Door::ALL {
            let events = d.notified_events();
            if events.contains(&"payment.succeeded") {
                assert!(events.contains(&"payment.paid_after_close"), "{d:?}");
            }
        }
    }
}
