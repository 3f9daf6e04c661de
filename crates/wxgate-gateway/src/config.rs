//! The gateway's configuration: where things are, and every interval, schedule and limit its
//! workers use.

use std::num::NonZeroU32;
use std::time::Duration;

use crate::secrets::MasterKey;

/// Calls per second per merchant by default: WeChat's published cap on order creation, the
/// lowest of the order APIs' caps.
pub const DEFAULT_UPSTREAM_RATE: u32 = 600;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub database_url: String,
    pub master_key: MasterKey,
    /// How WeChat reaches this gateway: `notify_url`s are built on it.
    pub public_base_url: String,
    /// How long to wait for WeChat on one attempt.
    pub upstream_timeout: Duration,
    /// Orders to WeChat per second per merchant from this node, the other APIs paced in
    /// proportion (see [`crate::pace`]); with several nodes, each takes its part of what WeChat
    /// allows.
    pub upstream_rate: NonZeroU32,
    /// How often the status-sync worker looks for due work.
    pub sync_interval: Duration,
    /// Waits between queries of a pending payment, by how many were made before; the first
    /// entry is also the wait before the first query.
    pub sync_schedule_ms: Vec<i64>,
    /// The longest wait between queries of a payout waiting for its payee's confirmation
    /// (queried on the sync schedule up to this; WeChat's notification normally comes first,
    /// and the payee has a day).
    pub payout_confirmation_poll: Duration,
    /// How long one webhook attempt may take.
    pub webhook_timeout: Duration,
    /// Waits before each retry of a failed webhook; when spent, the delivery is dead.
    pub webhook_retry_schedule_ms: Vec<i64>,
    /// Webhook attempts in flight at once, in all, and to one endpoint.
    pub webhook_concurrency: usize,
    pub webhook_per_endpoint: usize,
    /// How often the delivery worker looks for due work written by other nodes (work this
    /// process writes wakes it at once).
    pub webhook_poll_interval: Duration,
    /// Whether webhook URLs may point at loopback and private addresses.
    pub webhooks_allow_private: bool,
    /// Behind a trusted reverse proxy: the header that carries the shopper's address (for
    /// example `X-Forwarded-For`); otherwise the connection's address is used.
    pub client_ip_header: Option<String>,
    /// Whether each merchant's yesterday is reconciled against WeChat's bills every day
    /// (from 10:00 Asia/Shanghai); reconciliations asked for through the API run either way.
    pub reconcile_daily: bool,
    /// How long events, their deliveries and attempts are kept once no delivery of them is
    /// pending.
    pub event_retention: Duration,
}

impl GatewayConfig {
    pub fn new(
        database_url: impl Into<String>,
        master_key: MasterKey,
        public_base_url: impl Into<String>,
    ) -> Self {
        Self {
            database_url: database_url.into(),
            master_key,
            public_base_url: public_base_url.into(),
            upstream_timeout: Duration::from_secs(10),
            upstream_rate: NonZeroU32::new(DEFAULT_UPSTREAM_RATE).expect("positive"),
            sync_interval: Duration::from_millis(500),
            sync_schedule_ms: vec![
                5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000,
            ],
            payout_confirmation_poll: Duration::from_secs(600),
            webhook_timeout: Duration::from_secs(10),
            webhook_retry_schedule_ms: wxgate_domain::webhook::RETRY_SCHEDULE_MS.to_vec(),
            webhook_concurrency: 64,
            webhook_per_endpoint: 8,
            webhook_poll_interval: Duration::from_secs(1),
            webhooks_allow_private: false,
            client_ip_header: None,
            reconcile_daily: true,
            event_retention: Duration::from_secs(30 * 86_400),
        }
    }
}
