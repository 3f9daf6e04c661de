//! The `/v3/...` endpoints, with WeChat's rules: `Authorization` verified over the raw
//! request, field checks with WeChat's status and error codes, prepay idempotency, every 2xx
//! answer signed (204 included), error answers unsigned.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};
use wechatpay_v3::auth::Authorization;
use wechatpay_v3::model::{
    CertificateEntry, CertificatesAnswer, CloseRequest, EncryptedCertificate, GlobalKind,
    GlobalPrepayRequest, GlobalRefundRequest, PrepayKind, PrepayRequest, RefundRequest,
};
use wechatpay_v3::validate::FieldError;

use crate::faults::{RefundOutcome, roll};
use crate::formats::{cst_compact, digits, rfc3339_cst};
use crate::merchant::Merchant;
use crate::ops;
use crate::sim::Sim;
use crate::state::{
    Family, Order, OrderState, RefundRecord, RefundState, State as SimState, coupon_share,
};
use crate::wire::{
    Answer, DEFAULT_ORDER_LIFETIME_SECS, PREPAY_VALID_SECS, REFUND_WINDOW_SECS,
    REFUNDS_PER_ORDER_MAX, Request, WxError, json_body, request_id,
};

pub fn routes() -> Router<Sim> {
    Router::new().route("/v3/{*rest}", any(v3))
}

async fn v3(
    State(sim): State<Sim>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let merchant = match authenticate(&sim, &method, path_and_query, &headers, &body) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let faults = sim.state().faults_for(Some(&merchant.mchid));
    if faults.latency_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(faults.latency_ms)).await;
    }
    if let Some(refused) = refused_by_fault(&faults) {
        return refused.into_response();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let request = Request {
        sim: &sim,
        merchant: &merchant,
        query: url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect(),
        body: &body,
        faults: &faults,
        base: format!("http://{host}"),
        serial: headers
            .get("Wechatpay-Serial")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    let result = dispatch(&request, &method, uri.path());
    if roll(faults.timeout_after_commit_rate) {
        tokio::time::sleep(std::time::Duration::from_millis(faults.hang_ms())).await;
    }
    match result {
        Err(e) => e.into_response(),
        Ok(Answer::File {
            bytes,
            content_type,
        }) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(bytes))
            .expect("valid response"),
        Ok(answer) => {
            let request_serial = headers
                .get("Wechatpay-Serial")
                .and_then(|v| v.to_str().ok());
            signed(
                &merchant,
                request_serial,
                answer,
                roll(faults.signature_probe_rate),
            )
        }
    }
}

/// A 500 or 429 that the fault settings throw instead of doing anything.
fn refused_by_fault(faults: &crate::faults::Faults) -> Option<WxError> {
    if roll(faults.error_500_rate) {
        return Some(WxError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SYSTEM_ERROR",
            "系统错误",
        ));
    }
    roll(faults.error_429_rate).then(|| {
        WxError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "FREQUENCY_LIMITED",
            "请求频率超过限制",
        )
    })
}

fn signed(
    merchant: &Merchant,
    request_serial: Option<&str>,
    answer: Answer,
    probe: bool,
) -> Response {
    let (status, body, digest) = match answer {
        Answer::Json(v) => (
            StatusCode::OK,
            serde_json::to_vec(&v).expect("serialisable"),
            None,
        ),
        Answer::NoContent => (StatusCode::NO_CONTENT, Vec::new(), None),
        Answer::Statement(csv) => {
            let digest = wechatpay_v3::bill::sha1_hex(&csv);
            (StatusCode::OK, csv, Some(digest))
        }
        Answer::File { .. } => unreachable!("files are not signed"),
    };
    // A statement is signed over its digest, in place of the body.
    let signed_over = match &digest {
        Some(d) => wechatpay_v3::bill::statement::digest_body(d),
        None => body.clone(),
    };
    let sig = merchant.sign_body(
        &signed_over,
        request_serial,
        crate::formats::lower_hex(32),
        probe,
    );
    let mut builder = Response::builder()
        .status(status)
        .header("Wechatpay-Timestamp", sig.timestamp)
        .header("Wechatpay-Nonce", sig.nonce)
        .header("Wechatpay-Serial", sig.serial)
        .header("Wechatpay-Signature", sig.signature)
        .header("Wechatpay-Signature-Type", wechatpay_v3::SIGNATURE_SCHEME)
        .header("Request-ID", request_id());
    if let Some(d) = &digest {
        builder = builder.header(header::CONTENT_TYPE, "text/plain").header(
            wechatpay_v3::bill::statement::HEADER_STATEMENT_SHA1,
            d.as_str(),
        );
    } else if status != StatusCode::NO_CONTENT {
        builder = builder.header(header::CONTENT_TYPE, "application/json; charset=utf-8");
    }
    builder.body(Body::from(body)).expect("valid response")
}

