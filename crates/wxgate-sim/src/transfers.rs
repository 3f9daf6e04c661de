//! Merchant transfers (商家转账): create, query, cancel, the payee's confirmation and the
//! `MCHTRANSFER.BILL.FINISHED` notification, paid from each merchant's operation account.
//!
//! A new transfer debits the operation account (`403 NOT_ENOUGH` when it is short) and waits
//! for the payee (`WAIT_USER_CONFIRM` with a `package_info`). `POST /sim/payee/confirm` plays
//! the payee: `confirm` makes it `SUCCESS`, `decline` makes it `FAIL`; a payee who does nothing
//! for `CONFIRM_WINDOW_SECS` (simulator clock) leaves it `FAIL` with `OVERDUE_CLOSE`. A cancel
//! before confirmation answers `CANCELING` and ends `CANCELLED`. A transfer that fails or is
//! cancelled returns its amount to the account. `user_name`, when sent, is decrypted with the
//! platform key the request's `Wechatpay-Serial` names.

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use wechatpay_v3::model::{
    TRANSFER_FINISHED_EVENT, TransferBill, TransferBillAnswer, TransferBillRequest,
    TransferCancelAnswer, TransferNotification, TransferState,
};

use crate::callbacks::{self, CallbackJob};
use crate::formats::{digits, rfc3339_cst};
use crate::sim::Sim;
use crate::state::State;
pub use crate::state::{OPERATION_OPENING_FEN, TransferRecord};
use crate::wire::{Answer, Request, WxError, json_body};

/// WeChat's default bounds of one transfer: 0.10 to 200.00 yuan.
pub const MIN_TRANSFER_FEN: i64 = 10;
pub const MAX_TRANSFER_FEN: i64 = 20_000;
/// How long the payee has to confirm.
pub const CONFIRM_WINDOW_SECS: i64 = 24 * 3600;

impl TransferRecord {
    fn view(&self) -> TransferBill {
        TransferBill {
            mch_id: self.mchid.clone(),
            out_bill_no: self.out_bill_no.clone(),
            transfer_bill_no: self.transfer_bill_no.clone(),
            appid: self.appid.clone(),
            state: self.state,
            transfer_amount: self.amount,
            transfer_remark: self.remark.clone(),
            fail_reason: self.fail_reason.clone(),
            openid: Some(self.openid.clone()),
            user_name: None,
            create_time: rfc3339_cst(self.created_at),
            update_time: rfc3339_cst(self.updated_at),
        }
    }

    fn answer(&self) -> TransferBillAnswer {
        TransferBillAnswer {
            out_bill_no: self.out_bill_no.clone(),
            transfer_bill_no: self.transfer_bill_no.clone(),
            create_time: rfc3339_cst(self.created_at),
            state: self.state,
            fail_reason: self.fail_reason.clone(),
            package_info: (self.state == TransferState::WaitUserConfirm)
                .then(|| self.package_info.clone())
                .flatten(),
        }
    }
}

fn invalid(message: &str) -> WxError {
    WxError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
}

fn param(message: &str) -> WxError {
    WxError::new(StatusCode::BAD_REQUEST, "PARAM_ERROR", message)
}

/// The payee's name, decrypted with the platform key `Wechatpay-Serial` names.
fn open_user_name(req: &Request<'_>, sealed: &str) -> Result<String, WxError> {
    let m = req.merchant;
    let key = match req.serial.as_deref() {
        None => {
            return Err(param(
                "HTTP header缺少微信支付平台证书序列号(Wechatpay-Serial)",
            ));
        }
        Some(s) if s == m.platform_public_key_id => &m.platform_public_key,
        Some(s) if s == m.platform_certificate.serial_no => &m.platform_cert_key,
        Some(_) => return Err(param("平台证书序列号Wechatpay-Serial错误")),
    };
    let plain = key
        .decrypt_oaep(sealed)
        .map_err(|_| param("平台私钥解密失败"))?;
    String::from_utf8(plain).map_err(|_| param("请确认待处理的消息是否为加密后的密文"))
}

