//! Payment links: `POST/GET /v1/payment_links`, `GET /v1/payment_links/{id}`,
//! `POST /v1/payment_links/{id}/deactivate`, `GET /v1/payment_links/{id}/payments`, and the
//! public `GET/POST /pay/{token}`: the page shows the amount (or asks for one, within the
//! link's bounds) with a Pay button, whose POST makes a new hosted payment and goes to its
//! checkout page.

use axum::Form;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use wxgate_domain::money::AMOUNT_MAX;
use wxgate_store::PaymentLinkRow;

use crate::app::links::{self, NewLink, Visit};
use crate::app::payments::{check_description, merchant_currency};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gateway::Gateway;
use crate::http::answer::{ErrorEnvelope, Json};
use crate::http::checkout::{self, Lang, PageQuery, esc, html, notice, t};
use crate::http::extract::{
    Authed, JsonBody, ListPage, Params, merchant_id, page, page_limit, parse_time, path_id,
};
use crate::{qr, views};
use wxgate_domain::id::LinkId;

/// The merchant API for links.
pub fn api_routes() -> Router<Gateway> {
    Router::new()
        .route("/v1/payment_links", post(create_link).get(list_links))
        .route("/v1/payment_links/{id}", get(get_link))
        .route("/v1/payment_links/{id}/deactivate", post(deactivate))
        .route("/v1/payment_links/{id}/payments", get(link_payments))
}

/// The shopper's side: a link's page.
pub fn page_routes() -> Router<Gateway> {
    Router::new().route("/pay/{token}", get(visit).post(visit_with_amount))
}

/// A payment link to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateLink {
    /// A fixed amount in minor units; or leave it out and give `amount_min` and `amount_max`
    /// for an amount the payer enters.
    #[schema(minimum = 1, maximum = 100_000_000_000_i64)]
    pub(crate) amount: Option<i64>,
    #[schema(minimum = 1, maximum = 100_000_000_000_i64)]
    pub(crate) amount_min: Option<i64>,
    #[schema(minimum = 1, maximum = 100_000_000_000_i64)]
    pub(crate) amount_max: Option<i64>,
    /// ISO 4217, among the merchant's currencies.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub(crate) currency: String,
    #[schema(min_length = 1, max_length = 127)]
    pub(crate) description: String,
    #[schema(max_length = 2048)]
    pub(crate) return_url: Option<String>,
    /// How many payments the link makes at most.
    #[schema(minimum = 1)]
    pub(crate) max_uses: Option<i64>,
    /// RFC 3339, in the future.
    #[schema(format = DateTime)]
    pub(crate) expires_at: Option<String>,
}

fn link_json(l: &PaymentLinkRow) -> Value {
    json!({
        "id": l.id,
        "object": "payment_link",
        "url": l.url,
        "currency": l.currency,
        "amount": l.amount,
        "amount_min": l.amount_min,
        "amount_max": l.amount_max,
        "description": l.description,
        "return_url": l.return_url,
        "max_uses": l.max_uses,
        "uses": l.uses,
        "expires_at": l.expires_at.map(views::rfc3339),
        "active": l.active.is_set(),
        "created_at": views::rfc3339(l.created_at),
    })
}

