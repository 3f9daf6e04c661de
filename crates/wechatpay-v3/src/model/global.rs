//! Cross-border (`/v3/global/...`) payments and refunds. Signing, verification, callbacks and
//! errors are the domestic ones; the bodies differ: a `trade_type` and a
//! `merchant_category_code`, a foreign pricing currency, `attach` of at most 127 characters, and
//! answers that show what the payer paid in CNY with the exchange rate.

use serde::{Deserialize, Serialize};

use super::encode::{path_segment, query_value};
use super::pay::{Amount, ExchangeRate, Payer, SceneInfo};
use super::refund::RefundStatus;
use crate::validate::{self, FieldError, FieldResult};

pub const GLOBAL_REFUNDS_PATH: &str = "/v3/global/refunds";

/// The cross-border payment products and their `trade_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GlobalKind {
    Native,
    Jsapi,
    App,
    Mweb,
}

impl GlobalKind {
    pub fn path(self) -> &'static str {
        match self {
            Self::Native => "/v3/global/transactions/native",
            Self::Jsapi => "/v3/global/transactions/jsapi",
            Self::App => "/v3/global/transactions/app",
            Self::Mweb => "/v3/global/transactions/mweb",
        }
    }

    pub fn trade_type(self) -> &'static str {
        match self {
            Self::Native => "NATIVE",
            Self::Jsapi => "JSAPI",
            Self::App => "APP",
            Self::Mweb => "MWEB",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GlobalPrepayRequest {
    pub appid: String,
    pub mchid: String,
    pub description: String,
    pub out_trade_no: String,
    pub trade_type: String,
    pub merchant_category_code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    pub notify_url: String,
    pub amount: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Payer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<SceneInfo>,
}

impl GlobalPrepayRequest {
    pub fn validate(&self, kind: GlobalKind) -> FieldResult {
        validate::id32("/appid", &self.appid)?;
        validate::id32("/mchid", &self.mchid)?;
        validate::description("/description", &self.description)?;
        validate::out_trade_no("/out_trade_no", &self.out_trade_no)?;
        if self.trade_type != kind.trade_type() {
            return Err(FieldError::new(
                "/trade_type",
                format!(
                    "must be {} on this endpoint, got {:?}",
                    kind.trade_type(),
                    self.trade_type
                ),
            ));
        }
        if !(self.merchant_category_code.len() == 4
            && self
                .merchant_category_code
                .bytes()
                .all(|b| b.is_ascii_digit()))
        {
            return Err(FieldError::new(
                "/merchant_category_code",
                "must be a 4-digit merchant category code",
            ));
        }
        for (field, t) in [
            ("/time_start", &self.time_start),
            ("/time_expire", &self.time_expire),
        ] {
            if let Some(t) = t {
                validate::rfc3339(field, t)?;
            }
        }
        if let Some(a) = &self.attach {
            validate::attach("/attach", a, 127)?;
        }
        validate::notify_url("/notify_url", &self.notify_url)?;
        validate::positive_amount("/amount/total", self.amount.total)?;
        match self.amount.currency.as_deref() {
            Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => {}
            other => {
                return Err(FieldError::new(
                    "/amount/currency",
                    format!("must be an ISO 4217 pricing currency, got {other:?}"),
                ));
            }
        }
        if kind == GlobalKind::Jsapi {
            match &self.payer {
                None => return Err(FieldError::new("/payer/openid", "is required for JSAPI")),
                Some(p) => validate::openid("/payer/openid", &p.openid)?,
            }
        }
        if kind == GlobalKind::Mweb
            && self
                .scene_info
                .as_ref()
                .and_then(|s| s.payer_client_ip.as_ref())
                .is_none()
        {
            return Err(FieldError::new(
                "/scene_info/payer_client_ip",
                "is required for MWEB",
            ));
        }
        Ok(())
    }
}

/// `/v3/global/transactions/out-trade-no/{out_trade_no}?mchid=...`
pub fn global_query_by_out_trade_no_url(out_trade_no: &str, mchid: &str) -> String {
    format!(
        "/v3/global/transactions/out-trade-no/{}?mchid={}",
        path_segment(out_trade_no),
        query_value(mchid)
    )
}

/// `/v3/global/transactions/id/{transaction_id}?mchid=...`
pub fn global_query_by_transaction_id_url(transaction_id: &str, mchid: &str) -> String {
    format!(
        "/v3/global/transactions/id/{}?mchid={}",
        path_segment(transaction_id),
        query_value(mchid)
    )
}

/// `/v3/global/transactions/out-trade-no/{out_trade_no}/close`
pub fn global_close_url(out_trade_no: &str) -> String {
    format!(
        "/v3/global/transactions/out-trade-no/{}/close",
        path_segment(out_trade_no)
    )
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GlobalRefundAmountRequest {
    pub refund: i64,
    pub total: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GlobalRefundRequest {
    pub mchid: String,
    pub appid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    pub out_refund_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    pub amount: GlobalRefundAmountRequest,
}

impl GlobalRefundRequest {
    pub fn validate(&self) -> FieldResult {
        validate::id32("/mchid", &self.mchid)?;
        validate::id32("/appid", &self.appid)?;
        match (&self.transaction_id, &self.out_trade_no) {
            (None, None) => {
                return Err(FieldError::new(
                    "/out_trade_no",
                    "one of transaction_id and out_trade_no is required",
                ));
            }
            (_, Some(no)) => validate::out_trade_no("/out_trade_no", no)?,
            (Some(id), None) => validate::id32("/transaction_id", id)?,
        }
        validate::out_refund_no("/out_refund_no", &self.out_refund_no)?;
        if let Some(url) = &self.notify_url {
            validate::notify_url("/notify_url", url)?;
        }
        validate::positive_amount("/amount/refund", self.amount.refund)?;
        validate::positive_amount("/amount/total", self.amount.total)?;
        if self.amount.refund > self.amount.total {
            return Err(FieldError::new(
                "/amount/refund",
                format!(
                    "must not exceed the order total {}, got {}",
                    self.amount.total, self.amount.refund
                ),
            ));
        }
        Ok(())
    }
}

/// A cross-border refund. Note `id` (not `refund_id`) and `recv_account`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GlobalRefund {
    pub id: String,
    pub out_refund_no: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recv_account: Option<String>,
    pub status: RefundStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    pub amount: GlobalRefundAmount,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GlobalRefundAmount {
    pub refund: i64,
    pub total: i64,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_refund: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_rate: Option<ExchangeRate>,
}

/// `/v3/global/refunds/out-refund-no/{out_refund_no}?mchid=...`
pub fn global_refund_query_url(out_refund_no: &str, mchid: &str) -> String {
    format!(
        "{GLOBAL_REFUNDS_PATH}/out-refund-no/{}?mchid={}",
        path_segment(out_refund_no),
        query_value(mchid)
    )
}

/// What a cross-border payer paid, in CNY, for `total` minor units at `rate` (scaled by 10^8)
/// CNY per unit of a currency with `exponent` decimal places. Rounded half up to the fen.
pub fn payer_total_cny(total: i64, rate: i64, exponent: u32) -> i64 {
    // CNY has 2 decimals; rate is CNY per major unit * 10^8.
    let numerator = total as i128 * rate as i128 * 100;
    let denominator = 10i128.pow(exponent) * 100_000_000;
    ((numerator + denominator / 2) / denominator) as i64
}

/// `GET /v3/global/statements`: a cross-border merchant's statement of one day, returned
/// directly (no download step), signed over its SHA-1.
pub const GLOBAL_STATEMENTS_PATH: &str = "/v3/global/statements";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementsRequest {
    /// `yyyy-MM-dd`; sent as `yyyyMMdd`, as this endpoint wants it.
    pub date: String,
    pub mchid: String,
}

impl StatementsRequest {
    pub fn validate(&self) -> FieldResult {
        validate::bill_date("/date", &self.date)?;
        if self.mchid.is_empty() {
            return Err(FieldError::new("/mchid", "is required"));
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!(
            "{GLOBAL_STATEMENTS_PATH}?date={}&mchid={}",
            query_value(&self.date.replace('-', "")),
            query_value(&self.mchid)
        )
    }
}

/// What a statements request found: the CSV (its SHA-1 and signature checked), or no
/// statement for the day, or one still being built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementOutcome {
    Ready(Vec<u8>),
    NoStatement,
    Creating,
}
