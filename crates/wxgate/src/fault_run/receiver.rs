//! The merchant's webhook receiver in a fault run: checks every delivery's signature, keeps
//! the ids of the events it accepted, and refuses a share of deliveries with a 500 so retries
//! are exercised too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use rand::Rng;
use wxgate_domain::webhook;

/// The share of deliveries answered 500.
const REFUSED_SHARE: f64 = 0.05;

#[derive(Default)]
pub struct Log {
    /// The endpoint's (secret id, secret), known once the endpoint is created.
    pub secret: Mutex<Option<(String, String)>>,
    /// Accepted events: id → deliveries accepted.
    pub accepted: Mutex<HashMap<String, u32>>,
    pub bad_signatures: Mutex<u32>,
}

/// Serves the receiver on loopback; its URL.
pub async fn start(log: Arc<Log>) -> anyhow::Result<String> {
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(log);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

async fn receive(State(log): State<Arc<Log>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if rand::rng().random_bool(REFUSED_SHARE) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let Some((id, secret)) = log.secret.lock().expect("secret").clone() else {
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    let signature = headers
        .get(webhook::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let verified = webhook::verify(
        signature,
        &body,
        &[(id.as_str(), secret.as_str())],
        now,
        webhook::DEFAULT_TOLERANCE_SECS,
    );
    let event_id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_string));
    match (verified, event_id) {
        (Ok(_), Some(event_id)) => {
            *log.accepted
                .lock()
                .expect("accepted")
                .entry(event_id)
                .or_default() += 1;
            StatusCode::NO_CONTENT
        }
        _ => {
            *log.bad_signatures.lock().expect("bad") += 1;
            StatusCode::BAD_REQUEST
        }
    }
}
