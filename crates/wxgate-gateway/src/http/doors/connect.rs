//! The Connect door (system 002): Worldline Connect's server API for WeChat Pay (product 863),
//! at the root of its own listener (its SDKs take only a scheme, host and port). Requests are
//! signed with v1HMAC; a payment is a wxgate payment of the integration type asked for, a
//! hosted checkout a hosted wxgate payment.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use wxgate_domain::door::Door;
use wxgate_domain::id::{MerchantId, PaymentId};
use wxgate_store::{MerchantRow, PaymentRow};

use crate::app::{doors, payments as pay};
use crate::error::{ApiError, ErrorCode};
use crate::gateway::Gateway;
use crate::http::payments::{CreatePayment, PayerIn};
use crate::next_action::NextAction;
use crate::secrets::{random_digits, random_hex, secrets_equal};
use crate::views::doors::connect as view;

const DOOR: Door = Door::Connect;
/// How far a request's `Date` may be from the gateway's clock.
const DATE_SKEW_SECS: u64 = 15 * 60;

/// The door's own router, served at the root of its listener.
pub fn router(gw: Gateway) -> axum::Router {
    let routes = Router::new()
        .route("/v1/{merchant}/payments", post(create_payment))
        .route("/v1/{merchant}/payments/{id}", get(get_payment))
        .route(
            "/v1/{merchant}/payments/{id}/thirdpartystatus",
            get(third_party_status),
        )
        .route("/v1/{merchant}/hostedcheckouts", post(create_hosted))
        .route("/v1/{merchant}/hostedcheckouts/{id}", get(get_hosted));
    let routes = crate::http::guarded::<Refusal>(routes, &gw)
        .fallback(|| async { refusal(404, "1002", "UNKNOWN_RESOURCE", "no such resource", None) });
    crate::http::framed(routes).with_state(gw)
}

/// An answer in the system's error envelope.
struct Refusal(Box<Response>);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        *self.0
    }
}

fn refusal(status: u16, code: &str, id: &str, message: &str, property: Option<&str>) -> Refusal {
    let http = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    Refusal(Box::new(
        (
            http,
            axum::Json(view::error(status, code, id, message, property)),
        )
            .into_response(),
    ))
}

fn unauthorized() -> Refusal {
    refusal(
        401,
        "9002",
        "MISSING_OR_INVALID_AUTHORIZATION",
        "MISSING_OR_INVALID_AUTHORIZATION",
        None,
    )
}

fn missing(property: &str) -> Refusal {
    refusal(
        400,
        "20000000",
        "PARAMETER_NOT_FOUND_IN_REQUEST",
        "The parameter shown above was not found in the request received by connect.",
        Some(property),
    )
}

fn invalid(property: &str, message: &str) -> Refusal {
    refusal(400, "21000020", "INVALID_VALUE", message, Some(property))
}

/// wxgate's refusal in the system's envelope: the field named as the system names it.
impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        let status = e.code.status();
        let property = e.param.as_deref().map(|p| match p {
            "amount" => "order.amountOfMoney.amount",
            "currency" => "order.amountOfMoney.currencyCode",
            "merchant_order_id" => "order.references.merchantReference",
            "description" => "order.references.descriptor",
            "return_url" => "redirectPaymentMethodSpecificInput.returnUrl",
            "payer.openid" => {
                "redirectPaymentMethodSpecificInput.paymentProduct863SpecificInput.openId"
            }
            "client_ip" => "fraudFields.customerIpAddress",
            other => other,
        });
        match status {
            401 => unauthorized(),
            404 => refusal(404, "1002", "UNKNOWN_PAYMENT_ID", &e.message, None),
            409 => refusal(409, "1409", e.code.as_str(), &e.message, property),
            s if s >= 500 => refusal(s, "9999", "UNKNOWN_SERVER_ERROR", &e.message, None),
            s => refusal(s, "21000020", e.code.as_str(), &e.message, property),
        }
    }
}

