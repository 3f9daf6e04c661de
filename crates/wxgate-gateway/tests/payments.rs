//! The real gateway on port 0, its own SQLite database, the real simulator: every integration
//! type end to end, callbacks in, status sync, expiry, idempotency and bad input.

use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use wxgate_gateway::pace::Api;
use wxgate_store::testing;

mod common;
use common::{TestGateway, native, order};
mod contract;
mod doors;
use contract::{
    every_post_honours_its_idempotency_key, generated_bad_input_never_meets_a_5xx,
    hosted_pages_send_their_security_headers, json_bodies_are_exact_and_text_is_clean,
    payment_links_page, unknown_routes_and_methods_answer_with_the_envelope,
};
use doors::{
    connect_integration_types_as_documented, open_api_as_documented, payment_intents_as_documented,
    two_checkout_orders_as_documented,
};

on_both!(
    metrics_are_scraped_and_parse,
    connect_integration_types_as_documented,
    open_api_as_documented,
    health_readiness_and_request_ids,
    two_checkout_orders_as_documented,
    payment_intents_as_documented,
    wechat_pay_global_native_payment_as_documented,
    every_integration_type_end_to_end,
    dropped_callbacks_are_repaired_by_status_sync,
    unpaid_payments_expire_and_are_closed_at_wechat,
    cancel_closes_at_wechat_and_catches_a_payment_that_slipped_in,
    duplicate_forged_and_mismatched_callbacks_change_nothing,
    fifty_concurrent_identical_requests_make_one_payment,
    bad_input_gets_a_clear_4xx,
    openapi_document_lists_the_payments_api,
    a_crash_between_wechat_and_the_commit_is_repaired,
    a_paid_callback_for_a_failed_payment_is_quarantined_not_retried,
    cross_border_payments_go_through_the_global_endpoints,
    qr_images_of_a_pending_native_payment,
    every_post_honours_its_idempotency_key,
    json_bodies_are_exact_and_text_is_clean,
    unknown_routes_and_methods_answer_with_the_envelope,
    payment_links_page,
    hosted_pages_send_their_security_headers,
    generated_bad_input_never_meets_a_5xx,
);

