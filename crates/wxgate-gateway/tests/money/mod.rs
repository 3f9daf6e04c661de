//! Money after the payment: reconciliation against the simulator's bills (clean days, every
//! injected fault, repairs), the ledger's balance and its invariants.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::common::{TestGateway, native, order};

/// Today in Asia/Shanghai, as the bills count days.
pub fn bill_today() -> String {
    let now = time::OffsetDateTime::now_utc().to_offset(time::macros::offset!(+8));
    now.date().to_string()
}

/// Refunds `amount` of a payment and waits for it to succeed.
pub async fn refunded(t: &TestGateway, payment_id: &str, amount: i64) -> Value {
    let (status, r) = t
        .call(
            reqwest::Method::POST,
            &format!("/v1/payments/{payment_id}/refunds"),
            Some(json!({"amount": amount, "merchant_refund_id": order("mr")}).to_string()),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    t.wait_for(&format!("/v1/refunds/{id}"), |r| r["status"] == "succeeded")
        .await
}

/// Moves the simulator's clock past 09:00 tomorrow, when today's bills exist.
pub async fn next_morning(t: &TestGateway) {
    let (status, _) = t
        .sim_call(
            reqwest::Method::POST,
            "/sim/clock",
            Some(json!({"advance_secs": 33 * 3600})),
        )
        .await;
    assert_eq!(status, 200);
}

/// Requests today's reconciliation and waits until it leaves `pending`.
pub async fn reconcile_today(t: &TestGateway) -> Value {
    let (status, r) = t
        .call(
            reqwest::Method::POST,
            "/v1/reconciliations",
            Some(json!({"date": bill_today()}).to_string()),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    t.wait_for(&format!("/v1/reconciliations/{id}"), |r| {
        r["status"] != "pending"
    })
    .await
}

pub async fn balance(t: &TestGateway) -> (i64, i64) {
    let (status, b) = t.call(reqwest::Method::GET, "/v1/balance", None, &[]).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["object"], "balance");
    let cny = |list: &Value| -> i64 {
        list.as_array()
            .unwrap()
            .iter()
            .find(|a| a["currency"] == "CNY")
            .map_or(0, |a| a["amount"].as_i64().unwrap())
    };
    (cny(&b["available"]), cny(&b["pending"]))
}

pub async fn ledger_holds(t: &TestGateway) {
    let violations = t.store.ledger_violations().await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
}

fn kinds(r: &Value) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for d in r["discrepancies"].as_array().unwrap() {
        *counts
            .entry(d["type"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    counts
}

pub async fn a_clean_day_reconciles_and_settles_the_ledger(t: TestGateway) {
    let first = t.paid_native(101).await;
    t.paid_native(250).await;
    t.paid_native(1000).await;
    refunded(&t, &first, 100).await;
    assert_eq!(
        balance(&t).await,
        (-100, 1351),
        "paid, not settled; the refund is out"
    );
    ledger_holds(&t).await;

    // The bill of a day still being built: the reconciliation waits for it.
    let waiting = reconcile_today(&t).await;
    assert_eq!(waiting["status"], "waiting_for_bill", "{waiting}");
    assert!(
        waiting["last_error"]
            .as_str()
            .unwrap()
            .contains("STATEMENT_CREATING")
    );

    next_morning(&t).await;
    let id = waiting["id"].as_str().unwrap();
    let r = t
        .gateway
        .store()
        .reconciliation(&t.merchant_id, id)
        .await
        .unwrap()
        .unwrap();
    // Due again in half an hour; the test runs it now rather than wait.
    t.gateway
        .store()
        .defer_reconciliation(
            &r,
            wxgate_domain::reconciliation::ReconciliationStatus::Pending,
            Some(0),
            None,
            0,
        )
        .await
        .unwrap();
    let done = t
        .wait_for(&format!("/v1/reconciliations/{id}"), |r| {
            r["status"] == "completed"
        })
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(kinds(&done), BTreeMap::new(), "{done}");
    assert_eq!(done["totals"]["gateway_payment_amount"], 1351);
    assert_eq!(done["totals"]["wechat_payment_amount"], 1351);
    assert_eq!(done["totals"]["wechat_refund_amount"], 100);
    assert_eq!(done["totals"]["wechat_fees"], 9);
    assert_eq!(
        balance(&t).await,
        (1351 - 9 - 100 + 1, 0),
        "settled, less fees, plus the fee returned"
    );
    ledger_holds(&t).await;

    // The same day again is the same reconciliation; nothing posts twice.
    let (status, again) = t
        .call(
            reqwest::Method::POST,
            "/v1/reconciliations",
            Some(json!({"date": bill_today()}).to_string()),
            &[],
        )
        .await;
    assert_eq!((status, again["id"].as_str()), (200, Some(id)));
    let (_, txns) = t
        .call(
            reqwest::Method::GET,
            "/v1/balance_transactions?limit=100",
            None,
            &[],
        )
        .await;
    let mut types: Vec<&str> = txns["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["type"].as_str().unwrap())
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "fee",
            "fee_return",
            "payment",
            "payment",
            "payment",
            "refund",
            "settlement"
        ],
        "one settlement, one fee and one fee return for the day"
    );
    let events: Vec<String> = t
        .store
        .events_for(&t.merchant_id, id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(events, ["reconciliation.completed"]);
    let csv = t
        .http
        .get(format!(
            "{}/v1/reconciliations/{id}/discrepancies.csv",
            t.base
        ))
        .bearer_auth(&t.key)
        .send()
        .await
        .unwrap();
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert_eq!(
        csv.text().await.unwrap().lines().count(),
        1,
        "the header alone"
    );
}

/// Pays `amount` with a coupon of `kind` (`CASH` or `NOCASH`) covering `coupon` of it.
async fn paid_with_coupon(t: &TestGateway, amount: i64, kind: &str, coupon: i64) -> String {
    let (status, p) = t.create(native(&order("cpn"), amount)).await;
    assert_eq!(status, 201, "{p}");
    let code_url = &p["next_action"]["display_qr_code"]["data"];
    t.pay(json!({"code_url": code_url, "coupon": {"type": kind, "amount": coupon}}))
        .await;
    let id = p["id"].as_str().unwrap().to_string();
    t.wait_status(&id, "succeeded").await;
    id
}

/// A merchant-funded (免充值) coupon is never settled to the merchant: the bill's 应结 is the
/// amount less the coupon, which the ledger moves from pending to discounts; its share of a
/// refund goes back to the coupon, not out of the settled money. A WeChat-funded (CASH) coupon
/// changes nothing the merchant holds.
pub async fn coupons_are_settled_as_the_bills_say(t: TestGateway) {
    let nocash = paid_with_coupon(&t, 1000, "NOCASH", 100).await;
    paid_with_coupon(&t, 300, "CASH", 50).await;
    refunded(&t, &nocash, 500).await;
    assert_eq!(balance(&t).await, (-500, 1300));
    next_morning(&t).await;
    let done = reconcile_today(&t).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(kinds(&done), BTreeMap::new(), "{done}");
    // 900 settled (fee 5), 300 settled (fee 2); the refund took 450 and returned a fee of 3.
    assert_eq!(balance(&t).await, (900 - 5 + 300 - 2 - 450 + 3, 0));
    let (_, txns) = t
        .call(
            reqwest::Method::GET,
            "/v1/balance_transactions?limit=100",
            None,
            &[],
        )
        .await;
    let amount_of = |kind: &str| -> Vec<i64> {
        let list = txns["data"].as_array().unwrap();
        let of = list.iter().filter(|x| x["type"] == kind);
        of.map(|x| x["amount"].as_i64().unwrap()).collect()
    };
    assert_eq!(amount_of("discount"), [100], "{txns}");
    assert_eq!(amount_of("discount_return"), [50], "{txns}");
    assert_eq!(amount_of("settlement"), [1200], "{txns}");
    ledger_holds(&t).await;
}

pub async fn each_bill_fault_is_found_and_nothing_else(t: TestGateway) {
    let first = t.paid_native(101).await;
    t.paid_native(250).await;
    t.paid_native(1000).await;
    refunded(&t, &first, 100).await;
    t.sim_call(
        reqwest::Method::PUT,
        &format!("/sim/merchants/{}/faults", t.mchid),
        Some(
            json!({"bill": {"missing_rows": 1, "extra_rows": 1, "amount_off_rows": 1,
            "refund_processing_rows": 1, "duplicate_rows": 1}}),
        ),
    )
    .await;
    next_morning(&t).await;
    let r = reconcile_today(&t).await;
    assert_eq!(r["status"], "completed", "{r}");
    let expected: BTreeMap<String, usize> = [
        "amount_mismatch",
        "duplicate_at_wechat",
        "missing_at_wechat",
        "missing_in_gateway",
        "status_mismatch",
    ]
    .into_iter()
    .map(|k| (k.to_string(), 1))
    .collect();
    assert_eq!(kinds(&r), expected, "{r}");
    let list = r["discrepancies"].as_array().unwrap();
    let of = |kind: &str| list.iter().find(|d| d["type"] == kind).unwrap();
    // The refund WeChat's bill caught in flight: its query agrees with the gateway.
    let in_flight = of("status_mismatch");
    assert_eq!(in_flight["wechat"]["status"], "PROCESSING", "{in_flight}");
    let (id, recon) = (r["id"].as_str().unwrap(), r["id"].as_str().unwrap());
    let of_in_flight = |r: &Value| -> Value {
        r["discrepancies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == in_flight["id"])
            .unwrap()
            .clone()
    };
    let after = t
        .wait_for(&format!("/v1/reconciliations/{id}"), |r| {
            of_in_flight(r)["status"] != "open"
        })
        .await;
    let resolved = of_in_flight(&after);
    assert_eq!(resolved["status"], "resolved", "{resolved}");
    let stranger = of("missing_in_gateway");
    assert!(
        stranger["reference"]
            .as_str()
            .unwrap()
            .starts_with("stranger_"),
        "{stranger}"
    );
    assert_eq!(stranger["gateway"], Value::Null);
    let off = of("amount_mismatch");
    assert_eq!(
        off["wechat"]["amount"].as_i64().unwrap(),
        off["gateway"]["amount"].as_i64().unwrap() + 1
    );

    // An operator closes one with a reason; it cannot be closed twice.
    let path = format!(
        "/v1/reconciliations/{recon}/discrepancies/{}/resolve",
        stranger["id"].as_str().unwrap()
    );
    let (status, closed) = t
        .call(
            reqwest::Method::POST,
            &path,
            Some(json!({"reason": "a test order of another shop"}).to_string()),
            &[],
        )
        .await;
    assert_eq!(
        (status, closed["status"].as_str()),
        (200, Some("resolved")),
        "{closed}"
    );
    let (status, again) = t
        .call(
            reqwest::Method::POST,
            &path,
            Some(json!({"reason": "again"}).to_string()),
            &[],
        )
        .await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("discrepancy_not_open"))
    );
    let (status, empty) = t
        .call(
            reqwest::Method::POST,
            &path,
            Some(json!({"reason": "  "}).to_string()),
            &[],
        )
        .await;
    assert_eq!(
        (status, empty["error"]["param"].as_str()),
        (400, Some("reason"))
    );

    let events = t.store.events_for(&t.merchant_id, id).await.unwrap();
    let found = events
        .iter()
        .filter(|e| e.event_type == "reconciliation.discrepancy_found")
        .count();
    assert_eq!(
        (found, events.last().unwrap().event_type.as_str()),
        (5, "reconciliation.completed")
    );
    let csv = t
        .http
        .get(format!(
            "{}/v1/reconciliations/{id}/discrepancies.csv",
            t.base
        ))
        .bearer_auth(&t.key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv.lines().count(), 6, "{csv}");
    ledger_holds(&t).await;
}

pub async fn reconciliation_input_is_checked(t: TestGateway) {
    for (body, code) in [
        (json!({"date": "2026-02-30"}), "invalid_date"),
        (json!({"date": "tomorrow"}), "invalid_date"),
        (json!({"date": "2000-01-01"}), "date_out_of_range"),
        (json!({"date": "2999-01-01"}), "date_out_of_range"),
    ] {
        let (status, e) = t
            .call(
                reqwest::Method::POST,
                "/v1/reconciliations",
                Some(body.to_string()),
                &[],
            )
            .await;
        assert_eq!(
            (
                status,
                e["error"]["code"].as_str(),
                e["error"]["param"].as_str()
            ),
            (400, Some(code), Some("date")),
            "{e}"
        );
    }
    let (status, e) = t
        .call(
            reqwest::Method::GET,
            "/v1/balance_transactions?type=bonus",
            None,
            &[],
        )
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("invalid_transaction_type"))
    );
    let (status, e) = t
        .call(
            reqwest::Method::GET,
            "/v1/reconciliations?status=done",
            None,
            &[],
        )
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("invalid_status"))
    );
    let (status, _) = t
        .call(
            reqwest::Method::GET,
            "/v1/reconciliations/recon_nope",
            None,
            &[],
        )
        .await;
    assert_eq!(status, 404);
    let (status, list) = t
        .call(reqwest::Method::GET, "/v1/reconciliations", None, &[])
        .await;
    assert_eq!((status, list["data"].as_array().unwrap().len()), (200, 0));
}

