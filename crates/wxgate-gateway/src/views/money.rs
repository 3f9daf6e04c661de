//! Money after the payment as the API shows it: reconciliations and their discrepancies, the
//! balance, and balance transactions (ledger postings).

use serde_json::{Value, json};
use wxgate_domain::ledger::Balances;
use wxgate_store::{DiscrepancyRow, PostingRow, ReconciliationRow, ReportRow};

use super::rfc3339;

/// A stored JSON column, passed through (absent or unreadable → null).
fn stored_json(text: Option<&str>) -> Value {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

/// A reconciliation; with its discrepancies when given.
pub fn reconciliation(r: &ReconciliationRow, discrepancies: Option<&[DiscrepancyRow]>) -> Value {
    let mut value = json!({
        "id": r.id,
        "object": "reconciliation",
        "date": r.bill_date,
        "status": r.status.as_str(),
        "attempts": r.attempts,
        "last_error": r.last_error,
        "totals": stored_json(r.totals.as_deref()),
        "discrepancy_count": r.discrepancy_count,
        "repaired_count": r.repaired_count,
        "created_at": rfc3339(r.created_at),
        "completed_at": r.completed_at.map(rfc3339),
    });
    if let Some(list) = discrepancies {
        value["discrepancies"] = list.iter().map(discrepancy).collect();
    }
    value
}

pub fn discrepancy(d: &DiscrepancyRow) -> Value {
    json!({
        "id": d.id,
        "object": "discrepancy",
        "reconciliation": d.reconciliation_id,
        "type": d.kind.as_str(),
        "reference": d.reference,
        "payment": d.payment_id,
        "refund": d.refund_id,
        "payout": d.payout_id,
        "gateway": stored_json(d.gateway_side.as_deref()),
        "wechat": stored_json(d.wechat_side.as_deref()),
        "status": d.status.as_str(),
        "resolution": d.resolution,
        "created_at": rfc3339(d.created_at),
        "resolved_at": d.resolved_at.map(rfc3339),
    })
}

/// The `reconciliation.completed` event's payload, and `reconciliation.discrepancy_found`'s.
pub fn reconciliation_event(r: &ReconciliationRow) -> String {
    reconciliation(r, None).to_string()
}

pub fn discrepancy_event(d: &DiscrepancyRow) -> String {
    discrepancy(d).to_string()
}

/// CSV of a reconciliation's discrepancies: one header line, one line per discrepancy.
pub fn discrepancies_csv(list: &[DiscrepancyRow]) -> anyhow::Result<String> {
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record([
        "id",
        "type",
        "reference",
        "payment",
        "refund",
        "payout",
        "gateway_amount",
        "wechat_amount",
        "gateway_status",
        "wechat_status",
        "status",
        "resolution",
    ])?;
    for d in list {
        let side = |text: Option<&str>, key: &str| -> String {
            match &stored_json(text)[key] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }
        };
        let fields = [
            d.id.clone(),
            d.kind.as_str().to_string(),
            d.reference.clone(),
            d.payment_id.clone().unwrap_or_default(),
            d.refund_id.clone().unwrap_or_default(),
            d.payout_id.clone().unwrap_or_default(),
            side(d.gateway_side.as_deref(), "amount"),
            side(d.wechat_side.as_deref(), "amount"),
            side(d.gateway_side.as_deref(), "status"),
            side(d.wechat_side.as_deref(), "status"),
            d.status.as_str().to_string(),
            d.resolution.clone().unwrap_or_default(),
        ];
        out.write_record(fields.iter().map(|f| csv_safe(f)))?;
    }
    Ok(String::from_utf8(out.into_inner()?)?)
}

/// A field as a spreadsheet may safely read it: text starting with `=`, `+`, `-` or `@` (and
/// not a number) gets a leading `'`, so it is not run as a formula. Quoting is the CSV
/// writer's.
pub fn csv_safe(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@']) && value.parse::<f64>().is_err() {
        format!("'{value}")
    } else {
        value.to_string()
    }
}

