//! WeChat Pay's field rules, with errors that name the field (as a JSON pointer, the way
//! WeChat's own `detail.field` does) and say why.

use std::net::IpAddr;

use serde::Serialize;

/// One field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {issue}")]
pub struct FieldError {
    /// A JSON pointer such as `/amount/total`.
    pub field: String,
    pub issue: String,
}

impl FieldError {
    pub fn new(field: &str, issue: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            issue: issue.into(),
        }
    }
}

pub type FieldResult = Result<(), FieldError>;

/// `value` has from `min` to `max` characters (not bytes).
pub fn chars_between(field: &str, value: &str, min: usize, max: usize) -> FieldResult {
    let n = value.chars().count();
    if n < min || n > max {
        let rule = if min == max {
            format!("must be {min} characters")
        } else if min <= 1 {
            format!("must be 1 to {max} characters")
        } else {
            format!("must be {min} to {max} characters")
        };
        return Err(FieldError::new(field, format!("{rule}, got {n}")));
    }
    Ok(())
}

fn charset(field: &str, value: &str, extra: &str) -> FieldResult {
    match value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || extra.contains(*c)))
    {
        None => Ok(()),
        Some(c) => Err(FieldError::new(
            field,
            format!("may hold only 0-9, A-Z, a-z and {extra}; found {c:?}"),
        )),
    }
}

/// `out_trade_no`: 6–32 characters of `[0-9A-Za-z_-|*]`.
pub fn out_trade_no(field: &str, value: &str) -> FieldResult {
    chars_between(field, value, 6, 32)?;
    charset(field, value, "_-|*")
}

/// `out_refund_no`: 1–64 characters of `[0-9A-Za-z_-|*@]`.
pub fn out_refund_no(field: &str, value: &str) -> FieldResult {
    chars_between(field, value, 1, 64)?;
    charset(field, value, "_-|*@")
}

/// `description`: 1–127 characters.
pub fn description(field: &str, value: &str) -> FieldResult {
    chars_between(field, value, 1, DESCRIPTION_CHARS_MAX)
}

/// The longest `description` WeChat takes, in characters.
pub const DESCRIPTION_CHARS_MAX: usize = 127;

/// `attach`: at most `max` characters (128 domestic, 127 cross-border).
pub fn attach(field: &str, value: &str, max: usize) -> FieldResult {
    chars_between(field, value, 1, max)
}

/// An amount in fen (or the currency's minor unit): an integer above zero.
pub fn positive_amount(field: &str, value: i64) -> FieldResult {
    if value <= 0 {
        return Err(FieldError::new(
            field,
            format!("must be a whole number of the smallest currency unit above 0, got {value}"),
        ));
    }
    Ok(())
}

/// An RFC 3339 time with an offset, e.g. `2018-06-08T10:34:56+08:00`. Returns Unix seconds.
pub fn rfc3339(field: &str, value: &str) -> Result<i64, FieldError> {
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| {
            FieldError::new(
                field,
                format!(
                    "must be an RFC 3339 time such as 2018-06-08T10:34:56+08:00, got {value:?}"
                ),
            )
        })
}

/// Whether a host is a loopback host (127.0.0.0/8, `localhost`, `::1`).
pub fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// `notify_url`: an absolute https URL of at most 255 characters with no query string.
/// Plain http is allowed for loopback hosts only, so local receivers work.
pub fn notify_url(field: &str, value: &str) -> FieldResult {
    chars_between(field, value, 1, 255)?;
    let url =
        url::Url::parse(value).map_err(|_| FieldError::new(field, "must be an absolute URL"))?;
    let host = url
        .host()
        .ok_or_else(|| FieldError::new(field, "must name a host"))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(&host) => {}
        "http" => {
            return Err(FieldError::new(
                field,
                "must use https (plain http only for loopback hosts)",
            ));
        }
        other => {
            return Err(FieldError::new(
                field,
                format!("must use https, not {other}"),
            ));
        }
    }
    if url.query().is_some() {
        return Err(FieldError::new(field, "must not carry a query string"));
    }
    Ok(())
}

/// `payer_client_ip`: an IPv4 or IPv6 address of at most 45 characters.
pub fn client_ip(field: &str, value: &str) -> FieldResult {
    chars_between(field, value, 1, 45)?;
    value.parse::<IpAddr>().map(|_| ()).map_err(|_| {
        FieldError::new(
            field,
            format!("must be an IPv4 or IPv6 address, got {value:?}"),
        )
    })
}

