//! The hosted checkout page over HTTP, against the real simulator: desktop (QR), mobile (H5),
//! inside WeChat (webpage authorization, then the JS API), cancel, expiry, unknown tokens,
//! languages and escaping. tests/e2e runs the same pages in headless Chromium.

use serde_json::{Value, json};
use wxgate_store::testing;

mod common;
use common::{TestGateway, order};
mod attempts;
use attempts::{
    a_device_switch_makes_a_second_order_and_the_first_paid_wins,
    a_fresh_credential_is_a_new_order, a_prepay_wechat_never_answered_is_asked_again_not_replaced,
    a_refused_second_device_leaves_the_first_order_payable,
    a_shopper_who_pays_twice_is_refunded_once,
};

on_both!(
    desktop_shows_the_qr_and_goes_to_return_url_once_paid,
    mobile_opens_the_h5_cashier,
    inside_wechat_the_js_api_pays_after_webpage_authorization,
    cancel_expiry_and_unknown_tokens,
    payment_links_make_a_payment_each_time_their_form_is_sent,
    a_device_switch_makes_a_second_order_and_the_first_paid_wins,
    a_shopper_who_pays_twice_is_refunded_once,
    a_fresh_credential_is_a_new_order,
    a_prepay_wechat_never_answered_is_asked_again_not_replaced,
    a_refused_second_device_leaves_the_first_order_payable,
);

const DESKTOP: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36";
const PHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 Safari/604.1";
const WECHAT: &str =
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 MicroMessenger/8.0.47";

/// A browser-like client that does not follow redirects, so the test sees them.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn hosted(t: &TestGateway, extra: Value) -> Value {
    let mut body = json!({"amount": 1999, "currency": "CNY", "merchant_order_id": order("hc"),
        "description": "Mug <b>&</b> \"tea\"", "integration": "hosted"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, p) = t.create(body).await;
    assert_eq!(status, 201, "{p}");
    // The create answers from what it wrote; the store holds exactly that.
    assert_eq!(t.get(p["id"].as_str().unwrap()).await, p);
    p
}

