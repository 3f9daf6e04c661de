//! Payouts: money sent to a WeChat user's balance through WeChat's merchant transfer, which the
//! payee confirms inside WeChat.
//!
//! Never two transfers for one payout: its `out_bill_no` is fixed when it is written (with its
//! amount reserved in the ledger), and once WeChat may hold the transfer (it was sent and no
//! definite refusal came back) the transfer is queried before anything is sent again. What
//! WeChat says (answer, query, notification) is cross-checked, then applied through the
//! payout's state machine; the background round settles payouts whose notification never came.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;
use wechatpay_v3::client::ClientError;
use wechatpay_v3::error::ErrorCode as WechatCode;
use wechatpay_v3::model::{
    SceneReportInfo, TransferBill, TransferBillRequest, TransferNotification, TransferState,
};
use wxgate_domain::id::{self, MerchantId, PayoutId};
use wxgate_domain::payout::{PayoutEvent, PayoutStatus};
use wxgate_store::{
    Flag, MerchantRow, PayoutFacts, PayoutFilter, PayoutNote, PayoutRow, StoreError,
};

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gateway::Gateway;
use crate::pace::Api;
use crate::views;

/// Payouts are in CNY: WeChat's transfers move yuan.
pub const PAYOUT_CURRENCY: &str = "CNY";
/// The longest payee's name taken, in characters.
const USER_NAME_CHARS_MAX: usize = 64;

/// A transfer scene and the report items WeChat requires for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Scene {
    /// WeChat's `transfer_scene_id`, e.g. `1000` (cash marketing) or `1005` (pay for work).
    pub id: String,
    /// The scene's report items: `[{"info_type": "活动名称", "info_content": "…"}]`.
    #[schema(value_type = Vec<Object>)]
    pub report_infos: Vec<SceneReportInfo>,
}

/// A payout to make. (No `Debug`: it holds the payee's name.)
#[derive(Clone)]
pub struct NewPayout {
    /// Fen, above 0.
    pub amount: i64,
    pub currency: String,
    /// The payee, under the merchant's AppID.
    pub openid: String,
    /// Shown to the payee: 1 to 32 characters.
    pub remark: String,
    /// The payee's real name: WeChat checks it (required from 2,000 yuan).
    pub user_name: Option<String>,
    /// By default the merchant's scene.
    pub scene: Option<Scene>,
    pub notify_url: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// The merchant's own id: posting it again with the same payout answers that payout.
    pub merchant_payout_id: Option<String>,
    /// The front door it is made through: its notify_url hears that door's notification,
    /// signed with the door's credential (not the notify secret).
    pub door: Option<wxgate_domain::door::Door>,
    /// The Idempotency-Key the request came with. Without a merchant_payout_id, it is what
    /// finds the payout an earlier run of the same request wrote (that run answered a 5xx or
    /// never answered, so the key let the request run again).
    pub idempotency_key: Option<String>,
}

/// Checks a payout, writes it with its amount reserved, and sends it to WeChat: the payout as it
/// is after WeChat's answer (or `pending`, to be sent again, without one), and whether it is new
/// (not the one made before under the same merchant_payout_id).
pub async fn create(
    gw: &Gateway,
    merchant: &MerchantRow,
    new: NewPayout,
) -> ApiResult<(PayoutRow, bool)> {
    let allow_private = gw.config().webhooks_allow_private;
    super::check_notify_url(new.notify_url.as_deref(), allow_private)?;
    if new.notify_url.is_some() && new.door.is_none() {
        crate::app::payments::require_notify_secret(gw, &merchant.id).await?;
    }
    let scene = match new.scene.clone() {
        Some(s) => s,
        // Read fresh: the authenticated merchant may come from the API-key cache.
        None => default_scene(&gw.store().merchant(&merchant.id).await?)?,
    };
    check_new(&new)?;
    if let Some(existing) = existing(gw, merchant, &new).await? {
        return Ok((existing, false));
    }
    let row = new_row(gw, merchant, new, &scene);
    check_request(gw, &row)?;
    if !gw.store().insert_payout(&row).await? {
        // Another request with the same merchant_payout_id got there first.
        let existing = existing(gw, merchant, &new_of(&row)).await?;
        return Ok((existing.unwrap_or(row), false));
    }
    let after = match submit(gw, &row, Send::Fresh).await {
        Ok(after) => after,
        Err(e) => {
            tracing::warn!(payout = %row.id, error = %e, "payout submission failed; it will be queried and retried");
            gw.store()
                .payout(&row.merchant_id, &row.id)
                .await?
                .unwrap_or(row)
        }
    };
    Ok((after, true))
}

