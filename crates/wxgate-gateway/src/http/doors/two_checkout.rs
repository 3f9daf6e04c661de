//! The 2Checkout door (system 000): API 6.0 over JSON-RPC at `/rpc/6.0/` (`login`,
//! `placeOrder` with `WE_CHAT_PAY`, `getOrder`), and the WeChat Pay redirect
//! (`/4.0/scripts/we_chat_pay/authorize/?avng8apitoken=…`) that lands on the hosted checkout.
//! An order is a hosted wxgate payment whose merchant_order_id is the order's RefNo.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use wxgate_domain::Currency;
use wxgate_domain::door::Door;
use wxgate_store::{MerchantRow, PaymentRow};

use crate::app::{doors, payments as pay};
use crate::error::{ApiError, ErrorCode};
use crate::gateway::Gateway;
use crate::http::payments::CreatePayment;
use crate::secrets::{random_digits, secrets_equal};
use crate::views::doors::two_checkout as view;

const DOOR: Door = Door::TwoCheckout;
/// A session lives this long (the system's own rule).
const SESSION_LIFETIME_MS: i64 = 10 * 60 * 1000;
/// How far a login's `date` may be from the gateway's clock: a signed date is not replayed
/// beyond it.
const LOGIN_DATE_SKEW_MS: i64 = 15 * 60 * 1000;
/// The currencies WeChat Pay takes through this system.
const CURRENCIES: [&str; 3] = ["USD", "HKD", "CNY"];
const QUANTITY_MAX: i64 = 99_999;

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/rpc/6.0/", post(rpc))
        .route("/rpc/6.0", post(rpc))
        .route(view::AUTHORIZE_PATH, get(authorize))
        .route(
            &format!("{}{{token}}", view::AUTHORIZE_PATH),
            get(authorize_token),
        )
}

/// A refusal: the system's code (a string of its own, or a JSON-RPC number) and message.
struct Refusal {
    code: Value,
    message: String,
}

fn refuse(code: &str, message: impl Into<String>) -> Refusal {
    Refusal {
        code: code.into(),
        message: message.into(),
    }
}

fn authentication_needed() -> Refusal {
    refuse(
        "AUTHENTICATION_ERROR",
        "Authentication needed for this resource",
    )
}

/// wxgate's refusal in the system's words: its code upper-cased, the field named.
impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        let code = match e.code {
            ErrorCode::Unauthorized => return authentication_needed(),
            ErrorCode::CurrencyNotAllowed | ErrorCode::InvalidCurrency => {
                "ORDER_PAYMENT_CURRENCY_INVALID".to_string()
            }
            other => other.as_str().to_uppercase(),
        };
        let message = match &e.param {
            Some(p) => format!("{p}: {}", e.message),
            None => e.message,
        };
        Refusal {
            code: code.into(),
            message,
        }
    }
}

#[derive(Debug, Deserialize)]
struct RpcRequest {
    method: Option<String>,
    #[serde(default)]
    params: Value,
    #[serde(default)]
    id: Value,
}

/// One JSON-RPC call; every answer is HTTP 200 with `result` or `error`.
async fn rpc(State(gw): State<Gateway>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<RpcRequest>(&body) else {
        return axum::Json(view::error(&Value::Null, -32700, "Parse error")).into_response();
    };
    if let Err(e) = crate::http::extract::refuse_control_characters(&req.params, "params") {
        return axum::Json(view::error(&req.id, -32602, &e.message)).into_response();
    }
    let answer = match req.method.as_deref() {
        Some("login") => login(&gw, &req.params).await,
        Some("placeOrder") => place_order(&gw, &req.params).await,
        Some("getOrder") => get_order(&gw, &req.params).await,
        _ => Err(Refusal {
            code: (-32601).into(),
            message: "Method not found".into(),
        }),
    };
    axum::Json(match answer {
        Ok(result) => view::result(&req.id, result),
        Err(r) => view::error(&req.id, r.code, &r.message),
    })
    .into_response()
}

/// A parameter, positional (as the system's samples send them) or by name.
fn param<'a>(params: &'a Value, index: usize, name: &str) -> Option<&'a Value> {
    params.get(index).or_else(|| params.get(name))
}

fn text_param<'a>(params: &'a Value, index: usize, name: &str) -> Option<&'a str> {
    param(params, index, name).and_then(Value::as_str)
}

