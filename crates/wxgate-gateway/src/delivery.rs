//! Webhook delivery: workers claim due deliveries from the database, POST the signed event,
//! log the attempt and schedule the next one, until the endpoint answers 2xx or the retry
//! schedule is spent (dead-lettered, visible in `GET /v1/events?delivery_status=dead`).
//!
//! Claims carry a lease longer than one attempt's timeout, so a node that dies mid-delivery
//! leaves the delivery to another node once the lease ends: at least once, never lost. A
//! global limit bounds concurrency, and a per-endpoint limit keeps one slow merchant from
//! taking every slot; deliveries over it are put back for a moment, untried.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, watch};
use wxgate_domain::webhook;
use wxgate_store::{AttemptOutcome, AttemptRow, DeliveryRow, EventRow};

use crate::{Gateway, now_ms};

/// How long a deferred delivery (its endpoint at its limit) waits before it is claimable again.
const DEFER_MS: i64 = 500;
/// The most of an endpoint's answer kept in the attempt log.
const ERROR_BODY_MAX: usize = 256;

/// An event as merchants receive it, in webhooks and from `GET /v1/events`.
#[derive(Serialize)]
pub struct EventEnvelope<'a> {
    pub id: &'a str,
    pub object: &'static str,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub created_at: String,
    pub object_id: &'a str,
    /// Grows by one with every change of the object: a merchant ignores an event whose
    /// version is not above the last one it applied.
    pub object_version: i64,
    pub data: EventData<'a>,
}

#[derive(Serialize)]
pub struct EventData<'a> {
    pub object: &'a RawValue,
}

/// The JSON body of an event.
pub fn event_json(e: &EventRow) -> String {
    let object = RawValue::from_string(e.payload.clone())
        .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"));
    serde_json::to_string(&EventEnvelope {
        id: &e.id,
        object: "event",
        event_type: &e.event_type,
        created_at: crate::views::rfc3339(e.created_at),
        object_id: &e.object_id,
        object_version: e.object_version,
        data: EventData { object: &object },
    })
    .expect("an event serialises")
}

/// Whether outbound requests may go to `ip`: never to unspecified, multicast or broadcast
/// addresses; to loopback, private, link-local and other non-public ranges only when allowed.
pub fn ip_allowed(ip: IpAddr, allow_private: bool) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let (never, private) = match ip {
        IpAddr::V4(v4) => (
            v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_documentation()
                || v4.octets()[0] == 0
                // 100.64.0.0/10, carrier-grade NAT
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64),
        ),
        IpAddr::V6(v6) => (
            v6.is_unspecified() || v6.is_multicast(),
            v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local(),
        ),
    };
    !never && (allow_private || !private)
}

/// Checks a webhook URL: absolute http(s), a host, no credentials, at most 2048 characters, and
/// (unless allowed) not naming a loopback or private host. Names are checked again, after
/// resolution, at every delivery.
pub fn check_url(raw: &str, allow_private: bool) -> Result<url::Url, &'static str> {
    if raw.len() > 2048 {
        return Err("url must be at most 2048 characters");
    }
    let url = url::Url::parse(raw).map_err(|_| "url must be an absolute URL")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("url must use http or https");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("url must not carry credentials");
    }
    let private_msg = "url must not point at a loopback or private address";
    match url.host() {
        None => return Err("url must have a host"),
        Some(url::Host::Ipv4(ip)) if !ip_allowed(ip.into(), allow_private) => {
            return Err(private_msg);
        }
        Some(url::Host::Ipv6(ip)) if !ip_allowed(ip.into(), allow_private) => {
            return Err(private_msg);
        }
        Some(url::Host::Domain(d))
            if !allow_private && (d == "localhost" || d.ends_with(".localhost")) =>
        {
            return Err(private_msg);
        }
        _ => {}
    }
    Ok(url)
}

/// Resolves names and drops the addresses outbound requests may not reach, so a name that
/// resolves to a private address is refused at connection time, not just at registration.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| ip_allowed(a.ip(), allow_private))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no address webhooks may reach").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client webhooks go out on: short timeout, no redirects, no proxies, guarded DNS.
pub fn client(timeout: Duration, allow_private: bool) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(GuardedResolver { allow_private })
        .user_agent(concat!("wxgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the webhook client builds")
}

struct Limits {
    global: Arc<Semaphore>,
    per_endpoint: Mutex<HashMap<String, Arc<Semaphore>>>,
    per_endpoint_max: usize,
}

impl Limits {
    fn endpoint(&self, id: &str) -> Arc<Semaphore> {
        let mut map = self.per_endpoint.lock().expect("limits lock");
        map.entry(id.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_endpoint_max)))
            .clone()
    }
}

/// Runs until `stop` turns true.
pub async fn run(gw: Gateway, mut stop: watch::Receiver<bool>) {
    let config = gw.config();
    let client = client(config.webhook_timeout, config.webhooks_allow_private);
    let limits = Arc::new(Limits {
        global: Arc::new(Semaphore::new(config.webhook_concurrency)),
        per_endpoint: Mutex::new(HashMap::new()),
        per_endpoint_max: config.webhook_per_endpoint,
    });
    let outbox = gw.store().outbox_signal();
    let freed = Arc::new(tokio::sync::Notify::new());
    loop {
        let claimed = match claim_round(&gw, &client, &limits, &freed).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "webhook delivery round failed");
                0
            }
        };
        if claimed > 0 && limits.global.available_permits() > 0 {
            continue;
        }
        tokio::select! {
            _ = stop.changed() => break,
            _ = outbox.notified() => {}
            _ = freed.notified(), if limits.global.available_permits() == 0 => {}
            _ = tokio::time::sleep(config.webhook_poll_interval) => {}
        }
    }
}

