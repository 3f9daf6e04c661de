//! Fault injection and callback delivery, as the gateway's resilience tests will use them.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::json;
use wechatpay_v3::client::ClientError;
use wechatpay_v3::error::ErrorCode;
use wechatpay_v3::model::Transaction;
use wechatpay_v3::verify::VerifyError;

/// Polls the simulator's callback log until `done` holds for this order's entries.
async fn callback_log(
    sim: &TestSim,
    out_trade_no: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    for _ in 0..2000 {
        let (_, body) = sim
            .admin(
                Method::GET,
                &format!("/sim/callbacks?out_trade_no={out_trade_no}"),
                None,
            )
            .await;
        let list = body["data"].as_array().cloned().unwrap_or_default();
        if done(&list) {
            return list;
        }
        // Each round trip to the simulator lets its delivery tasks run; no fixed waits.
        tokio::task::yield_now().await;
    }
    panic!("callback log for {out_trade_no} never reached the expected state");
}

#[tokio::test]
async fn callbacks_are_retried_on_the_schedule_until_acknowledged() {
    let sim = TestSim::start().await;
    let m = sim.merchant("public_key").await;
    let mut rx = Receiver::start(3).await;
    let no = unique("retry_");
    let code = m
        .client
        .prepay_native(&m.prepay(&no, 1, &rx.url))
        .await
        .unwrap();
    sim.pay(json!({"code_url": code.code_url})).await;
    let callback = rx.next().await;
    assert_eq!(
        m.open(&callback)
            .resource::<Transaction>()
            .unwrap()
            .out_trade_no,
        no
    );
    assert_eq!(rx.seen.load(Ordering::SeqCst), 4);
    let log = callback_log(&sim, &no, |l| {
        l.first().is_some_and(|c| c["acknowledged"] == true)
    })
    .await;
    assert_eq!(log[0]["attempts"], json!([500, 500, 500, 204]));
    sim.stop().await;
}

#[tokio::test]
async fn server_errors_are_retried_by_the_client_then_reported() {
    let sim = TestSim::start().await;
    let m = sim.merchant("public_key").await;
    sim.set_faults(&m.mchid, json!({"error_500_rate": 1.0}))
        .await;
    let err = m
        .client
        .query_by_out_trade_no("nothing_here")
        .await
        .unwrap_err();
    assert_eq!(err.api().unwrap().code, ErrorCode::SystemError);
    assert!(err.is_retryable());
    sim.set_faults(&m.mchid, json!({"error_429_rate": 1.0}))
        .await;
    let err = m
        .client
        .query_by_out_trade_no("nothing_here")
        .await
        .unwrap_err();
    assert_eq!(err.api().unwrap().code, ErrorCode::FrequencyLimited);
    sim.clear_faults(&m.mchid).await;
    let err = m
        .client
        .query_by_out_trade_no("nothing_here")
        .await
        .unwrap_err();
    assert_eq!(err.api().unwrap().code, ErrorCode::OrderNotExist);
    assert!(!err.is_retryable());
    sim.stop().await;
}

#[tokio::test]
async fn a_timeout_after_commit_leaves_the_order_created() {
    let sim = TestSim::start().await;
    let m = sim.merchant("public_key").await;
    sim.set_faults(
        &m.mchid,
        json!({"timeout_after_commit_rate": 1.0, "hang_ms": 3000}),
    )
    .await;
    let impatient = Merchant::client_with(&sim.base, &m.bundle, m.verifier.clone(), |c| {
        c.timeout = Duration::from_millis(300);
        c.attempts_max = 1;
    });
    let no = unique("hang_");
    let req = m.prepay(&no, 5, NOWHERE);
    let err = impatient.prepay_native(&req).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout), "{err}");
    sim.clear_faults(&m.mchid).await;
    // The order exists: a query finds it and the same prepay gives its code.
    assert_eq!(
        m.client
            .query_by_out_trade_no(&no)
            .await
            .unwrap()
            .trade_state,
        "NOTPAY"
    );
    m.client.prepay_native(&req).await.unwrap();
    sim.stop().await;
}

#[tokio::test]
async fn signature_probes_are_refused_by_the_client() {
    let sim = TestSim::start().await;
    let m = sim.merchant("certificate").await;
    sim.set_faults(&m.mchid, json!({"signature_probe_rate": 1.0}))
        .await;
    let no = unique("probe_");
    let err = m
        .client
        .prepay_native(&m.prepay(&no, 5, NOWHERE))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Verify(VerifyError::SignatureProbe)),
        "{err}"
    );
    sim.stop().await;
}