/// The payout made before under the same merchant_payout_id (or, without one, under the same
/// Idempotency-Key within the key's day), if it is the same payout; another payout under it is
/// a named refusal.
async fn existing(
    gw: &Gateway,
    merchant: &MerchantRow,
    new: &NewPayout,
) -> ApiResult<Option<PayoutRow>> {
    let store = gw.store();
    let found = match (&new.merchant_payout_id, &new.idempotency_key) {
        (Some(id), _) => store.payout_by_merchant_payout_id(&merchant.id, id).await?,
        (None, Some(key)) => {
            let since = gw.now_ms() - crate::app::idempotency::IDEMPOTENCY_KEY_KEPT_MS;
            store
                .payout_by_idempotency_key(&merchant.id, key, since)
                .await?
        }
        (None, None) => None,
    };
    let Some(p) = found else {
        return Ok(None);
    };
    let same = p.amount == new.amount && p.openid == new.openid && p.remark == new.remark;
    match (same, &new.merchant_payout_id) {
        (true, _) => Ok(Some(p)),
        (false, Some(_)) => Err(ApiError::invalid(
            ErrorCode::MerchantPayoutIdTaken,
            "merchant_payout_id",
            "this merchant_payout_id was used for another payout",
        )),
        (false, None) => Err(ApiError::new(
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was used with a different request",
        )),
    }
}

/// The fields of a written payout that tell it apart (for comparing a racing request's).
fn new_of(p: &PayoutRow) -> NewPayout {
    NewPayout {
        amount: p.amount,
        currency: p.currency.clone(),
        openid: p.openid.clone(),
        remark: p.remark.clone(),
        user_name: None,
        scene: None,
        notify_url: None,
        metadata: BTreeMap::new(),
        merchant_payout_id: p.merchant_payout_id.clone(),
        door: None,
        idempotency_key: p.idempotency_key.clone(),
    }
}

/// The merchant's default scene, or a named refusal.
fn default_scene(merchant: &Option<MerchantRow>) -> ApiResult<Scene> {
    merchant
        .as_ref()
        .and_then(|m| m.payout_scene.as_deref())
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| {
            ApiError::invalid(
                ErrorCode::PayoutSceneRequired,
                "scene",
                "name the transfer scene and its report items (or set the merchant's default scene)",
            )
        })
}

/// The gateway's own rules for a payout: CNY, and a payee's name of 1 to 64 characters.
fn check_new(new: &NewPayout) -> ApiResult<()> {
    if new.currency != PAYOUT_CURRENCY {
        return Err(ApiError::invalid(
            ErrorCode::CurrencyNotAllowed,
            "currency",
            "payouts are in CNY",
        ));
    }
    if let Some(name) = &new.user_name
        && (name.trim().is_empty() || name.chars().count() > USER_NAME_CHARS_MAX)
    {
        return Err(ApiError::invalid(
            ErrorCode::InvalidUserName,
            "user_name",
            format!("user_name must be 1 to {USER_NAME_CHARS_MAX} characters"),
        ));
    }
    Ok(())
}

/// WeChat's rules, checked before anything is written: the request the payout will send,
/// validated by the protocol crate, each issue named by its API field.
fn check_request(gw: &Gateway, row: &PayoutRow) -> ApiResult<()> {
    let scene: Scene = serde_json::from_str(&row.scene)
        .map_err(|e| ApiError::internal("reading a payout's scene", e))?;
    // Only the name's presence matters here; it is encrypted when it is sent.
    let name = row.user_name_sealed.as_ref().map(|_| "sealed".to_string());
    transfer_request(gw, row, scene, name)
        .validate()
        .map_err(|e| {
            let (code, param) = match e.field.as_str() {
                "/openid" => (ErrorCode::InvalidOpenid, "openid"),
                "/transfer_remark" => (ErrorCode::InvalidRemark, "remark"),
                "/user_name" => (ErrorCode::UserNameRequired, "user_name"),
                "/transfer_amount" => (ErrorCode::InvalidAmount, "amount"),
                _ => (ErrorCode::InvalidScene, "scene"),
            };
            ApiError::invalid(code, param, format!("{param} {}", e.issue))
        })
}