pub fn create(req: &Request<'_>) -> Result<Answer, WxError> {
    let body: TransferBillRequest = json_body(req.body)?;
    body.validate().map_err(|e| WxError::param(e, "body"))?;
    if body.appid != req.merchant.appid {
        return Err(invalid("Openid格式错误或者不属于商家公众账号"));
    }
    let user_name = match &body.user_name {
        Some(sealed) => Some(open_user_name(req, sealed)?),
        None => None,
    };
    if !(MIN_TRANSFER_FEN..=MAX_TRANSFER_FEN).contains(&body.transfer_amount) {
        return Err(invalid("超过单笔转账上下限，核实产品设置是否准确"));
    }
    let fingerprint = serde_json::to_string(&json!([
        body.openid,
        body.transfer_amount,
        body.transfer_remark,
        body.transfer_scene_id,
        user_name
    ]))
    .expect("serialisable");
    let now = req.sim.now();
    let mut state = req.sim.state();
    let key = State::order_key(&req.merchant.mchid, &body.out_bill_no);
    if let Some(existing) = state.transfers.get(&key) {
        if existing.fingerprint != fingerprint {
            return Err(invalid("单号已存在但信息不一致，请查单后比较确认"));
        }
        return Ok(Answer::Json(json!(existing.answer())));
    }
    let balance = state.operation_balance(&req.merchant.mchid);
    if *balance < body.transfer_amount {
        return Err(WxError::new(
            StatusCode::FORBIDDEN,
            "NOT_ENOUGH",
            "商户运营账户资金不足，充值后可以原单号发起重试，请勿更换商户单号",
        ));
    }
    *balance -= body.transfer_amount;
    let record = TransferRecord {
        mchid: req.merchant.mchid.clone(),
        appid: body.appid,
        out_bill_no: body.out_bill_no,
        transfer_bill_no: format!("13300{}", digits(29)),
        openid: body.openid,
        user_name,
        amount: body.transfer_amount,
        remark: body.transfer_remark,
        notify_url: body.notify_url,
        state: TransferState::WaitUserConfirm,
        fail_reason: None,
        package_info: Some(format!("ABBQO+oYAAABAAAAAAAv{}", wechatpay_v3::nonce(48))),
        fingerprint,
        created_at: now,
        updated_at: now,
    };
    let answer = record.answer();
    state.insert_transfer(record);
    Ok(Answer::Json(json!(answer)))
}

/// `/v3/fund-app/mch-transfer/transfer-bills/…`, by what follows `transfer-bills`; `None` for
/// no such route.
pub fn route(
    req: &Request<'_>,
    method: &axum::http::Method,
    rest: &[&str],
) -> Option<Result<Answer, WxError>> {
    let (get, post) = (
        method == axum::http::Method::GET,
        method == axum::http::Method::POST,
    );
    Some(match rest {
        [] if post => create(req),
        ["out-bill-no", no] if get => query(req, By::OutBillNo(no)),
        ["transfer-bill-no", no] if get => query(req, By::TransferBillNo(no)),
        ["out-bill-no", no, "cancel"] if post => cancel(req, no),
        _ => return None,
    })
}

pub enum By<'a> {
    OutBillNo(&'a str),
    TransferBillNo(&'a str),
}

pub fn query(req: &Request<'_>, by: By<'_>) -> Result<Answer, WxError> {
    expire_due(req.sim);
    let state = req.sim.state();
    let mchid = &req.merchant.mchid;
    let found = match by {
        By::OutBillNo(no) => state.transfers.get(&State::order_key(mchid, no)),
        By::TransferBillNo(no) => state
            .by_transfer_bill_no
            .get(no)
            .and_then(|k| state.transfers.get(k))
            .filter(|t| &t.mchid == mchid),
    };
    let t = found.ok_or_else(|| WxError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "记录不存在"))?;
    Ok(Answer::Json(json!(t.view())))
}

