//! WeChat Pay's error model: a non-2xx answer carries `{"code", "message", "detail"}`.
//!
//! Codes are spelled two ways across WeChat's pages (`SYSTEMERROR` and `SYSTEM_ERROR`, ...);
//! [`ErrorCode::parse`] understands both and [`ErrorCode::as_str`] writes the current one.
//! Each code is classified retryable or not, following WeChat's guidance: 5xx and rate limits
//! may be retried with the same parameters; 4xx business refusals may not.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The JSON body of an error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

macro_rules! codes {
    ($($variant:ident => $canonical:literal, $retry:expr;)*) => {
        /// A WeChat Pay error code.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)*
            /// A code this crate does not know, kept as sent.
            Other(String),
        }

        impl ErrorCode {
            /// The code as the current documentation spells it.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $canonical,)*
                    Self::Other(code) => code,
                }
            }

            /// Understands both the old (`SYSTEMERROR`) and new (`SYSTEM_ERROR`) spellings,
            /// in any letter case.
            pub fn parse(code: &str) -> Self {
                let folded: String = code
                    .chars()
                    .filter(|c| *c != '_')
                    .map(|c| c.to_ascii_uppercase())
                    .collect();
                $(
                    if folded == $canonical.replace('_', "") {
                        return Self::$variant;
                    }
                )*
                Self::Other(code.to_string())
            }

            fn retry_class(&self) -> Retry {
                match self {
                    $(Self::$variant => $retry,)*
                    Self::Other(_) => Retry::ByStatus,
                }
            }
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    Yes,
    No,
    ByStatus,
}

codes! {
    ParamError => "PARAM_ERROR", Retry::No;
    InvalidRequest => "INVALID_REQUEST", Retry::No;
    SignError => "SIGN_ERROR", Retry::No;
    AppidMchidNotMatch => "APPID_MCHID_NOT_MATCH", Retry::No;
    MchNotExists => "MCH_NOT_EXISTS", Retry::No;
    OrderClosed => "ORDER_CLOSED", Retry::No;
    OrderPaid => "ORDERPAID", Retry::No;
    AccountError => "ACCOUNT_ERROR", Retry::No;
    NoAuth => "NO_AUTH", Retry::No;
    NotEnough => "NOT_ENOUGH", Retry::No;
    OutTradeNoUsed => "OUT_TRADE_NO_USED", Retry::No;
    RuleLimit => "RULE_LIMIT", Retry::No;
    TradeError => "TRADE_ERROR", Retry::No;
    OrderNotExist => "ORDER_NOT_EXIST", Retry::No;
    ResourceNotExists => "RESOURCE_NOT_EXISTS", Retry::No;
    // The merchant-transfer API's "no such transfer".
    NotFound => "NOT_FOUND", Retry::No;
    NoStatementExist => "NO_STATEMENT_EXIST", Retry::No;
    // Retried later (WeChat says every half hour), not at once.
    StatementCreating => "STATEMENT_CREATING", Retry::No;
    UserAccountAbnormal => "USER_ACCOUNT_ABNORMAL", Retry::No;
    OpenidMismatch => "OPENID_MISMATCH", Retry::No;
    InvalidTransactionId => "INVALID_TRANSACTIONID", Retry::No;
    FrequencyLimited => "FREQUENCY_LIMITED", Retry::Yes;
    RatelimitExceeded => "RATELIMIT_EXCEEDED", Retry::Yes;
    SystemError => "SYSTEM_ERROR", Retry::Yes;
    BankError => "BANK_ERROR", Retry::Yes;
    ServiceUnavailable => "SERVICE_UNAVAILABLE", Retry::Yes;
    UserPaying => "USERPAYING", Retry::Yes;
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer from WeChat Pay.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("WeChat Pay answered {status} {code}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<Value>,
    /// `Request-ID` of the answer, for WeChat support.
    pub request_id: Option<String>,
}

impl ApiError {
    /// Reads an error answer. A body that is not the error envelope still gives an error, with
    /// a code derived from the status.
    pub fn from_answer(status: u16, body: &[u8], request_id: Option<String>) -> Self {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(parsed) => Self {
                status,
                code: ErrorCode::parse(&parsed.code),
                message: parsed.message,
                detail: parsed.detail,
                request_id,
            },
            Err(_) => Self {
                status,
                code: match status {
                    429 => ErrorCode::FrequencyLimited,
                    502..=504 => ErrorCode::ServiceUnavailable,
                    500..=599 => ErrorCode::SystemError,
                    _ => ErrorCode::Other(format!("HTTP_{status}")),
                },
                message: String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned(),
                detail: None,
                request_id,
            },
        }
    }

    /// Whether sending the same request again, unchanged, may succeed.
    pub fn is_retryable(&self) -> bool {
        match self.code.retry_class() {
            Retry::Yes => true,
            Retry::No => false,
            Retry::ByStatus => self.status == 429 || self.status >= 500 || self.status == 202,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_are_understood() {
        for (old, new) in [
            ("SYSTEMERROR", ErrorCode::SystemError),
            ("SYSTEM_ERROR", ErrorCode::SystemError),
            ("ORDERNOTEXIST", ErrorCode::OrderNotExist),
            ("ORDER_NOT_EXIST", ErrorCode::OrderNotExist),
            ("NOTENOUGH", ErrorCode::NotEnough),
            ("RULELIMIT", ErrorCode::RuleLimit),
            ("NOAUTH", ErrorCode::NoAuth),
            ("BANKERROR", ErrorCode::BankError),
            ("ORDER_PAID", ErrorCode::OrderPaid),
            ("ORDERPAID", ErrorCode::OrderPaid),
            ("sign_error", ErrorCode::SignError),
        ] {
            assert_eq!(ErrorCode::parse(old), new, "{old}");
        }
        assert_eq!(
            ErrorCode::parse("SOMETHING_NEW"),
            ErrorCode::Other("SOMETHING_NEW".into())
        );
        assert_eq!(ErrorCode::SystemError.as_str(), "SYSTEM_ERROR");
    }

    #[test]
    fn retry_classification() {
        let err = |status, code: &str| {
            ApiError::from_answer(
                status,
                format!(r#"{{"code":"{code}","message":"m"}}"#).as_bytes(),
                None,
            )
        };
        assert!(err(500, "SYSTEMERROR").is_retryable());
        assert!(err(500, "BANK_ERROR").is_retryable());
        assert!(err(429, "FREQUENCY_LIMITED").is_retryable());
        assert!(err(503, "WHATEVER").is_retryable());
        assert!(!err(400, "PARAM_ERROR").is_retryable());
        assert!(!err(401, "SIGN_ERROR").is_retryable());
        assert!(!err(403, "NOT_ENOUGH").is_retryable());
        assert!(!err(404, "ORDER_NOT_EXIST").is_retryable());
        assert!(!err(400, "ORDER_CLOSED").is_retryable());
        assert!(!err(418, "WHATEVER").is_retryable());
        let unparsed = ApiError::from_answer(502, b"<html>bad gateway</html>", None);
        assert_eq!(unparsed.code, ErrorCode::ServiceUnavailable);
        assert!(unparsed.is_retryable());
    }
}
