//! The hosted confirmation page of a payout (`/payouts/confirm/{token}`): the payee opens it
//! inside WeChat, is recognised by webpage authorization (silent) when the merchant's AppSecret
//! is known, and confirms through WeChat's own confirmation (`requestMerchantTransfer`);
//! outside WeChat it says to open the link in WeChat. The page follows the payout's status.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use wechatpay_v3::model::TransferConfirmParams;
use wxgate_domain::Currency;
use wxgate_domain::payout::PayoutStatus;
use wxgate_store::PayoutRow;

use crate::app::payouts;
use crate::error::ApiError;
use crate::gateway::Gateway;
use crate::http::checkout::{Device, Lang, PageQuery, device, esc, html, language, notice, t};

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/payouts/confirm/{token}", get(page))
        .route("/payouts/confirm/{token}/oauth", get(oauth_return))
        .route("/payouts/confirm/{token}/status", get(status))
}

/// Invokes WeChat's confirmation at once (and again from the button), then follows the status.
const SCRIPT: &str = r#"<script>
(function(){
  var base = location.pathname.replace(/\/(oauth)?$/, '');
  function poll(){
    fetch(base + '/status', {cache: 'no-store'}).then(function(r){ return r.json(); }).then(function(s){
      if (s.state !== 'waiting') { location.href = base; } else { setTimeout(poll, 2000); }
    }).catch(function(){ setTimeout(poll, 2000); });
  }
  setTimeout(poll, 2000);
  var button = document.getElementById('receive');
  if (!button) { return; }
  var params = JSON.parse(button.getAttribute('data-transfer'));
  var receive = function(){
    WeixinJSBridge.invoke('requestMerchantTransfer', params, function(res){
      if (res.err_msg === 'requestMerchantTransfer:ok') { poll(); }
    });
  };
  button.addEventListener('click', receive);
  if (typeof WeixinJSBridge === 'undefined') {
    document.addEventListener('WeixinJSBridgeReady', receive, false);
  } else {
    receive();
  }
})();
</script>"#;

fn here(token: &str) -> String {
    format!("/payouts/confirm/{}", esc(token))
}

async fn page(
    State(gw): State<Gateway>,
    Path(token): Path<String>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = language(&query, &headers);
    match show(&gw, &token, lang, &headers).await {
        Ok(page) | Err(page) => page,
    }
}

/// The payout behind the token, or the page that says there is none.
async fn payout(gw: &Gateway, token: &str, lang: Lang) -> Result<PayoutRow, Response> {
    match payouts::by_confirmation_token(gw, token).await {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(notice(
            StatusCode::NOT_FOUND,
            lang,
            &here(token),
            "not_found",
            "payout_not_found_hint",
        )),
        Err(e) => Err(e.into_response()),
    }
}

async fn show(
    gw: &Gateway,
    token: &str,
    lang: Lang,
    headers: &HeaderMap,
) -> Result<Response, Response> {
    let p = payout(gw, token, lang).await?;
    if let Some(page) = settled(&p, token, lang) {
        return Ok(page);
    }
    if device(headers) != Device::WeChat {
        return Ok(render(&p, token, lang, false));
    }
    let up = gw.upstream(&p.merchant_id).await.map_err(|e| {
        ApiError::internal("cannot open the merchant's WeChat connection", e).into_response()
    })?;
    if !up.can_authorize() {
        // WeChat's own page checks who confirms.
        return Ok(render(&p, token, lang, true));
    }
    let back = format!(
        "{}{}/oauth",
        gw.config().public_base_url.trim_end_matches('/'),
        here(token)
    );
    Ok(Redirect::to(&up.authorize_url(&back, token)).into_response())
}

