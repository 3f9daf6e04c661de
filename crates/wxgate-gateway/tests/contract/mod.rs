//! The API contract, exactly: idempotency on every POST, exact JSON bodies, control characters
//! refused everywhere, the envelope on unknown routes and methods, paging, page headers, the
//! injectable clock; and a generated sweep of bad input over every route in the OpenAPI
//! document that must never meet a 5xx.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};
use wxgate_gateway::error::ErrorCode;

use crate::common::{TestGateway, native, order};

/// A raw request: the test chooses every header.
async fn raw(
    t: &TestGateway,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = t.http.request(method, format!("{}{path}", t.base));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, value)
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or("<no envelope>")
}

pub async fn every_post_honours_its_idempotency_key(t: TestGateway) {
    let auth = format!("Bearer {}", t.key);
    let post = |path: &'static str, body: Value, key: &'static str| {
        let auth = auth.clone();
        let t = &t;
        async move {
            let headers = [
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
                ("Idempotency-Key", key),
            ];
            raw(
                t,
                Method::POST,
                path,
                &headers,
                Some(body.to_string().into_bytes()),
            )
            .await
        }
    };
    // A retried endpoint creation makes one endpoint, and replays its secret.
    let url = json!({"url": "http://127.0.0.1:9/hooks"});
    let (s1, _, first) = post("/v1/webhook_endpoints", url.clone(), "we-1").await;
    let (s2, h2, again) = post("/v1/webhook_endpoints", url.clone(), "we-1").await;
    assert_eq!((s1, s2), (201, 201), "{first} {again}");
    assert_eq!(first, again);
    assert_eq!(h2["Idempotent-Replayed"], "true");
    let (_, list) = t
        .call(Method::GET, "/v1/webhook_endpoints", None, &[])
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    // The stored answer holds the secret sealed, never in the clear.
    let secret = first["secret"].as_str().unwrap();
    let stored = t
        .store
        .idempotent_answer(&t.merchant_id, "we-1")
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored.starts_with("sealed:") && !stored.contains(secret),
        "{stored}"
    );
    // Links, the notify secret and redelivery too.
    let link = json!({"amount": 500, "currency": "CNY", "description": "Tea"});
    let (_, _, l1) = post("/v1/payment_links", link.clone(), "pl-1").await;
    let (_, _, l2) = post("/v1/payment_links", link, "pl-1").await;
    assert_eq!(l1["id"], l2["id"]);
    let (_, _, n1) = post("/v1/notify_secret", json!({}), "ns-1").await;
    let (_, _, n2) = post("/v1/notify_secret", json!({}), "ns-1").await;
    assert_eq!(n1["secret_id"], n2["secret_id"]);
    // The same key on another route is another request.
    let (s, _, reused) = post(
        "/v1/payment_links",
        json!({"amount": 1, "currency": "CNY", "description": "x"}),
        "ns-1",
    )
    .await;
    assert_eq!((s, code(&reused)), (422, "idempotency_key_reused"));
}

/// A body, its headers, and the status, code and param it must get.
type BodyCase<'a> = (
    Vec<u8>,
    &'a [(&'a str, &'a str)],
    u16,
    &'a str,
    Option<&'a str>,
);

