//! `/sim/...` administration: sandbox merchants, faults, the business clock, and views of
//! orders and callbacks for tests and people. These endpoints are the simulator's own and are
//! not signed.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;

use crate::faults::Faults;
use crate::merchant::{Merchant, SigningMode};
use crate::sim::Sim;
use crate::state::State as SimState;

pub fn routes() -> Router<Sim> {
    Router::new()
        .route(
            "/sim/health",
            get(|| async { Json(json!({"status": "ok"})) }),
        )
        .route("/sim/merchants", post(create_merchant))
        .route(
            "/sim/merchants/{mchid}",
            get(get_merchant).patch(update_merchant),
        )
        .route(
            "/sim/faults",
            get(get_global_faults)
                .put(put_global_faults)
                .delete(clear_global_faults),
        )
        .route(
            "/sim/merchants/{mchid}/faults",
            get(get_merchant_faults)
                .put(put_merchant_faults)
                .delete(clear_merchant_faults),
        )
        .route("/sim/orders/{mchid}/{out_trade_no}", get(get_order))
        .route("/sim/callbacks", get(list_callbacks))
        .route("/sim/clock", get(get_clock).post(advance_clock))
        .route("/sim/payee/confirm", post(payee_confirm))
        .route(
            "/sim/merchants/{mchid}/operation_balance",
            get(get_operation_balance).post(top_up),
        )
        .route(
            "/sim/merchants/{mchid}/import",
            post(import_orders).layer(axum::extract::DefaultBodyLimit::max(IMPORT_BODY_LIMIT)),
        )
}

/// The largest body `POST /sim/merchants/{mchid}/import` takes (about 100,000 orders).
const IMPORT_BODY_LIMIT: usize = 32 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Import {
    orders: Vec<crate::ops::ImportedOrder>,
}

/// `POST /sim/merchants/{mchid}/import`: a history of paid orders and succeeded refunds at
/// once, without callbacks (load tests of reconciliation).
async fn import_orders(State(sim): State<Sim>, Path(mchid): Path<String>, body: Bytes) -> Response {
    let import: Import = match serde_json::from_slice(&body) {
        Ok(i) => i,
        Err(e) => return bad_request(format!("body: {e}")),
    };
    if let Some(bad) = import
        .orders
        .iter()
        .find_map(crate::ops::ImportedOrder::problem)
    {
        return bad_request(bad);
    }
    if !crate::ops::import_paid_orders(&sim, &mchid, &import.orders) {
        return not_found("merchant");
    }
    Json(json!({"imported": import.orders.len()})).into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"code": "PARAM_ERROR", "message": message.into()})),
    )
        .into_response()
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"code": "NOT_FOUND", "message": format!("{what} not found")})),
    )
        .into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateMerchant {
    #[serde(default)]
    signing: SigningMode,
    /// Optional: a chosen mchid of 8 to 10 digits.
    mchid: Option<String>,
    /// Optional: the fee rate in basis points (default 60, that is 0.60 %).
    fee_rate_bp: Option<u32>,
    /// Optional: the currency its cross-border payments settle in (default: each its own).
    settlement_currency: Option<String>,
}

impl CreateMerchant {
    fn check(&self) -> Result<(), String> {
        if let Some(m) = &self.mchid
            && !(8..=10).contains(&m.len()) | !m.bytes().all(|b| b.is_ascii_digit())
        {
            return Err("mchid must be 8 to 10 digits".into());
        }
        if self.fee_rate_bp.is_some_and(|bp| bp > MAX_FEE_RATE_BP) {
            return Err("fee_rate_bp must be at most 1000 (10 %)".into());
        }
        check_settlement_currency(self.settlement_currency.as_deref())
    }
}

/// A known settlement currency, or why not.
fn check_settlement_currency(code: Option<&str>) -> Result<(), String> {
    match code {
        Some(c) if crate::ops::exchange_rate(c).is_none() => Err(format!(
            "settlement_currency {c:?} is not a currency the simulator converts"
        )),
        _ => Ok(()),
    }
}

/// The highest fee rate a sandbox merchant may have: 10 %.
const MAX_FEE_RATE_BP: u32 = 1_000;