#[tokio::test]
async fn probe_callbacks_come_first_then_real_ones() {
    let sim = TestSim::start().await;
    let m = sim.merchant("public_key").await;
    // The receiver verifies like a merchant must: it refuses the probe with 401, and WeChat's
    // retry carries a valid signature.
    let mut rx = Receiver::verifying(m.verifier.clone()).await;
    let no = unique("probecb_");
    let code = m
        .client
        .prepay_native(&m.prepay(&no, 1, &rx.url))
        .await
        .unwrap();
    sim.set_faults(&m.mchid, json!({"signature_probe_rate": 1.0}))
        .await;
    sim.pay(json!({"code_url": code.code_url})).await;
    let callback = rx.next().await;
    m.open(&callback);
    let log = callback_log(&sim, &no, |l| {
        l.first().is_some_and(|c| c["acknowledged"] == true)
    })
    .await;
    assert_eq!(log[0]["attempts"], json!([401, 204]));
    sim.stop().await;
}

#[tokio::test]
async fn dropped_duplicated_and_reordered_callbacks() {
    let sim = TestSim::start().await;
    let m = sim.merchant("public_key").await;
    let mut rx = Receiver::start(0).await;

    sim.set_faults(&m.mchid, json!({"drop_callback_rate": 1.0}))
        .await;
    let dropped = unique("drop_");
    let code = m
        .client
        .prepay_native(&m.prepay(&dropped, 1, &rx.url))
        .await
        .unwrap();
    sim.pay(json!({"code_url": code.code_url})).await;
    // The callback is logged before the payer's answer, so no waiting is needed.
    let (_, body) = sim
        .admin(
            Method::GET,
            &format!("/sim/callbacks?out_trade_no={dropped}"),
            None,
        )
        .await;
    let log = body["data"].as_array().unwrap().clone();
    assert_eq!(log[0]["dropped"], true);
    assert_eq!(
        m.client
            .query_by_out_trade_no(&dropped)
            .await
            .unwrap()
            .trade_state,
        "SUCCESS",
        "query still tells the truth"
    );

    sim.set_faults(&m.mchid, json!({"duplicate_callback_rate": 1.0}))
        .await;
    let twice = unique("dup_");
    let code = m
        .client
        .prepay_native(&m.prepay(&twice, 1, &rx.url))
        .await
        .unwrap();
    sim.pay(json!({"code_url": code.code_url})).await;
    let a = rx.next().await;
    let b = rx.next().await;
    assert_eq!(
        m.open(&a).envelope.id,
        m.open(&b).envelope.id,
        "the same notification twice"
    );

    sim.set_faults(
        &m.mchid,
        json!({"reorder_callback_rate": 1.0, "reorder_delay_ms": 2000}),
    )
    .await;
    let late = unique("late_");
    let code = m
        .client
        .prepay_native(&m.prepay(&late, 1, &rx.url))
        .await
        .unwrap();
    sim.pay(json!({"code_url": code.code_url})).await;
    sim.clear_faults(&m.mchid).await;
    let early = unique("early_");
    let code = m
        .client
        .prepay_native(&m.prepay(&early, 1, &rx.url))
        .await
        .unwrap();
    sim.pay(json!({"code_url": code.code_url})).await;
    let first: Transaction = m.open(&rx.next().await).resource().unwrap();
    let second: Transaction = m.open(&rx.next().await).resource().unwrap();
    assert_eq!((first.out_trade_no, second.out_trade_no), (early, late));
    sim.stop().await;
}

#[tokio::test]
async fn paid_after_close_race() {
    let sim = TestSim::start().await;
    let m = sim.merchant("public_key").await;
    let mut rx = Receiver::start(0).await;
    let no = unique("pac_");
    m.client
        .prepay_native(&m.prepay(&no, 42, &rx.url))
        .await
        .unwrap();
    sim.set_faults(&m.mchid, json!({"paid_after_close": true}))
        .await;
    m.client.close(&no).await.unwrap();
    let after = m.client.query_by_out_trade_no(&no).await.unwrap();
    assert_eq!(
        after.trade_state, "SUCCESS",
        "close said 204 but the payment slipped in"
    );
    assert_eq!(
        m.open(&rx.next().await)
            .resource::<Transaction>()
            .unwrap()
            .out_trade_no,
        no
    );
    sim.stop().await;
}

