//! Domestic payments: prepay (Native, JSAPI / Mini Program, APP, H5), query and close.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::encode::{path_segment, query_value};
use crate::validate::{self, FieldResult};

/// The four ways to start a domestic payment, each its own prepay endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrepayKind {
    Native,
    Jsapi,
    App,
    H5,
}

impl PrepayKind {
    pub fn path(self) -> &'static str {
        match self {
            Self::Native => "/v3/pay/transactions/native",
            Self::Jsapi => "/v3/pay/transactions/jsapi",
            Self::App => "/v3/pay/transactions/app",
            Self::H5 => "/v3/pay/transactions/h5",
        }
    }

    /// The `trade_type` a paid order reports.
    pub fn trade_type(self) -> &'static str {
        match self {
            Self::Native => "NATIVE",
            Self::Jsapi => "JSAPI",
            Self::App => "APP",
            Self::H5 => "MWEB",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Amount {
    pub total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Payer {
    pub openid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct H5Info {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SceneInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_client_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_info: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h5_info: Option<H5Info>,
}

/// The body of every domestic prepay call. `payer` is for JSAPI, `scene_info.h5_info` for H5.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PrepayRequest {
    pub appid: String,
    pub mchid: String,
    pub description: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    pub notify_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goods_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_fapiao: Option<bool>,
    pub amount: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Payer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<SceneInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_info: Option<Value>,
}

impl PrepayRequest {
    /// WeChat's field rules for `kind`, first failure first.
    pub fn validate(&self, kind: PrepayKind) -> FieldResult {
        validate::id32("/appid", &self.appid)?;
        validate::id32("/mchid", &self.mchid)?;
        validate::description("/description", &self.description)?;
        validate::out_trade_no("/out_trade_no", &self.out_trade_no)?;
        if let Some(t) = &self.time_expire {
            validate::rfc3339("/time_expire", t)?;
        }
        if let Some(a) = &self.attach {
            validate::attach("/attach", a, 128)?;
        }
        validate::notify_url("/notify_url", &self.notify_url)?;
        validate::positive_amount("/amount/total", self.amount.total)?;
        if let Some(c) = &self.amount.currency
            && c != "CNY"
        {
            return Err(validate::FieldError::new(
                "/amount/currency",
                format!("must be CNY for a domestic payment, got {c:?}"),
            ));
        }
        match (kind, &self.payer) {
            (PrepayKind::Jsapi, None) => {
                return Err(validate::FieldError::new(
                    "/payer/openid",
                    "is required for JSAPI",
                ));
            }
            (_, Some(payer)) => validate::openid("/payer/openid", &payer.openid)?,
            _ => {}
        }
        if let Some(ip) = self
            .scene_info
            .as_ref()
            .and_then(|s| s.payer_client_ip.as_ref())
        {
            validate::client_ip("/scene_info/payer_client_ip", ip)?;
        }
        if kind == PrepayKind::H5 {
            let scene = self.scene_info.as_ref();
            if scene.and_then(|s| s.payer_client_ip.as_ref()).is_none() {
                return Err(validate::FieldError::new(
                    "/scene_info/payer_client_ip",
                    "is required for H5",
                ));
            }
            match scene.and_then(|s| s.h5_info.as_ref()) {
                None => {
                    return Err(validate::FieldError::new(
                        "/scene_info/h5_info/type",
                        "is required for H5",
                    ));
                }
                Some(h5) if !matches!(h5.kind.as_str(), "iOS" | "Android" | "Wap") => {
                    return Err(validate::FieldError::new(
                        "/scene_info/h5_info/type",
                        format!("must be iOS, Android or Wap, got {:?}", h5.kind),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// The answer of Native prepay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativePrepayAnswer {
    pub code_url: String,
}

/// The answer of JSAPI and APP prepay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepayIdAnswer {
    pub prepay_id: String,
}

/// The answer of H5 prepay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct H5PrepayAnswer {
    pub h5_url: String,
}

/// `trade_state` of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TradeState {
    Success,
    Refund,
    Notpay,
    Closed,
    Revoked,
    Userpaying,
    Payerror,
    Accept,
}

impl TradeState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::Refund => "REFUND",
            Self::Notpay => "NOTPAY",
            Self::Closed => "CLOSED",
            Self::Revoked => "REVOKED",
            Self::Userpaying => "USERPAYING",
            Self::Payerror => "PAYERROR",
            Self::Accept => "ACCEPT",
        }
    }
}

/// Cross-border answers add the rate the payer was charged at (`rate` scaled by 10^8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeRate {
    #[serde(rename = "type")]
    pub kind: String,
    pub rate: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TransactionAmount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_rate: Option<ExchangeRate>,
}

/// An order as query answers and payment callbacks show it. An unpaid order has no
/// `transaction_id`, `payer` or `success_time`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Transaction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mchid: Option<String>,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_type: Option<String>,
    pub trade_state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_state_desc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Payer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<TransactionAmount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_detail: Option<Vec<Value>>,
    /// Cross-border only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_category_code: Option<String>,
}

impl Transaction {
    /// The parsed `trade_state`, `None` for a state this crate does not know.
    pub fn state(&self) -> Option<TradeState> {
        serde_json::from_value(Value::String(self.trade_state.clone())).ok()
    }
}

/// The body of a close call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseRequest {
    pub mchid: String,
}

/// `/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid=...`
pub fn query_by_out_trade_no_url(out_trade_no: &str, mchid: &str) -> String {
    format!(
        "/v3/pay/transactions/out-trade-no/{}?mchid={}",
        path_segment(out_trade_no),
        query_value(mchid)
    )
}

/// `/v3/pay/transactions/id/{transaction_id}?mchid=...`
pub fn query_by_transaction_id_url(transaction_id: &str, mchid: &str) -> String {
    format!(
        "/v3/pay/transactions/id/{}?mchid={}",
        path_segment(transaction_id),
        query_value(mchid)
    )
}

/// `/v3/pay/transactions/out-trade-no/{out_trade_no}/close`
pub fn close_url(out_trade_no: &str) -> String {
    format!(
        "/v3/pay/transactions/out-trade-no/{}/close",
        path_segment(out_trade_no)
    )
}