/// The transfer request of a payout: the same out_bill_no and fields on every send.
fn transfer_request(
    gw: &Gateway,
    p: &PayoutRow,
    scene: Scene,
    user_name: Option<String>,
) -> TransferBillRequest {
    TransferBillRequest {
        appid: p.appid.clone(),
        out_bill_no: p.out_bill_no.clone(),
        transfer_scene_id: scene.id,
        openid: p.openid.clone(),
        user_name,
        transfer_amount: p.amount,
        transfer_remark: p.remark.clone(),
        notify_url: Some(gw.notify_url(&p.merchant_id)),
        user_recv_perception: None,
        transfer_scene_report_infos: scene.report_infos,
    }
}

fn new_row(gw: &Gateway, merchant: &MerchantRow, new: NewPayout, scene: &Scene) -> PayoutRow {
    let now = gw.now_ms();
    let id = PayoutId::generate();
    PayoutRow {
        out_bill_no: id.out_bill_no(),
        id: id.to_string(),
        merchant_id: merchant.id.clone(),
        mchid: merchant.mchid.clone(),
        amount: new.amount,
        currency: new.currency,
        appid: merchant.appid.clone(),
        openid: new.openid,
        remark: new.remark,
        user_name_sealed: new
            .user_name
            .map(|n| gw.config().master_key.seal(n.as_bytes())),
        scene: serde_json::to_string(scene).expect("a scene serialises"),
        notify_url: new.notify_url,
        metadata: serde_json::to_string(&new.metadata).expect("a string map serialises"),
        status: PayoutStatus::Pending,
        version: 1,
        // About to be sent by this request, which holds its claim meanwhile.
        maybe_at_wechat: Flag::YES,
        transfer_bill_no: None,
        package_info: None,
        failure_code: None,
        last_error: None,
        confirmation_token: Some(id::generate("pocf")),
        created_at: now,
        updated_at: now,
        finished_at: None,
        // Should this process die before WeChat answers, the background work takes it over.
        sync_due_at: Some(now + first_wait(gw) + gw.call_window_ms()),
        sync_attempts: 0,
        claimed_until: Some(now + send_window_ms(gw)),
        merchant_payout_id: new.merchant_payout_id,
        door: new.door.map(|d| d.as_str().to_string()),
        idempotency_key: new.idempotency_key,
    }
}

fn first_wait(gw: &Gateway) -> i64 {
    gw.config()
        .sync_schedule_ms
        .first()
        .copied()
        .unwrap_or(5_000)
}

/// When to look at an open payout again: by the sync schedule, and while it waits for its
/// payee never more than the confirmation poll apart.
fn next_due(gw: &Gateway, p: &PayoutRow, status: PayoutStatus, now: i64) -> i64 {
    let schedule = &gw.config().sync_schedule_ms;
    let step = schedule
        .get((p.sync_attempts as usize).min(schedule.len().saturating_sub(1)))
        .copied()
        .unwrap_or(60_000);
    if status == PayoutStatus::AwaitingConfirmation {
        // The payee has a day, and WeChat's notification normally says when they answered. On
        // the same tiered schedule, at most the confirmation poll apart: a lost notification
        // is found soon after a quick answer, and cheaply after a slow one.
        let poll = gw.config().payout_confirmation_poll.as_millis() as i64;
        return now + step.min(poll);
    }
    now + step
}

/// Whether WeChat surely holds no transfer for the payout when it is sent: a first send, or
/// one after a definite refusal or a query that found none. Otherwise a refusal says nothing
/// about the transfer WeChat may already hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Send {
    Fresh,
    Again,
}

