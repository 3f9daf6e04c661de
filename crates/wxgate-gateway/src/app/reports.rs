//! Reports: a date range (Asia/Shanghai days, like WeChat's bills) of payments, refunds,
//! balance transactions or reconciliation discrepancies, as CSV behind a download link that
//! expires. The file is produced while it is downloaded, `PAGE_ROWS` rows at a time, so a
//! report of any size streams without the range ever being held in memory.

use bytes::Bytes;
use futures_util::Stream;
use time::Date;
use wxgate_domain::id::MerchantId;
pub use wxgate_domain::report::ReportKind;
use wxgate_store::{ReportPage, ReportRow};

use crate::app::reconciliation::day_bounds;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gateway::Gateway;
use crate::secrets::sha256_hex;
use crate::views::money::csv_safe;

/// The longest range one report covers.
pub const MAX_REPORT_DAYS: i64 = 366;
/// How long a download link works.
pub const LINK_VALID_MS: i64 = 60 * 60 * 1000;
/// Rows read from the database per page of the file.
pub const PAGE_ROWS: i64 = 1_000;

/// The CSV header of each report type.
fn header(kind: ReportKind) -> &'static [&'static str] {
    match kind {
        ReportKind::Payments => &[
            "id",
            "merchant_order_id",
            "created_at",
            "status",
            "amount",
            "currency",
            "amount_refunded",
            "integration",
            "out_trade_no",
            "transaction_id",
            "paid_at",
            "description",
        ],
        ReportKind::Refunds => &[
            "id",
            "payment",
            "merchant_refund_id",
            "created_at",
            "status",
            "amount",
            "currency",
            "wechat_refund_id",
            "succeeded_at",
            "reason",
        ],
        ReportKind::BalanceTransactions => &[
            "id",
            "created_at",
            "type",
            "amount",
            "currency",
            "source",
            "payment",
            "refund",
        ],
        ReportKind::Reconciliation => &[
            "date",
            "id",
            "reconciliation",
            "type",
            "reference",
            "payment",
            "refund",
            "payout",
            "gateway",
            "wechat",
            "status",
            "resolution",
        ],
    }
}

/// A new report and its download link's token (shown only in this answer and in `get`'s).
pub async fn create(
    gw: &Gateway,
    merchant_id: &MerchantId,
    kind: ReportKind,
    from: Date,
    to: Date,
) -> ApiResult<(ReportRow, String)> {
    if to < from {
        return Err(ApiError::invalid(
            ErrorCode::DateOutOfRange,
            "date_to",
            "date_to is before date_from",
        ));
    }
    if (to - from).whole_days() >= MAX_REPORT_DAYS {
        return Err(ApiError::invalid(
            ErrorCode::DateOutOfRange,
            "date_to",
            format!("a report covers at most {MAX_REPORT_DAYS} days"),
        ));
    }
    let token = wechatpay_v3::nonce(40);
    let now = gw.now_ms();
    let row = ReportRow {
        id: wxgate_domain::id::ReportId::generate().to_string(),
        merchant_id: merchant_id.to_string(),
        kind,
        date_from: from.to_string(),
        date_to: to.to_string(),
        token_hash: sha256_hex(token.as_bytes()),
        expires_at: now + LINK_VALID_MS,
        created_at: now,
    };
    gw.store().insert_report(&row).await?;
    Ok((row, token))
}

/// A report, with a new download link (the old one stops working).
pub async fn get(
    gw: &Gateway,
    merchant_id: &MerchantId,
    id: &str,
) -> ApiResult<(ReportRow, String)> {
    let mut row = gw
        .store()
        .report(merchant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("report"))?;
    let token = wechatpay_v3::nonce(40);
    row.token_hash = sha256_hex(token.as_bytes());
    row.expires_at = gw.now_ms() + LINK_VALID_MS;
    gw.store()
        .renew_report_link(&row.id, &row.token_hash, row.expires_at)
        .await?;
    Ok((row, token))
}

