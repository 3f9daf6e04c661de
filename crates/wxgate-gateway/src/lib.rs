//! The gateway: merchants with sealed WeChat credentials and hashed API keys, the payments API
//! for every WeChat integration type, WeChat's callbacks in, and the background status sync
//! that closes expired orders and repairs what a crash or a lost callback left behind.
//!
//! [`Application::build`] binds the listener and exposes the port, so tests start the real
//! gateway on port 0 against their own database and simulator.

pub mod api;
pub mod checkout;
pub mod delivery;
pub mod links;
pub mod notify;
pub mod qr;
pub mod refunds;
pub mod secrets;
pub mod sync;
pub mod upstream;
pub mod views;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use wxgate_store::{MerchantRow, SchemaStatus, Store};

use secrets::MasterKey;
use upstream::{Upstream, Upstreams};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub database_url: String,
    pub master_key: MasterKey,
    /// How WeChat reaches this gateway: `notify_url`s are built on it.
    pub public_base_url: String,
    /// How long to wait for WeChat on one attempt.
    pub upstream_timeout: Duration,
    /// How often the status-sync worker looks for due work.
    pub sync_interval: Duration,
    /// Waits between queries of a pending payment, by how many were made before; the first
    /// entry is also the wait before the first query.
    pub sync_schedule_ms: Vec<i64>,
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
            sync_interval: Duration::from_millis(500),
            sync_schedule_ms: vec![
                5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000,
            ],
            webhook_timeout: Duration::from_secs(10),
            webhook_retry_schedule_ms: wxgate_domain::webhook::RETRY_SCHEDULE_MS.to_vec(),
            webhook_concurrency: 64,
            webhook_per_endpoint: 8,
            webhook_poll_interval: Duration::from_secs(1),
            webhooks_allow_private: false,
            client_ip_header: None,
        }
    }
}

/// Shared state of one gateway process.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    config: GatewayConfig,
    upstreams: Upstreams,
    /// API key hash → merchant, for `AUTH_CACHE_TTL`: a revoked key stops working within it.
    auth_cache: Mutex<HashMap<String, (MerchantRow, Instant)>>,
    /// Opened webhook signing secrets, by secret id.
    webhook_secrets: Mutex<HashMap<String, String>>,
}

/// How long an authenticated API key is trusted without asking the database again. Short, so
/// that revocation takes effect quickly; long enough to spare the database on busy reads.
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(5);
/// Entries the API-key cache holds at most; it is cleared when full.
const AUTH_CACHE_MAX: usize = 10_000;

impl Gateway {
    pub fn new(store: Store, config: GatewayConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                config,
                upstreams: Upstreams::default(),
                auth_cache: Mutex::new(HashMap::new()),
                webhook_secrets: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    pub async fn upstream(&self, merchant_id: &str) -> anyhow::Result<Arc<Upstream>> {
        self.inner
            .upstreams
            .get(
                &self.inner.store,
                &self.inner.config.master_key,
                merchant_id,
                self.inner.config.upstream_timeout,
            )
            .await
    }

    pub fn cached_key(&self, key_hash: &str) -> Option<MerchantRow> {
        let cache = self.inner.auth_cache.lock().expect("auth cache lock");
        cache
            .get(key_hash)
            .filter(|(_, at)| at.elapsed() < AUTH_CACHE_TTL)
            .map(|(m, _)| m.clone())
    }

    pub fn cache_key(&self, key_hash: String, merchant: MerchantRow) {
        let mut cache = self.inner.auth_cache.lock().expect("auth cache lock");
        if cache.len() >= AUTH_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key_hash, (merchant, Instant::now()));
    }

    /// A webhook signing secret, opened from its sealed form once and then cached by its id.
    pub fn signing_secret(&self, secret_id: &str, sealed: &str) -> anyhow::Result<String> {
        if let Some(s) = self
            .inner
            .webhook_secrets
            .lock()
            .expect("secrets lock")
            .get(secret_id)
        {
            return Ok(s.clone());
        }
        let opened = self
            .inner
            .config
            .master_key
            .open(sealed)
            .context("cannot open a webhook secret (wrong master key?)")?;
        let secret = String::from_utf8(opened).context("a webhook secret is not UTF-8")?;
        self.inner
            .webhook_secrets
            .lock()
            .expect("secrets lock")
            .insert(secret_id.to_string(), secret.clone());
        Ok(secret)
    }

    pub fn notify_url(&self, merchant_id: &str) -> String {
        format!(
            "{}/wechatpay/notify/{merchant_id}",
            self.inner.config.public_base_url.trim_end_matches('/')
        )
    }
}

/// Opens the database and refuses to go on when its schema is not this binary's.
pub async fn open_store(database_url: &str) -> anyhow::Result<Store> {
    let store = Store::connect(database_url)
        .await
        .context("cannot open the database")?;
    match store.schema_status().await? {
        SchemaStatus::UpToDate => Ok(store),
        SchemaStatus::Behind { missing } => anyhow::bail!(
            "the database schema is not migrated (missing migrations {missing:?}); run `wxgate migrate` first"
        ),
        SchemaStatus::Ahead { unknown } => anyhow::bail!(
            "the database was migrated by a newer wxgate (unknown migrations {unknown:?}); upgrade this binary"
        ),
    }
}

/// A gateway bound to a listener, ready to run.
pub struct Application {
    listener: TcpListener,
    gateway: Gateway,
    extra: Option<axum::Router>,
}

impl Application {
    pub async fn build(gateway: Gateway, listener: TcpListener) -> anyhow::Result<Self> {
        Ok(Self {
            listener,
            gateway,
            extra: None,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves more routes beside the gateway's (the demo mounts the simulator this way).
    pub fn with_routes(mut self, routes: axum::Router) -> Self {
        self.extra = Some(routes);
        self
    }

    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Serves the API and runs the workers until `shutdown` completes.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let worker = tokio::spawn(sync::run(self.gateway.clone(), stop_rx.clone()));
        let deliveries = tokio::spawn(delivery::run(self.gateway.clone(), stop_rx));
        let mut router = api::router(self.gateway.clone());
        if let Some(extra) = self.extra {
            router = router.merge(extra);
        }
        axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await?;
        let _ = stop_tx.send(true);
        let _ = worker.await;
        let _ = deliveries.await;
        Ok(())
    }
}
