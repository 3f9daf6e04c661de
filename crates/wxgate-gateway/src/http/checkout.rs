//! The hosted checkout page: `GET /checkout/{token}` (every payment's `hosted_url`), its cheap
//! status endpoint `GET /checkout/{token}/status`, and `POST /checkout/{token}/cancel`.
//!
//! The token is unguessable and opens that one payment only. For a `hosted` payment the page
//! picks WeChat's product from the shopper's device the first time it opens (desktop: a QR code
//! of a native order; mobile browser: WeChat's H5 cashier) and prepays then. The page polls the
//! status every 3 seconds and goes to `return_url` on success, `cancel_url` on cancel or expiry
//! (or pages that say so). Plain HTML with a few lines of script, in Chinese or English.

use std::net::{IpAddr, SocketAddr};

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use wxgate_domain::{Currency, Integration, PaymentEvent, PaymentStatus};
use wxgate_store::{MerchantRow, PaymentRow};

use crate::app::payments as pay;
use crate::error::{ApiError, ErrorCode};
use crate::gateway::Gateway;
use crate::next_action::NextAction;
use crate::qr;

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/checkout/{token}", get(page))
        .route("/checkout/{token}/status", get(status))
        .route("/checkout/{token}/cancel", post(cancel))
        .route("/checkout/{token}/oauth", get(oauth_return))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lang {
    Zh,
    En,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    pub(crate) lang: Option<String>,
}

/// `?lang=zh|en`, else the first language of `Accept-Language` that is Chinese or English,
/// else Chinese.
pub(crate) fn language(query: &PageQuery, headers: &HeaderMap) -> Lang {
    match query.lang.as_deref() {
        Some("en") => return Lang::En,
        Some("zh") => return Lang::Zh,
        _ => {}
    }
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    for tag in accept.split(',') {
        let tag = tag.trim().to_ascii_lowercase();
        if tag.starts_with("zh") {
            return Lang::Zh;
        }
        if tag.starts_with("en") {
            return Lang::En;
        }
    }
    Lang::Zh
}

/// The page's words, in both languages.
pub(crate) fn t(lang: Lang, key: &str) -> &'static str {
    let (zh, en) = checkout_words(key)
        .or_else(|| payout_words(key))
        .unwrap_or(("", ""));
    match lang {
        Lang::Zh => zh,
        Lang::En => en,
    }
}

/// The hosted checkout's and payment links' words (Chinese, English).
fn checkout_words(key: &str) -> Option<(&'static str, &'static str)> {
    Some(match key {
        "title" => ("微信支付", "WeChat Pay"),
        "scan" => (
            "请使用微信扫一扫扫描二维码支付",
            "Scan the QR code with WeChat to pay",
        ),
        "open" => ("打开微信支付", "Pay in WeChat"),
        "open_hint" => (
            "点击按钮，在微信中完成支付",
            "Tap the button to finish paying in WeChat",
        ),
        "expires" => ("剩余时间", "Time left"),
        "cancel" => ("取消支付", "Cancel payment"),
        "paid" => ("支付成功", "Payment complete"),
        "paid_hint" => ("您可以关闭此页面。", "You can close this page."),
        "closed" => ("支付已关闭", "Payment closed"),
        "closed_hint" => (
            "此付款已取消或已过期，未扣款。",
            "This payment was cancelled or has expired. Nothing was charged.",
        ),
        "not_found" => ("页面不存在", "Page not found"),
        "not_found_hint" => ("此付款链接无效。", "This payment link is not valid."),
        "in_wechat" => (
            "请在手机浏览器中打开此链接，或在电脑上扫码支付",
            "Open this link in your phone's browser, or scan the code on a computer",
        ),
        "elsewhere" => (
            "请在商户的应用或小程序中完成支付",
            "Finish paying in the merchant's app or Mini Program",
        ),
        "switch" => ("English", "中文"),
        "enter_amount" => ("请输入金额", "Enter the amount"),
        "continue" => ("继续", "Continue"),
        "pay_now" => ("去支付", "Pay"),
        "link_closed" => ("此收款码已停用", "This payment link is closed"),
        "link_closed_hint" => (
            "它已停用、已过期或已达到使用次数上限。",
            "It was deactivated, has expired or has been used up.",
        ),
        _ => return None,
    })
}