/// The page of a payout that no longer waits for its payee.
fn settled(p: &PayoutRow, token: &str, lang: Lang) -> Option<Response> {
    let here = here(token);
    Some(match p.status {
        PayoutStatus::AwaitingConfirmation => return None,
        PayoutStatus::Succeeded => notice(StatusCode::OK, lang, &here, "received", "received_hint"),
        PayoutStatus::Failed | PayoutStatus::Cancelled => notice(
            StatusCode::GONE,
            lang,
            &here,
            "payout_closed",
            "payout_closed_hint",
        ),
        PayoutStatus::Pending | PayoutStatus::Processing => notice(
            StatusCode::OK,
            lang,
            &here,
            "payout_processing",
            "payout_processing_hint",
        ),
    })
}

/// The confirmation: amount, remark, and (inside WeChat) the button that opens WeChat's own.
fn render(p: &PayoutRow, token: &str, lang: Lang, in_wechat: bool) -> Response {
    let amount = format!("¥{}", Currency::CNY.format_minor(p.amount));
    let head = format!(
        "<p class=\"shop\">{}</p><p class=\"amount\" data-amount=\"{}\">{}</p><p class=\"desc\">{}</p>",
        t(lang, "receive_title"),
        p.amount,
        esc(&amount),
        esc(&p.remark)
    );
    let action = match (&p.package_info, in_wechat) {
        (Some(package), true) => {
            let params = TransferConfirmParams {
                mch_id: p.mchid.clone(),
                app_id: p.appid.clone(),
                package: package.clone(),
            };
            let json = serde_json::to_string(&params).expect("JSON serialises");
            format!(
                "<p>{}</p><button class=\"button\" id=\"receive\" type=\"button\" data-transfer=\"{}\">{}</button>",
                t(lang, "receive_hint"),
                esc(&json),
                t(lang, "receive")
            )
        }
        _ => format!("<p>{}</p>", t(lang, "open_in_wechat")),
    };
    html(
        StatusCode::OK,
        lang,
        &here(token),
        &format!("{head}{action}"),
        SCRIPT,
    )
}

#[derive(Debug, Deserialize)]
struct OauthReturn {
    code: Option<String>,
}

/// Webpage authorization comes back with a code: the page is for the payee only.
async fn oauth_return(
    State(gw): State<Gateway>,
    Path(token): Path<String>,
    Query(q): Query<OauthReturn>,
    headers: HeaderMap,
) -> Response {
    let lang = language(&PageQuery { lang: None }, &headers);
    let p = match payout(&gw, &token, lang).await {
        Ok(p) => p,
        Err(page) => return page,
    };
    if let Some(page) = settled(&p, &token, lang) {
        return page;
    }
    let Some(code) = q.code.filter(|c| !c.is_empty() && c.len() <= 128) else {
        return Redirect::to(&here(&token)).into_response();
    };
    let refused = "WeChat did not confirm who is receiving; reopen the page";
    let learnt = crate::app::payments::authorized_openid(&gw, &p.merchant_id, &code, refused).await;
    match learnt {
        Ok(openid) if openid == p.openid => render(&p, &token, lang, true),
        Ok(_) => notice(
            StatusCode::FORBIDDEN,
            lang,
            &here(&token),
            "not_payee",
            "not_payee_hint",
        ),
        Err(e) => e.into_response(),
    }
}

/// `{"state": "waiting" | "succeeded" | "closed" | "processing"}`: what the page polls.
async fn status(State(gw): State<Gateway>, Path(token): Path<String>) -> Response {
    let p = match payouts::by_confirmation_token(&gw, &token).await {
        Ok(Some(p)) => p,
        Ok(None) => return ApiError::not_found("payout").into_response(),
        Err(e) => return e.into_response(),
    };
    let state = match p.status {
        PayoutStatus::AwaitingConfirmation => "waiting",
        PayoutStatus::Succeeded => "succeeded",
        PayoutStatus::Failed | PayoutStatus::Cancelled => "closed",
        PayoutStatus::Pending | PayoutStatus::Processing => "processing",
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({"state": state})),
    )
        .into_response()
}