async fn every_integration_type_end_to_end(t: TestGateway) {
    for integration in ["native", "h5", "jsapi", "mini_program", "app"] {
        let mut body = json!({
            "amount": 1999, "currency": "CNY", "merchant_order_id": order(integration), "description": "Blue mug",
            "integration": integration, "return_url": "https://shop.example/thanks", "metadata": {"cart": "42"},
        });
        if integration == "jsapi" || integration == "mini_program" {
            body["payer"] = json!({"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"});
        }
        if integration == "h5" {
            body["client_ip"] = json!("203.0.113.7");
        }
        let (status, p) = t.create(body).await;
        assert_eq!(status, 201, "{integration}: {p}");
        assert!(p["id"].as_str().unwrap().starts_with("pay_"));
        // The create answers from what it wrote; the store holds exactly that.
        assert_eq!(t.get(p["id"].as_str().unwrap()).await, p, "{integration}");
        assert_eq!(p["status"], "pending");
        let action = &p["next_action"];
        let pay = match integration {
            "native" => {
                assert_eq!(action["type"], "display_qr_code");
                let qr = &action["display_qr_code"];
                assert!(
                    qr["data"]
                        .as_str()
                        .unwrap()
                        .starts_with("weixin://wxpay/bizpayurl?pr=")
                );
                // Images on request: their URLs, not the images themselves.
                assert!(qr["image_png_url"].as_str().unwrap().ends_with("/qr.png"));
                assert!(qr["image_svg_url"].as_str().unwrap().ends_with("/qr.svg"));
                assert!(qr.get("image_png_base64").is_none(), "{qr}");
                json!({"code_url": qr["data"]})
            }
            "h5" => {
                assert_eq!(action["type"], "redirect_to_url");
                let url = action["redirect_to_url"]["url"].as_str().unwrap();
                assert!(
                    url.contains("&redirect_url=https%3A%2F%2Fshop.example%2Fthanks"),
                    "{url}"
                );
                json!({"h5_url": url})
            }
            "jsapi" => {
                assert_eq!(action["type"], "invoke_jsapi");
                let keys: Vec<&str> = action["invoke_jsapi"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(String::as_str)
                    .collect();
                assert_eq!(keys.len(), 6, "{keys:?}");
                json!({"jsapi": action["invoke_jsapi"]})
            }
            "mini_program" => {
                assert_eq!(action["type"], "invoke_mini_program");
                let mut params = action["invoke_mini_program"].clone();
                assert!(
                    params.get("appId").is_none(),
                    "wx.requestPayment takes no appId"
                );
                params["appId"] = json!(t.appid);
                json!({"jsapi": params})
            }
            "app" => {
                assert_eq!(action["type"], "invoke_app");
                assert_eq!(action["invoke_app"]["partnerid"], t.mchid);
                assert_eq!(action["invoke_app"]["package"], "Sign=WXPay");
                json!({"app": action["invoke_app"]})
            }
            _ => unreachable!(),
        };
        // The simulator verifies the client-side signature, pays, and calls back the gateway.
        t.pay(pay).await;
        let id = p["id"].as_str().unwrap();
        let paid = t.wait_status(id, "succeeded").await;
        let tx = paid["wechat"]["transaction_id"].as_str().unwrap();
        assert_eq!(tx.len(), 28);
        assert!(paid["next_action"].is_null());
        let history: Vec<&str> = paid["status_history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["status"].as_str().unwrap())
            .collect();
        assert_eq!(history, ["pending", "succeeded"]);
        // The simulator agrees.
        let (_, order) = t
            .sim_call(
                reqwest::Method::GET,
                &format!(
                    "/sim/orders/{}/{}",
                    t.mchid,
                    paid["wechat"]["out_trade_no"].as_str().unwrap()
                ),
                None,
            )
            .await;
        assert_eq!(order["transaction"]["trade_state"], "SUCCESS");
        assert_eq!(t.event_types(id).await, ["payment.succeeded"]);
    }
}

async fn dropped_callbacks_are_repaired_by_status_sync(t: TestGateway) {
    t.sim_call(
        reqwest::Method::PUT,
        &format!("/sim/merchants/{}/faults", t.mchid),
        Some(json!({"drop_callback_rate": 1.0})),
    )
    .await;
    let (_, p) = t.create(native(&order("drop"), 500)).await;
    t.pay(json!({"code_url": p["next_action"]["display_qr_code"]["data"]}))
        .await;
    let paid = t.wait_status(p["id"].as_str().unwrap(), "succeeded").await;
    let sources: Vec<&str> = paid["status_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["created", "sync"]);
}

async fn unpaid_payments_expire_and_are_closed_at_wechat(t: TestGateway) {
    let (_, p) = t.create(native(&order("exp"), 500)).await;
    let id = p["id"].as_str().unwrap();
    // Time passes: the payment's expiry is behind it.
    t.store
        .execute_raw(&format!(
            "UPDATE payments SET expires_at = 1, sync_due_at = 1 WHERE id = '{id}'"
        ))
        .await
        .unwrap();
    let expired = t.wait_status(id, "expired").await;
    let (_, order) = t
        .sim_call(
            reqwest::Method::GET,
            &format!(
                "/sim/orders/{}/{}",
                t.mchid,
                expired["wechat"]["out_trade_no"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(
        order["transaction"]["trade_state"], "CLOSED",
        "closed at WeChat"
    );
    assert_eq!(t.event_types(id).await, ["payment.expired"]);
}

async fn cancel_closes_at_wechat_and_catches_a_payment_that_slipped_in(t: TestGateway) {
    let (_, p) = t.create(native(&order("cxl"), 500)).await;
    let id = p["id"].as_str().unwrap();
    let (status, cancelled) = t.cancel(id).await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled")),
        "{cancelled}"
    );
    let (status, again) = t.cancel(id).await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("payment_not_cancellable"))
    );

    // The payer pays while the close is on its way: the query after the close finds it.
    t.sim_call(
        reqwest::Method::PUT,
        &format!("/sim/merchants/{}/faults", t.mchid),
        Some(json!({"paid_after_close": true})),
    )
    .await;
    let (_, p) = t.create(native(&order("race"), 500)).await;
    let id = p["id"].as_str().unwrap();
    let (status, answer) = t.cancel(id).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("payment_not_cancellable")),
        "{answer}"
    );
    assert_eq!(t.get(id).await["status"], "succeeded");
}

async fn duplicate_forged_and_mismatched_callbacks_change_nothing(t: TestGateway) {
    t.sim_call(
        reqwest::Method::PUT,
        &format!("/sim/merchants/{}/faults", t.mchid),
        Some(json!({"duplicate_callback_rate": 1.0})),
    )
    .await;
    let (_, p) = t.create(native(&order("dup"), 700)).await;
    let id = p["id"].as_str().unwrap().to_string();
    t.pay(json!({"code_url": p["next_action"]["display_qr_code"]["data"]}))
        .await;
    t.wait_status(&id, "succeeded").await;
    // Both copies were acknowledged; one event.
    for _ in 0..5000 {
        let (_, log) = t
            .sim_call(
                reqwest::Method::GET,
                &format!("/sim/callbacks?out_trade_no={id}"),
                None,
            )
            .await;
        if log["data"][0]["attempts"]
            .as_array()
            .is_some_and(|a| a.len() >= 2)
        {
            assert!(
                log["data"][0]["attempts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|s| s == 204),
                "{log}"
            );
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        t.store.events_for(&t.merchant_id, &id).await.unwrap().len(),
        1
    );

    // Forged: a body that is not signed by WeChat is refused and changes nothing.
    let forged = t
        .http
        .post(format!("{}/wechatpay/notify/{}", t.base, t.merchant_id))
        .header("Wechatpay-Timestamp", (time::OffsetDateTime::now_utc().unix_timestamp()).to_string())
        .header("Wechatpay-Nonce", "n")
        .header("Wechatpay-Serial", "PUB_KEY_ID_0")
        .header("Wechatpay-Signature", "c2lnbmF0dXJl")
        .body(r#"{"id":"x","create_time":"2024-01-01T00:00:00+08:00","event_type":"TRANSACTION.SUCCESS","resource":{"original_type":"transaction","algorithm":"AEAD_AES_256_GCM","ciphertext":"AAAA","nonce":"123456789012"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    // Callbacks for merchants that do not exist (the URL is public) are refused, and the
    // node keeps nothing for them.
    let kept = t.gateway.upstreams_kept();
    for i in 0..20 {
        let unknown = t
            .http
            .post(format!("{}/wechatpay/notify/mch_nobody{i}", t.base))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 404);
    }
    assert_eq!(t.gateway.upstreams_kept(), kept);

    // Mismatched: WeChat signs a transaction whose amount differs from the stored payment's.
    // The gateway's row says 100 fen; the order at WeChat is for 999.
    t.sim_call(
        reqwest::Method::DELETE,
        &format!("/sim/merchants/{}/faults", t.mchid),
        None,
    )
    .await;
    let (_, real) = t.create(native(&order("mm"), 999)).await;
    let real_id = real["id"].as_str().unwrap().to_string();
    t.store
        .execute_raw(&format!(
            "UPDATE payments SET amount = 100 WHERE id = '{real_id}'"
        ))
        .await
        .unwrap();
    t.pay(json!({"code_url": real["next_action"]["display_qr_code"]["data"]}))
        .await;
    let quarantined = t.wait_quarantined(&real_id).await;
    assert_eq!(quarantined.len(), 1);
    assert!(
        quarantined[0].reason.contains("amount"),
        "{}",
        quarantined[0].reason
    );
    assert_eq!(t.get(&real_id).await["status"], "pending", "never applied");
    // The counter moves just after the row is written: read it until it has.
    let counted = r#"wxgate_quarantined_total{object="payment"} 1"#;
    let metrics = t.wait_metrics(|m| m.contains(counted)).await;
    assert!(metrics.contains(counted), "{metrics}");
}

async fn fifty_concurrent_identical_requests_make_one_payment(t: TestGateway) {
    let t = std::sync::Arc::new(t);
    let order_id = order("idem");
    let body = native(&order_id, 1234).to_string();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (t, body) = (t.clone(), body.clone());
            tokio::spawn(async move {
                t.call(
                    reqwest::Method::POST,
                    "/v1/payments",
                    Some(body),
                    &[("Idempotency-Key", "k-1")],
                )
                .await
            })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for task in tasks {
        let (status, answer) = task.await.unwrap();
        match status {
            200 | 201 => {
                ids.insert(answer["id"].as_str().unwrap().to_string());
            }
            409 => assert_eq!(answer["error"]["code"], "idempotency_key_in_use"),
            other => panic!("{other}: {answer}"),
        }
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let (_, list) = t
        .call(
            reqwest::Method::GET,
            &format!("/v1/payments?merchant_order_id={order_id}"),
            None,
            &[],
        )
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    // A replay carries the first answer; another body under the key is refused.
    let (status, replay) = t
        .call(
            reqwest::Method::POST,
            "/v1/payments",
            Some(body.clone()),
            &[("Idempotency-Key", "k-1")],
        )
        .await;
    assert_eq!(
        (status, replay["id"].as_str()),
        (201, ids.iter().next().map(String::as_str))
    );
    let (status, reused) = t
        .call(
            reqwest::Method::POST,
            "/v1/payments",
            Some(native(&order("other"), 1).to_string()),
            &[("Idempotency-Key", "k-1")],
        )
        .await;
    assert_eq!(
        (status, reused["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    // Without a key, re-posting the same order returns the same payment; other parameters conflict.
    let (status, same) = t.create(native(&order_id, 1234)).await;
    assert_eq!(
        (status, same["id"].as_str()),
        (200, ids.iter().next().map(String::as_str))
    );
    let (status, taken) = t.create(native(&order_id, 1235)).await;
    assert_eq!(
        (
            status,
            taken["error"]["code"].as_str(),
            taken["error"]["param"].as_str()
        ),
        (
            409,
            Some("merchant_order_id_taken"),
            Some("merchant_order_id")
        )
    );
    // A node's first calls for a merchant, all at once, open one connection to WeChat and
    // share it (a fresh gateway on the same database: this one's is open already).
    let fresh = wxgate_gateway::Gateway::new(t.store.clone(), t.gateway.config().clone());
    let opened =
        futures_util::future::join_all((0..16).map(|_| fresh.upstream(&t.merchant_id))).await;
    let first = opened[0].as_ref().unwrap();
    for other in &opened {
        assert!(std::sync::Arc::ptr_eq(first, other.as_ref().unwrap()));
    }
}

async fn bad_input_gets_a_clear_4xx(t: TestGateway) {
    let good = native("order_ok_1", 100);
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b.to_string()
    };
    let without = |k: &str| {
        let mut b = good.clone();
        b.as_object_mut().unwrap().remove(k);
        b.to_string()
    };
    let cases: Vec<(String, u16, &str, Option<&str>)> = vec![
        (
            with("amount", json!(0)),
            400,
            "invalid_amount",
            Some("amount"),
        ),
        (
            with("amount", json!(-1)),
            400,
            "invalid_amount",
            Some("amount"),
        ),
        (
            with("amount", json!(1.5)),
            400,
            "invalid_type",
            Some("amount"),
        ),
        (
            with("amount", json!("100")),
            400,
            "invalid_type",
            Some("amount"),
        ),
        (
            with("currency", json!("USD")),
            400,
            "currency_not_allowed",
            Some("currency"),
        ),
        (
            with("currency", json!("XYZ")),
            400,
            "invalid_currency",
            Some("currency"),
        ),
        (
            with("merchant_order_id", json!("bad id!")),
            400,
            "invalid_merchant_order_id",
            Some("merchant_order_id"),
        ),
        (
            with("merchant_order_id", json!("x".repeat(33))),
            400,
            "invalid_merchant_order_id",
            Some("merchant_order_id"),
        ),
        (
            with("description", json!("")),
            400,
            "invalid_description",
            Some("description"),
        ),
        (
            with("integration", json!("bank_transfer")),
            400,
            "invalid_integration",
            Some("integration"),
        ),
        (
            with("integration", json!("jsapi")),
            400,
            "openid_required",
            Some("payer.openid"),
        ),
        (
            with("integration", json!("h5")),
            400,
            "client_ip_required",
            Some("client_ip"),
        ),
        (
            with("client_ip", json!("999.1.1.1")),
            400,
            "invalid_client_ip",
            Some("client_ip"),
        ),
        (
            with("expires_at", json!("tomorrow")),
            400,
            "invalid_expires_at",
            Some("expires_at"),
        ),
        (
            with("expires_at", json!("2001-01-01T00:00:00Z")),
            400,
            "invalid_expires_at",
            Some("expires_at"),
        ),
        (
            with("return_url", json!("javascript:alert(1)")),
            400,
            "invalid_return_url",
            Some("return_url"),
        ),
        (
            with("attach", json!("a".repeat(129))),
            400,
            "invalid_attach",
            Some("attach"),
        ),
        (
            with("surprise", json!(1)),
            400,
            "parameter_unknown",
            Some("surprise"),
        ),
        (without("amount"), 400, "parameter_missing", Some("amount")),
        ("{not json".to_string(), 400, "invalid_json", None),
        ("".to_string(), 400, "invalid_json", None),
        ("[1,2]".to_string(), 400, "invalid_type", None),
    ];
    for (body, status, code, param) in cases {
        let (got_status, answer) = t
            .call(
                reqwest::Method::POST,
                "/v1/payments",
                Some(body.clone()),
                &[],
            )
            .await;
        assert_eq!(got_status, status, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        if let Some(param) = param {
            assert_eq!(answer["error"]["param"], param, "{body}: {answer}");
        }
    }
    // Bad UTF-8 and oversized bodies.
    let bad_utf8 = t
        .http
        .post(format!("{}/v1/payments", t.base))
        .bearer_auth(&t.key)
        .header("Content-Type", "application/json")
        .body(b"{\"description\": \"\xff\xfe\"}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(bad_utf8.status(), 400);
    let huge = t
        .http
        .post(format!("{}/v1/payments", t.base))
        .bearer_auth(&t.key)
        .header("Content-Type", "application/json")
        .body(vec![b' '; 200_000])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    assert_eq!(huge.headers()["connection"], "close");
    let body: Value = huge.json().await.unwrap();
    assert_eq!(body["error"]["code"], "body_too_large");
    // No key, a wrong key, someone else's payment.
    let anonymous = t
        .http
        .post(format!("{}/v1/payments", t.base))
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = t
        .http
        .get(format!("{}/v1/payments/pay_x", t.base))
        .bearer_auth("wxk_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let (status, missing) = t
        .call(
            reqwest::Method::GET,
            "/v1/payments/pay_doesnotexist",
            None,
            &[],
        )
        .await;
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (404, Some("resource_missing"))
    );
    assert!(
        t.store
            .list_payments(
                &t.merchant_id,
                &wxgate_store::PaymentFilter {
                    limit: 10,
                    ..Default::default()
                }
            )
            .await
            .unwrap()
            .is_empty(),
        "nothing half-written"
    );
}

async fn openapi_document_lists_the_payments_api(t: TestGateway) {
    let doc: Value = t
        .http
        .get(format!("{}/openapi.json", t.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/payments",
        "/v1/payments/{id}",
        "/v1/payments/{id}/cancel",
        "/v1/payments/{id}/refunds",
        "/v1/refunds/{id}",
        "/v1/webhook_endpoints",
        "/v1/webhook_endpoints/{id}",
        "/v1/events",
        "/v1/events/{id}",
        "/v1/events/{id}/redeliver",
        "/v1/events/redeliver",
        "/v1/payment_links",
        "/v1/payment_links/{id}/payments",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    every_path_parameter_is_defined(&doc);
    let schemas = &doc["components"]["schemas"];
    for schema in [
        "Payment",
        "PaymentList",
        "Error",
        "CreatePayment",
        "Refund",
        "CreateRefund",
        "CreateEndpoint",
        "RedeliverRange",
    ] {
        assert!(
            schemas.get(schema).is_some(),
            "{schema} missing: {}",
            schemas
        );
    }
    assert!(
        doc["paths"]["/v1/payments"]["post"]["responses"]
            .get("201")
            .is_some()
    );

    // A listing of several, paged.
    for i in 0..3 {
        t.create(native(&format!("page_order_{i}"), 100 + i)).await;
    }
    let (_, first) = t
        .call(reqwest::Method::GET, "/v1/payments?limit=2", None, &[])
        .await;
    assert_eq!(
        (
            first["data"].as_array().unwrap().len(),
            first["has_more"].as_bool()
        ),
        (2, Some(true))
    );
    let cursor = first["data"][1]["id"].as_str().unwrap();
    let (_, second) = t
        .call(
            reqwest::Method::GET,
            &format!("/v1/payments?limit=2&starting_after={cursor}"),
            None,
            &[],
        )
        .await;
    assert_eq!(
        (
            second["data"].as_array().unwrap().len(),
            second["has_more"].as_bool()
        ),
        (1, Some(false))
    );
    let (status, bad) = t
        .call(reqwest::Method::GET, "/v1/payments?status=paid", None, &[])
        .await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (400, Some("invalid_status"))
    );
}

/// Every `{name}` of every path, the front doors' included, is a defined path parameter of
/// each of its operations (else generated clients and schema checkers refuse the document).
fn every_path_parameter_is_defined(doc: &Value) {
    let defined = |params: &Value| -> Vec<String> {
        params
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path" && p["required"] == true)
            .filter_map(|p| p["name"].as_str().map(str::to_string))
            .collect()
    };
    for (path, item) in doc["paths"].as_object().unwrap() {
        let named = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'));
        let named: Vec<&str> = named.collect();
        for (method, operation) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let mut known = defined(&item["parameters"]);
            known.extend(defined(&operation["parameters"]));
            for name in &named {
                assert!(
                    known.iter().any(|k| k == name),
                    "{method} {path}: {{{name}}} undefined"
                );
            }
        }
    }
}

/// The process dies after WeChat created (and the shopper paid) the order but before the
/// gateway stored WeChat's answer, and the callback is lost too: the pending payment's due sync
/// finds the truth.
async fn a_crash_between_wechat_and_the_commit_is_repaired(t: TestGateway) {
    // What the gateway had committed before calling WeChat: a pending payment, sync due.
    let now = wxgate_gateway::now_ms();
    let id = wxgate_domain::id::generate("pay");
    let row = wxgate_store::PaymentRow {
        id: id.clone(),
        merchant_id: t.merchant_id.clone(),
        merchant_order_id: order("crash"),
        out_trade_no: id.clone(),
        amount: 321,
        currency: "CNY".into(),
        description: "Blue mug".into(),
        integration: wxgate_domain::PaymentIntegration::Product(wxgate_domain::Integration::Native),
        status: wxgate_domain::PaymentStatus::Pending,
        version: 1,
        fingerprint: "f".into(),
        payer_openid: None,
        client_ip: None,
        return_url: None,
        cancel_url: None,
        attach: None,
        metadata: "{}".into(),
        wechat_credential: None,
        transaction_id: None,
        paid_at: None,
        expires_at: now + 3_600_000,
        created_at: now,
        updated_at: now,
        sync_due_at: Some(now + 100),
        sync_attempts: 0,
        claimed_until: None,
        notify_url: None,
        amount_refunded: 0,
        amount_reserved: 0,
        refund_count: 0,
        checkout_token: None,
        hosted_url: None,
        checkout_kind: None,
        payment_link_id: None,
        payer_amount: None,
        payer_currency: None,
        exchange_rate: None,
        door: None,
    };
    t.store.insert_payment(&row).await.unwrap();
    // What WeChat did meanwhile: the order exists and is paid; its callback is dropped.
    t.sim_call(
        reqwest::Method::PUT,
        &format!("/sim/merchants/{}/faults", t.mchid),
        Some(json!({"drop_callback_rate": 1.0})),
    )
    .await;
    let up = t.gateway.upstream(&t.merchant_id).await.unwrap();
    let prepay = wechatpay_v3::model::PrepayRequest {
        appid: t.appid.clone(),
        mchid: t.mchid.clone(),
        description: "Blue mug".into(),
        out_trade_no: id.clone(),
        notify_url: t.gateway.notify_url(&t.merchant_id),
        amount: wechatpay_v3::model::Amount {
            total: 321,
            currency: Some("CNY".into()),
        },
        ..Default::default()
    };
    let code = up
        .client(Api::Order)
        .await
        .prepay_native(&prepay)
        .await
        .unwrap();
    t.pay(json!({"code_url": code.code_url})).await;
    let repaired = t.wait_status(&id, "succeeded").await;
    assert_eq!(repaired["status_history"][1]["source"], "sync");
    assert_eq!(t.event_types(&id).await, ["payment.succeeded"]);
}

/// WeChat proves money moved for a payment the gateway had failed: it cannot be applied, so it
/// is quarantined for a person, acknowledged (WeChat need not retry for a day), and the payment
/// keeps its state.
async fn a_paid_callback_for_a_failed_payment_is_quarantined_not_retried(t: TestGateway) {
    let (_, p) = t.create(native(&order("failed"), 450)).await;
    let id = p["id"].as_str().unwrap().to_string();
    let facts = wxgate_store::TransitionFacts {
        now: wxgate_gateway::now_ms(),
        source: "test".into(),
        ..Default::default()
    };
    t.store
        .transition(
            &t.merchant_id,
            &id,
            wxgate_domain::PaymentEvent::Failed,
            &facts,
            wxgate_gateway::views::event_payload,
        )
        .await
        .unwrap();
    t.pay(json!({"code_url": p["next_action"]["display_qr_code"]["data"]}))
        .await;
    let quarantined = t.wait_quarantined(&id).await;
    assert_eq!(quarantined.len(), 1);
    assert_eq!(t.get(&id).await["status"], "failed");
    let (_, log) = t
        .sim_call(
            reqwest::Method::GET,
            &format!("/sim/callbacks?out_trade_no={id}"),
            None,
        )
        .await;
    for _ in 0..5000 {
        let (_, log) = t
            .sim_call(
                reqwest::Method::GET,
                &format!("/sim/callbacks?out_trade_no={id}"),
                None,
            )
            .await;
        if log["data"][0]["acknowledged"] == true {
            assert_eq!(log["data"][0]["attempts"], json!([204]));
            return;
        }
    }
    panic!("the callback was not acknowledged: {log}");
}

async fn cross_border_payments_go_through_the_global_endpoints(t: TestGateway) {
    // Before the first request, so no cache holds the domestic merchant.
    assert!(
        t.store
            .set_merchant_region(&t.merchant_id, "USD,HKD", Some("5411"))
            .await
            .unwrap()
    );
    let usd = |order_id: &str, amount: i64| json!({"amount": amount, "currency": "USD", "merchant_order_id": order_id, "description": "Blue mug", "integration": "native"});
    let (status, p) = t.create(usd(&order("gb"), 1999)).await;
    assert_eq!(status, 201, "{p}");
    assert_eq!(p["currency"], "USD");
    let id = p["id"].as_str().unwrap().to_string();
    let order_at_wechat = |id: String| {
        let t = &t;
        async move {
            let (status, o) = t
                .sim_call(
                    reqwest::Method::GET,
                    &format!("/sim/orders/{}/{id}", t.mchid),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{o}");
            o
        }
    };
    let o = order_at_wechat(id.clone()).await;
    assert_eq!(o["order"]["family"], "global");
    assert_eq!(o["order"]["currency"], "USD");
    t.pay(json!({"code_url": p["next_action"]["display_qr_code"]["data"]}))
        .await;
    let paid = t.wait_status(&id, "succeeded").await;
    // The payer paid in CNY at WeChat's rate, and the payment says so.
    let o = order_at_wechat(id.clone()).await;
    let at_wechat = &o["transaction"]["amount"];
    assert!(at_wechat["exchange_rate"].is_object(), "{o}");
    assert_eq!(
        paid["wechat"]["payer_amount"],
        json!({"amount": at_wechat["payer_total"], "currency": "CNY"}),
        "{paid}"
    );
    assert_eq!(
        at_wechat["payer_total"],
        wechatpay_v3::model::payer_total_cny(1999, 712_340_000, 2)
    );
    assert_eq!(paid["wechat"]["exchange_rate"], "7.1234", "{paid}");

    // Only the merchant's pricing currencies.
    for currency in ["CNY", "JPY"] {
        let mut body = usd(&order("gc"), 100);
        body["currency"] = json!(currency);
        let (status, e) = t.create(body).await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (400, Some("currency_not_allowed")),
            "{currency}: {e}"
        );
    }

    // Cancel closes at the global endpoint; refunds go through it too.
    let (_, other) = t.create(usd(&order("gx"), 500)).await;
    let other_id = other["id"].as_str().unwrap();
    let (status, cancelled) = t
        .call(
            reqwest::Method::POST,
            &format!("/v1/payments/{other_id}/cancel"),
            None,
            &[],
        )
        .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled"))
    );
    assert_eq!(
        order_at_wechat(other_id.to_string()).await["order"]["state"],
        "CLOSED"
    );
    let (status, r) = t
        .call(
            reqwest::Method::POST,
            &format!("/v1/payments/{id}/refunds"),
            Some(json!({"merchant_refund_id": "g1", "amount": 999}).to_string()),
            &[],
        )
        .await;
    assert_eq!((status, r["currency"].as_str()), (201, Some("USD")), "{r}");
    let rid = r["id"].as_str().unwrap().to_string();
    t.wait_for(&format!("/v1/refunds/{rid}"), |r| {
        r["status"] == "succeeded"
    })
    .await;
    let p = t.get(&id).await;
    assert_eq!(
        (p["status"].as_str(), p["amount_refunded"].as_i64()),
        (Some("succeeded"), Some(999))
    );
    let refunds = order_at_wechat(id.clone()).await["refunds"].clone();
    assert_eq!(refunds.as_array().unwrap().len(), 1, "{refunds}");
}

async fn qr_images_of_a_pending_native_payment(t: TestGateway) {
    let mut body = native(&order("qr"), 300);
    body["inline_qr_images"] = json!(true);
    let (_, p) = t.create(body).await;
    let id = p["id"].as_str().unwrap().to_string();
    let qr = &p["next_action"]["display_qr_code"];
    assert!(qr["image_svg"].as_str().unwrap().contains("<svg"));
    assert_eq!(
        qr["image_png_url"],
        format!("{}/v1/payments/{id}/qr.png", t.base)
    );
    // Read back, the payment carries the image URLs, not the images.
    let again = t.get(&id).await;
    let stored = &again["next_action"]["display_qr_code"];
    assert!(stored.get("image_png_base64").is_none(), "{stored}");
    assert_eq!(stored["image_svg_url"], qr["image_svg_url"]);
    let fetch = |path: String| {
        let t = &t;
        async move {
            let res = t
                .http
                .get(format!("{}{path}", t.base))
                .bearer_auth(&t.key)
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let kind = res
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            (status, kind, res.bytes().await.unwrap().to_vec())
        }
    };
    let (status, kind, small) = fetch(format!("/v1/payments/{id}/qr.png?scale=2")).await;
    assert_eq!((status, kind.as_str()), (200, "image/png"));
    assert_eq!(&small[..8], b"\x89PNG\r\n\x1a\n");
    let (_, _, large) = fetch(format!("/v1/payments/{id}/qr.png?scale=12")).await;
    assert!(large.len() > small.len());
    // The default image is the one embedded in the API answer.
    let (_, _, default) = fetch(format!("/v1/payments/{id}/qr.png")).await;
    use base64::Engine;
    let embedded = base64::engine::general_purpose::STANDARD
        .decode(
            p["next_action"]["display_qr_code"]["image_png_base64"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(default, embedded);
    let (status, kind, svg) = fetch(format!("/v1/payments/{id}/qr.svg?size=300")).await;
    assert_eq!((status, kind.as_str()), (200, "image/svg+xml"));
    assert!(String::from_utf8(svg).unwrap().contains("<svg"));
    for (path, code) in [
        (
            format!("/v1/payments/{id}/qr.png?scale=21"),
            "invalid_scale",
        ),
        (
            format!("/v1/payments/{id}/qr.png?scale=big"),
            "invalid_query",
        ),
        (format!("/v1/payments/{id}/qr.svg?size=99"), "invalid_size"),
        (
            format!("/v1/payments/{id}/qr.svg?colour=red"),
            "invalid_query",
        ),
    ] {
        let (status, _, body) = fetch(path.clone()).await;
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{path}"
        );
    }
    // Only while it can be paid, and only for a native payment.
    t.pay(json!({"code_url": p["next_action"]["display_qr_code"]["data"]}))
        .await;
    t.wait_status(&id, "succeeded").await;
    let (status, _, body) = fetch(format!("/v1/payments/{id}/qr.svg")).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("no_qr_code"))
    );
    let (status, _, _) = fetch("/v1/payments/pay_nope/qr.png".into()).await;
    assert_eq!(status, 404);
}

/// WeChat Pay Global's Native payment, step by step as its document tells it (system 004): the
/// unified order through `/v3/global/` answers a code_url, valid for two hours and not payable
/// after; the payer scans and pays; the asynchronous notification is acknowledged; and when no
/// notification arrives, the query finds the payment.
async fn wechat_pay_global_native_payment_as_documented(t: TestGateway) {
    assert!(
        t.store
            .set_merchant_region(&t.merchant_id, "USD,HKD", Some("5411"))
            .await
            .unwrap()
    );
    let create = |order_id: String| {
        json!({"amount": 2500, "currency": "HKD", "merchant_order_id": order_id,
            "description": "Global native", "integration": "native"})
    };
    let sim_order = |out_trade_no: String| {
        let t = &t;
        async move {
            let path = format!("/sim/orders/{}/{out_trade_no}", t.mchid);
            t.sim_call(reqwest::Method::GET, &path, None).await.1
        }
    };
    // Steps 1–4: the unified order (a Global one) answers a code_url for the QR code.
    let (status, p) = t.create(create(order("gn"))).await;
    assert_eq!(status, 201, "{p}");
    let qr = &p["next_action"]["display_qr_code"];
    let code_url = qr["data"].as_str().unwrap().to_string();
    assert!(code_url.starts_with("weixin://"), "{p}");
    let out_trade_no = p["wechat"]["out_trade_no"].as_str().unwrap().to_string();
    let at_wechat = sim_order(out_trade_no.clone()).await;
    assert_eq!(at_wechat["order"]["family"], "global", "{at_wechat}");
    assert_eq!(at_wechat["order"]["trade_type"], "NATIVE");
    // Valid for at most two hours.
    let created = time::OffsetDateTime::parse(p["created_at"].as_str().unwrap(), &Rfc3339).unwrap();
    let expires =
        time::OffsetDateTime::parse(qr["expires_at"].as_str().unwrap(), &Rfc3339).unwrap();
    assert!(expires - created <= time::Duration::hours(2), "{p}");

    // Steps 5–10: the payer scans and pays; the notification comes and is acknowledged.
    let id = p["id"].as_str().unwrap().to_string();
    t.pay(json!({"code_url": code_url})).await;
    t.wait_status(&id, "succeeded").await;
    let path = format!(
        "/sim/callbacks?mchid={}&out_trade_no={out_trade_no}",
        t.mchid
    );
    // The payment may have been found by a query first: the callback's answer follows.
    let mut sent = Value::Null;
    for _ in 0..5000 {
        sent = t.sim_call(reqwest::Method::GET, &path, None).await.1;
        if sent["data"][0]["acknowledged"] == true {
            break;
        }
        tokio::task::yield_now().await;
    }
    let callback = &sent["data"][0];
    assert_eq!(callback["event_type"], "TRANSACTION.SUCCESS", "{sent}");
    assert_eq!(callback["acknowledged"], true, "{sent}");
    assert_eq!(callback["attempts"][0], 204, "{sent}");

    // Step 11: no notification arrives; the query finds the payment.
    let (_, lost) = t.create(create(order("gq"))).await;
    let (status, _) = t
        .sim_call(
            reqwest::Method::PUT,
            &format!("/sim/merchants/{}/faults", t.mchid),
            Some(json!({"drop_callback_rate": 1.0})),
        )
        .await;
    assert_eq!(status, 200);
    t.pay(json!({"code_url": lost["next_action"]["display_qr_code"]["data"]}))
        .await;
    let found = t
        .wait_status(lost["id"].as_str().unwrap(), "succeeded")
        .await;
    let no = found["wechat"]["out_trade_no"].as_str().unwrap();
    let path = format!("/sim/callbacks?mchid={}&out_trade_no={no}", t.mchid);
    assert_eq!(
        t.sim_call(reqwest::Method::GET, &path, None).await.1["data"][0]["dropped"],
        true
    );

    // After two hours the code_url can no longer be paid.
    let (_, late) = t.create(create(order("gl"))).await;
    let (status, _) = t
        .sim_call(
            reqwest::Method::POST,
            "/sim/clock",
            Some(json!({"advance_secs": 2 * 3600 + 1})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, refused) = t
        .sim_call(
            reqwest::Method::POST,
            "/sim/payer/pay",
            Some(json!({"code_url": late["next_action"]["display_qr_code"]["data"]})),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["code"], "PREPAY_EXPIRED", "{refused}");
}

/// `/healthz` answers while the process runs, `/readyz` once the database answers with this
/// binary's schema; every answer names its request (the caller's id kept, a bad one replaced).
async fn health_readiness_and_request_ids(t: TestGateway) {
    for path in ["/healthz", "/readyz"] {
        let res = t
            .http
            .get(format!("{}{path}", t.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert!(
            res.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .starts_with("req_")
        );
    }
    let res = t
        .http
        .get(format!("{}/v1/payments", t.base))
        .header("X-Request-Id", "shop-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["x-request-id"], "shop-7f3a");
    let res = t
        .http
        .get(format!("{}/healthz", t.base))
        .header("X-Request-Id", "x".repeat(200))
        .send()
        .await
        .unwrap();
    assert!(
        res.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    // A database this binary's migrations do not all reach is not ready.
    t.store.forget_migration_for_test(11).await.unwrap();
    let res = t
        .http
        .get(format!("{}/readyz", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "not_ready", "{body}");
}

/// `/metrics`, scraped and parsed: requests by route pattern (never an id), payments by status
/// and integration, the backlogs.
async fn metrics_are_scraped_and_parse(t: TestGateway) {
    // An endpoint that refuses every delivery (the gateway's own health check takes no POST).
    let endpoint = json!({"url": format!("{}/health", t.base), "events": ["payment.succeeded"]});
    let (status, _) = t
        .call(
            reqwest::Method::POST,
            "/v1/webhook_endpoints",
            Some(endpoint.to_string()),
            &[],
        )
        .await;
    assert_eq!(status, 201);
    let id = t.paid_native(100).await;
    let mut attempted = false;
    for _ in 0..5000 {
        let text = t.metrics().await;
        if text.contains(r#"wxgate_webhook_attempts_total{outcome="failed"}"#) {
            attempted = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(attempted, "a failed webhook attempt is counted");
    let res = t
        .http
        .get(format!("{}/metrics", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = res.text().await.unwrap();
    let mut samples = std::collections::HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        samples.insert(name.to_string(), value);
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(!text.contains(&id), "no ids in labels");
    let created = samples
        .get(r#"wxgate_http_requests_total{route="/v1/payments",method="POST",status="201"}"#)
        .copied();
    assert!(created.is_some_and(|n| n >= 1.0), "{text}");
    assert!(
        samples.keys().any(
            |k| k.starts_with("wxgate_http_request_duration_seconds_bucket{")
                && k.contains(r#"route="/v1/payments/{id}""#)
        ),
        "{text}"
    );
    assert_eq!(
        samples.get(r#"wxgate_payments{status="succeeded",integration="native"}"#),
        Some(&1.0),
        "{text}"
    );
    assert!(
        samples.contains_key("wxgate_webhook_deliveries_pending"),
        "{text}"
    );
    assert!(samples.contains_key("wxgate_sync_due"), "{text}");
    let width = samples.get("wxgate_background_width").copied();
    assert!(
        width.is_some_and(|w| (2.0..=32.0).contains(&w)),
        "the background width is between its least and its full: {text}"
    );
    let learned: f64 = samples
        .iter()
        .filter(|(k, _)| k.starts_with("wxgate_payment_paid_lag_seconds_count{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        learned, 1.0,
        "the paid payment's lag is counted once: {text}"
    );
    let pools: Vec<_> = samples
        .iter()
        .filter(|(k, _)| k.starts_with("wxgate_db_connections{") && k.contains(r#"state="max""#))
        .collect();
    assert!(
        !pools.is_empty() && pools.iter().all(|(_, v)| **v >= 1.0),
        "{text}"
    );
    dashboard_names_only_known_metrics(&text);
    let prepaid = samples
        .get(r#"wxgate_upstream_calls_total{endpoint="POST /v3/pay/transactions/native",status="200",code=""}"#)
        .copied();
    assert!(prepaid.is_some_and(|n| n >= 1.0), "{text}");
    assert!(
        !text.contains("out-trade-no/pay"),
        "no ids in upstream endpoints"
    );
}

/// Every metric the example Grafana dashboard queries is one the gateway exposes.
fn dashboard_names_only_known_metrics(exposition: &str) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana-dashboard.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (at, _) in expr.match_indices("wxgate_") {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let family = ["_bucket", "_total"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(&name);
                assert!(
                    exposition.contains(&format!("# TYPE {family} ")),
                    "the dashboard queries {name}, which the gateway does not expose"
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 10, "the dashboard queries the gateway's metrics");
}
