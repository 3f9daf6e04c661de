//! `POST /wechatpay/notify/{merchant}`: WeChat's callbacks in.
//!
//! The signature is verified (either key mode, with the clock window) and the resource
//! decrypted; the transaction is cross-checked against the stored payment (a mismatch is
//! quarantined, never applied); the transition is applied once. The answer is 204 only after
//! the change is committed; anything WeChat should retry gets a 4xx/5xx with
//! `{"code": "FAIL", "message"}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use wechatpay_v3::model::{
    RefundNotification, TRANSFER_FINISHED_EVENT, Transaction, TransferNotification,
};
use wechatpay_v3::notify::{
    self, EVENT_REFUND_ABNORMAL, EVENT_REFUND_CLOSED, EVENT_REFUND_SUCCESS,
    EVENT_TRANSACTION_SUCCESS, NotifyError, OpenedNotification,
};
use wechatpay_v3::verify::SignatureHeaders;
use wxgate_store::StoreError;

use crate::gateway::Gateway;
use crate::upstream::{NoMerchant, Upstream};

fn fail(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": "FAIL", "message": message})),
    )
        .into_response()
}

pub async fn handle(
    State(gw): State<Gateway>,
    Path(merchant_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = match receive(&gw, &merchant_id, &headers, &body).await {
        Ok(answer) | Err(answer) => answer,
    };
    let outcome = match answer.status().as_u16() {
        200..=299 => "accepted",
        400..=499 => "refused",
        _ => "failed",
    };
    gw.metrics().callback(outcome);
    answer
}

/// Opens the callback and routes it: refunds to the refund, transfers to the payout, paid
/// transactions to the payment.
async fn receive(
    gw: &Gateway,
    merchant_id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, Response> {
    let up = connection(gw, merchant_id).await?;
    let opened =
        open(&up, merchant_id, headers, body).map_err(|(status, why)| fail(status, why))?;
    let event = opened.envelope.event_type.as_str();
    if [
        EVENT_REFUND_SUCCESS,
        EVENT_REFUND_CLOSED,
        EVENT_REFUND_ABNORMAL,
    ]
    .contains(&event)
    {
        let n: RefundNotification = opened
            .resource()
            .map_err(|_| fail(StatusCode::BAD_REQUEST, "unreadable refund"))?;
        return match crate::app::refunds::apply_callback(gw, &up.merchant.mchid, merchant_id, &n)
            .await
        {
            Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
            Err(e) => {
                tracing::error!(merchant_id, out_refund_no = %n.out_refund_no, error = %e, "notify: could not apply a refund");
                Err(fail(StatusCode::INTERNAL_SERVER_ERROR, "try again"))
            }
        };
    }
    if event == TRANSFER_FINISHED_EVENT {
        return transfer(gw, &up, &opened).await;
    }
    if event != EVENT_TRANSACTION_SUCCESS {
        tracing::info!(
            merchant_id,
            event,
            "notify: event not handled yet; acknowledged"
        );
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let tx: Transaction = opened
        .resource()
        .map_err(|_| fail(StatusCode::BAD_REQUEST, "unreadable transaction"))?;
    paid(gw, &up, merchant_id, &tx, &opened.plaintext).await
}

/// A transfer that reached a final state: applied to the payout whose transfer it is.
async fn transfer(
    gw: &Gateway,
    up: &Upstream,
    opened: &OpenedNotification,
) -> Result<Response, Response> {
    let n: TransferNotification = opened
        .resource()
        .map_err(|_| fail(StatusCode::BAD_REQUEST, "unreadable transfer"))?;
    match crate::app::payouts::apply_notification(gw, &up.merchant, &n).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e) => {
            tracing::error!(merchant = %up.merchant.id, out_bill_no = %n.out_bill_no, error = %e, "notify: could not apply a transfer");
            Err(fail(StatusCode::INTERNAL_SERVER_ERROR, "try again"))
        }
    }
}

/// The merchant's open WeChat connection (its keys verify and decrypt the callback); an open
/// one is kept, so only the first callback of a merchant reads the database.
async fn connection(gw: &Gateway, merchant_id: &str) -> Result<Arc<Upstream>, Response> {
    gw.upstream(merchant_id).await.map_err(|e| {
        if e.is::<NoMerchant>() {
            return fail(StatusCode::NOT_FOUND, "unknown merchant");
        }
        if e.is::<StoreError>() {
            tracing::error!(error = %e, "notify: database");
            return fail(StatusCode::SERVICE_UNAVAILABLE, "try again");
        }
        tracing::error!(error = %e, merchant_id, "notify: cannot open the merchant's credentials");
        fail(StatusCode::INTERNAL_SERVER_ERROR, "try again")
    })
}

/// Verifies (signature and clock window, on WeChat's own clock) and decrypts the callback.
fn open(
    up: &Upstream,
    merchant_id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<OpenedNotification, (StatusCode, &'static str)> {
    let signature = SignatureHeaders::from_lookup(|n| headers.get(n).and_then(|v| v.to_str().ok()))
        .map_err(|e| {
            tracing::warn!(merchant_id, error = %e, "notify: no signature headers");
            (
                StatusCode::UNAUTHORIZED,
                "missing or malformed Wechatpay-* headers",
            )
        })?;
    let now = crate::clock::now_ms() / 1000;
    notify::open(&up.verifier, &signature, body, &up.apiv3_key, now).map_err(|e| match e {
        NotifyError::Verify(e) => {
            tracing::warn!(merchant_id, error = %e, "notify: signature refused");
            (StatusCode::UNAUTHORIZED, "signature verification failed")
        }
        e => {
            tracing::warn!(merchant_id, error = %e, "notify: unreadable callback");
            (StatusCode::BAD_REQUEST, "unreadable notification")
        }
    })
}

/// A paid transaction: applied to the payment whose order it is, or quarantined when no
/// payment has that order.
async fn paid(
    gw: &Gateway,
    up: &Upstream,
    merchant_id: &str,
    tx: &Transaction,
    plaintext: &[u8],
) -> Result<Response, Response> {
    let payment = gw
        .store()
        .payment_by_out_trade_no(merchant_id, &tx.out_trade_no)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "notify: database");
            fail(StatusCode::SERVICE_UNAVAILABLE, "try again")
        })?;
    let Some(payment) = payment else {
        tracing::error!(merchant_id, out_trade_no = %tx.out_trade_no, "notify: signed callback for an unknown order; quarantined");
        let reason = format!("no payment with out_trade_no {}", tx.out_trade_no);
        let resource = String::from_utf8_lossy(plaintext).into_owned();
        let about = crate::app::QuarantineOf::Payment;
        return match crate::app::quarantine(gw, about, (merchant_id, None), reason, resource).await
        {
            Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
            Err(_) => Err(fail(StatusCode::SERVICE_UNAVAILABLE, "try again")),
        };
    };
    match crate::app::orders::apply_paid(gw, &up.merchant, &payment, tx, "callback").await {
        Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e) => {
            tracing::error!(payment = %payment.id, error = %e, "notify: could not apply");
            Err(fail(StatusCode::INTERNAL_SERVER_ERROR, "try again"))
        }
    }
}
