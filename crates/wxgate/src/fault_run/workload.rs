//! The client side of a fault run: workers creating, paying, cancelling, refunding and reading
//! payments through the balancer, retrying as a careful client does (the same Idempotency-Key
//! until an answer comes), and writing down what was acknowledged.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};

/// Tries of one request before the client gives up on it.
const TRIES: u32 = 4;
/// How long a payment stays worth paying: young enough that a lost callback is found by the
/// gateway's early status syncs.
const PAYABLE_FOR: Duration = Duration::from_secs(40);

/// A payment the gateway acknowledged.
#[derive(Clone)]
pub struct Acked {
    pub id: String,
    pub order_id: String,
    pub amount: i64,
    /// What the payer's side sends the simulator to pay it.
    payer_request: Option<Value>,
    created: Instant,
}

/// What the client saw.
#[derive(Default)]
pub struct Books {
    pub payments: Mutex<Vec<Acked>>,
    /// Refunds acknowledged: (refund id, payment id).
    pub refunds: Mutex<Vec<(String, String)>>,
    /// Payouts acknowledged.
    pub payouts: Mutex<Vec<String>>,
    /// The reconciliation asked for, several times at once through different nodes.
    pub reconciliation: Mutex<Option<String>>,
    pub operations: AtomicU64,
    /// Broken promises seen on the spot (an Idempotency-Key answering another payment).
    pub violations: Mutex<Vec<String>>,
}

/// The balancer, the simulator and the merchant's key.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub api: String,
    pub sim: String,
    pub key: String,
}