/// Verifies `Authorization` over method, raw path and query, timestamp, nonce and raw body.
fn authenticate(
    sim: &Sim,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Arc<Merchant>, WxError> {
    const MALFORMED: &str = "Http头Authorization值格式错误，请参考《微信支付商户REST API签名规则》";
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| WxError::sign_error(MALFORMED, "Authorization header is missing"))?;
    let auth =
        Authorization::parse(value).map_err(|e| WxError::sign_error(MALFORMED, e.to_string()))?;
    let merchant = sim
        .state()
        .merchants
        .get(&auth.mchid)
        .cloned()
        .ok_or_else(|| {
            WxError::sign_error(
                "Authorization不合法",
                format!("mchid {} does not exist", auth.mchid),
            )
        })?;
    if auth.serial_no != merchant.merchant_serial_no {
        return Err(WxError::sign_error(
            "商户证书序列号有误。请使用签名私钥匹配的证书序列号",
            format!(
                "serial_no {} is not this merchant's certificate",
                auth.serial_no
            ),
        ));
    }
    let skew = crate::formats::real_now() - auth.timestamp_unix();
    if skew.abs() > wechatpay_v3::MAX_CLOCK_SKEW_SECS {
        return Err(WxError::sign_error(
            "错误的签名，验签失败",
            format!("timestamp is {skew} s away from now"),
        ));
    }
    let message = auth.message(method.as_str(), path_and_query, body);
    if merchant
        .merchant_public_key
        .verify(&message, &auth.signature)
        .is_err()
    {
        let text = String::from_utf8_lossy(&message);
        let truncated: String = text.chars().take(128).collect();
        return Err(WxError::new(
            StatusCode::UNAUTHORIZED,
            "SIGN_ERROR",
            "错误的签名，验签失败",
        )
        .with_detail(json!({
            "detail": {"issue": "sign not match"},
            "field": "signature",
            "location": "authorization",
            "sign_information": {
                "method": method.as_str(),
                "sign_message_length": message.len(),
                "truncated_sign_message": truncated,
                "url": path_and_query,
            }
        })));
    }
    Ok(merchant)
}

fn dispatch(req: &Request<'_>, method: &Method, path: &str) -> Result<Answer, WxError> {
    let segments: Vec<String> = path
        .trim_start_matches("/v3/")
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let get = method == Method::GET;
    let post = method == Method::POST;
    match segs.as_slice() {
        ["pay", "transactions", kind] if post => {
            let kind = match *kind {
                "native" => PrepayKind::Native,
                "jsapi" => PrepayKind::Jsapi,
                "app" => PrepayKind::App,
                "h5" => PrepayKind::H5,
                _ => return Err(not_found(path)),
            };
            domestic_prepay(req, kind)
        }
        ["pay", "transactions", by @ ("out-trade-no" | "id"), id] if get => {
            query(req, Family::Domestic, by, id)
        }
        ["pay", "transactions", "out-trade-no", no, "close"] if post => {
            close(req, Family::Domestic, "out-trade-no", no)
        }
        ["refund", "domestic", "refunds"] if post => refund(req, Family::Domestic),
        ["refund", "domestic", "refunds", no] if get => {
            query_refund(req, Family::Domestic, "out-refund-no", no)
        }
        ["bill", "tradebill"] if get => crate::bills::apply_trade_bill(req),
        ["bill", "fundflowbill"] if get => crate::bills::apply_fund_flow_bill(req),
        ["billdownload", "file"] if get => crate::bills::download(req),
        ["certificates"] | ["global", "certificates"] if get => certificates(req),
        ["global", "transactions", kind] if post => {
            let kind = match *kind {
                "native" => GlobalKind::Native,
                "jsapi" => GlobalKind::Jsapi,
                "app" => GlobalKind::App,
                "mweb" | "h5" => GlobalKind::Mweb,
                _ => return Err(not_found(path)),
            };
            global_prepay(req, kind)
        }
        ["global", "transactions", by @ ("out-trade-no" | "id"), id] if get => {
            query(req, Family::Global, by, id)
        }
        [
            "global",
            "transactions",
            by @ ("out-trade-no" | "id"),
            id,
            "close",
        ] if post => close(req, Family::Global, by, id),
        ["global", "refunds"] if post => refund(req, Family::Global),
        ["global", "statements"] if get => crate::statements::global_statements(req),
        ["fund-app", "mch-transfer", "transfer-bills", rest @ ..] => {
            crate::transfers::route(req, method, rest).unwrap_or_else(|| Err(not_found(path)))
        }
        ["global", "refunds", by @ ("out-refund-no" | "id"), id] if get => {
            query_refund(req, Family::Global, by, id)
        }
        _ => Err(not_found(path)),
    }
}

