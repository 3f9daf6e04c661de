//! The real `wxgate serve` process is killed with SIGKILL while WeChat has already created the
//! order but not yet answered; the shopper pays meanwhile and the callback finds nobody. After a
//! restart on the same database, status sync finds the truth: nothing is lost.

use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};
use wxgate_sim::{Sim, SimConfig};

const BIN: &str = env!("CARGO_BIN_EXE_wxgate");

struct Env {
    dir: std::path::PathBuf,
    db: String,
    master: String,
    listen: String,
}

impl Env {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("WXGATE_DATABASE_URL", &self.db)
            .env("WXGATE_MASTER_KEY", &self.master)
            .env("WXGATE_LISTEN", &self.listen)
            .env("RUST_LOG", "warn")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_mid_payment_loses_nothing() {
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
    let mchid = merchant["mchid"].as_str().unwrap();
    let key = env.run_json(&[
        "merchant",
        "api-key",
        "create",
        "--merchant",
        merchant_id,
        "--json",
    ]);
    let key = key["api_key"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();

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
        let list: Value = http
            .get(format!(
                "{base}/v1/payments?merchant_order_id=crash-order-1"
            ))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(id) = list["data"][0]["id"].as_str() {
            payment_id = id.to_string();
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