/// Sends the transfer (the same out_bill_no and fields every time) and applies the answer.
async fn submit(gw: &Gateway, p: &PayoutRow, send: Send) -> anyhow::Result<PayoutRow> {
    let up = gw.upstream(&p.merchant_id).await?;
    let scene: Scene = serde_json::from_str(&p.scene)?;
    let user_name = match &p.user_name_sealed {
        Some(sealed) => {
            let name = String::from_utf8(gw.config().master_key.open(sealed)?)?;
            Some(up.encrypt_sensitive(&name)?)
        }
        None => None,
    };
    let req = transfer_request(gw, p, scene, user_name);
    if !start_send(gw, p).await? {
        tracing::warn!(payout = %p.id, "payout: its claim lapsed before the send; not sent");
        return reread(gw, p).await;
    }
    match up.client(Api::Transfer).await.create_transfer(&req).await {
        Ok(a) => {
            let reported = Reported {
                out_bill_no: &a.out_bill_no,
                transfer_bill_no: &a.transfer_bill_no,
                amount: None,
                state: a.state,
                package_info: a.package_info.as_deref(),
                fail_reason: a.fail_reason.as_deref(),
            };
            apply_reported(gw, p, &reported, "submit").await
        }
        Err(e) => refused_or_unclear(gw, p, &e, send).await,
    }
}

/// After a create that got no usable answer. A fresh send's definite refusal: NOT_ENOUGH waits
/// to be sent again (WeChat holds nothing), any other fails the payout. Anything else (and any
/// refusal of a send WeChat may already hold) is unclear: queried before anything is sent again.
async fn refused_or_unclear(
    gw: &Gateway,
    p: &PayoutRow,
    e: &ClientError,
    send: Send,
) -> anyhow::Result<PayoutRow> {
    let now = gw.now_ms();
    let definite = match e {
        ClientError::Api(api) => !api.is_retryable() && api.status < 500,
        ClientError::Invalid(_) => true,
        _ => false,
    };
    let why = match e {
        _ if !definite || send == Send::Again => {
            tracing::warn!(payout = %p.id, error = %e, "payout: no usable answer from WeChat");
            "WeChat Pay did not answer clearly; the transfer is queried before anything is sent again".to_string()
        }
        ClientError::Api(api) if api.code == WechatCode::NotEnough => {
            gw.store().clear_payout_maybe_at_wechat(&p.id).await?;
            format!(
                "NOT_ENOUGH: the merchant's WeChat Pay operation account cannot cover this payout yet; it is sent again automatically ({})",
                api.message
            )
        }
        _ => return transition(gw, p, PayoutEvent::Failed, refused(e, now)).await,
    };
    let note = PayoutNote {
        maybe_at_wechat: send == Send::Again || !definite,
        transfer_bill_no: None,
        last_error: Some(&why),
        next_due: Some(next_due(gw, p, p.status, now)),
        attempts: p.sync_attempts + 1,
        now,
    };
    gw.store().note_payout_attempt(&p.id, &note).await?;
    reread(gw, p).await
}

/// What WeChat's definite refusal of a fresh send says, for the failed payout.
fn refused(e: &ClientError, now: i64) -> PayoutFacts {
    let (code, why) = match e {
        ClientError::Api(api) => (
            api.code.as_str().to_string(),
            format!("WeChat Pay refused: {} {}", api.code, api.message),
        ),
        other => (
            "INVALID_REQUEST".to_string(),
            format!("the transfer request is invalid: {other}"),
        ),
    };
    PayoutFacts {
        now,
        failure_code: Some(code),
        last_error: Some(why),
        ..Default::default()
    }
}

async fn reread(gw: &Gateway, p: &PayoutRow) -> anyhow::Result<PayoutRow> {
    Ok(gw
        .store()
        .payout(&p.merchant_id, &p.id)
        .await?
        .unwrap_or_else(|| p.clone()))
}

async fn transition(
    gw: &Gateway,
    p: &PayoutRow,
    event: PayoutEvent,
    facts: PayoutFacts,
) -> anyhow::Result<PayoutRow> {
    let next = event_status_due(gw, p, event, facts.now);
    let (_, after) = gw
        .store()
        .payout_transition(&p.merchant_id, &p.id, event, &facts, next, |row| {
            (
                id::generate("evt"),
                views::payouts::payout(row, &gw.config().public_base_url).to_string(),
            )
        })
        .await?;
    Ok(after)
}

fn event_status_due(gw: &Gateway, p: &PayoutRow, event: PayoutEvent, now: i64) -> Option<i64> {
    Some(next_due(gw, p, event.status(), now))
}