/// RFC 3339 in Asia/Shanghai, as reports show times (their days are Beijing days).
fn cst(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(time::macros::offset!(+8))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A report as the API shows it, with its download link.
pub fn report(r: &ReportRow, token: &str, base_url: &str) -> Value {
    json!({
        "id": r.id,
        "object": "report",
        "type": r.kind.as_str(),
        "date_from": r.date_from,
        "date_to": r.date_to,
        "status": "ready",
        "download_url": format!("{}/v1/reports/{}/file?token={token}", base_url.trim_end_matches('/'), r.id),
        "expires_at": rfc3339(r.expires_at),
        "created_at": rfc3339(r.created_at),
    })
}

/// Report lines, one per object, in the order of each kind's header.
pub mod report_rows {
    use wxgate_store::{DiscrepancyRow, PaymentRow, PostingRow, RefundRow};

    use super::cst;

    pub fn payments(list: &[PaymentRow]) -> Vec<Vec<String>> {
        list.iter()
            .map(|p| {
                vec![
                    p.id.clone(),
                    p.merchant_order_id.clone(),
                    cst(p.created_at),
                    p.status.as_str().to_string(),
                    p.amount.to_string(),
                    p.currency.clone(),
                    p.amount_refunded.to_string(),
                    p.integration.as_str().to_string(),
                    p.out_trade_no.clone(),
                    p.transaction_id.clone().unwrap_or_default(),
                    p.paid_at.map(cst).unwrap_or_default(),
                    p.description.clone(),
                ]
            })
            .collect()
    }

    pub fn refunds(list: &[RefundRow]) -> Vec<Vec<String>> {
        list.iter()
            .map(|r| {
                vec![
                    r.id.clone(),
                    r.payment_id.clone(),
                    r.merchant_refund_id.clone(),
                    cst(r.created_at),
                    r.status.as_str().to_string(),
                    r.amount.to_string(),
                    r.currency.clone(),
                    r.wechat_refund_id.clone().unwrap_or_default(),
                    r.succeeded_at.map(cst).unwrap_or_default(),
                    r.reason.clone().unwrap_or_default(),
                ]
            })
            .collect()
    }

    pub fn postings(list: &[PostingRow]) -> Vec<Vec<String>> {
        list.iter()
            .map(|p| {
                vec![
                    p.id.clone(),
                    cst(p.created_at),
                    p.kind.as_str().to_string(),
                    p.amount.to_string(),
                    p.currency.clone(),
                    p.source_id.clone(),
                    p.payment_id.clone().unwrap_or_default(),
                    p.refund_id.clone().unwrap_or_default(),
                ]
            })
            .collect()
    }

    pub fn discrepancies(list: &[(String, DiscrepancyRow)]) -> Vec<Vec<String>> {
        list.iter()
            .map(|(day, d)| {
                vec![
                    day.clone(),
                    d.id.clone(),
                    d.reconciliation_id.clone(),
                    d.kind.as_str().to_string(),
                    d.reference.clone(),
                    d.payment_id.clone().unwrap_or_default(),
                    d.refund_id.clone().unwrap_or_default(),
                    d.payout_id.clone().unwrap_or_default(),
                    d.gateway_side.clone().unwrap_or_default(),
                    d.wechat_side.clone().unwrap_or_default(),
                    d.status.as_str().to_string(),
                    d.resolution.clone().unwrap_or_default(),
                ]
            })
            .collect()
    }
}

/// `GET /v1/balance`: available, pending and reserved (held for payouts) per currency.
pub fn balance(by_currency: &[(String, Balances)], as_of: i64) -> Value {
    let amounts = |pick: fn(&Balances) -> i64| -> Vec<Value> {
        by_currency
            .iter()
            .map(|(c, b)| json!({"amount": pick(b), "currency": c}))
            .collect()
    };
    json!({
        "object": "balance",
        "as_of": rfc3339(as_of),
        "available": amounts(Balances::available),
        "pending": amounts(|b| b.pending),
        "reserved": amounts(|b| b.reserved),
    })
}

/// A ledger posting as a balance transaction: its kind, amount, source and entries.
pub fn balance_transaction(p: &PostingRow) -> Value {
    let entries: Vec<Value> = wxgate_domain::ledger::Posting::new(p.kind, p.amount)
        .map(|posting| {
            posting
                .entries
                .iter()
                .map(|(account, amount)| json!({"account": account.as_str(), "amount": amount}))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "id": p.id,
        "object": "balance_transaction",
        "type": p.kind.as_str(),
        "amount": p.amount,
        "currency": p.currency,
        "source": p.source_id,
        "payment": p.payment_id,
        "refund": p.refund_id,
        "entries": entries,
        "created_at": rfc3339(p.created_at),
    })
}