/// WeChat has a payment the gateway still shows pending (its callback lost, its next status
/// query far off): the reconciliation finds it, asks WeChat, and the payment succeeds through
/// the sync path with its event.
pub async fn a_pending_payment_wechat_paid_is_repaired(t: TestGateway) {
    t.sim_call(
        reqwest::Method::PUT,
        &format!("/sim/merchants/{}/faults", t.mchid),
        Some(json!({"drop_callback_rate": 1.0})),
    )
    .await;
    let (_, p) = t.create(native(&order("lost"), 880)).await;
    let id = p["id"].as_str().unwrap().to_string();
    t.pay(json!({"code_url": p["next_action"]["display_qr_code"]["data"]}))
        .await;
    assert_eq!(t.get(&id).await["status"], "pending");
    next_morning(&t).await;
    let r = reconcile_today(&t).await;
    let list = r["discrepancies"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{r}");
    assert_eq!(
        (list[0]["type"].as_str(), list[0]["payment"].as_str()),
        (Some("status_mismatch"), Some(id.as_str()))
    );
    let repaired = t.wait_status(&id, "succeeded").await;
    let sources: Vec<&str> = repaired["status_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources.last(), Some(&"reconciliation"), "{repaired}");
    assert!(
        t.event_types(&id)
            .await
            .contains(&"payment.succeeded".to_string())
    );
    // The settlement the discrepancy held is posted once the payment is paid here.
    let path = format!("/v1/reconciliations/{}", r["id"].as_str().unwrap());
    t.wait_for(&path, |r| r["repaired_count"] == 1).await;
    assert_eq!(balance(&t).await, (880 - 5, 0));
    // The repair is recorded just after the payment changes: wait for it.
    let path = format!("/v1/reconciliations/{}", r["id"].as_str().unwrap());
    let after = t.wait_for(&path, |r| r["repaired_count"] == 1).await;
    assert_eq!(after["repaired_count"], 1, "{after}");
    assert_eq!(after["discrepancies"][0]["status"], "repaired");
    assert!(
        after["discrepancies"][0]["resolution"]
            .as_str()
            .unwrap()
            .contains("pending to succeeded")
    );
    ledger_holds(&t).await;
}

/// A payment the gateway has failed that WeChat's bill shows paid cannot be applied (it is
/// quarantined for a person): its settlement stays held with the discrepancy, so no money is
/// taken out of a pending balance it never entered.
pub async fn a_payment_failed_here_and_paid_at_wechat_settles_nothing(t: TestGateway) {
    t.set_faults(json!({"drop_callback_rate": 1.0})).await;
    let (_, p) = t.create(native(&order("failed"), 880)).await;
    let id = p["id"].as_str().unwrap().to_string();
    let facts = wxgate_store::TransitionFacts {
        now: wxgate_gateway::now_ms(),
        source: "test".into(),
        ..Default::default()
    };
    let failed = wxgate_domain::PaymentEvent::Failed;
    let render = wxgate_gateway::views::event_payload;
    let merchant = t.merchant_id.clone();
    t.store
        .transition(&merchant, &id, failed, &facts, render)
        .await
        .unwrap();
    t.pay(json!({"code_url": p["next_action"]["display_qr_code"]["data"]}))
        .await;
    next_morning(&t).await;
    let r = reconcile_today(&t).await;
    let list = r["discrepancies"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{r}");
    assert_eq!(list[0]["type"], "status_mismatch", "{r}");
    assert_eq!(list[0]["wechat"]["settled"], 880, "{r}");
    assert_eq!(t.wait_quarantined(&id).await.len(), 1);
    assert_eq!(t.get(&id).await["status"], "failed");
    assert_eq!(balance(&t).await, (0, 0));
    // The later sweeps leave it to the person: quarantined once, still open.
    wxgate_gateway::app::reconciliation::retry_repairs(&t.gateway)
        .await
        .unwrap();
    assert_eq!(t.store.quarantined(&t.merchant_id).await.unwrap().len(), 1);
    ledger_holds(&t).await;
}

async fn download(t: &TestGateway, url: &str) -> (u16, String, String) {
    let res = t.http.get(url).send().await.unwrap();
    let status = res.status().as_u16();
    let kind = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, kind, res.text().await.unwrap())
}

async fn report(t: &TestGateway, kind: &str, from: &str, to: &str) -> (u16, Value) {
    t.call(
        reqwest::Method::POST,
        "/v1/reports",
        Some(json!({"type": kind, "date_from": from, "date_to": to}).to_string()),
        &[],
    )
    .await
}

pub async fn reports_stream_every_row_of_the_range(t: TestGateway) {
    // More payments than one page of the file, loaded directly; two real ones and a refund.
    let now = wxgate_gateway::now_ms();
    let seeded: Vec<wxgate_store::testing::SeedPayment> = (0..2_500)
        .map(|i| wxgate_store::testing::SeedPayment {
            out_trade_no: format!("seed{i:06}"),
            transaction_id: format!("4200{i:024}"),
            amount: 100 + i,
            paid_at: now - 1_000,
            refund: None,
        })
        .collect();
    t.store
        .seed_paid_payments(&t.merchant_id, &seeded)
        .await
        .unwrap();
    let first = t.paid_native(300).await;
    t.paid_native(400).await;
    refunded(&t, &first, 120).await;
    let today = bill_today();

    let (status, r) = report(&t, "payments", &today, &today).await;
    assert_eq!((status, r["status"].as_str()), (201, Some("ready")), "{r}");
    let url = r["download_url"].as_str().unwrap().to_string();
    let (status, kind, csv) = download(&t, &url).await;
    assert_eq!((status, kind.as_str()), (200, "text/csv; charset=utf-8"));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + 2_502, "a header and every payment");
    assert!(lines[0].starts_with("id,merchant_order_id,created_at,status,amount"));
    let ids: std::collections::HashSet<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(ids.len(), 2_502, "no row twice across pages");

    let (_, refunds) = report(&t, "refunds", &today, &today).await;
    let (_, _, csv) = download(&t, refunds["download_url"].as_str().unwrap()).await;
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv.contains(&first) && csv.contains(",120,CNY,"), "{csv}");
    let (_, ledger) = report(&t, "balance_transactions", &today, &today).await;
    let (_, _, csv) = download(&t, ledger["download_url"].as_str().unwrap()).await;
    assert_eq!(
        csv.lines().count(),
        1 + 3,
        "two payments and a refund: {csv}"
    );

    // A new link for the report; the old one stops working.
    let id = r["id"].as_str().unwrap();
    let (status, again) = t
        .call(
            reqwest::Method::GET,
            &format!("/v1/reports/{id}"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200);
    assert_ne!(again["download_url"], r["download_url"]);
    let (status, _, body) = download(&t, &url).await;
    assert_eq!(status, 404);
    assert!(body.contains("report_link_expired"), "{body}");
    let (status, _, _) = download(&t, again["download_url"].as_str().unwrap()).await;
    assert_eq!(status, 200);

    for (kind, from, to, code, param) in [
        (
            "bonuses",
            today.as_str(),
            today.as_str(),
            "invalid_report_type",
            "type",
        ),
        (
            "payments",
            "2026-13-01",
            today.as_str(),
            "invalid_date",
            "date_from",
        ),
        (
            "payments",
            today.as_str(),
            "2020-01-01",
            "date_out_of_range",
            "date_to",
        ),
        (
            "payments",
            "2020-01-01",
            "2026-01-01",
            "date_out_of_range",
            "date_to",
        ),
    ] {
        let (status, e) = report(&t, kind, from, to).await;
        assert_eq!(
            (
                status,
                e["error"]["code"].as_str(),
                e["error"]["param"].as_str()
            ),
            (400, Some(code), Some(param)),
            "{e}"
        );
    }
}

/// A native payment of `amount` paid, `refund` of it refunded, and the day reconciled the next
/// morning with no discrepancy: the reconciliation.
async fn paid_refunded_and_reconciled(t: &TestGateway, amount: (i64, &str), refund: i64) -> Value {
    let body = json!({"amount": amount.0, "currency": amount.1, "merchant_order_id": order("xb"),
        "description": "Tea set", "integration": "native"});
    let (status, p) = t.create(body).await;
    assert_eq!(status, 201, "{p}");
    let id = p["id"].as_str().unwrap().to_string();
    t.pay(json!({"code_url": p["next_action"]["display_qr_code"]["data"]}))
        .await;
    t.wait_status(&id, "succeeded").await;
    refunded(t, &id, refund).await;
    next_morning(t).await;
    let r = reconcile_today(t).await;
    assert_eq!(
        (r["status"].as_str(), r["discrepancy_count"].as_i64()),
        (Some("completed"), Some(0)),
        "{r}"
    );
    r
}

pub async fn a_cross_border_day_reconciles_against_the_statement(t: TestGateway) {
    assert!(
        t.store
            .set_merchant_region(&t.merchant_id, "USD,HKD", Some("5411"))
            .await
            .unwrap()
    );
    let r = paid_refunded_and_reconciled(&t, (1999, "USD"), 500).await;
    assert_eq!(r["totals"]["wechat_payment_amount"], 1999);
    assert_eq!(r["totals"]["wechat_refund_amount"], 500);
    // Settled in USD, less WeChat's 0.60 % (12 cents), the refund, and the fee it returned (3).
    let (_, b) = t.call(reqwest::Method::GET, "/v1/balance", None, &[]).await;
    assert_eq!(
        b["available"],
        json!([{"amount": 1999 - 12 - 500 + 3, "currency": "USD"}]),
        "{b}"
    );
    assert_eq!(
        b["pending"],
        json!([{"amount": 0, "currency": "USD"}]),
        "{b}"
    );
    ledger_holds(&t).await;
}

/// A cross-border merchant WeChat settles in USD while it prices in HKD: the statement's
/// settled amounts are in USD, and the ledger moves each payment out of HKD and into USD
/// through its conversion account (and back for a refund), each currency summing to zero.
pub async fn a_day_settled_in_another_currency_converts_in_the_ledger(t: TestGateway) {
    let usd = wxgate_domain::Currency::parse("USD").unwrap();
    let hkd_only = [wxgate_domain::Currency::parse("HKD").unwrap()];
    let store = &t.store;
    let refused =
        wxgate_gateway::app::merchants::set_settlement_currency(store, &t.merchant_id, Some(usd))
            .await
            .unwrap_err();
    assert!(refused.to_string().contains("domestic"), "{refused}");
    wxgate_gateway::app::merchants::set_region(store, &t.merchant_id, &hkd_only, Some("5411"))
        .await
        .unwrap();
    wxgate_gateway::app::merchants::set_settlement_currency(store, &t.merchant_id, Some(usd))
        .await
        .unwrap();
    let (status, _) = t
        .sim_call(
            reqwest::Method::PATCH,
            &format!("/sim/merchants/{}", t.mchid),
            Some(json!({"settlement_currency": "USD"})),
        )
        .await;
    assert_eq!(status, 204);
    paid_refunded_and_reconciled(&t, (10_000, "HKD"), 2_500).await;
    // At the simulator's rates HK$100.00 settles as US$12.81 and HK$25.00 as US$3.20. The fee
    // (HK$0.60, HK$0.15 returned) comes out of the USD at each row's rate: 8 and 2 cents.
    let (_, b) = t.call(reqwest::Method::GET, "/v1/balance", None, &[]).await;
    assert_eq!(
        b["available"],
        json!([{"amount": 0, "currency": "HKD"},
               {"amount": 1_281 - 8 - 320 + 2, "currency": "USD"}]),
        "{b}"
    );
    assert_eq!(
        b["pending"],
        json!([{"amount": 0, "currency": "HKD"}, {"amount": 0, "currency": "USD"}]),
        "{b}"
    );
    let (_, list) = t
        .call(
            reqwest::Method::GET,
            "/v1/balance_transactions?type=conversion_in",
            None,
            &[],
        )
        .await;
    let mut arrived: Vec<(i64, &str)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["amount"].as_i64().unwrap(),
                x["currency"].as_str().unwrap(),
            )
        })
        .collect();
    arrived.sort();
    assert_eq!(arrived, [(1_281, "USD"), (2_500, "HKD")], "{list}");
    ledger_holds(&t).await;
}