/// `login(merchantCode, date, hash[, algo])` → a sessionID valid 10 minutes. The hash is
/// HMAC (MD5 by default, SHA-256 when `algo` says `sha256`) keyed with the secret key over
/// `len(code) code len(date) date`, lengths in bytes.
async fn login(gw: &Gateway, params: &Value) -> Result<Value, Refusal> {
    let failed = || refuse("AUTHENTICATION_FAILED", "Authentication failed");
    let code = text_param(params, 0, "merchantCode").ok_or_else(failed)?;
    let date = text_param(params, 1, "date").ok_or_else(failed)?;
    let hash = text_param(params, 2, "hash").ok_or_else(failed)?;
    let algo = text_param(params, 3, "algo").unwrap_or("md5");
    let signed_at = time::PrimitiveDateTime::parse(
        date,
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
    )
    .map_err(|_| failed())?
    .assume_utc()
    .unix_timestamp()
        * 1000;
    if (gw.now_ms() - signed_at).abs() > LOGIN_DATE_SKEW_MS {
        return Err(failed());
    }
    let (merchant, secret) = doors::credential(gw, DOOR, code)
        .await
        .map_err(|_| failed())?;
    let message = format!("{}{code}{}{date}", code.len(), date.len());
    let expected = login_hash(algo, &secret, &message).ok_or_else(failed)?;
    if !secrets_equal(expected.as_bytes(), hash.to_ascii_lowercase().as_bytes()) {
        return Err(failed());
    }
    let (session, _) = doors::issue_token(gw, DOOR, &merchant.id, SESSION_LIFETIME_MS).await?;
    Ok(session.into())
}

/// The login hash by `algo`, as lowercase hex; `None` for an algorithm not taken.
fn login_hash(algo: &str, secret: &str, message: &str) -> Option<String> {
    fn mac<M: Mac + hmac::digest::KeyInit>(secret: &str, message: &str) -> String {
        let mut m = <M as hmac::digest::KeyInit>::new_from_slice(secret.as_bytes())
            .expect("HMAC takes any key");
        m.update(message.as_bytes());
        hex::encode(m.finalize().into_bytes())
    }
    match algo.to_ascii_lowercase().as_str() {
        "md5" => Some(mac::<Hmac<md5::Md5>>(secret, message)),
        "sha256" => Some(mac::<Hmac<sha2::Sha256>>(secret, message)),
        _ => None,
    }
}

/// The merchant behind a live sessionID.
async fn session(gw: &Gateway, params: &Value) -> Result<MerchantRow, Refusal> {
    let id = text_param(params, 0, "sessionID").ok_or_else(authentication_needed)?;
    doors::token_merchant(gw, DOOR, id)
        .await
        .map_err(|_| authentication_needed())
}

/// `placeOrder(sessionID, Order)`: a WE_CHAT_PAY order becomes a hosted payment; the answer is
/// the Order, PENDING, with the redirect.
async fn place_order(gw: &Gateway, params: &Value) -> Result<Value, Refusal> {
    let merchant = session(gw, params).await?;
    let raw = param(params, 1, "Order").cloned().unwrap_or(Value::Null);
    let order: OrderIn = serde_json::from_value(raw.clone()).map_err(|e| {
        refuse(
            "ORDER_INVALID",
            format!("The order object is not valid: {e}"),
        )
    })?;
    let request = order_request(gw, &merchant, &order).await?;
    let p = super::create_payment(gw, &merchant, request, DOOR).await?;
    Ok(view::order(
        &p,
        &view::Sent {
            items: raw.get("Items"),
            billing: raw.get("BillingDetails"),
            external_reference: order.external_reference.as_deref(),
            base_url: &gw.config().public_base_url,
        },
    ))
}

/// `getOrder(sessionID, orderReference)`.
async fn get_order(gw: &Gateway, params: &Value) -> Result<Value, Refusal> {
    let merchant = session(gw, params).await?;
    let invalid = || {
        refuse(
            "INVALID_REFERENCE",
            "The provided order reference is invalid.",
        )
    };
    let reference = text_param(params, 1, "orderReference").ok_or_else(invalid)?;
    let p = pay::by_merchant_order_id(gw, &merchant.id, reference)
        .await?
        .filter(|p| p.door.as_deref() == Some(DOOR.as_str()))
        .ok_or_else(invalid)?;
    Ok(order_answer(gw, &p))
}

fn order_answer(gw: &Gateway, p: &PaymentRow) -> Value {
    let metadata: BTreeMap<String, String> = serde_json::from_str(&p.metadata).unwrap_or_default();
    view::order(
        p,
        &view::Sent {
            items: None,
            billing: None,
            external_reference: metadata.get(EXTERNAL_REFERENCE).map(String::as_str),
            base_url: &gw.config().public_base_url,
        },
    )
}

