//! `POST /wechatpay/notify/{merchant}`: WeChat's callbacks in.
//!
//! The signature is verified (either key mode, with the clock window) and the resource
//! decrypted; the transaction is cross-checked against the stored payment (a mismatch is
//! quarantined, never applied); the transition is applied once. The answer is 204 only after
//! the change is committed; anything WeChat should retry gets a 4xx/5xx with
//! `{"code": "FAIL", "message"}`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use wechatpay_v3::model::{RefundNotification, Transaction};
use wechatpay_v3::notify::{
    self, EVENT_REFUND_ABNORMAL, EVENT_REFUND_CLOSED, EVENT_REFUND_SUCCESS,
    EVENT_TRANSACTION_SUCCESS, NotifyError,
};
use wechatpay_v3::verify::SignatureHeaders;
use wxgate_store::QuarantineRow;

use crate::gateway::Gateway;
use crate::sync;

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
    match gw.store().merchant(&merchant_id).await {
        Ok(Some(_)) => {}
        Ok(None) => return fail(StatusCode::NOT_FOUND, "unknown merchant"),
        Err(e) => {
            tracing::error!(error = %e, "notify: database");
            return fail(StatusCode::SERVICE_UNAVAILABLE, "try again");
        }
    }
    let up = match gw.upstream(&merchant_id).await {
        Ok(up) => up,
        Err(e) => {
            tracing::error!(error = %e, merchant_id, "notify: cannot open the merchant's credentials");
            return fail(StatusCode::INTERNAL_SERVER_ERROR, "try again");
        }
    };
    let signature =
        match SignatureHeaders::from_lookup(|n| headers.get(n).and_then(|v| v.to_str().ok())) {
            Ok(s) => s,
            Err(e) => return fail(StatusCode::UNAUTHORIZED, &e.to_string()),
        };
    let opened = match notify::open(
        &up.verifier,
        &signature,
        &body,
        &up.apiv3_key,
        crate::clock::now_ms() / 1000,
    ) {
        Ok(o) => o,
        Err(NotifyError::Verify(e)) => {
            tracing::warn!(merchant_id, error = %e, "notify: signature refused");
            return fail(StatusCode::UNAUTHORIZED, "signature verification failed");
        }
        Err(e) => {
            tracing::warn!(merchant_id, error = %e, "notify: unreadable callback");
            return fail(StatusCode::BAD_REQUEST, "unreadable notification");
        }
    };
    if [
        EVENT_REFUND_SUCCESS,
        EVENT_REFUND_CLOSED,
        EVENT_REFUND_ABNORMAL,
    ]
    .contains(&opened.envelope.event_type.as_str())
    {
        let n: RefundNotification = match opened.resource() {
            Ok(n) => n,
            Err(_) => return fail(StatusCode::BAD_REQUEST, "unreadable refund"),
        };
        return match crate::refunds::apply_callback(&gw, &up.merchant.mchid, &merchant_id, &n).await
        {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => {
                tracing::error!(merchant_id, out_refund_no = %n.out_refund_no, error = %e, "notify: could not apply a refund");
                fail(StatusCode::INTERNAL_SERVER_ERROR, "try again")
            }
        };
    }
    if opened.envelope.event_type != EVENT_TRANSACTION_SUCCESS {
        tracing::info!(merchant_id, event = %opened.envelope.event_type, "notify: event not handled yet; acknowledged");
        return StatusCode::NO_CONTENT.into_response();
    }
    let tx: Transaction = match opened.resource() {
        Ok(t) => t,
        Err(_) => return fail(StatusCode::BAD_REQUEST, "unreadable transaction"),
    };
    let payment = match gw
        .store()
        .payment_by_out_trade_no(&merchant_id, &tx.out_trade_no)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "notify: database");
            return fail(StatusCode::SERVICE_UNAVAILABLE, "try again");
        }
    };
    let Some(payment) = payment else {
        tracing::error!(merchant_id, out_trade_no = %tx.out_trade_no, "notify: signed callback for an unknown order; quarantined");
        let row = QuarantineRow {
            id: wxgate_domain::id::generate("qtn"),
            merchant_id: merchant_id.clone(),
            payment_id: None,
            reason: format!("no payment with out_trade_no {}", tx.out_trade_no),
            resource: String::from_utf8_lossy(&opened.plaintext).into_owned(),
            received_at: gw.now_ms(),
        };
        return match gw.store().quarantine(&row).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(_) => fail(StatusCode::SERVICE_UNAVAILABLE, "try again"),
        };
    };
    match sync::apply_paid(&gw, &up.merchant, &payment, &tx, "callback").await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            tracing::error!(payment = %payment.id, error = %e, "notify: could not apply");
            fail(StatusCode::INTERNAL_SERVER_ERROR, "try again")
        }
    }
}
