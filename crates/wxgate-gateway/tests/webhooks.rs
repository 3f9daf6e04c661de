//! Merchant webhooks end to end: the real gateway, the real simulator paying, and a local
//! receiver that fails when told to. Retries run on a compressed schedule.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use wxgate_domain::webhook;
use wxgate_store::testing;

mod common;
use common::{TestGateway, native, order};

on_both!(
    deliveries_are_retried_until_accepted_and_signed,
    a_receiver_down_for_the_whole_schedule_is_dead_lettered_then_redelivered,
    endpoints_filter_events_and_can_be_deleted,
    a_payments_own_notify_url_gets_its_events_signed_with_the_notify_secret,
    concurrent_creates_never_pass_the_endpoint_limit,
);

/// What a receiver saw: the signature header, the event id, the body, and its answer.
#[derive(Debug, Clone)]
struct Received {
    signature: String,
    body: Vec<u8>,
    accepted: bool,
}

/// A webhook receiver on loopback that answers 500 to its first `fail_first` requests.
#[derive(Clone)]
struct Receiver {
    url: String,
    state: Arc<Mutex<(usize, Vec<Received>)>>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Self {
        let state = Arc::new(Mutex::new((fail_first, Vec::new())));
        let shared = state.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let shared = shared.clone();
                async move {
                    let mut s = shared.lock().unwrap();
                    let accepted = s.1.len() >= s.0;
                    s.1.push(Received {
                        signature: headers[webhook::SIGNATURE_HEADER]
                            .to_str()
                            .unwrap()
                            .to_string(),
                        body: body.to_vec(),
                        accepted,
                    });
                    if accepted {
                        StatusCode::NO_CONTENT
                    } else {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    /// From now on, accept everything.
    fn accept_all(&self) {
        let mut s = self.state.lock().unwrap();
        s.0 = s.1.len();
    }

    /// Requests carrying `event_id`, in arrival order.
    fn seen(&self, event_id: &str) -> Vec<Received> {
        let s = self.state.lock().unwrap();
        s.1.iter()
            .filter(|r| {
                serde_json::from_slice::<Value>(&r.body).unwrap()["id"].as_str() == Some(event_id)
            })
            .cloned()
            .collect()
    }

    fn total(&self) -> usize {
        self.state.lock().unwrap().1.len()
    }
}

async fn add_endpoint(t: &TestGateway, body: Value) -> Value {
    let (status, e) = t
        .call(
            reqwest::Method::POST,
            "/v1/webhook_endpoints",
            Some(body.to_string()),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{e}");
    e
}

/// Creates a native payment and has the simulator pay it; returns the payment id.
async fn paid_payment(t: &TestGateway) -> String {
    let (status, p) = t.create(native(&order("wh"), 1200)).await;
    assert_eq!(status, 201, "{p}");
    t.pay(json!({"code_url": p["next_action"]["display_qr_code"]["data"]}))
        .await;
    let id = p["id"].as_str().unwrap().to_string();
    t.wait_status(&id, "succeeded").await;
    id
}

/// The single event of `event_type` for an object, found through `GET /v1/events`.
async fn event_of(t: &TestGateway, object_id: &str, event_type: &str) -> Value {
    let (status, list) = t
        .call(
            reqwest::Method::GET,
            &format!("/v1/events?object_id={object_id}&type={event_type}"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200, "{list}");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{list}");
    data[0].clone()
}

/// Polls `GET /v1/events/{id}` (each call a round trip that lets the workers run) until every
/// delivery has `status`.
async fn wait_deliveries(t: &TestGateway, event_id: &str, status: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..5000 {
        let (code, e) = t
            .call(
                reqwest::Method::GET,
                &format!("/v1/events/{event_id}"),
                None,
                &[],
            )
            .await;
        assert_eq!(code, 200, "{e}");
        let deliveries = e["deliveries"].as_array().unwrap();
        if !deliveries.is_empty() && deliveries.iter().all(|d| d["status"] == status) {
            return e;
        }
        last = e;
        tokio::task::yield_now().await;
    }
    panic!("the deliveries of {event_id} never became {status}: {last}");
}

fn verify(r: &Received, endpoint: &Value) -> Result<(), webhook::SignatureError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    webhook::verify(
        &r.signature,
        &r.body,
        &[(
            endpoint["secret_id"].as_str().unwrap(),
            endpoint["secret"].as_str().unwrap(),
        )],
        now,
        webhook::DEFAULT_TOLERANCE_SECS,
    )
}

async fn deliveries_are_retried_until_accepted_and_signed(t: TestGateway) {
    let receiver = Receiver::start(3).await;
    let endpoint = add_endpoint(&t, json!({"url": receiver.url})).await;
    assert!(endpoint["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(endpoint["events"], json!(["*"]));

    let id = paid_payment(&t).await;
    let event = event_of(&t, &id, "payment.succeeded").await;
    let event_id = event["id"].as_str().unwrap();
    let detail = wait_deliveries(&t, event_id, "delivered").await;

    // Three refusals, then the accepted one; each signed, and the same bytes every time.
    let seen = receiver.seen(event_id);
    let accepted: Vec<bool> = seen.iter().map(|r| r.accepted).collect();
    assert_eq!(accepted, [false, false, false, true]);
    for r in &seen {
        verify(r, &endpoint).unwrap();
        assert_eq!(r.body, seen[0].body);
    }
    let wrong = json!({"secret_id": endpoint["secret_id"], "secret": "whsec_wrong"});
    assert_eq!(
        verify(&seen[3], &wrong),
        Err(webhook::SignatureError::Mismatch)
    );
    let body: Value = serde_json::from_slice(&seen[3].body).unwrap();
    assert_eq!(body["type"], "payment.succeeded");
    assert_eq!(body["object"], "event");
    assert_eq!(body["object_id"], id.as_str());
    assert_eq!(body["object_version"], 2);
    assert_eq!(body["data"]["object"]["id"], id.as_str());
    assert_eq!(body["data"]["object"]["status"], "succeeded");
    assert_eq!(body, event, "the feed shows what was delivered");

    // Every attempt is logged.
    let delivery = &detail["deliveries"][0];
    assert_eq!(delivery["endpoint_id"], endpoint["id"]);
    assert_eq!(delivery["attempts"], 4);
    let codes: Vec<i64> = delivery["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [500, 500, 500, 204]);
    assert!(
        delivery["attempt_log"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("HTTP 500")
    );
    assert!(delivery["delivered_at"].is_string());
    assert!(delivery["next_attempt_at"].is_null());

    // A rotated secret signs the next event, named by its new kid.
    let endpoint_id = endpoint["id"].as_str().unwrap();
    let (status, rotated) = t
        .call(
            reqwest::Method::POST,
            &format!("/v1/webhook_endpoints/{endpoint_id}/rotate_secret"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    assert_ne!(rotated["secret_id"], endpoint["secret_id"]);
    let next = paid_payment(&t).await;
    let event = event_of(&t, &next, "payment.succeeded").await;
    wait_deliveries(&t, event["id"].as_str().unwrap(), "delivered").await;
    let seen = receiver.seen(event["id"].as_str().unwrap());
    verify(&seen[0], &rotated).unwrap();
    assert!(verify(&seen[0], &endpoint).is_err());
}

async fn a_receiver_down_for_the_whole_schedule_is_dead_lettered_then_redelivered(t: TestGateway) {
    let receiver = Receiver::start(usize::MAX).await;
    let endpoint = add_endpoint(&t, json!({"url": receiver.url})).await;
    let id = paid_payment(&t).await;
    let event = event_of(&t, &id, "payment.succeeded").await;
    let event_id = event["id"].as_str().unwrap();

    // The first attempt and the three scheduled retries fail: dead-lettered, and listed so.
    let detail = wait_deliveries(&t, event_id, "dead").await;
    assert_eq!(detail["deliveries"][0]["attempts"], 4);
    assert_eq!(receiver.seen(event_id).len(), 4);
    let (_, dead) = t
        .call(
            reqwest::Method::GET,
            "/v1/events?delivery_status=dead",
            None,
            &[],
        )
        .await;
    assert_eq!(dead["data"][0]["id"], event_id);

    // The merchant is back: it catches up from the feed and asks for the event again.
    receiver.accept_all();
    let (status, _) = t
        .call(
            reqwest::Method::POST,
            &format!("/v1/events/{event_id}/redeliver"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 202);
    let detail = wait_deliveries(&t, event_id, "delivered").await;
    assert_eq!(detail["deliveries"][0]["attempts"], 5);
    let seen = receiver.seen(event_id);
    assert_eq!(seen.len(), 5);
    assert!(seen[4].accepted);
    verify(&seen[4], &endpoint).unwrap();
    let (_, dead) = t
        .call(
            reqwest::Method::GET,
            "/v1/events?delivery_status=dead",
            None,
            &[],
        )
        .await;
    assert_eq!(dead["data"], json!([]));

    // Everything since a time, sent again in one call; bad times are refused clearly.
    let (status, body) = t
        .call(
            reqwest::Method::POST,
            "/v1/events/redeliver",
            Some(json!({"created_gte": "2000-01-01T00:00:00Z"}).to_string()),
            &[],
        )
        .await;
    assert_eq!(
        (status, body["scheduled"].as_i64()),
        (202, Some(1)),
        "{body}"
    );
    let detail = wait_deliveries(&t, event_id, "delivered").await;
    assert_eq!(detail["deliveries"][0]["attempts"], 6);
    assert_eq!(receiver.seen(event_id).len(), 6);
    let (status, body) = t
        .call(
            reqwest::Method::POST,
            "/v1/events/redeliver",
            Some(json!({"created_gte": "yesterday"}).to_string()),
            &[],
        )
        .await;
    assert_eq!(
        (
            status,
            body["error"]["code"].as_str(),
            body["error"]["param"].as_str()
        ),
        (400, Some("invalid_time"), Some("created_gte"))
    );

    // Unknown events and events nobody is subscribed to are refused clearly.
    let (status, body) = t
        .call(
            reqwest::Method::POST,
            "/v1/events/evt_nope/redeliver",
            None,
            &[],
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("resource_missing"))
    );
}

async fn endpoints_filter_events_and_can_be_deleted(t: TestGateway) {
    // Bad input names the field and the reason.
    for (body, code, param) in [
        (
            json!({"url": "ftp://shop.example/hook"}),
            "invalid_url",
            "url",
        ),
        (json!({"url": "not a url"}), "invalid_url", "url"),
        (
            json!({"url": "https://shop.example/hook", "events": ["payment.exploded"]}),
            "invalid_events",
            "events[0]",
        ),
        (
            json!({"url": "https://shop.example/hook", "events": []}),
            "invalid_events",
            "events",
        ),
        (
            json!({"url": "https://shop.example/hook", "colour": "red"}),
            "parameter_unknown",
            "colour",
        ),
        (
            json!({"events": ["payment.failed"]}),
            "parameter_missing",
            "url",
        ),
    ] {
        let (status, e) = t
            .call(
                reqwest::Method::POST,
                "/v1/webhook_endpoints",
                Some(body.to_string()),
                &[],
            )
            .await;
        assert_eq!(status, 400, "{body} → {e}");
        assert_eq!(e["error"]["code"], code, "{body} → {e}");
        assert_eq!(e["error"]["param"], param, "{body} → {e}");
    }

    let cancelled_only = Receiver::start(0).await;
    let everything = Receiver::start(0).await;
    let a = add_endpoint(
        &t,
        json!({"url": cancelled_only.url, "events": ["payment.cancelled"]}),
    )
    .await;
    let b = add_endpoint(&t, json!({"url": everything.url})).await;
    assert_eq!(a["events"], json!(["payment.cancelled"]));

    // A cancelled payment reaches both; a paid one only the endpoint that takes everything.
    let (_, p) = t.create(native(&order("whc"), 300)).await;
    let cancelled_id = p["id"].as_str().unwrap();
    let (status, _) = t
        .call(
            reqwest::Method::POST,
            &format!("/v1/payments/{cancelled_id}/cancel"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200);
    let cancelled = event_of(&t, cancelled_id, "payment.cancelled").await;
    let detail = wait_deliveries(&t, cancelled["id"].as_str().unwrap(), "delivered").await;
    assert_eq!(detail["deliveries"].as_array().unwrap().len(), 2);
    let paid_id = paid_payment(&t).await;
    let paid = event_of(&t, &paid_id, "payment.succeeded").await;
    let detail = wait_deliveries(&t, paid["id"].as_str().unwrap(), "delivered").await;
    assert_eq!(detail["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(detail["deliveries"][0]["endpoint_id"], b["id"]);
    assert_eq!(cancelled_only.total(), 1);
    assert_eq!(everything.total(), 2);

    // Listing never shows a secret; a deleted endpoint is gone and gets nothing more.
    let (_, list) = t
        .call(reqwest::Method::GET, "/v1/webhook_endpoints", None, &[])
        .await;
    let listed = list["data"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|e| e.get("secret").is_none()));
    let a_id = a["id"].as_str().unwrap();
    let (status, _) = t
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/webhook_endpoints/{a_id}"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = t
        .call(
            reqwest::Method::GET,
            &format!("/v1/webhook_endpoints/{a_id}"),
            None,
            &[],
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("resource_missing"))
    );
    let (_, p) = t.create(native(&order("whd"), 300)).await;
    let id = p["id"].as_str().unwrap();
    t.cancel(id).await;
    let e = event_of(&t, id, "payment.cancelled").await;
    let detail = wait_deliveries(&t, e["id"].as_str().unwrap(), "delivered").await;
    assert_eq!(detail["deliveries"][0]["endpoint_id"], b["id"]);
    assert_eq!(cancelled_only.total(), 1);
}

/// One endpoint never answers; another, of the same merchant, gets every event at once: the
/// silent one holds no more than its own lane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_endpoint_does_not_stall_the_others() {
    for db in testing::all().await {
        eprintln!(
            "a_silent_endpoint_does_not_stall_the_others on {:?}",
            db.backend
        );
        let t = TestGateway::spawn_with(&db, |c| {
            c.webhook_per_endpoint = 2;
            c.webhook_concurrency = 4;
        })
        .await;
        let held = Arc::new(Mutex::new(0usize));
        let counter = held.clone();
        let silent = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let counter = counter.clone();
                async move {
                    *counter.lock().unwrap() += 1;
                    std::future::pending::<StatusCode>().await
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, silent).await });
        add_endpoint(&t, json!({"url": silent_url})).await;
        let fine = Receiver::start(0).await;
        add_endpoint(&t, json!({"url": fine.url})).await;

        const N: usize = 8;
        for i in 0..N {
            let (_, p) = t.create(native(&order(&format!("slow{i}")), 100)).await;
            let id = p["id"].as_str().unwrap();
            let (status, _) = t.cancel(id).await;
            assert_eq!(status, 200);
        }
        for _ in 0..20_000 {
            if fine.total() >= N {
                break;
            }
            // A round trip lets the gateway's tasks run.
            let _ = t.call(reqwest::Method::GET, "/health", None, &[]).await;
        }
        assert_eq!(fine.total(), N, "the answering endpoint got every event");
        let in_flight = *held.lock().unwrap();
        assert!(
            (1..=2).contains(&in_flight),
            "the silent endpoint has {in_flight} requests open, above its lane of 2"
        );
        db.cleanup().await;
    }
}

async fn a_payments_own_notify_url_gets_its_events_signed_with_the_notify_secret(t: TestGateway) {
    let receiver = Receiver::start(0).await;
    let with_notify = |order_id: &str| {
        let mut body = native(order_id, 500);
        body["notify_url"] = json!(receiver.url);
        body
    };
    // A notify_url needs the merchant's notify secret first; a bad one is refused.
    let (status, e) = t.create(with_notify(&order("nn"))).await;
    assert_eq!(
        (
            status,
            e["error"]["code"].as_str(),
            e["error"]["param"].as_str()
        ),
        (409, Some("notify_secret_missing"), Some("notify_url"))
    );
    let mut bad = native(&order("nb"), 500);
    bad["notify_url"] = json!("ftp://shop.example/notify");
    let (status, e) = t.create(bad).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("invalid_notify_url"))
    );
    let (status, secret) = t
        .call(reqwest::Method::POST, "/v1/notify_secret", None, &[])
        .await;
    assert_eq!(status, 201, "{secret}");
    assert!(secret["secret"].as_str().unwrap().starts_with("whsec_"));

    // The payment's events go to its notify_url, and so do its refunds'.
    let (status, p) = t.create(with_notify(&order("ny"))).await;
    assert_eq!(status, 201, "{p}");
    assert_eq!(p["notify_url"], receiver.url.as_str());
    let id = p["id"].as_str().unwrap().to_string();
    t.pay(json!({"code_url": p["next_action"]["display_qr_code"]["data"]}))
        .await;
    t.wait_status(&id, "succeeded").await;
    let paid = event_of(&t, &id, "payment.succeeded").await;
    let detail = wait_deliveries(&t, paid["id"].as_str().unwrap(), "delivered").await;
    assert_eq!(detail["deliveries"][0]["endpoint_id"], "notify_url");
    assert_eq!(detail["deliveries"][0]["url"], receiver.url.as_str());
    let seen = receiver.seen(paid["id"].as_str().unwrap());
    assert_eq!(seen.len(), 1);
    verify(&seen[0], &secret).unwrap();

    // A new secret signs from now on, named by its own kid.
    let (_, rotated) = t
        .call(reqwest::Method::POST, "/v1/notify_secret", None, &[])
        .await;
    assert_ne!(rotated["secret_id"], secret["secret_id"]);
    let (status, r) = t
        .call(
            reqwest::Method::POST,
            &format!("/v1/payments/{id}/refunds"),
            Some(json!({"merchant_refund_id": "n1", "amount": 100}).to_string()),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let rid = r["id"].as_str().unwrap();
    let mut refunded = Value::Null;
    for _ in 0..5000 {
        let (_, list) = t
            .call(
                reqwest::Method::GET,
                &format!("/v1/events?object_id={rid}"),
                None,
                &[],
            )
            .await;
        if let Some(e) = list["data"].as_array().unwrap().first() {
            refunded = e.clone();
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(refunded["type"], "refund.succeeded", "{refunded}");
    wait_deliveries(&t, refunded["id"].as_str().unwrap(), "delivered").await;
    let seen = receiver.seen(refunded["id"].as_str().unwrap());
    assert_eq!(seen.len(), 1);
    verify(&seen[0], &rotated).unwrap();
    assert_eq!(
        verify(&seen[0], &secret),
        Err(webhook::SignatureError::UnknownSecret(
            rotated["secret_id"].as_str().unwrap().to_string()
        ))
    );

    // A payout's own notify_url gets the payout's events too.
    let scene = json!({"id": "1005", "report_infos": [{"info_type": "岗位类型", "info_content": "骑手"}, {"info_type": "报酬说明", "info_content": "配送费"}]});
    let (status, po) = t
        .call(
            reqwest::Method::POST,
            "/v1/payouts",
            Some(json!({"amount": 300, "currency": "CNY", "openid": "o-rider-000000000000000000001", "remark": "配送费", "scene": scene, "notify_url": receiver.url}).to_string()),
            &[],
        )
        .await;
    assert_eq!(
        (status, po["status"].as_str()),
        (201, Some("awaiting_confirmation")),
        "{po}"
    );
    let waiting = event_of(
        &t,
        po["id"].as_str().unwrap(),
        "payout.awaiting_confirmation",
    )
    .await;
    let detail = wait_deliveries(&t, waiting["id"].as_str().unwrap(), "delivered").await;
    assert_eq!(detail["deliveries"][0]["endpoint_id"], "notify_url");
    let seen = receiver.seen(waiting["id"].as_str().unwrap());
    assert_eq!(seen.len(), 1);
    verify(&seen[0], &rotated).unwrap();
}

/// A receiver that holds every request until `gate` lets it answer 204; `arrived` counts them.
async fn held_receiver(gate: Arc<tokio::sync::Semaphore>, arrived: Arc<Mutex<usize>>) -> String {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let (gate, arrived) = (gate.clone(), arrived.clone());
            async move {
                *arrived.lock().unwrap() += 1;
                gate.acquire().await.unwrap().forget();
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// The deliveries of `events` that are claimed right now.
async fn claimed(t: &TestGateway, events: &[String]) -> usize {
    let mut n = 0;
    for e in events {
        let deliveries = t.store.deliveries(e).await.unwrap();
        n += deliveries
            .iter()
            .filter(|d| d.claimed_until.is_some())
            .count();
    }
    n
}

/// A node told to stop answers what it has in flight, finishes the webhook attempt it has
/// started (and records it), and gives the deliveries queued behind it back at once, so
/// another node takes them without waiting out their leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_finishes_its_attempts_and_gives_back_queued_deliveries() {
    for db in testing::all().await {
        eprintln!("a_stopping_node_finishes_its_attempts… on {:?}", db.backend);
        let t = TestGateway::spawn_with(&db, |c| {
            c.webhook_per_endpoint = 1;
            c.webhook_concurrency = 4;
        })
        .await;
        let (gate, arrived) = (Arc::new(tokio::sync::Semaphore::new(0)), Arc::default());
        let url = held_receiver(gate.clone(), Arc::clone(&arrived)).await;
        let (status, _) = t
            .call(reqwest::Method::POST, "/v1/notify_secret", None, &[])
            .await;
        assert_eq!(status, 201);
        // Three payments whose events go to their own notify_url: that lane is fed by the
        // node's general claims, so with one attempt held a second delivery waits in it.
        let mut events = Vec::new();
        for _ in 0..3 {
            let mut body = native(&order("stop"), 100);
            body["notify_url"] = json!(url);
            let (status, p) = t.create(body).await;
            assert_eq!(status, 201, "{p}");
            let id = p["id"].as_str().unwrap();
            let path = format!("/v1/payments/{id}/cancel");
            assert_eq!(t.call(reqwest::Method::POST, &path, None, &[]).await.0, 200);
            events.push(
                event_of(&t, id, "payment.cancelled").await["id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        while *arrived.lock().unwrap() == 0 || claimed(&t, &events).await < 2 {
            tokio::task::yield_now().await;
        }

        let stopping = async {
            // The queued delivery goes back while the attempt in flight is still held.
            while claimed(&t, &events).await > 1 {
                tokio::task::yield_now().await;
            }
            gate.add_permits(1);
        };
        let (stopped, ()) = tokio::join!(t.stop(), stopping);
        assert!(stopped, "the application stopped cleanly");

        assert_eq!(
            *arrived.lock().unwrap(),
            1,
            "nothing new started while stopping"
        );
        let now = t.gateway.now_ms();
        let (mut statuses, mut due_now) = (Vec::new(), 0);
        for e in &events {
            for d in t.store.deliveries(e).await.unwrap() {
                assert_eq!(d.claimed_until, None, "no claim is left to lapse: {d:?}");
                if d.status == "pending" {
                    assert_eq!(d.attempts, 0, "{d:?}");
                    due_now += usize::from(d.next_attempt_at.unwrap() <= now);
                }
                statuses.push(d.status);
            }
        }
        assert!(due_now >= 1, "the queued delivery is due again at once");
        statuses.sort();
        assert_eq!(statuses, ["delivered", "pending", "pending"]);
        db.cleanup().await;
    }
}

/// Twenty endpoints created at once: exactly the limit (16) go in, the rest are refused.
async fn concurrent_creates_never_pass_the_endpoint_limit(t: TestGateway) {
    let body = json!({"url": "https://shop.example/hooks", "events": ["*"]}).to_string();
    let creates = (0..20).map(|_| {
        t.call(
            reqwest::Method::POST,
            "/v1/webhook_endpoints",
            Some(body.clone()),
            &[],
        )
    });
    let answers = futures_util::future::join_all(creates).await;
    let made = answers.iter().filter(|(s, _)| *s == 201).count();
    let refused = answers
        .iter()
        .filter(|(s, e)| *s == 409 && e["error"]["code"] == "too_many_webhook_endpoints")
        .count();
    assert_eq!((made, refused), (16, 4), "{answers:?}");
    let (_, list) = t
        .call(
            reqwest::Method::GET,
            "/v1/webhook_endpoints?limit=100",
            None,
            &[],
        )
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 16, "{list}");
}

/// An endpoint on a private address, registered while such targets were allowed, gets nothing
/// once the operator stops allowing them: each attempt is refused before it is sent, recorded,
/// and the delivery ends dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_endpoint_is_not_called_once_private_targets_are_refused() {
    for db in testing::all().await {
        let t = TestGateway::spawn_with(&db, |c| c.webhooks_allow_private = false).await;
        let sealed = t.gateway.config().master_key.seal(b"whsec_private");
        never_sent(&t, sealed, "not sent: ").await;
        db.cleanup().await;
    }
}

/// An endpoint whose signing secret does not open (sealed under another master key) cannot be
/// signed for: each attempt is recorded as not sent, saying why, and the delivery ends dead
/// rather than being retried unseen for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_whose_secret_does_not_open_is_recorded_and_ends_dead() {
    for db in testing::all().await {
        let t = TestGateway::spawn(&db).await;
        let other = wxgate_gateway::secrets::MasterKey::generate();
        let sealed = other.seal(b"whsec_elsewhere");
        never_sent(&t, sealed, "not sent: cannot open a webhook secret").await;
        db.cleanup().await;
    }
}

/// Registers an endpoint on a live receiver with `sealed` as its secret, pays, and requires the
/// payment's event to end dead there, every attempt recorded with an error starting `why`, and
/// nothing received.
async fn never_sent(t: &TestGateway, sealed: String, why: &str) {
    let receiver = Receiver::start(0).await;
    let endpoint = wxgate_store::WebhookEndpointRow {
        id: "we_never".into(),
        merchant_id: t.merchant_id.clone(),
        url: receiver.url.clone(),
        events: "*".into(),
        secret_id: "whs_never".into(),
        secret_sealed: sealed,
        created_at: wxgate_gateway::now_ms(),
        deleted_at: None,
    };
    assert!(
        t.store
            .insert_webhook_endpoint(&endpoint, 16)
            .await
            .unwrap()
    );
    let id = paid_payment(t).await;
    let event = event_of(t, &id, "payment.succeeded").await;
    let dead = wait_deliveries(t, event["id"].as_str().unwrap(), "dead").await;
    let log = dead["deliveries"][0]["attempt_log"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!log.is_empty(), "{dead}");
    for a in &log {
        assert!(a["error"].as_str().unwrap().starts_with(why), "{a}");
    }
    assert!(receiver.seen(event["id"].as_str().unwrap()).is_empty());
}
