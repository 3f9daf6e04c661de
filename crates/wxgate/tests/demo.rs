//! `wxgate demo`, the embedded default, as a user runs it: one process, a fresh data folder,
//! `demo.json` to pick it up, a payment paid through the simulator it carries, and a restart
//! on the same folder that keeps everything.

use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_wxgate");

fn start(data: &std::path::Path, listen: &str) -> Child {
    Command::new(BIN)
        .args(["demo", "--data"])
        .arg(data)
        .args(["--listen", listen])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits (with HTTP round trips, no fixed sleeps) until the demo answers and has written
/// demo.json; returns it.
async fn ready(http: &reqwest::Client, data: &std::path::Path, base: &str) -> Value {
    for _ in 0..200_000 {
        if http.get(format!("{base}/health")).send().await.is_ok()
            && let Ok(bytes) = std::fs::read(data.join("demo.json"))
        {
            return serde_json::from_slice(&bytes).unwrap();
        }
        tokio::task::yield_now().await;
    }
    panic!("the demo did not start");
}

/// A fresh data folder and a free loopback address for one demo.
fn fresh(prefix: &str) -> (std::path::PathBuf, String) {
    let data = std::env::temp_dir().join(format!("{prefix}-{}", wechatpay_v3::nonce(12)));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    (data, format!("127.0.0.1:{port}"))
}

/// Creates a native payment and has the simulated payer pay it; returns the created payment.
async fn pay_native(http: &reqwest::Client, base: &str, key: &str, order: &str) -> Value {
    let created: Value = http
        .post(format!("{base}/v1/payments"))
        .bearer_auth(key)
        .json(&json!({"amount": 100, "currency": "CNY", "merchant_order_id": order, "description": "Test", "integration": "native"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let code_url = created["next_action"]["display_qr_code"]["data"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"));
    assert!(code_url.starts_with("weixin://"), "{created}");
    let paid = http
        .post(format!("{base}/sim/payer/pay"))
        .json(&json!({"code_url": code_url}))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    created
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_takes_a_payment_and_keeps_it_across_a_restart() {
    let (data, listen) = fresh("wxgate-demo");
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    let mut demo = start(&data, &listen);
    let info = ready(&http, &data, &base).await;
    assert_eq!(info["api_base"], base.as_str());
    assert_eq!(info["simulator_base"], base.as_str());
    let key = info["api_key"].as_str().unwrap().to_string();
    assert!(info["merchant_id"].as_str().unwrap().starts_with("mch_"));
    // The printed checkout link shows its Pay form, which opens a hosted checkout.
    let link = info["payment_link"].as_str().unwrap();
    assert!(link.starts_with(&format!("{base}/pay/")), "{info}");
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = no_redirects.get(link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let visit = no_redirects
        .post(link)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert!(visit.status().is_redirection(), "{}", visit.status());
    let to = visit.headers()["location"].to_str().unwrap();
    assert!(to.contains("/checkout/cs_"), "{to}");

    let created = pay_native(&http, &base, &key, "demo-0001").await;
    let id = created["id"].as_str().unwrap().to_string();
    let get = |http: reqwest::Client, key: String, url: String| async move {
        http.get(url)
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let url = format!("{base}/v1/payments/{id}");
    let mut last = Value::Null;
    for _ in 0..200_000 {
        last = get(http.clone(), key.clone(), url.clone()).await;
        if last["status"] == "succeeded" {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(last["status"], "succeeded", "{last}");
    redeliver_from_the_command_line(&http, &base, &key, &data, &info, &id).await;
    reconcile_from_the_command_line(&http, &base, &data, &info).await;

    // Restarted on the same folder: the same merchant, key and payment.
    demo.kill().unwrap();
    demo.wait().unwrap();
    let mut demo = start(&data, &listen);
    let again = ready(&http, &data, &base).await;
    assert_eq!(again, info);
    let after = get(http.clone(), key.clone(), url.clone()).await;
    // The payment-intents door's sandbox merchant and token, ready to use.
    let intents = &info["compat"]["payment_intents"];
    let created: Value = http
        .post(format!("{}/mch-api/v1/pa/payment_intents/create", intents["base_url"].as_str().unwrap()))
        .bearer_auth(intents["access_token"].as_str().unwrap())
        .json(&serde_json::json!({"amount": "8.80", "currency": "HKD", "merchant_order_id": "demointent01",
            "description": "Demo", "payment_method": {"type": "wechat", "wechat": {"flow": "qrcode"}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    demo.kill().unwrap();
    demo.wait().unwrap();
    let _ = std::fs::remove_dir_all(&data);
    assert_eq!(after["status"], "succeeded", "{after}");
    assert_eq!(after["wechat"], last["wechat"]);
    assert_eq!(created["code"], 0, "{created}");
    assert_eq!(
        created["data"]["next_action"]["type"], "render_qrcode",
        "{created}"
    );
}

/// `wxgate events redeliver` on the demo's database schedules the payment's event again for
/// the merchant's endpoint, by the same rules as the API; an unknown event is refused.
async fn redeliver_from_the_command_line(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    data: &std::path::Path,
    info: &Value,
    payment_id: &str,
) {
    let endpoint = http
        .post(format!("{base}/v1/webhook_endpoints"))
        .bearer_auth(key)
        .json(&json!({"url": "http://127.0.0.1:9/hooks"}))
        .send()
        .await
        .unwrap();
    assert_eq!(endpoint.status(), 201);
    let events: Value = http
        .get(format!("{base}/v1/events?object_id={payment_id}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let event_id = events["data"][0]["id"].as_str().unwrap().to_string();
    let master = std::fs::read_to_string(data.join("master.key")).unwrap();
    let merchant = info["merchant_id"].as_str().unwrap();
    let redeliver = |event: &str| {
        Command::new(BIN)
            .args([
                "events",
                "redeliver",
                event,
                "--merchant",
                merchant,
                "--json",
            ])
            .env(
                "WXGATE_DATABASE_URL",
                format!("sqlite://{}", data.join("wxgate.db").display()),
            )
            .env("WXGATE_MASTER_KEY", master.trim())
            .output()
            .unwrap()
    };
    let done = redeliver(&event_id);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let answer: Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(answer, json!({"event_id": event_id, "scheduled": 1}));
    let unknown = redeliver("evt_000000000000000000000000");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("resource_missing"));
}

/// `wxgate reconcile` on the demo's database, once the simulator's bills of today exist (its
/// clock moved to the next morning): the day reconciles with nothing to report.
async fn reconcile_from_the_command_line(
    http: &reqwest::Client,
    base: &str,
    data: &std::path::Path,
    info: &Value,
) {
    let today = time::OffsetDateTime::now_utc()
        .to_offset(time::macros::offset!(+8))
        .date()
        .to_string();
    let moved = http
        .post(format!("{base}/sim/clock"))
        .json(&json!({"advance_secs": 33 * 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 200);
    let master = std::fs::read_to_string(data.join("master.key")).unwrap();
    let merchant = info["merchant_id"].as_str().unwrap();
    let out = Command::new(BIN)
        .args([
            "reconcile",
            "--merchant",
            merchant,
            "--date",
            &today,
            "--json",
        ])
        .env(
            "WXGATE_DATABASE_URL",
            format!("sqlite://{}", data.join("wxgate.db").display()),
        )
        .env("WXGATE_MASTER_KEY", master.trim())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (answer["date"].as_str(), answer["status"].as_str()),
        (Some(today.as_str()), Some("completed")),
        "{answer}"
    );
    assert_eq!(answer["discrepancy_count"], 0, "{answer}");
    assert_eq!(answer["totals"]["wechat_payments"], 1, "{answer}");
}

/// The README's walkthrough, pasted as is into a shell against a fresh demo: it must end with
/// the payment and its refund succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_pastes_as_is() {
    let readme = include_str!("../../../README.md");
    let begin = readme
        .find("<!-- walkthrough:begin -->")
        .expect("the README marks its walkthrough");
    let block = &readme[begin..];
    let from = block.find("```sh\n").unwrap() + "```sh\n".len();
    let to = from + block[from..].find("```").unwrap();
    let script = block[from..to].to_string();

    let (data, listen) = fresh("wxgate-readme");
    let http = reqwest::Client::new();
    let mut demo = start(&data, &listen);
    ready(&http, &data, &format!("http://{listen}")).await;
    let dir = data.clone();
    // A shell runs it while the demo serves; its own waits are on conditions, bounded.
    let ran = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .env("DEMO", &dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    demo.kill().unwrap();
    demo.wait().unwrap();
    let _ = std::fs::remove_dir_all(&data);
    let out = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("payment pay_") && l.ends_with(": succeeded")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("refund re_") && l.ends_with(": succeeded")),
        "{out}"
    );
    assert!(lines.contains(&"payment.succeeded"), "{out}");
}

/// The most events `listen_prints_the_demo_merchants_webhooks` lets its listener take: the
/// payment's, and the merchant's others that may come first.
const LISTEN_COUNT_MAX: &str = "3";

/// `wxgate listen` against a running demo: it subscribes itself, and a paid payment's event
/// arrives and is printed with its signature verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_prints_the_demo_merchants_webhooks() {
    use std::io::BufRead;
    let (data, listen) = fresh("wxgate-listen");
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    let mut demo = start(&data, &listen);
    let info = ready(&http, &data, &base).await;
    let mut listen = Command::new(BIN)
        .args([
            "listen",
            "--port",
            "0",
            "--count",
            LISTEN_COUNT_MAX,
            "--demo",
        ])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Its first line says it is subscribed: only then is the payment made.
    let mut lines = std::io::BufReader::new(listen.stdout.take().unwrap()).lines();
    let first = tokio::task::spawn_blocking(move || {
        let first = lines.next().unwrap().unwrap();
        (first, lines)
    });
    let (first, lines) = first.await.unwrap();
    assert!(
        first.starts_with("listening on http://127.0.0.1:"),
        "{first}"
    );
    let key = info["api_key"].as_str().unwrap();
    let created = pay_native(&http, &base, key, "listen-0001").await;
    let id = created["id"].as_str().unwrap();
    let wanted = format!("payment.succeeded {id} v2 signature verified");
    // The merchant's other events may come first (the demo's reconciliation of yesterday can
    // complete meanwhile): lines are read up to the payment's.
    let seen: Vec<String> = tokio::task::spawn_blocking({
        let wanted = wanted.clone();
        move || {
            let mut seen = Vec::new();
            for line in lines.map(|l| l.unwrap()) {
                let done = line == wanted;
                seen.push(line);
                if done {
                    break;
                }
            }
            seen
        }
    })
    .await
    .unwrap();
    // Already gone if it received its most; else stopped here.
    let _ = listen.kill();
    listen.wait().unwrap();
    demo.kill().unwrap();
    demo.wait().unwrap();
    let _ = std::fs::remove_dir_all(&data);
    assert_eq!(seen.last(), Some(&wanted), "{seen:?}");
    assert!(
        seen.iter().all(|l| l.ends_with(" signature verified")),
        "{seen:?}"
    );
}

/// The demo's activity shows each event and each webhook attempt as one readable line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_events_and_webhook_attempts() {
    use std::io::BufRead;
    let (data, listen) = fresh("wxgate-activity");
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    let mut demo = Command::new(BIN)
        .args(["demo", "--data"])
        .arg(&data)
        .args(["--listen", &listen])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stdout = demo.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let info = ready(&http, &data, &base).await;
    let key = info["api_key"].as_str().unwrap();
    // An endpoint nobody listens on: the attempt fails, and says so.
    let endpoint = http
        .post(format!("{base}/v1/webhook_endpoints"))
        .bearer_auth(key)
        .json(&json!({"url": "http://127.0.0.1:9/hooks", "events": ["payment.succeeded"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(endpoint.status(), 201);
    let created = pay_native(&http, &base, key, "activity-0001").await;
    let id = created["id"].as_str().unwrap();
    let wanted = [
        format!("event payment.succeeded {id} v2"),
        "webhook payment.succeeded → we_".to_string(),
    ];
    let mut found = [false, false];
    let mut seen = Vec::new();
    // A bound against hanging, not a timing assertion.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = rx.recv().await {
            for (i, w) in wanted.iter().enumerate() {
                found[i] |= line.starts_with(w.as_str());
            }
            seen.push(line);
            if found.iter().all(|f| *f) {
                break;
            }
        }
    })
    .await;
    demo.kill().unwrap();
    demo.wait().unwrap();
    let _ = std::fs::remove_dir_all(&data);
    assert!(found.iter().all(|f| *f), "{seen:#?}");
}
