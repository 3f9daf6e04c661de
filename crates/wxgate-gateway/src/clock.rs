//! Time outside a [`Gateway`](crate::gateway::Gateway): the system clock, for tools (merchant
//! creation from the CLI) and for checking WeChat's signed timestamps, which WeChat writes on
//! its own clock. Inside a gateway, `Gateway::now_ms` is the clock to use.

use wechatpay_v3::{Clock, SystemClock};

/// Milliseconds since the Unix epoch, by the system clock.
pub fn now_ms() -> i64 {
    SystemClock.now_unix_ms()
}
