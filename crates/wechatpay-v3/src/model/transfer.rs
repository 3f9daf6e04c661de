//! Merchant transfers (商家转账, 2025): payouts to a user's WeChat balance that the payee
//! confirms inside WeChat. Create, query by either number, cancel; the confirmation parameters
//! a page or app hands to WeChat; the `MCHTRANSFER.BILL.FINISHED` notification's resource.

use serde::{Deserialize, Serialize};

use super::encode::{path_segment, query_value};
use crate::validate::{self, FieldError, FieldResult};

pub const TRANSFER_BILLS_PATH: &str = "/v3/fund-app/mch-transfer/transfer-bills";
/// The notification sent when a transfer reaches a final state.
pub const TRANSFER_FINISHED_EVENT: &str = "MCHTRANSFER.BILL.FINISHED";
/// Transfers of this much (fen) or more must name the payee (`user_name`, encrypted).
pub const NAME_REQUIRED_FROM_FEN: i64 = 200_000;
/// The longest `transfer_remark`, in characters.
pub const REMARK_MAX_CHARS: usize = 32;

/// The report items (`info_type`) each scene needs, as WeChat fixes them.
pub const SCENE_REPORT_ITEMS: &[(&str, &[&str])] = &[
    ("1000", &["活动名称", "奖励说明"]),
    ("1002", &["补贴类型"]),
    ("1004", &["保险产品备案编号", "保险名称", "保险操作单号"]),
    ("1005", &["岗位类型", "报酬说明"]),
    ("1009", &["采购商品名称"]),
    ("1010", &["回收商品名称"]),
    ("1011", &["赔付原因"]),
    ("1013", &["公益活动名称", "公益活动备案编号"]),
];

/// The report items a scene needs; `None` for a scene this table does not know.
pub fn scene_report_items(scene: &str) -> Option<&'static [&'static str]> {
    SCENE_REPORT_ITEMS
        .iter()
        .find(|(id, _)| *id == scene)
        .map(|(_, items)| *items)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneReportInfo {
    pub info_type: String,
    pub info_content: String,
}

/// `POST /v3/fund-app/mch-transfer/transfer-bills`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TransferBillRequest {
    pub appid: String,
    pub out_bill_no: String,
    pub transfer_scene_id: String,
    pub openid: String,
    /// RSA-OAEP encrypted (see [`crate::crypto::PublicKey::encrypt_oaep`]); the request then
    /// carries `Wechatpay-Serial`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    pub transfer_amount: i64,
    pub transfer_remark: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_recv_perception: Option<String>,
    pub transfer_scene_report_infos: Vec<SceneReportInfo>,
}

impl TransferBillRequest {
    pub fn validate(&self) -> FieldResult {
        validate::chars_between("/appid", &self.appid, 1, 32)?;
        out_bill_no("/out_bill_no", &self.out_bill_no)?;
        validate::chars_between("/openid", &self.openid, 1, 64)?;
        if self.transfer_amount <= 0 {
            return Err(FieldError::new(
                "/transfer_amount",
                "must be a positive number of fen",
            ));
        }
        if self.transfer_amount >= NAME_REQUIRED_FROM_FEN && self.user_name.is_none() {
            return Err(FieldError::new(
                "/user_name",
                "is required from 2,000 yuan (200000 fen)",
            ));
        }
        validate::chars_between(
            "/transfer_remark",
            &self.transfer_remark,
            1,
            REMARK_MAX_CHARS,
        )?;
        if let Some(url) = &self.notify_url {
            validate::notify_url("/notify_url", url)?;
        }
        self.validate_scene()
    }

    fn validate_scene(&self) -> FieldResult {
        validate_scene(&self.transfer_scene_id, &self.transfer_scene_report_infos)
    }
}

/// A scene and its report items: a scene WeChat knows, its items each once and none other,
/// each content 1 to 80 characters.
pub fn validate_scene(scene_id: &str, infos: &[SceneReportInfo]) -> FieldResult {
    let field = "/transfer_scene_report_infos";
    let Some(items) = scene_report_items(scene_id) else {
        return Err(FieldError::new(
            "/transfer_scene_id",
            "is not a known scene",
        ));
    };
    let mut given: Vec<&str> = infos.iter().map(|i| i.info_type.as_str()).collect();
    let mut wanted: Vec<&str> = items.to_vec();
    given.sort_unstable();
    wanted.sort_unstable();
    if given != wanted {
        return Err(FieldError::new(
            field,
            format!("scene {scene_id} needs exactly {}", items.join(", ")),
        ));
    }
    for info in infos {
        validate::chars_between(field, &info.info_content, 1, 80)?;
    }
    Ok(())
}

/// `out_bill_no`: 1 to 32 of `0-9 A-Z a-z`.
pub fn out_bill_no(field: &str, value: &str) -> FieldResult {
    let ok = (1..=32).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(field, "must be 1 to 32 letters and digits"))
    }
}

/// Where a transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransferState {
    Accepted,
    Processing,
    WaitUserConfirm,
    Transfering,
    Success,
    Fail,
    Canceling,
    Cancelled,
}

impl TransferState {
    /// SUCCESS, FAIL and CANCELLED never change again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Success | Self::Fail | Self::Cancelled)
    }

    /// Whether the merchant may still cancel it.
    pub fn can_cancel(self) -> bool {
        !self.is_final() && self != Self::Canceling
    }
}

/// The create answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferBillAnswer {
    pub out_bill_no: String,
    pub transfer_bill_no: String,
    pub create_time: String,
    pub state: TransferState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<String>,
    /// Present while the payee must confirm (`WAIT_USER_CONFIRM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_info: Option<String>,
}