/// The metadata key the order's ExternalReference is kept under.
const EXTERNAL_REFERENCE: &str = "external_reference";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct OrderIn {
    currency: Option<String>,
    external_reference: Option<String>,
    items: Vec<ItemIn>,
    billing_details: Option<BillingIn>,
    payment_details: Option<PaymentDetailsIn>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ItemIn {
    code: Option<String>,
    name: Option<String>,
    quantity: Option<Value>,
    is_dynamic: Option<Value>,
    price: Option<PriceIn>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PriceIn {
    amount: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct BillingIn {
    country_code: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PaymentDetailsIn {
    #[serde(rename = "Type")]
    kind: Option<String>,
    currency: Option<String>,
    payment_method: Option<PaymentMethodIn>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PaymentMethodIn {
    #[serde(rename = "ReturnURL")]
    return_url: Option<String>,
    #[serde(rename = "CancelURL")]
    cancel_url: Option<String>,
}

/// The order as the `/v1` create request, after the system's own rules for WeChat Pay: the
/// payment type, billing country CN, USD/HKD/CNY, both URLs, and the items' prices.
async fn order_request(
    gw: &Gateway,
    merchant: &MerchantRow,
    order: &OrderIn,
) -> Result<CreatePayment, Refusal> {
    let details = order.payment_details.as_ref();
    if details.and_then(|d| d.kind.as_deref()) != Some("WE_CHAT_PAY") {
        return Err(refuse(
            "ORDER_PAYMENT_TYPE_INVALID",
            "Invalid payment method type. This gateway takes WE_CHAT_PAY.",
        ));
    }
    let country = order
        .billing_details
        .as_ref()
        .and_then(|b| b.country_code.as_deref());
    if !country.is_some_and(|c| c.eq_ignore_ascii_case("CN")) {
        return Err(refuse(
            "ORDER_BILLING_COUNTRY_INVALID",
            "WE_CHAT_PAY is available only for billing country CN.",
        ));
    }
    let currency = order_currency(order)?;
    let (return_url, cancel_url) = order_urls(details.and_then(|d| d.payment_method.as_ref()))?;
    let (amount, description) = priced(gw, merchant, &order.items, currency).await?;
    let metadata = order
        .external_reference
        .as_ref()
        .map(|r| BTreeMap::from([(EXTERNAL_REFERENCE.to_string(), r.clone())]));
    Ok(CreatePayment {
        amount,
        currency: currency.code().to_string(),
        // The order's RefNo: numeric, as the system's are.
        merchant_order_id: random_digits(12),
        description,
        integration: "hosted".into(),
        payer: None,
        client_ip: None,
        expires_at: None,
        return_url: Some(return_url),
        cancel_url: Some(cancel_url),
        notify_url: None,
        metadata,
        attach: None,
        inline_qr_images: false,
    })
}

/// The payment's currency (PaymentDetails', else the order's): USD, HKD or CNY.
fn order_currency(order: &OrderIn) -> Result<Currency, Refusal> {
    let code = order
        .payment_details
        .as_ref()
        .and_then(|d| d.currency.clone())
        .or_else(|| order.currency.clone())
        .unwrap_or_default()
        .to_ascii_uppercase();
    let refused = || {
        refuse(
            "ORDER_PAYMENT_CURRENCY_INVALID",
            format!(
                "Currency [{code}] is not supported for WE_CHAT_PAY. Accepted values: USD, HKD and CNY."
            ),
        )
    };
    if !CURRENCIES.contains(&code.as_str()) {
        return Err(refused());
    }
    Currency::parse(&code).map_err(|_| refused())
}

/// ReturnURL and CancelURL, both required.
fn order_urls(method: Option<&PaymentMethodIn>) -> Result<(String, String), Refusal> {
    let given = |url: Option<&String>| url.filter(|u| !u.is_empty()).cloned();
    let return_url = given(method.and_then(|m| m.return_url.as_ref())).ok_or_else(|| {
        refuse(
            "ORDER_PAYMENT_RETURN_URL_EMPTY",
            "Return URL cannot be empty.",
        )
    })?;
    let cancel_url = given(method.and_then(|m| m.cancel_url.as_ref())).ok_or_else(|| {
        refuse(
            "ORDER_PAYMENT_CANCEL_URL_EMPTY",
            "Cancel URL cannot be empty.",
        )
    })?;
    Ok((return_url, cancel_url))
}

/// The order's total in minor units and its description: dynamic items priced by the order,
/// or catalog items (a payment link's id as the product code, its fixed amount the price).
async fn priced(
    gw: &Gateway,
    merchant: &MerchantRow,
    items: &[ItemIn],
    currency: Currency,
) -> Result<(i64, String), Refusal> {
    if items.is_empty() {
        return Err(refuse(
            "ORDER_PRODUCTS_EMPTY",
            "No products have been provided.",
        ));
    }
    // `IsDynamic` comes as a boolean or as 0/1.
    let dynamic = |i: &ItemIn| match &i.is_dynamic {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_i64() != Some(0),
        _ => false,
    };
    if items.iter().any(dynamic) && !items.iter().all(dynamic) {
        return Err(refuse(
            "ORDER_ITEMS_INVALID",
            "Invalid items. You cannot mix dynamic and catalog products.",
        ));
    }
    let mut total: i64 = 0;
    let mut names = Vec::new();
    for item in items {
        let (unit, name) = if dynamic(item) {
            dynamic_price(item, currency)?
        } else {
            catalog_price(gw, merchant, item, currency).await?
        };
        let quantity = item
            .quantity
            .as_ref()
            .map_or(Some(1), Value::as_i64)
            .unwrap_or(0);
        if !(1..=QUANTITY_MAX).contains(&quantity) {
            return Err(refuse(
                "ORDER_ITEMS_QUANTITY_INVALID",
                "Item quantity must be between 1 and 99999.",
            ));
        }
        total = unit
            .checked_mul(quantity)
            .and_then(|line| total.checked_add(line))
            .ok_or_else(|| {
                refuse(
                    "ORDER_PRODUCT_PRICE_AMOUNT_INVALID",
                    "The price amount is not valid.",
                )
            })?;
        names.push(name);
    }
    let description: String = names
        .join(", ")
        .chars()
        .take(wechatpay_v3::validate::DESCRIPTION_CHARS_MAX)
        .collect();
    Ok((total, description))
}

fn dynamic_price(item: &ItemIn, currency: Currency) -> Result<(i64, String), Refusal> {
    let name = item
        .name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| {
            refuse(
                "ORDER_PRODUCT_NAME_INVALID",
                "Name is mandatory when you set IsDynamic to TRUE.",
            )
        })?;
    let text = match item.price.as_ref().and_then(|p| p.amount.as_ref()) {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let unit = currency
        .parse_major(&text)
        .filter(|a| *a > 0)
        .ok_or_else(|| {
            refuse(
                "ORDER_PRODUCT_PRICE_AMOUNT_INVALID",
                "The price amount is not valid.",
            )
        })?;
    Ok((unit, name))
}

async fn catalog_price(
    gw: &Gateway,
    merchant: &MerchantRow,
    item: &ItemIn,
    currency: Currency,
) -> Result<(i64, String), Refusal> {
    let code = item.code.clone().unwrap_or_default();
    let not_found = || {
        refuse(
            "ORDER_PRODUCT_CODE_INVALID",
            format!("Requested product [{code}] was not found."),
        )
    };
    let id = wxgate_domain::id::LinkId::parse(&code).ok_or_else(not_found)?;
    let merchant_id = wxgate_domain::id::MerchantId::stored(&merchant.id);
    let link = crate::app::links::get(gw, &merchant_id, &id)
        .await
        .map_err(|_| not_found())?;
    // A product is on sale only while its link takes payments.
    match link.amount {
        Some(amount)
            if link.currency == currency.code() && crate::app::links::is_open(gw, &link) =>
        {
            Ok((amount, link.description))
        }
        _ => Err(not_found()),
    }
}

#[derive(Debug, Deserialize)]
struct AuthorizeQuery {
    avng8apitoken: Option<String>,
}

/// `…/authorize/?avng8apitoken=…`: on to the order's hosted checkout.
async fn authorize(State(gw): State<Gateway>, Query(q): Query<AuthorizeQuery>) -> Response {
    to_checkout(&gw, q.avng8apitoken.as_deref().unwrap_or_default()).await
}

/// `…/authorize/<token>`: the same, for clients that append the token to `Href` directly.
async fn authorize_token(State(gw): State<Gateway>, Path(token): Path<String>) -> Response {
    to_checkout(&gw, &token).await
}

async fn to_checkout(gw: &Gateway, token: &str) -> Response {
    match pay::by_checkout_token(gw, token).await {
        Ok(Some(p)) => match p.hosted_url {
            Some(url) => Redirect::to(&url).into_response(),
            None => ApiError::not_found("order").into_response(),
        },
        Ok(None) => ApiError::not_found("order").into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The system's own worked example: code `AVANGATE`, date `2010-05-13 12:12:12`, key
    /// `SECRET_KEY`; the documented digest is HMAC-MD5's.
    #[test]
    fn the_documented_login_hash() {
        assert_eq!(
            login_hash("md5", "SECRET_KEY", "8AVANGATE192010-05-13 12:12:12").as_deref(),
            Some("bf763db7d333e9c3038698cf59ada3e6")
        );
        assert_eq!(login_hash("sha3-256", "k", "m"), None);
        assert_eq!(login_hash("SHA256", "k", "m").map(|h| h.len()), Some(64));
    }
}
