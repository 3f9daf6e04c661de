//! What the gateway's end-to-end tests share: the real gateway on port 0 with its own database
//! and its own simulator, and a macro that runs a scenario on every backend.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use wxgate_gateway::app::merchants;
use wxgate_gateway::secrets::MasterKey;
use wxgate_gateway::{Application, Gateway, GatewayConfig};
use wxgate_sim::{Sim, SimConfig};
use wxgate_store::Store;
use wxgate_store::testing::TestDatabase;

pub struct TestGateway {
    pub base: String,
    /// The Connect front door's listener (`http://127.0.0.1:PORT`, routes at its root).
    pub connect: String,
    pub sim: String,
    pub key: String,
    pub merchant_id: String,
    pub mchid: String,
    pub appid: String,
    pub http: reqwest::Client,
    pub store: Store,
    pub gateway: Gateway,
    /// Tells the application to stop (see [`TestGateway::stop`]).
    stop: Arc<tokio::sync::Notify>,
    /// The running application; it ends `true` when it stopped cleanly.
    running: std::sync::Mutex<Option<tokio::task::JoinHandle<bool>>>,
}

impl TestGateway {
    pub async fn spawn(db: &TestDatabase) -> Self {
        Self::spawn_with(db, |_| {}).await
    }

    /// A gateway whose configuration `tweak` adjusts after the test defaults are set.
    pub async fn spawn_with(db: &TestDatabase, tweak: impl FnOnce(&mut GatewayConfig)) -> Self {
        Self::spawn_on_clock(db, tweak, Arc::new(wechatpay_v3::SystemClock)).await
    }

    /// A gateway whose business time is `clock` (a test advances a `FixedClock`).
    pub async fn spawn_on_clock(
        db: &TestDatabase,
        tweak: impl FnOnce(&mut GatewayConfig),
        clock: Arc<dyn wechatpay_v3::Clock>,
    ) -> Self {
        Self::spawn_at(db.url.clone(), db.store().await, tweak, clock).await
    }

    /// A gateway on the (migrated) database at `url`, through `store`.
    pub async fn spawn_at(
        url: String,
        store: Store,
        tweak: impl FnOnce(&mut GatewayConfig),
        clock: Arc<dyn wechatpay_v3::Clock>,
    ) -> Self {
        let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = format!("http://{}", sim_listener.local_addr().unwrap());
        let simulator = Sim::new(SimConfig {
            time_scale: 10_000.0,
            ..SimConfig::default()
        })
        .unwrap();
        tokio::spawn(wxgate_sim::serve(
            sim_listener,
            simulator,
            std::future::pending(),
        ));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut config = GatewayConfig::new(url, MasterKey::generate(), base.clone());
        config.sync_interval = Duration::from_millis(20);
        config.sync_schedule_ms = vec![100, 100, 200];
        config.payout_confirmation_poll = Duration::from_millis(200);
        config.upstream_timeout = Duration::from_secs(5);
        // Webhooks go to receivers on loopback, with the retry schedule compressed.
        config.webhooks_allow_private = true;
        config.webhook_retry_schedule_ms = vec![40, 40, 40];
        config.webhook_poll_interval = Duration::from_millis(20);
        config.webhook_timeout = Duration::from_secs(5);
        // Reconciliations run when a test asks for them, not on the daily schedule.
        config.reconcile_daily = false;
        tweak(&mut config);
        let merchant =
            merchants::create_sandbox_merchant(&store, &config.master_key, &sim, "Test shop")
                .await
                .unwrap();
        let (_, key) = merchants::create_api_key(&store, &merchant.id)
            .await
            .unwrap();
        let gateway = Gateway::with_clock(store.clone(), config, clock);
        let connect_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connect = format!("http://{}", connect_listener.local_addr().unwrap());
        let app = Application::build(gateway.clone(), listener)
            .await
            .unwrap()
            .with_connect_listener(connect_listener);
        let stop = Arc::new(tokio::sync::Notify::new());
        let signal = stop.clone();
        let running = tokio::spawn(async move {
            app.run(async move { signal.notified().await })
                .await
                .is_ok()
        });
        Self {
            base,
            connect,
            sim,
            key,
            merchant_id: merchant.id,
            mchid: merchant.mchid,
            appid: merchant.appid,
            http: reqwest::Client::new(),
            store,
            gateway,
            stop,
            running: std::sync::Mutex::new(Some(running)),
        }
    }

    /// The `/metrics` exposition as it is now.
    pub async fn metrics(&self) -> String {
        let res = self.http.get(format!("{}/metrics", self.base)).send();
        res.await.unwrap().text().await.unwrap()
    }

    /// Reads `/metrics` until `done` holds for it (each read a round trip that lets the
    /// gateway's tasks run), at most 1,000 times; the last exposition read.
    pub async fn wait_metrics(&self, done: impl Fn(&str) -> bool) -> String {
        let mut metrics = self.metrics().await;
        for _ in 0..1000 {
            if done(&metrics) {
                break;
            }
            metrics = self.metrics().await;
        }
        metrics
    }