/// The merchant a v1HMAC-signed request comes from, which must be the one its path names.
async fn authenticate(
    gw: &Gateway,
    (method, uri, headers): (&Method, &Uri, &HeaderMap),
    merchant: &str,
) -> Result<MerchantRow, Refusal> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let auth = text(header::AUTHORIZATION.as_str()).ok_or_else(unauthorized)?;
    let (key_id, signature) = auth
        .strip_prefix("GCS v1HMAC:")
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(unauthorized)?;
    let date = text(header::DATE.as_str()).ok_or_else(unauthorized)?;
    let sent = httpdate::parse_http_date(date).map_err(|_| unauthorized())?;
    let skew = match sent.duration_since(std::time::SystemTime::now()) {
        Ok(ahead) => ahead,
        Err(behind) => behind.duration(),
    };
    if skew.as_secs() > DATE_SKEW_SECS {
        return Err(unauthorized());
    }
    let (m, secret) = doors::credential(gw, DOOR, key_id)
        .await
        .map_err(|_| unauthorized())?;
    let content_type = text(header::CONTENT_TYPE.as_str()).unwrap_or("");
    let signed = |resource: &str| {
        signature_of(
            &secret,
            &string_to_sign(method.as_str(), content_type, date, headers, resource),
        )
    };
    let raw = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    let ok = [signed(raw), signed(&decoded)]
        .iter()
        .any(|s| secrets_equal(s.as_bytes(), signature.as_bytes()));
    if !ok {
        return Err(unauthorized());
    }
    if m.id != merchant {
        return Err(refusal(
            403,
            "9007",
            "ACCESS_TO_MERCHANT_NOT_ALLOWED",
            "ACCESS_TO_MERCHANT_NOT_ALLOWED",
            None,
        ));
    }
    Ok(m)
}

