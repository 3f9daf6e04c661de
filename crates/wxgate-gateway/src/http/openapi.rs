//! The OpenAPI document of the merchant API, generated from the handlers and their types; the
//! error `code` enum comes from [`ErrorCode::ALL`].

use serde_json::Value;
use utoipa::OpenApi;

use crate::error::ErrorCode;
use crate::http::payments;
use crate::{links, qr, refunds, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(title = "wxgate merchant API", description = "Payments over WeChat Pay, for every integration type; refunds; webhooks and the event feed; payment links."),
    paths(payments::create_payment, payments::get_payment, payments::list_payments, payments::cancel_payment, payments::new_attempt,
        qr::png_image, qr::svg_image,
        refunds::create_refund, refunds::list_refunds, refunds::get_refund,
        webhooks::create_endpoint, webhooks::list_endpoints, webhooks::get_endpoint,
        webhooks::delete_endpoint, webhooks::list_events, webhooks::get_event,
        webhooks::redeliver, webhooks::redeliver_range, webhooks::rotate_notify_secret,
        webhooks::rotate_endpoint_secret, links::create_link, links::list_links,
        links::get_link, links::deactivate, links::link_payments),
    modifiers(&ApiKeyAuth)
)]
struct ApiDoc;

struct ApiKeyAuth;

impl utoipa::Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document, as JSON.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    if let Some(code) = doc
        .pointer_mut("/components/schemas/ErrorDetail/properties/code")
        .and_then(Value::as_object_mut)
    {
        code.insert("enum".into(), codes.into());
    }
    doc
}