/// The payout confirmation page's words (Chinese, English).
fn payout_words(key: &str) -> Option<(&'static str, &'static str)> {
    Some(match key {
        "receive_title" => ("商家转账", "Money from a merchant"),
        "receive" => ("确认收款", "Receive"),
        "receive_hint" => (
            "点击按钮，在微信中确认收款",
            "Tap the button to receive it in WeChat",
        ),
        "open_in_wechat" => (
            "请在微信中打开此链接以确认收款",
            "Open this link in WeChat to receive the money",
        ),
        "received" => ("已收款", "Received"),
        "received_hint" => (
            "款项已存入您的微信零钱。",
            "The money is in your WeChat balance.",
        ),
        "payout_closed" => ("此转账已关闭", "This transfer is closed"),
        "payout_closed_hint" => (
            "它已被取消、拒收或超时未确认。",
            "It was cancelled, declined or not received in time.",
        ),
        "payout_processing" => ("到账处理中", "On its way"),
        "payout_processing_hint" => (
            "微信支付正在处理此转账。",
            "WeChat Pay is processing this transfer.",
        ),
        "payout_not_found_hint" => ("此收款链接无效。", "This link is not valid."),
        "not_payee" => ("无法收款", "Not for this account"),
        "not_payee_hint" => (
            "此转账属于另一个微信账号。",
            "This transfer is for another WeChat account.",
        ),
        _ => return None,
    })
}

/// Text for HTML: merchant-provided text is never markup.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The amount as a shopper reads it: `¥128.50` in yuan, `12.34 USD` or `1000 JPY` otherwise.
pub(super) fn amount(minor: i64, currency: &str) -> String {
    match Currency::parse(currency) {
        Ok(Currency::CNY) => format!("¥{}", Currency::CNY.format_minor(minor)),
        Ok(c) => format!("{} {currency}", c.format_minor(minor)),
        Err(_) => format!("{minor} {currency}"),
    }
}

