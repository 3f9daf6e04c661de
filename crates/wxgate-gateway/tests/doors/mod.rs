//! Front doors end to end: each system's documented example requests, replayed against the
//! real gateway and paid through the real simulator; every documented answer field, status,
//! notification and refusal checked.

use std::sync::{Arc, Mutex};

use aws_lc_rs::hmac;
use axum::http::HeaderMap;
use serde_json::{Value, json};
use wxgate_domain::door::Door;
use wxgate_gateway::app::doors;

use crate::common::{TestGateway, order};

/// A notify_url on loopback that keeps what it receives: (headers, body).
#[derive(Clone, Default)]
struct Inbox(Arc<Mutex<Vec<(HeaderMap, String)>>>);

impl Inbox {
    async fn start() -> (Self, String) {
        let inbox = Inbox::default();
        let kept = inbox.clone();
        let app = axum::Router::new().route(
            "/notify",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let kept = kept.clone();
                async move {
                    kept.0.lock().unwrap().push((headers, body));
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/notify", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (inbox, url)
    }

    fn received(&self) -> Vec<(HeaderMap, String)> {
        self.0.lock().unwrap().clone()
    }
}

async fn post(t: &TestGateway, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = t.http.post(format!("{}{path}", t.base)).json(&body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// The envelope of a refusal: its non-zero code, no data, a request id.
fn refused(v: &Value) -> i64 {
    assert!(v["data"].is_null(), "{v}");
    assert_eq!(v["rid"].as_str().unwrap().len(), 32, "{v}");
    v["code"].as_i64().unwrap()
}

/// Pays a hosted payment the way a desktop shopper does: the checkout page's QR code, scanned.
async fn pay_hosted(t: &TestGateway, url: &str) {
    let page = t.http.get(url).send().await.unwrap().text().await.unwrap();
    let code_url = page
        .split("data-code-url=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no QR code on the page: {page}"))
        .replace("&amp;", "&");
    t.pay(json!({"code_url": code_url})).await;
}

/// Pays through a payment link (`/pay/{token}`) the way a shopper does: its Pay button, then
/// the checkout it opens.
async fn pay_link(t: &TestGateway, url: &str) {
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "{url}");
    let checkout = res.headers()["location"].to_str().unwrap();
    assert!(checkout.starts_with(&t.base), "{checkout}");
    pay_hosted(t, checkout).await;
}

/// Steps 0–3 of the payment-intents document (system 001) with its own example requests.
pub async fn payment_intents_as_documented(t: TestGateway) {
    assert!(
        t.store
            .set_merchant_region(&t.merchant_id, "HKD", Some("5411"))
            .await
            .unwrap()
    );
    let master = &t.gateway.config().master_key;
    let (uid, secret) =
        doors::create_credential(&t.store, master, &t.merchant_id, Door::PaymentIntents, 0)
            .await
            .unwrap();

    // Step 0: the access token, from client credentials.
    let auth = |s: &str| {
        format!(
            "{}/mch-api/v1/auth?grant_type=client_credentials&uid={uid}&client_secret={s}",
            t.base
        )
    };
    let res = t.http.get(auth("wrong")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(refused(&res.json().await.unwrap()), 40101);
    let token: Value = t
        .http
        .get(auth(&secret))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(token["expires_in"], 3600, "{token}");
    let token = token["access_token"].as_str().unwrap().to_string();
    assert!(token.len() == 96 && token.bytes().all(|b| b.is_ascii_hexdigit()));

    // Step 1: the example request, verbatim but for the notify_url.
    let (inbox, notify_url) = Inbox::start().await;
    let example = json!({
        "amount": "1",
        "currency": "HKD",
        "merchant_order_id": "P9297895081903",
        "payment_method": {"type": "wechat", "wechat": {
            "flow": "official_account",
            "success_url": "https://redirect_to_your_success_url",
            "failed_url": "https://redirect_to_your_failed_url",
            "canceled_url": "https://redirect_to_your_canceled_url"}},
        "description": "Official Account Payment",
        "notify_url": notify_url,
    });
    let create = "/mch-api/v1/pa/payment_intents/create";
    let (status, answer) = post(&t, create, None, example.clone()).await;
    assert_eq!((status, refused(&answer)), (401, 40101));
    let (status, answer) = post(&t, create, Some(&token), example.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["code"].as_i64(), answer["message"].as_str()),
        (Some(0), Some("ok"))
    );
    assert_eq!(answer["rid"].as_str().unwrap().len(), 32);
    let data = &answer["data"];
    let order_id = data["order_id"].as_str().unwrap().to_string();
    assert!(
        order_id.starts_with("pay_") && order_id.len() <= 32,
        "{data}"
    );
    assert_eq!(data["merchant_order_id"], "P9297895081903");
    assert_eq!(
        (data["amount"].as_str(), data["currency"].as_str()),
        (Some("1"), Some("HKD"))
    );
    assert_eq!(data["status"], "PENDING");
    assert!(
        data["create_time"].as_str().unwrap().ends_with("+08:00"),
        "{data}"
    );
    let action = &data["next_action"];
    assert_eq!(
        (action["type"].as_str(), action["data"]["type"].as_str()),
        (Some("call_sdk"), Some("redirect"))
    );
    let redirect = action["data"]["url"].as_str().unwrap().to_string();
    assert!(
        redirect.starts_with(&format!("{}/checkout/", t.base)),
        "{action}"
    );
    // The same request again is the same intent; other parameters under its id are refused.
    let (_, again) = post(&t, create, Some(&token), example.clone()).await;
    assert_eq!(again["data"]["order_id"], order_id.as_str());
    let mut other = example.clone();
    other["amount"] = json!("2");
    let (status, taken) = post(&t, create, Some(&token), other).await;
    assert_eq!((status, refused(&taken)), (409, 40901), "{taken}");

    // Step 2: the shopper pays; the notification comes, signed.
    pay_hosted(&t, &redirect).await;
    let query = "/mch-api/v1/pa/payment_intents/query";
    let by_id = json!({"order_id": order_id});
    let paid = t
        .wait_for_post(query, &token, &by_id, |v| {
            v["data"]["status"] == "SUCCEEDED"
        })
        .await;
    let mut received = Vec::new();
    for _ in 0..5000 {
        received = inbox.received();
        if !received.is_empty() {
            break;
        }
        let _ = post(&t, query, Some(&token), by_id.clone()).await;
    }
    assert_eq!(received.len(), 1, "only payment_success is notified");
    let (headers, body) = &received[0];
    let notified: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        notified,
        json!({"notify_type": "payment_success", "data": {"order_id": order_id, "merchant_order_id": "P9297895081903"}})
    );
    let timestamp = headers["x-timestamp"].to_str().unwrap();
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let expected = hex::encode(hmac::sign(&key, format!("{timestamp}{body}").as_bytes()).as_ref());
    assert_eq!(headers["x-signature"].to_str().unwrap(), expected);

    // Step 3: the payment, by either id.
    let data = &paid["data"];
    assert_eq!(
        (data["status"].as_str(), data["amount"].as_str()),
        (Some("SUCCEEDED"), Some("1"))
    );
    assert!(
        data["pay_time"].as_str().unwrap().ends_with("+08:00"),
        "{data}"
    );
    assert!(data.get("next_action").is_none(), "{data}");
    let (_, by_order) = post(
        &t,
        query,
        Some(&token),
        json!({"merchant_order_id": "P9297895081903"}),
    )
    .await;
    assert_eq!(by_order["data"], *data);
    intents_refusals(&t, &token).await;
}

/// The refusals: each a non-zero code in the envelope, naming the field.
async fn intents_refusals(t: &TestGateway, token: &str) {
    let create = "/mch-api/v1/pa/payment_intents/create";
    let query = "/mch-api/v1/pa/payment_intents/query";
    let base = json!({"amount": "12.50", "currency": "HKD", "merchant_order_id": order("pi"),
        "description": "QR", "payment_method": {"type": "wechat", "wechat": {"flow": "qrcode"}}});
    let (status, qr) = post(t, create, Some(token), base.clone()).await;
    assert_eq!(status, 200, "{qr}");
    assert_eq!(qr["data"]["next_action"]["type"], "render_qrcode");
    assert!(
        qr["data"]["next_action"]["qrcode_url"]
            .as_str()
            .unwrap()
            .starts_with("weixin://")
    );
    assert_eq!(qr["data"]["amount"], "12.5");
    for (patch, field) in [
        (json!({"currency": "CNY"}), "currency"),
        (json!({"settlement_currency": "USD"}), "settlement_currency"),
        (json!({"amount": "1.234"}), "amount"),
        (json!({"amount": "-1"}), "amount"),
        (
            json!({"merchant_order_id": "x".repeat(33)}),
            "merchant_order_id",
        ),
        (
            json!({"payment_method": {"type": "card", "wechat": {"flow": "qrcode"}}}),
            "payment_method.type",
        ),
        (
            json!({"payment_method": {"type": "wechat", "wechat": {"flow": "carrier_pigeon"}}}),
            "payment_method.wechat.flow",
        ),
        (
            json!({"payment_method": {"type": "wechat", "wechat": {"flow": "mini_program"}}}),
            "payment_method.wechat.sub_openid",
        ),
    ] {
        let mut body = base.clone();
        body["merchant_order_id"] = json!(order("pr"));
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, e) = post(t, create, Some(token), body).await;
        assert_eq!((status, refused(&e)), (400, 40001), "{patch}: {e}");
        assert!(
            e["message"].as_str().unwrap().contains(field),
            "{patch}: {e}"
        );
    }
    let (status, e) = post(t, query, Some(token), json!({})).await;
    assert_eq!((status, refused(&e)), (400, 40001), "{e}");
    let (status, e) = post(
        t,
        query,
        Some(token),
        json!({"order_id": "C991289984923795789123"}),
    )
    .await;
    assert_eq!((status, refused(&e)), (404, 40401), "{e}");
}