/// v1HMAC's string to sign: method, Content-Type, Date, the `x-gcs*` headers (lower-case,
/// sorted, values folded onto one line), the path and query; each followed by a newline.
pub fn string_to_sign(
    method: &str,
    content_type: &str,
    date: &str,
    headers: &HeaderMap,
    resource: &str,
) -> String {
    let mut gcs: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-gcs"))
        .map(|(name, value)| {
            let value = value.to_str().unwrap_or("");
            let folded = value
                .split(['\r', '\n'])
                .map(str::trim)
                .filter(|s| !s.is_empty());
            (
                name.as_str().to_string(),
                folded.collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    gcs.sort();
    let mut out = format!("{method}\n{content_type}\n{date}\n");
    for (name, value) in gcs {
        out.push_str(&format!("{name}:{value}\n"));
    }
    out.push_str(resource);
    out.push('\n');
    out
}

/// Base64 HMAC-SHA256 keyed with the secret API key's UTF-8 bytes.
pub fn signature_of(secret: &str, message: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    base64::engine::general_purpose::STANDARD
        .encode(aws_lc_rs::hmac::sign(&key, message.as_bytes()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct CreatePaymentIn {
    order: OrderIn,
    fraud_fields: Option<FraudFields>,
    redirect_payment_method_specific_input: Option<RedirectInput>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct OrderIn {
    amount_of_money: Option<AmountOfMoney>,
    references: Option<References>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct AmountOfMoney {
    amount: Option<i64>,
    currency_code: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct References {
    merchant_reference: Option<String>,
    descriptor: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct FraudFields {
    customer_ip_address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RedirectInput {
    payment_product_id: Option<i64>,
    return_url: Option<String>,
    payment_product863_specific_input: Option<Product863>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Product863 {
    integration_type: Option<String>,
    open_id: Option<String>,
}

fn body_of<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| {
        invalid(
            "body",
            &format!("the body is not valid JSON of this request: {e}"),
        )
    })
}

/// `POST /v1/{merchantId}/payments`: product 863 with its integration type → 201, REDIRECTED,
/// a SHOW_FORM merchant action.
async fn create_payment(
    State(gw): State<Gateway>,
    Path(merchant): Path<String>,
    (method, uri, headers): (Method, Uri, HeaderMap),
    body: Bytes,
) -> Result<Response, Refusal> {
    let m = authenticate(&gw, (&method, &uri, &headers), &merchant).await?;
    let req: CreatePaymentIn = body_of(&body)?;
    let (request, integration) = payment_request(&req)?;
    let p = &super::create_payment(&gw, &m, request, DOOR).await?;
    let (show, third_party) = merchant_action(&gw, &m, p, integration)?;
    let location = format!("/v1/{merchant}/payments/{}", p.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(view::created(p, &show, third_party)),
    )
        .into_response())
}

/// The request as the `/v1` create request, after the system's own rules for product 863.
fn payment_request(req: &CreatePaymentIn) -> Result<(CreatePayment, &'static str), Refusal> {
    const INPUT: &str = "redirectPaymentMethodSpecificInput";
    let money = req
        .order
        .amount_of_money
        .as_ref()
        .ok_or_else(|| missing("order.amountOfMoney"))?;
    let amount = money
        .amount
        .ok_or_else(|| missing("order.amountOfMoney.amount"))?;
    let currency = money
        .currency_code
        .clone()
        .ok_or_else(|| missing("order.amountOfMoney.currencyCode"))?;
    let ip = req
        .fraud_fields
        .as_ref()
        .and_then(|f| f.customer_ip_address.clone());
    let ip = ip.ok_or_else(|| missing("fraudFields.customerIpAddress"))?;
    let input = req
        .redirect_payment_method_specific_input
        .as_ref()
        .ok_or_else(|| missing(INPUT))?;
    if input.payment_product_id != Some(view::PRODUCT_ID) {
        return Err(invalid(
            &format!("{INPUT}.paymentProductId"),
            "only payment product 863 (WeChat Pay) is offered",
        ));
    }
    let specific = input.payment_product863_specific_input.as_ref();
    let kind = specific.and_then(|s| s.integration_type.as_deref());
    let property = format!("{INPUT}.paymentProduct863SpecificInput.integrationType");
    let integration = match kind.ok_or_else(|| missing(&property))? {
        "desktopQRCode" => "native",
        "urlIntent" => "h5",
        "nativeInApp" => "app",
        "javaScriptAPI" => "jsapi",
        "miniProgram" => "mini_program",
        _ => {
            return Err(invalid(
                &property,
                "must be desktopQRCode, urlIntent, nativeInApp, javaScriptAPI or miniProgram",
            ));
        }
    };
    let references = req.order.references.as_ref();
    let reference = references.and_then(|r| r.merchant_reference.clone());
    let descriptor = references.and_then(|r| r.descriptor.clone());
    let request = CreatePayment {
        amount,
        currency,
        merchant_order_id: reference.unwrap_or_else(|| random_digits(12)),
        description: descriptor.unwrap_or_else(|| "WeChat Pay".into()),
        integration: integration.into(),
        payer: specific
            .and_then(|s| s.open_id.clone())
            .map(|openid| PayerIn { openid }),
        client_ip: Some(ip),
        expires_at: None,
        return_url: input.return_url.clone(),
        cancel_url: None,
        notify_url: None,
        metadata: None,
        attach: None,
        inline_qr_images: false,
    };
    Ok((request, integration))
}

/// A merchant action's show data, and the third-party data that goes with it.
type Shown = (Vec<(&'static str, String)>, Option<Value>);

/// The show data of each integration type (and the JS API's and Mini Program's third-party
/// data), from the payment's WeChat credential.
fn merchant_action(
    gw: &Gateway,
    m: &MerchantRow,
    p: &PaymentRow,
    integration: &str,
) -> Result<Shown, Refusal> {
    let action = p
        .wechat_credential
        .as_deref()
        .and_then(NextAction::from_stored)
        .ok_or_else(|| {
            Refusal::from(ApiError::new(
                ErrorCode::UpstreamUnavailable,
                "WeChat Pay did not answer; get the payment again",
            ))
        })?;
    let id = ("WECHAT_PAYMENTID", p.out_trade_no.clone());
    Ok(match (integration, action) {
        ("native", NextAction::DisplayQrCode { display_qr_code }) => {
            let png = gw.qr_image(
                &display_qr_code.data,
                crate::qr::Image::Png(crate::qr::SCALE),
            );
            let png = base64::engine::general_purpose::STANDARD.encode(&png);
            (vec![("QRCODE", png), id], None)
        }
        ("h5", NextAction::RedirectToUrl { redirect_to_url }) => {
            (vec![("URLINTENT", redirect_to_url.url), id], None)
        }
        ("app", NextAction::InvokeApp { invoke_app: a, .. }) => (
            vec![
                ("WECHAT_SIGNATURE", a.sign),
                ("SIGNATURE_NONCE", a.noncestr),
                ("WECHAT_PAYMENTID", a.prepayid),
            ],
            None,
        ),
        (
            "jsapi",
            NextAction::InvokeJsapi {
                invoke_jsapi: j, ..
            },
        ) => js_sdk(
            &j.app_id,
            &j.time_stamp,
            &j.nonce_str,
            &j.package,
            &j.pay_sign,
        ),
        (
            "mini_program",
            NextAction::InvokeMiniProgram {
                invoke_mini_program: j,
                ..
            },
        ) => {
            // `wx.requestPayment` takes no AppID; the page's is the Mini Program's.
            let app_id = m.mini_program_appid_or_own();
            js_sdk(app_id, &j.time_stamp, &j.nonce_str, &j.package, &j.pay_sign)
        }
        _ => (vec![id], None),
    })
}

/// The JS API's and Mini Program's show data (and the same as third-party data).
fn js_sdk(app_id: &str, time: &str, nonce: &str, package: &str, sign: &str) -> Shown {
    let prepay = package.trim_start_matches("prepay_id=").to_string();
    let data = json!({"appId": app_id, "nonceStr": nonce, "packageSign": package,
        "paySign": sign, "prepayId": prepay, "signType": "RSA", "timeStamp": time});
    let pairs = vec![
        ("appId", app_id.to_string()),
        ("nonceStr", nonce.to_string()),
        ("packageSign", package.to_string()),
        ("paySign", sign.to_string()),
        ("prepayId", prepay),
        ("timeStamp", time.to_string()),
    ];
    (pairs, Some(data))
}

async fn payment_of(gw: &Gateway, m: &MerchantRow, id: &str) -> Result<PaymentRow, Refusal> {
    let unknown = || {
        refusal(
            404,
            "1002",
            "UNKNOWN_PAYMENT_ID",
            "UNKNOWN_PAYMENT_ID",
            None,
        )
    };
    let id = PaymentId::parse(id).ok_or_else(unknown)?;
    let state = pay::get(gw, &MerchantId::stored(&m.id), &id)
        .await
        .map_err(|_| unknown())?;
    Ok(state.payment)
}

/// `GET /v1/{merchantId}/payments/{paymentId}`.
async fn get_payment(
    State(gw): State<Gateway>,
    Path((merchant, id)): Path<(String, String)>,
    (method, uri, headers): (Method, Uri, HeaderMap),
) -> Result<Response, Refusal> {
    let m = authenticate(&gw, (&method, &uri, &headers), &merchant).await?;
    let p = payment_of(&gw, &m, &id).await?;
    Ok(axum::Json(view::payment(&p)).into_response())
}

/// `GET …/thirdpartystatus`: polled every 3 s by the shopper's page; one signature check and
/// one read by primary key.
async fn third_party_status(
    State(gw): State<Gateway>,
    Path((merchant, id)): Path<(String, String)>,
    (method, uri, headers): (Method, Uri, HeaderMap),
) -> Result<Response, Refusal> {
    let m = authenticate(&gw, (&method, &uri, &headers), &merchant).await?;
    let p = payment_of(&gw, &m, &id).await?;
    Ok(axum::Json(view::third_party_status(&p)).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct CreateHostedIn {
    order: OrderIn,
    hosted_checkout_specific_input: Option<HostedInput>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct HostedInput {
    return_url: Option<String>,
}

/// `POST /v1/{merchantId}/hostedcheckouts`: a hosted payment; the page picks the integration
/// type by the shopper's device and learns their address itself.
async fn create_hosted(
    State(gw): State<Gateway>,
    Path(merchant): Path<String>,
    (method, uri, headers): (Method, Uri, HeaderMap),
    body: Bytes,
) -> Result<Response, Refusal> {
    let m = authenticate(&gw, (&method, &uri, &headers), &merchant).await?;
    let req: CreateHostedIn = body_of(&body)?;
    let money = req
        .order
        .amount_of_money
        .as_ref()
        .ok_or_else(|| missing("order.amountOfMoney"))?;
    let references = req.order.references.as_ref();
    let return_mac = random_hex(16);
    let return_url = req
        .hosted_checkout_specific_input
        .and_then(|h| h.return_url)
        .map(|u| {
            format!(
                "{u}{}RETURNMAC={return_mac}",
                if u.contains('?') { '&' } else { '?' }
            )
        });
    let request = CreatePayment {
        amount: money
            .amount
            .ok_or_else(|| missing("order.amountOfMoney.amount"))?,
        currency: money
            .currency_code
            .clone()
            .ok_or_else(|| missing("order.amountOfMoney.currencyCode"))?,
        merchant_order_id: references
            .and_then(|r| r.merchant_reference.clone())
            .unwrap_or_else(|| random_digits(12)),
        description: references
            .and_then(|r| r.descriptor.clone())
            .unwrap_or_else(|| "WeChat Pay".into()),
        integration: "hosted".into(),
        payer: None,
        client_ip: None,
        expires_at: None,
        cancel_url: return_url.clone(),
        return_url,
        notify_url: None,
        metadata: None,
        attach: None,
        inline_qr_images: false,
    };
    let p = &super::create_payment(&gw, &m, request, DOOR).await?;
    let url = p.hosted_url.clone().unwrap_or_default();
    let partial = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let answer = json!({"RETURNMAC": return_mac, "hostedCheckoutId": p.checkout_token,
        "partialRedirectUrl": partial, "merchantReference": p.merchant_order_id});
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}

/// `GET /v1/{merchantId}/hostedcheckouts/{hostedCheckoutId}`.
async fn get_hosted(
    State(gw): State<Gateway>,
    Path((merchant, id)): Path<(String, String)>,
    (method, uri, headers): (Method, Uri, HeaderMap),
) -> Result<Response, Refusal> {
    let m = authenticate(&gw, (&method, &uri, &headers), &merchant).await?;
    let unknown = || {
        refusal(
            404,
            "1002",
            "UNKNOWN_HOSTED_CHECKOUT_ID",
            "UNKNOWN_HOSTED_CHECKOUT_ID",
            None,
        )
    };
    let p = pay::by_checkout_token(&gw, &id)
        .await?
        .filter(|p| p.merchant_id == m.id && p.door.as_deref() == Some(DOOR.as_str()))
        .ok_or_else(unknown)?;
    Ok(axum::Json(view::hosted_checkout(&p)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The system's own vectors (its SDKs' authenticator tests).
    #[test]
    fn v1hmac_official_vectors() {
        let get = "GET\n\nFri, 06 Jun 2014 13:39:43 GMT\n/v1/9991/tokens/123456789\n";
        assert_eq!(
            signature_of("I42Zf4pVnRdroHfuHnRiJjJ2B6+22h0yQt/R3nZR8Xg=", get),
            "J5LjfSBvrQNhu7gG0gvifZt+IWNDReGCmHmBmth6ueI="
        );
        assert_eq!(
            signature_of("6Kj5HT0MQKC6D8eb7W3lTg71kVKVDSt1", get),
            "9ond5EIN05dBXJGCLRK5om9pxHsyrh/12pZJ7bvmwNM="
        );
        let mut headers = HeaderMap::new();
        for name in [
            "x-gcs-servermetainfo",
            "x-gcs-clientmetainfo",
            "x-gcs-customerheader",
        ] {
            headers.insert(name, "processed header value".parse().unwrap());
        }
        headers.insert("user-agent", "ignored".parse().unwrap());
        let delete = string_to_sign(
            "DELETE",
            "application/json",
            "Fri, 06 Jun 2014 13:39:43 GMT",
            &headers,
            "/v1/9991/tokens/123456789",
        );
        assert_eq!(
            signature_of("I42Zf4pVnRdroHfuHnRiJjJ2B6+22h0yQt/R3nZR8Xg=", &delete),
            "jGWLz3ouN4klE+SkqO5gO+KkbQNM06Rric7E3dcfmqw="
        );
    }
}
