//! Payouts end to end against the real simulator: the payee confirms, declines, ignores; the
//! merchant cancels; WeChat's operation account runs dry; answers and notifications get lost or
//! doubled. Every scenario checks that WeChat made at most one transfer and that the ledger's
//! reserve follows the payout.

use serde_json::{Value, json};
use wechatpay_v3::model::SceneReportInfo;
use wxgate_gateway::app::merchants;
use wxgate_gateway::app::payouts::Scene;

use crate::common::TestGateway;

const PAYEE: &str = "o-payee-openid-0001";

fn marketing() -> Scene {
    Scene {
        id: "1000".into(),
        report_infos: vec![
            SceneReportInfo {
                info_type: "活动名称".into(),
                info_content: "新会员有礼".into(),
            },
            SceneReportInfo {
                info_type: "奖励说明".into(),
                info_content: "注册会员抽奖一等奖".into(),
            },
        ],
    }
}

async fn with_default_scene(t: &TestGateway) {
    merchants::set_payout_scene(&t.store, &t.merchant_id, Some(&marketing()))
        .await
        .unwrap();
}

async fn payout(t: &TestGateway, body: Value, key: Option<&str>) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
    t.call(
        reqwest::Method::POST,
        "/v1/payouts",
        Some(body.to_string()),
        &headers,
    )
    .await
}

fn body(amount: i64) -> Value {
    json!({"amount": amount, "currency": "CNY", "openid": PAYEE, "remark": "新会员开户有礼"})
}

async fn wait_payout(t: &TestGateway, id: &str, status: &str) -> Value {
    t.wait_for(&format!("/v1/payouts/{id}"), |p| p["status"] == status)
        .await
}

