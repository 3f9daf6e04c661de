//! Refunds end to end against the real simulator: the rules, concurrency, WeChat's faults and
//! outcomes, and the automatic refund of a payment that arrived after its order was closed;
//! with them the other money that leaves: payouts (payouts/), and reconciliation (money/).

use std::time::Duration;
use wxgate_gateway::pace::Api;

use serde_json::{Value, json};
use wxgate_store::testing;

mod common;
use common::{TestGateway, native, order};
mod payouts;
use payouts::{
    a_confirmed_payout_succeeds_once_and_leaves_the_ledger,
    a_payout_run_again_under_its_key_is_the_same_payout, a_send_starts_only_within_its_claim,
    declined_ignored_and_cancelled_payouts_release_their_reserve,
    lost_and_doubled_answers_make_one_transfer, not_enough_waits_then_goes_through_once_topped_up,
    payout_input_is_checked,
};
mod money;
use money::{
    a_clean_day_reconciles_and_settles_the_ledger,
    a_cross_border_day_reconciles_against_the_statement,
    a_day_settled_in_another_currency_converts_in_the_ledger,
    a_payment_failed_here_and_paid_at_wechat_settles_nothing,
    a_pending_payment_wechat_paid_is_repaired,
    a_refund_mismatch_wechat_does_not_confirm_stays_open,
    an_open_discrepancy_is_repaired_by_a_later_sweep, coupons_are_settled_as_the_bills_say,
    each_bill_fault_is_found_and_nothing_else, reconciliation_input_is_checked,
    reports_stream_every_row_of_the_range, resolving_a_paid_mismatch_posts_its_held_settlement,
};

on_both!(
    a_confirmed_payout_succeeds_once_and_leaves_the_ledger,
    a_payout_run_again_under_its_key_is_the_same_payout,
    a_send_starts_only_within_its_claim,
    declined_ignored_and_cancelled_payouts_release_their_reserve,
    lost_and_doubled_answers_make_one_transfer,
    not_enough_waits_then_goes_through_once_topped_up,
    payout_input_is_checked,
    a_clean_day_reconciles_and_settles_the_ledger,
    a_cross_border_day_reconciles_against_the_statement,
    a_day_settled_in_another_currency_converts_in_the_ledger,
    each_bill_fault_is_found_and_nothing_else,
    coupons_are_settled_as_the_bills_say,
    reconciliation_input_is_checked,
    reports_stream_every_row_of_the_range,
    full_partial_and_refused_refunds,
    fifty_refunds_then_the_fifty_first_is_refused,
    twenty_concurrent_refunds_never_exceed_the_payment,
    wechat_faults_end_in_the_right_state_with_one_refund_at_wechat,
    closed_and_abnormal_refunds,
    a_paid_after_close_payment_is_refunded_by_policy,
);

// Scenarios in which only the test moves a payment on: no status query within the day.
on_both!(
    with quiet_sync = |c| c.sync_schedule_ms = vec![86_400_000];
    a_pending_payment_wechat_paid_is_repaired,
    a_payment_failed_here_and_paid_at_wechat_settles_nothing,
    an_open_discrepancy_is_repaired_by_a_later_sweep,
    a_refund_mismatch_wechat_does_not_confirm_stays_open,
    resolving_a_paid_mismatch_posts_its_held_settlement,
);

async fn refund(t: &TestGateway, payment_id: &str, body: Value) -> (u16, Value) {
    t.call(
        reqwest::Method::POST,
        &format!("/v1/payments/{payment_id}/refunds"),
        Some(body.to_string()),
        &[],
    )
    .await
}