fn not_found(path: &str) -> WxError {
    WxError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("{path} 不存在或请求方法不正确"),
    )
}

fn required_mchid_query(req: &Request<'_>) -> Result<(), WxError> {
    match req.query.get("mchid") {
        None => Err(WxError::param(
            FieldError::new("mchid", "is required"),
            "query",
        )),
        Some(m) if *m != req.merchant.mchid => {
            Err(WxError::invalid("mchid与Authorization中的商户号不一致"))
        }
        Some(_) => Ok(()),
    }
}

fn check_ids(req: &Request<'_>, appid: &str, mchid: &str) -> Result<(), WxError> {
    if mchid != req.merchant.mchid {
        return Err(WxError::invalid("mchid与Authorization中的商户号不一致"));
    }
    if appid != req.merchant.appid {
        return Err(WxError::new(
            StatusCode::BAD_REQUEST,
            "APPID_MCHID_NOT_MATCH",
            "appid和mch_id不匹配",
        ));
    }
    Ok(())
}

/// The fields of a new order, from either API family.
struct NewOrder {
    family: Family,
    appid: String,
    description: String,
    out_trade_no: String,
    trade_type: &'static str,
    attach: Option<String>,
    notify_url: String,
    total: i64,
    currency: String,
    openid: Option<String>,
    payer_client_ip: Option<String>,
    merchant_category_code: Option<String>,
    time_expire: Option<String>,
}

fn domestic_prepay(req: &Request<'_>, kind: PrepayKind) -> Result<Answer, WxError> {
    let body: PrepayRequest = json_body(req.body)?;
    body.validate(kind).map_err(|e| WxError::param(e, "body"))?;
    check_ids(req, &body.appid, &body.mchid)?;
    let scene = body.scene_info.as_ref();
    let new = NewOrder {
        family: Family::Domestic,
        appid: body.appid.clone(),
        description: body.description.clone(),
        out_trade_no: body.out_trade_no.clone(),
        trade_type: kind.trade_type(),
        attach: body.attach.clone(),
        notify_url: body.notify_url.clone(),
        total: body.amount.total,
        currency: "CNY".to_string(),
        openid: body.payer.as_ref().map(|p| p.openid.clone()),
        payer_client_ip: scene.and_then(|s| s.payer_client_ip.clone()),
        merchant_category_code: None,
        time_expire: body.time_expire.clone(),
    };
    prepay(req, new)
}