    /// Stops the application as a signal would and waits until it has stopped; whether it
    /// stopped cleanly.
    pub async fn stop(&self) -> bool {
        self.stop.notify_one();
        let running = self.running.lock().unwrap().take().expect("running");
        running.await.unwrap()
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn create(&self, body: Value) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            "/v1/payments",
            Some(body.to_string()),
            &[],
        )
        .await
    }

    pub async fn get(&self, id: &str) -> Value {
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/payments/{id}"),
                None,
                &[],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// GETs `path` until `done` holds for the answer (each GET is a round trip that lets the
    /// gateway's tasks run; no fixed waits); fails after a generous bound rather than hang.
    pub async fn wait_for(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..5000 {
            last = self.call(reqwest::Method::GET, path, None, &[]).await.1;
            if done(&last) {
                return last;
            }
            tokio::task::yield_now().await;
        }
        panic!("{path} never got there: {last}");
    }

    /// POSTs `body` to `path` with a bearer `token` until `done` holds for the answer (each POST
    /// a round trip that lets the gateway's tasks run).
    pub async fn wait_for_post(
        &self,
        path: &str,
        token: &str,
        body: &Value,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        for _ in 0..5000 {
            let res = self
                .http
                .post(format!("{}{path}", self.base))
                .bearer_auth(token)
                .json(body)
                .send()
                .await
                .unwrap();
            last = res.json().await.unwrap();
            if done(&last) {
                return last;
            }
            tokio::task::yield_now().await;
        }
        panic!("{path} never got there: {last}");
    }

    /// A native payment of `amount`, paid through the simulator; its id once it succeeded.
    pub async fn paid_native(&self, amount: i64) -> String {
        let (status, p) = self.create(native(&order("pd"), amount)).await;
        assert_eq!(status, 201, "{p}");
        self.pay(json!({"code_url": p["next_action"]["display_qr_code"]["data"]}))
            .await;
        let id = p["id"].as_str().unwrap().to_string();
        self.wait_status(&id, "succeeded").await;
        id
    }

    /// Polls the payment until its status is `status` (the callback or the worker runs
    /// meanwhile); fails after a generous bound rather than hang.
    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        // Each GET is a round trip that lets the gateway's tasks run; no fixed waits.
        for _ in 0..5000 {
            let p = self.get(id).await;
            if p["status"] == status {
                return p;
            }
            tokio::task::yield_now().await;
        }
        panic!("payment {id} never became {status}: {}", self.get(id).await);
    }

    /// Polls (each GET is a round trip that lets the gateway's tasks run) until a callback has
    /// been quarantined; returns the quarantined callbacks.
    pub async fn wait_quarantined(&self, id: &str) -> Vec<wxgate_store::QuarantineRow> {
        for _ in 0..5000 {
            let quarantined = self.store.quarantined(&self.merchant_id).await.unwrap();
            if !quarantined.is_empty() {
                return quarantined;
            }
            let _ = self.get(id).await;
        }
        panic!("nothing was quarantined for {id}");
    }

    /// The outbox events written for a payment, oldest first.
    pub async fn event_types(&self, id: &str) -> Vec<String> {
        let events = self.store.events_for(&self.merchant_id, id).await.unwrap();
        events.into_iter().map(|e| e.event_type).collect()
    }

    pub async fn sim_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.sim));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Sets the merchant's faults at the simulator (`{}` clears them).
    pub async fn set_faults(&self, faults: Value) {
        let path = format!("/sim/merchants/{}/faults", self.mchid);
        let (status, body) = self
            .sim_call(reqwest::Method::PUT, &path, Some(faults))
            .await;
        assert!(status < 300, "{status} {body}");
    }

    /// `POST /v1/payments/{id}/cancel`.
    pub async fn cancel(&self, id: &str) -> (u16, Value) {
        let path = format!("/v1/payments/{id}/cancel");
        self.call(reqwest::Method::POST, &path, None, &[]).await
    }

    pub async fn pay(&self, body: Value) {
        let (status, answer) = self
            .sim_call(reqwest::Method::POST, "/sim/payer/pay", Some(body))
            .await;
        assert_eq!(status, 200, "{answer}");
    }
}

/// Each scenario runs on SQLite, and on PostgreSQL when one is reachable.
#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        on_both!(with on_both = |_| {}; $($name),*);
    };
    (with $module:ident = $tweak:expr; $($name:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    for db in super::testing::all().await {
                        eprintln!("{} on {:?}", stringify!($name), db.backend);
                        super::$name(super::TestGateway::spawn_with(&db, $tweak).await).await;
                        db.cleanup().await;
                    }
                }
            )*
        }
    };
}

/// A merchant_order_id no other test uses.
pub fn order(prefix: &str) -> String {
    format!("{prefix}{}", wechatpay_v3::nonce(10))
}

/// A native payment's create body.
pub fn native(order_id: &str, amount: i64) -> Value {
    json!({"amount": amount, "currency": "CNY", "merchant_order_id": order_id, "description": "Blue mug", "integration": "native"})
}