async fn payee(t: &TestGateway, package_info: &str, outcome: &str) {
    let (status, answer) = t
        .sim_call(
            reqwest::Method::POST,
            "/sim/payee/confirm",
            Some(json!({"package_info": package_info, "outcome": outcome})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
}

async fn operation_balance(t: &TestGateway) -> i64 {
    let (_, b) = t
        .sim_call(
            reqwest::Method::GET,
            &format!("/sim/merchants/{}/operation_balance", t.mchid),
            None,
        )
        .await;
    b["operation_balance"].as_i64().unwrap()
}

async fn top_up(t: &TestGateway, amount: i64) {
    let (status, b) = t
        .sim_call(
            reqwest::Method::POST,
            &format!("/sim/merchants/{}/operation_balance", t.mchid),
            Some(json!({"amount": amount})),
        )
        .await;
    assert_eq!(status, 200, "{b}");
}

/// (available, reserved) in CNY.
async fn balance(t: &TestGateway) -> (i64, i64) {
    let (_, b) = t.call(reqwest::Method::GET, "/v1/balance", None, &[]).await;
    let pick = |k: &str| {
        b[k].as_array()
            .unwrap()
            .iter()
            .find(|a| a["currency"] == "CNY")
            .map_or(0, |a| a["amount"].as_i64().unwrap())
    };
    (pick("available"), pick("reserved"))
}

async fn events_of(t: &TestGateway, id: &str) -> Vec<String> {
    t.event_types(id).await
}

pub async fn a_confirmed_payout_succeeds_once_and_leaves_the_ledger(t: TestGateway) {
    with_default_scene(&t).await;
    let opening = operation_balance(&t).await;
    let (status, p) = payout(&t, body(500), Some("payout-1")).await;
    assert_eq!(
        (status, p["status"].as_str()),
        (201, Some("awaiting_confirmation")),
        "{p}"
    );
    let id = p["id"].as_str().unwrap().to_string();
    let confirmation = &p["confirmation"];
    assert_eq!(confirmation["mch_id"], t.mchid.as_str());
    assert_eq!(confirmation["jsapi"]["appId"], t.appid.as_str());
    assert_eq!(
        confirmation["jsapi"]["package"],
        confirmation["package_info"]
    );
    assert_eq!(confirmation["business_type"], "requestMerchantTransfer");
    assert!(
        confirmation["hosted_confirmation_url"]
            .as_str()
            .unwrap()
            .contains("/payouts/confirm/pocf_")
    );
    assert_eq!(p["wechat"]["out_bill_no"], id.replacen('_', "", 1).as_str());
    // The same request again is the same payout.
    let (again_status, again) = payout(&t, body(500), Some("payout-1")).await;
    assert_eq!((again_status, &again["id"]), (201, &p["id"]));
    assert_eq!(balance(&t).await, (-500, 500));

    payee(
        &t,
        confirmation["package_info"].as_str().unwrap(),
        "confirm",
    )
    .await;
    let done = wait_payout(&t, &id, "succeeded").await;
    assert!(
        done["confirmation"].is_null() && done["finished_at"].is_string(),
        "{done}"
    );
    assert_eq!(balance(&t).await, (-500, 0));
    assert_eq!(operation_balance(&t).await, opening - 500);
    assert_eq!(
        events_of(&t, &id).await,
        ["payout.awaiting_confirmation", "payout.succeeded"]
    );
    // The list finds it, by status too.
    let (_, list) = t
        .call(
            reqwest::Method::GET,
            "/v1/payouts?status=succeeded",
            None,
            &[],
        )
        .await;
    assert_eq!(list["data"][0]["id"], id.as_str());
    let (_, none) = t
        .call(reqwest::Method::GET, "/v1/payouts?status=failed", None, &[])
        .await;
    assert_eq!(none["data"].as_array().unwrap().len(), 0);
    let ledger = t.store.ledger_violations().await.unwrap();
    assert!(ledger.is_empty(), "{ledger:?}");
}

pub async fn declined_ignored_and_cancelled_payouts_release_their_reserve(t: TestGateway) {
    with_default_scene(&t).await;
    let opening = operation_balance(&t).await;
    // Declined by the payee.
    let (_, p) = payout(&t, body(300), None).await;
    let declined = p["id"].as_str().unwrap().to_string();
    payee(
        &t,
        p["confirmation"]["package_info"].as_str().unwrap(),
        "decline",
    )
    .await;
    let failed = wait_payout(&t, &declined, "failed").await;
    assert_eq!(failed["failure_code"], "OTHER_FAIL_REASON_TYPE", "{failed}");
    assert!(
        failed["last_error"].as_str().unwrap().contains("declined"),
        "{failed}"
    );

    // Cancelled by the merchant before the payee answered; cancelling again answers the same.
    let (_, p) = payout(&t, body(200), None).await;
    let cancelled = p["id"].as_str().unwrap().to_string();
    let path = format!("/v1/payouts/{cancelled}/cancel");
    let (status, c) = t.call(reqwest::Method::POST, &path, None, &[]).await;
    assert_eq!(
        (status, c["status"].as_str()),
        (200, Some("cancelled")),
        "{c}"
    );
    let (status, c) = t.call(reqwest::Method::POST, &path, None, &[]).await;
    assert_eq!(
        (status, c["status"].as_str()),
        (200, Some("cancelled")),
        "{c}"
    );
    // The payee can no longer confirm it.
    let (status, _) = t
        .sim_call(
            reqwest::Method::POST,
            "/sim/payee/confirm",
            Some(json!({"package_info": p["confirmation"]["package_info"], "outcome": "confirm"})),
        )
        .await;
    assert_ne!(status, 200);

    // Ignored: after 24 hours WeChat fails it.
    let (_, p) = payout(&t, body(100), None).await;
    let ignored = p["id"].as_str().unwrap().to_string();
    let (status, _) = t
        .sim_call(
            reqwest::Method::POST,
            "/sim/clock",
            Some(json!({"advance_secs": 24 * 3600 + 1})),
        )
        .await;
    assert_eq!(status, 200);
    let expired = wait_payout(&t, &ignored, "failed").await;
    assert_eq!(expired["failure_code"], "OVERDUE_CLOSE", "{expired}");

    // A succeeded or failed payout cannot be cancelled.
    let (status, e) = t
        .call(
            reqwest::Method::POST,
            &format!("/v1/payouts/{declined}/cancel"),
            None,
            &[],
        )
        .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (409, Some("payout_not_cancellable"))
    );
    assert_eq!(balance(&t).await, (0, 0));
    assert_eq!(operation_balance(&t).await, opening);
    assert_eq!(
        events_of(&t, &cancelled).await,
        ["payout.awaiting_confirmation", "payout.cancelled"]
    );
    assert_eq!(
        events_of(&t, &ignored).await,
        ["payout.awaiting_confirmation", "payout.failed"]
    );
}

pub async fn not_enough_waits_then_goes_through_once_topped_up(t: TestGateway) {
    with_default_scene(&t).await;
    let opening = operation_balance(&t).await;
    top_up(&t, -opening).await;
    let (status, p) = payout(&t, body(1_000), None).await;
    assert_eq!(
        (status, p["status"].as_str()),
        (201, Some("pending")),
        "{p}"
    );
    assert!(
        p["last_error"].as_str().unwrap().starts_with("NOT_ENOUGH"),
        "{p}"
    );
    let id = p["id"].as_str().unwrap().to_string();
    // A second one, cancelled while it waits: WeChat never had it, so it is cancelled here.
    let (_, waiting) = payout(&t, body(700), None).await;
    let waiting = waiting["id"].as_str().unwrap().to_string();
    let cancelled = t
        .wait_for(&format!("/v1/payouts/{waiting}"), |p| {
            p["last_error"]
                .as_str()
                .is_some_and(|e| e.starts_with("NOT_ENOUGH"))
        })
        .await;
    assert_eq!(cancelled["status"], "pending");
    // The background round may be sending it again at this moment: payout_busy, then cancelled.
    let mut outcome = Value::Null;
    for _ in 0..5000 {
        let (status, c) = t
            .call(
                reqwest::Method::POST,
                &format!("/v1/payouts/{waiting}/cancel"),
                None,
                &[],
            )
            .await;
        if status == 409 && c["error"]["code"] == "payout_busy" {
            tokio::task::yield_now().await;
            continue;
        }
        assert_eq!(status, 200, "{c}");
        outcome = c;
        break;
    }
    assert_eq!(outcome["status"], "cancelled", "{outcome}");
    top_up(&t, 1_000).await;
    let p = wait_payout(&t, &id, "awaiting_confirmation").await;
    assert!(p["last_error"].is_null(), "{p}");
    assert_eq!(operation_balance(&t).await, 0);
    payee(
        &t,
        p["confirmation"]["package_info"].as_str().unwrap(),
        "confirm",
    )
    .await;
    wait_payout(&t, &id, "succeeded").await;
    assert_eq!(balance(&t).await, (-1_000, 0));
}

pub async fn lost_and_doubled_answers_make_one_transfer(t: TestGateway) {
    with_default_scene(&t).await;
    let opening = operation_balance(&t).await;
    // WeChat answers 500 without doing anything: pending, then made on a later round.
    t.set_faults(json!({"error_500_rate": 1.0})).await;
    let (status, p) = payout(&t, body(400), None).await;
    assert_eq!(
        (status, p["status"].as_str()),
        (201, Some("pending")),
        "{p}"
    );
    t.set_faults(json!({"drop_callback_rate": 1.0})).await;
    let id = p["id"].as_str().unwrap().to_string();
    let p = wait_payout(&t, &id, "awaiting_confirmation").await;
    // Its notification is lost: the query settles it.
    payee(
        &t,
        p["confirmation"]["package_info"].as_str().unwrap(),
        "confirm",
    )
    .await;
    wait_payout(&t, &id, "succeeded").await;

    // Doubled notifications are applied once.
    t.set_faults(json!({"duplicate_callback_rate": 1.0})).await;
    let (_, p) = payout(&t, body(250), None).await;
    let twice = p["id"].as_str().unwrap().to_string();
    payee(
        &t,
        p["confirmation"]["package_info"].as_str().unwrap(),
        "confirm",
    )
    .await;
    wait_payout(&t, &twice, "succeeded").await;
    t.set_faults(json!({})).await;
    assert_eq!(
        events_of(&t, &twice).await,
        ["payout.awaiting_confirmation", "payout.succeeded"]
    );
    assert_eq!(operation_balance(&t).await, opening - 650);
    assert_eq!(balance(&t).await, (-650, 0));
}

/// A request whose Idempotency-Key let it run again (its first run answered a 5xx or its node
/// stopped, so the key was given up or taken over) finds the payout the first run wrote: one
/// transfer, without a merchant_payout_id.
pub async fn a_payout_run_again_under_its_key_is_the_same_payout(t: TestGateway) {
    with_default_scene(&t).await;
    let (status, first) = payout(&t, body(300), Some("payout-key-1")).await;
    assert_eq!(status, 201, "{first}");
    // The key's stored answer is gone, as after a 5xx: the request runs again.
    t.store.purge_idempotency_keys(i64::MAX).await.unwrap();
    let (status, again) = payout(&t, body(300), Some("payout-key-1")).await;
    assert_eq!((status, &again["id"]), (200, &first["id"]), "{again}");
    t.store.purge_idempotency_keys(i64::MAX).await.unwrap();
    let (status, other) = payout(&t, body(301), Some("payout-key-1")).await;
    assert_eq!(
        (status, other["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused")),
        "{other}"
    );
    let (_, list) = t.call(reqwest::Method::GET, "/v1/payouts", None, &[]).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
}

/// A send starts only from within its sender's claim and stretches it over the whole send; a
/// sender whose claim lapsed and was taken (by a cancel) sends nothing, and gives up nothing.
pub async fn a_send_starts_only_within_its_claim(t: TestGateway) {
    with_default_scene(&t).await;
    t.set_faults(json!({"error_500_rate": 1.0})).await;
    let (status, p) = payout(&t, body(200), None).await;
    assert_eq!(
        (status, p["status"].as_str()),
        (201, Some("pending")),
        "{p}"
    );
    t.set_faults(json!({})).await;
    let id = p["id"].as_str().unwrap();
    let now = wxgate_gateway::now_ms();
    // A cancel holds it now; an earlier sender's lapsed claim is another value.
    let held = t.store.claim_payout(id, now).await.unwrap().unwrap();
    let mine = held.claimed_until.unwrap();
    let lapsed = mine - 1;
    assert!(
        !t.store
            .start_payout_send(id, lapsed, now, now + 1)
            .await
            .unwrap()
    );
    t.store.release_payout_claim(id, lapsed).await.unwrap();
    assert!(
        t.store.claim_payout(id, now).await.unwrap().is_none(),
        "still held"
    );
    let merchant_id = t.merchant_id.as_str();
    let unchanged = t.store.payout(merchant_id, id).await.unwrap().unwrap();
    assert_eq!(unchanged.claimed_until, Some(mine));
    // The holder starts its send: marked, begun now, held to the send's end.
    let later = now + 1_000;
    assert!(
        t.store
            .start_payout_send(id, mine, later, later + 40_000)
            .await
            .unwrap()
    );
    let sending = t.store.payout(merchant_id, id).await.unwrap().unwrap();
    assert_eq!(sending.updated_at, later);
    assert_eq!(sending.claimed_until, Some(later + 40_000));
    assert!(sending.maybe_at_wechat.is_set());
}

pub async fn payout_input_is_checked(t: TestGateway) {
    let code = |v: &Value| v["error"]["code"].as_str().map(str::to_string);
    // No scene, and no default one.
    let (status, e) = payout(&t, body(100), None).await;
    assert_eq!(
        (status, code(&e).as_deref()),
        (400, Some("payout_scene_required")),
        "{e}"
    );
    let mut wrong = body(100);
    wrong["scene"] =
        json!({"id": "1000", "report_infos": [{"info_type": "活动名称", "info_content": "x"}]});
    let (status, e) = payout(&t, wrong, None).await;
    assert_eq!(
        (status, code(&e).as_deref(), e["error"]["param"].as_str()),
        (400, Some("invalid_scene"), Some("scene")),
        "{e}"
    );
    with_default_scene(&t).await;
    for (patch, expected, param) in [
        (
            json!({"currency": "USD"}),
            "currency_not_allowed",
            "currency",
        ),
        (json!({"amount": 0}), "invalid_amount", "amount"),
        (
            json!({"remark": "字".repeat(33)}),
            "invalid_remark",
            "remark",
        ),
        (json!({"remark": ""}), "invalid_remark", "remark"),
        (json!({"openid": ""}), "invalid_openid", "openid"),
        (
            json!({"amount": 200_000}),
            "user_name_required",
            "user_name",
        ),
        (json!({"user_name": ""}), "invalid_user_name", "user_name"),
        (
            json!({"notify_url": "ftp://example.com/x"}),
            "invalid_notify_url",
            "notify_url",
        ),
    ] {
        let mut b = body(100);
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        let (status, e) = payout(&t, b, None).await;
        assert_eq!(
            (status, code(&e).as_deref(), e["error"]["param"].as_str()),
            (400, Some(expected), Some(param)),
            "{patch}: {e}"
        );
    }
    // The merchant's own id: the same payout again is that payout; another one is refused.
    let mut mine = body(150);
    mine["merchant_payout_id"] = json!("bonus-2026-11|li@1");
    let (status, first) = payout(&t, mine.clone(), None).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = payout(&t, mine.clone(), None).await;
    assert_eq!((status, &again["id"]), (200, &first["id"]));
    mine["amount"] = json!(160);
    let (status, e) = payout(&t, mine.clone(), None).await;
    assert_eq!(
        (status, code(&e).as_deref()),
        (409, Some("merchant_payout_id_taken")),
        "{e}"
    );
    mine["merchant_payout_id"] = json!("has space");
    let (status, e) = payout(&t, mine, None).await;
    assert_eq!(
        (status, code(&e).as_deref()),
        (400, Some("invalid_merchant_payout_id")),
        "{e}"
    );
    // A payee's name goes to WeChat encrypted, and is never shown.
    let mut named = body(100);
    named["user_name"] = json!("张三");
    let (status, p) = payout(&t, named, None).await;
    assert_eq!(
        (status, p["status"].as_str()),
        (201, Some("awaiting_confirmation")),
        "{p}"
    );
    assert_eq!(p["user_name_provided"], true);
    assert!(!p.to_string().contains("张三"));
    // Over WeChat's per-transfer bound: WeChat refuses it, and the payout fails saying why.
    let (status, big) = payout(&t, body(20_001), None).await;
    assert_eq!(
        (status, big["status"].as_str()),
        (201, Some("failed")),
        "{big}"
    );
    assert_eq!(big["failure_code"], "INVALID_REQUEST");
    let (status, _) = t
        .call(
            reqwest::Method::GET,
            "/v1/payouts/po_000000000000000000000000",
            None,
            &[],
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(balance(&t).await, (-250, 250));
}

/// WeChat makes the transfer but neither its answer (every attempt times out) nor anything
/// else arrives: the payout stays pending, and the query finds the one transfer WeChat made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payout_whose_answer_is_lost_is_found_by_query() {
    for db in wxgate_store::testing::all().await {
        eprintln!(
            "a_payout_whose_answer_is_lost_is_found_by_query on {:?}",
            db.backend
        );
        let t = TestGateway::spawn_with(&db, |c| {
            c.upstream_timeout = std::time::Duration::from_millis(300)
        })
        .await;
        with_default_scene(&t).await;
        let opening = operation_balance(&t).await;
        t.set_faults(json!({"timeout_after_commit_rate": 1.0, "hang_ms": 1_000}))
            .await;
        let (status, p) = payout(&t, body(800), None).await;
        assert_eq!(
            (status, p["status"].as_str()),
            (201, Some("pending")),
            "{p}"
        );
        assert!(p["last_error"].as_str().unwrap().contains("queried"), "{p}");
        t.set_faults(json!({})).await;
        let id = p["id"].as_str().unwrap().to_string();
        let p = wait_payout(&t, &id, "awaiting_confirmation").await;
        assert_eq!(operation_balance(&t).await, opening - 800);
        payee(
            &t,
            p["confirmation"]["package_info"].as_str().unwrap(),
            "confirm",
        )
        .await;
        wait_payout(&t, &id, "succeeded").await;
        assert_eq!(operation_balance(&t).await, opening - 800);
        db.cleanup().await;
    }
}

/// The operation account's fund-flow bill against the payouts: a clean payout and a declined
/// one match; one WeChat returned while the gateway heard nothing (its notification lost, its
/// query an hour away) is found, and repaired by the query reconciliation makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payouts_are_reconciled_against_the_operation_account() {
    for db in wxgate_store::testing::all().await {
        eprintln!(
            "payouts_are_reconciled_against_the_operation_account on {:?}",
            db.backend
        );
        let t = TestGateway::spawn_with(&db, |c| {
            c.payout_confirmation_poll = std::time::Duration::from_secs(3600)
        })
        .await;
        with_default_scene(&t).await;
        let mut ids = Vec::new();
        for (amount, outcome) in [(500, "confirm"), (300, "decline"), (200, "decline")] {
            if ids.len() == 2 {
                t.set_faults(json!({"drop_callback_rate": 1.0})).await;
            }
            let (_, p) = payout(&t, body(amount), None).await;
            let package = p["confirmation"]["package_info"].as_str().unwrap();
            payee(&t, package, outcome).await;
            ids.push(p["id"].as_str().unwrap().to_string());
        }
        wait_payout(&t, &ids[0], "succeeded").await;
        wait_payout(&t, &ids[1], "failed").await;
        t.set_faults(json!({})).await;
        assert_eq!(
            t.wait_for(&format!("/v1/payouts/{}", ids[2]), |_| true)
                .await["status"],
            "awaiting_confirmation"
        );

        crate::money::next_morning(&t).await;
        let r = crate::money::reconcile_today(&t).await;
        assert_eq!(r["status"], "completed", "{r}");
        let totals = &r["totals"];
        assert_eq!(
            (
                totals["wechat_payouts"].as_i64(),
                totals["wechat_payout_amount"].as_i64()
            ),
            (Some(3), Some(1_000)),
            "{r}"
        );
        assert_eq!(
            (
                totals["gateway_payouts"].as_i64(),
                totals["gateway_payout_amount"].as_i64()
            ),
            (Some(3), Some(1_000)),
            "{r}"
        );
        let found = r["discrepancies"].as_array().unwrap();
        assert_eq!(found.len(), 1, "{r}");
        assert_eq!(found[0]["type"], "status_mismatch");
        assert_eq!(found[0]["payout"], ids[2].as_str());
        // The repair follows the completion.
        let path = format!("/v1/reconciliations/{}", r["id"].as_str().unwrap());
        let r = t.wait_for(&path, |r| r["repaired_count"] == 1).await;
        assert_eq!(r["discrepancies"][0]["status"], "repaired", "{r}");
        assert_eq!(
            wait_payout(&t, &ids[2], "failed").await["failure_code"],
            "OTHER_FAIL_REASON_TYPE"
        );
        assert_eq!(balance(&t).await, (-500, 0));
        db.cleanup().await;
    }
}
