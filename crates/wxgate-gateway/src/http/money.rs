//! `/v1/reconciliations`, `/v1/balance` and `/v1/balance_transactions`: the wire format in and
//! out; the work is [`app::reconciliation`](crate::app::reconciliation)'s and the store's.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use time::Date;
use wxgate_domain::id::{DiscrepancyId, ReconciliationId};
use wxgate_domain::ledger::PostingKind;
use wxgate_domain::reconciliation::ReconciliationStatus;
use wxgate_store::{PostingFilter, ReconciliationFilter};

use crate::app::reconciliation as recon;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gateway::Gateway;
use crate::http::answer::{ErrorEnvelope, Json, ok};
use crate::http::extract::{Authed, JsonBody, Params, merchant_id, page, page_limit, path_id};
use crate::views::money as views;

/// The longest reason an operator may give when resolving a discrepancy.
pub const MAX_RESOLUTION_CHARS: usize = 500;

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route(
            "/v1/reconciliations",
            post(create_reconciliation).get(list_reconciliations),
        )
        .route("/v1/reconciliations/{id}", get(get_reconciliation))
        .route(
            "/v1/reconciliations/{id}/discrepancies.csv",
            get(discrepancies_csv),
        )
        .route(
            "/v1/reconciliations/{id}/discrepancies/{discrepancy_id}/resolve",
            post(resolve_discrepancy),
        )
        .route("/v1/balance", get(get_balance))
        .route("/v1/balance_transactions", get(list_balance_transactions))
}

/// `YYYY-MM-DD`, parsed at the edge.
pub(crate) fn parse_date(param: &str, value: &str) -> ApiResult<Date> {
    wechatpay_v3::validate::bill_date(param, value).map_err(|_| {
        ApiError::invalid(
            ErrorCode::InvalidDate,
            param,
            format!("{param} must be a date YYYY-MM-DD, got {value:?}"),
        )
    })
}

/// A day to reconcile.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReconciliation {
    /// The bill day, `YYYY-MM-DD` in Asia/Shanghai: from 90 days ago to today.
    #[schema(example = "2026-11-26")]
    date: String,
}

/// Reconcile a day against WeChat's bills (idempotent per day: the same day answers the same
/// reconciliation). It completes in the background; WeChat's bills exist from 09:00 the next
/// day, and until then it waits.
#[utoipa::path(post, path = "/v1/reconciliations", request_body = CreateReconciliation,
    responses(
        (status = 201, description = "Requested; it runs in the background"),
        (status = 200, description = "This day's reconciliation, requested before"),
        (status = 400, description = "invalid_date or date_out_of_range", body = ErrorEnvelope),
    ),
    security(("api_key" = [])))]
pub(crate) async fn create_reconciliation(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    JsonBody(req): JsonBody<CreateReconciliation>,
) -> ApiResult<Json> {
    let date = parse_date("date", &req.date)?;
    let (r, made) = recon::request(&gw, &merchant_id(&merchant), date).await?;
    let status = if made {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(Json(status, views::reconciliation(&r, None)))
}

/// Filters of the reconciliation list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReconciliationQuery {
    /// pending, waiting_for_bill, completed or failed.
    status: Option<String>,
    /// Days from this one (YYYY-MM-DD).
    date_from: Option<String>,
    /// Days up to this one (YYYY-MM-DD).
    date_to: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    starting_after: Option<String>,
}

/// Reconciliations, latest day first.
#[utoipa::path(get, path = "/v1/reconciliations", params(ReconciliationQuery),
    responses((status = 200, description = "`{object: list, data: [Reconciliation], has_more}`")),
    security(("api_key" = [])))]
pub(crate) async fn list_reconciliations(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Params(q): Params<ReconciliationQuery>,
) -> ApiResult<Json> {
    let status = q
        .status
        .as_deref()
        .map(|s| {
            ReconciliationStatus::parse(s).ok_or_else(|| {
                ApiError::invalid(
                    ErrorCode::InvalidStatus,
                    "status",
                    format!("unknown status {s:?}"),
                )
            })
        })
        .transpose()?;
    let date = |param: &str, v: &Option<String>| -> ApiResult<Option<String>> {
        v.as_deref()
            .map(|d| parse_date(param, d).map(|d| d.to_string()))
            .transpose()
    };
    let before = match &q.starting_after {
        Some(id) => {
            let r = gw.store().reconciliation(&merchant.id, id).await?;
            let r = r.ok_or_else(|| {
                ApiError::invalid(
                    ErrorCode::InvalidCursor,
                    "starting_after",
                    "no such reconciliation",
                )
            })?;
            Some((r.bill_date, r.id))
        }
        None => None,
    };
    let limit = page_limit(q.limit)?;
    let filter = ReconciliationFilter {
        status,
        date_gte: date("date_from", &q.date_from)?,
        date_lte: date("date_to", &q.date_to)?,
        before,
        limit: limit + 1,
    };
    let rows = gw
        .store()
        .list_reconciliations(&merchant.id, &filter)
        .await?;
    Ok(page(rows, limit, |r| views::reconciliation(r, None)))
}

