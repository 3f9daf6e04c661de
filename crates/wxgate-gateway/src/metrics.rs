//! `/metrics`: the gateway's counters in Prometheus (OpenMetrics) text. Requests by route,
//! method and status with their latency; WeChat's callbacks by outcome; and, read from the
//! database at each scrape, payments by status and integration, the webhook backlog and its
//! oldest delivery's age, the status-sync backlog and the connection pools' use; and how long
//! after WeChat took a payment the gateway knew it. Labels are bounded: routes are the router's
//! patterns, never ids.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use wechatpay_v3::client::{CallObserver, CallReport};
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
struct UpstreamLabels {
    endpoint: String,
    status: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectLabels {
    object: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PaymentLabels {
    status: String,
    integration: String,
}

type Latency = Family<RouteLabels, Histogram, fn() -> Histogram>;
type UpstreamLatency = Family<EndpointLabels, Histogram, fn() -> Histogram>;
type Lag = Family<SourceLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn lag_histogram() -> Histogram {
    // 0.1 s to about 27 minutes: WeChat's times are whole seconds.
    Histogram::new(exponential_buckets(0.1, 2.0, 15))
}

/// The gateway's metrics (one per process; cheap to clone).
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Latency,
    callbacks: Family<OutcomeLabels, Counter>,
    upstream: Family<UpstreamLabels, Counter>,
    upstream_latency: UpstreamLatency,
    deliveries: Family<OutcomeLabels, Counter>,
    delivery_latency: Histogram,
    payments: Family<PaymentLabels, Gauge>,
    deliveries_pending: Gauge,
    oldest_delivery_seconds: Gauge,
    sync_due: Gauge,
    background_width: Gauge,
    paid_lag: Lag,
    pool_connections: Family<PoolLabels, Gauge>,
    quarantined: Family<ObjectLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut inner = Inner {
            registry: Registry::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            callbacks: Family::default(),
            upstream: Family::default(),
            upstream_latency: Family::new_with_constructor(latency_histogram),
            deliveries: Family::default(),
            delivery_latency: latency_histogram(),
            payments: Family::default(),
            deliveries_pending: Gauge::default(),
            oldest_delivery_seconds: Gauge::default(),
            sync_due: Gauge::default(),
            background_width: Gauge::default(),
            paid_lag: Family::new_with_constructor(lag_histogram),
            pool_connections: Family::default(),
            quarantined: Family::default(),
        };
        inner.register();
        // Every series of a bounded set exists from the start, at 0, so a rate over it is
        // right from the first report.
        for object in ["payment", "refund", "payout"] {
            let labels = ObjectLabels {
                object: object.into(),
            };
            let _ = inner.quarantined.get_or_create(&labels);
        }
        for outcome in ["accepted", "refused", "failed"] {
            let labels = OutcomeLabels {
                outcome: outcome.into(),
            };
            let _ = inner.callbacks.get_or_create(&labels);
        }
        Self(Arc::new(inner))
    }
}

/// Every metric's name and help, in the order they are registered.
const HELP: [(&str, &str); 15] = [
    (
        "wxgate_http_requests",
        "Requests answered, by route, method and status",
    ),
    (
        "wxgate_http_request_duration_seconds",
        "Time to answer, by route",
    ),
    ("wxgate_callbacks", "WeChat Pay callbacks, by outcome"),
    (
        "wxgate_upstream_calls",
        "Calls to WeChat Pay (each attempt), by endpoint, status and WeChat's error code",
    ),
    (
        "wxgate_upstream_duration_seconds",
        "Time WeChat Pay took to answer, by endpoint",
    ),
    ("wxgate_payments", "Payments by status and integration"),
    (
        "wxgate_webhook_deliveries_pending",
        "Webhook deliveries not yet made",
    ),
    (
        "wxgate_webhook_oldest_pending_seconds",
        "Age of the oldest pending webhook delivery",
    ),
    (
        "wxgate_sync_due",
        "Pending payments whose status sync is due",
    ),
    (
        "wxgate_webhook_attempts",
        "Webhook delivery attempts, by outcome",
    ),
    (
        "wxgate_webhook_attempt_duration_seconds",
        "Time a webhook endpoint took to answer",
    ),
    (
        "wxgate_payment_paid_lag_seconds",
        "From WeChat's success_time to the gateway marking the payment succeeded, by how it learned (callback, sync, reconciliation)",
    ),
    (
        "wxgate_db_connections",
        "Database connections by pool and state (in_use, idle, max)",
    ),
    (
        "wxgate_quarantined",
        "Signed WeChat reports kept for review instead of applied, by what they report on",
    ),
    (
        "wxgate_background_width",
        "Items of each kind of background work that may be in flight now (fewer while the node is busy)",
    ),
];