async fn open(url: &str, agent: &str, lang: Option<&str>) -> (u16, String, Option<String>) {
    let mut req = browser().get(url).header("User-Agent", agent);
    if let Some(l) = lang {
        req = req.header("Accept-Language", l);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let location = res
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    (status, res.text().await.unwrap(), location)
}

/// The value of `attr="…"` in the page, unescaped.
fn attribute(page: &str, attr: &str) -> String {
    let start = page
        .find(&format!("{attr}=\""))
        .unwrap_or_else(|| panic!("no {attr} in {page}"))
        + attr.len()
        + 2;
    let end = start + page[start..].find('"').unwrap();
    page[start..end].replace("&amp;", "&")
}

async fn checkout_status(url: &str) -> Value {
    browser()
        .get(format!("{url}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls the status endpoint as the page does (each call a round trip) until it is not waiting.
async fn wait_over(url: &str) -> Value {
    for _ in 0..5000 {
        let s = checkout_status(url).await;
        if s["state"] != "waiting" {
            return s;
        }
        tokio::task::yield_now().await;
    }
    panic!("{url} never finished");
}

async fn desktop_shows_the_qr_and_goes_to_return_url_once_paid(t: TestGateway) {
    let p = hosted(
        &t,
        json!({"return_url": "https://shop.example/thanks", "cancel_url": "https://shop.example/cart"}),
    )
    .await;
    let url = p["hosted_url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&format!("{}/checkout/cs_", t.base)),
        "{url}"
    );
    assert_eq!(p["next_action"]["type"], "redirect_to_url");
    assert_eq!(p["next_action"]["redirect_to_url"]["url"], url.as_str());
    let id = p["id"].as_str().unwrap();
    // No order at WeChat yet, so nothing to ask it before the payment expires.
    let row = || async { t.store.payment(&t.merchant_id, id).await.unwrap().unwrap() };
    let made = row().await;
    assert_eq!(made.sync_due_at, Some(made.expires_at));

    let (status, page, _) = open(&url, DESKTOP, Some("en-US,en;q=0.9")).await;
    assert_eq!(status, 200, "{page}");
    // Its first order at WeChat brings the status sync forward.
    let ordered = row().await;
    assert!(
        ordered.sync_due_at.is_some_and(|due| due < made.expires_at),
        "{ordered:?}"
    );
    assert!(page.contains("Scan the QR code with WeChat"), "{page}");
    assert!(page.contains("¥19.99"));
    assert!(page.contains("<p class=\"shop\">Test shop</p>"), "{page}");
    // Merchant text is escaped, never markup.
    assert!(
        page.contains("Mug &lt;b&gt;&amp;&lt;/b&gt; &quot;tea&quot;"),
        "{page}"
    );
    assert!(!page.contains("<b>&</b>"));
    let code_url = attribute(&page, "data-code-url");
    assert!(code_url.starts_with("weixin://"), "{code_url}");
    assert!(page.contains("<svg"));
    // The code is the WeChat order's, and the merchant's API shows the same payment pending.
    let (_, order_at_wechat) = t
        .sim_call(
            reqwest::Method::GET,
            &format!("/sim/orders/{}/{id}", t.mchid),
            None,
        )
        .await;
    assert_eq!(order_at_wechat["order"]["trade_type"], "NATIVE");
    assert_eq!(checkout_status(&url).await["state"], "waiting");
    // Reopened, it shows the same code; in Chinese by default.
    let (_, again, _) = open(&url, DESKTOP, None).await;
    assert_eq!(attribute(&again, "data-code-url"), code_url);
    assert!(again.contains("请使用微信扫一扫"));

    t.pay(json!({"code_url": code_url})).await;
    let over = wait_over(&url).await;
    assert_eq!(
        over,
        json!({"state": "completed", "redirect": "https://shop.example/thanks"})
    );
    let (status, _, location) = open(&url, DESKTOP, None).await;
    assert_eq!(
        (status, location.as_deref()),
        (303, Some("https://shop.example/thanks"))
    );
    assert_eq!(t.get(id).await["status"], "succeeded");
}

async fn mobile_opens_the_h5_cashier(t: TestGateway) {
    let p = hosted(&t, json!({})).await;
    let url = p["hosted_url"].as_str().unwrap().to_string();
    let (status, page, _) = open(&url, PHONE, Some("en")).await;
    assert_eq!(status, 200, "{page}");
    let start = page.find("id=\"pay\" href=\"").expect("the pay button") + 15;
    let h5_url = page[start..start + page[start..].find('"').unwrap()].replace("&amp;", "&");
    assert!(h5_url.starts_with(&t.sim), "{h5_url}");
    // WeChat's cashier will come back to this page.
    let encoded = url::form_urlencoded::byte_serialize(url.as_bytes()).collect::<String>();
    assert!(h5_url.contains(&encoded), "{h5_url} should return to {url}");
    t.pay(json!({"h5_url": h5_url})).await;
    let over = wait_over(&url).await;
    // No return_url: the page itself says it is done.
    assert_eq!(over["state"], "completed");
    let (status, page, _) = open(
        over["redirect"]
            .as_str()
            .map(|r| format!("{}{r}", t.base))
            .as_deref()
            .unwrap(),
        PHONE,
        Some("en"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(page.contains("Payment complete"), "{page}");
}

async fn cancel_expiry_and_unknown_tokens(t: TestGateway) {
    // The shopper cancels: closed at WeChat, then to cancel_url.
    let p = hosted(&t, json!({"cancel_url": "https://shop.example/cart"})).await;
    let url = p["hosted_url"].as_str().unwrap().to_string();
    open(&url, DESKTOP, None).await;
    let res = browser()
        .post(format!("{url}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "https://shop.example/cart");
    assert_eq!(
        t.get(p["id"].as_str().unwrap()).await["status"],
        "cancelled"
    );
    assert_eq!(
        checkout_status(&url).await,
        json!({"state": "closed", "redirect": "https://shop.example/cart"})
    );

    // Without a cancel_url, a closed checkout is a page that says so, with 410.
    let p = hosted(&t, json!({})).await;
    let url = p["hosted_url"].as_str().unwrap().to_string();
    let res = browser()
        .post(format!("{url}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let (status, page, _) = open(&url, DESKTOP, Some("en")).await;
    assert_eq!(status, 410);
    assert!(page.contains("cancelled or has expired"), "{page}");

    // Expired (status sync closed it at WeChat): the page and its status go to cancel_url.
    let p = hosted(&t, json!({"cancel_url": "https://shop.example/cart"})).await;
    let url = p["hosted_url"].as_str().unwrap().to_string();
    t.store
        .transition(
            &t.merchant_id,
            p["id"].as_str().unwrap(),
            wxgate_domain::PaymentEvent::Expired,
            &wxgate_store::TransitionFacts {
                now: wxgate_gateway::now_ms(),
                source: "expiry".into(),
                ..Default::default()
            },
            wxgate_gateway::views::event_payload,
        )
        .await
        .unwrap();
    let (status, _, location) = open(&url, DESKTOP, None).await;
    assert_eq!(
        (status, location.as_deref()),
        (303, Some("https://shop.example/cart"))
    );
    assert_eq!(checkout_status(&url).await["state"], "closed");

    // An unknown or altered token: 404, a page, no detail.
    let altered = format!("{}x", url);
    for bad in [altered, format!("{}/checkout/cs_nope", t.base)] {
        let (status, page, _) = open(&bad, DESKTOP, Some("en")).await;
        assert_eq!(status, 404, "{bad}");
        assert!(page.contains("not valid"), "{page}");
    }
    let res = browser()
        .get(format!("{}/checkout/cs_nope/status", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    // Any payment has a hosted page: a native one shows its own code.
    let (_, native) = t
        .create(json!({"amount": 100, "currency": "CNY", "merchant_order_id": order("hn"), "description": "Tea", "integration": "native"}))
        .await;
    let (status, page, _) = open(native["hosted_url"].as_str().unwrap(), PHONE, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        attribute(&page, "data-code-url"),
        native["next_action"]["display_qr_code"]["data"]
            .as_str()
            .unwrap()
    );
}

async fn inside_wechat_the_js_api_pays_after_webpage_authorization(t: TestGateway) {
    let p = hosted(&t, json!({"return_url": "https://shop.example/thanks"})).await;
    let url = p["hosted_url"].as_str().unwrap().to_string();
    // First the silent webpage authorization at WeChat (the simulator), which comes back with a
    // code the gateway exchanges for the payer's openid.
    let (status, _, location) = open(&url, WECHAT, None).await;
    assert_eq!(status, 303);
    let authorize = location.unwrap();
    assert!(
        authorize.starts_with(&format!("{}/connect/oauth2/authorize?", t.sim)),
        "{authorize}"
    );
    assert!(authorize.contains("scope=snsapi_base"));
    // A made-up code is WeChat's refusal of the caller's code, not a failure of WeChat's.
    let (status, body, _) = open(&format!("{url}/oauth?code=made-up"), WECHAT, None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("authorization_code_refused"), "{body}");
    let (status, _, back) = open(&authorize, WECHAT, None).await;
    assert!((300..400).contains(&status), "{status}");
    let back = back.unwrap();
    assert!(back.starts_with(&format!("{url}/oauth?code=")), "{back}");
    let (status, _, page_again) = open(&back, WECHAT, None).await;
    assert_eq!(
        (status, page_again.as_deref()),
        (
            303,
            Some(format!("/checkout/{}", url.rsplit('/').next().unwrap()).as_str())
        )
    );
    let payer = t.get(p["id"].as_str().unwrap()).await["payer"]["openid"].clone();
    assert!(payer.as_str().is_some_and(|o| o.len() == 28), "{payer}");
    // Once the payer is known, a code (even a used one) is not taken to WeChat again.
    let (status, _, _) = open(&back, WECHAT, None).await;
    assert_eq!(status, 303);

    // Then the JS API, with parameters signed for WeixinJSBridge.
    let (status, page, _) = open(&url, WECHAT, Some("en")).await;
    assert_eq!(status, 200, "{page}");
    let json = attribute(&page, "data-jsapi").replace("&quot;", "\"");
    let params: Value = serde_json::from_str(&json).unwrap();
    for field in [
        "appId",
        "timeStamp",
        "nonceStr",
        "package",
        "signType",
        "paySign",
    ] {
        assert!(params[field].is_string(), "{field} in {params}");
    }
    // The simulator verifies paySign, as WeChat's app would, and pays.
    t.pay(json!({"jsapi": params})).await;
    let over = wait_over(&url).await;
    assert_eq!(
        over,
        json!({"state": "completed", "redirect": "https://shop.example/thanks"})
    );
}

async fn create_link(t: &TestGateway, body: Value) -> (u16, Value) {
    t.call(
        reqwest::Method::POST,
        "/v1/payment_links",
        Some(body.to_string()),
        &[],
    )
    .await
}

async fn payment_links_make_a_payment_each_time_their_form_is_sent(t: TestGateway) {
    links_are_checked_when_made(&t).await;
    let create = |body: Value| create_link(&t, body);
    let (status, link) =
        create(json!({"amount": 500, "currency": "CNY", "description": "Coffee", "max_uses": 2}))
            .await;
    assert_eq!(status, 201, "{link}");
    let url = link["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&format!("{}/pay/pl_", t.base)), "{url}");
    assert!(link["qr"]["image_svg"].as_str().unwrap().contains("<svg"));

    a_link_is_used_by_its_form_not_by_opening(&url).await;
    let id = link["id"].as_str().unwrap();
    let (_, made) = t
        .call(
            reqwest::Method::GET,
            &format!("/v1/payment_links/{id}/payments"),
            None,
            &[],
        )
        .await;
    let made = made["data"].as_array().unwrap().clone();
    assert_eq!(made.len(), 2);
    assert!(
        made.iter()
            .all(|p| p["amount"] == 500 && p["integration"] == "hosted")
    );
    let (_, link_now) = t
        .call(
            reqwest::Method::GET,
            &format!("/v1/payment_links/{id}"),
            None,
            &[],
        )
        .await;
    assert_eq!(link_now["uses"], 2);

    // An amount the payer enters, within bounds.
    let (_, open_link) = create(
        json!({"amount_min": 100, "amount_max": 1000, "currency": "CNY", "description": "Tip"}),
    )
    .await;
    let url = open_link["url"].as_str().unwrap().to_string();
    let (status, page, _) = open(&url, DESKTOP, Some("en")).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("Enter the amount") && page.contains("1.00") && page.contains("10.00"),
        "{page}"
    );
    let post = |amount: &'static str| {
        let url = url.clone();
        async move {
            browser()
                .post(&url)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(format!("amount={amount}"))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(post("50").await.status(), 422);
    assert_eq!(post("abc").await.status(), 422);
    let made = post("5.50").await;
    assert_eq!(made.status(), 303);
    let checkout = made.headers()["location"].to_str().unwrap().to_string();
    let (_, page, _) = open(&checkout, DESKTOP, Some("en")).await;
    assert!(page.contains("¥5.50"), "{page}");

    // Deactivated, it takes no more payments.
    let oid = open_link["id"].as_str().unwrap();
    let (status, off) = t
        .call(
            reqwest::Method::POST,
            &format!("/v1/payment_links/{oid}/deactivate"),
            None,
            &[],
        )
        .await;
    assert_eq!((status, off["active"].as_bool()), (200, Some(false)));
    assert_eq!(open(&url, DESKTOP, None).await.0, 410);
    assert_eq!(
        open(&format!("{}/pay/pl_nope", t.base), DESKTOP, None)
            .await
            .0,
        404
    );
}

/// A link with amount and currency out of the rules is refused, with the field's code.
async fn links_are_checked_when_made(t: &TestGateway) {
    let create = |body: Value| create_link(t, body);
    for (body, code) in [
        (
            json!({"amount": 500, "amount_min": 1, "amount_max": 9, "currency": "CNY", "description": "x"}),
            "invalid_amount",
        ),
        (
            json!({"currency": "CNY", "description": "x"}),
            "invalid_amount",
        ),
        (
            json!({"amount": 500, "currency": "USD", "description": "x"}),
            "currency_not_allowed",
        ),
        (
            json!({"amount": 500, "currency": "CNY", "description": "x", "max_uses": 0}),
            "invalid_max_uses",
        ),
    ] {
        let (status, e) = create(body.clone()).await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}"
        );
    }
}

/// A fixed-amount link, `max_uses` 2, at `url`: opening it shows its amount and makes nothing
/// (a link preview or a prefetch neither uses it up nor makes a payment); each payer who sends
/// its form gets a new payment and its checkout; then the link is used up.
async fn a_link_is_used_by_its_form_not_by_opening(url: &str) {
    for _ in 0..3 {
        let (status, page, _) = open(url, DESKTOP, Some("en")).await;
        assert_eq!(status, 200);
        assert!(page.contains("¥5.00") && page.contains(">Pay<"), "{page}");
    }
    let send = || async {
        browser()
            .post(url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send()
            .await
            .unwrap()
    };
    let mut checkouts = Vec::new();
    for _ in 0..2 {
        let made = send().await;
        assert_eq!(made.status(), 303);
        checkouts.push(made.headers()["location"].to_str().unwrap().to_string());
    }
    assert_ne!(checkouts[0], checkouts[1]);
    assert!(checkouts[0].contains("/checkout/cs_"), "{checkouts:?}");
    let (status, page, _) = open(url, DESKTOP, Some("en")).await;
    assert_eq!(status, 410);
    assert!(page.contains("used up"), "{page}");
    assert_eq!(send().await.status(), 410);
}

/// A hosted payment whose second device's order never reached WeChat (its prepay got a 500)
/// expires with its first order closed at WeChat, not left payable on an expired payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_closes_the_earlier_orders_when_the_current_one_never_reached_wechat() {
    for db in testing::all().await {
        let clock = std::sync::Arc::new(wechatpay_v3::FixedClock::at_ms(wxgate_gateway::now_ms()));
        let t = TestGateway::spawn_on_clock(&db, |_| {}, clock.clone()).await;
        let p = hosted(&t, json!({})).await;
        let (id, url) = (p["id"].as_str().unwrap(), p["hosted_url"].as_str().unwrap());
        open(url, DESKTOP, Some("en")).await;
        t.set_faults(json!({"error_500_rate": 1.0})).await;
        open(url, PHONE, Some("en")).await;
        t.set_faults(json!({})).await;
        let stored = t.store.payment(&t.merchant_id, id).await.unwrap().unwrap();
        assert_eq!(
            stored.out_trade_no,
            format!("{id}_2"),
            "the phone's order is current"
        );
        clock.advance_ms(stored.expires_at - wxgate_gateway::now_ms() + 1_000);
        wxgate_gateway::sync::drain(&t.gateway).await.unwrap();
        // The background round may have claimed it first: it ends expired either way.
        t.wait_status(id, "expired").await;
        let first = format!("/sim/orders/{}/{id}", t.mchid);
        let (_, order) = t.sim_call(reqwest::Method::GET, &first, None).await;
        assert_eq!(order["transaction"]["trade_state"], "CLOSED", "{order}");
        db.cleanup().await;
    }
}

/// A paid payment whose other order could not be closed when it paid (WeChat answered 500)
/// has it closed by a later sweep, once the payment has been still for a while, so the
/// shopper cannot pay it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_a_paid_payment_left_open_is_closed_by_a_later_sweep() {
    use wxgate_gateway::app::orders::{LEFT_OPEN_AFTER_MS, LeftOpenSweep};
    for db in testing::all().await {
        let clock = std::sync::Arc::new(wechatpay_v3::FixedClock::at_ms(wxgate_gateway::now_ms()));
        // No background rounds and no callbacks: the test runs the sync and the sweep.
        let slow = |c: &mut wxgate_gateway::GatewayConfig| {
            c.sync_interval = std::time::Duration::from_secs(3600)
        };
        let t = TestGateway::spawn_on_clock(&db, slow, clock.clone()).await;
        t.set_faults(json!({"drop_callback_rate": 1.0})).await;
        let p = hosted(&t, json!({})).await;
        let (id, url) = (p["id"].as_str().unwrap(), p["hosted_url"].as_str().unwrap());
        let (_, desktop, _) = open(url, DESKTOP, Some("en")).await;
        open(url, PHONE, Some("en")).await;
        t.pay(json!({"code_url": attribute(&desktop, "data-code-url")}))
            .await;
        t.set_faults(json!({"drop_callback_rate": 1.0, "fail_close": true}))
            .await;
        clock.advance_ms(1_000);
        wxgate_gateway::sync::drain(&t.gateway).await.unwrap();
        let paid = t.get(id).await;
        assert_eq!(paid["status"], "succeeded", "{paid}");
        let statuses = |p: &Value| -> Vec<String> {
            let list = p["attempts"].as_array().unwrap();
            list.iter()
                .map(|a| a["status"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(statuses(&paid), ["succeeded", "open"], "the close failed");
        t.set_faults(json!({})).await;
        // Its own close may still be under way: a payment changed just now is left alone.
        assert_eq!(LeftOpenSweep::default().run(&t.gateway).await.unwrap(), 0);
        clock.advance_ms(LEFT_OPEN_AFTER_MS + 1_000);
        assert_eq!(LeftOpenSweep::default().run(&t.gateway).await.unwrap(), 1);
        assert_eq!(statuses(&t.get(id).await), ["succeeded", "closed"]);
        let phone = format!("/sim/orders/{}/{id}_2", t.mchid);
        let (_, order) = t.sim_call(reqwest::Method::GET, &phone, None).await;
        assert_eq!(order["transaction"]["trade_state"], "CLOSED", "{order}");
        assert_eq!(LeftOpenSweep::default().run(&t.gateway).await.unwrap(), 0);
        db.cleanup().await;
    }
}

/// An order whose prepay lands after its payment ended (a cancel that met no order at WeChat
/// yet) is closed at WeChat, not left payable, and its credential is not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_made_after_its_payment_ended_is_closed_at_wechat() {
    for db in testing::all().await {
        let t = TestGateway::spawn(&db).await;
        let p = hosted(&t, json!({})).await;
        let id = p["id"].as_str().unwrap();
        let (status, cancelled) = t.cancel(id).await;
        assert_eq!(
            (status, cancelled["status"].as_str()),
            (200, Some("cancelled")),
            "{cancelled}"
        );
        // The prepay of an order the cancel could not see, landing now.
        let merchant = t.store.merchant(&t.merchant_id).await.unwrap().unwrap();
        let ended = t.store.payment(&t.merchant_id, id).await.unwrap().unwrap();
        let late = wxgate_store::PaymentRow {
            out_trade_no: format!("{id}_2"),
            ..ended
        };
        let now = wxgate_gateway::now_ms();
        let integration = wxgate_domain::Integration::Native;
        let refused =
            wxgate_gateway::app::payments::prepay(&t.gateway, &merchant, &late, integration, now)
                .await
                .err()
                .expect("an ended payment takes no credential");
        assert_eq!(
            refused.code.as_str(),
            "payment_not_pending",
            "{}",
            refused.message
        );
        let order = format!("/sim/orders/{}/{id}_2", t.mchid);
        let (_, at_wechat) = t.sim_call(reqwest::Method::GET, &order, None).await;
        assert_eq!(
            at_wechat["transaction"]["trade_state"], "CLOSED",
            "{at_wechat}"
        );
        assert_eq!(t.get(id).await["status"], "cancelled");
        db.cleanup().await;
    }
}