/// What WeChat reported about a transfer, from an answer, a query or a notification.
struct Reported<'a> {
    out_bill_no: &'a str,
    transfer_bill_no: &'a str,
    /// Absent from a create answer.
    amount: Option<i64>,
    state: TransferState,
    package_info: Option<&'a str>,
    fail_reason: Option<&'a str>,
}

impl<'a> From<&'a TransferBill> for Reported<'a> {
    fn from(b: &'a TransferBill) -> Self {
        Self {
            out_bill_no: &b.out_bill_no,
            transfer_bill_no: &b.transfer_bill_no,
            amount: Some(b.transfer_amount),
            state: b.state,
            package_info: None,
            fail_reason: b.fail_reason.as_deref(),
        }
    }
}

fn event_of(state: TransferState) -> Option<PayoutEvent> {
    Some(match state {
        TransferState::Accepted => PayoutEvent::Accepted,
        TransferState::WaitUserConfirm => PayoutEvent::AwaitingConfirmation,
        TransferState::Processing | TransferState::Transfering => PayoutEvent::Processing,
        TransferState::Success => PayoutEvent::Succeeded,
        TransferState::Fail => PayoutEvent::Failed,
        TransferState::Cancelled => PayoutEvent::Cancelled,
        // Being cancelled: nothing changes until WeChat says it is.
        TransferState::Canceling => return None,
    })
}

/// Why a signed report does not belong to this payout, if it does not.
fn mismatch(p: &PayoutRow, w: &Reported<'_>) -> Option<String> {
    if w.out_bill_no != p.out_bill_no {
        return Some(format!(
            "out_bill_no {} is not {}",
            w.out_bill_no, p.out_bill_no
        ));
    }
    match w.amount {
        Some(a) if a != p.amount => Some(format!("amount {a} is not {}", p.amount)),
        _ => None,
    }
}

async fn apply_reported(
    gw: &Gateway,
    p: &PayoutRow,
    w: &Reported<'_>,
    source: &str,
) -> anyhow::Result<PayoutRow> {
    if let Some(reason) = mismatch(p, w) {
        return quarantine(gw, p, w, reason, source).await;
    }
    let now = gw.now_ms();
    let failed = w.state == TransferState::Fail;
    let facts = PayoutFacts {
        now,
        transfer_bill_no: Some(w.transfer_bill_no.to_string()),
        package_info: w.package_info.map(str::to_string),
        failure_code: failed.then(|| w.fail_reason.unwrap_or("FAIL").to_string()),
        last_error: failed.then(|| failure_text(w.fail_reason)),
    };
    let Some(event) = event_of(w.state) else {
        return still_open(gw, p, w).await;
    };
    match gw
        .store()
        .payout_transition(
            &p.merchant_id,
            &p.id,
            event,
            &facts,
            event_status_due(gw, p, event, now),
            |row| {
                (
                    id::generate("evt"),
                    views::payouts::payout(row, &gw.config().public_base_url).to_string(),
                )
            },
        )
        .await
    {
        Ok((true, after)) => Ok(after),
        Ok((false, current)) if !current.status.is_final() => still_open(gw, &current, w).await,
        Ok((false, current)) => Ok(current),
        Err(StoreError::PayoutTransition(e)) => quarantine(gw, p, w, e.to_string(), source).await,
        Err(e) => Err(e.into()),
    }
}

/// A report that changes no status: the payout stays open, looked at again later.
async fn still_open(gw: &Gateway, p: &PayoutRow, w: &Reported<'_>) -> anyhow::Result<PayoutRow> {
    let now = gw.now_ms();
    let note = PayoutNote {
        maybe_at_wechat: true,
        transfer_bill_no: Some(w.transfer_bill_no),
        last_error: None,
        next_due: Some(next_due(gw, p, p.status, now)),
        attempts: p.sync_attempts + 1,
        now,
    };
    gw.store().note_payout_attempt(&p.id, &note).await?;
    reread(gw, p).await
}

/// WeChat's fail_reason in words.
fn failure_text(reason: Option<&str>) -> String {
    match reason {
        Some("OVERDUE_CLOSE") => "the payee did not confirm within 24 hours".into(),
        Some("OTHER_FAIL_REASON_TYPE") => {
            "WeChat Pay failed the transfer (the payee declined it, or another reason)".into()
        }
        Some(code) => format!("WeChat Pay failed the transfer: {code}"),
        None => "WeChat Pay failed the transfer".into(),
    }
}

