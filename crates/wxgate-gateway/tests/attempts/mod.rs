//! Payment attempts: a payment may need more than one WeChat order (another device, a fresh
//! credential). The first order paid pays the payment, the others are closed at WeChat, and an
//! order paid anyway (the shopper paid twice) is refunded in full: money is never kept twice
//! and never lost.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestGateway, native, order};
use crate::{DESKTOP, PHONE, attribute, hosted, open, wait_over};

/// The pay button's h5_url on a phone page.
fn h5_url(page: &str) -> String {
    let start = page.find("id=\"pay\" href=\"").expect("the pay button") + 15;
    page[start..start + page[start..].find('"').unwrap()].replace("&amp;", "&")
}

async fn attempts(t: &TestGateway, id: &str) -> Vec<Value> {
    t.get(id).await["attempts"].as_array().unwrap().clone()
}

/// Polls (each GET a round trip) until the payment's attempts have these statuses.
async fn wait_attempts(t: &TestGateway, id: &str, statuses: &[&str]) -> Vec<Value> {
    for _ in 0..5000 {
        let now = attempts(t, id).await;
        let got: Vec<&str> = now.iter().map(|a| a["status"].as_str().unwrap()).collect();
        if got == statuses {
            return now;
        }
        tokio::task::yield_now().await;
    }
    panic!(
        "attempts of {id} never became {statuses:?}: {:?}",
        attempts(t, id).await
    );
}

async fn order_at_wechat(t: &TestGateway, out_trade_no: &str) -> Value {
    let path = format!("/sim/orders/{}/{out_trade_no}", t.mchid);
    t.sim_call(Method::GET, &path, None).await.1
}