/// A reconciliation with its discrepancies.
#[utoipa::path(get, path = "/v1/reconciliations/{id}", params(("id" = String, Path, description = "recon_...")),
    responses((status = 200, description = "The reconciliation, `discrepancies` included"), (status = 404, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub(crate) async fn get_reconciliation(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Path(id): Path<String>,
) -> ApiResult<Json> {
    let id = path_id(ReconciliationId::parse(&id), "reconciliation")?;
    let (r, list) = recon::get(&gw, &merchant_id(&merchant), &id).await?;
    Ok(ok(views::reconciliation(&r, Some(&list))))
}

/// A reconciliation's discrepancies as CSV: one header line, one line per discrepancy.
#[utoipa::path(get, path = "/v1/reconciliations/{id}/discrepancies.csv", params(("id" = String, Path, description = "recon_...")),
    responses((status = 200, description = "text/csv", content_type = "text/csv"), (status = 404, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub(crate) async fn discrepancies_csv(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = path_id(ReconciliationId::parse(&id), "reconciliation")?;
    let (r, list) = recon::get(&gw, &merchant_id(&merchant), &id).await?;
    let disposition = format!("attachment; filename=\"discrepancies-{}.csv\"", r.bill_date);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        views::discrepancies_csv(&list).map_err(|e| ApiError::internal("discrepancy CSV", e))?,
    )
        .into_response())
}

/// Why a discrepancy is closed.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resolve {
    /// 1 to 500 characters, kept with the discrepancy.
    #[schema(min_length = 1, max_length = 500)]
    reason: String,
}

/// Close an open discrepancy with a reason (an operator's decision).
#[utoipa::path(post, path = "/v1/reconciliations/{id}/discrepancies/{discrepancy_id}/resolve", request_body = Resolve,
    params(("id" = String, Path, description = "recon_..."), ("discrepancy_id" = String, Path, description = "disc_...")),
    responses(
        (status = 200, description = "The discrepancy, resolved"),
        (status = 400, description = "invalid_resolution", body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, description = "discrepancy_not_open", body = ErrorEnvelope),
    ),
    security(("api_key" = [])))]
pub(crate) async fn resolve_discrepancy(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Path((id, discrepancy_id)): Path<(String, String)>,
    JsonBody(req): JsonBody<Resolve>,
) -> ApiResult<Json> {
    let reason = req.reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_RESOLUTION_CHARS {
        return Err(ApiError::invalid(
            ErrorCode::InvalidResolution,
            "reason",
            format!("reason must be 1 to {MAX_RESOLUTION_CHARS} characters"),
        ));
    }
    let id = path_id(ReconciliationId::parse(&id), "reconciliation")?;
    let discrepancy_id = path_id(DiscrepancyId::parse(&discrepancy_id), "discrepancy")?;
    let d = recon::resolve(&gw, &merchant_id(&merchant), &id, &discrepancy_id, reason).await?;
    Ok(ok(views::discrepancy(&d)))
}

/// What the merchant has: available (settled by WeChat, less refunds, fees, payouts and what
/// payouts on their way hold), pending (paid, not yet settled) and reserved (held by payouts
/// not yet finished), per currency.
#[utoipa::path(get, path = "/v1/balance",
    responses((status = 200, description = "`{object: balance, as_of, available: [{amount, currency}], pending: [...], reserved: [...]}`")),
    security(("api_key" = [])))]
pub(crate) async fn get_balance(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
) -> ApiResult<Json> {
    let balances = gw.store().balances(&merchant.id).await?;
    Ok(ok(views::balance(&balances, gw.now_ms())))
}

/// Filters of the balance transaction list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TransactionQuery {
    /// payment, settlement, fee, fee_return, refund, payout_reserve, payout, payout_release,
    /// conversion_out, conversion_in, discount or discount_return.
    r#type: Option<String>,
    /// Only this payment's (pay_...).
    payment: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    starting_after: Option<String>,
}

/// The ledger's postings, newest first: each with its type, amount, source and entries.
#[utoipa::path(get, path = "/v1/balance_transactions", params(TransactionQuery),
    responses((status = 200, description = "`{object: list, data: [BalanceTransaction], has_more}`")),
    security(("api_key" = [])))]
pub(crate) async fn list_balance_transactions(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Params(q): Params<TransactionQuery>,
) -> ApiResult<Json> {
    let kind = q
        .r#type
        .as_deref()
        .map(|t| {
            PostingKind::parse(t).ok_or_else(|| {
                ApiError::invalid(
                    ErrorCode::InvalidTransactionType,
                    "type",
                    format!("unknown type {t:?}"),
                )
            })
        })
        .transpose()?;
    let before = match &q.starting_after {
        Some(id) => {
            let p = gw.store().posting(&merchant.id, id).await?.ok_or_else(|| {
                ApiError::invalid(
                    ErrorCode::InvalidCursor,
                    "starting_after",
                    "no such balance transaction",
                )
            })?;
            Some((p.created_at, p.id))
        }
        None => None,
    };
    let limit = page_limit(q.limit)?;
    let filter = PostingFilter {
        kind,
        payment_id: q.payment.clone(),
        before,
        limit: limit + 1,
    };
    let rows = gw.store().list_postings(&merchant.id, &filter).await?;
    Ok(page(rows, limit, views::balance_transaction))
}
