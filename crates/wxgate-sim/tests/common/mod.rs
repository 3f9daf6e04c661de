//! A harness that starts the real simulator on port 0, mints merchants over its own API, builds
//! the crate's real client from the credential bundle, and receives callbacks on a local
//! HTTP receiver.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};
use wechatpay_v3::aead::ApiV3Key;
use wechatpay_v3::auth::MerchantSigner;
use wechatpay_v3::client::{Client, ClientConfig};
use wechatpay_v3::crypto::{Certificate, PrivateKey, PublicKey};
use wechatpay_v3::model::*;
use wechatpay_v3::notify::{self, OpenedNotification};
use wechatpay_v3::verify::{SignatureHeaders, Verifier};
use wxgate_sim::{Sim, SimConfig};

pub struct TestSim {
    pub base: String,
    pub http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestSim {
    pub async fn start() -> Self {
        Self::start_with(SimConfig {
            time_scale: 10_000.0,
            refund_settle_secs: 5.0,
            callback_timeout: Duration::from_secs(2),
            ..SimConfig::default()
        })
        .await
    }

    pub async fn start_with(config: SimConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let sim = Sim::new(config).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(wxgate_sim::serve(listener, sim, async move {
            let _ = rx.await;
        }));
        Self {
            base,
            http: reqwest::Client::new(),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub async fn merchant(&self, signing: &str) -> Merchant {
        let bundle: Value = self
            .http
            .post(format!("{}/sim/merchants", self.base))
            .json(&json!({"signing": signing}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Merchant::from_bundle(&self.base, bundle, signing == "certificate")
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn pay(&self, body: Value) -> (u16, Value) {
        self.admin(reqwest::Method::POST, "/sim/payer/pay", Some(body))
            .await
    }

    pub async fn set_faults(&self, mchid: &str, faults: Value) {
        let (status, body) = self
            .admin(
                reqwest::Method::PUT,
                &format!("/sim/merchants/{mchid}/faults"),
                Some(faults),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    pub async fn clear_faults(&self, mchid: &str) {
        self.admin(
            reqwest::Method::DELETE,
            &format!("/sim/merchants/{mchid}/faults"),
            None,
        )
        .await;
    }
}

pub struct Merchant {
    pub bundle: Value,
    pub mchid: String,
    pub appid: String,
    pub key: Arc<PrivateKey>,
    pub apiv3_key: ApiV3Key,
    pub verifier: Verifier,
    pub client: Client,
}

impl Merchant {
    fn from_bundle(base: &str, bundle: Value, certificate_mode: bool) -> Self {
        let s = |k: &str| bundle[k].as_str().unwrap().to_string();
        let mut verifier = Verifier::new();
        if certificate_mode {
            verifier.add_certificate(Certificate::from_pem(&s("platform_certificate")).unwrap());
        } else {
            verifier.add_public_key(
                s("platform_public_key_id"),
                PublicKey::from_spki_pem(&s("platform_public_key")).unwrap(),
            );
        }
        let client = Self::client_with(base, &bundle, verifier.clone(), |_| {});
        Self {
            mchid: s("mchid"),
            appid: s("appid"),
            key: Arc::new(PrivateKey::from_pkcs8_pem(&s("merchant_private_key")).unwrap()),
            apiv3_key: ApiV3Key::new(&s("apiv3_key")).unwrap(),
            verifier,
            client,
            bundle,
        }
    }

    pub fn client_with(
        base: &str,
        bundle: &Value,
        verifier: Verifier,
        tweak: impl FnOnce(&mut ClientConfig),
    ) -> Client {
        let s = |k: &str| bundle[k].as_str().unwrap().to_string();
        let signer = MerchantSigner {
            mchid: s("mchid"),
            serial_no: s("merchant_serial_no"),
            key: PrivateKey::from_pkcs8_pem(&s("merchant_private_key")).unwrap(),
        };
        let mut config = ClientConfig::new(
            url::Url::parse(&format!("{base}/")).unwrap(),
            signer,
            verifier,
        );
        config.apiv3_key = Some(ApiV3Key::new(&s("apiv3_key")).unwrap());
        config.retry_backoff = Duration::from_millis(5);
        config.timeout = Duration::from_secs(5);
        tweak(&mut config);
        Client::new(config).unwrap()
    }

    pub fn prepay(&self, out_trade_no: &str, total: i64, notify_url: &str) -> PrepayRequest {
        PrepayRequest {
            appid: self.appid.clone(),
            mchid: self.mchid.clone(),
            description: "Image形象店-深圳腾大-QQ公仔".into(),
            out_trade_no: out_trade_no.into(),
            notify_url: notify_url.into(),
            amount: Amount {
                total,
                currency: Some("CNY".into()),
            },
            ..Default::default()
        }
    }

    /// Verifies and decrypts a received callback, as a merchant must.
    pub fn open(&self, callback: &Callback) -> OpenedNotification {
        let headers = SignatureHeaders::from_lookup(|n| {
            callback.headers.get(n).and_then(|v| v.to_str().ok())
        })
        .unwrap();
        notify::open(
            &self.verifier,
            &headers,
            &callback.body,
            &self.apiv3_key,
            time::OffsetDateTime::now_utc().unix_timestamp(),
        )
        .unwrap()
    }
}

#[derive(Debug, Clone)]
pub struct Callback {
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A local notify_url: answers the first `failures` callbacks with 500, then 204. A verifying
/// receiver also answers 401 to any callback whose signature does not verify, as a merchant
/// must.
pub struct Receiver {
    pub url: String,
    pub rx: mpsc::UnboundedReceiver<Callback>,
    pub seen: Arc<AtomicUsize>,
}

impl Receiver {
    pub async fn start(failures: usize) -> Self {
        Self::start_checked(failures, None).await
    }

    pub async fn verifying(verifier: Verifier) -> Self {
        Self::start_checked(0, Some(verifier)).await
    }

    async fn start_checked(failures: usize, verifier: Option<Verifier>) -> Self {
        let verifier = Arc::new(verifier);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/notify", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::unbounded_channel();
        let seen = Arc::new(AtomicUsize::new(0));
        let seen2 = seen.clone();
        let tx = Arc::new(Mutex::new(tx));
        let app = axum::Router::new().route(
            "/notify",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                let seen = seen2.clone();
                let verifier = verifier.clone();
                async move {
                    let n = seen.fetch_add(1, Ordering::SeqCst);
                    if n < failures {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    if let Some(verifier) = verifier.as_ref() {
                        let now = time::OffsetDateTime::now_utc().unix_timestamp();
                        let verified = SignatureHeaders::from_lookup(|n| {
                            headers.get(n).and_then(|v| v.to_str().ok())
                        })
                        .and_then(|h| verifier.verify(&h, &body, now));
                        if verified.is_err() {
                            return StatusCode::UNAUTHORIZED;
                        }
                    }
                    let _ = tx.lock().await.send(Callback { headers, body });
                    StatusCode::NO_CONTENT
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, rx, seen }
    }

    /// The next acknowledged callback (fails the test after 20 s rather than hang).
    pub async fn next(&mut self) -> Callback {
        tokio::time::timeout(Duration::from_secs(20), self.rx.recv())
            .await
            .expect("no callback arrived")
            .expect("receiver closed")
    }
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", wechatpay_v3::nonce(12))
}

/// A loopback notify_url where nothing listens (port 9, discard): callbacks to it fail fast
/// and never leave the machine.
pub const NOWHERE: &str = "http://127.0.0.1:9/notify";