fn global_prepay(req: &Request<'_>, kind: GlobalKind) -> Result<Answer, WxError> {
    let body: GlobalPrepayRequest = json_body(req.body)?;
    body.validate(kind).map_err(|e| WxError::param(e, "body"))?;
    check_ids(req, &body.appid, &body.mchid)?;
    let currency = body.amount.currency.clone().unwrap_or_default();
    if ops::exchange_rate(&currency).is_none() {
        return Err(WxError::param(
            FieldError::new(
                "/amount/currency",
                format!("{currency} is not a supported pricing currency"),
            ),
            "body",
        ));
    }
    let new = NewOrder {
        family: Family::Global,
        appid: body.appid.clone(),
        description: body.description.clone(),
        out_trade_no: body.out_trade_no.clone(),
        trade_type: kind.trade_type(),
        attach: body.attach.clone(),
        notify_url: body.notify_url.clone(),
        total: body.amount.total,
        currency,
        openid: body.payer.as_ref().map(|p| p.openid.clone()),
        payer_client_ip: body
            .scene_info
            .as_ref()
            .and_then(|s| s.payer_client_ip.clone()),
        merchant_category_code: Some(body.merchant_category_code.clone()),
        time_expire: body.time_expire.clone(),
    };
    prepay(req, new)
}

/// A re-submission of an order: refused unless its parameters are the same and it is still
/// unpaid and open; then its credentials, renewed where they lapsed.
fn renew(
    state: &mut SimState,
    existing: Order,
    fingerprint: &str,
    now: i64,
) -> Result<Order, WxError> {
    if existing.fingerprint != fingerprint {
        return Err(WxError::invalid("201 商户订单号重复"));
    }
    match existing.state {
        OrderState::Success | OrderState::Refund => {
            return Err(WxError::new(
                StatusCode::BAD_REQUEST,
                "ORDERPAID",
                "该订单已支付",
            ));
        }
        OrderState::Closed => {
            return Err(WxError::new(
                StatusCode::BAD_REQUEST,
                "ORDER_CLOSED",
                "订单已关闭",
            ));
        }
        OrderState::Notpay => {}
    }
    let mut order = existing;
    if now - order.prepay_issued_at >= PREPAY_VALID_SECS {
        state.by_prepay_id.remove(&order.prepay_id);
        if let Some(token) = order.code_token.take() {
            state.by_code_token.remove(&token);
        }
        order.prepay_id = new_prepay_id(now);
        order.prepay_issued_at = now;
        if order.trade_type == "NATIVE" {
            order.code_token = Some(new_code_token());
        }
    }
    if order.trade_type == "MWEB" {
        order.h5_package = Some(digits(10));
        order.h5_issued_at = now;
    }
    state.insert_order(order.clone());
    Ok(order)
}

/// A new, unpaid order with fresh credentials.
fn new_order(
    req: &Request<'_>,
    new: NewOrder,
    fingerprint: String,
    expires_at: i64,
    now: i64,
) -> Order {
    Order {
        family: new.family,
        mchid: req.merchant.mchid.clone(),
        appid: new.appid,
        out_trade_no: new.out_trade_no,
        trade_type: new.trade_type.to_string(),
        description: new.description,
        attach: new.attach,
        notify_url: new.notify_url,
        total: new.total,
        exchange_rate: ops::exchange_rate(&new.currency).map(|(rate, _)| rate),
        currency: new.currency,
        openid: new.openid,
        payer_client_ip: new.payer_client_ip,
        merchant_category_code: new.merchant_category_code,
        fingerprint,
        created_at: now,
        expires_at,
        state: OrderState::Notpay,
        transaction_id: None,
        success_time: None,
        paid_openid: None,
        prepay_id: new_prepay_id(now),
        prepay_issued_at: now,
        code_token: (new.trade_type == "NATIVE").then(new_code_token),
        h5_package: (new.trade_type == "MWEB").then(|| digits(10)),
        h5_issued_at: now,
        coupon: None,
    }
}