pub async fn a_device_switch_makes_a_second_order_and_the_first_paid_wins(t: TestGateway) {
    let p = hosted(&t, json!({})).await;
    let (id, url) = (p["id"].as_str().unwrap(), p["hosted_url"].as_str().unwrap());
    let (_, desktop, _) = open(url, DESKTOP, Some("en")).await;
    let code_url = attribute(&desktop, "data-code-url");
    // The same checkout opened on a phone: a second WeChat order, for the H5 cashier.
    let (status, phone, _) = open(url, PHONE, Some("en")).await;
    assert_eq!(status, 200, "{phone}");
    assert!(h5_url(&phone).starts_with(&t.sim));
    let both = attempts(&t, id).await;
    let products: Vec<(&str, &str)> = both
        .iter()
        .map(|a| {
            (
                a["integration"].as_str().unwrap(),
                a["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(products, [("native", "open"), ("h5", "open")]);
    assert_eq!(both[0]["out_trade_no"], id);
    assert_eq!(both[1]["out_trade_no"], format!("{id}_2"));
    // The desktop page keeps working, on its own order.
    let (_, again, _) = open(url, DESKTOP, Some("en")).await;
    assert_eq!(attribute(&again, "data-code-url"), code_url);
    assert_eq!(attempts(&t, id).await.len(), 2, "no third order");
    // The shopper pays on the desktop: the older order's callback pays the payment, and the
    // phone's order is closed at WeChat.
    t.pay(json!({"code_url": code_url})).await;
    assert_eq!(wait_over(url).await["state"], "completed");
    let paid = t.wait_status(id, "succeeded").await;
    assert_eq!(paid["wechat"]["out_trade_no"], id);
    wait_attempts(&t, id, &["succeeded", "closed"]).await;
    let phone_order = order_at_wechat(&t, &format!("{id}_2")).await;
    assert_eq!(
        phone_order["transaction"]["trade_state"], "CLOSED",
        "{phone_order}"
    );
}

pub async fn a_shopper_who_pays_twice_is_refunded_once(t: TestGateway) {
    // No callbacks reach the gateway: both orders are paid before it hears of either.
    let faults = format!("/sim/merchants/{}/faults", t.mchid);
    t.sim_call(
        Method::PUT,
        &faults,
        Some(json!({"drop_callback_rate": 1.0})),
    )
    .await;
    let p = hosted(&t, json!({})).await;
    let (id, url) = (p["id"].as_str().unwrap(), p["hosted_url"].as_str().unwrap());
    let (_, desktop, _) = open(url, DESKTOP, Some("en")).await;
    let (_, phone, _) = open(url, PHONE, Some("en")).await;
    t.pay(json!({"code_url": attribute(&desktop, "data-code-url")}))
        .await;
    t.pay(json!({"h5_url": h5_url(&phone)})).await;
    // Status sync finds both: the first pays the payment, the second is refunded in full.
    let paid = t.wait_status(id, "succeeded").await;
    let statuses: Vec<&str> = ["succeeded", "duplicate"].to_vec();
    let twice = wait_attempts(&t, id, &statuses).await;
    let duplicate = twice[1]["out_trade_no"].as_str().unwrap().to_string();
    assert_eq!(paid["amount_refunded"], 0, "the payment's own money stays");
    let refund = wait_refund_succeeded(&t, id).await;
    assert_eq!(refund["merchant_refund_id"], format!("dup_{duplicate}"));
    assert_eq!(refund["amount"], paid["amount"]);
    // At WeChat: one order paid, the other paid and refunded in full, exactly once.
    let kept = order_at_wechat(&t, id).await;
    assert_eq!(kept["transaction"]["trade_state"], "SUCCESS", "{kept}");
    assert_eq!(kept["refunds"].as_array().unwrap().len(), 0);
    let returned = order_at_wechat(&t, &duplicate).await;
    let refunds = returned["refunds"].as_array().unwrap();
    assert_eq!(refunds.len(), 1, "{returned}");
    assert_eq!(refunds[0]["refund"], paid["amount"]);
    assert!(
        t.event_types(id)
            .await
            .contains(&"payment.duplicate_paid".to_string())
    );
    // The ledger took both orders' money in and the duplicate's refund out.
    let violations = t.store.ledger_violations().await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    let balances = t.store.balances(&t.merchant_id).await.unwrap();
    let paid_amount = paid["amount"].as_i64().unwrap();
    assert_eq!(
        (balances[0].1.pending, balances[0].1.refunds),
        (2 * paid_amount, paid_amount)
    );
    // The payment itself is untouched: still fully refundable by the merchant.
    let (s, r) = t
        .call(
            Method::POST,
            &format!("/v1/payments/{id}/refunds"),
            Some(json!({"merchant_refund_id": order("full")}).to_string()),
            &[],
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["amount"], paid["amount"]);
}

/// Polls the payment's refunds until one has succeeded.
async fn wait_refund_succeeded(t: &TestGateway, id: &str) -> Value {
    for _ in 0..5000 {
        let (_, list) = t
            .call(
                Method::GET,
                &format!("/v1/payments/{id}/refunds"),
                None,
                &[],
            )
            .await;
        if let Some(done) = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["status"] == "succeeded")
        {
            return done.clone();
        }
        tokio::task::yield_now().await;
    }
    panic!("no refund of {id} succeeded");
}

pub async fn a_fresh_credential_is_a_new_order(t: TestGateway) {
    let (_, p) = t.create(native(&order("re"), 700)).await;
    let id = p["id"].as_str().unwrap();
    let first = p["next_action"]["display_qr_code"]["data"].clone();
    let path = format!("/v1/payments/{id}/attempts");
    let (s, renewed) = t.call(Method::POST, &path, Some("{}".into()), &[]).await;
    assert_eq!(s, 201, "{renewed}");
    let second = renewed["next_action"]["display_qr_code"]["data"].clone();
    assert_ne!(first, second);
    assert_eq!(renewed["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(renewed["wechat"]["out_trade_no"], format!("{id}_2"));
    t.pay(json!({"code_url": second})).await;
    let paid = t.wait_status(id, "succeeded").await;
    assert_eq!(paid["wechat"]["out_trade_no"], format!("{id}_2"));
    wait_attempts(&t, id, &["closed", "succeeded"]).await;
    // A paid payment makes no more orders; an unknown product is refused.
    let (s, answer) = t.call(Method::POST, &path, Some("{}".into()), &[]).await;
    assert_eq!(
        (s, answer["error"]["code"].as_str()),
        (409, Some("payment_not_pending"))
    );
    let (_, p) = t.create(native(&order("re"), 700)).await;
    let other = format!("/v1/payments/{}/attempts", p["id"].as_str().unwrap());
    let (s, answer) = t
        .call(
            Method::POST,
            &other,
            Some(json!({"integration": "cash"}).to_string()),
            &[],
        )
        .await;
    assert_eq!(
        (s, answer["error"]["code"].as_str()),
        (400, Some("invalid_integration"))
    );
    // h5 needs the shopper's address, which this payment never had.
    let (s, answer) = t
        .call(
            Method::POST,
            &other,
            Some(json!({"integration": "h5"}).to_string()),
            &[],
        )
        .await;
    assert_eq!(
        (s, answer["error"]["code"].as_str()),
        (400, Some("client_ip_required"))
    );
}

pub async fn a_prepay_wechat_never_answered_is_asked_again_not_replaced(t: TestGateway) {
    let p = hosted(&t, json!({})).await;
    let (id, url) = (p["id"].as_str().unwrap(), p["hosted_url"].as_str().unwrap());
    let faults = format!("/sim/merchants/{}/faults", t.mchid);
    t.sim_call(Method::PUT, &faults, Some(json!({"error_500_rate": 1.0})))
        .await;
    let (status, _, _) = open(url, DESKTOP, Some("en")).await;
    assert_eq!(status, 503, "WeChat did not answer the prepay");
    t.sim_call(Method::PUT, &faults, Some(json!({}))).await;
    let (status, page, _) = open(url, DESKTOP, Some("en")).await;
    assert_eq!(status, 200, "{page}");
    assert!(attribute(&page, "data-code-url").starts_with("weixin://"));
    // The same order, asked again: no second WeChat order for one page.
    let orders = attempts(&t, id).await;
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0]["out_trade_no"], id);
}

/// WeChat refuses the product of the shopper's second device (not enabled for the merchant):
/// only that order ends; the payment stays pending and its first order still pays it.
pub async fn a_refused_second_device_leaves_the_first_order_payable(t: TestGateway) {
    let p = hosted(&t, json!({})).await;
    let (id, url) = (p["id"].as_str().unwrap(), p["hosted_url"].as_str().unwrap());
    let (_, desktop, _) = open(url, DESKTOP, Some("en")).await;
    let code_url = attribute(&desktop, "data-code-url");
    t.set_faults(json!({"refuse_trade_type": "MWEB"})).await;
    let (status, _, _) = open(url, PHONE, Some("en")).await;
    assert!(status >= 400, "the phone gets no H5 cashier: {status}");
    t.set_faults(json!({})).await;
    assert_eq!(t.get(id).await["status"], "pending");
    wait_attempts(&t, id, &["open", "closed"]).await;
    t.pay(json!({"code_url": code_url})).await;
    t.wait_status(id, "succeeded").await;
}