/// Create a payment link: a permanent URL (and QR) whose Pay button makes a new hosted payment each time.
#[utoipa::path(post, path = "/v1/payment_links", request_body = CreateLink,
    responses((status = 201, description = "The link, with its `url` and `qr` images"), (status = 400, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub(crate) async fn create_link(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    JsonBody(req): JsonBody<CreateLink>,
) -> ApiResult<Json> {
    let new = new_link(req, &merchant, None)?;
    let row = links::create(&gw, &merchant_id(&merchant), new).await?;
    let mut view = link_json(&row);
    view["qr"] = json!({
        "image_png_base64": base64::engine::general_purpose::STANDARD.encode(qr::png(&row.url)),
        "image_svg": qr::svg(&row.url),
    });
    Ok(Json(StatusCode::CREATED, view))
}

/// The request as a [`NewLink`], with the merchant's reference if any, or the first rule it
/// breaks. A front door builds the same request, so every rule is checked here once.
pub(crate) fn new_link(
    req: CreateLink,
    merchant: &wxgate_store::MerchantRow,
    merchant_reference: Option<String>,
) -> ApiResult<NewLink> {
    for (param, text) in [
        ("description", Some(req.description.as_str())),
        ("return_url", req.return_url.as_deref()),
        ("merchant_reference", merchant_reference.as_deref()),
    ] {
        if let Some(t) = text {
            crate::http::extract::check_text(param, t)?;
        }
    }
    let currency = merchant_currency(merchant, &req.currency)?;
    check_link(&req)?;
    let expires_at = req
        .expires_at
        .as_deref()
        .map(|t| parse_time("expires_at", t))
        .transpose()?;
    Ok(NewLink {
        currency,
        amount: req.amount,
        amount_min: req.amount_min,
        amount_max: req.amount_max,
        description: req.description,
        return_url: req.return_url,
        max_uses: req.max_uses,
        expires_at,
        merchant_reference,
    })
}

/// A link's amounts, description, return URL and use limit, or the first rule they break.
fn check_link(req: &CreateLink) -> ApiResult<()> {
    let in_range = |v: i64| (1..=AMOUNT_MAX).contains(&v);
    match (req.amount, req.amount_min, req.amount_max) {
        (Some(a), None, None) if in_range(a) => {}
        (None, Some(min), Some(max)) if in_range(min) && in_range(max) && min <= max => {}
        _ => {
            return Err(ApiError::invalid(
                ErrorCode::InvalidAmount,
                "amount",
                "give amount (above 0), or amount_min and amount_max (above 0, min ≤ max) for an amount the payer enters",
            ));
        }
    }
    check_description(&req.description)?;
    if let Some(url) = &req.return_url
        && !url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
    {
        return Err(ApiError::invalid(
            ErrorCode::InvalidReturnUrl,
            "return_url",
            "return_url must be an absolute http(s) URL",
        ));
    }
    if req.max_uses.is_some_and(|n| n < 1) {
        return Err(ApiError::invalid(
            ErrorCode::InvalidMaxUses,
            "max_uses",
            "max_uses must be at least 1",
        ));
    }
    Ok(())
}

/// The merchant's payment links, newest first.
#[utoipa::path(get, path = "/v1/payment_links", params(ListPage),
    responses((status = 200, description = "`{object: list, data, has_more}`"), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub(crate) async fn list_links(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Params(q): Params<ListPage>,
) -> ApiResult<Json> {
    let limit = page_limit(q.limit)?;
    let rows = links::list(
        &gw,
        &merchant_id(&merchant),
        q.starting_after.as_deref(),
        limit,
    )
    .await?;
    Ok(page(rows, limit, link_json))
}

/// A payment link.
#[utoipa::path(get, path = "/v1/payment_links/{id}", params(("id" = String, Path, description = "plink_...")),
    responses((status = 200, description = "The link"), (status = 404, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub(crate) async fn get_link(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Path(id): Path<String>,
) -> ApiResult<Json> {
    let link = links::get(
        &gw,
        &merchant_id(&merchant),
        &path_id(LinkId::parse(&id), "payment link")?,
    )
    .await?;
    Ok(Json(StatusCode::OK, link_json(&link)))
}

/// Stop a payment link from taking payments.
#[utoipa::path(post, path = "/v1/payment_links/{id}/deactivate", params(("id" = String, Path, description = "plink_...")),
    responses((status = 200, description = "The link, inactive"), (status = 404, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub(crate) async fn deactivate(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Path(id): Path<String>,
) -> ApiResult<Json> {
    let link = links::deactivate(
        &gw,
        &merchant_id(&merchant),
        &path_id(LinkId::parse(&id), "payment link")?,
    )
    .await?;
    Ok(Json(StatusCode::OK, link_json(&link)))
}

/// The payments made through a link, newest first.
#[utoipa::path(get, path = "/v1/payment_links/{id}/payments", params(("id" = String, Path, description = "plink_..."), ListPage),
    responses((status = 200, description = "`{object: list, data: [Payment], has_more}`"), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub(crate) async fn link_payments(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Path(id): Path<String>,
    Params(q): Params<ListPage>,
) -> ApiResult<Json> {
    let link = links::get(
        &gw,
        &merchant_id(&merchant),
        &path_id(LinkId::parse(&id), "payment link")?,
    )
    .await?;
    let limit = page_limit(q.limit)?;
    let rows = links::payments(&gw, &link, q.starting_after.as_deref(), limit).await?;
    Ok(page(rows, limit, |p| views::payment(p, None)))
}

/// The link as a shopper reaches it: a form that makes its payment when sent, showing a fixed
/// amount or asking for one. Opening the link makes nothing, so link previews, prefetches and
/// crawlers neither use it up nor make payments.
async fn visit(
    State(gw): State<Gateway>,
    Path(token): Path<String>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = checkout::language(&query, &headers);
    let here = format!("/pay/{}", esc(&token));
    let link = match open_link(&gw, &token, lang, &here).await {
        Ok(link) => link,
        Err(page) => return *page,
    };
    amount_form(&link, lang, &here, None)
}

#[derive(Debug, Deserialize)]
struct AmountForm {
    amount: String,
}

async fn visit_with_amount(
    State(gw): State<Gateway>,
    Path(token): Path<String>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
    form: Result<Form<AmountForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let lang = checkout::language(&query, &headers);
    let here = format!("/pay/{}", esc(&token));
    let link = match open_link(&gw, &token, lang, &here).await {
        Ok(link) => link,
        Err(page) => return *page,
    };
    let entered = form
        .ok()
        .and_then(|Form(f)| links::currency(&link).parse_major(&f.amount));
    let (min, max) = (
        link.amount_min.unwrap_or(1),
        link.amount_max.unwrap_or(AMOUNT_MAX),
    );
    match (link.amount, entered) {
        (Some(amount), _) => pay(&gw, &link, amount, lang, &here).await,
        (None, Some(amount)) if (min..=max).contains(&amount) => {
            pay(&gw, &link, amount, lang, &here).await
        }
        _ => amount_form(&link, lang, &here, Some(StatusCode::UNPROCESSABLE_ENTITY)),
    }
}

/// The link behind a token, if it still takes payments; otherwise the page to show.
async fn open_link(
    gw: &Gateway,
    token: &str,
    lang: Lang,
    here: &str,
) -> Result<PaymentLinkRow, Box<Response>> {
    match links::visit(gw, token).await {
        Ok(Visit::Open(link)) => Ok(*link),
        Ok(Visit::Missing) => Err(Box::new(notice(
            StatusCode::NOT_FOUND,
            lang,
            here,
            "not_found",
            "not_found_hint",
        ))),
        Ok(Visit::Closed) => Err(Box::new(notice(
            StatusCode::GONE,
            lang,
            here,
            "link_closed",
            "link_closed_hint",
        ))),
        Err(e) => Err(Box::new(e.into_response())),
    }
}

fn amount_form(
    link: &PaymentLinkRow,
    lang: Lang,
    here: &str,
    status: Option<StatusCode>,
) -> Response {
    let major = |minor: i64| links::currency(link).format_minor(minor);
    let (min, max) = (
        link.amount_min.unwrap_or(1),
        link.amount_max.unwrap_or(AMOUNT_MAX),
    );
    let (asked, button) = match link.amount {
        Some(amount) => (
            format!(
                "<p class=\"amount\">{}</p>",
                esc(&checkout::amount(amount, &link.currency))
            ),
            t(lang, "pay_now"),
        ),
        None => (
            format!(
                "<p><label for=\"amount\">{} ({} – {} {})</label></p>\
                 <p><input id=\"amount\" name=\"amount\" inputmode=\"decimal\" required \
                 class=\"amount-input\"></p>",
                t(lang, "enter_amount"),
                major(min),
                major(max),
                esc(&link.currency),
            ),
            t(lang, "continue"),
        ),
    };
    let body = format!(
        "<p class=\"desc\">{}</p><form method=\"post\" action=\"{here}\">{asked}\
         <button class=\"button\" type=\"submit\">{button}</button></form>",
        esc(&link.description),
    );
    html(status.unwrap_or(StatusCode::OK), lang, here, &body, "")
}

/// Takes a use of the link and makes its payment, then sends the shopper to its checkout.
async fn pay(gw: &Gateway, link: &PaymentLinkRow, amount: i64, lang: Lang, here: &str) -> Response {
    let made = links::pay(gw, link, amount).await;
    match made {
        Ok(Some(url)) => Redirect::to(&url).into_response(),
        Ok(None) => notice(
            StatusCode::GONE,
            lang,
            here,
            "link_closed",
            "link_closed_hint",
        ),
        Err(e) => {
            tracing::warn!(link = %link.id, code = %e.code, "a payment link could not make its payment");
            let body = format!(
                "<h1>{}</h1><p class=\"muted\">{}</p>",
                t(lang, "title"),
                esc(&e.message)
            );
            html(StatusCode::SERVICE_UNAVAILABLE, lang, here, &body, "")
        }
    }
}
