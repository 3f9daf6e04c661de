//! [`Gateway`]: the shared state of one gateway process (store, configuration, WeChat
//! connections, caches and the clock), handed to every handler and worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use wechatpay_v3::{Clock, SystemClock};
use wxgate_store::{MerchantRow, SchemaStatus, Store};

use crate::capped::insert_capped;
use crate::config::GatewayConfig;
use crate::upstream::{CallSettings, Upstream, Upstreams};

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
    /// Webhook endpoints' destinations (URL, secret id, sealed secret), by endpoint id, for
    /// `ENDPOINT_CACHE_TTL`: the delivery worker reads each endpoint once per interval, not once
    /// per delivery. Deleting or rotating an endpoint forgets it here at once; other nodes
    /// catch up within the TTL (a rotated secret's predecessor stays valid meanwhile).
    endpoints: Mutex<HashMap<String, (Destination, Instant)>>,
    /// Opened webhook signing secrets, by secret id.
    webhook_secrets: Mutex<HashMap<String, String>>,
    /// Rendered QR images.
    qr: crate::qr::Cache,
    /// The process's counters, exposed at `/metrics`.
    metrics: crate::metrics::Metrics,
    /// How busy the node is, as background work sees it.
    pressure: crate::pressure::Pressure,
    /// Business time: creation, expiry, due work. WeChat requests are signed on the system
    /// clock whatever this says, since WeChat checks their timestamps against its own.
    clock: Arc<dyn Clock>,
}

/// How long an authenticated API key is trusted without asking the database again. Short, so
/// that revocation takes effect quickly; long enough to spare the database on busy reads.
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(5);
/// Entries the API-key cache holds at most; it is cleared when full.
const AUTH_CACHE_MAX: usize = 10_000;

/// How long a webhook endpoint's destination is used without reading it again.
pub const ENDPOINT_CACHE_TTL: Duration = Duration::from_secs(5);
/// Entries the endpoint cache holds at most; it is cleared when full.
const ENDPOINT_CACHE_MAX: usize = 10_000;
/// The most opened signing secrets kept (a rotated secret stays until the cache is cleared).
const SECRET_CACHE_MAX: usize = 10_000;

/// Where a webhook goes and what signs it: (URL, secret id, sealed secret).
pub type Destination = (String, String, String);

impl Gateway {
    pub fn new(store: Store, config: GatewayConfig) -> Self {
        Self::with_clock(store, config, Arc::new(SystemClock))
    }

    /// A gateway on `clock`: tests advance a [`wechatpay_v3::FixedClock`] instead of
    /// rewriting times in the database.
    pub fn with_clock(store: Store, config: GatewayConfig, clock: Arc<dyn Clock>) -> Self {
        let metrics = crate::metrics::Metrics::default();
        let upstreams = Upstreams::new(CallSettings {
            timeout: config.upstream_timeout,
            per_second: config.upstream_rate,
            observer: Some(metrics.upstream_observer()),
        });
        Self {
            inner: Arc::new(Inner {
                store,
                config,
                upstreams,
                auth_cache: Mutex::new(HashMap::new()),
                endpoints: Mutex::new(HashMap::new()),
                webhook_secrets: Mutex::new(HashMap::new()),
                qr: crate::qr::Cache::default(),
                metrics,
                pressure: Default::default(),
                clock,
            }),
        }
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    /// How busy the node is, as background work sees it (see [`crate::pressure`]).
    pub fn pressure(&self) -> &crate::pressure::Pressure {
        &self.inner.pressure
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    /// The QR image of `data`, rendered once per code and size.
    pub fn qr_image(&self, data: &str, image: crate::qr::Image) -> Arc<[u8]> {
        self.inner.qr.get(data, image)
    }

    /// How long one call to WeChat may take from the moment it asks for its turn: the longest
    /// wait for a turn (see [`crate::pace`]) and every attempt of the client.
    pub fn call_window_ms(&self) -> i64 {
        let attempts = wechatpay_v3::client::ClientConfig::ATTEMPTS_MAX as i64;
        crate::pace::LONGEST_WAIT.as_millis() as i64
            + attempts * self.inner.config.upstream_timeout.as_millis() as i64
    }

    /// Now, in Unix milliseconds, by the gateway's clock.
    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_unix_ms()
    }

    pub async fn upstream(&self, merchant_id: &str) -> anyhow::Result<Arc<Upstream>> {
        self.inner
            .upstreams
            .get(
                &self.inner.store,
                &self.inner.config.master_key,
                merchant_id,
            )
            .await
    }

    /// How many merchants' WeChat connections this node keeps (see [`Upstreams`]).
    pub fn upstreams_kept(&self) -> usize {
        self.inner.upstreams.kept()
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
        insert_capped(
            &mut cache,
            AUTH_CACHE_MAX,
            key_hash,
            (merchant, Instant::now()),
        );
    }

    pub fn cached_endpoint(&self, endpoint_id: &str) -> Option<Destination> {
        let cache = self.inner.endpoints.lock().expect("endpoint cache lock");
        cache
            .get(endpoint_id)
            .filter(|(_, at)| at.elapsed() < ENDPOINT_CACHE_TTL)
            .map(|(d, _)| d.clone())
    }

    pub fn cache_endpoint(&self, endpoint_id: &str, destination: Destination) {
        let mut cache = self.inner.endpoints.lock().expect("endpoint cache lock");
        let entry = (destination, Instant::now());
        insert_capped(
            &mut cache,
            ENDPOINT_CACHE_MAX,
            endpoint_id.to_string(),
            entry,
        );
    }

    /// Forgets an endpoint's destination (it was deleted or its secret rotated).
    pub fn forget_endpoint(&self, endpoint_id: &str) {
        self.inner
            .endpoints
            .lock()
            .expect("endpoint cache lock")
            .remove(endpoint_id);
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
        let mut secrets = self.inner.webhook_secrets.lock().expect("secrets lock");
        insert_capped(
            &mut secrets,
            SECRET_CACHE_MAX,
            secret_id.to_string(),
            secret.clone(),
        );
        Ok(secret)
    }

    pub fn notify_url(&self, merchant_id: &str) -> String {
        format!(
            "{}/wechatpay/notify/{merchant_id}",
            self.inner.config.public_base_url.trim_end_matches('/')
        )
    }
}

/// Logs what the database's own settings leave undone that a serving gateway depends on.
pub async fn warn_of_database_settings(store: &Store) -> anyhow::Result<()> {
    if store.autovacuum_off().await? {
        tracing::warn!(
            "PostgreSQL runs with autovacuum off: its tables get no statistics and keep their dead rows, \
             so every status sync and every read walks past more dead index entries as payments change; \
             turn autovacuum on, or run VACUUM ANALYZE regularly"
        );
    }
    Ok(())
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