/// Claims as many due deliveries as there are free slots and starts them. Returns how many
/// were claimed.
async fn claim_round(
    gw: &Gateway,
    client: &reqwest::Client,
    limits: &Arc<Limits>,
    freed: &Arc<tokio::sync::Notify>,
) -> anyhow::Result<usize> {
    let free = limits.global.available_permits();
    if free == 0 {
        return Ok(0);
    }
    let now = now_ms();
    let lease = lease_ms(gw);
    let due = gw
        .store()
        .claim_due_deliveries(now, lease, free.min(256) as i64)
        .await?;
    let n = due.len();
    for d in due {
        let Ok(endpoint_permit) = limits.endpoint(&d.endpoint_id).try_acquire_owned() else {
            gw.store().release_delivery(&d, now + DEFER_MS).await?;
            continue;
        };
        let global_permit = limits
            .global
            .clone()
            .try_acquire_owned()
            .expect("only this loop takes slots");
        let (gw, client, freed) = (gw.clone(), client.clone(), freed.clone());
        tokio::spawn(async move {
            if let Err(e) = deliver(&gw, &client, &d).await {
                tracing::warn!(event = %d.event_id, endpoint = %d.endpoint_id, error = %e, "webhook delivery failed; its claim will lapse and it will be retried");
            }
            drop((endpoint_permit, global_permit));
            freed.notify_one();
        });
    }
    Ok(n)
}

/// A claim outlasts one attempt with room to record it. Should recording take longer still,
/// the worst case is a second delivery of the same event, never a lost one.
fn lease_ms(gw: &Gateway) -> i64 {
    gw.config().webhook_timeout.as_millis() as i64 * 2 + 1_000
}

/// Makes one attempt at a claimed delivery and records it.
pub async fn deliver(
    gw: &Gateway,
    client: &reqwest::Client,
    d: &DeliveryRow,
) -> anyhow::Result<()> {
    let store = gw.store();
    let Some(endpoint) = store.webhook_endpoint(&d.endpoint_id).await? else {
        anyhow::bail!("endpoint {} is gone", d.endpoint_id);
    };
    let Some(event) = store.event_by_id(&d.event_id).await? else {
        anyhow::bail!("event {} is gone", d.event_id);
    };
    let secret = gw.webhook_secret(&endpoint)?;
    let body = event_json(&event);
    let started = Instant::now();
    let at = now_ms();
    let signature = webhook::sign(&secret, &endpoint.secret_id, at / 1000, body.as_bytes());
    let sent = client
        .post(&endpoint.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(webhook::SIGNATURE_HEADER, signature)
        .header("Wxgate-Event-Id", &event.id)
        .header("Wxgate-Event-Type", &event.event_type)
        .body(body)
        .send()
        .await;
    let (status_code, error) = match sent {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                (Some(status.as_u16() as i64), None)
            } else {
                let text = response.text().await.unwrap_or_default();
                let snippet: String = text.chars().take(ERROR_BODY_MAX).collect();
                (
                    Some(status.as_u16() as i64),
                    Some(format!("HTTP {}: {snippet}", status.as_u16())),
                )
            }
        }
        Err(e) => (None, Some(describe(&e))),
    };
    let latency_ms = started.elapsed().as_millis() as i64;
    let schedule = &gw.config().webhook_retry_schedule_ms;
    let outcome = if error.is_none() {
        AttemptOutcome::Delivered
    } else {
        match schedule.get(d.round_attempts as usize) {
            Some(wait) => AttemptOutcome::Retry {
                next_at: now_ms() + wait,
            },
            None => AttemptOutcome::Dead,
        }
    };
    if outcome == AttemptOutcome::Dead {
        tracing::warn!(event = %event.id, endpoint = %endpoint.id, "webhook dead-lettered after its retry schedule");
    }
    let attempt = AttemptRow {
        event_id: d.event_id.clone(),
        endpoint_id: d.endpoint_id.clone(),
        attempt: d.attempts + 1,
        at,
        status_code,
        latency_ms,
        error,
    };
    if !store.record_attempt(d, &attempt, outcome).await? {
        tracing::info!(event = %event.id, endpoint = %endpoint.id, "delivery changed while in flight; attempt not recorded");
    }
    Ok(())
}

/// A transport error in a few words, without the URL's query (it may carry a token).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_redirect() {
        "redirected"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {cause}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(check_url("https://shop.example/hooks/wxgate", false).is_ok());
        assert!(check_url("http://203.0.113.9:8080/hook", true).is_ok());
        for bad in [
            "ftp://shop.example/hook",
            "https://user:pw@shop.example/hook",
            "/relative",
            "http://127.0.0.1:9000/hook",
            "http://localhost/hook",
            "http://10.1.2.3/hook",
            "http://192.168.0.10/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/hook",
            "http://[fd00::1]/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://100.64.0.1/hook",
            "http://0.0.0.0/hook",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        // The operator may allow loopback and private targets (tests, the demo), never these.
        assert!(check_url("http://127.0.0.1:9000/hook", true).is_ok());
        assert!(check_url("http://0.0.0.0/hook", true).is_err());
        assert!(check_url("http://224.0.0.1/hook", true).is_err());
        assert!(check_url(&format!("https://a.example/{}", "x".repeat(2048)), true).is_err());
    }

    #[test]
    fn public_addresses_are_allowed() {
        assert!(ip_allowed("203.0.113.1".parse().unwrap(), true));
        assert!(ip_allowed("8.8.8.8".parse().unwrap(), false));
        assert!(ip_allowed("2001:4860:4860::8888".parse().unwrap(), false));
        assert!(!ip_allowed("127.0.0.53".parse().unwrap(), false));
    }
}
