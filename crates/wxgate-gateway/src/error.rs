//! The one error type of the gateway's request paths, and the single list of stable error codes.
//!
//! Which error where:
//! - the application layer (`app::*`) and the handlers return [`ApiError`]: an [`ErrorCode`],
//!   a message for people, and the parameter at fault. The HTTP layer answers it as
//!   `{"error": {"code", "message", "param"}}` with the code's status; a front door maps the
//!   same code to its own wire format.
//! - background workers (status sync, refunds sync, deliveries) use `anyhow`: nobody waits on
//!   them, and the log gets the whole cause chain.
//! - store errors are mapped in one place ([`From<StoreError>`]): an unavailable database is
//!   503 `database_unavailable`, anything else is logged and answered with a generic 500.
//!
//! docs/GATEWAY.md's table of codes and the OpenAPI document's `code` enum are both checked
//! against [`ErrorCode::ALL`] by tests, so a code cannot be added here and forgotten there.

use wxgate_store::StoreError;

macro_rules! error_codes {
    ($($variant:ident = $code:literal, $status:literal, $meaning:literal;)*) => {
        /// Every stable error code the merchant API answers with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(#[doc = $meaning] $variant,)*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as it appears on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status the code is answered with.
            pub fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            /// What the code means, for the documentation.
            pub fn meaning(self) -> &'static str {
                match self { $(ErrorCode::$variant => $meaning,)* }
            }
        }
    };
}