#[tokio::test]
async fn refund_outcomes_and_not_enough() {
    let sim = TestSim::start().await;
    let m = sim.merchant("public_key").await;
    let mut rx = Receiver::start(0).await;
    let no = unique("ro_");
    let code = m
        .client
        .prepay_native(&m.prepay(&no, 100, &rx.url))
        .await
        .unwrap();
    sim.pay(json!({"code_url": code.code_url})).await;
    rx.next().await;
    let refund = |n: String| wechatpay_v3::model::RefundRequest {
        out_trade_no: Some(no.clone()),
        out_refund_no: n,
        amount: wechatpay_v3::model::RefundAmountRequest {
            refund: 10,
            total: 100,
            currency: "CNY".into(),
            from: None,
        },
        ..Default::default()
    };
    sim.set_faults(&m.mchid, json!({"refund_not_enough": true}))
        .await;
    let err = m.client.refund(&refund(unique("rn"))).await.unwrap_err();
    assert_eq!(err.api().unwrap().code, ErrorCode::NotEnough);
    for (outcome, event) in [("closed", "REFUND.CLOSED"), ("abnormal", "REFUND.ABNORMAL")] {
        sim.set_faults(&m.mchid, json!({"refund_outcome": outcome}))
            .await;
        let r = unique("ro");
        m.client.refund(&refund(r.clone())).await.unwrap();
        assert_eq!(m.open(&rx.next().await).envelope.event_type, event);
        assert_eq!(
            m.client.query_refund(&r).await.unwrap().status.as_str(),
            outcome.to_uppercase()
        );
    }
    sim.stop().await;
}

#[tokio::test]
async fn fault_settings_are_validated() {
    let sim = TestSim::start().await;
    let (status, _) = sim
        .admin(
            Method::PUT,
            "/sim/faults",
            Some(json!({"error_500_rate": 2.0})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = sim
        .admin(
            Method::PUT,
            "/sim/faults",
            Some(json!({"no_such_fault": true})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, body) = sim
        .admin(Method::PUT, "/sim/faults", Some(json!({"latency_ms": 1})))
        .await;
    assert_eq!((status, body["latency_ms"].as_u64()), (200, Some(1)));
    let (status, _) = sim.admin(Method::DELETE, "/sim/faults", None).await;
    assert_eq!(status, 204);
    sim.stop().await;
}

/// A stand-in for WeChat that fails its first `failures` requests inside (500) and refuses
/// every later one with `then` (status, code): its base URL.
async fn fails_then_refuses(failures: usize, then: (u16, &'static str)) -> String {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    let seen = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().fallback(move || {
        let seen = seen.clone();
        async move {
            let (status, code) = if seen.fetch_add(1, Ordering::SeqCst) < failures {
                (500, "SYSTEM_ERROR")
            } else {
                then
            };
            let status = axum::http::StatusCode::from_u16(status).unwrap();
            (status, axum::Json(json!({"code": code, "message": code})))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test]
async fn a_refusal_after_an_unclear_attempt_does_not_say_nothing_was_done() {
    let sim = TestSim::start().await;
    let m = sim.merchant("public_key").await;
    let client = |base: &str| Merchant::client_with(base, &m.bundle, m.verifier.clone(), |_| {});
    let refund = || Some(br#"{"out_refund_no":"r1"}"#.to_vec());
    const REFUNDS: &str = "/v3/refund/domestic/refunds";
    // A request that changes something: its first attempt may have been applied.
    let base = fails_then_refuses(1, (403, "NOT_ENOUGH")).await;
    let err = client(&base)
        .execute(Method::POST, REFUNDS, refund())
        .await
        .unwrap_err();
    let ClientError::RefusedAfterUnclear(refusal) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(refusal.code, ErrorCode::NotEnough);
    assert!(err.api().is_none() && !err.is_retryable());
    // Refused at once: a plain refusal.
    let base = fails_then_refuses(0, (403, "NOT_ENOUGH")).await;
    let err = client(&base)
        .execute(Method::POST, REFUNDS, refund())
        .await
        .unwrap_err();
    assert_eq!(err.api().unwrap().code, ErrorCode::NotEnough, "{err:?}");
    // A read changes nothing: its answer after a 500 is the plain answer.
    let base = fails_then_refuses(1, (404, "ORDER_NOT_EXIST")).await;
    let err = client(&base)
        .execute(
            Method::GET,
            "/v3/pay/transactions/out-trade-no/o1?mchid=1",
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.api().unwrap().code, ErrorCode::OrderNotExist, "{err:?}");
    sim.stop().await;
}