impl Client {
    /// Sends until an answer that is not a 5xx or 429 comes, with the same body and
    /// Idempotency-Key each time: (status, body), or `None` when every try failed.
    async fn send(
        &self,
        path: &str,
        body: Option<&Value>,
        idem: Option<&str>,
    ) -> Option<(u16, Value)> {
        for attempt in 0..TRIES {
            let mut req = match body {
                Some(b) => self.http.post(format!("{}{path}", self.api)).json(b),
                None => self.http.get(format!("{}{path}", self.api)),
            };
            req = req.bearer_auth(&self.key);
            if let Some(k) = idem {
                req = req.header("Idempotency-Key", k);
            }
            if let Ok(res) = req.send().await {
                let status = res.status().as_u16();
                let value = res.json().await.unwrap_or(Value::Null);
                if status < 500 && status != 429 && status != 409 || attempt + 1 == TRIES {
                    return Some((status, value));
                }
            }
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        None
    }
}

/// Runs one worker until `until`.
pub async fn worker(client: Client, books: &Books, until: Instant) {
    while Instant::now() < until {
        let roll = rand::rng().random_range(0..100);
        match roll {
            0..28 => create(&client, books).await,
            28..50 => pay(&client, books).await,
            50..56 => cancel(&client, books).await,
            56..74 => refund(&client, books).await,
            74..80 => payout(&client, books).await,
            80..86 => confirm(&client, books).await,
            _ => read(&client, books).await,
        }
        books.operations.fetch_add(1, Ordering::Relaxed);
    }
}

fn pick(books: &Books, young: bool) -> Option<Acked> {
    let payments = books.payments.lock().expect("payments");
    let from = if young {
        payments.partition_point(|p| p.created.elapsed() > PAYABLE_FOR)
    } else {
        0
    };
    payments[from..].choose(&mut rand::rng()).cloned()
}

/// Integrations created, native most often.
const INTEGRATIONS: [&str; 7] = [
    "native",
    "native",
    "native",
    "h5",
    "jsapi",
    "app",
    "mini_program",
];

/// What the payer's side sends the simulator to pay, from a create answer's `next_action`
/// (none for a Mini Program, whose payment needs the appId the mini program adds).
fn payer_request(action: &Value) -> Option<Value> {
    match action["type"].as_str()? {
        "display_qr_code" => Some(json!({"code_url": action["display_qr_code"]["data"]})),
        "redirect_to_url" => Some(json!({"h5_url": action["redirect_to_url"]["url"]})),
        "invoke_jsapi" => Some(json!({"jsapi": action["invoke_jsapi"]})),
        "invoke_app" => Some(json!({"app": action["invoke_app"]})),
        _ => None,
    }
}

/// A create request of a random integration.
fn create_body(order_id: &str, amount: i64) -> Value {
    let integration = *INTEGRATIONS.choose(&mut rand::rng()).unwrap_or(&"native");
    let mut body = json!({"amount": amount, "currency": "CNY", "merchant_order_id": order_id,
        "description": "fault run", "integration": integration});
    match integration {
        "jsapi" | "mini_program" => body["payer"] = json!({"openid": "o-fault-run-payer"}),
        "h5" => body["client_ip"] = json!("203.0.113.7"),
        _ => {}
    }
    body
}

async fn create(client: &Client, books: &Books) {
    let order_id = format!("fr{}", wechatpay_v3::nonce(16));
    let amount = rand::rng().random_range(100..10_000);
    let mut body = create_body(&order_id, amount);
    if rand::rng().random_bool(0.1) {
        // Some expire during the run.
        let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(61);
        body["expires_at"] = json!(
            at.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        );
    }
    let key = wechatpay_v3::nonce(24);
    let Some((201 | 200, p)) = client.send("/v1/payments", Some(&body), Some(&key)).await else {
        return;
    };
    let id = p["id"].as_str().unwrap_or_default().to_string();
    if rand::rng().random_bool(0.2) {
        // The same request again: the same payment, or a broken promise.
        if let Some((_, again)) = client.send("/v1/payments", Some(&body), Some(&key)).await
            && again["id"].as_str().is_some_and(|other| other != id)
        {
            books.violations.lock().expect("violations").push(format!(
                "Idempotency-Key {key} answered {} after {id}",
                again["id"]
            ));
        }
    }
    books.payments.lock().expect("payments").push(Acked {
        id,
        order_id,
        amount,
        payer_request: payer_request(&p["next_action"]),
        created: Instant::now(),
    });
}

async fn pay(client: &Client, books: &Books) {
    let Some(request) = pick(books, true).and_then(|p| p.payer_request) else {
        return;
    };
    let _ = client
        .http
        .post(format!("{}/sim/payer/pay", client.sim))
        .json(&request)
        .send()
        .await;
}

async fn cancel(client: &Client, books: &Books) {
    if let Some(p) = pick(books, true) {
        let path = format!("/v1/payments/{}/cancel", p.id);
        let _ = client.send(&path, Some(&json!({})), None).await;
    }
}

/// A partial refund of a paid payment; sometimes two at once on the same payment.
async fn refund(client: &Client, books: &Books) {
    let Some(p) = pick(books, false) else { return };
    let Some((200, seen)) = client
        .send(&format!("/v1/payments/{}", p.id), None, None)
        .await
    else {
        return;
    };
    if !matches!(
        seen["status"].as_str(),
        Some("succeeded" | "paid_after_close")
    ) {
        return;
    }
    let one = refund_once(client, books, &p);
    if rand::rng().random_bool(0.3) {
        tokio::join!(one, refund_once(client, books, &p));
    } else {
        one.await;
    }
}

async fn refund_once(client: &Client, books: &Books, p: &Acked) {
    let amount = rand::rng().random_range(1..=(p.amount / 2).max(1));
    let body = json!({"merchant_refund_id": wechatpay_v3::nonce(16), "amount": amount});
    let key = wechatpay_v3::nonce(24);
    let path = format!("/v1/payments/{}/refunds", p.id);
    if let Some((201 | 200, r)) = client.send(&path, Some(&body), Some(&key)).await
        && let Some(id) = r["id"].as_str()
    {
        let mut refunds = books.refunds.lock().expect("refunds");
        refunds.push((id.to_string(), p.id.clone()));
    }
}

async fn read(client: &Client, books: &Books) {
    if let Some(p) = pick(books, false) {
        let _ = client
            .send(&format!("/v1/payments/{}", p.id), None, None)
            .await;
    }
}

/// The payee of every payout.
const PAYEE: &str = "o-fault-run-payee";

/// A payout to the payee, retried with the same Idempotency-Key.
async fn payout(client: &Client, books: &Books) {
    let amount = rand::rng().random_range(100..2_000);
    let body = json!({"amount": amount, "currency": "CNY", "openid": PAYEE, "remark": "fault run"});
    let key = wechatpay_v3::nonce(24);
    if let Some((201 | 200, p)) = client.send("/v1/payouts", Some(&body), Some(&key)).await
        && let Some(id) = p["id"].as_str()
    {
        books.payouts.lock().expect("payouts").push(id.to_string());
    }
}

/// The payee answers a payout waiting for them: confirms nine times in ten, declines otherwise.
async fn confirm(client: &Client, books: &Books) {
    let id = books
        .payouts
        .lock()
        .expect("payouts")
        .choose(&mut rand::rng())
        .cloned();
    let Some(id) = id else { return };
    let Some((200, p)) = client.send(&format!("/v1/payouts/{id}"), None, None).await else {
        return;
    };
    let Some(package) = p["confirmation"]["package_info"].as_str() else {
        return;
    };
    let outcome = if rand::rng().random_bool(0.9) {
        "confirm"
    } else {
        "decline"
    };
    let _ = client
        .http
        .post(format!("{}/sim/payee/confirm", client.sim))
        .json(&json!({"package_info": package, "outcome": outcome}))
        .send()
        .await;
}

/// Asks for the reconciliation of `date` from `times` clients at once: one reconciliation,
/// whichever node each request reaches.
pub async fn reconcile(client: &Client, books: &Books, date: &str, times: usize) {
    let mut asks = tokio::task::JoinSet::new();
    for _ in 0..times {
        let (client, body) = (client.clone(), json!({"date": date}));
        asks.spawn(async move { client.send("/v1/reconciliations", Some(&body), None).await });
    }
    let mut ids = std::collections::BTreeSet::new();
    while let Some(answer) = asks.join_next().await {
        if let Ok(Some((_, r))) = answer
            && let Some(id) = r["id"].as_str()
        {
            ids.insert(id.to_string());
        }
    }
    if ids.len() != 1 {
        books.violations.lock().expect("violations").push(format!(
            "{times} requests for the reconciliation of {date} answered {ids:?}"
        ));
    }
    *books.reconciliation.lock().expect("reconciliation") = ids.into_iter().next();
}