/// Records a signed report that cannot be applied and stops querying the payout (a person
/// must look); the payout stays as it is.
async fn quarantine(
    gw: &Gateway,
    p: &PayoutRow,
    w: &Reported<'_>,
    reason: String,
    source: &str,
) -> anyhow::Result<PayoutRow> {
    tracing::error!(payout = %p.id, %reason, source, "signed WeChat transfer report cannot be applied; quarantined");
    let resource = json!({"out_bill_no": w.out_bill_no, "transfer_bill_no": w.transfer_bill_no, "transfer_amount": w.amount, "state": w.state});
    let reason = format!("payout {}: {reason}", p.id);
    let ids = (p.merchant_id.as_str(), None);
    super::quarantine(
        gw,
        super::QuarantineOf::Payout,
        ids,
        reason,
        resource.to_string(),
    )
    .await?;
    let note = PayoutNote {
        maybe_at_wechat: true,
        transfer_bill_no: None,
        last_error: Some("a report from WeChat could not be applied; quarantined for review"),
        next_due: None,
        attempts: p.sync_attempts,
        now: gw.now_ms(),
    };
    gw.store().note_payout_attempt(&p.id, &note).await?;
    reread(gw, p).await
}

/// A verified, decrypted `MCHTRANSFER.BILL.FINISHED`: cross-checked, then applied.
pub async fn apply_notification(
    gw: &Gateway,
    merchant: &MerchantRow,
    n: &TransferNotification,
) -> anyhow::Result<()> {
    let found = gw
        .store()
        .payout_by_out_bill_no(&merchant.id, &n.out_bill_no)
        .await?;
    let wrong_merchant = n.mch_id.as_deref().is_some_and(|m| m != merchant.mchid);
    let Some(p) = found.filter(|_| !wrong_merchant) else {
        tracing::error!(merchant = %merchant.id, out_bill_no = %n.out_bill_no, "signed transfer notification for no payout of this merchant; quarantined");
        let reason = format!(
            "no payout with out_bill_no {} for mchid {}",
            n.out_bill_no, merchant.mchid
        );
        let ids = (merchant.id.as_str(), None);
        let resource = serde_json::to_string(n)?;
        super::quarantine(gw, super::QuarantineOf::Payout, ids, reason, resource).await?;
        return Ok(());
    };
    let reported = Reported {
        out_bill_no: &n.out_bill_no,
        transfer_bill_no: &n.transfer_bill_no,
        amount: Some(n.transfer_amount),
        state: n.state,
        package_info: None,
        fail_reason: n.fail_reason.as_deref(),
    };
    apply_reported(gw, &p, &reported, "notification").await?;
    Ok(())
}

/// One background round: open payouts whose sending or query is due. How many were handled.
pub async fn sync_due(gw: &Gateway) -> anyhow::Result<usize> {
    let claim =
        |gw: Gateway, n| async move { Ok(gw.store().claim_due_payouts(gw.now_ms(), n).await?) };
    super::work_through(gw, claim, |gw, p| async move {
        if let Err(e) = sync_one(&gw, &p).await {
            tracing::warn!(payout = %p.id, error = %e, "payout sync failed; will retry");
            let now = gw.now_ms();
            let note = PayoutNote {
                maybe_at_wechat: p.maybe_at_wechat.is_set(),
                transfer_bill_no: None,
                last_error: p.last_error.as_deref(),
                next_due: Some(next_due(&gw, &p, p.status, now)),
                attempts: p.sync_attempts + 1,
                now,
            };
            let _ = gw.store().note_payout_attempt(&p.id, &note).await;
        }
        Ok(())
    })
    .await
}

