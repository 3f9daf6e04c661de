//! Front doors: other systems' APIs, translated onto the application layer. Each door owns its
//! wire shapes, authentication and error envelope; the rules are the `/v1` API's.

use wxgate_domain::door::Door;
use wxgate_store::{MerchantRow, PaymentRow};

use crate::app::payments as pay;
use crate::error::ApiResult;
use crate::gateway::Gateway;
use crate::http::payments::{CreatePayment, parse};

/// A payment made through a door: its request checked by the `/v1` rules, then created as any
/// payment is, remembering the door (whose format its notify_url hears).
pub(crate) async fn create_payment(
    gw: &Gateway,
    merchant: &MerchantRow,
    request: CreatePayment,
    door: Door,
) -> ApiResult<PaymentRow> {
    let new = parse(
        request,
        merchant,
        gw.now_ms(),
        gw.config().webhooks_allow_private,
    )?;
    let new = pay::NewPayment {
        door: Some(door),
        ..new
    };
    Ok(pay::create(gw, merchant, new).await?.state.payment)
}

pub mod connect;
pub mod open_api;
pub mod payment_intents;
pub mod two_checkout;
