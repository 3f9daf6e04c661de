//! `/metrics`: the gateway's counters in Prometheus (OpenMetrics) text. Requests by route,
//! method and status with their latency; WeChat's callbacks by outcome; and, read from the
//! database at each scrape, payments by status and integration, the webhook backlog and its
//! oldest delivery's age, and the status-sync backlog. Labels are bounded: routes are the
//! router's patterns, never ids.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use wxgate_store::OpsSnapshot;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PaymentLabels {
    status: String,
    integration: String,
}

type Latency = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The gateway's metrics (one per process; cheap to clone).
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Latency,
    callbacks: Family<OutcomeLabels, Counter>,
    payments: Family<PaymentLabels, Gauge>,
    deliveries_pending: Gauge,
    oldest_delivery_seconds: Gauge,
    sync_due: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: Latency = Family::new_with_constructor(latency_histogram);
        let callbacks = Family::<OutcomeLabels, Counter>::default();
        let payments = Family::<PaymentLabels, Gauge>::default();
        let (deliveries_pending, oldest, sync_due) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register(
            "wxgate_http_requests",
            "Requests answered, by route, method and status",
            requests.clone(),
        );
        registry.register(
            "wxgate_http_request_duration_seconds",
            "Time to answer, by route",
            latency.clone(),
        );
        registry.register(
            "wxgate_callbacks",
            "WeChat Pay callbacks, by outcome",
            callbacks.clone(),
        );
        registry.register(
            "wxgate_payments",
            "Payments by status and integration",
            payments.clone(),
        );
        registry.register(
            "wxgate_webhook_deliveries_pending",
            "Webhook deliveries not yet made",
            deliveries_pending.clone(),
        );
        registry.register(
            "wxgate_webhook_oldest_pending_seconds",
            "Age of the oldest pending webhook delivery",
            oldest.clone(),
        );
        registry.register(
            "wxgate_sync_due",
            "Pending payments whose status sync is due",
            sync_due.clone(),
        );
        Self(Arc::new(Inner {
            registry,
            requests,
            latency,
            callbacks,
            payments,
            deliveries_pending,
            oldest_delivery_seconds: oldest,
            sync_due,
        }))
    }
}

impl Metrics {
    /// One answered request.
    pub fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let labels = RequestLabels {
            route: route.into(),
            method: method.into(),
            status: status.to_string(),
        };
        self.0.requests.get_or_create(&labels).inc();
        let route = RouteLabels {
            route: route.into(),
        };
        self.0.latency.get_or_create(&route).observe(seconds);
    }

    /// One WeChat callback: `verified`, `refused` (signature or body) or `failed` (not applied).
    pub fn callback(&self, outcome: &str) {
        let labels = OutcomeLabels {
            outcome: outcome.into(),
        };
        self.0.callbacks.get_or_create(&labels).inc();
    }

    /// The exposition, with the database's figures as they are now.
    pub fn render(&self, ops: &OpsSnapshot) -> String {
        self.0.payments.clear();
        for (status, integration, count) in &ops.payments {
            let labels = PaymentLabels {
                status: status.clone(),
                integration: integration.clone(),
            };
            self.0.payments.get_or_create(&labels).set(*count);
        }
        self.0.deliveries_pending.set(ops.deliveries_pending);
        self.0
            .oldest_delivery_seconds
            .set(ops.oldest_delivery_ms / 1000);
        self.0.sync_due.set(ops.sync_due);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }
}
