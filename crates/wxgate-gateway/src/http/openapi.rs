//! The OpenAPI document of the merchant API, generated from the handlers and their types; the
//! error `code` enum comes from [`ErrorCode::ALL`].

use serde_json::Value;
use utoipa::OpenApi;

use crate::error::ErrorCode;
use crate::http::{links, money, payments, payouts, qr, refunds, reports, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(title = "wxgate merchant API", description = "Payments over WeChat Pay, for every integration type; refunds; payouts to WeChat users' balances; webhooks and the event feed; payment links; reconciliation against WeChat's bills, the balance and its ledger."),
    paths(payments::create_payment, payments::get_payment, payments::list_payments, payments::cancel_payment, payments::new_attempt,
        qr::png_image, qr::svg_image,
        refunds::create_refund, refunds::list_refunds, refunds::get_refund,
        payouts::create_payout, payouts::list_payouts, payouts::get_payout, payouts::cancel_payout,
        webhooks::create_endpoint, webhooks::list_endpoints, webhooks::get_endpoint,
        webhooks::delete_endpoint, webhooks::list_events, webhooks::get_event,
        webhooks::redeliver, webhooks::redeliver_range, webhooks::rotate_notify_secret,
        webhooks::rotate_endpoint_secret, links::create_link, links::list_links,
        links::get_link, links::deactivate, links::link_payments,
        money::create_reconciliation, money::list_reconciliations, money::get_reconciliation,
        money::discrepancies_csv, money::resolve_discrepancy, money::get_balance,
        money::list_balance_transactions, reports::create_report, reports::get_report,
        reports::download),
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

/// The OpenAPI document as `/openapi.json` serves it: made once, on the first request.
pub fn served() -> &'static str {
    static SERVED: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| document().to_string());
    &SERVED
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
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let operations = item.as_object_mut().into_iter().flat_map(|o| o.iter_mut());
            for (method, operation) in operations {
                add_shared_responses(path, method, operation);
            }
        }
        // The front doors: other systems' APIs, each under its own tag, in its own shapes
        // (docs/COMPAT.md describes each field).
        for (path, item) in front_door_paths() {
            paths.insert(path, item);
        }
    }
    let tags: Vec<Value> = FRONT_DOORS
        .iter()
        .map(|(tag, about, _)| serde_json::json!({"name": tag, "description": about}))
        .collect();
    doc["tags"] = tags.into();
    doc
}

/// Each front door: its tag, what it is, and its operations (method, path, summary). The
/// Connect door's operations are served on its own listener (`x-wxgate-listener`).
/// An operation of a front door: method, path, summary.
type DoorOperation = (&'static str, &'static str, &'static str);

const FRONT_DOORS: &[(&str, &str, &[DoorOperation])] = &[
    (
        "payment_intents",
        "A PSP's payment intents (system 001), `{code, data, message, rid}` envelope.",
        &[
            (
                "get",
                "/mch-api/v1/auth",
                "An access token from client credentials.",
            ),
            (
                "post",
                "/mch-api/v1/pa/payment_intents/create",
                "Create a payment intent.",
            ),
            (
                "post",
                "/mch-api/v1/pa/payment_intents/query",
                "An intent by order_id or merchant_order_id.",
            ),
        ],
    ),
    (
        "two_checkout",
        "2Checkout API 6.0 over JSON-RPC (system 000): login, placeOrder with WE_CHAT_PAY, getOrder.",
        &[
            (
                "post",
                "/rpc/6.0/",
                "A JSON-RPC 2.0 call: login, placeOrder or getOrder.",
            ),
            (
                "get",
                "/4.0/scripts/we_chat_pay/authorize/",
                "The WeChat Pay redirect (`?avng8apitoken=`) to the hosted checkout.",
            ),
        ],
    ),
    (
        "connect",
        "Worldline Connect, WeChat Pay product 863 (system 002), v1HMAC-signed, on its own listener.",
        &[
            (
                "post",
                "/v1/{merchantId}/payments",
                "Create a payment of an integration type.",
            ),
            ("get", "/v1/{merchantId}/payments/{paymentId}", "A payment."),
            (
                "get",
                "/v1/{merchantId}/payments/{paymentId}/thirdpartystatus",
                "WAITING or COMPLETED.",
            ),
            (
                "post",
                "/v1/{merchantId}/hostedcheckouts",
                "Create a hosted checkout.",
            ),
            (
                "get",
                "/v1/{merchantId}/hostedcheckouts/{hostedCheckoutId}",
                "A hosted checkout's status.",
            ),
        ],
    ),
    (
        "open_api",
        "A multi-country PSP's open API (system 003): `{appId, param, sign}` with RSA.",
        &[
            (
                "post",
                "/open-api/payment/generate",
                "A dynamic payment by WeChat channel.",
            ),
            ("post", "/open-api/payment/query", "A payment's status."),
            ("post", "/open-api/payment/refund", "Refund a payment."),
            (
                "post",
                "/open-api/payment/refund/query",
                "A refund's status.",
            ),
            (
                "post",
                "/open-api/account/balance",
                "The balance by currency.",
            ),
            (
                "post",
                "/open-api/disbursement/transfer",
                "A payout to a WeChat user.",
            ),
            ("post", "/open-api/disbursement/query", "A payout's status."),
            (
                "post",
                "/open-api/payment/refund/list",
                "A payment's refunds.",
            ),
            (
                "post",
                "/open-api/account/report/download",
                "A statement's download link.",
            ),
            ("post", "/open-api/qr/generate", "A static payment code."),
            (
                "post",
                "/open-api/qr/detail",
                "A static payment code by mchOrderId.",
            ),
            (
                "post",
                "/open-api/qr/payments",
                "The payments made to a code.",
            ),
            ("post", "/open-api/qr/cancel", "Cancel a code."),
        ],
    ),
];

/// The front doors' path items, tagged, answering in their own envelopes.
fn front_door_paths() -> Vec<(String, Value)> {
    let mut items: std::collections::BTreeMap<String, Value> = Default::default();
    for (tag, _, operations) in FRONT_DOORS {
        for (method, path, summary) in *operations {
            let mut operation = serde_json::json!({
                "tags": [tag], "summary": summary, "x-wxgate-door": tag,
                "responses": {"200": {"description": "The system's own answer (see docs/COMPAT.md)"}},
            });
            if *tag == "connect" {
                operation["x-wxgate-listener"] = "connect".into();
            }
            items
                .entry((*path).to_string())
                .or_insert_with(|| serde_json::json!({"parameters": path_parameters(path)}))
                [*method] = operation;
        }
    }
    items.into_iter().collect()
}

/// Each `{name}` in `path`, as the required text parameter it is.
fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            serde_json::json!({"name": name, "in": "path", "required": true,
                "schema": {"type": "string"}})
        })
        .collect()
}