/// Creates the order, or answers a re-submission the way WeChat does: the same parameters
/// give the current credentials, different ones are refused, a paid or closed order says so.
fn prepay(req: &Request<'_>, new: NewOrder) -> Result<Answer, WxError> {
    if req.faults.refuse_trade_type.as_deref() == Some(new.trade_type) {
        return Err(WxError::new(
            StatusCode::FORBIDDEN,
            "NO_AUTH",
            "商户号该产品权限未开通，请前往商户平台>产品中心检查后重试",
        ));
    }
    let now = req.sim.now();
    let expires_at = match &new.time_expire {
        Some(t) => wechatpay_v3::validate::rfc3339("/time_expire", t)
            .map_err(|e| WxError::param(e, "body"))?
            .clamp(now + 60, now + 90 * 24 * 3600),
        None => now + DEFAULT_ORDER_LIFETIME_SECS,
    };
    let fingerprint = serde_json::to_string(&json!([
        new.family,
        new.trade_type,
        new.appid,
        new.description,
        new.total,
        new.currency,
        new.attach,
        new.openid,
        new.time_expire,
        new.merchant_category_code
    ]))
    .expect("serialisable");
    let key = SimState::order_key(&req.merchant.mchid, &new.out_trade_no);
    let order = {
        let mut state = req.sim.state();
        state.expire_if_due(&key, now);
        match state.orders.get(&key).cloned() {
            Some(existing) => renew(&mut state, existing, &fingerprint, now)?,
            None => {
                let order = new_order(req, new, fingerprint, expires_at, now);
                state.insert_order(order.clone());
                order
            }
        }
    };
    Ok(Answer::Json(match order.trade_type.as_str() {
        "NATIVE" => json!({"code_url": code_url(order.code_token.as_deref().unwrap_or_default())}),
        "MWEB" => json!({"h5_url": h5_url(&req.base, &order)}),
        _ => json!({"prepay_id": order.prepay_id}),
    }))
}

/// `wx` + yyyyMMddHHmmss + 20 hex characters: 36 in all.
fn new_prepay_id(now: i64) -> String {
    format!(
        "wx{}{}",
        cst_compact(now, true),
        crate::formats::lower_hex(20)
    )
}

fn new_code_token() -> String {
    format!("{}zz", wechatpay_v3::nonce(8))
}

pub fn code_url(token: &str) -> String {
    format!("weixin://wxpay/bizpayurl?pr={token}")
}

/// The H5 cashier on the simulator's own host, in WeChat's path shape.
pub fn h5_url(base: &str, order: &Order) -> String {
    format!(
        "{base}/cgi-bin/mmpayweb-bin/checkmweb?prepay_id={}&package={}",
        order.prepay_id,
        order.h5_package.as_deref().unwrap_or_default()
    )
}

fn find_order_key(
    req: &Request<'_>,
    family: Family,
    by: &str,
    id: &str,
) -> Result<(String, String), WxError> {
    let state = req.sim.state();
    let key = match by {
        "id" => state.by_transaction_id.get(id).cloned(),
        _ => Some(SimState::order_key(&req.merchant.mchid, id)),
    };
    match key {
        Some(key)
            if key.0 == req.merchant.mchid
                && state.orders.get(&key).is_some_and(|o| o.family == family) =>
        {
            Ok(key)
        }
        _ => Err(WxError::order_not_exist()),
    }
}

fn query(req: &Request<'_>, family: Family, by: &str, id: &str) -> Result<Answer, WxError> {
    required_mchid_query(req)?;
    let key = find_order_key(req, family, by, id)?;
    let now = req.sim.now();
    let mut state = req.sim.state();
    state.expire_if_due(&key, now);
    let order = state
        .orders
        .get(&key)
        .ok_or_else(WxError::order_not_exist)?;
    Ok(Answer::Json(
        serde_json::to_value(ops::transaction_view(order)).expect("serialisable"),
    ))
}

fn close(req: &Request<'_>, family: Family, by: &str, id: &str) -> Result<Answer, WxError> {
    let body: CloseRequest = json_body(req.body)?;
    if body.mchid != req.merchant.mchid {
        return Err(WxError::invalid("mchid与Authorization中的商户号不一致"));
    }
    let key = find_order_key(req, family, by, id)?;
    if req.faults.fail_close {
        return Err(WxError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SYSTEM_ERROR",
            "系统错误",
        ));
    }
    if req.faults.paid_after_close && ops::pay_order(req.sim, &key, None, None).is_ok() {
        // A payment slipped in just before the close: the order is paid, close still says 204.
        return Ok(Answer::NoContent);
    }
    let now = req.sim.now();
    let mut state = req.sim.state();
    state.expire_if_due(&key, now);
    let order = state
        .orders
        .get_mut(&key)
        .ok_or_else(WxError::order_not_exist)?;
    match order.state {
        OrderState::Success | OrderState::Refund => Err(WxError::new(
            StatusCode::BAD_REQUEST,
            "ORDERPAID",
            "订单已支付",
        )),
        OrderState::Closed => Ok(Answer::NoContent),
        OrderState::Notpay => {
            order.state = OrderState::Closed;
            state.dirty = true;
            Ok(Answer::NoContent)
        }
    }
}