/// `POST /sim/merchants`: a fresh sandbox merchant; the answer is its credential bundle,
/// the only time the merchant's private key is shown.
async fn create_merchant(State(sim): State<Sim>, body: Bytes) -> Response {
    let req: CreateMerchant = if body.iter().all(u8::is_ascii_whitespace) {
        CreateMerchant::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return bad_request(format!("body: {e}")),
        }
    };
    if let Err(e) = req.check() {
        return bad_request(e);
    }
    let fee_rate_bp = req
        .fee_rate_bp
        .unwrap_or(crate::merchant::DEFAULT_FEE_RATE_BP);
    let mchid = req
        .mchid
        .unwrap_or_else(|| format!("19{:08}", rand::rng().random_range(0..100_000_000u32)));
    if sim.state().merchants.contains_key(&mchid) {
        return (
            StatusCode::CONFLICT,
            Json(json!({"code": "MCH_EXISTS", "message": "mchid already exists"})),
        )
            .into_response();
    }
    let now = time::OffsetDateTime::now_utc();
    let minted = tokio::task::spawn_blocking(move || Merchant::mint(mchid, req.signing, now)).await;
    let (mut merchant, bundle) = match minted {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "could not mint a merchant");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"code": "SYSTEM_ERROR", "message": "could not mint keys"})),
            )
                .into_response();
        }
        Err(_) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"code": "SYSTEM_ERROR", "message": "key minting failed"})),
            )
                .into_response();
        }
    };
    merchant.fee_rate_bp = fee_rate_bp;
    merchant.settlement_currency = req.settlement_currency;
    {
        let mut state = sim.state();
        if state.merchants.contains_key(&merchant.mchid) {
            return (
                StatusCode::CONFLICT,
                Json(json!({"code": "MCH_EXISTS", "message": "mchid already exists"})),
            )
                .into_response();
        }
        state
            .merchants
            .insert(merchant.mchid.clone(), Arc::new(merchant));
        state.dirty = true;
    }
    (StatusCode::CREATED, Json(bundle)).into_response()
}