/// `openid`: 1–128 characters.
pub fn openid(field: &str, value: &str) -> FieldResult {
    chars_between(field, value, 1, 128)
}

/// `appid` / `mchid`: 1–32 characters.
pub fn id32(field: &str, value: &str) -> FieldResult {
    chars_between(field, value, 1, 32)
}

/// A bill date `yyyy-MM-dd`.
pub fn bill_date(field: &str, value: &str) -> Result<time::Date, FieldError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(value, &format)
        .map_err(|_| FieldError::new(field, format!("must be a date yyyy-MM-dd, got {value:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(result: FieldResult, expected: Option<&str>) {
        assert_eq!(result.err().map(|e| e.issue), expected.map(str::to_string));
    }

    #[test]
    fn out_trade_no_rules() {
        let f = |v: &str| out_trade_no("/out_trade_no", v);
        check(f("123456"), None);
        check(f("A_b-c|d*e"), None);
        check(f(&"x".repeat(32)), None);
        check(f("12345"), Some("must be 6 to 32 characters, got 5"));
        check(
            f(&"x".repeat(33)),
            Some("must be 6 to 32 characters, got 33"),
        );
        check(
            f("order#1"),
            Some("may hold only 0-9, A-Z, a-z and _-|*; found '#'"),
        );
        check(
            f("订单号码123"),
            Some("may hold only 0-9, A-Z, a-z and _-|*; found '订'"),
        );
    }

    #[test]
    fn out_refund_no_rules() {
        let f = |v: &str| out_refund_no("/out_refund_no", v);
        check(f("r"), None);
        check(f("r@1|*-_"), None);
        check(f(""), Some("must be 1 to 64 characters, got 0"));
        check(
            f(&"r".repeat(65)),
            Some("must be 1 to 64 characters, got 65"),
        );
        check(
            f("r 1"),
            Some("may hold only 0-9, A-Z, a-z and _-|*@; found ' '"),
        );
    }

    #[test]
    fn text_and_amount_rules() {
        check(description("/description", &"商".repeat(127)), None);
        check(
            description("/description", &"商".repeat(128)),
            Some("must be 1 to 127 characters, got 128"),
        );
        check(attach("/attach", &"a".repeat(128), 128), None);
        check(
            attach("/attach", &"a".repeat(128), 127),
            Some("must be 1 to 127 characters, got 128"),
        );
        check(positive_amount("/amount/total", 1), None);
        check(
            positive_amount("/amount/total", 0),
            Some("must be a whole number of the smallest currency unit above 0, got 0"),
        );
        assert_eq!(rfc3339("/t", "2018-06-08T10:34:56+08:00"), Ok(1528425296));
        assert!(rfc3339("/t", "2018-06-08 10:34:56").is_err());
        assert!(bill_date("/bill_date", "2019-06-11").is_ok());
        assert!(bill_date("/bill_date", "2019-6-11").is_err());
    }

    #[test]
    fn notify_url_rules() {
        let f = |v: &str| notify_url("/notify_url", v);
        check(f("https://example.com/notify"), None);
        check(f("http://127.0.0.1:8080/notify"), None);
        check(f("http://127.8.9.1/notify"), None);
        check(f("http://localhost/notify"), None);
        check(f("http://[::1]:9000/notify"), None);
        check(
            f("http://example.com/notify"),
            Some("must use https (plain http only for loopback hosts)"),
        );
        check(
            f("https://example.com/notify?x=1"),
            Some("must not carry a query string"),
        );
        check(
            f("ftp://example.com/notify"),
            Some("must use https, not ftp"),
        );
        check(f("/notify"), Some("must be an absolute URL"));
        check(
            f(&format!("https://example.com/{}", "a".repeat(240))),
            Some("must be 1 to 255 characters, got 260"),
        );
    }

    #[test]
    fn client_ip_rules() {
        check(client_ip("/ip", "203.0.113.7"), None);
        check(client_ip("/ip", "2001:db8::1"), None);
        check(
            client_ip("/ip", "not-an-ip"),
            Some("must be an IPv4 or IPv6 address, got \"not-an-ip\""),
        );
    }
}
