//! Trade and fund-flow bills: apply for one, then download it.

use serde::{Deserialize, Serialize};

use super::encode::query_value;
use crate::validate::{self, FieldError, FieldResult};

pub const TRADE_BILL_PATH: &str = "/v3/bill/tradebill";
pub const FUND_FLOW_BILL_PATH: &str = "/v3/bill/fundflowbill";
pub const BILL_DOWNLOAD_PATH: &str = "/v3/billdownload/file";

pub const TRADE_BILL_TYPES: &[&str] = &[
    "ALL",
    "SUCCESS",
    "REFUND",
    "RECHARGE_REFUND",
    "ALL_SPECIAL",
    "SUC_SPECIAL",
    "REF_SPECIAL",
];
pub const FUND_FLOW_ACCOUNT_TYPES: &[&str] = &["BASIC", "OPERATION", "FEES"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TradeBillRequest {
    pub bill_date: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tar_type: Option<String>,
}

impl TradeBillRequest {
    pub fn validate(&self) -> FieldResult {
        validate::bill_date("/bill_date", &self.bill_date)?;
        one_of("/bill_type", self.bill_type.as_deref(), TRADE_BILL_TYPES)?;
        one_of("/tar_type", self.tar_type.as_deref(), &["GZIP"])
    }

    pub fn url(&self) -> String {
        bill_url(
            TRADE_BILL_PATH,
            &self.bill_date,
            ("bill_type", &self.bill_type),
            &self.tar_type,
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FundFlowBillRequest {
    pub bill_date: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tar_type: Option<String>,
}

impl FundFlowBillRequest {
    pub fn validate(&self) -> FieldResult {
        validate::bill_date("/bill_date", &self.bill_date)?;
        one_of(
            "/account_type",
            self.account_type.as_deref(),
            FUND_FLOW_ACCOUNT_TYPES,
        )?;
        one_of("/tar_type", self.tar_type.as_deref(), &["GZIP"])
    }

    pub fn url(&self) -> String {
        bill_url(
            FUND_FLOW_BILL_PATH,
            &self.bill_date,
            ("account_type", &self.account_type),
            &self.tar_type,
        )
    }
}

fn one_of(field: &str, value: Option<&str>, allowed: &[&str]) -> FieldResult {
    match value {
        Some(v) if !allowed.contains(&v) => Err(FieldError::new(
            field,
            format!("must be one of {}, got {v:?}", allowed.join(", ")),
        )),
        _ => Ok(()),
    }
}

fn bill_url(path: &str, date: &str, kind: (&str, &Option<String>), tar: &Option<String>) -> String {
    let mut url = format!("{path}?bill_date={}", query_value(date));
    if let Some(v) = kind.1 {
        url.push_str(&format!("&{}={}", kind.0, query_value(v)));
    }
    if let Some(v) = tar {
        url.push_str(&format!("&tar_type={}", query_value(v)));
    }
    url
}

/// The answer of either apply call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillAnswer {
    pub hash_type: String,
    pub hash_value: String,
    pub download_url: String,
}

/// What an apply call found: a bill to download, or one of the two answers that are not
/// failures of the request (an empty day, a bill still being built).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillOutcome {
    Ready(BillAnswer),
    /// `NO_STATEMENT_EXIST`: nothing moved that day (on that account).
    NoStatement,
    /// `STATEMENT_CREATING`: the bill is being built; WeChat asks to try again later.
    Creating,
}