/// Today's reconciliation, completed with one open status mismatch of the payment (or of its
/// refund), as a node that stopped before repairing it leaves it: the discrepancy, with
/// `wechat_side` as WeChat's side.
async fn left_open(
    t: &TestGateway,
    payment_id: &str,
    refund_id: Option<&str>,
    wechat_side: Option<Value>,
) -> wxgate_store::DiscrepancyRow {
    use wxgate_domain::reconciliation::{DiscrepancyKind, DiscrepancyStatus};
    let now = wxgate_gateway::now_ms();
    let (r, _) = t
        .store
        .request_reconciliation(&t.merchant_id, &bill_today(), now)
        .await
        .unwrap();
    let open = wxgate_store::DiscrepancyRow {
        id: wxgate_domain::id::DiscrepancyId::generate().to_string(),
        reconciliation_id: r.id.clone(),
        merchant_id: t.merchant_id.clone(),
        kind: DiscrepancyKind::StatusMismatch,
        reference: refund_id.unwrap_or(payment_id).to_string(),
        payment_id: Some(payment_id.to_string()),
        refund_id: refund_id.map(str::to_string),
        payout_id: None,
        gateway_side: None,
        wechat_side: wechat_side.map(|side| side.to_string()),
        status: DiscrepancyStatus::Open,
        resolution: None,
        created_at: now,
        resolved_at: None,
    };
    let completed = wxgate_store::EventRow {
        id: wxgate_domain::id::EventId::generate().to_string(),
        merchant_id: t.merchant_id.clone(),
        event_type: "reconciliation.completed".into(),
        object_id: r.id.clone(),
        object_version: 0,
        payload: "{}".into(),
        created_at: now,
    };
    let done = wxgate_store::Completion {
        totals: "{}".into(),
        discrepancies: vec![open.clone()],
        events: vec![completed],
        now,
    };
    assert!(t.store.complete_reconciliation(&r, &done).await.unwrap());
    open
}