/// Public facts about a merchant, and its app secret for webpage authorization.
async fn get_merchant(State(sim): State<Sim>, Path(mchid): Path<String>) -> Response {
    let Some(m) = sim.state().merchants.get(&mchid).cloned() else {
        return not_found("merchant");
    };
    Json(json!({
        "mchid": m.mchid,
        "appid": m.appid,
        "app_secret": m.app_secret,
        "signing": m.signing,
        "merchant_serial_no": m.merchant_serial_no,
        "platform_serial_no": m.platform_certificate.serial_no,
        "platform_public_key_id": m.platform_public_key_id,
        "fee_rate_bp": m.fee_rate_bp,
        "settlement_currency": m.settlement_currency,
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateMerchant {
    /// The currency its cross-border payments settle in; `null`: each its own.
    settlement_currency: Option<String>,
}

/// `PATCH /sim/merchants/{mchid}`: changes a merchant's settlement currency (its contract),
/// for the statements of days not yet served.
async fn update_merchant(
    State(sim): State<Sim>,
    Path(mchid): Path<String>,
    body: Bytes,
) -> Response {
    let req: UpdateMerchant = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("body: {e}")),
    };
    if let Err(e) = check_settlement_currency(req.settlement_currency.as_deref()) {
        return bad_request(e);
    }
    let mut state = sim.state();
    let Some(m) = state.merchants.get(&mchid).cloned() else {
        return not_found("merchant");
    };
    let record = crate::merchant::MerchantRecord {
        settlement_currency: req.settlement_currency,
        ..m.record()
    };
    match Merchant::from_record(&record) {
        Ok(updated) => {
            state.merchants.insert(mchid, Arc::new(updated));
            state.dirty = true;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "could not rebuild a merchant");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn parse_faults(body: &[u8]) -> Result<Faults, String> {
    let faults: Faults = serde_json::from_slice(body).map_err(|e| format!("faults: {e}"))?;
    faults.validate()?;
    Ok(faults)
}

async fn get_global_faults(State(sim): State<Sim>) -> Json<Faults> {
    Json(sim.state().global_faults.clone())
}

async fn put_global_faults(State(sim): State<Sim>, body: Bytes) -> Response {
    match parse_faults(&body) {
        Ok(faults) => {
            let mut state = sim.state();
            state.global_faults = faults.clone();
            state.dirty = true;
            Json(faults).into_response()
        }
        Err(e) => bad_request(e),
    }
}

async fn clear_global_faults(State(sim): State<Sim>) -> StatusCode {
    let mut state = sim.state();
    state.global_faults = Faults::default();
    state.dirty = true;
    StatusCode::NO_CONTENT
}

async fn get_merchant_faults(State(sim): State<Sim>, Path(mchid): Path<String>) -> Response {
    let state = sim.state();
    if !state.merchants.contains_key(&mchid) {
        return not_found("merchant");
    }
    Json(state.faults_for(Some(&mchid))).into_response()
}

async fn put_merchant_faults(
    State(sim): State<Sim>,
    Path(mchid): Path<String>,
    body: Bytes,
) -> Response {
    let faults = match parse_faults(&body) {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    let mut state = sim.state();
    if !state.merchants.contains_key(&mchid) {
        return not_found("merchant");
    }
    state.merchant_faults.insert(mchid, faults.clone());
    state.dirty = true;
    Json(faults).into_response()
}

async fn clear_merchant_faults(State(sim): State<Sim>, Path(mchid): Path<String>) -> StatusCode {
    let mut state = sim.state();
    state.merchant_faults.remove(&mchid);
    state.dirty = true;
    StatusCode::NO_CONTENT
}

/// The simulator's full view of one order, with its refunds.
async fn get_order(
    State(sim): State<Sim>,
    Path((mchid, out_trade_no)): Path<(String, String)>,
) -> Response {
    let now = sim.now();
    let key = SimState::order_key(&mchid, &out_trade_no);
    let mut state = sim.state();
    state.expire_if_due(&key, now);
    let Some(order) = state.orders.get(&key) else {
        return not_found("order");
    };
    let refunds: Vec<_> = state
        .refunds
        .values()
        .filter(|r| r.mchid == mchid && r.out_trade_no == out_trade_no)
        .map(|r| json!({"out_refund_no": r.out_refund_no, "refund_id": r.refund_id, "refund": r.refund, "status": r.state.as_str()}))
        .collect();
    Json(json!({
        "order": order,
        "transaction": crate::ops::transaction_view(order),
        "refunds": refunds,
    }))
    .into_response()
}

/// Callbacks sent, optionally for one merchant and/or order.
async fn list_callbacks(
    State(sim): State<Sim>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let state = sim.state();
    let list: Vec<_> = state
        .callbacks
        .iter()
        .filter(|c| q.get("mchid").is_none_or(|m| *m == c.mchid))
        .filter(|c| q.get("out_trade_no").is_none_or(|o| *o == c.out_trade_no))
        .cloned()
        .collect();
    Json(json!({"data": list})).into_response()
}

async fn get_clock(State(sim): State<Sim>) -> Json<serde_json::Value> {
    Json(
        json!({"now": crate::formats::rfc3339_cst(sim.now()), "offset_secs": sim.now() - crate::formats::real_now()}),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    advance_secs: i64,
}

/// Moves business time forward (order expiry, refund windows, bill dates); signatures keep
/// the real clock.
async fn advance_clock(State(sim): State<Sim>, body: Bytes) -> Response {
    let advance: Advance = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return bad_request(format!("body: {e}")),
    };
    if !(0..=400 * 24 * 3600).contains(&advance.advance_secs) {
        return bad_request("advance_secs must be between 0 and 34560000");
    }
    let offset = sim.advance_clock(advance.advance_secs);
    // Transfers whose payee let the window pass fail now, with their notifications.
    crate::transfers::expire_due(&sim);
    Json(json!({"now": crate::formats::rfc3339_cst(sim.now()), "offset_secs": offset}))
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayeeConfirm {
    package_info: String,
    outcome: crate::transfers::PayeeOutcome,
}

/// `POST /sim/payee/confirm`: the payee confirms or declines a transfer on WeChat's page.
async fn payee_confirm(State(sim): State<Sim>, body: Bytes) -> Response {
    let req: PayeeConfirm = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("body: {e}")),
    };
    match crate::transfers::payee_answers(&sim, &req.package_info, req.outcome) {
        Ok(view) => Json(json!(view)).into_response(),
        Err(message) => bad_request(message),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopUp {
    amount: i64,
}

/// The most one top-up adds: 10,000,000.00 CNY.
const MAX_TOP_UP_FEN: i64 = 1_000_000_000;

/// `POST /sim/merchants/{mchid}/operation_balance {"amount": fen}`: tops the operation account
/// up (a negative amount takes money out, never below zero, so tests can reach `NOT_ENOUGH`).
async fn top_up(State(sim): State<Sim>, Path(mchid): Path<String>, body: Bytes) -> Response {
    let req: TopUp = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("body: {e}")),
    };
    if req.amount == 0 || req.amount.abs() > MAX_TOP_UP_FEN {
        return bad_request(format!(
            "amount must be non-zero and at most {MAX_TOP_UP_FEN} fen either way"
        ));
    }
    let mut state = sim.state();
    if !state.merchants.contains_key(&mchid) {
        return not_found("merchant");
    }
    let balance = state.operation_balance(&mchid);
    if *balance + req.amount < 0 {
        return bad_request(format!("the operation account holds only {balance} fen"));
    }
    *balance += req.amount;
    let balance = *balance;
    state.dirty = true;
    Json(json!({"mchid": mchid, "operation_balance": balance})).into_response()
}

async fn get_operation_balance(State(sim): State<Sim>, Path(mchid): Path<String>) -> Response {
    let mut state = sim.state();
    if !state.merchants.contains_key(&mchid) {
        return not_found("merchant");
    }
    let balance = *state.operation_balance(&mchid);
    Json(json!({"mchid": mchid, "operation_balance": balance})).into_response()
}
