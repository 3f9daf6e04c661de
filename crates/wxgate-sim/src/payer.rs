//! The simulated payer: a WeChat user who scans a `code_url`, opens an `h5_url`, or is handed
//! a JSAPI / Mini Program / APP bundle, and pays, cancels or runs out of money. Also WeChat's
//! webpage authorization (openid by OAuth) and the pages a person uses to play the payer.

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use wechatpay_v3::paysign::{AppPayParams, JsapiPayParams};

use crate::merchant::Merchant;
use crate::ops::{self, PayError};
use crate::sim::Sim;
use crate::state::{Order, State as SimState};
use crate::wire::{H5_URL_VALID_SECS, PREPAY_VALID_SECS, WxError};

pub fn routes() -> Router<Sim> {
    Router::new()
        .route("/sim/payer/pay", post(pay))
        .route("/sim/payer/order", get(order_info))
        .route("/sim/payer", get(payer_page))
        .route("/cgi-bin/mmpayweb-bin/checkmweb", get(h5_cashier))
        .route("/sim/jsbridge.js", get(jsbridge))
        .route("/connect/oauth2/authorize", get(oauth_authorize))
        .route("/sns/oauth2/access_token", get(oauth_access_token))
}

/// How long an OAuth code can be exchanged.
const OAUTH_CODE_VALID_SECS: i64 = 5 * 60;

pub use crate::ops::openid_for;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PayRequest {
    pub code_url: Option<String>,
    pub prepay_id: Option<String>,
    pub h5_url: Option<String>,
    pub jsapi: Option<JsapiPayParams>,
    pub app: Option<AppPayParams>,
    pub openid: Option<String>,
    #[serde(default)]
    pub outcome: Outcome,
    /// A coupon paying part of a domestic order: `{"type": "CASH" | "NOCASH", "amount": fen}`.
    pub coupon: Option<crate::state::Coupon>,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    #[default]
    Pay,
    Cancel,
    InsufficientFunds,
}

fn refuse(status: StatusCode, code: &'static str, message: impl Into<String>) -> WxError {
    WxError::new(status, code, message)
}

/// Which order a payer's credential points at, checked the way the WeChat app would.
fn resolve(sim: &Sim, req: &PayRequest) -> Result<(String, String), WxError> {
    let now = sim.now();
    let state = sim.state();
    let (key, expected_type, issued_at) = credential_key(&state, req, now)?;
    let key = key.ok_or_else(|| {
        refuse(
            StatusCode::NOT_FOUND,
            "ORDER_NOT_EXIST",
            "no order for this payment credential",
        )
    })?;
    let order = state
        .orders
        .get(&key)
        .ok_or_else(|| refuse(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在"))?;
    if !expected_type.contains(&order.trade_type.as_str()) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "TRADE_TYPE_MISMATCH",
            format!("this credential cannot pay a {} order", order.trade_type),
        ));
    }
    if (issued_at.is_some() || req.code_url.is_some())
        && now - order.prepay_issued_at > PREPAY_VALID_SECS
    {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "PREPAY_EXPIRED",
            "prepay_id / code_url are valid for 2 hours",
        ));
    }
    let merchant = state
        .merchants
        .get(&order.mchid)
        .ok_or_else(|| refuse(StatusCode::NOT_FOUND, "MCH_NOT_EXISTS", "商户号不存在"))?;
    check_signed(merchant, order, req)?;
    Ok(key)
}

/// The order a credential names (its key, if any), the trade types it can pay, and whether it
/// is a prepay_id (which, like a code_url, lapses after two hours).
type CredentialKey = (
    Option<(String, String)>,
    &'static [&'static str],
    Option<()>,
);