/// The report a download link names, while the link works.
pub async fn open(gw: &Gateway, id: &str, token: &str) -> ApiResult<ReportRow> {
    let found = gw
        .store()
        .report_by_token(id, &sha256_hex(token.as_bytes()))
        .await?;
    let row = found
        .filter(|r| r.expires_at > gw.now_ms())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::ReportLinkExpired,
                "this download link is unknown or expired; GET the report for a new one",
            )
        })?;
    Ok(row)
}

/// Where the file stands while it streams.
struct Cursor {
    gw: Gateway,
    report: ReportRow,
    bounds: (i64, i64),
    after: Option<(i64, String)>,
    header_sent: bool,
    done: bool,
}

/// The report's CSV: the header, then a chunk per page of rows, oldest first.
pub fn csv_stream(
    gw: Gateway,
    report: ReportRow,
) -> ApiResult<impl Stream<Item = Result<Bytes, std::io::Error>>> {
    let day = |s: &str| {
        wechatpay_v3::validate::bill_date("date", s)
            .map_err(|e| ApiError::internal("report dates", e))
    };
    let from = day_bounds(day(&report.date_from)?).0;
    let to = day_bounds(day(&report.date_to)?).1;
    let cursor = Cursor {
        gw,
        report,
        bounds: (from, to),
        after: None,
        header_sent: false,
        done: false,
    };
    Ok(futures_util::stream::unfold(cursor, |mut c| async move {
        if c.done {
            return None;
        }
        match next_chunk(&mut c).await {
            Ok(bytes) => Some((Ok(bytes), c)),
            Err(e) => {
                c.done = true;
                Some((Err(std::io::Error::other(e.to_string())), c))
            }
        }
    }))
}

/// The next piece of the file: the header first, then one page of rows (the last page ends
/// the stream).
async fn next_chunk(c: &mut Cursor) -> anyhow::Result<Bytes> {
    let mut out = csv::Writer::from_writer(Vec::new());
    if !c.header_sent {
        c.header_sent = true;
        out.write_record(header(c.report.kind))?;
        return Ok(Bytes::from(out.into_inner()?));
    }
    let rows = page_rows(c).await?;
    if (rows.len() as i64) < PAGE_ROWS {
        c.done = true;
    }
    for record in rows {
        out.write_record(record.iter().map(|f| csv_safe(f)))?;
    }
    Ok(Bytes::from(out.into_inner()?))
}

/// One page of rows as CSV fields, moving the cursor past them.
async fn page_rows(c: &mut Cursor) -> anyhow::Result<Vec<Vec<String>>> {
    use crate::views::money::report_rows as rows;
    let store = c.gw.store();
    let merchant = c.report.merchant_id.as_str();
    let page = ReportPage {
        from: c.bounds.0,
        to: c.bounds.1,
        after: c.after.clone(),
        limit: PAGE_ROWS,
    };
    let (fields, last) = match c.report.kind {
        ReportKind::Payments => {
            let list = store.payments_page(merchant, &page).await?;
            (
                rows::payments(&list),
                list.last().map(|p| (p.created_at, p.id.clone())),
            )
        }
        ReportKind::Refunds => {
            let list = store.refunds_page(merchant, &page).await?;
            (
                rows::refunds(&list),
                list.last().map(|r| (r.created_at, r.id.clone())),
            )
        }
        ReportKind::BalanceTransactions => {
            let list = store.postings_page(merchant, &page).await?;
            (
                rows::postings(&list),
                list.last().map(|p| (p.created_at, p.id.clone())),
            )
        }
        ReportKind::Reconciliation => {
            let days = (c.report.date_from.as_str(), c.report.date_to.as_str());
            let list = store
                .discrepancies_page(merchant, days, c.after.clone(), PAGE_ROWS)
                .await?;
            (
                rows::discrepancies(&list),
                list.last().map(|(_, d)| (d.created_at, d.id.clone())),
            )
        }
    };
    c.after = last.or(c.after.take());
    Ok(fields)
}
