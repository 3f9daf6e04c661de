//! A payout as the API shows it, with what the payee's side needs while it awaits
//! confirmation. The payee's name never appears (only whether one was given).

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::ToSchema;
use wechatpay_v3::model::TransferConfirmParams;
use wxgate_domain::payout::{CONFIRMATION_WINDOW_MS, PayoutStatus};
use wxgate_store::PayoutRow;

use super::rfc3339;

/// The hosted confirmation page of a payout (its token is the payout's to share).
pub fn confirmation_url(base_url: &str, token: &str) -> String {
    format!("{}/payouts/confirm/{token}", base_url.trim_end_matches('/'))
}

#[derive(Serialize, ToSchema)]
#[schema(as = Payout)]
pub struct PayoutView<'a> {
    id: &'a str,
    #[schema(example = "payout")]
    object: &'static str,
    merchant_payout_id: Option<&'a str>,
    amount: i64,
    currency: &'a str,
    openid: &'a str,
    remark: &'a str,
    user_name_provided: bool,
    #[schema(value_type = Object)]
    scene: Option<&'a RawValue>,
    notify_url: Option<&'a str>,
    #[schema(value_type = Object)]
    metadata: Option<&'a RawValue>,
    /// pending, awaiting_confirmation, processing, succeeded, failed, cancelled
    status: &'a str,
    version: i64,
    /// WeChat's fail_reason when it failed.
    failure_code: Option<&'a str>,
    /// Why it failed, or why a pending payout waits, in words.
    last_error: Option<&'a str>,
    /// While the payee must confirm: what the merchant's page or app hands to WeChat.
    confirmation: Option<ConfirmationView>,
    wechat: PayoutWechatView<'a>,
    created_at: String,
    updated_at: String,
    finished_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct PayoutWechatView<'a> {
    out_bill_no: &'a str,
    transfer_bill_no: Option<&'a str>,
}

/// The payee's confirmation: `wx.requestMerchantTransfer` in a Mini Program or
/// `WeixinJSBridge.invoke('requestMerchantTransfer', …)` in an Official Account page take
/// `jsapi` as is; the app SDK's `WXOpenBusinessView` takes `business_type` and `app_query`;
/// or send the payee to `hosted_confirmation_url`.
#[derive(Serialize, ToSchema)]
struct ConfirmationView {
    package_info: String,
    mch_id: String,
    app_id: String,
    #[schema(value_type = Object)]
    jsapi: TransferConfirmParams,
    business_type: &'static str,
    app_query: String,
    hosted_confirmation_url: Option<String>,
    /// WeChat fails the transfer if the payee has not confirmed by then.
    expires_at: String,
}

fn raw(text: &str) -> Option<&RawValue> {
    serde_json::from_str(text).ok()
}

impl<'a> PayoutView<'a> {
    pub fn new(p: &'a PayoutRow, base_url: &str) -> Self {
        Self {
            id: &p.id,
            object: "payout",
            merchant_payout_id: p.merchant_payout_id.as_deref(),
            amount: p.amount,
            currency: &p.currency,
            openid: &p.openid,
            remark: &p.remark,
            user_name_provided: p.user_name_sealed.is_some(),
            scene: raw(&p.scene),
            notify_url: p.notify_url.as_deref(),
            metadata: raw(&p.metadata),
            status: p.status.as_str(),
            version: p.version,
            failure_code: p.failure_code.as_deref(),
            last_error: p.last_error.as_deref(),
            confirmation: confirmation(p, base_url),
            wechat: PayoutWechatView {
                out_bill_no: &p.out_bill_no,
                transfer_bill_no: p.transfer_bill_no.as_deref(),
            },
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
            finished_at: p.finished_at.map(rfc3339),
        }
    }
}

fn confirmation(p: &PayoutRow, base_url: &str) -> Option<ConfirmationView> {
    if p.status != PayoutStatus::AwaitingConfirmation {
        return None;
    }
    let package = p.package_info.clone()?;
    let params = TransferConfirmParams {
        mch_id: p.mchid.clone(),
        app_id: p.appid.clone(),
        package: package.clone(),
    };
    Some(ConfirmationView {
        app_query: params.app_query(),
        package_info: package,
        mch_id: p.mchid.clone(),
        app_id: p.appid.clone(),
        jsapi: params,
        business_type: TransferConfirmParams::APP_BUSINESS_TYPE,
        hosted_confirmation_url: p
            .confirmation_token
            .as_deref()
            .map(|t| confirmation_url(base_url, t)),
        expires_at: rfc3339(p.created_at + CONFIRMATION_WINDOW_MS),
    })
}

pub fn payout(p: &PayoutRow, base_url: &str) -> Value {
    serde_json::to_value(PayoutView::new(p, base_url)).expect("a payout view serialises")
}