/// A claimed payout: sent again when WeChat surely does not hold it; otherwise queried, and
/// sent again (the same out_bill_no) only when WeChat says it has no such transfer.
async fn sync_one(gw: &Gateway, p: &PayoutRow) -> anyhow::Result<PayoutRow> {
    if !p.maybe_at_wechat.is_set() {
        return submit(gw, p, Send::Fresh).await;
    }
    let up = gw.upstream(&p.merchant_id).await?;
    match up
        .client(Api::Transfer)
        .await
        .query_transfer(&p.out_bill_no)
        .await
    {
        // A query does not carry the package_info the payee needs; the same create, sent again,
        // answers the existing transfer with it.
        Ok(bill) if bill.state == TransferState::WaitUserConfirm && p.package_info.is_none() => {
            submit(gw, p, Send::Again).await
        }
        Ok(bill) => apply_reported(gw, p, &Reported::from(&bill), "sync").await,
        Err(ClientError::Api(e)) if e.code == WechatCode::NotFound => {
            if p.status != PayoutStatus::Pending {
                anyhow::bail!(
                    "WeChat has no transfer {} for a {} payout",
                    p.out_bill_no,
                    p.status
                );
            }
            submit(gw, p, Send::Fresh).await
        }
        Err(e) => Err(e.into()),
    }
}

/// Asks WeChat about a payout's transfer and applies the answer (reconciliation's repair): the
/// payout as it is afterwards.
pub async fn query_and_apply(gw: &Gateway, p: &PayoutRow) -> anyhow::Result<PayoutRow> {
    let up = gw.upstream(&p.merchant_id).await?;
    let bill = up
        .client(Api::Transfer)
        .await
        .query_transfer(&p.out_bill_no)
        .await?;
    apply_reported(gw, p, &Reported::from(&bill), "reconciliation").await
}

/// Before a send, from within its claim: WeChat may hold the transfer from here on, and the
/// claim is stretched over the whole send (its turn in the pace, every attempt), which starts
/// now (`updated_at`), so a cancel cannot take the payout while the send may still land.
/// `false` when the claim lapsed and another took it, or the payout ended: nothing is sent.
async fn start_send(gw: &Gateway, p: &PayoutRow) -> anyhow::Result<bool> {
    let Some(held) = p.claimed_until else {
        return Ok(false);
    };
    let now = gw.now_ms();
    let until = now + send_window_ms(gw);
    Ok(gw
        .store()
        .start_payout_send(&p.id, held, now, until)
        .await?)
}

/// Cancels a payout the payee has not confirmed: at WeChat when WeChat may hold it, here
/// otherwise. Cancelling a cancelled payout answers it again.
pub async fn cancel(gw: &Gateway, merchant_id: &MerchantId, id: &PayoutId) -> ApiResult<PayoutRow> {
    let p = get(gw, merchant_id, id).await?;
    if p.status == PayoutStatus::Cancelled {
        return Ok(p);
    }
    if !p.status.can_cancel() {
        return Err(not_cancellable(p.status));
    }
    // The claim takes only a payout that can still be cancelled, and keeps the background
    // round from sending it meanwhile.
    let Some(p) = gw.store().claim_payout(&p.id, gw.now_ms()).await? else {
        let now = get(gw, merchant_id, id).await?;
        return match now.status {
            PayoutStatus::Cancelled => Ok(now),
            PayoutStatus::Pending | PayoutStatus::AwaitingConfirmation => Err(busy()),
            other => Err(not_cancellable(other)),
        };
    };
    let after = if surely_not_at_wechat(&p) {
        cancel_here(gw, &p)
            .await
            .map_err(|e| ApiError::internal("cancelling a payout", e))
    } else {
        cancel_at_wechat(gw, &p).await
    };
    let after = match after {
        Ok(after) => after,
        Err(e) => {
            if let Some(held) = p.claimed_until {
                gw.store().release_payout_claim(&p.id, held).await?;
            }
            return Err(e);
        }
    };
    // Cancelled, or still cancelling at WeChat (its notification or the sync ends it); the
    // payee may have confirmed first.
    if after.status == PayoutStatus::Cancelled || after.status.can_cancel() {
        Ok(after)
    } else {
        Err(not_cancellable(after.status))
    }
}

fn busy() -> ApiError {
    ApiError::new(
        ErrorCode::PayoutBusy,
        "the payout is being sent to WeChat Pay right now; retry in a few seconds",
    )
}

/// How long a send may still reach WeChat after it began: its whole call, and a second to
/// spare.
fn send_window_ms(gw: &Gateway) -> i64 {
    gw.call_window_ms() + 1_000
}

/// Whether WeChat surely holds no transfer for a payout this request has claimed: still
/// pending, no transfer number known, and its last send refused outright (a send marks the
/// payout first and holds the claim while it runs, so none is on its way).
fn surely_not_at_wechat(p: &PayoutRow) -> bool {
    p.status == PayoutStatus::Pending && p.transfer_bill_no.is_none() && !p.maybe_at_wechat.is_set()
}