/// A discrepancy left open (its node stopped before repairing it) is repaired by the next
/// sweep of open discrepancies.
pub async fn an_open_discrepancy_is_repaired_by_a_later_sweep(t: TestGateway) {
    use wxgate_domain::reconciliation::DiscrepancyStatus;
    t.sim_call(
        reqwest::Method::PUT,
        &format!("/sim/merchants/{}/faults", t.mchid),
        Some(json!({"drop_callback_rate": 1.0})),
    )
    .await;
    let (_, p) = t.create(native(&order("sweep"), 660)).await;
    let id = p["id"].as_str().unwrap().to_string();
    t.pay(json!({"code_url": p["next_action"]["display_qr_code"]["data"]}))
        .await;
    let left_open = left_open(&t, &id, None, None).await;
    assert_eq!(t.get(&id).await["status"], "pending");

    let tried = wxgate_gateway::app::reconciliation::retry_repairs(&t.gateway)
        .await
        .unwrap();
    assert_eq!(tried, 1);
    assert_eq!(t.get(&id).await["status"], "succeeded");
    let d = t
        .store
        .discrepancy(&t.merchant_id, &left_open.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.status, DiscrepancyStatus::Repaired, "{d:?}");
    // Nothing is left for the next sweep.
    let again = wxgate_gateway::app::reconciliation::retry_repairs(&t.gateway)
        .await
        .unwrap();
    assert_eq!(again, 0);
}