pub async fn json_bodies_are_exact_and_text_is_clean(t: TestGateway) {
    let auth = format!("Bearer {}", t.key);
    let json_headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let text_headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "text/plain"),
    ];
    let no_type = [("Authorization", auth.as_str())];
    let body = native(&order("ct"), 100).to_string();
    let cases: Vec<BodyCase> = vec![
        (format!("{body} {{}}").into_bytes(), &json_headers, 400, "invalid_json", None),
        (format!("{body}x").into_bytes(), &json_headers, 400, "invalid_json", None),
        (body.clone().into_bytes(), &text_headers, 415, "unsupported_media_type", None),
        (body.clone().into_bytes(), &no_type, 415, "unsupported_media_type", None),
        (body.replace("Blue mug", "Blue\\u0000mug").into_bytes(), &json_headers, 400, "invalid_characters", Some("description")),
        (body.replace("Blue mug", "Blue\\u001bmug").into_bytes(), &json_headers, 400, "invalid_characters", Some("description")),
        (json!({"amount": 1, "currency": "CNY", "merchant_order_id": order("ct"), "description": "x", "integration": "native", "metadata": {"a\u{0}": "b"}}).to_string().into_bytes(), &json_headers, 400, "invalid_characters", Some("metadata.a\u{0}")),
        (b"[]".to_vec(), &json_headers, 400, "invalid_json", None),
    ];
    for (bytes, headers, status, expected, param) in cases {
        let (s, _, answer) = raw(&t, Method::POST, "/v1/payments", headers, Some(bytes)).await;
        assert_eq!((s, code(&answer)), (status, expected), "{answer}");
        if let Some(p) = param {
            assert_eq!(answer["error"]["param"], p, "{answer}");
        }
    }
    // A wrong type is said in a merchant's words, not the parser's.
    let mut wrong = native(&order("ct"), 100);
    wrong["amount"] = json!("100");
    let (s, answer) = t.create(wrong).await;
    assert_eq!((s, code(&answer)), (400, "invalid_type"));
    assert_eq!(answer["error"]["message"], "amount must be a whole number");
    assert_eq!(answer["error"]["param"], "amount");
    // Path ids and query parameters: NUL is refused with the parameter's name, on both stores.
    for (path, param) in [
        ("/v1/payments/pay_%00x", "id"),
        ("/v1/payments?merchant_order_id=a%00b", "merchant_order_id"),
        ("/v1/refunds/re_%01", "id"),
        ("/v1/payment_links?starting_after=%00", "starting_after"),
        ("/v1/events?object_id=%7F", "object_id"),
    ] {
        let (s, answer) = t.call(Method::GET, path, None, &[]).await;
        assert_eq!(
            (s, code(&answer)),
            (400, "invalid_characters"),
            "{path}: {answer}"
        );
        assert_eq!(answer["error"]["param"], param, "{path}");
    }
}

pub async fn unknown_routes_and_methods_answer_with_the_envelope(t: TestGateway) {
    let (s, answer) = t.call(Method::GET, "/v1/nothing_here", None, &[]).await;
    assert_eq!((s, code(&answer)), (404, "route_not_found"));
    let (s, answer) = t.call(Method::DELETE, "/v1/payments", None, &[]).await;
    assert_eq!((s, code(&answer)), (405, "method_not_allowed"));
    // The Bearer scheme is case-insensitive; other schemes are not API keys.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let auth = format!("{scheme} {}", t.key);
        let (s, _, answer) = raw(
            &t,
            Method::GET,
            "/v1/payments",
            &[("Authorization", &auth)],
            None,
        )
        .await;
        assert_eq!(s, 200, "{scheme}: {answer}");
    }
    let basic = format!("Basic {}", t.key);
    let (s, _, answer) = raw(
        &t,
        Method::GET,
        "/v1/payments",
        &[("Authorization", &basic)],
        None,
    )
    .await;
    assert_eq!((s, code(&answer)), (401, "unauthorized"));
}

