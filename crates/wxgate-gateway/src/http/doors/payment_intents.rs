//! The payment-intents door (system 001): `GET /mch-api/v1/auth` (client credentials → access
//! token), `POST /mch-api/v1/pa/payment_intents/create` and `/query`, in the
//! `{code, data, message, rid}` envelope. An intent is a wxgate payment: its `order_id` is the
//! payment's id.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;
use wxgate_domain::door::Door;
use wxgate_domain::id::{MerchantId, PaymentId};
use wxgate_domain::{Currency, PaymentStatus};
use wxgate_store::MerchantRow;

use crate::app::{doors, payments as pay};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gateway::Gateway;
use crate::http::extract::parse_json;
use crate::http::payments::{CreatePayment, PayerIn};
use crate::next_action::NextAction;
use crate::views::doors::payment_intents as view;

const DOOR: Door = Door::PaymentIntents;

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/mch-api/v1/auth", get(auth))
        .route("/mch-api/v1/pa/payment_intents/create", post(create))
        .route("/mch-api/v1/pa/payment_intents/query", post(query))
}

/// An answer in the door's envelope: the data, or the refusal with its status.
fn answer(result: ApiResult<Value>) -> Response {
    match result {
        Ok(data) => (StatusCode::OK, axum::Json(view::ok(data))).into_response(),
        Err(e) => {
            let status =
                StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, axum::Json(view::error(&e))).into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
struct AuthQuery {
    grant_type: Option<String>,
    uid: Option<String>,
    client_secret: Option<String>,
}

/// Step 0: `grant_type=client_credentials&uid=…&client_secret=…` → `{access_token, expires_in}`
/// (bare, as the system answers it); a refusal in the envelope.
async fn auth(State(gw): State<Gateway>, Query(q): Query<AuthQuery>) -> Response {
    let issued = async {
        let missing = |p: &str| ApiError::invalid(ErrorCode::ParameterMissing, p, "is required");
        if q.grant_type.as_deref() != Some("client_credentials") {
            return Err(ApiError::invalid(
                ErrorCode::InvalidQuery,
                "grant_type",
                "must be client_credentials",
            ));
        }
        let uid = q.uid.as_deref().ok_or_else(|| missing("uid"))?;
        let secret = q
            .client_secret
            .as_deref()
            .ok_or_else(|| missing("client_secret"))?;
        let merchant = doors::check_secret(&gw, DOOR, uid, secret).await?;
        doors::issue_token(&gw, DOOR, &merchant.id, doors::TOKEN_LIFETIME_MS).await
    }
    .await;
    match issued {
        Ok((token, expires_in)) => axum::Json(serde_json::json!({
            "access_token": token,
            "expires_in": expires_in,
        }))
        .into_response(),
        Err(e) => answer(Err(e)),
    }
}

/// The merchant behind `Authorization: Bearer <access_token>`.
async fn merchant(gw: &Gateway, headers: &HeaderMap) -> ApiResult<MerchantRow> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "Authorization: Bearer <access_token> is required",
            )
        })?;
    doors::token_merchant(gw, DOOR, token).await
}

#[derive(Debug, Deserialize)]
struct CreateIntent {
    amount: String,
    currency: String,
    settlement_currency: Option<String>,
    merchant_order_id: String,
    description: String,
    notify_url: Option<String>,
    payment_method: PaymentMethod,
}

#[derive(Debug, Deserialize)]
struct PaymentMethod {
    #[serde(rename = "type")]
    kind: String,
    wechat: Wechat,
}

#[derive(Debug, Deserialize)]
struct Wechat {
    flow: String,
    success_url: Option<String>,
    failed_url: Option<String>,
    canceled_url: Option<String>,
    sub_appid: Option<String>,
    sub_openid: Option<String>,
}

async fn create(State(gw): State<Gateway>, headers: HeaderMap, body: Bytes) -> Response {
    answer(create_intent(&gw, &headers, &body).await)
}

async fn create_intent(gw: &Gateway, headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let merchant = merchant(gw, headers).await?;
    let req: CreateIntent = parse_json(body)?;
    let p = super::create_payment(gw, &merchant, wxgate_request(&merchant, req)?, DOOR).await?;
    Ok(view::intent(&p, stored_action(&p).as_ref()))
}

fn stored_action(p: &wxgate_store::PaymentRow) -> Option<NextAction> {
    p.wechat_credential
        .as_deref()
        .and_then(NextAction::from_stored)
        .or_else(|| {
            // A hosted payment's action is its checkout page.
            p.hosted_url.as_ref().map(|url| NextAction::RedirectToUrl {
                redirect_to_url: crate::next_action::Redirect {
                    url: url.clone(),
                    expires_at: crate::views::rfc3339(p.expires_at),
                },
            })
        })
}