/// WeChat surely holds no transfer for it: cancelled here.
async fn cancel_here(gw: &Gateway, p: &PayoutRow) -> anyhow::Result<PayoutRow> {
    let facts = PayoutFacts {
        now: gw.now_ms(),
        last_error: Some("cancelled before WeChat Pay took it".into()),
        ..Default::default()
    };
    transition(gw, p, PayoutEvent::Cancelled, facts).await
}

fn not_cancellable(status: PayoutStatus) -> ApiError {
    ApiError::new(
        ErrorCode::PayoutNotCancellable,
        format!("only a payout the payee has not confirmed can be cancelled; this one is {status}"),
    )
}

/// Asks WeChat to cancel, then applies what a query says (the cancel is asynchronous, and the
/// payee may have confirmed in the meantime).
async fn cancel_at_wechat(gw: &Gateway, p: &PayoutRow) -> ApiResult<PayoutRow> {
    let up = gw
        .upstream(&p.merchant_id)
        .await
        .map_err(|e| ApiError::internal("opening the merchant's WeChat connection", e))?;
    let unclear = |e: ClientError| {
        tracing::warn!(payout = %p.id, error = %e, "payout cancel: no usable answer from WeChat");
        ApiError::new(
            ErrorCode::UpstreamUnavailable,
            "WeChat Pay did not answer in time; retry the cancel",
        )
    };
    match up
        .client(Api::Transfer)
        .await
        .cancel_transfer(&p.out_bill_no)
        .await
    {
        Ok(_) => {}
        // Not there, or past cancelling: the query below says which.
        Err(ClientError::Api(e)) if e.status < 500 && !e.is_retryable() => {}
        Err(e) => return Err(unclear(e)),
    }
    let applied = match up
        .client(Api::Transfer)
        .await
        .query_transfer(&p.out_bill_no)
        .await
    {
        Ok(bill) => apply_reported(gw, p, &Reported::from(&bill), "cancel").await,
        // WeChat has none: cancelled here, unless a send of it may still be on its way.
        Err(ClientError::Api(e)) if e.code == WechatCode::NotFound => {
            let quiet = p.updated_at + send_window_ms(gw) < gw.now_ms();
            if p.status != PayoutStatus::Pending || p.transfer_bill_no.is_some() || !quiet {
                return Err(busy());
            }
            cancel_here(gw, p).await
        }
        Err(e) => return Err(unclear(e)),
    };
    applied.map_err(|e| ApiError::internal("applying a cancelled payout", e))
}

/// The merchant's payout with this merchant_payout_id.
pub async fn by_merchant_payout_id(
    gw: &Gateway,
    merchant_id: &str,
    merchant_payout_id: &str,
) -> ApiResult<Option<PayoutRow>> {
    Ok(gw
        .store()
        .payout_by_merchant_payout_id(merchant_id, merchant_payout_id)
        .await?)
}

/// The payout behind a hosted confirmation page's token.
pub async fn by_confirmation_token(gw: &Gateway, token: &str) -> ApiResult<Option<PayoutRow>> {
    Ok(gw.store().payout_by_confirmation_token(token).await?)
}

pub async fn get(gw: &Gateway, merchant_id: &MerchantId, id: &PayoutId) -> ApiResult<PayoutRow> {
    gw.store()
        .payout(merchant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("payout"))
}

/// A page of the merchant's payouts, newest first.
pub async fn list(
    gw: &Gateway,
    merchant_id: &MerchantId,
    filter: &PayoutFilter,
    after: Option<&PayoutId>,
    limit: i64,
) -> ApiResult<Vec<PayoutRow>> {
    let before = match after {
        Some(id) => {
            let p = gw.store().payout(merchant_id, id).await?.ok_or_else(|| {
                ApiError::invalid(
                    ErrorCode::InvalidCursor,
                    "starting_after",
                    "starting_after names no payout of this merchant",
                )
            })?;
            Some((p.created_at, p.id))
        }
        None => None,
    };
    Ok(gw
        .store()
        .list_payouts(merchant_id, filter, before, limit + 1)
        .await?)
}