/// A refund's status mismatch is resolved only when WeChat's query says the money went back:
/// a refund the gateway counts as succeeded that WeChat reports closed stays open for a person.
pub async fn a_refund_mismatch_wechat_does_not_confirm_stays_open(t: TestGateway) {
    use wxgate_domain::reconciliation::DiscrepancyStatus;
    use wxgate_domain::refund::RefundEvent;
    let payment = t.paid_native(500).await;
    t.set_faults(json!({"drop_callback_rate": 1.0, "refund_outcome": "closed"}))
        .await;
    let (status, r) = t
        .call(
            reqwest::Method::POST,
            &format!("/v1/payments/{payment}/refunds"),
            Some(json!({"amount": 200, "merchant_refund_id": "mm1"}).to_string()),
            &[],
        )
        .await;
    assert_eq!(
        (status, r["status"].as_str()),
        (201, Some("pending")),
        "{r}"
    );
    let refund_id = r["id"].as_str().unwrap().to_string();
    // The gateway came to count it as succeeded (say, from a report WeChat later denies).
    let now = wxgate_gateway::now_ms();
    let facts = wxgate_store::RefundFacts {
        now,
        succeeded_at: Some(now),
        ..Default::default()
    };
    let event = || {
        (
            wxgate_domain::id::EventId::generate().to_string(),
            "{}".to_string(),
        )
    };
    t.store
        .refund_transition(
            &t.merchant_id,
            &refund_id,
            RefundEvent::Succeeded,
            &facts,
            |_: &wxgate_store::RefundRow| event(),
            |_: &wxgate_store::PaymentRow| event(),
        )
        .await
        .unwrap();
    let mismatch = left_open(&t, &payment, Some(&refund_id), None).await;
    let tried = wxgate_gateway::app::reconciliation::retry_repairs(&t.gateway)
        .await
        .unwrap();
    assert_eq!(tried, 1);
    let d = t
        .store
        .discrepancy(&t.merchant_id, &mismatch.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.status, DiscrepancyStatus::Open, "{d:?}");
}