/// The answers every route of its kind can give, whatever the handler: 401 behind an API key,
/// 400 for a parameter or body that does not parse, 404 for an unknown id, the idempotency
/// layer's answers on a POST, 413/415 for a JSON body, 503 when the database is away.
fn add_shared_responses(path: &str, method: &str, operation: &mut Value) {
    let mut shared: Vec<(&str, &str)> = vec![
        ("503", "database_unavailable or upstream_unavailable"),
        ("400", "invalid_characters (a query parameter)"),
    ];
    if operation.get("security").is_some() {
        shared.push(("401", "unauthorized"));
    }
    if path.contains('{') {
        shared.push(("404", "resource_missing"));
        shared.push(("400", "invalid_characters (in a path id)"));
    }
    if operation.get("parameters").is_some() {
        shared.push((
            "400",
            "invalid_query, invalid_characters, or a parameter's own code",
        ));
    }
    if method == "post" {
        shared.push(("400", "invalid_idempotency_key"));
        shared.push(("409", "idempotency_key_in_use"));
        shared.push(("422", "idempotency_key_reused"));
    }
    if operation.get("requestBody").is_some() {
        shared.push((
            "400",
            "invalid_json, parameter_missing, parameter_unknown, invalid_type, invalid_characters",
        ));
        shared.push(("413", "body_too_large"));
        shared.push(("415", "unsupported_media_type"));
    }
    let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (status, codes) in shared {
        responses.entry(status).or_insert_with(|| {
            serde_json::json!({
                "description": codes,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            })
        });
    }
}

#[cfg(test)]
mod tests {
    /// `pay_…` → `{id}`: a documented path in the OpenAPI document's form.
    fn template(path: &str) -> String {
        path.split('/')
            .map(|segment| match segment.split_once('_') {
                Some((_, rest)) if rest.starts_with('…') => "{id}".to_string(),
                _ => segment.to_string(),
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Every curl line of docs/GATEWAY.md's endpoint section calls a route the OpenAPI document
    /// has, with its method, so the examples cannot drift from the API.
    #[test]
    fn every_documented_curl_calls_a_route_that_exists() {
        let doc = include_str!("../../../../docs/GATEWAY.md");
        let start = doc
            .find("## Every endpoint, with curl")
            .expect("the section");
        let section = &doc[start
            ..doc[start..]
                .find("## Not there yet")
                .map_or(doc.len(), |e| start + e)];
        let openapi = super::document();
        let paths = openapi["paths"].as_object().expect("paths");
        let mut checked = 0;
        let lines: Vec<&str> = section.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(at) = line.find("$API/") else {
                continue;
            };
            if !line.contains("curl") {
                continue;
            }
            let url: String = line[at + 4..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '"')
                .collect();
            let path = template(url.split('?').next().unwrap_or_default());
            let continued = lines
                .get(i + 1)
                .is_some_and(|next| line.ends_with('\\') && next.contains("-d "));
            let method = if line.contains("-X DELETE") {
                "delete"
            } else if line.contains("-X POST") || line.contains(" -d ") || continued {
                "post"
            } else {
                "get"
            };
            let documented = paths.iter().any(|(p, item)| {
                let p = p
                    .split('/')
                    .map(|s| if s.starts_with('{') { "{id}" } else { s })
                    .collect::<Vec<_>>()
                    .join("/");
                p == path && item.get(method).is_some()
            });
            assert!(
                documented || path == "/openapi.json",
                "{method} {path}: {line}"
            );
            checked += 1;
        }
        assert!(checked >= 30, "only {checked} curl lines found");
    }
}
