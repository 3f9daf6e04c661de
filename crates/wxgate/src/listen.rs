//! `wxgate listen`: a local webhook receiver for the demo. It subscribes itself as a webhook
//! endpoint, prints every event it receives on one line with its signature checked, and
//! unsubscribes when it stops.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;
use wxgate_domain::webhook;

#[derive(Debug, clap::Args)]
pub struct ListenArgs {
    /// The demo's data folder: its demo.json gives the gateway and the API key.
    #[arg(long, default_value = ".wxgate")]
    demo: PathBuf,
    /// The loopback port to receive on (0: any free one).
    #[arg(long, default_value_t = 9000)]
    port: u16,
    /// Stop after this many events (by default, run until Ctrl-C).
    #[arg(long)]
    count: Option<usize>,
}

/// The endpoint's signing secret, to check each delivery.
struct Secret {
    id: String,
    value: String,
}

pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    let demo: Value = serde_json::from_slice(
        &std::fs::read(args.demo.join("demo.json")).with_context(|| {
            format!(
                "no demo.json in {} (start `wxgate demo` first)",
                args.demo.display()
            )
        })?,
    )?;
    let api = demo["api_base"].as_str().unwrap_or_default().to_string();
    let key = demo["api_key"].as_str().unwrap_or_default().to_string();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    let url = format!("http://{}/hooks", listener.local_addr()?);
    let http = reqwest::Client::new();
    let endpoint: Value = http
        .post(format!("{api}/v1/webhook_endpoints"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"url": url}))
        .send()
        .await?
        .error_for_status()
        .context("subscribing to the gateway's webhooks")?
        .json()
        .await?;
    let secret = Arc::new(Secret {
        id: endpoint["secret_id"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        value: endpoint["secret"].as_str().unwrap_or_default().to_string(),
    });
    let endpoint_id = endpoint["id"].as_str().unwrap_or_default().to_string();
    println!("listening on {url} for the demo merchant's events (endpoint {endpoint_id})");
    let (seen, mut events) = mpsc::unbounded_channel::<()>();
    let receiver = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            receive(secret.clone(), seen.clone(), headers, body)
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, receiver).await });
    let mut received = 0;
    loop {
        tokio::select! {
            got = events.recv() => {
                received += got.map_or(0, |()| 1);
                if args.count.is_some_and(|n| received >= n) {
                    break;
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    server.abort();
    let _ = http
        .delete(format!("{api}/v1/webhook_endpoints/{endpoint_id}"))
        .bearer_auth(&key)
        .send()
        .await;
    Ok(())
}

/// One delivery: its signature checked, one line printed, 204 (or 400 when the signature
/// does not verify, so the gateway retries and shows the failure).
async fn receive(
    secret: Arc<Secret>,
    seen: mpsc::UnboundedSender<()>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let signature = headers
        .get(webhook::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let now = wxgate_gateway::now_ms() / 1000;
    let verified = webhook::verify(
        signature,
        &body,
        &[(secret.id.as_str(), secret.value.as_str())],
        now,
        webhook::DEFAULT_TOLERANCE_SECS,
    );
    let event: Value = serde_json::from_slice(&body).unwrap_or_default();
    println!(
        "{} {} v{} {}",
        event["type"].as_str().unwrap_or("?"),
        event["object_id"].as_str().unwrap_or("?"),
        event["object_version"],
        if verified.is_ok() {
            "signature verified"
        } else {
            "SIGNATURE REFUSED"
        }
    );
    let _ = seen.send(());
    if verified.is_ok() {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::BAD_REQUEST
    }
}