pub fn cancel(req: &Request<'_>, out_bill_no: &str) -> Result<Answer, WxError> {
    expire_due(req.sim);
    let key = State::order_key(&req.merchant.mchid, out_bill_no);
    let current = req.sim.state().transfers.get(&key).map(|t| t.state);
    match current {
        None => Err(WxError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "记录不存在",
        )),
        Some(s) if !s.can_cancel() => Err(invalid("转账单据状态不允许撤销")),
        Some(_) => {
            let now = req.sim.now();
            let canceling = {
                let state = req.sim.state();
                let t = &state.transfers[&key];
                TransferCancelAnswer {
                    out_bill_no: t.out_bill_no.clone(),
                    transfer_bill_no: t.transfer_bill_no.clone(),
                    state: TransferState::Canceling,
                    update_time: rfc3339_cst(now),
                }
            };
            finish(req.sim, &key, TransferState::Cancelled, None);
            Ok(Answer::Json(json!(canceling)))
        }
    }
}

/// Ends a transfer in a final state: a failed or cancelled one returns its amount to the
/// operation account; the merchant is notified.
pub fn finish(sim: &Sim, key: &(String, String), to: TransferState, reason: Option<&str>) {
    let now = sim.now();
    let done = {
        let mut state = sim.state();
        let Some(t) = state.transfers.get_mut(key).filter(|t| !t.state.is_final()) else {
            return;
        };
        t.state = to;
        t.fail_reason = reason.map(str::to_string);
        t.updated_at = now;
        let done = t.clone();
        if to != TransferState::Success {
            *state.operation_balance(&done.mchid) += done.amount;
        }
        state.dirty = true;
        done
    };
    notify(sim, &done);
}

fn notify(sim: &Sim, t: &TransferRecord) {
    let Some(url) = t.notify_url.clone() else {
        return;
    };
    let resource = TransferNotification {
        out_bill_no: t.out_bill_no.clone(),
        transfer_bill_no: t.transfer_bill_no.clone(),
        state: t.state,
        mch_id: Some(t.mchid.clone()),
        transfer_amount: t.amount,
        openid: Some(t.openid.clone()),
        fail_reason: t.fail_reason.clone(),
        create_time: rfc3339_cst(t.created_at),
        update_time: rfc3339_cst(t.updated_at),
    };
    callbacks::send(
        sim,
        CallbackJob {
            mchid: t.mchid.clone(),
            url,
            event_type: TRANSFER_FINISHED_EVENT,
            summary: "商家转账单据终态通知",
            original_type: "mch_payment",
            plaintext: serde_json::to_vec(&resource).expect("serialisable"),
            out_trade_no: t.out_bill_no.clone(),
            out_refund_no: None,
        },
    );
}

/// Fails every transfer whose payee let the confirmation window pass.
pub fn expire_due(sim: &Sim) {
    let now = sim.now();
    let due: Vec<(String, String)> = sim
        .state()
        .transfers
        .iter()
        .filter(|(_, t)| t.state == TransferState::WaitUserConfirm)
        .filter(|(_, t)| now >= t.created_at + CONFIRM_WINDOW_SECS)
        .map(|(k, _)| k.clone())
        .collect();
    for key in due {
        finish(sim, &key, TransferState::Fail, Some("OVERDUE_CLOSE"));
    }
}

/// The payee's answer to a transfer, by its `package_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayeeOutcome {
    Confirm,
    Decline,
}

/// `POST /sim/payee/confirm`: what the payee does on WeChat's confirmation page. The answer
/// is the transfer as queried.
pub fn payee_answers(
    sim: &Sim,
    package_info: &str,
    outcome: PayeeOutcome,
) -> Result<TransferBill, String> {
    expire_due(sim);
    let key = sim
        .state()
        .by_package
        .get(package_info)
        .cloned()
        .ok_or("转账单号错误: no transfer has this package_info")?;
    let current = sim.state().transfers[&key].state;
    if current != TransferState::WaitUserConfirm {
        return Err(format!(
            "the transfer is {current:?}, not waiting for the payee"
        ));
    }
    match outcome {
        PayeeOutcome::Confirm => finish(sim, &key, TransferState::Success, None),
        PayeeOutcome::Decline => finish(
            sim,
            &key,
            TransferState::Fail,
            Some("OTHER_FAIL_REASON_TYPE"),
        ),
    }
    Ok(sim.state().transfers[&key].view())
}