/// A whole page around `body` (already HTML), with `status`; `here` is the page's own path
/// (for the language switch).
pub(crate) fn html(
    status: StatusCode,
    lang: Lang,
    here: &str,
    body: &str,
    script: &str,
) -> Response {
    let (lang_attr, other) = match lang {
        Lang::Zh => ("zh-CN", "en"),
        Lang::En => ("en", "zh"),
    };
    // A fresh nonce per page: only this page's own script and style run (the CSP says so).
    let nonce = wechatpay_v3::nonce(24);
    let page = format!(
        r#"<!doctype html>
<html lang="{lang_attr}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style nonce="{nonce}">
body{{margin:0;font-family:-apple-system,"PingFang SC","Microsoft YaHei",Helvetica,Arial,sans-serif;background:#f2f2f2;color:#222}}
main{{max-width:420px;margin:0 auto;padding:24px 16px;text-align:center}}
.card{{background:#fff;border-radius:12px;padding:24px 16px;box-shadow:0 1px 4px rgba(0,0,0,.08)}}
.amount{{font-size:32px;font-weight:600;margin:8px 0}}
.desc{{color:#666;word-break:break-word}}
.qr svg{{width:220px;height:220px}}
.button{{display:block;background:#07c160;color:#fff;text-decoration:none;border:0;border-radius:8px;padding:14px;font-size:17px;margin:16px 0;width:100%;box-sizing:border-box;cursor:pointer}}
.link{{background:none;border:0;color:#576b95;font-size:15px;cursor:pointer;padding:8px}}
.muted{{color:#888;font-size:14px}}
.shop{{font-weight:600;margin:0 0 4px}}
.amount-input{{font-size:24px;width:10em;text-align:center}}
</style></head>
<body><main><div class="card">{body}</div>
<p class="muted"><a class="link" href="{here}?lang={other}">{switch}</a></p></main>
{script}</body></html>"#,
        title = t(lang, "title"),
        switch = t(lang, "switch"),
        script = script.replace("<script>", &format!("<script nonce=\"{nonce}\">")),
    );
    let csp = content_security_policy(&nonce);
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store".to_string()),
            (header::CONTENT_SECURITY_POLICY, csp),
        ],
        Html(page),
    )
        .into_response()
}

/// The Content-Security-Policy of the hosted pages: their own scripts and styles carry the
/// page's nonce; nothing else runs, and no other site may frame them.
pub fn content_security_policy(nonce: &str) -> String {
    format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         img-src 'self' data:; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
}

/// A page that only says something: not found, expired, paid, closed.
pub(crate) fn notice(
    status: StatusCode,
    lang: Lang,
    here: &str,
    heading: &str,
    hint: &str,
) -> Response {
    let body = format!(
        "<h1>{}</h1><p class=\"muted\">{}</p>",
        t(lang, heading),
        t(lang, hint)
    );
    html(status, lang, here, &body, "")
}

/// Polls the status every 3 seconds and follows it when the payment is over; counts down.
const SCRIPT: &str = r#"<script>
(function(){
  var base = location.pathname.replace(/\/$/, '');
  function poll(){
    fetch(base + '/status', {cache: 'no-store'}).then(function(r){ return r.json(); }).then(function(s){
      if (s.state !== 'waiting') { location.href = s.redirect; } else { setTimeout(poll, 3000); }
    }).catch(function(){ setTimeout(poll, 3000); });
  }
  setTimeout(poll, 3000);
  // Inside WeChat: the JS API, at once and again from the button.
  var jsapi = document.querySelector('[data-jsapi]');
  if (jsapi) { window.WXGATE_JSAPI = JSON.parse(jsapi.getAttribute('data-jsapi')); }
  if (window.WXGATE_JSAPI) {
    var pay = function(){
      WeixinJSBridge.invoke('getBrandWCPayRequest', window.WXGATE_JSAPI, function(res){
        if (res.err_msg === 'get_brand_wcpay_request:ok') { poll(); }
      });
    };
    var button = document.getElementById('pay');
    if (button) { button.addEventListener('click', pay); }
    if (typeof WeixinJSBridge === 'undefined') {
      document.addEventListener('WeixinJSBridgeReady', pay, false);
    } else {
      pay();
    }
  }
  var left = document.getElementById('left');
  if (left) {
    var end = Number(left.getAttribute('data-expires-at'));
    var tick = function(){
      var s = Math.max(0, Math.round((end - Date.now()) / 1000));
      left.textContent = Math.floor(s / 60) + ':' + ('0' + s % 60).slice(-2);
      if (s > 0) { setTimeout(tick, 1000); }
    };
    tick();
  }
})();
</script>"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Device {
    Desktop,
    Mobile,
    WeChat,
}

pub(crate) fn device(headers: &HeaderMap) -> Device {
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ua.contains("MicroMessenger") {
        Device::WeChat
    } else if ["Mobile", "Android", "iPhone", "iPad"]
        .iter()
        .any(|m| ua.contains(m))
    {
        Device::Mobile
    } else {
        Device::Desktop
    }
}

/// The shopper's address: from the configured proxy header when the gateway runs behind a
/// trusted proxy, else the connection's.
fn client_ip(gw: &Gateway, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
    gw.config()
        .client_ip_header
        .as_deref()
        .and_then(|name| headers.get(name))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(peer.ip())
}

/// Whether the payment is over, and if so whether it was paid.
fn finished(p: &PaymentRow) -> Option<bool> {
    let status = p.status;
    (!status.is_pending()).then(|| status.is_paid())
}

/// Where the page goes once the payment is over.
fn destination(p: &PaymentRow, token: &str, paid: bool) -> String {
    let target = if paid { &p.return_url } else { &p.cancel_url };
    target
        .clone()
        .unwrap_or_else(|| format!("/checkout/{token}"))
}

async fn page(
    State(gw): State<Gateway>,
    Path(token): Path<String>,
    Query(query): Query<PageQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let lang = language(&query, &headers);
    match show(&gw, &token, lang, &headers, peer).await {
        Ok(response) => response,
        Err(e) => {
            let status = crate::http::answer::status(e.code);
            let status = if status.is_server_error() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                status
            };
            tracing::warn!(code = %e.code, "checkout page failed");
            let body = format!(
                "<h1>{}</h1><p class=\"muted\">{}</p>",
                t(lang, "title"),
                esc(&e.message)
            );
            html(
                status,
                lang,
                &format!("/checkout/{}", esc(&token)),
                &body,
                "",
            )
        }
    }
}

async fn show(
    gw: &Gateway,
    token: &str,
    lang: Lang,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Response, ApiError> {
    let here = format!("/checkout/{}", esc(token));
    let Some(p) = gw.store().payment_by_checkout_token(token).await? else {
        return Ok(notice(
            StatusCode::NOT_FOUND,
            lang,
            &here,
            "not_found",
            "not_found_hint",
        ));
    };
    if let Some(page) = ended(gw, &p, lang, &here, token) {
        return Ok(page);
    }
    let device = device(headers);
    // Who the shopper pays: the merchant's display name heads the page.
    let merchant = gw
        .store()
        .merchant(&p.merchant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("merchant"))?;
    let (kind, p) = match product(gw, &merchant, &p, device, token, headers, peer).await? {
        Product::Show { kind, payment } => (kind, payment),
        Product::Redirect(to) => return Ok(Redirect::to(&to).into_response()),
    };
    render(&p, &merchant.name, kind, device, (token, lang, &here))
}

/// The page of a payment that is over (or past its expiry): where it goes, or what it says.
fn ended(gw: &Gateway, p: &PaymentRow, lang: Lang, here: &str, token: &str) -> Option<Response> {
    match finished(p) {
        Some(paid) => {
            let target = if paid { &p.return_url } else { &p.cancel_url };
            Some(match target {
                Some(url) => Redirect::to(url).into_response(),
                None if paid => notice(StatusCode::OK, lang, here, "paid", "paid_hint"),
                None => notice(StatusCode::GONE, lang, here, "closed", "closed_hint"),
            })
        }
        None if gw.now_ms() >= p.expires_at => Some(notice(
            StatusCode::GONE,
            lang,
            token,
            "closed",
            "closed_hint",
        )),
        None => None,
    }
}

/// What the page shows: a product and the payment whose credential is that product's.
enum Product {
    /// `kind` is `None` inside WeChat when the payer's openid cannot be learnt.
    Show {
        kind: Option<Integration>,
        payment: Box<PaymentRow>,
    },
    /// First learn who pays (webpage authorization inside WeChat).
    Redirect(String),
}

/// The payment's own product; for a hosted payment, the one the shopper's device needs. A
/// hosted payment opened on another kind of device than before (or whose credential expired)
/// gets a new WeChat order for it; the earlier pages keep working on theirs.
async fn product(
    gw: &Gateway,
    merchant: &MerchantRow,
    p: &PaymentRow,
    device: Device,
    token: &str,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Product, ApiError> {
    if let Some(product) = p.integration.product() {
        return Ok(Product::Show {
            kind: Some(product),
            payment: Box::new(p.clone()),
        });
    }
    let wanted = match device {
        Device::WeChat => Integration::Jsapi,
        Device::Mobile => Integration::H5,
        Device::Desktop => Integration::Native,
    };
    if let Some(open) = pay::usable_attempt(gw, p, wanted).await? {
        return Ok(Product::Show {
            kind: Some(wanted),
            payment: Box::new(PaymentRow {
                wechat_credential: open.wechat_credential,
                ..p.clone()
            }),
        });
    }
    if device == Device::WeChat && p.payer_openid.is_none() {
        // Inside WeChat: the JS API needs the payer's openid, from webpage authorization
        // (silent), which comes back to /oauth.
        let up = gw
            .upstream(&p.merchant_id)
            .await
            .map_err(|e| ApiError::internal("cannot open the merchant's WeChat connection", e))?;
        if !up.can_authorize() {
            return Ok(Product::Show {
                kind: None,
                payment: Box::new(p.clone()),
            });
        }
        let back = format!("{}/oauth", p.hosted_url.clone().unwrap_or_default());
        return Ok(Product::Redirect(up.authorize_url(&back, token)));
    }
    let ip = client_ip(gw, headers, peer).to_string();
    // WeChat's H5 cashier returns the shopper to this page, which then follows the status.
    let payment = pay::start_attempt(gw, merchant, p, wanted, |order| PaymentRow {
        client_ip: Some(ip),
        return_url: order.hosted_url.clone(),
        ..order
    })
    .await?;
    Ok(Product::Show {
        kind: Some(wanted),
        payment: Box::new(payment),
    })
}

/// The page for `kind` with the payment's credential.
fn render(
    p: &PaymentRow,
    shop: &str,
    kind: Option<Integration>,
    device: Device,
    (token, lang, here): (&str, Lang, &str),
) -> Result<Response, ApiError> {
    let credential = p
        .wechat_credential
        .as_deref()
        .and_then(NextAction::from_stored);
    let head = format!(
        "<p class=\"shop\">{}</p><p class=\"desc\">{}</p><p class=\"amount\" data-amount=\"{}\">{}</p>",
        esc(shop),
        esc(&p.description),
        p.amount,
        esc(&amount(p.amount, &p.currency))
    );
    let countdown = format!(
        "<p class=\"muted\">{} <span id=\"left\" data-expires-at=\"{}\"></span></p>",
        t(lang, "expires"),
        p.expires_at
    );
    let cancel = format!(
        "<form method=\"post\" action=\"/checkout/{}/cancel\"><button class=\"link\" type=\"submit\">{}</button></form>",
        esc(token),
        t(lang, "cancel")
    );
    let Some(action) = action(credential.as_ref(), kind, device, lang) else {
        // The prepay has not completed (WeChat did not answer): say so; reloading tries again.
        return Err(ApiError::new(
            ErrorCode::UpstreamUnavailable,
            match lang {
                Lang::Zh => "微信支付暂时无法响应，请稍后刷新页面。",
                Lang::En => "WeChat Pay is not answering right now; reload the page in a moment.",
            },
        ));
    };
    let body = format!("{head}{action}{countdown}{cancel}");
    Ok(html(StatusCode::OK, lang, here, &body, SCRIPT))
}

/// What the shopper does with the credential: scan the QR, open WeChat's cashier, or pay in
/// WeChat through the JS API. `None` while there is no credential yet.
fn action(
    credential: Option<&NextAction>,
    kind: Option<Integration>,
    device: Device,
    lang: Lang,
) -> Option<String> {
    match (kind, credential) {
        (Some(Integration::Native), credential) => credential?.code_url().map(|code| {
            format!(
                "<div class=\"qr\" id=\"qr\" data-code-url=\"{}\">{}</div><p>{}</p>",
                esc(code),
                qr::svg(code),
                t(lang, "scan")
            )
        }),
        (Some(Integration::H5), Some(NextAction::RedirectToUrl { redirect_to_url })) => {
            Some(format!(
                "<p>{}</p><a class=\"button\" id=\"pay\" href=\"{}\">{}</a>",
                t(lang, "open_hint"),
                esc(&redirect_to_url.url),
                t(lang, "open")
            ))
        }
        (Some(Integration::H5), _) => None,
        (Some(Integration::Jsapi), credential) if device == Device::WeChat => {
            let Some(NextAction::InvokeJsapi { invoke_jsapi, .. }) = credential else {
                return None;
            };
            // The signed parameters, for WeixinJSBridge, in an attribute the page's own
            // script reads (no inline script: the CSP allows only the page's nonce).
            let json = serde_json::to_string(invoke_jsapi).expect("JSON serialises");
            Some(format!(
                "<p>{}</p><button class=\"button\" id=\"pay\" type=\"button\" \
                 data-jsapi=\"{}\">{}</button>",
                t(lang, "open_hint"),
                esc(&json),
                t(lang, "open")
            ))
        }
        (Some(Integration::Jsapi) | None, _) => Some(format!("<p>{}</p>", t(lang, "in_wechat"))),
        _ => Some(format!("<p>{}</p>", t(lang, "elsewhere"))),
    }
}

/// `{"state": "waiting" | "completed" | "closed", "redirect"}`: what the page polls.
async fn status(State(gw): State<Gateway>, Path(token): Path<String>) -> Response {
    let p = match gw.store().payment_by_checkout_token(&token).await {
        Ok(Some(p)) => p,
        Ok(None) => return ApiError::not_found("checkout").into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let (state, redirect) = match finished(&p) {
        Some(true) => ("completed", destination(&p, &token, true)),
        Some(false) => ("closed", destination(&p, &token, false)),
        None if gw.now_ms() >= p.expires_at => ("closed", destination(&p, &token, false)),
        None => ("waiting", String::new()),
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({"state": state, "redirect": redirect})),
    )
        .into_response()
}

/// The shopper cancels: the order is closed at WeChat (a payment that slipped in wins), then
/// the page goes where the payment ended.
async fn cancel(State(gw): State<Gateway>, Path(token): Path<String>) -> Response {
    let p = match gw.store().payment_by_checkout_token(&token).await {
        Ok(Some(p)) => p,
        Ok(None) => return ApiError::not_found("checkout").into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let p = if p.status == PaymentStatus::Pending {
        match crate::app::orders::close_and_settle(&gw, &p.merchant_id, &p, PaymentEvent::Cancelled)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(payment = %p.id, error = %e, "checkout cancel could not reach WeChat");
                return ApiError::new(
                    ErrorCode::UpstreamUnavailable,
                    "WeChat Pay did not confirm the cancel; try again",
                )
                .into_response();
            }
        }
    } else {
        p
    };
    let paid = finished(&p).unwrap_or(false);
    Redirect::to(&destination(&p, &token, paid)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_amounts_use_the_currency_exponent() {
        assert_eq!(
            esc(r#"<script>alert("x&y")</script>'"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"
        );
        let mut p = PaymentRow {
            amount: 1999,
            currency: "CNY".into(),
            ..PaymentRow::default()
        };
        assert_eq!(amount(p.amount, &p.currency), "¥19.99");
        p.currency = "JPY".into();
        assert_eq!(amount(p.amount, &p.currency), "1999 JPY");
        p.currency = "USD".into();
        p.amount = 5;
        assert_eq!(amount(p.amount, &p.currency), "0.05 USD");
    }
}

#[derive(Debug, Deserialize)]
struct OauthReturn {
    code: Option<String>,
}

/// Webpage authorization comes back here with a code: the payer's openid is learnt and kept on
/// the payment, and the shopper goes back to the page.
async fn oauth_return(
    State(gw): State<Gateway>,
    Path(token): Path<String>,
    Query(q): Query<OauthReturn>,
) -> Response {
    let Ok(Some(p)) = pay::by_checkout_token(&gw, &token).await else {
        return ApiError::not_found("checkout").into_response();
    };
    let page = format!("/checkout/{token}");
    let Some(code) = q.code.filter(|c| !c.is_empty() && c.len() <= 128) else {
        return Redirect::to(&page).into_response();
    };
    match pay::learn_payer(&gw, &p, &code).await {
        Ok(()) => Redirect::to(&page).into_response(),
        Err(e) => e.into_response(),
    }
}