error_codes! {
    // The request as a whole.
    Unauthorized = "unauthorized", 401, "No valid API key: `Authorization: Bearer <key>`.";
    ResourceMissing = "resource_missing", 404, "No such object for this merchant.";
    RouteNotFound = "route_not_found", 404, "No such route.";
    MethodNotAllowed = "method_not_allowed", 405, "The route exists but not with this method.";
    BodyTooLarge = "body_too_large", 413, "The body is over 64 KiB.";
    UnsupportedMediaType = "unsupported_media_type", 415, "A JSON body needs `Content-Type: application/json`.";
    InvalidBody = "invalid_body", 400, "The body could not be read.";
    InvalidJson = "invalid_json", 400, "The body is not one JSON value.";
    ParameterMissing = "parameter_missing", 400, "A required parameter is missing.";
    ParameterUnknown = "parameter_unknown", 400, "A parameter this request does not take.";
    InvalidType = "invalid_type", 400, "A parameter has the wrong JSON type or range.";
    InvalidCharacters = "invalid_characters", 400, "A text parameter (body, path or query) holds NUL or another control character.";
    InvalidQuery = "invalid_query", 400, "The query string does not fit the route.";
    InvalidIdempotencyKey = "invalid_idempotency_key", 400, "`Idempotency-Key` must be 1 to 255 visible characters.";
    IdempotencyKeyInUse = "idempotency_key_in_use", 409, "A request with this key is still running; retry shortly.";
    IdempotencyKeyReused = "idempotency_key_reused", 422, "This key was used with another request.";
    InvalidLimit = "invalid_limit", 400, "`limit` must be from 1 to 100.";
    InvalidCursor = "invalid_cursor", 400, "`starting_after` names no object of this list.";
    InvalidTime = "invalid_time", 400, "A time parameter is not RFC 3339.";
    // Payments.
    InvalidAmount = "invalid_amount", 400, "The amount is not a positive integer in minor units within bounds.";
    InvalidCurrency = "invalid_currency", 400, "Not an ISO 4217 currency wxgate knows.";
    CurrencyNotAllowed = "currency_not_allowed", 400, "The merchant does not price in this currency.";
    InvalidMerchantOrderId = "invalid_merchant_order_id", 400, "6–32 characters of `0-9 A-Z a-z _ - | *`.";
    InvalidDescription = "invalid_description", 400, "1 to 127 characters.";
    InvalidIntegration = "invalid_integration", 400, "Not one of native, h5, jsapi, mini_program, app, hosted.";
    OpenidRequired = "openid_required", 400, "`payer.openid` is required for jsapi and mini_program.";
    InvalidOpenid = "invalid_openid", 400, "`payer.openid` does not fit WeChat's rule.";
    ClientIpRequired = "client_ip_required", 400, "`client_ip` is required for h5.";
    InvalidClientIp = "invalid_client_ip", 400, "`client_ip` is not an IP address.";
    InvalidExpiresAt = "invalid_expires_at", 400, "Not RFC 3339, or too soon.";
    InvalidReturnUrl = "invalid_return_url", 400, "Not an absolute http(s) URL.";
    InvalidCancelUrl = "invalid_cancel_url", 400, "Not an absolute http(s) URL.";
    InvalidNotifyUrl = "invalid_notify_url", 400, "Not a public http(s) URL.";
    InvalidMetadata = "invalid_metadata", 400, "At most 20 keys of 1–40 characters, values of at most 500.";
    InvalidAttach = "invalid_attach", 400, "At most 128 characters.";
    InvalidStatus = "invalid_status", 400, "Not a status of this object.";
    MerchantOrderIdTaken = "merchant_order_id_taken", 409, "The merchant_order_id belongs to a payment with other parameters.";
    NotifySecretMissing = "notify_secret_missing", 409, "`notify_url` needs the merchant's notify secret first.";
    PaymentNotCancellable = "payment_not_cancellable", 409, "Only a pending payment can be cancelled.";
    PaymentNotPending = "payment_not_pending", 409, "Only a pending payment can make a new WeChat order.";
    TooManyAttempts = "too_many_attempts", 409, "The payment made as many WeChat orders as it may (20).";
    NoQrCode = "no_qr_code", 409, "Only a pending native payment has a QR code.";
    InvalidScale = "invalid_scale", 400, "`scale` must be from 1 to 20.";
    InvalidSize = "invalid_size", 400, "`size` must be from 100 to 1000.";
    // Refunds.
    InvalidMerchantRefundId = "invalid_merchant_refund_id", 400, "Does not fit WeChat's out_refund_no rule, or begins with `dup_` or `pac_` (the gateway's own refunds).";
    InvalidReason = "invalid_reason", 400, "At most 80 characters.";
    PaymentNotRefundable = "payment_not_refundable", 409, "Only a succeeded (or partly refunded) payment can be refunded.";
    RefundWindowClosed = "refund_window_closed", 409, "WeChat refunds a payment within a year of it.";
    TooManyRefunds = "too_many_refunds", 409, "WeChat takes at most 50 refunds of one payment.";
    RefundExceedsPayment = "refund_exceeds_payment", 409, "More than the payment's unrefunded amount.";
    MerchantRefundIdTaken = "merchant_refund_id_taken", 409, "The merchant_refund_id belongs to a refund with other parameters.";
    // Payouts.
    InvalidRemark = "invalid_remark", 400, "`remark` must be 1 to 32 characters.";
    InvalidScene = "invalid_scene", 400, "Not a transfer scene WeChat knows, or not exactly its report items.";
    PayoutSceneRequired = "payout_scene_required", 400, "Name `scene`, or set the merchant's default scene.";
    UserNameRequired = "user_name_required", 400, "WeChat needs the payee's `user_name` from 2,000 yuan (200000 fen).";
    InvalidUserName = "invalid_user_name", 400, "`user_name` must be 1 to 64 characters.";
    InvalidMerchantPayoutId = "invalid_merchant_payout_id", 400, "1–64 characters of `0-9 A-Z a-z _ - | * @`.";
    MerchantPayoutIdTaken = "merchant_payout_id_taken", 409, "The merchant_payout_id belongs to a payout with other parameters.";
    PayoutNotCancellable = "payout_not_cancellable", 409, "Only a payout the payee has not confirmed can be cancelled.";
    PayoutBusy = "payout_busy", 409, "The payout is being sent to WeChat Pay; retry in a few seconds.";
    // Webhooks and events.
    InvalidUrl = "invalid_url", 400, "Not a public http(s) URL.";
    InvalidEvents = "invalid_events", 400, "Not a list of known event types.";
    InvalidDeliveryStatus = "invalid_delivery_status", 400, "Not a delivery status.";
    TooManyWebhookEndpoints = "too_many_webhook_endpoints", 409, "The merchant has the most endpoints allowed.";
    NoWebhookEndpoints = "no_webhook_endpoints", 409, "There is no endpoint to redeliver to.";
    RedeliverRangeTooLarge = "redeliver_range_too_large", 400, "Over 10,000 events in the range.";
    // Payment links.
    InvalidMaxUses = "invalid_max_uses", 400, "`max_uses` must be at least 1.";
    // Reconciliation and the ledger.
    InvalidDate = "invalid_date", 400, "Not a date YYYY-MM-DD.";
    DateOutOfRange = "date_out_of_range", 400, "A bill date is from 90 days ago to today, in Asia/Shanghai.";
    InvalidResolution = "invalid_resolution", 400, "`reason` must be 1 to 500 characters.";
    DiscrepancyNotOpen = "discrepancy_not_open", 409, "Only an open discrepancy can be resolved.";
    InvalidTransactionType = "invalid_transaction_type", 400, "Not a balance transaction type.";
    InvalidReportType = "invalid_report_type", 400, "Not one of payments, refunds, balance_transactions, reconciliation.";
    ReportLinkExpired = "report_link_expired", 404, "The download link is unknown or expired; GET the report for a new one.";
    // Hosted pages.
    AuthorizationCodeRefused = "authorization_code_refused", 400, "WeChat refused the webpage authorization code (made up, expired or used already); reopen the page.";
    // WeChat Pay and the gateway itself.
    UpstreamRejected = "upstream_rejected", 502, "WeChat Pay refused the request.";
    AuthorizationFailed = "authorization_failed", 502, "WeChat's webpage authorization failed.";
    UpstreamUnavailable = "upstream_unavailable", 503, "WeChat Pay did not answer in time; retry the same request.";
    DatabaseUnavailable = "database_unavailable", 503, "The database is unavailable; retry later.";
    InternalError = "internal_error", 500, "An unexpected failure; it has been logged.";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure the caller is told about: a stable code, a message for people, and the
/// parameter at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub param: Option<String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            param: None,
        }
    }

    /// A parameter that does not fit: `param` names it.
    pub fn invalid(code: ErrorCode, param: &str, message: impl Into<String>) -> Self {
        Self::new(code, message).with_param(param)
    }

    pub fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_string());
        self
    }

    pub fn unauthorized() -> Self {
        Self::new(
            ErrorCode::Unauthorized,
            "a valid API key is required: Authorization: Bearer <key>",
        )
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::ResourceMissing, format!("no such {what}"))
    }

    /// An unexpected failure: the cause goes to the log, the caller gets a generic answer.
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "{context}");
        Self::new(
            ErrorCode::InternalError,
            "an internal error occurred; it has been logged",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable");
            return Self::new(
                ErrorCode::DatabaseUnavailable,
                "the database is unavailable; retry later",
            );
        }
        Self::internal("store error", e)
    }
}

/// docs/GATEWAY.md's table of error codes, generated from [`ErrorCode::ALL`].
pub fn markdown_table() -> String {
    let mut out = String::from("| code | status | meaning |\n|---|---|---|\n");
    for code in ErrorCode::ALL {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            code.as_str(),
            code.status(),
            code.meaning()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_have_error_statuses() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert!(
                code.as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_')
            );
            assert!((400..600).contains(&code.status()), "{code}");
        }
    }

    #[test]
    fn the_documented_table_is_the_generated_one() {
        let doc = include_str!("../../../docs/GATEWAY.md");
        let begin = "<!-- error-codes:begin -->\n";
        let start = doc.find(begin).expect("docs/GATEWAY.md marks its table") + begin.len();
        let end = doc
            .find("<!-- error-codes:end -->")
            .expect("the table's end");
        assert_eq!(
            &doc[start..end],
            markdown_table(),
            "docs/GATEWAY.md's table of error codes is out of date: run scripts/error-codes"
        );
    }
}