pub async fn payment_links_page(t: TestGateway) {
    let mut made = Vec::new();
    for i in 0..3 {
        let body = json!({"amount": 100 + i, "currency": "CNY", "description": "Tea"});
        let (s, link) = t
            .call(
                Method::POST,
                "/v1/payment_links",
                Some(body.to_string()),
                &[],
            )
            .await;
        assert_eq!(s, 201, "{link}");
        made.push(link["id"].as_str().unwrap().to_string());
    }
    let (_, first) = t
        .call(Method::GET, "/v1/payment_links?limit=2", None, &[])
        .await;
    assert_eq!(first["has_more"], true, "{first}");
    let ids: Vec<&str> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    let (_, rest) = t
        .call(
            Method::GET,
            &format!("/v1/payment_links?limit=2&starting_after={}", ids[1]),
            None,
            &[],
        )
        .await;
    assert_eq!(rest["has_more"], false, "{rest}");
    let mut all: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    all.extend(
        rest["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_string()),
    );
    made.sort();
    all.sort();
    assert_eq!(all, made);
    let (s, answer) = t
        .call(Method::GET, "/v1/payment_links?limit=0", None, &[])
        .await;
    assert_eq!((s, code(&answer)), (400, "invalid_limit"));
}

pub async fn hosted_pages_send_their_security_headers(t: TestGateway) {
    let (_, p) = t.create(native(&order("sh"), 100)).await;
    let page = t
        .http
        .get(p["hosted_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let h = page.headers().clone();
    assert_eq!(h["X-Frame-Options"], "DENY");
    assert_eq!(h["X-Content-Type-Options"], "nosniff");
    let csp = h["Content-Security-Policy"].to_str().unwrap().to_string();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap()
        .to_string();
    let html = page.text().await.unwrap();
    assert!(
        html.contains(&format!("<script nonce=\"{nonce}\">")),
        "the page's script carries the CSP nonce"
    );
    assert!(!html.contains("<script>"), "no script without the nonce");
}

/// Business time comes from the gateway's clock: a test moves it past a payment's expiry and
/// runs one sync round, instead of rewriting times in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_follows_the_injected_clock() {
    for db in wxgate_store::testing::all().await {
        let clock = Arc::new(wechatpay_v3::FixedClock::at_ms(wxgate_gateway::now_ms()));
        let t = TestGateway::spawn_on_clock(&db, |_| {}, clock.clone()).await;
        let (received, hook) = receiver().await;
        let body = json!({"url": hook, "events": ["payment.expired"]}).to_string();
        let (s, e) = t
            .call(Method::POST, "/v1/webhook_endpoints", Some(body), &[])
            .await;
        assert_eq!(s, 201, "{e}");
        let (s, p) = t.create(native(&order("clk"), 100)).await;
        assert_eq!(s, 201, "{p}");
        let id = p["id"].as_str().unwrap();
        wxgate_gateway::sync::drain(&t.gateway).await.unwrap();
        assert_eq!(
            t.get(id).await["status"],
            "pending",
            "nothing is due while time stands still"
        );
        clock.advance_ms(wxgate_gateway::app::payments::PAYMENT_LIFETIME_MAX_MS + 1_000);
        // Drained here, unless the background worker claimed it first (then it is expired when
        // that worker's item ends).
        wxgate_gateway::sync::drain(&t.gateway).await.unwrap();
        t.wait_status(id, "expired").await;
        // The webhook: drained synchronously here, unless the background worker took it first
        // (then it arrives as that worker's attempt ends).
        let expired = |got: &[Value]| {
            got.iter()
                .any(|e| e["type"] == "payment.expired" && e["object_id"] == id)
        };
        for _ in 0..5000 {
            wxgate_gateway::delivery::drain(&t.gateway, 10)
                .await
                .unwrap();
            if expired(&received.lock().unwrap()) {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(
            expired(&received.lock().unwrap()),
            "no payment.expired webhook"
        );
        db.cleanup().await;
    }
}

/// A local webhook receiver: the events it got, and its URL.
async fn receiver() -> (Arc<std::sync::Mutex<Vec<Value>>>, String) {
    let got: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
    let log = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                if let Ok(event) = serde_json::from_slice(&body) {
                    log.lock().unwrap().push(event);
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (got, url)
}

/// How many generated requests each operation of the OpenAPI document gets.
const CASES_PER_OPERATION: usize = 24;

/// Hostile requests to a front door's operation (on its own listener where it has one).
async fn door_never_meets_a_5xx(
    t: &TestGateway,
    path: &str,
    method: &str,
    operation: &Value,
    rng: &mut StdRng,
) {
    let base = if operation["x-wxgate-listener"] == "connect" {
        &t.connect
    } else {
        &t.base
    };
    let method: Method = method.to_uppercase().parse().unwrap();
    for _ in 0..CASES_PER_OPERATION {
        let url = format!(
            "{base}{}{}",
            path.replace("{merchantId}", &t.merchant_id)
                .replace("{paymentId}", &hostile_segment(rng))
                .replace("{hostedCheckoutId}", &hostile_segment(rng)),
            hostile_query(rng)
        );
        let mut req = t
            .http
            .request(method.clone(), &url)
            .header("Content-Type", "application/json");
        if method == Method::POST {
            req = req.body(hostile_body(rng));
        }
        let status = req.send().await.unwrap().status().as_u16();
        assert!(status < 500, "{method} {url}: {status}");
    }
}

pub async fn generated_bad_input_never_meets_a_5xx(t: TestGateway) {
    let (_, doc) = t.call(Method::GET, "/openapi.json", None, &[]).await;
    let known: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let auth = format!("Bearer {}", t.key);
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            if method == "parameters" {
                // The path's own parameters, shared by its operations.
                continue;
            }
            if operation.get("x-wxgate-door").is_some() {
                // A front door answers in its own system's envelope: never a 5xx.
                door_never_meets_a_5xx(&t, path, method, operation, &mut rng).await;
                continue;
            }
            let documented = operation["responses"].as_object().unwrap();
            let method: Method = method.to_uppercase().parse().unwrap();
            for _ in 0..CASES_PER_OPERATION {
                let url = format!(
                    "{}{}",
                    path.replace("{id}", &hostile_segment(&mut rng)),
                    hostile_query(&mut rng)
                );
                let mut headers = vec![("Authorization", auth.as_str())];
                if rng.random_bool(0.8) {
                    headers.push(("Content-Type", "application/json"));
                }
                if rng.random_bool(0.1) {
                    headers.clear();
                }
                let body = (method == Method::POST).then(|| hostile_body(&mut rng));
                let (s, _, answer) = raw(&t, method.clone(), &url, &headers, body).await;
                assert!(s < 500, "{method} {url}: {s} {answer}");
                // Every answer is one the document promises for this operation.
                assert!(
                    documented.contains_key(&s.to_string()),
                    "{method} {path} answered {s}, which its document does not list: {answer}"
                );
                if s >= 400 {
                    assert!(known.contains(&code(&answer)), "{method} {url}: {answer}");
                }
                // Every documented operation is routed: the document and the router agree.
                assert!(
                    !["route_not_found", "method_not_allowed"].contains(&code(&answer)),
                    "{method} {path} is documented but not routed: {answer}"
                );
            }
        }
    }
}

/// A path segment: an id that may hold control characters, odd Unicode, or be far too long.
fn hostile_segment(rng: &mut StdRng) -> String {
    const PIECES: &[&str] = &[
        "pay_",
        "%00",
        "%0A",
        "%7F",
        "%C3%A9",
        "%E2%80%AE",
        "%FF",
        "..",
        "x",
        "re_",
        "'",
        "%22",
        "%25",
    ];
    let n = rng.random_range(1..8);
    // Never empty and never a bare dot segment, so the URL keeps its route.
    let mut s = String::from("i");
    s.extend((0..n).map(|_| PIECES[rng.random_range(0..PIECES.len())]));
    if rng.random_bool(0.1) {
        s.push_str(&"a".repeat(5000));
    }
    s
}

fn hostile_query(rng: &mut StdRng) -> String {
    const KEYS: &[&str] = &[
        "limit",
        "starting_after",
        "status",
        "created_gte",
        "merchant_order_id",
        "type",
        "scale",
        "size",
        "object_id",
        "delivery_status",
        "zzz",
    ];
    const VALUES: &[&str] = &[
        "%00",
        "-1",
        "0",
        "101",
        "99999999999999999999",
        "abc",
        "2026-13-01T00:00:00Z",
        "%FF",
        "",
        "pending",
        "1e3",
    ];
    if rng.random_bool(0.3) {
        return String::new();
    }
    let pairs: Vec<String> = (0..rng.random_range(1..4))
        .map(|_| {
            format!(
                "{}={}",
                KEYS[rng.random_range(0..KEYS.len())],
                VALUES[rng.random_range(0..VALUES.len())]
            )
        })
        .collect();
    format!("?{}", pairs.join("&"))
}

/// A body: random bytes, JSON of the wrong shape, or an object of real field names with
/// hostile values, sometimes with trailing data.
fn hostile_body(rng: &mut StdRng) -> Vec<u8> {
    const FIELDS: &[&str] = &[
        "amount",
        "currency",
        "merchant_order_id",
        "description",
        "integration",
        "payer",
        "client_ip",
        "expires_at",
        "metadata",
        "url",
        "events",
        "amount_min",
        "amount_max",
        "merchant_refund_id",
        "reason",
        "created_gte",
        "max_uses",
        "notify_url",
    ];
    let values = [
        json!(null),
        json!(-1),
        json!(0),
        json!(i64::MAX),
        json!(1e300),
        json!("a\u{0}b"),
        json!("\u{7}"),
        json!("CNY"),
        json!(""),
        json!("x".repeat(300)),
        json!([1, "a"]),
        json!({"openid": "\u{0}"}),
        json!({"k\u{0}": "v"}),
        json!(true),
        json!("2026-01-01T00:00:00Z"),
        json!("native"),
        json!(100),
    ];
    match rng.random_range(0..4) {
        0 => (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
        1 => [json!([]), json!("text"), json!(42), json!(null)][rng.random_range(0..4)]
            .to_string()
            .into_bytes(),
        _ => {
            let mut object = serde_json::Map::new();
            for _ in 0..rng.random_range(0..6) {
                let field = FIELDS[rng.random_range(0..FIELDS.len())];
                object.insert(
                    field.into(),
                    values[rng.random_range(0..values.len())].clone(),
                );
            }
            let mut text = Value::Object(object).to_string();
            if rng.random_bool(0.2) {
                text.push_str("}{");
            }
            text.into_bytes()
        }
    }
}

/// A TCP proxy in front of the database that a test can cut (every connection dropped, new
/// ones refused) and restore.
struct CuttableProxy {
    port: u16,
    cut: Arc<std::sync::atomic::AtomicBool>,
    live: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl CuttableProxy {
    async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let live = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (cut_flag, tasks) = (cut.clone(), live.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if cut_flag.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped at once: the database is away
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tasks.lock().unwrap().push(task.abort_handle());
            }
        });
        Self { port, cut, live }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for task in self.live.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The database goes away: the API answers 503 `database_unavailable` (never a 500, never a
/// hang), and 200 again once it is back. PostgreSQL only: SQLite is a file in the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_away_is_a_503_then_200_when_back() {
    let dbs = wxgate_store::testing::all().await;
    let Some(db) = dbs
        .iter()
        .find(|d| d.backend == wxgate_store::Backend::Postgres)
    else {
        eprintln!("no PostgreSQL reachable: the database-away test needs one");
        return;
    };
    let mut url = url::Url::parse(&db.url).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let proxy = CuttableProxy::start(upstream).await;
    url.set_port(Some(proxy.port)).unwrap();
    db.store().await; // migrated
    let store = wxgate_store::Store::connect(url.as_str()).await.unwrap();
    let clock = Arc::new(wechatpay_v3::SystemClock);
    let t = TestGateway::spawn_at(url.to_string(), store, |_| {}, clock).await;
    let (s, p) = t.create(native(&order("away"), 100)).await;
    assert_eq!(s, 201, "{p}");
    let path = format!("/v1/payments/{}", p["id"].as_str().unwrap());
    proxy.cut();
    for _ in 0..3 {
        let (s, answer) = t.call(Method::GET, &path, None, &[]).await;
        assert_eq!(
            (s, code(&answer)),
            (503, "database_unavailable"),
            "{answer}"
        );
    }
    proxy.restore();
    // The pool opens new connections on demand: the first requests may still meet a dead one.
    let mut back = false;
    for _ in 0..50 {
        let (s, _) = t.call(Method::GET, &path, None, &[]).await;
        assert!(s == 200 || s == 503, "{s}");
        if s == 200 {
            back = true;
            break;
        }
    }
    assert!(back, "the API did not come back with the database");
    for db in dbs {
        db.cleanup().await;
    }
}
