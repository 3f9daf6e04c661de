//! `/v1/reports`: the wire format in and out; the work is [`app::reports`](crate::app::reports)'.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::app::reports::{self, ReportKind};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gateway::Gateway;
use crate::http::answer::{ErrorEnvelope, Json, ok};
use crate::http::extract::{Authed, JsonBody, Params, merchant_id};
use crate::http::money::parse_date;
use crate::views::money as views;

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/v1/reports", post(create_report))
        .route("/v1/reports/{id}", get(get_report))
        .route("/v1/reports/{id}/file", get(download))
}

/// A report to make.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReport {
    /// payments, refunds, balance_transactions or reconciliation (the discrepancies of the
    /// days' reconciliations).
    #[schema(example = "payments")]
    r#type: String,
    /// The first day, YYYY-MM-DD in Asia/Shanghai.
    #[schema(example = "2026-11-01")]
    date_from: String,
    /// The last day (inclusive); at most 366 days after date_from.
    #[schema(example = "2026-11-30")]
    date_to: String,
}

/// A CSV report of a range of days: one header line, one line per object, times in
/// Asia/Shanghai. It is ready at once: the file is produced as it downloads, through
/// `download_url`, which works for an hour without an API key.
#[utoipa::path(post, path = "/v1/reports", request_body = CreateReport,
    responses(
        (status = 201, description = "The report with its download_url"),
        (status = 400, description = "invalid_report_type, invalid_date or date_out_of_range", body = ErrorEnvelope),
    ),
    security(("api_key" = [])))]
pub(crate) async fn create_report(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    JsonBody(req): JsonBody<CreateReport>,
) -> ApiResult<Json> {
    let kind = ReportKind::parse(&req.r#type).ok_or_else(|| {
        ApiError::invalid(
            ErrorCode::InvalidReportType,
            "type",
            format!("unknown report type {:?}", req.r#type),
        )
    })?;
    let from = parse_date("date_from", &req.date_from)?;
    let to = parse_date("date_to", &req.date_to)?;
    let (row, token) = reports::create(&gw, &merchant_id(&merchant), kind, from, to).await?;
    Ok(Json(
        StatusCode::CREATED,
        views::report(&row, &token, &gw.config().public_base_url),
    ))
}

/// A report, with a new download link (the previous one stops working).
#[utoipa::path(get, path = "/v1/reports/{id}", params(("id" = String, Path, description = "rpt_...")),
    responses((status = 200, description = "The report with a fresh download_url"), (status = 404, body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub(crate) async fn get_report(
    State(gw): State<Gateway>,
    Authed(merchant): Authed,
    Path(id): Path<String>,
) -> ApiResult<Json> {
    let (row, token) = reports::get(&gw, &merchant_id(&merchant), &id).await?;
    Ok(ok(views::report(
        &row,
        &token,
        &gw.config().public_base_url,
    )))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FileQuery {
    /// The token of the report's download_url.
    token: String,
}

/// The report's CSV, streamed (the download_url; the token is the credential).
#[utoipa::path(get, path = "/v1/reports/{id}/file", params(("id" = String, Path, description = "rpt_..."), FileQuery),
    responses((status = 200, description = "text/csv", content_type = "text/csv"),
        (status = 404, description = "report_link_expired", body = ErrorEnvelope)))]
pub(crate) async fn download(
    State(gw): State<Gateway>,
    Path(id): Path<String>,
    Params(q): Params<FileQuery>,
) -> ApiResult<Response> {
    let row = reports::open(&gw, &id, &q.token).await?;
    let name = format!(
        "attachment; filename=\"{}-{}-{}.csv\"",
        row.kind.as_str(),
        row.date_from,
        row.date_to
    );
    let stream = reports::csv_stream(gw, row)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, name),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