fn credential_key(state: &SimState, req: &PayRequest, now: i64) -> Result<CredentialKey, WxError> {
    Ok(if let Some(code_url) = &req.code_url {
        let token = code_url
            .strip_prefix("weixin://wxpay/bizpayurl?pr=")
            .ok_or_else(|| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    "INVALID_CODE_URL",
                    "not a weixin://wxpay/bizpayurl code",
                )
            })?;
        let key = state.by_code_token.get(token).cloned();
        (key, &["NATIVE"][..], None)
    } else if let Some(h5_url) = &req.h5_url {
        let url = url::Url::parse(h5_url)
            .map_err(|_| refuse(StatusCode::BAD_REQUEST, "INVALID_H5_URL", "not a URL"))?;
        let params: HashMap<String, String> = url.query_pairs().into_owned().collect();
        let key = params
            .get("prepay_id")
            .and_then(|p| state.by_prepay_id.get(p))
            .cloned();
        if let Some(order) = key.as_ref().and_then(|k| state.orders.get(k))
            && (params.get("package") != order.h5_package.as_ref()
                || now - order.h5_issued_at > H5_URL_VALID_SECS)
        {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "H5_URL_EXPIRED",
                "this h5_url has expired; the merchant must request a new one",
            ));
        }
        (key, &["MWEB"][..], None)
    } else {
        let prepay_id = match (&req.prepay_id, &req.jsapi, &req.app) {
            (Some(id), _, _) => id.clone(),
            (None, Some(j), _) => j
                .prepay_id()
                .ok_or_else(|| {
                    refuse(
                        StatusCode::BAD_REQUEST,
                        "INVALID_PACKAGE",
                        "package must be prepay_id=...",
                    )
                })?
                .to_string(),
            (None, None, Some(a)) => a.prepayid.clone(),
            _ => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "PARAM_ERROR",
                    "one of code_url, prepay_id, h5_url, jsapi and app is required",
                ));
            }
        };
        let key = state.by_prepay_id.get(&prepay_id).cloned();
        (key, &["JSAPI", "APP"][..], Some(()))
    })
}

/// The signed client-side parameters (JS API, APP) verify with the merchant's key and name the
/// order's app; a JSAPI order is paid by its own payer.
fn check_signed(merchant: &Merchant, order: &Order, req: &PayRequest) -> Result<(), WxError> {
    if let Some(j) = &req.jsapi {
        if j.app_id != order.appid {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "APPID_MISMATCH",
                "appId is not the order's appid",
            ));
        }
        j.verify(&merchant.merchant_public_key).map_err(|_| {
            refuse(
                StatusCode::BAD_REQUEST,
                "PAYSIGN_INVALID",
                "paySign does not verify with the merchant's key",
            )
        })?;
    }
    if let Some(a) = &req.app {
        if a.appid != order.appid || a.partnerid != order.mchid {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "APPID_MISMATCH",
                "appid / partnerid do not match the order",
            ));
        }
        a.verify(&merchant.merchant_public_key).map_err(|_| {
            refuse(
                StatusCode::BAD_REQUEST,
                "SIGN_INVALID",
                "sign does not verify with the merchant's key",
            )
        })?;
    }
    if order.trade_type == "JSAPI"
        && let (Some(expected), Some(given)) = (&order.openid, &req.openid)
        && expected != given
    {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "OPENID_MISMATCH",
            "this WeChat user is not the order's payer",
        ));
    }
    Ok(())
}

async fn pay(State(sim): State<Sim>, Json(req): Json<PayRequest>) -> Response {
    let key = match resolve(&sim, &req) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    let view = |order: &Order, outcome: &str| {
        Json(json!({"outcome": outcome, "transaction": ops::transaction_view(order)}))
            .into_response()
    };
    match req.outcome {
        Outcome::Pay => match ops::pay_order(&sim, &key, req.openid.clone(), req.coupon) {
            Ok(order) => view(&order, "paid"),
            Err(PayError::Paid) => {
                refuse(StatusCode::CONFLICT, "ORDERPAID", "订单已支付").into_response()
            }
            Err(PayError::Closed) => {
                refuse(StatusCode::CONFLICT, "ORDER_CLOSED", "订单已关闭").into_response()
            }
            Err(PayError::NotFound) => {
                refuse(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在").into_response()
            }
            Err(PayError::Coupon) => refuse(
                StatusCode::BAD_REQUEST,
                "PARAM_ERROR",
                "coupon: a domestic order's coupon pays from 1 fen to 1 fen below its total",
            )
            .into_response(),
        },
        outcome => {
            let now = sim.now();
            let mut state = sim.state();
            state.expire_if_due(&key, now);
            match state.orders.get(&key) {
                Some(order) => view(
                    order,
                    if outcome == Outcome::Cancel {
                        "cancelled"
                    } else {
                        "insufficient_funds"
                    },
                ),
                None => {
                    refuse(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在").into_response()
                }
            }
        }
    }
}

async fn order_info(State(sim): State<Sim>, Query(q): Query<HashMap<String, String>>) -> Response {
    let req = PayRequest {
        code_url: q.get("code_url").cloned(),
        prepay_id: q.get("prepay_id").cloned(),
        h5_url: q.get("h5_url").cloned(),
        ..Default::default()
    };
    match resolve(&sim, &req) {
        Ok(key) => {
            let now = sim.now();
            let mut state = sim.state();
            state.expire_if_due(&key, now);
            match state.orders.get(&key) {
                Some(order) => Json(ops::order_summary(order)).into_response(),
                None => {
                    refuse(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在").into_response()
                }
            }
        }
        Err(e) => e.into_response(),
    }
}

async fn payer_page() -> Html<&'static str> {
    Html(include_str!("payer.html"))
}

/// `GET /sim/jsbridge.js`: a stand-in for the `WeixinJSBridge` that WeChat's browser gives a
/// page. Loaded into a test browser before the page's own scripts, it answers
/// `getBrandWCPayRequest` by posting the parameters to this simulator's payer (which verifies
/// `paySign` and pays) and calls the page back as WeChat does (`get_brand_wcpay_request:ok`,
/// `:cancel` or `:fail`). `?outcome=cancel` makes the payer cancel instead.
async fn jsbridge(headers: axum::http::HeaderMap) -> Response {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".:-[]".contains(c))
        })
        .unwrap_or("127.0.0.1");
    let script = include_str!("jsbridge.js").replace("__SIM_ORIGIN__", &format!("http://{host}"));
    (
        [(axum::http::header::CONTENT_TYPE, "application/javascript")],
        script,
    )
        .into_response()
}