/// A transfer as queried (note WeChat's `mch_id`, not `mchid`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferBill {
    pub mch_id: String,
    pub out_bill_no: String,
    pub transfer_bill_no: String,
    pub appid: String,
    pub state: TransferState,
    pub transfer_amount: i64,
    pub transfer_remark: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openid: Option<String>,
    /// Encrypted to the merchant's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    pub create_time: String,
    pub update_time: String,
}

/// The cancel answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferCancelAnswer {
    pub out_bill_no: String,
    pub transfer_bill_no: String,
    pub state: TransferState,
    pub update_time: String,
}

/// The decrypted resource of `MCHTRANSFER.BILL.FINISHED`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferNotification {
    pub out_bill_no: String,
    pub transfer_bill_no: String,
    pub state: TransferState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mch_id: Option<String>,
    pub transfer_amount: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<String>,
    pub create_time: String,
    pub update_time: String,
}

/// `.../transfer-bills/out-bill-no/{out_bill_no}`.
pub fn transfer_by_out_bill_no_url(out_bill_no: &str) -> String {
    format!(
        "{TRANSFER_BILLS_PATH}/out-bill-no/{}",
        path_segment(out_bill_no)
    )
}

/// `.../transfer-bills/transfer-bill-no/{transfer_bill_no}`.
pub fn transfer_by_bill_no_url(transfer_bill_no: &str) -> String {
    format!(
        "{TRANSFER_BILLS_PATH}/transfer-bill-no/{}",
        path_segment(transfer_bill_no)
    )
}

/// `.../transfer-bills/out-bill-no/{out_bill_no}/cancel`.
pub fn transfer_cancel_url(out_bill_no: &str) -> String {
    format!("{}/cancel", transfer_by_out_bill_no_url(out_bill_no))
}

/// What the payee's side needs to open WeChat's confirmation: `wx.requestMerchantTransfer` in a
/// Mini Program, `WeixinJSBridge.invoke('requestMerchantTransfer', …)` in an Official Account
/// page (both take these three, field names exactly so), or the app SDK's
/// `WXOpenBusinessView` with [`app_query`](Self::app_query).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferConfirmParams {
    #[serde(rename = "mchId")]
    pub mch_id: String,
    #[serde(rename = "appId")]
    pub app_id: String,
    pub package: String,
}

impl TransferConfirmParams {
    /// The `WXOpenBusinessView` request's `businessType`.
    pub const APP_BUSINESS_TYPE: &'static str = "requestMerchantTransfer";

    /// The app SDK's `query`: `mchId=…&appId=…&package=<urlencoded>` (its `appId` is the open
    /// platform's mobile app id).
    pub fn app_query(&self) -> String {
        format!(
            "mchId={}&appId={}&package={}",
            query_value(&self.mch_id),
            query_value(&self.app_id),
            query_value(&self.package)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marketing(amount: i64) -> TransferBillRequest {
        TransferBillRequest {
            appid: "wx8888888888888888".into(),
            out_bill_no: "plfk2020042013".into(),
            transfer_scene_id: "1000".into(),
            openid: "o-MYE42l80oelYMDE34nYD456Xoy".into(),
            transfer_amount: amount,
            transfer_remark: "新会员开户有礼".into(),
            transfer_scene_report_infos: vec![
                SceneReportInfo {
                    info_type: "活动名称".into(),
                    info_content: "新会员有礼".into(),
                },
                SceneReportInfo {
                    info_type: "奖励说明".into(),
                    info_content: "注册会员抽奖一等奖".into(),
                },
            ],
            ..Default::default()
        }
    }

    fn issue(r: &TransferBillRequest) -> Option<String> {
        r.validate().err().map(|e| e.field)
    }

    #[test]
    fn transfer_requests_follow_wechats_rules() {
        assert_eq!(issue(&marketing(400)), None);
        assert_eq!(issue(&marketing(0)).as_deref(), Some("/transfer_amount"));
        assert_eq!(issue(&marketing(200_000)).as_deref(), Some("/user_name"));
        let mut r = marketing(400);
        r.out_bill_no = "has-dash".into();
        assert_eq!(issue(&r).as_deref(), Some("/out_bill_no"));
        let mut r = marketing(400);
        r.transfer_scene_report_infos.pop();
        assert_eq!(issue(&r).as_deref(), Some("/transfer_scene_report_infos"));
        let mut r = marketing(400);
        r.transfer_scene_id = "1999".into();
        assert_eq!(issue(&r).as_deref(), Some("/transfer_scene_id"));
        let mut r = marketing(400);
        r.transfer_remark = "字".repeat(33);
        assert_eq!(issue(&r).as_deref(), Some("/transfer_remark"));
        let json = serde_json::to_value(marketing(400)).unwrap();
        assert!(json.get("user_name").is_none() && json.get("notify_url").is_none());
    }

    #[test]
    fn states_and_confirmation_parameters() {
        let s: TransferState = serde_json::from_str("\"WAIT_USER_CONFIRM\"").unwrap();
        assert_eq!(s, TransferState::WaitUserConfirm);
        assert!(s.can_cancel() && !s.is_final());
        assert!(TransferState::Cancelled.is_final() && !TransferState::Canceling.can_cancel());
        let p = TransferConfirmParams {
            mch_id: "1900000109".into(),
            app_id: "wx8888888888888888".into(),
            package: "ABBQO+oYAAABAAAAAAA=".into(),
        };
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["mchId"], "1900000109");
        assert_eq!(
            p.app_query(),
            "mchId=1900000109&appId=wx8888888888888888&package=ABBQO%2BoYAAABAAAAAAA%3D"
        );
        assert_eq!(
            transfer_cancel_url("A1"),
            "/v3/fund-app/mch-transfer/transfer-bills/out-bill-no/A1/cancel"
        );
    }
}