/// `wxgate reconcile` runs a day now even while another node holds it: it waits for that node
/// to finish or let go, and runs the day itself when it was let go unfinished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_a_day_now_waits_for_the_node_that_holds_it() {
    use wxgate_domain::id::{MerchantId, ReconciliationId};
    use wxgate_domain::reconciliation::ReconciliationStatus;
    for db in wxgate_store::testing::all().await {
        eprintln!(
            "running_a_day_now_waits_for_the_node_that_holds_it on {:?}",
            db.backend
        );
        // No background rounds: this test plays the other node.
        let t = TestGateway::spawn_with(&db, |c| {
            c.sync_interval = std::time::Duration::from_secs(3600)
        })
        .await;
        t.paid_native(300).await;
        next_morning(&t).await;
        let now = wxgate_gateway::now_ms();
        let (r, made) = t
            .store
            .request_reconciliation(&t.merchant_id, &bill_today(), now)
            .await
            .unwrap();
        assert!(made);
        let held = t
            .store
            .claim_reconciliation(&t.merchant_id, &r.id, now)
            .await
            .unwrap()
            .expect("the other node's claim");
        let (gw, merchant) = (t.gateway.clone(), MerchantId::stored(&t.merchant_id));
        let id = ReconciliationId::stored(&r.id);
        // Its wait says when it starts waiting, and lasts until the other node lets go.
        let (waiting, started_waiting) = tokio::sync::oneshot::channel();
        let let_go = std::sync::Arc::new(tokio::sync::Notify::new());
        let wait = {
            let (mut waiting, let_go) = (Some(waiting), let_go.clone());
            move || {
                waiting.take().map(|w| w.send(()));
                let let_go = let_go.clone();
                async move { let_go.notified().await }
            }
        };
        let running = tokio::spawn(async move {
            wxgate_gateway::app::reconciliation::run_now_waiting(&gw, &merchant, &id, wait).await
        });
        started_waiting
            .await
            .expect("it did not wait for the other node");
        // The other node's attempt ends in an error, to be tried again at once.
        t.store
            .defer_reconciliation(
                &held,
                ReconciliationStatus::Pending,
                Some(now),
                Some("stopped"),
                now,
            )
            .await
            .unwrap();
        let_go.notify_one();
        let done = running.await.unwrap().unwrap();
        assert_eq!(
            (done.status, done.attempts),
            (ReconciliationStatus::Completed, 2),
            "{done:?}"
        );
        db.cleanup().await;
    }
}

/// An operator who resolves a payment's status mismatch once its order is paid here posts the
/// settlement the discrepancy held (the repair had not got that far).
pub async fn resolving_a_paid_mismatch_posts_its_held_settlement(t: TestGateway) {
    let id = t.paid_native(880).await;
    let held = json!({"amount": 880, "settled": 880, "settled_fee": 5, "source": "trade_bill"});
    let d = left_open(&t, &id, None, Some(held)).await;
    assert_eq!(balance(&t).await, (0, 880));
    let path = format!(
        "/v1/reconciliations/{}/discrepancies/{}/resolve",
        d.reconciliation_id, d.id
    );
    let reason = json!({"reason": "paid; the callback came late"}).to_string();
    let (status, closed) = t
        .call(reqwest::Method::POST, &path, Some(reason), &[])
        .await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(balance(&t).await, (880 - 5, 0));
    ledger_holds(&t).await;
}