async fn h5_cashier() -> Html<&'static str> {
    Html(include_str!("payer.html"))
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    appid: String,
    redirect_uri: String,
    response_type: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    /// Which simulated WeChat user is signed in (default `payer`).
    sim_user: Option<String>,
}

/// `GET /connect/oauth2/authorize`: the user (silently, as with `snsapi_base`) agrees and is
/// sent back to `redirect_uri` with a code.
async fn oauth_authorize(State(sim): State<Sim>, Query(q): Query<AuthorizeQuery>) -> Response {
    let known = sim.state().merchants.values().any(|m| m.appid == q.appid);
    if !known {
        return refuse(StatusCode::BAD_REQUEST, "40013", "invalid appid").into_response();
    }
    if q.response_type.as_deref() != Some("code") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "10003",
            "response_type must be code",
        )
        .into_response();
    }
    if !matches!(q.scope.as_deref(), Some("snsapi_base" | "snsapi_userinfo")) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "10005",
            "scope must be snsapi_base or snsapi_userinfo",
        )
        .into_response();
    }
    let Ok(mut redirect) = url::Url::parse(&q.redirect_uri) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "10003",
            "redirect_uri is not an absolute URL",
        )
        .into_response();
    };
    let code = wechatpay_v3::nonce(32);
    let openid = openid_for(&q.appid, q.sim_user.as_deref().unwrap_or("payer"));
    sim.state()
        .oauth_codes
        .insert(code.clone(), (q.appid.clone(), openid, sim.now()));
    redirect.query_pairs_mut().append_pair("code", &code);
    if let Some(state) = &q.state {
        redirect.query_pairs_mut().append_pair("state", state);
    }
    Redirect::to(redirect.as_str()).into_response()
}

#[derive(Deserialize)]
struct TokenQuery {
    appid: String,
    secret: String,
    code: String,
    grant_type: String,
}

/// `GET /sns/oauth2/access_token`: code → openid, once.
async fn oauth_access_token(State(sim): State<Sim>, Query(q): Query<TokenQuery>) -> Response {
    let err = |code: i64, msg: &str| Json(json!({"errcode": code, "errmsg": msg})).into_response();
    if q.grant_type != "authorization_code" {
        return err(40002, "invalid grant_type");
    }
    let now = sim.now();
    let mut state = sim.state();
    let secret_ok = state
        .merchants
        .values()
        .any(|m| m.appid == q.appid && m.app_secret == q.secret);
    if !secret_ok {
        return err(40125, "invalid appsecret");
    }
    match state.oauth_codes.remove(&q.code) {
        Some((appid, openid, issued))
            if appid == q.appid && now - issued <= OAUTH_CODE_VALID_SECS =>
        {
            Json(json!({
                "access_token": wechatpay_v3::nonce(64),
                "expires_in": 7200,
                "refresh_token": wechatpay_v3::nonce(64),
                "openid": openid,
                "scope": "snsapi_base",
            }))
            .into_response()
        }
        _ => err(40029, "invalid code"),
    }
}