/// The fields of a refund request, from either API family.
struct NewRefund {
    transaction_id: Option<String>,
    out_trade_no: Option<String>,
    out_refund_no: String,
    reason: Option<String>,
    notify_url: Option<String>,
    refund: i64,
    total: i64,
    currency: String,
}

fn refund(req: &Request<'_>, family: Family) -> Result<Answer, WxError> {
    let new = match family {
        Family::Domestic => {
            let body: RefundRequest = json_body(req.body)?;
            body.validate().map_err(|e| WxError::param(e, "body"))?;
            NewRefund {
                transaction_id: body.transaction_id,
                out_trade_no: body.out_trade_no,
                out_refund_no: body.out_refund_no,
                reason: body.reason,
                notify_url: body.notify_url,
                refund: body.amount.refund,
                total: body.amount.total,
                currency: body.amount.currency,
            }
        }
        Family::Global => {
            let body: GlobalRefundRequest = json_body(req.body)?;
            body.validate().map_err(|e| WxError::param(e, "body"))?;
            check_ids(req, &body.appid, &body.mchid)?;
            NewRefund {
                transaction_id: body.transaction_id,
                out_trade_no: body.out_trade_no,
                out_refund_no: body.out_refund_no,
                reason: body.reason,
                notify_url: body.notify_url,
                refund: body.amount.refund,
                total: body.amount.total,
                currency: body.amount.currency,
            }
        }
    };
    let record = create_refund(req, family, new)?;
    Ok(Answer::Json(refund_answer(req, family, &record)))
}

fn refund_answer(req: &Request<'_>, family: Family, record: &RefundRecord) -> Value {
    match family {
        Family::Domestic => serde_json::to_value(ops::refund_view(record)),
        Family::Global => {
            let state = req.sim.state();
            let order = state
                .orders
                .get(&SimState::order_key(&record.mchid, &record.out_trade_no));
            serde_json::to_value(ops::global_refund_view(record, order))
        }
    }
    .expect("serialisable")
}

fn create_refund(
    req: &Request<'_>,
    family: Family,
    new: NewRefund,
) -> Result<RefundRecord, WxError> {
    let now = req.sim.now();
    let mchid = req.merchant.mchid.clone();
    let fingerprint = serde_json::to_string(&json!([
        new.transaction_id,
        new.out_trade_no,
        new.refund,
        new.total,
        new.currency
    ]))
    .expect("serialisable");
    let outcome = req.faults.refund_outcome.unwrap_or(RefundOutcome::Success);
    let record = {
        let mut state = req.sim.state();
        let order = refunded_order(&state, &mchid, family, &new)?;
        let refund_key = SimState::order_key(&mchid, &new.out_refund_no);
        if let Some(existing) = state.refunds.get(&refund_key) {
            if existing.fingerprint != fingerprint || existing.out_trade_no != order.out_trade_no {
                return Err(WxError::invalid("退款单号重复，但请求参数与之前不一致"));
            }
            return Ok(existing.clone());
        }
        if req.faults.refund_not_enough {
            return Err(WxError::new(
                StatusCode::FORBIDDEN,
                "NOT_ENOUGH",
                "基本账户余额不足，请充值后重新发起",
            ));
        }
        check_refund(&state, &order, &new, now)?;
        let before = state.refunded_of(&mchid, &order.out_trade_no);
        let share = |coupon| coupon_share(coupon, order.total, before, new.refund);
        let record = RefundRecord {
            family,
            mchid: mchid.clone(),
            refund_id: format!("50{}{}", cst_compact(now, false), digits(19)),
            out_refund_no: new.out_refund_no,
            out_trade_no: order.out_trade_no.clone(),
            transaction_id: order.transaction_id.clone().unwrap_or_default(),
            refund: new.refund,
            total: new.total,
            currency: new.currency,
            reason: new.reason,
            notify_url: new.notify_url,
            fingerprint,
            created_at: now,
            success_time: None,
            state: RefundState::Processing,
            order_coupon: order.coupon_amount(),
            order_nocash: order.nocash_amount(),
            coupon_refund: share(order.coupon_amount()),
            nocash_refund: share(order.nocash_amount()),
        };
        state.insert_refund(record.clone());
        record
    };
    ops::schedule_refund_settlement(
        req.sim,
        SimState::order_key(&mchid, &record.out_refund_no),
        outcome,
    );
    Ok(record)
}

