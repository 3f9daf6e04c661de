//! The real `wxgate serve` process is killed with SIGKILL at the worst moments, then restarted
//! on the same database: nothing is lost.
//! - WeChat has created the order but not yet answered; the shopper pays meanwhile and the
//!   callback finds nobody. Status sync finds the truth.
//! - Webhook deliveries are in flight. Their claims lapse and every event is delivered.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use wxgate_sim::{Sim, SimConfig};

const BIN: &str = env!("CARGO_BIN_EXE_wxgate");

struct Env {
    dir: std::path::PathBuf,
    db: String,
    master: String,
    listen: String,
    extra: Vec<(String, String)>,
}

impl Env {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("WXGATE_DATABASE_URL", &self.db)
            .env("WXGATE_MASTER_KEY", &self.master)
            .env("WXGATE_LISTEN", &self.listen)
            .env("RUST_LOG", "warn")
            .envs(self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null());
        c
    }

    fn run_json(&self, args: &[&str]) -> Value {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The gateway, its log lines written to `log`.
    fn serve_logging_to(&self, log: &std::path::Path) -> Child {
        self.command(&["serve"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    }

    fn serve(&self) -> Child {
        self.command(&["serve"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }
}

async fn wait_until_listening(http: &reqwest::Client, base: &str) {
    for _ in 0..200_000 {
        if http.get(format!("{base}/health")).send().await.is_ok() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the gateway did not start");
}

/// The id of the payment made for `order_id`, once the gateway has written it.
async fn listed(http: &reqwest::Client, base: &str, key: &str, order_id: &str) -> Option<String> {
    let list: Value = http
        .get(format!("{base}/v1/payments?merchant_order_id={order_id}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["data"][0]["id"].as_str().map(str::to_string)
}

/// A simulator in this process, and a migrated database with one sandbox merchant and an API
/// key, for `wxgate serve` processes to run on.
struct Setup {
    env: Env,
    sim: String,
    base: String,
    mchid: String,
    key: String,
    http: reqwest::Client,
}

async fn setup(extra: &[(&str, &str)]) -> Setup {
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

    let dir = std::env::temp_dir().join(format!("wxgate-crash-{}", wechatpay_v3::nonce(12)));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = Env {
        db: format!("sqlite://{}", dir.join("wxgate.db").display()),
        master: "ab".repeat(32),
        listen: format!("127.0.0.1:{port}"),
        dir,
        extra: extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let base = format!("http://{}", env.listen);
    assert!(
        env.command(&["migrate"])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    let merchant = env.run_json(&["merchant", "create", "--sandbox-simulator", &sim, "--json"]);
    let merchant_id = merchant["merchant_id"].as_str().unwrap();
    let mchid = merchant["mchid"].as_str().unwrap().to_string();
    let key = env.run_json(&[
        "merchant",
        "api-key",
        "create",
        "--merchant",
        merchant_id,
        "--json",
    ]);
    let key = key["api_key"].as_str().unwrap().to_string();
    Setup {
        env,
        sim,
        base,
        mchid,
        key,
        http: reqwest::Client::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_payment_loses_nothing() {
    let Setup {
        env,
        sim,
        base,
        mchid,
        key,
        http,
    } = setup(&[]).await;
    let mchid = mchid.as_str();

    let mut gateway = env.serve();
    wait_until_listening(&http, &base).await;

    // WeChat will commit the order and then keep the gateway waiting.
    http.put(format!("{sim}/sim/merchants/{mchid}/faults"))
        .json(&json!({"timeout_after_commit_rate": 1.0, "hang_ms": 60000}))
        .send()
        .await
        .unwrap();
    let create = {
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        tokio::spawn(async move {
            http.post(format!("{base}/v1/payments"))
                .bearer_auth(&key)
                .json(&json!({"amount": 880, "currency": "CNY", "merchant_order_id": "crash-order-1", "description": "Kettle", "integration": "native"}))
                .send()
                .await
        })
    };
    // Wait until the gateway has written the payment and WeChat has the order.
    let mut code_url = None;
    let mut payment_id = String::new();
    for _ in 0..200_000 {
        if let Some(id) = listed(&http, &base, &key, "crash-order-1").await {
            payment_id = id.clone();
            let order: Value = http
                .get(format!("{sim}/sim/orders/{mchid}/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if let Some(token) = order["order"]["code_token"].as_str() {
                code_url = Some(format!("weixin://wxpay/bizpayurl?pr={token}"));
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    let code_url = code_url.expect("WeChat never got the order");

    // The process dies before WeChat's answer arrives; the merchant's request fails.
    gateway.kill().unwrap();
    gateway.wait().unwrap();
    assert!(
        create.await.unwrap().is_err(),
        "the merchant saw the connection drop"
    );

    // The shopper pays; the callback is lost (the gateway is down, and it is not retried).
    http.put(format!("{sim}/sim/merchants/{mchid}/faults"))
        .json(&json!({"drop_callback_rate": 1.0}))
        .send()
        .await
        .unwrap();
    let paid = http
        .post(format!("{sim}/sim/payer/pay"))
        .json(&json!({"code_url": code_url}))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);

    // Restarted on the same database, the gateway finds the truth.
    let mut gateway = env.serve();
    wait_until_listening(&http, &base).await;
    let mut last = Value::Null;
    for _ in 0..200_000 {
        last = http
            .get(format!("{base}/v1/payments/{payment_id}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if last["status"] == "succeeded" {
            break;
        }
        tokio::task::yield_now().await;
    }
    gateway.kill().unwrap();
    gateway.wait().unwrap();
    let _ = std::fs::remove_dir_all(&env.dir);
    assert_eq!(last["status"], "succeeded", "{last}");
    assert_eq!(last["amount"], 880);
    assert!(
        last["wechat"]["transaction_id"]
            .as_str()
            .is_some_and(|t| t.len() == 28)
    );
    assert_eq!(last["status_history"][1]["source"], "sync", "{last}");
    let history: Vec<&str> = last["status_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["pending", "succeeded"]);
}

/// A webhook receiver that holds every request until released; it records the event ids it saw.
struct HoldingReceiver {
    url: String,
    release: tokio::sync::watch::Sender<bool>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl HoldingReceiver {
    async fn start() -> Self {
        let (release, released) = tokio::sync::watch::channel(false);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let (log, mut released) = (log.clone(), released.clone());
                async move {
                    let event: Value = serde_json::from_slice(&body).unwrap();
                    log.lock()
                        .unwrap()
                        .push(event["id"].as_str().unwrap().to_string());
                    let _ = released.wait_for(|r| *r).await;
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, release, seen }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_delivery_delivers_every_event_after_restart() {
    let s = setup(&[
        ("WXGATE_WEBHOOKS_ALLOW_PRIVATE", "1"),
        ("WXGATE_WEBHOOK_TIMEOUT_MS", "500"),
        (
            "WXGATE_WEBHOOK_RETRY_SCHEDULE_MS",
            "50,50,50,50,50,50,50,50",
        ),
    ])
    .await;
    let receiver = HoldingReceiver::start().await;
    let mut gateway = s.env.serve();
    wait_until_listening(&s.http, &s.base).await;
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut req = s
            .http
            .request(method, format!("{}{path}", s.base))
            .bearer_auth(&s.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let res = req.send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let (status, endpoint) = call(
        reqwest::Method::POST,
        "/v1/webhook_endpoints",
        Some(json!({"url": receiver.url})),
    )
    .await;
    assert_eq!(status, 201, "{endpoint}");

    // Six payments cancelled: six events, whose deliveries the receiver holds open.
    const N: usize = 6;
    for i in 0..N {
        let (status, p) = call(
            reqwest::Method::POST,
            "/v1/payments",
            Some(json!({"amount": 100 + i, "currency": "CNY", "merchant_order_id": format!("hook-{i}"), "description": "Tea", "integration": "native"})),
        )
        .await;
        assert_eq!(status, 201, "{p}");
        let id = p["id"].as_str().unwrap();
        let (status, _) = call(
            reqwest::Method::POST,
            &format!("/v1/payments/{id}/cancel"),
            None,
        )
        .await;
        assert_eq!(status, 200);
    }
    for _ in 0..200_000 {
        if !receiver.seen.lock().unwrap().is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        !receiver.seen.lock().unwrap().is_empty(),
        "nothing was delivered"
    );

    // Killed with deliveries in flight; the receiver then answers everything.
    gateway.kill().unwrap();
    gateway.wait().unwrap();
    receiver.release.send(true).unwrap();

    let mut gateway = s.env.serve();
    wait_until_listening(&s.http, &s.base).await;
    let mut delivered = Value::Null;
    for _ in 0..200_000 {
        (_, delivered) = call(
            reqwest::Method::GET,
            "/v1/events?delivery_status=delivered&limit=100",
            None,
        )
        .await;
        if delivered["data"].as_array().unwrap().len() == N {
            break;
        }
        tokio::task::yield_now().await;
    }
    gateway.kill().unwrap();
    gateway.wait().unwrap();
    let _ = std::fs::remove_dir_all(&s.env.dir);
    let delivered: Vec<String> = delivered["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(delivered.len(), N, "{delivered:?}");
    let seen = receiver.seen.lock().unwrap().clone();
    for id in &delivered {
        assert!(seen.contains(id), "{id} never reached the receiver");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_name_the_request_merchant_and_payment() {
    let s = setup(&[
        ("WXGATE_LOG_FORMAT", "json"),
        ("RUST_LOG", "info,wxgate_gateway::http=debug"),
    ])
    .await;
    let log = s.env.dir.join("gateway.log");
    let mut gateway = s.env.serve_logging_to(&log);
    wait_until_listening(&s.http, &s.base).await;
    let created: Value = s
        .http
        .post(format!("{}/v1/payments", s.base))
        .bearer_auth(&s.key)
        .header("X-Request-Id", "req_log_test")
        .json(
            &json!({"amount": 100, "currency": "CNY", "merchant_order_id": "log-0001",
            "description": "log", "integration": "native"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let payment_id = created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"));
    gateway.kill().unwrap();
    gateway.wait().unwrap();

    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON line: {l}")))
        .collect();
    let access = lines
        .iter()
        .find(|l| l["span"]["request_id"] == "req_log_test" && l["message"] == "request")
        .unwrap_or_else(|| panic!("no access line for the request in {lines:?}"));
    assert_eq!(access["span"]["payment_id"], payment_id);
    assert!(
        access["span"]["merchant_id"]
            .as_str()
            .unwrap()
            .starts_with("mch_")
    );
    assert_eq!(access["status"], 201);
    assert_eq!(access["route"], "/v1/payments");
}

/// SIGTERM stops `wxgate serve` gracefully: a create waiting on WeChat still gets its answer,
/// and the process exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_the_requests_in_flight_then_exits_cleanly() {
    let s = setup(&[]).await;
    let mut gateway = s.env.serve();
    wait_until_listening(&s.http, &s.base).await;
    s.http
        .put(format!("{}/sim/merchants/{}/faults", s.sim, s.mchid))
        .json(&json!({"latency_ms": 1500}))
        .send()
        .await
        .unwrap();
    let create = {
        let (http, base, key) = (s.http.clone(), s.base.clone(), s.key.clone());
        tokio::spawn(async move {
            http.post(format!("{base}/v1/payments"))
                .bearer_auth(&key)
                .json(&json!({"amount": 300, "currency": "CNY", "merchant_order_id": "term-1", "description": "Tea", "integration": "native"}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    // The payment is written before WeChat is asked: once it is listed, the create is waiting
    // on the simulator's latency.
    while listed(&s.http, &s.base, &s.key, "term-1").await.is_none() {
        tokio::task::yield_now().await;
    }
    let term = Command::new("kill")
        .args(["-TERM", &gateway.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert_eq!(
        create.await.unwrap(),
        201,
        "the request in flight is answered"
    );
    let exit = tokio::task::spawn_blocking(move || gateway.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "a clean exit: {exit:?}");
    let _ = std::fs::remove_dir_all(&s.env.dir);
}