async fn get_refund(t: &TestGateway, id: &str) -> Value {
    let (status, r) = t
        .call(
            reqwest::Method::GET,
            &format!("/v1/refunds/{id}"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200, "{r}");
    r
}

/// Polls the refund until `status`.
async fn wait_refund(t: &TestGateway, id: &str, status: &str) -> Value {
    t.wait_for(&format!("/v1/refunds/{id}"), |r| r["status"] == status)
        .await
}

/// The refunds the simulator (WeChat) holds for a payment.
async fn refunds_at_wechat(t: &TestGateway, payment_id: &str) -> Vec<Value> {
    let (status, order) = t
        .sim_call(
            reqwest::Method::GET,
            &format!("/sim/orders/{}/{payment_id}", t.mchid),
            None,
        )
        .await;
    assert_eq!(status, 200, "{order}");
    order["refunds"].as_array().unwrap().clone()
}

fn error(body: &Value) -> (&str, &str) {
    (
        body["error"]["code"].as_str().unwrap_or(""),
        body["error"]["param"].as_str().unwrap_or(""),
    )
}

async fn full_partial_and_refused_refunds(t: TestGateway) {
    let id = t.paid_native(1000).await;
    let (status, r1) = refund(
        &t,
        &id,
        json!({"amount": 300, "merchant_refund_id": "r1", "reason": "One cup broke"}),
    )
    .await;
    assert_eq!(status, 201, "{r1}");
    assert_eq!(r1["object"], "refund");
    assert_eq!(r1["payment_id"], id.as_str());
    assert_eq!(
        (r1["amount"].as_i64(), r1["currency"].as_str()),
        (Some(300), Some("CNY"))
    );
    let r1_id = r1["id"].as_str().unwrap().to_string();
    let done = wait_refund(&t, &r1_id, "succeeded").await;
    assert!(done["wechat"]["refund_id"].is_string());
    assert!(done["succeeded_at"].is_string());
    let p = t.get(&id).await;
    assert_eq!(
        (p["status"].as_str(), p["amount_refunded"].as_i64()),
        (Some("succeeded"), Some(300))
    );

    // The same merchant_refund_id: the same refund; with other parameters: refused.
    let (status, again) = refund(
        &t,
        &id,
        json!({"amount": 300, "merchant_refund_id": "r1", "reason": "One cup broke"}),
    )
    .await;
    assert_eq!((status, again["id"].as_str()), (200, Some(r1_id.as_str())));
    let (status, taken) = refund(&t, &id, json!({"amount": 200, "merchant_refund_id": "r1"})).await;
    assert_eq!(
        (status, error(&taken)),
        (409, ("merchant_refund_id_taken", "merchant_refund_id"))
    );

    // The rules, each with its own code.
    let (status, over) = refund(&t, &id, json!({"amount": 701, "merchant_refund_id": "r2"})).await;
    assert_eq!(
        (status, error(&over)),
        (409, ("refund_exceeds_payment", "amount"))
    );
    let (status, huge) = refund(
        &t,
        &id,
        json!({"amount": i64::MAX, "merchant_refund_id": "r2"}),
    )
    .await;
    assert_eq!(
        (status, error(&huge)),
        (409, ("refund_exceeds_payment", "amount"))
    );
    let (status, zero) = refund(&t, &id, json!({"amount": 0, "merchant_refund_id": "r2"})).await;
    assert_eq!((status, error(&zero)), (400, ("invalid_amount", "amount")));
    // Not taken as the merchant's: spaces, and the prefixes of the gateway's own refunds.
    for taken in ["r 2", "dup_pay_1", "pac_pay_1"] {
        let (status, bad) = refund(&t, &id, json!({"merchant_refund_id": taken})).await;
        assert_eq!(
            (status, error(&bad)),
            (400, ("invalid_merchant_refund_id", "merchant_refund_id")),
            "{taken}"
        );
    }
    let (status, bad) = refund(
        &t,
        &id,
        json!({"merchant_refund_id": "r2", "reason": "x".repeat(81)}),
    )
    .await;
    assert_eq!((status, error(&bad)), (400, ("invalid_reason", "reason")));
    let (status, bad) = refund(&t, &id, json!({"merchant_refund_id": "r2", "colour": 1})).await;
    assert_eq!(
        (status, error(&bad)),
        (400, ("parameter_unknown", "colour"))
    );
    let (status, missing) = refund(&t, "pay_nope", json!({"merchant_refund_id": "r2"})).await;
    assert_eq!((status, error(&missing).0), (404, "resource_missing"));
    let (_, pending) = t.create(native(&order("unpaid"), 500)).await;
    let (status, unpaid) = refund(
        &t,
        pending["id"].as_str().unwrap(),
        json!({"merchant_refund_id": "r3"}),
    )
    .await;
    assert_eq!((status, error(&unpaid).0), (409, "payment_not_refundable"));

    // The rest, by default: the payment becomes refunded; nothing is left.
    let (status, rest) = refund(&t, &id, json!({"merchant_refund_id": "r4"})).await;
    assert_eq!((status, rest["amount"].as_i64()), (201, Some(700)));
    wait_refund(&t, rest["id"].as_str().unwrap(), "succeeded").await;
    let p = t.wait_status(&id, "refunded").await;
    assert_eq!(p["amount_refunded"], 1000);
    let (status, none_left) = refund(&t, &id, json!({"merchant_refund_id": "r5"})).await;
    assert_eq!(
        (status, error(&none_left).0),
        (409, "payment_not_refundable")
    );

    let (_, list) = t
        .call(
            reqwest::Method::GET,
            &format!("/v1/payments/{id}/refunds"),
            None,
            &[],
        )
        .await;
    let listed: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["merchant_refund_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["r1", "r4"]);
    assert_eq!(refunds_at_wechat(&t, &id).await.len(), 2);
    assert_eq!(
        t.event_types(&id).await,
        ["payment.succeeded", "payment.refunded"]
    );
    assert_eq!(t.event_types(&r1_id).await, ["refund.succeeded"]);

    // An Idempotency-Key replays the first answer.
    let id2 = t.paid_native(100).await;
    let body = json!({"amount": 40, "merchant_refund_id": "k1"}).to_string();
    let headers = [("Idempotency-Key", "refund-key-1")];
    let path = format!("/v1/payments/{id2}/refunds");
    let (s1, a) = t
        .call(reqwest::Method::POST, &path, Some(body.clone()), &headers)
        .await;
    let (s2, b) = t
        .call(reqwest::Method::POST, &path, Some(body), &headers)
        .await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(a, b);
}

async fn fifty_refunds_then_the_fifty_first_is_refused(t: TestGateway) {
    let id = t.paid_native(100).await;
    for i in 0..50 {
        let (status, r) = refund(
            &t,
            &id,
            json!({"amount": 1, "merchant_refund_id": format!("f{i}")}),
        )
        .await;
        assert_eq!(status, 201, "refund {i}: {r}");
    }
    let (status, r) = refund(&t, &id, json!({"amount": 1, "merchant_refund_id": "f50"})).await;
    assert_eq!((status, error(&r).0), (409, "too_many_refunds"));
    assert_eq!(refunds_at_wechat(&t, &id).await.len(), 50);
    // Once all fifty have settled, the ledger took each out once.
    for _ in 0..5000 {
        if t.get(&id).await["amount_refunded"] == 50 {
            break;
        }
        tokio::task::yield_now().await;
    }
    money::ledger_holds(&t).await;
    assert_eq!(money::balance(&t).await, (-50, 100));
}

async fn twenty_concurrent_refunds_never_exceed_the_payment(t: TestGateway) {
    let id = t.paid_native(1000).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (http, base, key, id) = (t.http.clone(), t.base.clone(), t.key.clone(), id.clone());
            tokio::spawn(async move {
                let res = http
                    .post(format!("{base}/v1/payments/{id}/refunds"))
                    .bearer_auth(key)
                    .json(&json!({"amount": 150, "merchant_refund_id": format!("c{i}")}))
                    .send()
                    .await
                    .unwrap();
                (res.status().as_u16(), res.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut created = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            201 => created.push(body["id"].as_str().unwrap().to_string()),
            409 => assert_eq!(error(&body).0, "refund_exceeds_payment", "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    // 6 × 150 = 900 fits in 1000; a seventh would not.
    assert_eq!(created.len(), 6);
    for r in &created {
        wait_refund(&t, r, "succeeded").await;
    }
    let p = t.get(&id).await;
    assert_eq!(
        (p["amount_refunded"].as_i64(), p["status"].as_str()),
        (Some(900), Some("succeeded"))
    );
    let at_wechat = refunds_at_wechat(&t, &id).await;
    let total: i64 = at_wechat
        .iter()
        .map(|r| r["refund"].as_i64().unwrap())
        .sum();
    assert_eq!((at_wechat.len(), total), (6, 900));
    // The ledger saw each refund once: 1000 in, 900 out.
    money::ledger_holds(&t).await;
    assert_eq!(money::balance(&t).await, (-900, 1000));
}

async fn wechat_faults_end_in_the_right_state_with_one_refund_at_wechat(t: TestGateway) {
    // WeChat answers 500 every time: the refund waits, visibly, and goes through once WeChat
    // is back.
    let id = t.paid_native(100).await;
    t.set_faults(json!({"error_500_rate": 1.0})).await;
    let (status, r) = refund(&t, &id, json!({"merchant_refund_id": "e500"})).await;
    assert_eq!(
        (status, r["status"].as_str()),
        (201, Some("pending")),
        "{r}"
    );
    assert!(
        r["last_error"]
            .as_str()
            .unwrap()
            .contains("500 SYSTEM_ERROR"),
        "{r}"
    );
    t.set_faults(json!({})).await;
    wait_refund(&t, r["id"].as_str().unwrap(), "succeeded").await;
    assert_eq!(refunds_at_wechat(&t, &id).await.len(), 1);

    // The refund callback is lost: the query finds the outcome.
    let id = t.paid_native(100).await;
    t.set_faults(json!({"drop_callback_rate": 1.0})).await;
    let (_, r) = refund(&t, &id, json!({"merchant_refund_id": "drop"})).await;
    wait_refund(&t, r["id"].as_str().unwrap(), "succeeded").await;
    t.set_faults(json!({})).await;
    assert_eq!(refunds_at_wechat(&t, &id).await.len(), 1);

    // NOT_ENOUGH: pending, saying why, and sent again until the balance allows it.
    let id = t.paid_native(100).await;
    t.set_faults(json!({"refund_not_enough": true})).await;
    let (status, r) = refund(&t, &id, json!({"merchant_refund_id": "poor"})).await;
    assert_eq!(
        (status, r["status"].as_str()),
        (201, Some("pending")),
        "{r}"
    );
    assert!(
        r["last_error"].as_str().unwrap().starts_with("NOT_ENOUGH"),
        "{r}"
    );
    let rid = r["id"].as_str().unwrap().to_string();
    // Still waiting after the background work has tried again.
    let mut tried_again = false;
    for _ in 0..5000 {
        let row = t.store.refund(&t.merchant_id, &rid).await.unwrap().unwrap();
        if row.sync_attempts >= 2 {
            tried_again = true;
            break;
        }
        tokio::task::yield_now().await;
        let _ = t.get(&id).await;
    }
    assert!(tried_again);
    assert_eq!(get_refund(&t, &rid).await["status"], "pending");
    assert!(refunds_at_wechat(&t, &id).await.is_empty());
    t.set_faults(json!({})).await;
    let done = wait_refund(&t, &rid, "succeeded").await;
    assert!(done["last_error"].is_null(), "{done}");
    assert_eq!(refunds_at_wechat(&t, &id).await.len(), 1);
}

async fn closed_and_abnormal_refunds(t: TestGateway) {
    let id = t.paid_native(100).await;
    t.set_faults(json!({"refund_outcome": "closed"})).await;
    let (_, r) = refund(&t, &id, json!({"merchant_refund_id": "x1"})).await;
    let closed = wait_refund(&t, r["id"].as_str().unwrap(), "failed").await;
    assert!(closed["last_error"].is_string());
    // A failed refund frees its amount.
    t.set_faults(json!({"refund_outcome": "abnormal"})).await;
    let (status, r) = refund(&t, &id, json!({"merchant_refund_id": "x2"})).await;
    assert_eq!((status, r["amount"].as_i64()), (201, Some(100)), "{r}");
    let rid = r["id"].as_str().unwrap().to_string();
    let abnormal = wait_refund(&t, &rid, "abnormal").await;
    assert!(
        abnormal["next_step"]
            .as_str()
            .unwrap()
            .contains("merchant platform")
    );
    // An abnormal refund still holds its amount.
    let (status, held) = refund(&t, &id, json!({"merchant_refund_id": "x3"})).await;
    assert_eq!((status, error(&held).0), (409, "refund_exceeds_payment"));
    t.set_faults(json!({})).await;
    assert_eq!(t.event_types(&rid).await, ["refund.abnormal"]);

    // A signed report that money went back on the refund that failed cannot be applied: it is
    // quarantined and acknowledged, and the sums do not move.
    let failed = t
        .store
        .refund_by_merchant_refund_id(&t.merchant_id, "x1")
        .await
        .unwrap()
        .unwrap();
    let report = wechatpay_v3::model::RefundNotification {
        mchid: t.mchid.clone(),
        out_trade_no: id.clone(),
        transaction_id: "4200000000000000000000000000".into(),
        out_refund_no: failed.out_refund_no.clone(),
        refund_id: "50300000000000000000000000000".into(),
        refund_status: wechatpay_v3::model::RefundStatus::Success,
        success_time: None,
        user_received_account: None,
        amount: wechatpay_v3::model::RefundAmount {
            total: 100,
            refund: 100,
            ..Default::default()
        },
    };
    wxgate_gateway::app::refunds::apply_callback(&t.gateway, &t.mchid, &t.merchant_id, &report)
        .await
        .unwrap();
    assert_eq!(get_refund(&t, &failed.id).await["status"], "failed");
    let quarantined = t.store.quarantined(&t.merchant_id).await.unwrap();
    assert!(
        quarantined.iter().any(|q| q.reason.contains(&failed.id)),
        "{quarantined:?}"
    );
    let p = t.get(&id).await;
    assert_eq!(
        (p["status"].as_str(), p["amount_refunded"].as_i64()),
        (Some("succeeded"), Some(0))
    );
}

async fn a_paid_after_close_payment_is_refunded_by_policy(t: TestGateway) {
    assert!(
        t.store
            .set_paid_after_close_policy(
                &t.merchant_id,
                wxgate_domain::PaidAfterClosePolicy::Refund
            )
            .await
            .unwrap()
    );
    // The gateway closed the order and believes it cancelled; the payer's money arrived anyway
    // (the simulator pays, its callback lost), and WeChat's report then reaches the gateway.
    t.set_faults(json!({"drop_callback_rate": 1.0})).await;
    let (_, p) = t.create(native(&order("late"), 250)).await;
    let id = p["id"].as_str().unwrap().to_string();
    t.pay(json!({"code_url": p["next_action"]["display_qr_code"]["data"]}))
        .await;
    t.store
        .transition(
            &t.merchant_id,
            &id,
            wxgate_domain::PaymentEvent::Cancelled,
            &wxgate_store::TransitionFacts {
                now: wxgate_gateway::now_ms(),
                source: "cancel".into(),
                ..Default::default()
            },
            wxgate_gateway::views::event_payload,
        )
        .await
        .unwrap();
    t.set_faults(json!({})).await;
    let up = t.gateway.upstream(&t.merchant_id).await.unwrap();
    let tx = up
        .client(Api::Query)
        .await
        .query_by_out_trade_no(&id)
        .await
        .unwrap();
    let row = t.store.payment(&t.merchant_id, &id).await.unwrap().unwrap();
    wxgate_gateway::app::orders::apply_paid(&t.gateway, &up.merchant, &row, &tx, "callback")
        .await
        .unwrap();
    let refunded = t.wait_status(&id, "refunded").await;
    assert_eq!(refunded["amount_refunded"], 250);
    assert_eq!(
        t.event_types(&id).await,
        [
            "payment.cancelled",
            "payment.paid_after_close",
            "payment.refunded"
        ]
    );
    let (_, list) = t
        .call(
            reqwest::Method::GET,
            &format!("/v1/payments/{id}/refunds"),
            None,
            &[],
        )
        .await;
    assert_eq!(list["data"][0]["merchant_refund_id"], format!("pac_{id}"));
    assert_eq!(refunds_at_wechat(&t, &id).await.len(), 1);
    // Applying the same report again makes no second refund.
    let row = t.store.payment(&t.merchant_id, &id).await.unwrap().unwrap();
    wxgate_gateway::app::orders::apply_paid(&t.gateway, &up.merchant, &row, &tx, "callback")
        .await
        .unwrap();
    assert!(
        wxgate_gateway::app::refunds::sync_due(&t.gateway)
            .await
            .is_ok()
    );
    assert_eq!(refunds_at_wechat(&t, &id).await.len(), 1);
    money::ledger_holds(&t).await;
}

/// WeChat makes the refund but neither its answer (every attempt times out) nor its callback
/// arrives: the refund stays pending, and the query finds it made, once, at WeChat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_whose_answer_is_lost_is_found_by_query() {
    for db in testing::all().await {
        eprintln!(
            "a_refund_whose_answer_is_lost_is_found_by_query on {:?}",
            db.backend
        );
        let t =
            TestGateway::spawn_with(&db, |c| c.upstream_timeout = Duration::from_millis(300)).await;
        let id = t.paid_native(100).await;
        t.set_faults(
            json!({"timeout_after_commit_rate": 1.0, "hang_ms": 1_000, "drop_callback_rate": 1.0}),
        )
        .await;
        let (status, r) = refund(&t, &id, json!({"merchant_refund_id": "hang"})).await;
        // No answer and no callback: only a query can tell.
        assert_eq!(
            (status, r["status"].as_str()),
            (201, Some("pending")),
            "{r}"
        );
        assert!(
            r["last_error"].as_str().unwrap().contains("did not answer"),
            "{r}"
        );
        t.set_faults(json!({})).await;
        wait_refund(&t, r["id"].as_str().unwrap(), "succeeded").await;
        assert_eq!(refunds_at_wechat(&t, &id).await.len(), 1);
        db.cleanup().await;
    }
}
