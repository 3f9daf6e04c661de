//! Domestic refunds: create and query.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::encode::path_segment;
use crate::validate::{self, FieldError, FieldResult};

pub const REFUNDS_PATH: &str = "/v3/refund/domestic/refunds";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RefundAmountRequest {
    pub refund: i64,
    pub total: i64,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RefundRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    pub out_refund_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funds_account: Option<String>,
    pub amount: RefundAmountRequest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods_detail: Option<Vec<Value>>,
}

impl RefundRequest {
    pub fn validate(&self) -> FieldResult {
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
        if let Some(reason) = &self.reason {
            if reason.chars().count() > 80 {
                return Err(FieldError::new("/reason", "must be at most 80 characters"));
            }
        }
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
        if self.amount.currency != "CNY" {
            return Err(FieldError::new(
                "/amount/currency",
                format!("must be CNY, got {:?}", self.amount.currency),
            ));
        }
        Ok(())
    }
}

/// `status` of a refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum RefundStatus {
    Success,
    Closed,
    #[default]
    Processing,
    Abnormal,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::Closed => "CLOSED",
            Self::Processing => "PROCESSING",
            Self::Abnormal => "ABNORMAL",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RefundAmount {
    pub total: i64,
    pub refund: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_refund: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_refund: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount_refund: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<Value>>,
}

/// A refund as create and query answer it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Refund {
    pub refund_id: String,
    pub out_refund_no: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_received_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    pub status: RefundStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funds_account: Option<String>,
    pub amount: RefundAmount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_detail: Option<Vec<Value>>,
}

/// The decrypted resource of a `REFUND.*` callback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RefundNotification {
    pub mchid: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub out_refund_no: String,
    pub refund_id: String,
    pub refund_status: RefundStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_received_account: Option<String>,
    pub amount: RefundAmount,
}

/// `/v3/refund/domestic/refunds/{out_refund_no}`
pub fn refund_query_url(out_refund_no: &str) -> String {
    format!("{REFUNDS_PATH}/{}", path_segment(out_refund_no))
}
