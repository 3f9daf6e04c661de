//! WeChat's time and id formats, and the real clock (answer signatures carry real time).

use rand::Rng;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub(crate) fn real_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// RFC 3339 in China Standard Time, the way WeChat writes times.
pub fn rfc3339_cst(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(time::macros::offset!(+8))
        .format(&Rfc3339)
        .expect("a valid time formats")
}

pub(crate) fn digits(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

pub(crate) fn lower_hex(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from_digit(rng.random_range(0..16u32), 16).expect("below 16"))
        .collect()
}

/// `yyyyMMdd` / `yyyyMMddHHmmss` of a time in China Standard Time.
pub(crate) fn cst_compact(unix: i64, with_time: bool) -> String {
    let t = OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(time::macros::offset!(+8));
    let date = format!("{:04}{:02}{:02}", t.year(), t.month() as u8, t.day());
    if with_time {
        format!("{date}{:02}{:02}{:02}", t.hour(), t.minute(), t.second())
    } else {
        date
    }
}