impl Inner {
    /// Every metric under its name and help.
    fn register(&mut self) {
        let (r, help) = (&mut self.registry, HELP);
        r.register(help[0].0, help[0].1, self.requests.clone());
        r.register(help[1].0, help[1].1, self.latency.clone());
        r.register(help[2].0, help[2].1, self.callbacks.clone());
        r.register(help[3].0, help[3].1, self.upstream.clone());
        r.register(help[4].0, help[4].1, self.upstream_latency.clone());
        r.register(help[5].0, help[5].1, self.payments.clone());
        r.register(help[6].0, help[6].1, self.deliveries_pending.clone());
        r.register(help[7].0, help[7].1, self.oldest_delivery_seconds.clone());
        r.register(help[8].0, help[8].1, self.sync_due.clone());
        r.register(help[9].0, help[9].1, self.deliveries.clone());
        r.register(help[10].0, help[10].1, self.delivery_latency.clone());
        r.register(help[11].0, help[11].1, self.paid_lag.clone());
        r.register(help[12].0, help[12].1, self.pool_connections.clone());
        r.register(help[13].0, help[13].1, self.quarantined.clone());
        r.register(help[14].0, help[14].1, self.background_width.clone());
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

    /// One WeChat callback: `accepted`, `refused` (signature or body) or `failed` (not applied).
    pub fn callback(&self, outcome: &str) {
        let labels = OutcomeLabels {
            outcome: outcome.into(),
        };
        self.0.callbacks.get_or_create(&labels).inc();
    }

    /// One call to WeChat Pay (an attempt), labelled by its endpoint with ids taken out.
    pub fn upstream_call(&self, report: &CallReport<'_>) {
        let endpoint = endpoint_of(report.method, report.path);
        let labels = UpstreamLabels {
            endpoint: endpoint.clone(),
            status: report.status.to_string(),
            code: report.error_code.unwrap_or("").to_string(),
        };
        self.0.upstream.get_or_create(&labels).inc();
        let endpoint = EndpointLabels { endpoint };
        self.0
            .upstream_latency
            .get_or_create(&endpoint)
            .observe(report.seconds);
    }

    /// One webhook attempt: `delivered` or `failed`, and how long the endpoint took.
    pub fn delivery(&self, delivered: bool, seconds: f64) {
        let outcome = if delivered { "delivered" } else { "failed" };
        let labels = OutcomeLabels {
            outcome: outcome.into(),
        };
        self.0.deliveries.get_or_create(&labels).inc();
        self.0.delivery_latency.observe(seconds);
    }

    /// A payment became succeeded `seconds` after WeChat's success_time, learned by `source`.
    pub fn paid(&self, source: &str, seconds: f64) {
        let labels = SourceLabels {
            source: source.into(),
        };
        self.0
            .paid_lag
            .get_or_create(&labels)
            .observe(seconds.max(0.0));
    }

    /// A signed WeChat report about `object` (payment, refund, payout) was quarantined.
    pub fn quarantined(&self, object: &str) {
        let labels = ObjectLabels {
            object: object.into(),
        };
        self.0.quarantined.get_or_create(&labels).inc();
    }

    /// The background width changed to `width`.
    pub fn background_width(&self, width: usize) {
        self.0.background_width.set(width as i64);
    }

    /// What the WeChat clients report their calls to.
    pub fn upstream_observer(&self) -> CallObserver {
        let metrics = self.clone();
        CallObserver(Arc::new(move |report| metrics.upstream_call(report)))
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
        for pool in &ops.pools {
            let in_use = pool.open.saturating_sub(pool.idle);
            for (state, n) in [("in_use", in_use), ("idle", pool.idle), ("max", pool.max)] {
                let labels = PoolLabels {
                    pool: pool.name.into(),
                    state: state.into(),
                };
                self.0.pool_connections.get_or_create(&labels).set(n.into());
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }
}

/// The segments after which WeChat's paths carry an id.
const ID_BEFORE: [&str; 5] = [
    "out-trade-no",
    "id",
    "out-refund-no",
    "out-bill-no",
    "transfer-bill-no",
];

/// Whether `segment` may be a word of WeChat's paths (`v3`, `h5`, `out-trade-no`): a
/// lower-case letter, then lower-case letters, digits and hyphens. The ids the gateway puts
/// in paths never are (they carry an underscore, or follow a segment in `ID_BEFORE`), nor are
/// WeChat's own (digits).
fn is_word(segment: &str) -> bool {
    // The empty segment is the one before the path's leading slash.
    segment.is_empty()
        || segment.starts_with(|c: char| c.is_ascii_lowercase())
            && segment
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `POST /v3/pay/transactions/out-trade-no/{id}/close`: the method and path, every id replaced
/// (a segment after one that names an id, and any segment that is not a word), so the label
/// has a bounded set of values whatever path WeChat's API adds.
fn endpoint_of(method: &str, path: &str) -> String {
    let mut out = Vec::new();
    let mut id_next = false;
    for segment in path.split('/') {
        let id = id_next || !is_word(segment);
        out.push(if id { "{id}" } else { segment });
        id_next = ID_BEFORE.contains(&segment);
    }
    format!("{method} {}", out.join("/"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoints_carry_no_ids() {
        for (method, path, endpoint) in [
            (
                "POST",
                "/v3/pay/transactions/out-trade-no/pay123/close",
                "/v3/pay/transactions/out-trade-no/{id}/close",
            ),
            (
                "GET",
                "/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/po1",
                "/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/{id}",
            ),
            (
                "POST",
                "/v3/pay/transactions/native",
                "/v3/pay/transactions/native",
            ),
            ("POST", "/v3/pay/transactions/h5", "/v3/pay/transactions/h5"),
            (
                "GET",
                "/v3/pay/transactions/id/4200000000202412310000000001",
                "/v3/pay/transactions/id/{id}",
            ),
            // A refund's query names it right after `refunds`, which a create ends with.
            (
                "GET",
                "/v3/refund/domestic/refunds/re_01HZX3",
                "/v3/refund/domestic/refunds/{id}",
            ),
            (
                "POST",
                "/v3/refund/domestic/refunds",
                "/v3/refund/domestic/refunds",
            ),
            (
                "GET",
                "/v3/merchant/fund/balance/BASIC",
                "/v3/merchant/fund/balance/{id}",
            ),
        ] {
            assert_eq!(
                super::endpoint_of(method, path),
                format!("{method} {endpoint}")
            );
        }
    }
}