/// The intent as the `/v1` API's create request: the same rules then apply to both.
fn wxgate_request(merchant: &MerchantRow, req: CreateIntent) -> ApiResult<CreatePayment> {
    let currency = Currency::parse(&req.currency)
        .map_err(|e| ApiError::invalid(ErrorCode::InvalidCurrency, "currency", e.to_string()))?;
    // WeChat settles by the merchant's contract, not per order: the intent may name only that.
    let settles_in = merchant
        .settlement_currency
        .as_deref()
        .unwrap_or(&req.currency);
    if req
        .settlement_currency
        .as_deref()
        .is_some_and(|s| s != settles_in)
    {
        return Err(ApiError::invalid(
            ErrorCode::CurrencyNotAllowed,
            "settlement_currency",
            format!(
                "this merchant's payments in {} settle in {settles_in}",
                req.currency
            ),
        ));
    }
    let amount = currency.parse_major(req.amount.trim()).ok_or_else(|| {
        ApiError::invalid(
            ErrorCode::InvalidAmount,
            "amount",
            format!(
                "amount must be a decimal in {} with at most {} decimals",
                req.currency,
                currency.exponent()
            ),
        )
    })?;
    if req.payment_method.kind != "wechat" {
        return Err(ApiError::invalid(
            ErrorCode::InvalidIntegration,
            "payment_method.type",
            "must be wechat",
        ));
    }
    let w = req.payment_method.wechat;
    let (integration, openid) = flow(merchant, &w)?;
    Ok(CreatePayment {
        amount,
        currency: req.currency,
        merchant_order_id: req.merchant_order_id,
        description: req.description,
        integration: integration.into(),
        payer: openid.map(|openid| PayerIn { openid }),
        client_ip: None,
        expires_at: None,
        return_url: w.success_url,
        cancel_url: w.canceled_url.or(w.failed_url),
        notify_url: req.notify_url,
        metadata: None,
        attach: None,
        inline_qr_images: false,
    })
}

/// The wxgate integration of a `flow` (and the payer's openid for a Mini Program). An Official
/// Account page or a phone's browser gets the hosted checkout, which picks JSAPI inside WeChat
/// and H5 elsewhere.
fn flow(merchant: &MerchantRow, w: &Wechat) -> ApiResult<(&'static str, Option<String>)> {
    let own_appid = |expected: Option<&str>| -> ApiResult<()> {
        match (&w.sub_appid, expected) {
            (Some(given), Some(expected)) if given != expected => Err(ApiError::invalid(
                ErrorCode::InvalidIntegration,
                "payment_method.wechat.sub_appid",
                "is not this merchant's AppID",
            )),
            _ => Ok(()),
        }
    };
    match w.flow.as_str() {
        "official_account" | "mobile_web" => Ok(("hosted", None)),
        "qrcode" => Ok(("native", None)),
        "mobile_app" => own_appid(Some(&merchant.appid)).map(|()| ("app", None)),
        "mini_program" => {
            own_appid(Some(merchant.mini_program_appid_or_own()))?;
            let openid = w.sub_openid.clone().ok_or_else(|| {
                ApiError::invalid(
                    ErrorCode::OpenidRequired,
                    "payment_method.wechat.sub_openid",
                    "is required for the mini_program flow",
                )
            })?;
            Ok(("mini_program", Some(openid)))
        }
        _ => Err(ApiError::invalid(
            ErrorCode::InvalidIntegration,
            "payment_method.wechat.flow",
            "must be official_account, qrcode, mobile_web, mobile_app or mini_program",
        )),
    }
}

#[derive(Debug, Deserialize)]
struct QueryIntent {
    order_id: Option<String>,
    merchant_order_id: Option<String>,
}

async fn query(State(gw): State<Gateway>, headers: HeaderMap, body: Bytes) -> Response {
    answer(query_intent(&gw, &headers, &body).await)
}

/// By `order_id` (the payment's id) or `merchant_order_id`; both must name the same payment.
async fn query_intent(gw: &Gateway, headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let merchant = merchant(gw, headers).await?;
    let q: QueryIntent = parse_json(body)?;
    let not_found = || ApiError::not_found("payment intent");
    let payment = match (&q.order_id, &q.merchant_order_id) {
        (Some(id), _) if !id.is_empty() => {
            let id = PaymentId::parse(id).ok_or_else(not_found)?;
            pay::get(gw, &MerchantId::stored(&merchant.id), &id)
                .await?
                .payment
        }
        (_, Some(order)) if !order.is_empty() => pay::by_merchant_order_id(gw, &merchant.id, order)
            .await?
            .ok_or_else(not_found)?,
        _ => {
            return Err(ApiError::invalid(
                ErrorCode::ParameterMissing,
                "order_id",
                "order_id or merchant_order_id is required",
            ));
        }
    };
    if q.merchant_order_id
        .as_deref()
        .is_some_and(|o| !o.is_empty() && o != payment.merchant_order_id)
    {
        return Err(not_found());
    }
    let action = (payment.status == PaymentStatus::Pending)
        .then(|| stored_action(&payment))
        .flatten();
    Ok(view::intent(&payment, action.as_ref()))
}