async fn rpc(t: &TestGateway, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 7});
    let res = t
        .http
        .post(format!("{}/rpc/6.0/", t.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let answer: Value = res.json().await.unwrap();
    assert_eq!(
        (answer["jsonrpc"].as_str(), answer["id"].as_i64()),
        (Some("2.0"), Some(7)),
        "{answer}"
    );
    answer
}

/// The login hash as the system's documentation computes it: HMAC-MD5 of
/// `len(code) code len(date) date` with the secret key.
fn login_hash(secret: &str, code: &str, date: &str) -> String {
    use ::hmac::{Hmac, Mac};
    let mut mac = Hmac::<md5::Md5>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{}{code}{}{date}", code.len(), date.len()).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn wechat_order(t: &TestGateway, currency: &str) -> Value {
    json!({
        "Currency": currency, "Country": "cn", "Language": "en", "ExternalReference": "REST_API_AVANGATE",
        "Items": [{"Name": "Blue mug", "Description": "A mug", "Quantity": 2, "IsDynamic": true,
            "Tangible": false, "PurchaseType": "PRODUCT", "Price": {"Amount": 9.99, "Type": "CUSTOM"}}],
        "BillingDetails": {"FirstName": "Li", "LastName": "Lei", "Email": "li@example.com",
            "CountryCode": "CN", "City": "Shanghai", "Address1": "1 Road", "Zip": "200000"},
        "PaymentDetails": {"Type": "WE_CHAT_PAY", "Currency": currency, "CustomerIP": "10.0.0.1",
            "PaymentMethod": {"ReturnURL": format!("{}/health?paid=1", t.base),
                "CancelURL": format!("{}/health?cancelled=1", t.base)}},
    })
}

/// 2Checkout's WeChat Pay flow (system 000): login → sessionID, placeOrder → PENDING with the
/// redirect, the shopper pays on the hosted page, getOrder → COMPLETE; each refusal as that API
/// words it.
pub async fn two_checkout_orders_as_documented(t: TestGateway) {
    let master = &t.gateway.config().master_key;
    let (code, secret) =
        doors::create_credential(&t.store, master, &t.merchant_id, Door::TwoCheckout, 0)
            .await
            .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let date = now
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .unwrap();
    let failed = rpc(&t, "login", json!([code, date, "0".repeat(32)])).await;
    assert_eq!(failed["error"]["code"], "AUTHENTICATION_FAILED", "{failed}");
    let stale = "2010-05-13 12:12:12";
    let failed = rpc(
        &t,
        "login",
        json!([code, stale, login_hash(&secret, &code, stale)]),
    )
    .await;
    assert_eq!(failed["error"]["code"], "AUTHENTICATION_FAILED", "{failed}");
    let login = rpc(
        &t,
        "login",
        json!([code, date, login_hash(&secret, &code, &date)]),
    )
    .await;
    let session = login["result"]
        .as_str()
        .unwrap_or_else(|| panic!("{login}"))
        .to_string();

    let placed = rpc(&t, "placeOrder", json!([session, wechat_order(&t, "CNY")])).await;
    let order = &placed["result"];
    assert_eq!(order["Status"], "PENDING", "{placed}");
    assert_eq!(order["ApproveStatus"], "WAITING");
    assert_eq!(order["GrossPrice"], json!(19.98));
    assert_eq!(order["ExternalReference"], "REST_API_AVANGATE");
    assert_eq!(order["BillingDetails"]["CountryCode"], "CN");
    let reference = order["RefNo"].as_str().unwrap().to_string();
    let method = &order["PaymentDetails"]["PaymentMethod"];
    let href = method["Href"].as_str().unwrap();
    let token = method["avng8apitoken"].as_str().unwrap();
    assert_eq!(
        href,
        format!("{}/4.0/scripts/we_chat_pay/authorize/", t.base)
    );
    assert_eq!(method["Authorize3DS"]["Params"]["avng8apitoken"], token);
    // Href and the token make the redirect to the hosted checkout.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut checkout = String::new();
    for url in [
        format!("{href}?avng8apitoken={token}"),
        format!("{href}{token}"),
    ] {
        let res = plain.get(&url).send().await.unwrap();
        assert!(res.status().is_redirection(), "{url}: {}", res.status());
        checkout = res.headers()["location"].to_str().unwrap().to_string();
        assert!(
            checkout.contains(&format!("/checkout/{token}")),
            "{checkout}"
        );
    }
    pay_hosted(&t, &checkout).await;
    let mut done = Value::Null;
    for _ in 0..5000 {
        done = rpc(&t, "getOrder", json!([session, reference])).await;
        if done["result"]["Status"] == "COMPLETE" {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(done["result"]["Status"], "COMPLETE", "{done}");
    assert_eq!(done["result"]["ApproveStatus"], "OK");
    assert!(done["result"]["FinishDate"].is_string(), "{done}");
    two_checkout_refusals(&t, &session).await;
}

async fn two_checkout_refusals(t: &TestGateway, session: &str) {
    let order = wechat_order(t, "CNY");
    let mut cases: Vec<(Value, &str)> = Vec::new();
    let mut with = |pointer: &str, value: Value, code: &'static str| {
        let mut o = order.clone();
        *o.pointer_mut(pointer).unwrap() = value;
        cases.push((o, code));
    };
    with(
        "/PaymentDetails/Currency",
        json!("EUR"),
        "ORDER_PAYMENT_CURRENCY_INVALID",
    );
    with(
        "/PaymentDetails/Currency",
        json!("USD"),
        "ORDER_PAYMENT_CURRENCY_INVALID",
    );
    with(
        "/BillingDetails/CountryCode",
        json!("US"),
        "ORDER_BILLING_COUNTRY_INVALID",
    );
    with(
        "/PaymentDetails/PaymentMethod/ReturnURL",
        json!(""),
        "ORDER_PAYMENT_RETURN_URL_EMPTY",
    );
    with(
        "/PaymentDetails/PaymentMethod/CancelURL",
        Value::Null,
        "ORDER_PAYMENT_CANCEL_URL_EMPTY",
    );
    with(
        "/PaymentDetails/Type",
        json!("CC"),
        "ORDER_PAYMENT_TYPE_INVALID",
    );
    with("/Items", json!([]), "ORDER_PRODUCTS_EMPTY");
    with(
        "/Items",
        json!([{"Code": "MUG01", "Quantity": 1}]),
        "ORDER_PRODUCT_CODE_INVALID",
    );
    with(
        "/Items/0/Quantity",
        json!(0),
        "ORDER_ITEMS_QUANTITY_INVALID",
    );
    with("/Items/0/Name", json!(""), "ORDER_PRODUCT_NAME_INVALID");
    for (o, code) in cases {
        let refused = rpc(t, "placeOrder", json!([session, o])).await;
        assert_eq!(refused["error"]["code"], code, "{refused}");
        assert!(refused.get("result").is_none(), "{refused}");
    }
    // A catalog product: a payment link's id is its code, its fixed amount the price.
    let (_, link) = t
        .call(
            reqwest::Method::POST,
            "/v1/payment_links",
            Some(json!({"amount": 500, "currency": "CNY", "description": "Tea"}).to_string()),
            &[],
        )
        .await;
    let mut catalog = order.clone();
    catalog["Items"] = json!([{"Code": link["id"], "Quantity": 3}]);
    let placed = rpc(t, "placeOrder", json!([session, catalog])).await;
    assert_eq!(placed["result"]["GrossPrice"], json!(15.0), "{placed}");
    // `IsDynamic: 0` is a catalog product: its price is the link's, not the caller's.
    catalog["Items"] = json!([{"Code": link["id"], "Quantity": 1, "IsDynamic": 0,
        "Price": {"Amount": 0.01}}]);
    let placed = rpc(t, "placeOrder", json!([session, catalog])).await;
    assert_eq!(placed["result"]["GrossPrice"], json!(5.0), "{placed}");
    // A link that no longer takes payments sells nothing.
    let off = format!(
        "/v1/payment_links/{}/deactivate",
        link["id"].as_str().unwrap()
    );
    let (status, _) = t.call(reqwest::Method::POST, &off, None, &[]).await;
    assert_eq!(status, 200);
    let refused = rpc(t, "placeOrder", json!([session, catalog])).await;
    assert_eq!(
        refused["error"]["code"], "ORDER_PRODUCT_CODE_INVALID",
        "{refused}"
    );
    let expired = rpc(t, "placeOrder", json!(["0123456789abcdef", order])).await;
    assert_eq!(
        expired["error"]["code"], "AUTHENTICATION_ERROR",
        "{expired}"
    );
    let unknown = rpc(t, "getOrder", json!([session, "999999999999"])).await;
    assert_eq!(unknown["error"]["code"], "INVALID_REFERENCE", "{unknown}");
    // A control character never reaches a lookup (PostgreSQL cannot hold NUL).
    let nul = rpc(t, "getOrder", json!([session, "9999\u{0}9999"])).await;
    assert_eq!(nul["error"]["code"], -32602, "{nul}");
    let method = rpc(t, "deleteEverything", json!([])).await;
    assert_eq!(method["error"]["code"], -32601, "{method}");
}

/// A v1HMAC-signed request to the Connect door, as its SDKs sign it.
async fn connect_call(
    t: &TestGateway,
    (key_id, secret): (&str, &str),
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    use base64::Engine;
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let content_type = if body.is_some() {
        "application/json"
    } else {
        ""
    };
    let meta = "eyJzZGtDcmVhdG9yIjoidGVzdCJ9";
    let signed = format!("{method}\n{content_type}\n{date}\nx-gcs-servermetainfo:{meta}\n{path}\n");
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let signature =
        base64::engine::general_purpose::STANDARD.encode(hmac::sign(&key, signed.as_bytes()));
    let mut req = t
        .http
        .request(method, format!("{}{path}", t.connect))
        .header("Date", date)
        .header("X-GCS-ServerMetaInfo", meta)
        .header("Authorization", format!("GCS v1HMAC:{key_id}:{signature}"));
    if let Some(b) = body {
        req = req.header("Content-Type", content_type).body(b.to_string());
    }
    let res = req.send().await.unwrap();
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

fn connect_payment(integration: &str, reference: &str) -> Value {
    json!({
        "order": {"amountOfMoney": {"amount": 2345, "currencyCode": "CNY"},
            "customer": {"billingAddress": {"countryCode": "CN"}, "locale": "zh_CN"},
            "references": {"merchantReference": reference}},
        "fraudFields": {"customerIpAddress": "203.0.113.7"},
        "redirectPaymentMethodSpecificInput": {"paymentProductId": 863,
            "paymentProduct863SpecificInput": {"integrationType": integration, "openId": "o-connect-payer-0000000000001"},
            "returnUrl": "https://merchant.example/return"},
    })
}

/// Worldline Connect's WeChat Pay (system 002): each integration type's documented show data,
/// REDIRECTED → CAPTURED with the third-party status WAITING → COMPLETED, hosted checkouts, and
/// its refusals in its envelope.
pub async fn connect_integration_types_as_documented(t: TestGateway) {
    let master = &t.gateway.config().master_key;
    let (key_id, secret) =
        doors::create_credential(&t.store, master, &t.merchant_id, Door::Connect, 0)
            .await
            .unwrap();
    let auth = (key_id.as_str(), secret.as_str());
    let payments = format!("/v1/{}/payments", t.merchant_id);
    let expected: [(&str, &[&str]); 5] = [
        ("desktopQRCode", &["QRCODE", "WECHAT_PAYMENTID"]),
        ("urlIntent", &["URLINTENT", "WECHAT_PAYMENTID"]),
        (
            "nativeInApp",
            &["WECHAT_SIGNATURE", "SIGNATURE_NONCE", "WECHAT_PAYMENTID"],
        ),
        (
            "javaScriptAPI",
            &[
                "appId",
                "nonceStr",
                "packageSign",
                "paySign",
                "prepayId",
                "timeStamp",
            ],
        ),
        (
            "miniProgram",
            &[
                "appId",
                "nonceStr",
                "packageSign",
                "paySign",
                "prepayId",
                "timeStamp",
            ],
        ),
    ];
    let mut qr_payment = String::new();
    for (integration, keys) in expected {
        let (status, created) = connect_call(
            &t,
            auth,
            reqwest::Method::POST,
            &payments,
            Some(connect_payment(integration, &order("cn"))),
        )
        .await;
        assert_eq!(status, 201, "{integration}: {created}");
        let action = &created["merchantAction"];
        assert_eq!(action["actionType"], "SHOW_FORM", "{created}");
        let shown: Vec<&str> = action["showData"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["key"].as_str().unwrap())
            .collect();
        assert_eq!(shown, keys, "{integration}");
        assert_eq!(created["payment"]["status"], "REDIRECTED");
        assert_eq!(
            created["payment"]["statusOutput"]["statusCategory"],
            "PENDING_PAYMENT"
        );
        if integration == "desktopQRCode" {
            use base64::Engine;
            let png = base64::engine::general_purpose::STANDARD
                .decode(action["showData"][0]["value"].as_str().unwrap())
                .unwrap();
            assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
            qr_payment = created["payment"]["id"].as_str().unwrap().to_string();
        }
    }
    // The QR payment, paid: the third-party status moves to COMPLETED, the payment to CAPTURED.
    let status_path = format!("{payments}/{qr_payment}/thirdpartystatus");
    let (_, waiting) = connect_call(&t, auth, reqwest::Method::GET, &status_path, None).await;
    assert_eq!(waiting["thirdPartyStatus"], "WAITING");
    let p = t.get(&qr_payment).await;
    t.pay(json!({"code_url": p["next_action"]["display_qr_code"]["data"]}))
        .await;
    t.wait_status(&qr_payment, "succeeded").await;
    let (_, done) = connect_call(&t, auth, reqwest::Method::GET, &status_path, None).await;
    assert_eq!(done["thirdPartyStatus"], "COMPLETED");
    let (_, got) = connect_call(
        &t,
        auth,
        reqwest::Method::GET,
        &format!("{payments}/{qr_payment}"),
        None,
    )
    .await;
    assert_eq!(
        (
            got["status"].as_str(),
            got["statusOutput"]["statusCode"].as_i64()
        ),
        (Some("CAPTURED"), Some(800)),
        "{got}"
    );
    assert_eq!(
        got["paymentOutput"]["amountOfMoney"],
        json!({"amount": 2345, "currencyCode": "CNY"})
    );
    connect_hosted_and_refusals(&t, auth).await;
}

async fn connect_hosted_and_refusals(t: &TestGateway, auth: (&str, &str)) {
    let hosted = format!("/v1/{}/hostedcheckouts", t.merchant_id);
    let body = json!({"order": {"amountOfMoney": {"amount": 990, "currencyCode": "CNY"}},
        "hostedCheckoutSpecificInput": {"returnUrl": format!("{}/health", t.base), "locale": "en_GB"}});
    let (status, created) = connect_call(t, auth, reqwest::Method::POST, &hosted, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["hostedCheckoutId"].as_str().unwrap();
    let partial = created["partialRedirectUrl"].as_str().unwrap();
    assert!(
        !partial.contains("://") && partial.contains("/checkout/"),
        "{created}"
    );
    assert_eq!(created["RETURNMAC"].as_str().unwrap().len(), 32);
    let (_, state) = connect_call(
        t,
        auth,
        reqwest::Method::GET,
        &format!("{hosted}/{id}"),
        None,
    )
    .await;
    assert_eq!(state["status"], "IN_PROGRESS", "{state}");
    pay_hosted(t, &format!("http://{partial}")).await;
    let mut state = Value::Null;
    for _ in 0..5000 {
        state = connect_call(
            t,
            auth,
            reqwest::Method::GET,
            &format!("{hosted}/{id}"),
            None,
        )
        .await
        .1;
        if state["status"] == "PAYMENT_CREATED" {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        state["createdPaymentOutput"]["paymentStatusCategory"], "SUCCESSFUL",
        "{state}"
    );

    let payments = format!("/v1/{}/payments", t.merchant_id);
    let mut no_ip = connect_payment("desktopQRCode", &order("ni"));
    no_ip["fraudFields"] = json!({});
    let (status, e) = connect_call(t, auth, reqwest::Method::POST, &payments, Some(no_ip)).await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["errors"][0]["id"], "PARAMETER_NOT_FOUND_IN_REQUEST");
    assert_eq!(
        e["errors"][0]["propertyName"],
        "fraudFields.customerIpAddress"
    );
    let mut no_type = connect_payment("desktopQRCode", &order("nt"));
    no_type["redirectPaymentMethodSpecificInput"]["paymentProduct863SpecificInput"] = json!({});
    let (status, e) = connect_call(t, auth, reqwest::Method::POST, &payments, Some(no_type)).await;
    assert_eq!(
        (status, e["errors"][0]["propertyName"].as_str()),
        (
            400,
            Some(
                "redirectPaymentMethodSpecificInput.paymentProduct863SpecificInput.integrationType"
            )
        ),
        "{e}"
    );
    let (status, e) = connect_call(
        t,
        (auth.0, "wrong-secret"),
        reqwest::Method::GET,
        &format!("{payments}/pay_x"),
        None,
    )
    .await;
    assert_eq!(
        (status, e["errors"][0]["code"].as_str()),
        (401, Some("9002")),
        "{e}"
    );
    let (status, e) = connect_call(
        t,
        auth,
        reqwest::Method::GET,
        "/v1/mch_someoneelse/payments/pay_x",
        None,
    )
    .await;
    assert_eq!(status, 403, "{e}");
    let (status, e) = connect_call(
        t,
        auth,
        reqwest::Method::GET,
        &format!("{payments}/pay_000000000000000000000000"),
        None,
    )
    .await;
    assert_eq!(status, 404, "{e}");
    assert!(e["errorId"].is_string());
    // A control character in an id is refused in the system's envelope, naming the id,
    // before the database sees it.
    let hosted_nul = format!("/v1/{}/hostedcheckouts/%00", t.merchant_id);
    let (status, e) = connect_call(t, auth, reqwest::Method::GET, &hosted_nul, None).await;
    assert_eq!(
        (status, e["errors"][0]["propertyName"].as_str()),
        (400, Some("id")),
        "{e}"
    );
    // A body past the gateway's limit is refused before it is read whole.
    let big = json!({"order": {"references": {"descriptor": "x".repeat(100_000)}}});
    let (status, _) = connect_call(t, auth, reqwest::Method::POST, &payments, Some(big)).await;
    assert_eq!(status, 413);
}

/// A call of the open API door: `param` signed SHA256withRSA with the merchant's key.
async fn open_api(
    t: &TestGateway,
    path: &str,
    (app_id, key): (&str, &wechatpay_v3::crypto::PrivateKey),
    param: Value,
) -> Value {
    let param = param.to_string();
    let body = json!({"appId": app_id, "param": param, "sign": key.sign(param.as_bytes())});
    let res = t
        .http
        .post(format!("{}{path}", t.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The multi-country PSP's open API (system 003): signed requests, a WeChat payment by its
/// channel, the status check, the signed unified notification, a refund and the balance.
pub async fn open_api_as_documented(t: TestGateway) {
    let master = &t.gateway.config().master_key;
    let (app_id, given) =
        doors::create_credential(&t.store, master, &t.merchant_id, Door::OpenApi, 0)
            .await
            .unwrap();
    let given: Value = serde_json::from_str(&given).unwrap();
    let key = wechatpay_v3::crypto::PrivateKey::from_pkcs8_pem(
        given["merchant_private_key"].as_str().unwrap(),
    )
    .unwrap();
    let platform = {
        use base64::Engine;
        let der = base64::engine::general_purpose::STANDARD
            .decode(given["platform_public_key"].as_str().unwrap())
            .unwrap();
        wechatpay_v3::crypto::PublicKey::from_spki_der(&der).unwrap()
    };
    let me = (app_id.as_str(), &key);
    let (inbox, notify_url) = Inbox::start().await;
    let order_id = order("oa");
    let created = open_api(
        &t,
        "/open-api/payment/generate",
        me,
        json!({"timestamp": now_ms(),
        "mchOrderId": order_id, "amount": 1500, "countryCode": "PH", "currency": "CNY",
        "channelType": "QR", "channelCode": "WECHAT_QR", "notifyUrl": notify_url, "remark": "Tea"}),
    )
    .await;
    assert_eq!(created["code"], 10000, "{created}");
    let data = &created["data"];
    assert_eq!(
        (data["channelType"].as_str(), data["mchOrderId"].as_str()),
        (Some("QR"), Some(order_id.as_str()))
    );
    let code_url = data["payData"].as_str().unwrap();
    assert!(code_url.starts_with("weixin://"), "{data}");
    let transaction = data["transactionId"].as_str().unwrap().to_string();
    let pending = open_api(
        &t,
        "/open-api/payment/query",
        me,
        json!({"timestamp": now_ms(), "mchOrderId": order_id}),
    )
    .await;
    assert_eq!(pending["data"]["transactionStatus"], "PENDING", "{pending}");
    t.pay(json!({"code_url": code_url})).await;
    t.wait_status(&transaction, "succeeded").await;
    let mut received = Vec::new();
    for _ in 0..5000 {
        received = inbox.received();
        if !received.is_empty() {
            break;
        }
        let _ = t.get(&transaction).await;
    }
    let note: Value = serde_json::from_str(&received[0].1).unwrap();
    platform
        .verify(
            note["param"].as_str().unwrap().as_bytes(),
            note["sign"].as_str().unwrap(),
        )
        .unwrap();
    let param: Value = serde_json::from_str(note["param"].as_str().unwrap()).unwrap();
    assert_eq!(
        (
            param["eventName"].as_str(),
            param["transactionStatus"].as_str()
        ),
        (Some("payment.success"), Some("COMPLETE"))
    );
    assert_eq!(
        (
            param["mchOrderId"].as_str(),
            param["amount"].as_i64(),
            param["channelCode"].as_str()
        ),
        (Some(order_id.as_str()), Some(1500), Some("WECHAT_QR"))
    );
    let done = open_api(
        &t,
        "/open-api/philippines/payment/query",
        me,
        json!({"timestamp": now_ms(), "transactionId": transaction}),
    )
    .await;
    assert_eq!(done["data"]["transactionStatus"], "COMPLETE", "{done}");
    assert!(done["data"]["returnTime"].is_string());
    open_api_more(&t, me, &transaction, (&inbox, &notify_url, &platform)).await;
}

async fn open_api_more(
    t: &TestGateway,
    me: (&str, &wechatpay_v3::crypto::PrivateKey),
    transaction: &str,
    (inbox, notify_url, platform): (&Inbox, &str, &wechatpay_v3::crypto::PublicKey),
) {
    // The JS API channel answers what wx.requestPayment takes.
    let js = open_api(
        t,
        "/open-api/payment/generate",
        me,
        json!({"timestamp": now_ms(),
        "mchOrderId": order("oj"), "amount": 100, "currency": "CNY", "channelCode": "WECHAT_JS_URL",
        "wpOpenid": "o-open-api-payer-00000000001", "notifyUrl": notify_url}),
    )
    .await;
    let w = &js["data"]["metadata"]["wechatpay"];
    assert!(w["pkg"].as_str().unwrap().starts_with("prepay_id="), "{js}");
    assert_eq!(w["signType"], "RSA");
    assert!(w["paySign"].is_string() && w["timeStamp"].is_string() && w["nonceStr"].is_string());
    // A refund of it, and its status.
    let refund = open_api(
        t,
        "/open-api/payment/refund",
        me,
        json!({"timestamp": now_ms(),
        "mchRefundOrderId": "refund0001", "originalTransactionId": transaction, "refundAmount": 500,
        "refundReason": "testRefund", "refundCallbackUrl": notify_url}),
    )
    .await;
    assert_eq!(refund["code"], 10000, "{refund}");
    assert_eq!(refund["data"]["refundAmount"], 500);
    let mut status = Value::Null;
    for _ in 0..5000 {
        status = open_api(
            t,
            "/open-api/payment/refund/query",
            me,
            json!({"timestamp": now_ms(), "mchRefundOrderId": "refund0001"}),
        )
        .await;
        if status["data"]["refundStatus"] == "COMPLETE" {
            break;
        }
    }
    assert_eq!(status["data"]["refundStatus"], "COMPLETE", "{status}");
    let listed = open_api(
        t,
        "/open-api/payment/refund/list",
        me,
        json!({"timestamp": now_ms(), "originalTransactionId": transaction}),
    )
    .await;
    assert_eq!(
        listed["data"][0]["mchRefundOrderId"], "refund0001",
        "{listed}"
    );
    let too_much = open_api(t, "/open-api/payment/refund", me, json!({"timestamp": now_ms(),
        "mchRefundOrderId": "refund0002", "originalTransactionId": transaction, "refundAmount": 5000})).await;
    assert_eq!(too_much["code"], 1506, "{too_much}");
    let balance = open_api(
        t,
        "/open-api/account/balance",
        me,
        json!({"timestamp": now_ms(), "currency": "CNY"}),
    )
    .await;
    assert_eq!(balance["data"][0]["currency"], "CNY", "{balance}");
    assert_eq!(
        balance["data"][0]["pendingSettleBalance"], 1500,
        "{balance}"
    );
    open_api_codes(t, me).await;
    open_api_report(t, me).await;
    let refunded = open_api_event(t, inbox, platform, "payment.refund.success").await;
    assert_eq!(
        (
            refunded["mchRefundOrderId"].as_str(),
            refunded["refundAmount"].as_i64()
        ),
        (Some("refund0001"), Some(500))
    );
    open_api_disbursement(t, me, notify_url).await;
    let paid_out = open_api_event(t, inbox, platform, "disbursement.success").await;
    assert_eq!(paid_out["mchOrderId"], "payout0001");
    // Refusals, each with its common code.
    let param = json!({"timestamp": now_ms(), "mchOrderId": "nothing"});
    let wrong_sign =
        json!({"appId": me.0, "param": param.to_string(), "sign": me.1.sign(b"something else")});
    let res: Value = t
        .http
        .post(format!("{}/open-api/payment/query", t.base))
        .json(&wrong_sign)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(res["code"], 21001, "{res}");
    let other = wechatpay_v3::crypto::PrivateKey::generate().unwrap();
    assert_eq!(
        open_api(
            t,
            "/open-api/payment/query",
            ("0000", &other),
            param.clone()
        )
        .await["code"],
        21003
    );
    assert_eq!(
        open_api(
            t,
            "/open-api/payment/query",
            me,
            json!({"timestamp": 1_600_000_000_000_i64, "mchOrderId": "x"})
        )
        .await["code"],
        21009
    );
    assert_eq!(
        open_api(t, "/open-api/payment/query", me, param).await["code"],
        21006
    );
    let nul = open_api(
        t,
        "/open-api/payment/query",
        me,
        json!({"timestamp": now_ms(), "mchOrderId": "a\u{0}b"}),
    )
    .await;
    assert_eq!(nul["code"], 21002, "{nul}");
    let said = nul["message"].as_str().unwrap();
    assert!(said.contains("mchOrderId"), "{nul}");
    let pigeon = open_api(
        t,
        "/open-api/payment/generate",
        me,
        json!({"timestamp": now_ms(), "mchOrderId": order("op"),
        "amount": 100, "currency": "CNY", "channelCode": "GCASH_URL", "notifyUrl": notify_url}),
    )
    .await;
    assert_eq!(pigeon["code"], 21005, "{pigeon}");
}

/// Static payment codes: a payment link by the merchant's order id; scanned and paid, listed,
/// cancelled.
async fn open_api_codes(t: &TestGateway, me: (&str, &wechatpay_v3::crypto::PrivateKey)) {
    let call = |path: &'static str, param: Value| open_api(t, path, me, param);
    let code = call("/open-api/qr/generate", json!({"timestamp": now_ms(), "mchOrderId": "code0001",
        "channelCode": "WECHAT_STATIC_QR", "amount": 800, "currency": "CNY", "remark": "Counter 3"})).await;
    assert_eq!(code["code"], 10000, "{code}");
    let data = &code["data"];
    assert_eq!(
        (data["status"].as_str(), data["mchOrderId"].as_str()),
        (Some("ACTIVE"), Some("code0001"))
    );
    let url = data["qrcodeContent"].as_str().unwrap().to_string();
    assert!(url.contains("/pay/"), "{data}");
    let again = call(
        "/open-api/qr/generate",
        json!({"timestamp": now_ms(), "mchOrderId": "code0001",
        "amount": 900, "currency": "CNY"}),
    )
    .await;
    assert_eq!(again["code"], 21007, "{again}");
    // An amount that is not a whole number of minor units is refused, never read as "any
    // amount"; so is an expiry in the past or beyond a year.
    for (amount, expire) in [
        (json!("800"), json!(60)),
        (json!(8.5), json!(60)),
        (json!(800), json!(-100_000_000_000_i64)),
    ] {
        let refused = call(
            "/open-api/qr/generate",
            json!({"timestamp": now_ms(), "mchOrderId": "code0002", "amount": amount,
            "currency": "CNY", "expireSeconds": expire}),
        )
        .await;
        assert_eq!(refused["code"], 21002, "{amount} {expire}: {refused}");
    }
    pay_link(t, &url).await;
    let mut list = Value::Null;
    for _ in 0..5000 {
        list = call(
            "/open-api/qr/payments",
            json!({"timestamp": now_ms(), "mchOrderId": "code0001"}),
        )
        .await;
        if list["data"][0]["transactionStatus"] == "COMPLETE" {
            break;
        }
    }
    assert_eq!(list["data"][0]["transactionAmount"], 800, "{list}");
    assert_eq!(list["data"][0]["transactionStatus"], "COMPLETE", "{list}");
    let cancelled = call(
        "/open-api/qr/cancel",
        json!({"timestamp": now_ms(), "mchOrderId": "code0001"}),
    )
    .await;
    assert_eq!(cancelled["data"]["status"], "INACTIVE", "{cancelled}");
    let detail = call(
        "/open-api/qr/detail",
        json!({"timestamp": now_ms(), "mchOrderId": "code0001"}),
    )
    .await;
    assert_eq!(detail["data"]["qrStatus"], "INACTIVE", "{detail}");
}

/// A disbursement: a wxgate payout (WeChat's merchant transfer), confirmed by the payee.
async fn open_api_disbursement(
    t: &TestGateway,
    me: (&str, &wechatpay_v3::crypto::PrivateKey),
    notify_url: &str,
) {
    let scene = wxgate_gateway::app::payouts::Scene {
        id: "1000".into(),
        report_infos: vec![
            wechatpay_v3::model::SceneReportInfo {
                info_type: "活动名称".into(),
                info_content: "开业".into(),
            },
            wechatpay_v3::model::SceneReportInfo {
                info_type: "奖励说明".into(),
                info_content: "红包".into(),
            },
        ],
    };
    wxgate_gateway::app::merchants::set_payout_scene(&t.store, &t.merchant_id, Some(&scene))
        .await
        .unwrap();
    let call = |path: &'static str, param: Value| open_api(t, path, me, param);
    let sent = call(
        "/open-api/disbursement/transfer",
        json!({"timestamp": now_ms(), "mchOrderId": "payout0001",
        "idempotencyId": "idem00000001", "amount": 300, "accountNo": "o-open-api-payee-0000000001",
        "payMethodCode": "WECHAT", "remark": "Prize", "notifyUrl": notify_url}),
    )
    .await;
    assert_eq!(sent["code"], 10000, "{sent}");
    assert_eq!(sent["data"]["transactionStatus"], "PENDING");
    let package = sent["data"]["metadata"]["wechatpay"]["package"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = t
        .sim_call(
            reqwest::Method::POST,
            "/sim/payee/confirm",
            Some(json!({"package_info": package, "outcome": "confirm"})),
        )
        .await;
    assert_eq!(status, 200);
    let mut done = Value::Null;
    for _ in 0..5000 {
        done = call(
            "/open-api/disbursement/query",
            json!({"timestamp": now_ms(), "mchOrderId": "payout0001"}),
        )
        .await;
        if done["data"]["transactionStatus"] == "COMPLETE" {
            break;
        }
    }
    assert_eq!(done["data"]["transactionStatus"], "COMPLETE", "{done}");
    let card = call(
        "/open-api/disbursement/transfer",
        json!({"timestamp": now_ms(), "mchOrderId": "payout0002",
        "amount": 300, "accountNo": "x", "payMethodCode": "BANK"}),
    )
    .await;
    assert_eq!(card["code"], 21013, "{card}");
    // The door's notifyUrl is held to the same rule as the API's notify_url.
    let nowhere = call(
        "/open-api/disbursement/transfer",
        json!({"timestamp": now_ms(), "mchOrderId": "payout0003", "amount": 300,
        "accountNo": "o-open-api-payee-0000000001", "payMethodCode": "WECHAT",
        "notifyUrl": "file:///etc/passwd"}),
    )
    .await;
    assert_eq!(nowhere["code"], 21002, "{nowhere}");
    assert!(
        nowhere["message"].as_str().unwrap().contains("notify_url"),
        "{nowhere}"
    );
}

/// The payment statement of today, downloaded through its link.
async fn open_api_report(t: &TestGateway, me: (&str, &wechatpay_v3::crypto::PrivateKey)) {
    // Report days are Beijing's.
    let today = time::OffsetDateTime::now_utc()
        .to_offset(time::macros::offset!(+8))
        .date()
        .to_string();
    let asked = open_api(
        t,
        "/open-api/account/report/download",
        me,
        json!({"timestamp": now_ms(),
        "reportType": "PAYMENT", "startDate": today, "endDate": today}),
    )
    .await;
    assert_eq!(asked["code"], 10000, "{asked}");
    let url = asked["data"]["downloadUrl"].as_str().unwrap();
    let csv = t.http.get(url).send().await.unwrap().text().await.unwrap();
    assert!(csv.lines().count() >= 2, "{csv}");
    let wrong = open_api(
        t,
        "/open-api/account/report/download",
        me,
        json!({"timestamp": now_ms(),
        "reportType": "SALARY", "startDate": today, "endDate": today}),
    )
    .await;
    assert_eq!(wrong["code"], 21002, "{wrong}");
}

/// The unified notification named `event` once it arrives, its signature checked.
async fn open_api_event(
    t: &TestGateway,
    inbox: &Inbox,
    platform: &wechatpay_v3::crypto::PublicKey,
    event: &str,
) -> Value {
    for _ in 0..5000 {
        for (_, body) in inbox.received() {
            let note: Value = serde_json::from_str(&body).unwrap();
            let param = note["param"].as_str().unwrap();
            platform
                .verify(param.as_bytes(), note["sign"].as_str().unwrap())
                .unwrap();
            let param: Value = serde_json::from_str(param).unwrap();
            if param["eventName"] == event {
                return param;
            }
        }
        let _ = t.call(reqwest::Method::GET, "/health", None, &[]).await;
    }
    panic!("no {event} notification: {:?}", inbox.received());
}
