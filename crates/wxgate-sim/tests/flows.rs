//! The crate's own Rust client against the real simulator: every flow, both signing modes.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;
use wechatpay_v3::client::ClientError;
use wechatpay_v3::error::ErrorCode;
use wechatpay_v3::model::*;
use wechatpay_v3::paysign::{AppPayParams, JsapiPayParams};
use wechatpay_v3::verify::VerifyError;

fn api_code(e: &ClientError) -> ErrorCode {
    e.api()
        .unwrap_or_else(|| panic!("not an API error: {e}"))
        .code
        .clone()
}

async fn native_flow(signing: &str) {
    let sim = TestSim::start().await;
    let m = sim.merchant(signing).await;
    let mut rx = Receiver::start(0).await;
    let no = unique("native_");

    // Prepay and query an unpaid order.
    let code = m
        .client
        .prepay_native(&m.prepay(&no, 101, &rx.url))
        .await
        .unwrap();
    assert!(
        code.code_url.starts_with("weixin://wxpay/bizpayurl?pr="),
        "{}",
        code.code_url
    );
    let tx = m.client.query_by_out_trade_no(&no).await.unwrap();
    assert_eq!(tx.trade_state, "NOTPAY");
    assert!(tx.transaction_id.is_none() && tx.payer.is_none() && tx.success_time.is_none());

    // The payer scans and pays; the callback arrives, verifies and decrypts.
    let (status, paid) = sim.pay(json!({"code_url": code.code_url})).await;
    assert_eq!(status, 200, "{paid}");
    let callback = rx.next().await;
    let opened = m.open(&callback);
    assert_eq!(opened.envelope.event_type, "TRANSACTION.SUCCESS");
    assert_eq!(
        opened.envelope.resource.associated_data.as_deref(),
        Some("transaction")
    );
    assert_eq!(opened.envelope.resource.nonce.len(), 12);
    let notified: Transaction = opened.resource().unwrap();
    assert_eq!(notified.out_trade_no, no);
    assert_eq!(notified.trade_state, "SUCCESS");
    assert_eq!(notified.amount.as_ref().unwrap().total, Some(101));
    let transaction_id = notified.transaction_id.clone().unwrap();
    assert_eq!(transaction_id.len(), 28);
    assert!(transaction_id.bytes().all(|b| b.is_ascii_digit()));

    // Query by either id agrees with the callback.
    let by_id = m
        .client
        .query_by_transaction_id(&transaction_id)
        .await
        .unwrap();
    assert_eq!(by_id, m.client.query_by_out_trade_no(&no).await.unwrap());
    assert_eq!(by_id.trade_state, "SUCCESS");
    assert_eq!(by_id.trade_type.as_deref(), Some("NATIVE"));

    // Refund: PROCESSING at once, then SUCCESS with a callback; the order turns REFUND.
    let refund_no = unique("r_");
    let refund = m
        .client
        .refund(&RefundRequest {
            out_trade_no: Some(no.clone()),
            out_refund_no: refund_no.clone(),
            amount: RefundAmountRequest {
                refund: 100,
                total: 101,
                currency: "CNY".into(),
                from: None,
            },
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(refund.status, RefundStatus::Processing);
    assert!(refund.refund_id.starts_with("50") && refund.refund_id.len() == 29);
    let refund_callback = m.open(&rx.next().await);
    assert_eq!(refund_callback.envelope.event_type, "REFUND.SUCCESS");
    let notified: RefundNotification = refund_callback.resource().unwrap();
    assert_eq!(
        (notified.out_refund_no.as_str(), notified.amount.refund),
        (refund_no.as_str(), 100)
    );
    let queried = m.client.query_refund(&refund_no).await.unwrap();
    assert_eq!(queried.status, RefundStatus::Success);
    assert!(queried.success_time.is_some());
    assert_eq!(
        m.client
            .query_by_out_trade_no(&no)
            .await
            .unwrap()
            .trade_state,
        "REFUND"
    );

    // Close another order: 204 (verified), then CLOSED; paying it is refused.
    let other = unique("close_");
    let other_code = m
        .client
        .prepay_native(&m.prepay(&other, 5, &rx.url))
        .await
        .unwrap();
    m.client.close(&other).await.unwrap();
    assert_eq!(
        m.client
            .query_by_out_trade_no(&other)
            .await
            .unwrap()
            .trade_state,
        "CLOSED"
    );
    let (status, _) = sim.pay(json!({"code_url": other_code.code_url})).await;
    assert_eq!(status, 409);

    // Unknown orders are 404 ORDER_NOT_EXIST.
    let missing = m
        .client
        .query_by_out_trade_no("no_such_order")
        .await
        .unwrap_err();
    assert_eq!(api_code(&missing), ErrorCode::OrderNotExist);
    sim.stop().await;
}

#[tokio::test]
async fn native_flow_in_public_key_mode() {
    native_flow("public_key").await;
}

#[tokio::test]
async fn native_flow_in_certificate_mode() {
    native_flow("certificate").await;
}

#[tokio::test]
async fn certificates_download_and_switching_period() {
    let sim = TestSim::start().await;
    let m = sim.merchant("certificate").await;
    // A client that starts knowing only the public key learns the certificate from
    // /v3/certificates and then verifies certificate-signed answers.
    let mut pk_only = wechatpay_v3::verify::Verifier::new();
    pk_only.add_public_key(
        m.bundle["platform_public_key_id"].as_str().unwrap(),
        wechatpay_v3::crypto::PublicKey::from_spki_pem(
            m.bundle["platform_public_key"].as_str().unwrap(),
        )
        .unwrap(),
    );
    let client = Merchant::client_with(&sim.base, &m.bundle, pk_only.clone(), |_| {});
    let err = client
        .query_by_out_trade_no("absent_order")
        .await
        .unwrap_err();
    assert_eq!(
        api_code(&err),
        ErrorCode::OrderNotExist,
        "errors are unsigned and still read"
    );
    let no = unique("cert_");
    let unverified = client
        .prepay_native(&m.prepay(&no, 1, NOWHERE))
        .await
        .unwrap_err();
    assert!(
        matches!(
            unverified,
            ClientError::Verify(VerifyError::UnknownSerial(_))
        ),
        "{unverified}"
    );
    let certs = client.refresh_certificates().await.unwrap();
    assert_eq!(certs.len(), 1);
    assert_eq!(
        certs[0].serial_no,
        m.bundle["platform_serial_no"].as_str().unwrap()
    );
    client
        .prepay_native(&m.prepay(&no, 1, NOWHERE))
        .await
        .unwrap();

    // Sending Wechatpay-Serial: PUB_KEY_ID_... asks for public-key signatures, as WeChat does
    // for merchants switching over.
    let asks_pk = Merchant::client_with(&sim.base, &m.bundle, pk_only, |c| {
        c.wechatpay_serial = Some(
            m.bundle["platform_public_key_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    });
    assert_eq!(
        asks_pk
            .query_by_out_trade_no(&no)
            .await
            .unwrap()
            .trade_state,
        "NOTPAY"
    );
    sim.stop().await;
}

#[tokio::test]
async fn tampered_and_unknown_requests_get_401() {
    let sim = TestSim::start().await;
    let m = sim.merchant("public_key").await;
    // A raw request signed over a different body.
    let auth = wechatpay_v3::auth::MerchantSigner {
        mchid: m.mchid.clone(),
        serial_no: m.bundle["merchant_serial_no"].as_str().unwrap().into(),
        key: wechatpay_v3::crypto::PrivateKey::from_pkcs8_pem(
            m.bundle["merchant_private_key"].as_str().unwrap(),
        )
        .unwrap(),
    };
    let body = serde_json::to_vec(&m.prepay("tampered_1", 1, NOWHERE)).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let header = auth
        .authorize("POST", "/v3/pay/transactions/native", b"{}", now, "n1")
        .header_value();
    let res = sim
        .http
        .post(format!("{}/v3/pay/transactions/native", sim.base))
        .header("Authorization", header)
        .header("Content-Type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let err: serde_json::Value = res.json().await.unwrap();
    assert_eq!(err["code"], "SIGN_ERROR");
    assert_eq!(
        err["detail"]["sign_information"]["url"],
        "/v3/pay/transactions/native"
    );

    // An unknown mchid, a wrong serial and a stale timestamp are refused too.
    for (mchid, serial, ts) in [
        ("1999999999", auth.serial_no.as_str(), now),
        (m.mchid.as_str(), "ABCDEF", now),
        (m.mchid.as_str(), auth.serial_no.as_str(), now - 600),
    ] {
        let signer = wechatpay_v3::auth::MerchantSigner {
            mchid: mchid.into(),
            serial_no: serial.into(),
            key: wechatpay_v3::crypto::PrivateKey::from_pkcs8_der(&auth.key.expose_pkcs8_der())
                .unwrap(),
        };
        let header = signer
            .authorize("POST", "/v3/pay/transactions/native", &body, ts, "n2")
            .header_value();
        let res = sim
            .http
            .post(format!("{}/v3/pay/transactions/native", sim.base))
            .header("Authorization", header)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{mchid} {serial} {ts}");
    }
    sim.stop().await;
}

#[tokio::test]
async fn prepay_idempotency_rules() {
    let sim = TestSim::start().await;
    let m = sim.merchant("public_key").await;
    let no = unique("idem_");
    let req = m.prepay(&no, 300, NOWHERE);
    let first = m.client.prepay_native(&req).await.unwrap();
    assert_eq!(
        m.client.prepay_native(&req).await.unwrap(),
        first,
        "same parameters, same code"
    );
    let mut changed = req.clone();
    changed.amount.total = 301;
    let err = m.client.prepay_native(&changed).await.unwrap_err();
    assert_eq!(api_code(&err), ErrorCode::InvalidRequest);
    assert_eq!(err.api().unwrap().status, 400);
    sim.pay(json!({"code_url": first.code_url})).await;
    assert_eq!(
        api_code(&m.client.prepay_native(&req).await.unwrap_err()),
        ErrorCode::OrderPaid
    );
    assert_eq!(
        api_code(&m.client.close(&no).await.unwrap_err()),
        ErrorCode::OrderPaid
    );

    let closed = unique("idem_closed_");
    let req = m.prepay(&closed, 300, NOWHERE);
    m.client.prepay_native(&req).await.unwrap();
    m.client.close(&closed).await.unwrap();
    assert_eq!(
        api_code(&m.client.prepay_native(&req).await.unwrap_err()),
        ErrorCode::OrderClosed
    );

    // Field checks answer PARAM_ERROR naming the field; the client refuses them before sending.
    let mut bad = m.prepay("short", 1, NOWHERE);
    assert!(
        matches!(m.client.prepay_native(&bad).await, Err(ClientError::Invalid(e)) if e.field == "/out_trade_no")
    );
    bad.out_trade_no = unique("bad_");
    bad.amount.total = 0;
    let raw = m
        .client
        .execute(
            Method::POST,
            "/v3/pay/transactions/native",
            Some(serde_json::to_vec(&bad).unwrap()),
        )
        .await
        .unwrap_err();
    let api = raw.api().unwrap();
    assert_eq!((api.status, api.code.clone()), (400, ErrorCode::ParamError));
    assert_eq!(api.detail.as_ref().unwrap()["field"], "/amount/total");
    sim.stop().await;
}

#[tokio::test]
async fn jsapi_app_and_h5_payments_with_client_side_signatures() {
    let sim = TestSim::start().await;
    let m = sim.merchant("public_key").await;
    let mut rx = Receiver::start(0).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    // JSAPI: the bundle for WeixinJSBridge, verified by the simulated WeChat app.
    let no = unique("jsapi_");
    let mut req = m.prepay(&no, 88, &rx.url);
    req.payer = Some(Payer {
        openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
    });
    let prepay = m.client.prepay_jsapi(&req).await.unwrap();
    assert!(
        prepay.prepay_id.starts_with("wx") && prepay.prepay_id.len() == 36,
        "{}",
        prepay.prepay_id
    );
    let bundle = JsapiPayParams::sign(
        &m.key,
        &m.appid,
        &prepay.prepay_id,
        now,
        &wechatpay_v3::nonce(32),
    );
    let mut forged = bundle.clone();
    forged.time_stamp = (now + 1).to_string();
    assert_eq!(sim.pay(json!({"jsapi": forged})).await.0, 400);
    let (status, body) = sim
        .pay(json!({"jsapi": bundle, "openid": "someone_else"}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("OPENID_MISMATCH"))
    );
    let (status, body) = sim.pay(json!({"jsapi": bundle})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["transaction"]["payer"]["openid"],
        "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
    );
    assert_eq!(
        m.open(&rx.next().await)
            .resource::<Transaction>()
            .unwrap()
            .trade_type
            .as_deref(),
        Some("JSAPI")
    );

    // JSAPI without payer is refused by the simulator's own rules too.
    let mut no_payer = m.prepay(&unique("jsapi_np_"), 1, &rx.url);
    no_payer.payer = None;
    let raw = m
        .client
        .execute(
            Method::POST,
            "/v3/pay/transactions/jsapi",
            Some(serde_json::to_vec(&no_payer).unwrap()),
        )
        .await
        .unwrap_err();
    assert_eq!(
        raw.api().unwrap().detail.as_ref().unwrap()["field"],
        "/payer/openid"
    );

    // APP: the OpenSDK PayReq bundle.
    let no = unique("app_");
    let prepay = m
        .client
        .prepay_app(&m.prepay(&no, 66, &rx.url))
        .await
        .unwrap();
    let app = AppPayParams::sign(
        &m.key,
        &m.appid,
        &m.mchid,
        &prepay.prepay_id,
        now,
        &wechatpay_v3::nonce(32),
    );
    let mut wrong = app.clone();
    wrong.sign =
        JsapiPayParams::sign(&m.key, &m.appid, &prepay.prepay_id, now, &app.noncestr).pay_sign;
    assert_eq!(
        sim.pay(json!({"app": wrong})).await.0,
        400,
        "a JSAPI signature is not an APP signature"
    );
    let (status, body) = sim.pay(json!({"app": app})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        m.open(&rx.next().await)
            .resource::<Transaction>()
            .unwrap()
            .trade_type
            .as_deref(),
        Some("APP")
    );

    // H5: the h5_url points at the simulator's cashier; it lasts five minutes.
    let no = unique("h5_");
    let mut req = m.prepay(&no, 77, &rx.url);
    req.scene_info = Some(SceneInfo {
        payer_client_ip: Some("203.0.113.9".into()),
        h5_info: Some(H5Info {
            kind: "Wap".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let h5 = m.client.prepay_h5(&req).await.unwrap();
    assert!(
        h5.h5_url.starts_with(&format!(
            "{}/cgi-bin/mmpayweb-bin/checkmweb?prepay_id=wx",
            sim.base
        )),
        "{}",
        h5.h5_url
    );
    let page = sim.http.get(&h5.h5_url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    sim.admin(
        Method::POST,
        "/sim/clock",
        Some(json!({"advance_secs": 301})),
    )
    .await;
    let (status, body) = sim.pay(json!({"h5_url": h5.h5_url})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("H5_URL_EXPIRED"))
    );
    let fresh = m.client.prepay_h5(&req).await.unwrap();
    assert_ne!(fresh.h5_url, h5.h5_url, "re-submitting gives a new h5_url");
    let (status, body) = sim.pay(json!({"h5_url": fresh.h5_url})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        m.open(&rx.next().await)
            .resource::<Transaction>()
            .unwrap()
            .trade_type
            .as_deref(),
        Some("MWEB")
    );
    sim.stop().await;
}

#[tokio::test]
async fn orders_expire_and_credentials_last_two_hours() {
    let sim = TestSim::start().await;
    let m = sim.merchant("public_key").await;
    let no = unique("exp_");
    let code = m
        .client
        .prepay_native(&m.prepay(&no, 1, NOWHERE))
        .await
        .unwrap();
    sim.admin(
        Method::POST,
        "/sim/clock",
        Some(json!({"advance_secs": 2 * 3600 + 1})),
    )
    .await;
    let (status, body) = sim.pay(json!({"code_url": code.code_url})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("PREPAY_EXPIRED"))
    );
    let renewed = m
        .client
        .prepay_native(&m.prepay(&no, 1, NOWHERE))
        .await
        .unwrap();
    assert_ne!(renewed.code_url, code.code_url);
    sim.admin(
        Method::POST,
        "/sim/clock",
        Some(json!({"advance_secs": 7 * 24 * 3600})),
    )
    .await;
    assert_eq!(
        m.client
            .query_by_out_trade_no(&no)
            .await
            .unwrap()
            .trade_state,
        "CLOSED"
    );

    // time_expire is honoured (raised to at least one minute from now).
    let soon = unique("exp_soon_");
    let mut req = m.prepay(&soon, 1, NOWHERE);
    req.time_expire = Some(wxgate_sim::rfc3339_cst(
        time::OffsetDateTime::now_utc().unix_timestamp() + 7 * 24 * 3600 + 2 * 3600 + 1 + 120,
    ));
    m.client.prepay_native(&req).await.unwrap();
    assert_eq!(
        m.client
            .query_by_out_trade_no(&soon)
            .await
            .unwrap()
            .trade_state,
        "NOTPAY"
    );
    sim.admin(
        Method::POST,
        "/sim/clock",
        Some(json!({"advance_secs": 3600})),
    )
    .await;
    assert_eq!(
        m.client
            .query_by_out_trade_no(&soon)
            .await
            .unwrap()
            .trade_state,
        "CLOSED"
    );
    sim.stop().await;
}

#[tokio::test]
async fn refund_rules() {
    let sim = TestSim::start().await;
    let m = sim.merchant("public_key").await;
    let no = unique("rr_");
    let code = m
        .client
        .prepay_native(&m.prepay(&no, 100, NOWHERE))
        .await
        .unwrap();
    let refund = |out_refund_no: String, amount: i64| RefundRequest {
        out_trade_no: Some(no.clone()),
        out_refund_no,
        amount: RefundAmountRequest {
            refund: amount,
            total: 100,
            currency: "CNY".into(),
            from: None,
        },
        ..Default::default()
    };
    let unpaid = m.client.refund(&refund(unique("r"), 1)).await.unwrap_err();
    assert_eq!(api_code(&unpaid), ErrorCode::InvalidRequest);
    sim.pay(json!({"code_url": code.code_url})).await;

    // Same out_refund_no, same parameters: the same refund, once.
    let first_no = unique("r");
    let a = m.client.refund(&refund(first_no.clone(), 2)).await.unwrap();
    let b = m.client.refund(&refund(first_no.clone(), 2)).await.unwrap();
    assert_eq!(a.refund_id, b.refund_id);
    assert_eq!(
        api_code(&m.client.refund(&refund(first_no, 3)).await.unwrap_err()),
        ErrorCode::InvalidRequest
    );
    for _ in 0..49 {
        m.client.refund(&refund(unique("r"), 1)).await.unwrap();
    }
    let fifty_first = m.client.refund(&refund(unique("r"), 1)).await.unwrap_err();
    assert_eq!(
        api_code(&fifty_first),
        ErrorCode::InvalidRequest,
        "at most 50 refunds per order"
    );

    let no2 = unique("rr2_");
    let code = m
        .client
        .prepay_native(&m.prepay(&no2, 100, NOWHERE))
        .await
        .unwrap();
    sim.pay(json!({"code_url": code.code_url})).await;
    let mut over = refund(unique("r"), 60);
    over.out_trade_no = Some(no2.clone());
    m.client.refund(&over).await.unwrap();
    over.out_refund_no = unique("r");
    let err = m.client.refund(&over).await.unwrap_err();
    assert_eq!(
        api_code(&err),
        ErrorCode::InvalidRequest,
        "never more than the paid total"
    );

    // A refund more than a year after payment is refused.
    sim.admin(
        Method::POST,
        "/sim/clock",
        Some(json!({"advance_secs": 366 * 24 * 3600})),
    )
    .await;
    let mut late = refund(unique("r"), 1);
    late.out_trade_no = Some(no2);
    assert_eq!(
        api_code(&m.client.refund(&late).await.unwrap_err()),
        ErrorCode::InvalidRequest
    );
    sim.stop().await;
}

#[tokio::test]
async fn cross_border_flow() {
    let sim = TestSim::start().await;
    let m = sim.merchant("public_key").await;
    let mut rx = Receiver::start(0).await;
    let no = unique("global_");
    let req = GlobalPrepayRequest {
        appid: m.appid.clone(),
        mchid: m.mchid.clone(),
        description: "Cross-border order".into(),
        out_trade_no: no.clone(),
        trade_type: "NATIVE".into(),
        merchant_category_code: "5812".into(),
        notify_url: rx.url.clone(),
        amount: Amount {
            total: 1000,
            currency: Some("USD".into()),
        },
        ..Default::default()
    };
    let answer = m
        .client
        .global_prepay(GlobalKind::Native, &req)
        .await
        .unwrap();
    let code_url = answer["code_url"].as_str().unwrap().to_string();
    let mut wrong = req.clone();
    wrong.trade_type = "JSAPI".into();
    assert!(
        matches!(m.client.global_prepay(GlobalKind::Native, &wrong).await, Err(ClientError::Invalid(e)) if e.field == "/trade_type")
    );
    sim.pay(json!({"code_url": code_url})).await;
    let tx: Transaction = m.open(&rx.next().await).resource().unwrap();
    let amount = tx.amount.unwrap();
    assert_eq!(
        (amount.total, amount.currency.as_deref()),
        (Some(1000), Some("USD"))
    );
    assert_eq!(amount.payer_currency.as_deref(), Some("CNY"));
    assert_eq!(amount.payer_total, Some(7123), "10.00 USD at 7.1234");
    assert_eq!(amount.exchange_rate.unwrap().rate, 712_340_000);
    let queried = m
        .client
        .global_query_by_transaction_id(tx.transaction_id.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(queried.merchant_category_code.as_deref(), Some("5812"));
    // The domestic path does not see a cross-border order.
    assert_eq!(
        api_code(&m.client.query_by_out_trade_no(&no).await.unwrap_err()),
        ErrorCode::OrderNotExist
    );

    let refund_no = unique("gr_");
    let refund = m
        .client
        .global_refund(&GlobalRefundRequest {
            mchid: m.mchid.clone(),
            appid: m.appid.clone(),
            out_trade_no: Some(no.clone()),
            out_refund_no: refund_no.clone(),
            amount: GlobalRefundAmountRequest {
                refund: 500,
                total: 1000,
                currency: "USD".into(),
            },
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(refund.amount.payer_refund, Some(3562));
    assert_eq!(
        m.open(&rx.next().await).envelope.event_type,
        "REFUND.SUCCESS"
    );
    assert_eq!(
        m.client
            .global_query_refund(&refund_no)
            .await
            .unwrap()
            .status,
        RefundStatus::Success
    );

    let other = unique("global_close_");
    let mut req2 = req.clone();
    req2.out_trade_no = other.clone();
    m.client
        .global_prepay(GlobalKind::Native, &req2)
        .await
        .unwrap();
    m.client.global_close(&other).await.unwrap();
    assert_eq!(
        m.client
            .global_query_by_out_trade_no(&other)
            .await
            .unwrap()
            .trade_state,
        "CLOSED"
    );
    statements_of_the_day(&sim, &m, &no, &refund_no).await;
    sim.stop().await;
}

/// The day's statement: being built today, then the payment and the refund in minor units,
/// its digest and signature checked by the client; a probe signature is refused.
async fn statements_of_the_day(sim: &TestSim, m: &Merchant, paid: &str, refund_no: &str) {
    use wechatpay_v3::bill::statement;
    let (_, clock) = sim.admin(Method::GET, "/sim/clock", None).await;
    let req = StatementsRequest {
        date: clock["now"].as_str().unwrap()[..10].to_string(),
        mchid: m.mchid.clone(),
    };
    assert_eq!(
        m.client.global_statements(&req).await.unwrap(),
        StatementOutcome::Creating
    );
    sim.admin(
        Method::POST,
        "/sim/clock",
        Some(json!({"advance_secs": 33 * 3600})),
    )
    .await;
    let StatementOutcome::Ready(csv) = m.client.global_statements(&req).await.unwrap() else {
        panic!("no statement")
    };
    let mut rows = Vec::new();
    statement::read_rows(&csv, |r| rows.push(r)).unwrap();
    let payment = rows
        .iter()
        .find(|r| r.out_trade_no == paid && r.trade_state == "SUCCESS")
        .unwrap();
    assert_eq!(
        (
            payment.currency.as_str(),
            payment.amount.minor_units("amount", 2).unwrap()
        ),
        ("USD", 1000)
    );
    assert_eq!(payment.payer_currency, "CNY");
    assert!(payment.payer_amount.minor_units("payer", 2).unwrap() > 1000);
    let refund = rows.iter().find(|r| r.out_refund_no == refund_no).unwrap();
    assert_eq!(
        (
            refund.trade_state.as_str(),
            refund.refund_requested.minor_units("refund", 2).unwrap()
        ),
        ("REFUND", 500)
    );
    let mut earlier = req.clone();
    earlier.date = "2000-01-01".into();
    assert!(
        m.client.global_statements(&earlier).await.is_err(),
        "too far back"
    );
    sim.set_faults(&m.mchid, json!({"signature_probe_rate": 1.0}))
        .await;
    let refused = m.client.global_statements(&req).await.unwrap_err();
    assert!(matches!(refused, ClientError::Verify(_)), "{refused}");
    sim.clear_faults(&m.mchid).await;
}

#[tokio::test]
async fn webpage_authorization_gives_a_stable_openid() {
    let sim = TestSim::start().await;
    let m = sim.merchant("public_key").await;
    let (_, info) = sim
        .admin(Method::GET, &format!("/sim/merchants/{}", m.mchid), None)
        .await;
    let secret = info["app_secret"].as_str().unwrap();
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let authorize = format!(
        "{}/connect/oauth2/authorize?appid={}&redirect_uri={}&response_type=code&scope=snsapi_base&state=xyz#wechat_redirect",
        sim.base,
        m.appid,
        wechatpay_v3::model::query_value("https://shop.example/checkout?order=1")
    );
    let res = no_redirect.get(&authorize).send().await.unwrap();
    assert_eq!(res.status(), 303);
    let location = url::Url::parse(res.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(location.host_str(), Some("shop.example"));
    let params: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(params["state"], "xyz");
    assert_eq!(params["order"], "1");
    let token_url = |code: &str, secret: &str| {
        format!(
            "{}/sns/oauth2/access_token?appid={}&secret={secret}&code={code}&grant_type=authorization_code",
            sim.base, m.appid
        )
    };
    let wrong: serde_json::Value = sim
        .http
        .get(token_url(&params["code"], "bad"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(wrong["errcode"], 40125);
    let token: serde_json::Value = sim
        .http
        .get(token_url(&params["code"], secret))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let openid = token["openid"].as_str().unwrap();
    assert_eq!(openid.len(), 28);
    assert_eq!(openid, wxgate_sim::payer::openid_for(&m.appid, "payer"));
    let reused: serde_json::Value = sim
        .http
        .get(token_url(&params["code"], secret))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reused["errcode"], 40029, "a code works once");
    sim.stop().await;
}

#[tokio::test]
async fn state_survives_a_restart_with_a_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let config = || wxgate_sim::SimConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let sim = TestSim::start_with(config()).await;
    let m = sim.merchant("certificate").await;
    let no = unique("persist_");
    m.client
        .prepay_native(&m.prepay(&no, 9, NOWHERE))
        .await
        .unwrap();
    sim.stop().await;
    let sim = TestSim::start_with(config()).await;
    let client = Merchant::client_with(&sim.base, &m.bundle, m.verifier.clone(), |_| {});
    assert_eq!(
        client.query_by_out_trade_no(&no).await.unwrap().trade_state,
        "NOTPAY"
    );
    sim.stop().await;
}

/// Pays `amounts` as native orders and waits for their callbacks: their out_trade_nos.
async fn paid_orders(
    sim: &TestSim,
    m: &Merchant,
    rx: &mut Receiver,
    amounts: &[i64],
) -> Vec<String> {
    let mut paid = Vec::new();
    for &amount in amounts {
        let no = unique("bill_");
        let code = m
            .client
            .prepay_native(&m.prepay(&no, amount, &rx.url))
            .await
            .unwrap();
        sim.pay(json!({"code_url": code.code_url})).await;
        rx.next().await;
        paid.push(no);
    }
    paid
}

async fn bill_of(m: &Merchant, date: &str, gzip: bool) -> BillOutcome {
    m.client
        .trade_bill(&TradeBillRequest {
            bill_date: date.to_string(),
            bill_type: Some("ALL".into()),
            tar_type: gzip.then(|| "GZIP".into()),
        })
        .await
        .unwrap()
}

async fn download(m: &Merchant, outcome: BillOutcome, gzip: bool) -> (Vec<u8>, String) {
    let BillOutcome::Ready(answer) = outcome else {
        panic!("no bill: {outcome:?}")
    };
    let url = url::Url::parse(&answer.download_url).unwrap();
    let raw = m
        .client
        .execute(
            Method::GET,
            &format!("{}?{}", url.path(), url.query().unwrap()),
            None,
        )
        .await
        .unwrap();
    let content_type = raw.headers["content-type"].to_str().unwrap().to_string();
    (
        m.client.download_bill(&answer, gzip).await.unwrap(),
        content_type,
    )
}

#[tokio::test]
async fn bills_come_the_next_morning_with_fees_and_fund_flows() {
    use wechatpay_v3::bill::{self, Fee, FlowDirection, FundFlowBill, TradeBill, TradeRowState};
    let sim = TestSim::start().await;
    let m = sim.merchant("public_key").await;
    let mut rx = Receiver::start(0).await;
    let paid = paid_orders(&sim, &m, &mut rx, &[101, 250, 1000]).await;
    let refund_no = unique("bill_r_");
    m.client
        .refund(&RefundRequest {
            out_trade_no: Some(paid[0].clone()),
            out_refund_no: refund_no.clone(),
            amount: RefundAmountRequest {
                refund: 100,
                total: 101,
                currency: "CNY".into(),
                from: None,
            },
            ..Default::default()
        })
        .await
        .unwrap();
    rx.next().await;
    let (_, clock) = sim.admin(Method::GET, "/sim/clock", None).await;
    let now = clock["now"].as_str().unwrap().to_string();
    let today = now[..10].to_string();
    assert_eq!(
        bill_of(&m, &today, false).await,
        BillOutcome::Creating,
        "{now}"
    );

    // 33 hours on, whatever the hour was, it is past 09:00 the next day.
    sim.admin(
        Method::POST,
        "/sim/clock",
        Some(json!({"advance_secs": 33 * 3600})),
    )
    .await;
    let date = time::Date::parse(
        &today,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .unwrap();
    let day_before = (date - time::Duration::days(1)).to_string();
    assert_eq!(
        bill_of(&m, &day_before, false).await,
        BillOutcome::NoStatement
    );
    let (gz, gz_type) = download(&m, bill_of(&m, &today, true).await, true).await;
    let (plain, plain_type) = download(&m, bill_of(&m, &today, false).await, false).await;
    assert_eq!(gz, plain);
    assert_eq!(
        (gz_type.as_str(), plain_type.as_str()),
        ("application/x-gzip", "text/plain;charset=utf-8")
    );
    let trade = TradeBill::parse(&plain).unwrap();
    assert_eq!(
        (trade.layout, trade.legacy),
        (bill::TradeLayout::All, false)
    );
    let mut fees: Vec<(i64, i64)> = trade
        .rows
        .iter()
        .map(|r| (r.settlement_total, r.fee.fen_rounded()))
        .collect();
    fees.sort();
    assert_eq!(
        fees,
        [(0, -1), (101, 1), (250, 2), (1000, 6)],
        "0.6 % rounded to the fen, returned on the refund"
    );
    let refund_row = trade
        .rows
        .iter()
        .find(|r| r.state == TradeRowState::Refund)
        .unwrap();
    let refund = refund_row.refund.as_ref().unwrap();
    assert_eq!(
        (refund.out_refund_no.as_str(), refund.amount),
        (refund_no.as_str(), 100)
    );
    assert_eq!(refund_row.out_trade_no, paid[0]);
    assert_eq!(trade.summary.count, 4);
    assert_eq!(trade.summary.settlement_total, Some(1351));
    assert_eq!(trade.summary.refund_total, Some(100));
    assert_eq!(trade.summary.fee_total, Some(Fee(8_000)));

    let flow = m
        .client
        .fund_flow_bill(&FundFlowBillRequest {
            bill_date: today.clone(),
            account_type: Some("BASIC".into()),
            tar_type: None,
        })
        .await
        .unwrap();
    let (flow, _) = download(&m, flow, false).await;
    let flow = FundFlowBill::parse(&flow).unwrap();
    let kinds: Vec<&str> = flow.rows.iter().map(|r| r.business_type.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "交易",
            "扣除交易手续费",
            "交易",
            "扣除交易手续费",
            "交易",
            "扣除交易手续费",
            "退款",
            "退还交易手续费"
        ]
    );
    assert_eq!(flow.rows[6].direction, FlowDirection::Expense);
    assert_eq!(flow.rows.last().unwrap().balance, 1351 - 9 - 100 + 1);
    assert_eq!((flow.summary.income, flow.summary.expense), (1352, 109));

    // Each bill fault once: the first payment missing, the second one fen high and printed
    // twice, a stranger's payment, the refund still processing.
    sim.set_faults(
        &m.mchid,
        json!({"bill": {"missing_rows": 1, "extra_rows": 1, "amount_off_rows": 1,
        "refund_processing_rows": 1, "duplicate_rows": 1}}),
    )
    .await;
    let (faulty, _) = download(&m, bill_of(&m, &today, false).await, false).await;
    let faulty = TradeBill::parse(&faulty).unwrap();
    let rows: Vec<(&str, i64)> = faulty
        .rows
        .iter()
        .filter(|r| r.state == TradeRowState::Success)
        .map(|r| (r.out_trade_no.as_str(), r.settlement_total))
        .filter(|(no, _)| !no.starts_with("stranger_"))
        .collect();
    // Rows of one second have no set order, so which payment each fault took is not fixed.
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0], rows[1], "the doubled row comes twice: {rows:?}");
    let original = |no: &str| [101, 250, 1000][paid.iter().position(|p| p == no).unwrap()];
    assert_eq!(rows[0].1, original(rows[0].0) + 1, "one fen high");
    assert_eq!(rows[2].1, original(rows[2].0));
    assert_ne!(rows[0].0, rows[2].0);
    assert_eq!(
        faulty
            .rows
            .iter()
            .filter(|r| r.out_trade_no.starts_with("stranger_"))
            .count(),
        1
    );
    let refund_row = faulty
        .rows
        .iter()
        .find(|r| r.state == TradeRowState::Refund)
        .unwrap();
    assert_eq!(
        refund_row.refund.as_ref().unwrap().status,
        bill::BillRefundStatus::Processing
    );
    sim.stop().await;
}

fn marketing_transfer(
    m: &Merchant,
    out_bill_no: &str,
    amount: i64,
    notify_url: &str,
) -> TransferBillRequest {
    TransferBillRequest {
        appid: m.appid.clone(),
        out_bill_no: out_bill_no.to_string(),
        transfer_scene_id: "1000".into(),
        openid: "o-payee-0001".into(),
        transfer_amount: amount,
        transfer_remark: "新会员开户有礼".into(),
        notify_url: Some(notify_url.to_string()),
        transfer_scene_report_infos: vec![
            SceneReportInfo {
                info_type: "活动名称".into(),
                info_content: "新会员有礼".into(),
            },
            SceneReportInfo {
                info_type: "奖励说明".into(),
                info_content: "注册奖励".into(),
            },
        ],
        ..Default::default()
    }
}

async fn operation_balance(sim: &TestSim, mchid: &str) -> i64 {
    let (status, b) = sim
        .admin(
            Method::GET,
            &format!("/sim/merchants/{mchid}/operation_balance"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{b}");
    b["operation_balance"].as_i64().unwrap()
}

#[tokio::test]
async fn transfers_wait_for_the_payee_and_end_with_a_notification() {
    let sim = TestSim::start().await;
    let m = sim.merchant("public_key").await;
    let mut rx = Receiver::start(0).await;
    let opening = operation_balance(&sim, &m.mchid).await;
    assert_eq!(opening, 10_000_000, "100,000.00 CNY");

    // Created: waiting for the payee, the money held; the same number again is the same bill.
    let req = marketing_transfer(&m, &unique("tb").replace('_', ""), 400, &rx.url);
    let made = m.client.create_transfer(&req).await.unwrap();
    assert_eq!(made.state, TransferState::WaitUserConfirm);
    let package = made.package_info.clone().unwrap();
    assert_eq!(made.transfer_bill_no.len(), 34);
    assert_eq!(m.client.create_transfer(&req).await.unwrap(), made);
    let mut other = req.clone();
    other.transfer_amount = 401;
    assert_eq!(
        api_code(&m.client.create_transfer(&other).await.unwrap_err()),
        ErrorCode::InvalidRequest
    );
    assert_eq!(operation_balance(&sim, &m.mchid).await, opening - 400);

    // The payee confirms: SUCCESS, notified, the same by either number.
    let (status, confirmed) = sim
        .admin(
            Method::POST,
            "/sim/payee/confirm",
            Some(json!({"package_info": package, "outcome": "confirm"})),
        )
        .await;
    assert_eq!(
        (status, confirmed["state"].as_str()),
        (200, Some("SUCCESS")),
        "{confirmed}"
    );
    let opened = m.open(&rx.next().await);
    assert_eq!(opened.envelope.event_type, "MCHTRANSFER.BILL.FINISHED");
    assert_eq!(opened.envelope.resource.original_type, "mch_payment");
    let finished: TransferNotification = opened.resource().unwrap();
    assert_eq!(
        (finished.state, finished.transfer_amount),
        (TransferState::Success, 400)
    );
    let by_no = m.client.query_transfer(&req.out_bill_no).await.unwrap();
    assert_eq!(
        by_no,
        m.client
            .query_transfer_by_bill_no(&made.transfer_bill_no)
            .await
            .unwrap()
    );
    assert_eq!(
        (by_no.state, by_no.mch_id.as_str()),
        (TransferState::Success, m.mchid.as_str())
    );

    // Cancelled before confirmation: CANCELING, then CANCELLED, the money back.
    let second = marketing_transfer(&m, &unique("tc").replace('_', ""), 250, &rx.url);
    m.client.create_transfer(&second).await.unwrap();
    let cancel = m.client.cancel_transfer(&second.out_bill_no).await.unwrap();
    assert_eq!(cancel.state, TransferState::Canceling);
    assert_eq!(
        m.client
            .query_transfer(&second.out_bill_no)
            .await
            .unwrap()
            .state,
        TransferState::Cancelled
    );
    let cancelled: TransferNotification = m.open(&rx.next().await).resource().unwrap();
    assert_eq!(cancelled.state, TransferState::Cancelled);
    assert_eq!(
        api_code(
            &m.client
                .cancel_transfer(&second.out_bill_no)
                .await
                .unwrap_err()
        ),
        ErrorCode::InvalidRequest
    );
    assert_eq!(operation_balance(&sim, &m.mchid).await, opening - 400);

    // A payee who never answers: FAIL (OVERDUE_CLOSE) a day later, the money back.
    let third = marketing_transfer(&m, &unique("td").replace('_', ""), 300, &rx.url);
    m.client.create_transfer(&third).await.unwrap();
    sim.admin(
        Method::POST,
        "/sim/clock",
        Some(json!({"advance_secs": 24 * 3600})),
    )
    .await;
    let expired = m.client.query_transfer(&third.out_bill_no).await.unwrap();
    assert_eq!(
        (expired.state, expired.fail_reason.as_deref()),
        (TransferState::Fail, Some("OVERDUE_CLOSE"))
    );
    assert_eq!(
        m.open(&rx.next().await)
            .resource::<TransferNotification>()
            .unwrap()
            .state,
        TransferState::Fail
    );
    assert_eq!(operation_balance(&sim, &m.mchid).await, opening - 400);
    sim.stop().await;
}

#[tokio::test]
async fn transfer_rules_names_and_the_operation_account() {
    let sim = TestSim::start().await;
    let m = sim.merchant("public_key").await;
    let rx = Receiver::start(0).await;
    let platform_key =
        wechatpay_v3::PublicKey::from_spki_pem(m.bundle["platform_public_key"].as_str().unwrap())
            .unwrap();
    let key_id = m.bundle["platform_public_key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let named = Merchant::client_with(&sim.base, &m.bundle, m.verifier.clone(), |c| {
        c.wechatpay_serial = Some(key_id.clone())
    });
    let mut req = marketing_transfer(&m, "named0001", 500, &rx.url);
    req.user_name = Some(platform_key.encrypt_oaep("张三".as_bytes()).unwrap());
    assert_eq!(
        named.create_transfer(&req).await.unwrap().state,
        TransferState::WaitUserConfirm
    );
    // Without Wechatpay-Serial the name cannot be opened; a name in clear is refused too.
    req.out_bill_no = "named0002".into();
    assert_eq!(
        api_code(&m.client.create_transfer(&req).await.unwrap_err()),
        ErrorCode::ParamError
    );
    req.user_name = Some("张三".into());
    assert_eq!(
        api_code(&named.create_transfer(&req).await.unwrap_err()),
        ErrorCode::ParamError
    );
    // Over WeChat's default bound of 200 yuan.
    let big = marketing_transfer(&m, "big0001", 20_001, &rx.url);
    assert_eq!(
        api_code(&m.client.create_transfer(&big).await.unwrap_err()),
        ErrorCode::InvalidRequest
    );
    // An empty operation account: NOT_ENOUGH, and nothing is made.
    let balance = operation_balance(&sim, &m.mchid).await;
    let (status, _) = sim
        .admin(
            Method::POST,
            &format!("/sim/merchants/{}/operation_balance", m.mchid),
            Some(json!({"amount": -balance})),
        )
        .await;
    assert_eq!(status, 200);
    let short = marketing_transfer(&m, "short0001", 100, &rx.url);
    assert_eq!(
        api_code(&m.client.create_transfer(&short).await.unwrap_err()),
        ErrorCode::NotEnough
    );
    assert!(m.client.query_transfer("short0001").await.is_err());
    sim.admin(
        Method::POST,
        &format!("/sim/merchants/{}/operation_balance", m.mchid),
        Some(json!({"amount": 100})),
    )
    .await;
    assert_eq!(
        m.client.create_transfer(&short).await.unwrap().state,
        TransferState::WaitUserConfirm
    );
    sim.stop().await;
}