/// The merchant's order a refund names, by out_trade_no or transaction_id.
fn refunded_order(
    state: &SimState,
    mchid: &str,
    family: Family,
    new: &NewRefund,
) -> Result<Order, WxError> {
    let order_key = match (&new.out_trade_no, &new.transaction_id) {
        (Some(no), _) => Some(SimState::order_key(mchid, no)),
        (None, Some(id)) => state.by_transaction_id.get(id).cloned(),
        (None, None) => None,
    };
    order_key
        .as_ref()
        .and_then(|k| state.orders.get(k))
        .filter(|o| o.mchid == mchid && o.family == family)
        .cloned()
        .ok_or_else(|| WxError::new(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "订单不存在"))
}

/// WeChat's refund rules on the order as it is: paid, within a year, the same total and
/// currency, at most 50 refunds, and never more than was paid in all.
fn check_refund(state: &SimState, order: &Order, new: &NewRefund, now: i64) -> Result<(), WxError> {
    if !order.state.is_paid() {
        return Err(WxError::invalid("订单未支付，不能发起退款"));
    }
    if now - order.success_time.unwrap_or(now) > REFUND_WINDOW_SECS {
        return Err(WxError::invalid("订单已超过可退款的最大期限（一年）"));
    }
    if new.total != order.total || new.currency != order.currency {
        return Err(WxError::invalid("订单金额或币种与原订单不一致"));
    }
    let existing: Vec<&RefundRecord> = state
        .refunds
        .values()
        .filter(|r| r.mchid == order.mchid && r.out_trade_no == order.out_trade_no)
        .collect();
    if existing.len() >= REFUNDS_PER_ORDER_MAX {
        return Err(WxError::invalid("该订单的退款次数已达上限（50次）"));
    }
    let committed = state.refunded_of(&order.mchid, &order.out_trade_no);
    if committed + new.refund > order.total {
        return Err(WxError::invalid(format!(
            "申请退款金额超过订单可退金额（可退 {}）",
            order.total - committed
        )));
    }
    Ok(())
}

fn query_refund(req: &Request<'_>, family: Family, by: &str, id: &str) -> Result<Answer, WxError> {
    if family == Family::Global {
        required_mchid_query(req)?;
    }
    let record = {
        let state = req.sim.state();
        let key = match by {
            "id" => state.by_refund_id.get(id).cloned(),
            _ => Some(SimState::order_key(&req.merchant.mchid, id)),
        };
        key.and_then(|k| state.refunds.get(&k).cloned())
            .filter(|r| r.mchid == req.merchant.mchid && r.family == family)
            .ok_or_else(|| {
                WxError::new(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "退款单不存在")
            })?
    };
    Ok(Answer::Json(refund_answer(req, family, &record)))
}

fn certificates(req: &Request<'_>) -> Result<Answer, WxError> {
    let cert = &req.merchant.platform_certificate;
    let nonce = wechatpay_v3::nonce(12);
    let ciphertext = req
        .merchant
        .apiv3_key
        .seal(&nonce, "certificate", cert.pem.as_bytes())
        .map_err(|_| {
            WxError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "SYSTEM_ERROR",
                "系统错误",
            )
        })?;
    let answer = CertificatesAnswer {
        data: vec![CertificateEntry {
            serial_no: cert.serial_no.clone(),
            effective_time: rfc3339_cst(cert.not_before_unix),
            expire_time: rfc3339_cst(cert.not_after_unix),
            encrypt_certificate: EncryptedCertificate {
                algorithm: wechatpay_v3::aead::ALGORITHM.to_string(),
                nonce,
                associated_data: "certificate".to_string(),
                ciphertext,
            },
        }],
    };
    Ok(Answer::Json(
        serde_json::to_value(answer).expect("serialisable"),
    ))
}
