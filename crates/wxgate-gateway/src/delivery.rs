//! Webhook delivery: workers claim due deliveries from the database, POST the signed event,
//! log the attempt and schedule the next one, until the endpoint answers 2xx or the retry
//! schedule is spent (dead-lettered, visible in `GET /v1/events?delivery_status=dead`).
//!
//! Claims carry a lease longer than one attempt's timeout, so a node that dies mid-delivery
//! leaves the delivery to another node once the lease ends: at least once, never lost. A
//! global limit bounds the attempts in flight, and a per-endpoint lane (that many in flight,
//! that many more waiting) keeps one slow merchant from taking every slot: an endpoint whose
//! lane is full is left out of the next claims.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, watch};
use wxgate_domain::door::Door;
use wxgate_domain::webhook;
use wxgate_store::{AttemptOutcome, AttemptRow, DeliveryRow, EventRow, NOTIFY_URL_ENDPOINT};

use crate::gateway::Gateway;

/// How long a delivery given back untried (no room for it on this node) waits before it is
/// claimable again.
const DEFER_MS: i64 = 200;
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
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            (
                v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
                v4.is_loopback()
                    || v4.is_private()
                    || v4.is_link_local()
                    || v4.is_documentation()
                    || a == 0
                    // 100.64.0.0/10, carrier-grade NAT
                    || (a == 100 && (b & 0xc0) == 64)
                    // 198.18.0.0/15, benchmarking
                    || (a == 198 && (b & 0xfe) == 18)
                    // 240.0.0.0/4, reserved
                    || a >= 240,
            )
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (
                v6.is_unspecified() || v6.is_multicast(),
                v6.is_loopback()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local()
                    // ::a.b.c.d (IPv4-compatible), 64:ff9b::/96 (NAT64), 64:ff9b:1::/48
                    // (local-use NAT64) and 2002::/16 (6to4) carry an IPv4 address that could
                    // be anything.
                    || s[..6] == [0; 6]
                    || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                    || s[..3] == [0x64, 0xff9b, 1]
                    || s[0] == 0x2002,
            )
        }
    };
    !never && (allow_private || !private)
}

/// A new signing secret: `whsec_` and 64 hex characters (256 random bits).
pub fn new_secret() -> String {
    let mut raw = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut raw);
    format!("whsec_{}", hex::encode(raw))
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

/// What this node has in flight per endpoint: at most `per_endpoint` attempts at once, and as
/// many more claimed and waiting their turn. An endpoint with a full queue is left out of the
/// next claims, so a slow endpoint holds at most twice its limit and never the global slots.
struct Lanes {
    global: Arc<Semaphore>,
    per_endpoint: usize,
    lanes: Mutex<HashMap<String, Lane>>,
    /// The events of claimed deliveries, read in one query per claim, taken by their attempts.
    events: Mutex<HashMap<String, EventRow>>,
    /// Turns true when the node stops: lanes then finish what they hold and claim no more.
    stop: watch::Receiver<bool>,
    recorder: Recorder,
}

/// The most attempts recorded in one transaction.
const RECORD_BATCH_MAX: usize = 64;

type Recording = (
    DeliveryRow,
    AttemptRow,
    AttemptOutcome,
    tokio::sync::oneshot::Sender<Result<bool, String>>,
);

/// Records attempts in groups: the attempts that end while a transaction is being written
/// are written together in the next one (group commit), so a busy endpoint's deliveries cost
/// the database one transaction per group instead of one each. Each attempt still waits for
/// its own record before its lane slot takes the next delivery.
#[derive(Clone)]
struct Recorder {
    queue: tokio::sync::mpsc::UnboundedSender<Recording>,
}

impl Recorder {
    fn start(gw: Gateway) -> Self {
        let (queue, mut waiting) = tokio::sync::mpsc::unbounded_channel::<Recording>();
        tokio::spawn(async move {
            let mut group = Vec::with_capacity(RECORD_BATCH_MAX);
            while waiting.recv_many(&mut group, RECORD_BATCH_MAX).await > 0 {
                let (rows, replies): (Vec<_>, Vec<_>) = group
                    .drain(..)
                    .map(|(d, a, o, reply)| ((d, a, o), reply))
                    .unzip();
                match gw.store().record_attempts(&rows).await {
                    Ok(recorded) => {
                        for (reply, r) in replies.into_iter().zip(recorded) {
                            let _ = reply.send(Ok(r));
                        }
                    }
                    Err(e) => {
                        for reply in replies {
                            let _ = reply.send(Err(e.to_string()));
                        }
                    }
                }
            }
        });
        Self { queue }
    }

    /// Records one attempt with the next group; whether it was recorded.
    async fn record(
        &self,
        d: &DeliveryRow,
        attempt: AttemptRow,
        outcome: AttemptOutcome,
    ) -> anyhow::Result<bool> {
        let (reply, recorded) = tokio::sync::oneshot::channel();
        self.queue
            .send((d.clone(), attempt, outcome, reply))
            .map_err(|_| anyhow::anyhow!("the attempt recorder has stopped"))?;
        recorded
            .await
            .map_err(|_| anyhow::anyhow!("the attempt recorder has stopped"))?
            .map_err(|e| anyhow::anyhow!("recording the attempt: {e}"))
    }
}

#[derive(Default)]
struct Lane {
    in_flight: usize,
    waiting: std::collections::VecDeque<DeliveryRow>,
    /// A finished attempt is claiming more of the lane's endpoint's due deliveries.
    refilling: bool,
}

/// What an attempt that just ended does next.
enum Next {
    /// Takes the next waiting delivery in its slot.
    Run(Box<DeliveryRow>),
    /// Gave up its slot, and claims more of its endpoint's due deliveries: as many as the
    /// lane has room for.
    Refill(usize),
    Done,
}

impl Lanes {
    /// Endpoints with a lane on this node: they claim their own due deliveries as their
    /// queues empty (see [`Lanes::finish`]), so the node's general claims leave them out.
    /// (Lanes of payments' own notify URLs are kept by merchant and host and do not claim for
    /// themselves; when one is full, its deliveries are put back instead.)
    fn self_fed(&self) -> Vec<String> {
        let lanes = self.lanes.lock().expect("lanes lock");
        lanes
            .keys()
            .filter(|key| !key.starts_with(NOTIFY_LANE))
            .cloned()
            .collect()
    }

    /// Starts the delivery if its endpoint has room, queues it if its lane can hold it, or
    /// hands it back to be released.
    fn admit(&self, d: DeliveryRow) -> Admit {
        let mut lanes = self.lanes.lock().expect("lanes lock");
        let lane = lanes.entry(lane_key(&d)).or_default();
        if lane.in_flight < self.per_endpoint {
            match self.global.clone().try_acquire_owned() {
                Ok(permit) => {
                    lane.in_flight += 1;
                    Admit::Start(d, permit)
                }
                Err(_) => Admit::Release(d),
            }
        } else if lane.waiting.len() < self.per_endpoint {
            lane.waiting.push_back(d);
            Admit::Queued
        } else {
            Admit::Release(d)
        }
    }

    /// An attempt in lane `key` ended: the next delivery waiting in it, if any, takes its slot.
    /// Otherwise the slot is given up, and the first attempt of an endpoint's lane to find the
    /// queue empty is told to claim more of that endpoint's due deliveries (at most what the
    /// lane holds), so a busy endpoint stays fed without the node claiming more than it takes.
    fn finish(&self, key: &str) -> Next {
        let mut lanes = self.lanes.lock().expect("lanes lock");
        let Some(lane) = lanes.get_mut(key) else {
            return Next::Done;
        };
        if let Some(next) = lane.waiting.pop_front() {
            return Next::Run(Box::new(next));
        }
        let refill = !key.starts_with(NOTIFY_LANE) && !lane.refilling;
        lane.refilling |= refill;
        Self::leave(&mut lanes, key);
        let busy = lanes.get(key).map_or(0, |l| l.in_flight);
        match refill {
            true => Next::Refill(2 * self.per_endpoint - busy),
            false => Next::Done,
        }
    }

    /// Admits what the refill of lane `key` claimed, then ends the refill. The lane stays
    /// marked as refilling until then, so a slot of it that ends meanwhile does not claim as
    /// well: two claims together could hold more than the lane, and what overflows it is put
    /// back for later. What `room` the refill asked for always fits.
    fn admit_refilled(&self, key: &str, claimed: Vec<DeliveryRow>) -> Vec<Admit> {
        let admitted = claimed.into_iter().map(|d| self.admit(d)).collect();
        self.refilled(key);
        admitted
    }

    /// The refill of lane `key` is over; a lane left with nothing in it is forgotten, so
    /// general claims take its endpoint again.
    fn refilled(&self, key: &str) {
        let mut lanes = self.lanes.lock().expect("lanes lock");
        if let Some(lane) = lanes.get_mut(key) {
            lane.refilling = false;
            if lane.in_flight == 0 && lane.waiting.is_empty() {
                lanes.remove(key);
            }
        }
    }

    /// An attempt gives up its slot in lane `key`; an empty lane is forgotten.
    fn leave(lanes: &mut HashMap<String, Lane>, key: &str) {
        if let Some(lane) = lanes.get_mut(key) {
            lane.in_flight -= 1;
            if lane.in_flight == 0 && lane.waiting.is_empty() && !lane.refilling {
                lanes.remove(key);
            }
        }
    }

    /// Everything waiting in every lane, taken out: the node is stopping, and attempts that end
    /// now find nothing more to run.
    fn take_waiting(&self) -> Vec<DeliveryRow> {
        let mut lanes = self.lanes.lock().expect("lanes lock");
        lanes
            .values_mut()
            .flat_map(|lane| lane.waiting.drain(..))
            .collect()
    }

    /// Keeps the events of claimed deliveries for their attempts.
    fn keep_events(&self, events: Vec<EventRow>) {
        self.events
            .lock()
            .expect("events lock")
            .extend(events.into_iter().map(|e| (e.id.clone(), e)));
    }
}

/// Lanes of payments' own notify URLs are keyed by this, the merchant and the URL's host.
const NOTIFY_LANE: &str = "notify_url:";

/// The lane a delivery runs in: its endpoint, or for a payment's own notify_url (in wxgate's
/// format or a front door's), its merchant and host (so one merchant's slow notify URLs do not
/// hold up another's, even on a host they share; the node's cap bounds them all).
fn lane_key(d: &DeliveryRow) -> String {
    if d.url.is_some() {
        let host = d
            .url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        format!("{NOTIFY_LANE}{}/{host}", d.merchant_id)
    } else {
        d.endpoint_id.clone()
    }
}

enum Admit {
    Start(DeliveryRow, tokio::sync::OwnedSemaphorePermit),
    Queued,
    Release(DeliveryRow),
}

/// Runs until `stop` turns true.
pub async fn run(gw: Gateway, mut stop: watch::Receiver<bool>) {
    let config = gw.config();
    let client = client(config.webhook_timeout, config.webhooks_allow_private);
    let lanes = Arc::new(Lanes {
        global: Arc::new(Semaphore::new(config.webhook_concurrency)),
        per_endpoint: config.webhook_per_endpoint.max(1),
        lanes: Mutex::new(HashMap::new()),
        events: Mutex::new(HashMap::new()),
        stop: stop.clone(),
        recorder: Recorder::start(gw.clone()),
    });
    let outbox = gw.store().outbox_signal();
    let freed = Arc::new(tokio::sync::Notify::new());
    loop {
        let claimed = match claim_round(&gw, &client, &lanes, &freed).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "webhook delivery round failed");
                0
            }
        };
        if claimed > 0 && lanes.global.available_permits() > 0 {
            continue;
        }
        tokio::select! {
            _ = stop.changed() => break,
            _ = outbox.notified() => {}
            _ = freed.notified() => {}
            _ = tokio::time::sleep(config.webhook_poll_interval) => {}
        }
    }
    wind_down(&gw, &lanes, config.webhook_concurrency).await;
}

/// The node is stopping: deliveries waiting in its lanes go back at once, for other nodes to
/// take without waiting out their leases, and the attempts in flight finish and are recorded
/// (the caller bounds how long that may take; an attempt cut off leaves its claim to lapse).
async fn wind_down(gw: &Gateway, lanes: &Lanes, slots: usize) {
    let waiting = lanes.take_waiting();
    if !waiting.is_empty() {
        tracing::info!(
            deliveries = waiting.len(),
            "stopping: giving back queued webhook deliveries"
        );
    }
    release(gw, lanes, waiting, gw.now_ms()).await;
    let slots = u32::try_from(slots).unwrap_or(u32::MAX);
    let _ = lanes.global.acquire_many(slots).await;
}

/// For tests and tools: claims and makes every due delivery, one at a time, until none is due
/// (at most `rounds` claims). Returns how many attempts were made.
pub async fn drain(gw: &Gateway, rounds: usize) -> anyhow::Result<usize> {
    let config = gw.config();
    let client = client(config.webhook_timeout, config.webhooks_allow_private);
    let mut made = 0;
    for _ in 0..rounds {
        let due = gw
            .store()
            .claim_due_deliveries(gw.now_ms(), lease_ms(gw), 64, &[])
            .await?;
        if due.is_empty() {
            return Ok(made);
        }
        for d in due {
            deliver(gw, &client, &d).await?;
            made += 1;
        }
    }
    Ok(made)
}

/// Claims due deliveries for free slots, leaving out endpoints whose lanes feed themselves,
/// and starts or queues them. Returns how many were claimed.
async fn claim_round(
    gw: &Gateway,
    client: &reqwest::Client,
    lanes: &Arc<Lanes>,
    freed: &Arc<tokio::sync::Notify>,
) -> anyhow::Result<usize> {
    let free = lanes.global.available_permits();
    if free == 0 {
        return Ok(0);
    }
    let now = gw.now_ms();
    // At most one lane's worth per claim, so a single endpoint's backlog is not claimed only
    // to be put back; the loop claims again at once while it finds work.
    let limit = free.min(2 * lanes.per_endpoint);
    let due = gw
        .store()
        .claim_due_deliveries(now, lease_ms(gw), limit as i64, &lanes.self_fed())
        .await?;
    lanes.keep_events(events_of(gw, &due).await?);
    let admitted = due.into_iter().map(|d| lanes.admit(d)).collect();
    Ok(act_on(gw, client, lanes, freed, admitted).await)
}

/// Starts what was admitted to run, and gives back what was not: how many were taken (started
/// or queued). The claims look again when what was given back falls due, not only at the next
/// poll; a round that took nothing (every lane it claimed for was full) does not claim again at
/// once, so full lanes are not claimed and given back in a tight loop.
async fn act_on(
    gw: &Gateway,
    client: &reqwest::Client,
    lanes: &Arc<Lanes>,
    freed: &Arc<tokio::sync::Notify>,
    admitted: Vec<Admit>,
) -> usize {
    let mut back = Vec::new();
    let mut taken = 0;
    for admit in admitted {
        match admit {
            Admit::Start(d, permit) => {
                taken += 1;
                start(gw, client, lanes, freed, d, permit);
            }
            Admit::Queued => taken += 1,
            Admit::Release(d) => back.push(d),
        }
    }
    if back.is_empty() {
        return taken;
    }
    release(gw, lanes, back, gw.now_ms() + DEFER_MS).await;
    let freed = freed.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(DEFER_MS.unsigned_abs())).await;
        freed.notify_one();
    });
    taken
}

/// Runs attempts to one endpoint on one slot: this delivery, then any waiting behind it.
fn start(
    gw: &Gateway,
    client: &reqwest::Client,
    lanes: &Arc<Lanes>,
    freed: &Arc<tokio::sync::Notify>,
    first: DeliveryRow,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let (gw, client, lanes, freed) = (gw.clone(), client.clone(), lanes.clone(), freed.clone());
    tokio::spawn(async move {
        let key = lane_key(&first);
        let mut next = Some(first);
        let mut refill = None;
        while let Some(d) = next {
            let event = lanes
                .events
                .lock()
                .expect("events lock")
                .remove(&d.event_id);
            let made = async {
                let (attempt, outcome) = attempt(&gw, &client, &d, event).await?;
                let recorded = lanes.recorder.record(&d, attempt, outcome).await?;
                not_recorded(&d, recorded);
                anyhow::Ok(())
            };
            if let Err(e) = made.await {
                tracing::warn!(event = %d.event_id, endpoint = %d.endpoint_id, error = %e, "webhook delivery failed; its claim will lapse and it will be retried");
            }
            next = match lanes.finish(&key) {
                Next::Run(d) => Some(*d),
                Next::Refill(room) => {
                    refill = Some((d.endpoint_id, room));
                    None
                }
                Next::Done => None,
            };
        }
        drop(permit);
        if let Some((endpoint_id, room)) = refill {
            let stopping = *lanes.stop.borrow();
            let claimed = match stopping {
                false => claim_for_lane(&gw, &lanes, &endpoint_id, room).await,
                true => Vec::new(),
            };
            let admitted = lanes.admit_refilled(&key, claimed);
            act_on(&gw, &client, &lanes, &freed, admitted).await;
        }
        freed.notify_one();
    });
}

/// The events of claimed deliveries, in one query.
async fn events_of(gw: &Gateway, due: &[DeliveryRow]) -> anyhow::Result<Vec<EventRow>> {
    let ids: Vec<String> = due.iter().map(|d| d.event_id.clone()).collect();
    Ok(gw.store().events_by_ids(&ids).await?)
}

/// Gives claimed deliveries back, to be claimed again from `at` (by this node or another).
async fn release(gw: &Gateway, lanes: &Lanes, rows: Vec<DeliveryRow>, at: i64) {
    for d in rows {
        lanes
            .events
            .lock()
            .expect("events lock")
            .remove(&d.event_id);
        if let Err(e) = gw.store().release_delivery(&d, at).await {
            tracing::warn!(event = %d.event_id, error = %e, "giving a delivery back failed; its claim will lapse");
        }
    }
}

/// Claims up to a lane's worth of its endpoint's due deliveries, with their events; nothing
/// when none is due or the claim fails (the regular claims pick them up).
async fn claim_for_lane(
    gw: &Gateway,
    lanes: &Lanes,
    endpoint_id: &str,
    room: usize,
) -> Vec<DeliveryRow> {
    let claimed = async {
        let due = gw
            .store()
            .claim_due_deliveries_of(endpoint_id, gw.now_ms(), lease_ms(gw), room as i64)
            .await?;
        lanes.keep_events(events_of(gw, &due).await?);
        anyhow::Ok(due)
    };
    claimed.await.unwrap_or_else(|e| {
        tracing::warn!(endpoint = %endpoint_id, error = %e, "claiming an endpoint's due deliveries failed");
        Vec::new()
    })
}

/// A claim outlasts its wait in a lane (at most one attempt's timeout) and its own attempt,
/// with room to record it. Should it lapse anyway, the worst case is a second delivery of the
/// same event, never a lost one.
fn lease_ms(gw: &Gateway) -> i64 {
    gw.config().webhook_timeout.as_millis() as i64 * 2 + 1_000
}

/// Makes one attempt at a claimed delivery and records it.
pub async fn deliver(
    gw: &Gateway,
    client: &reqwest::Client,
    d: &DeliveryRow,
) -> anyhow::Result<()> {
    let (attempt, outcome) = attempt(gw, client, d, None).await?;
    let recorded = gw.store().record_attempt(d, &attempt, outcome).await?;
    not_recorded(d, recorded);
    Ok(())
}

fn not_recorded(d: &DeliveryRow, recorded: bool) {
    if !recorded {
        tracing::info!(event = %d.event_id, endpoint = %d.endpoint_id, "delivery changed while in flight; attempt not recorded");
    }
}

/// One attempt, with the delivery's event when it was read already: what to record of it.
/// What stops a request from being made at all (the event or endpoint gone, a secret that
/// does not open, a door credential revoked) is an attempt too, recorded as not sent, so the
/// delivery runs its schedule and ends dead instead of being retried unseen for ever; only the
/// database failing is no attempt (its claim lapses and it is tried again).
async fn attempt(
    gw: &Gateway,
    client: &reqwest::Client,
    d: &DeliveryRow,
    event: Option<EventRow>,
) -> anyhow::Result<(AttemptRow, AttemptOutcome)> {
    let started = Instant::now();
    let at = gw.now_ms();
    let (status_code, error) = match request(gw, d, event, at).await {
        Ok((url, body, headers)) => {
            let allow_private = gw.config().webhooks_allow_private;
            post(client, &url, body, headers, allow_private).await
        }
        Err(e) if e.downcast_ref::<wxgate_store::StoreError>().is_some() => return Err(e),
        Err(e) => (None, Some(format!("not sent: {e:#}"))),
    };
    let latency_ms = started.elapsed().as_millis() as i64;
    gw.metrics()
        .delivery(error.is_none(), started.elapsed().as_secs_f64());
    let outcome = outcome(gw, d, error.is_none());
    if outcome == AttemptOutcome::Dead {
        tracing::warn!(event = %d.event_id, endpoint = %d.endpoint_id, "webhook dead-lettered after its retry schedule");
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
    Ok((attempt, outcome))
}

/// The request a delivery makes: its URL, body and headers.
async fn request(
    gw: &Gateway,
    d: &DeliveryRow,
    event: Option<EventRow>,
    at: i64,
) -> anyhow::Result<(String, String, Vec<(&'static str, String)>)> {
    let event = match event {
        Some(e) => e,
        None => gw
            .store()
            .event_by_id(&d.event_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("event {} is gone", d.event_id))?,
    };
    match Door::of_delivery_endpoint(&d.endpoint_id) {
        Some(door) => door_request(gw, d, door, &event, at).await,
        None => signed_event(gw, d, &event, at).await,
    }
}

/// Posts `body` to `url`: the answer's status code, and what went wrong if it was not a 2xx.
/// The URL is held to the address rules again first: an endpoint given as an IP literal never
/// meets the resolver's check, and the operator may have stopped allowing private targets
/// since it was registered.
async fn post(
    client: &reqwest::Client,
    url: &str,
    body: String,
    headers: Vec<(&'static str, String)>,
    allow_private: bool,
) -> (Option<i64>, Option<String>) {
    if let Err(why) = check_url(url, allow_private) {
        return (None, Some(format!("not sent: {why}")));
    }
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    match request.body(body).send().await {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                (Some(status.as_u16() as i64), None)
            } else {
                let snippet = body_start(response).await;
                (
                    Some(status.as_u16() as i64),
                    Some(format!("HTTP {}: {snippet}", status.as_u16())),
                )
            }
        }
        Err(e) => (None, Some(describe(&e))),
    }
}

/// A delivery's URL, body and headers: the event, signed with `Wxgate-Signature`.
async fn signed_event(
    gw: &Gateway,
    d: &DeliveryRow,
    event: &EventRow,
    at: i64,
) -> anyhow::Result<(String, String, Vec<(&'static str, String)>)> {
    let (url, secret_id, sealed) = destination(gw, d).await?;
    let secret = gw.signing_secret(&secret_id, &sealed)?;
    let body = event_json(event);
    let signature = webhook::sign(&secret, &secret_id, at / 1000, body.as_bytes());
    let headers = vec![
        (webhook::SIGNATURE_HEADER, signature),
        ("Wxgate-Event-Id", event.id.clone()),
        ("Wxgate-Event-Type", event.event_type.clone()),
    ];
    Ok((url, body, headers))
}

/// A delivery to the notify_url of a payment made through a front door: that system's own
/// notification, signed as it signs them.
async fn door_request(
    gw: &Gateway,
    d: &DeliveryRow,
    door: Door,
    event: &EventRow,
    at: i64,
) -> anyhow::Result<(String, String, Vec<(&'static str, String)>)> {
    let url = d
        .url
        .clone()
        .ok_or_else(|| anyhow::anyhow!("a door delivery without a URL"))?;
    // Signed with the merchant's newest credential of the door (its client secret).
    let credential = gw
        .store()
        .door_credential_of(door.as_str(), &d.merchant_id)
        .await?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "merchant {} has no {} credential",
                d.merchant_id,
                door.as_str()
            )
        })?;
    let secret = gw.signing_secret(
        &format!("door:{}", credential.key_id),
        &credential.secret_sealed,
    )?;
    let payment: serde_json::Value = serde_json::from_str(&event.payload)?;
    match door {
        Door::PaymentIntents => {
            let (body, headers) =
                crate::views::doors::payment_intents::notification(&payment, &secret, at);
            Ok((url, body, headers.to_vec()))
        }
        Door::OpenApi => {
            let kept: serde_json::Value = serde_json::from_str(&secret)?;
            let pem = kept["platform_private_key"].as_str().unwrap_or_default();
            let key = wechatpay_v3::crypto::PrivateKey::from_pkcs8_pem(pem)?;
            let body = crate::views::doors::open_api::notification(&payment, &key);
            Ok((url, body, Vec::new()))
        }
        // These doors notify nothing: no delivery is ever written in their format.
        Door::TwoCheckout | Door::Connect => {
            anyhow::bail!("the {} door sends no notifications", door.as_str())
        }
    }
}

/// Where a delivery goes and the secret that signs it: its endpoint's, or for a payment's own
/// `notify_url`, the merchant's notify secret.
async fn destination(gw: &Gateway, d: &DeliveryRow) -> anyhow::Result<(String, String, String)> {
    if d.endpoint_id == NOTIFY_URL_ENDPOINT {
        let Some(s) = gw.store().notify_secret(&d.merchant_id).await? else {
            anyhow::bail!("merchant {} has no notify secret", d.merchant_id);
        };
        return Ok((
            d.url.clone().unwrap_or_default(),
            s.secret_id,
            s.secret_sealed,
        ));
    }
    if let Some(cached) = gw.cached_endpoint(&d.endpoint_id) {
        return Ok(cached);
    }
    let Some(e) = gw.store().webhook_endpoint(&d.endpoint_id).await? else {
        anyhow::bail!("endpoint {} is gone", d.endpoint_id);
    };
    let destination = (e.url, e.secret_id, e.secret_sealed);
    gw.cache_endpoint(&d.endpoint_id, destination.clone());
    Ok(destination)
}

/// Delivered; or the next try on the retry schedule; or, with the schedule spent, dead.
fn outcome(gw: &Gateway, d: &DeliveryRow, delivered: bool) -> AttemptOutcome {
    if delivered {
        return AttemptOutcome::Delivered;
    }
    match gw
        .config()
        .webhook_retry_schedule_ms
        .get(d.round_attempts as usize)
    {
        Some(wait) => AttemptOutcome::Retry {
            next_at: gw.now_ms() + wait,
        },
        None => AttemptOutcome::Dead,
    }
}

/// The start of an answer's body, read no further than needed (an endpoint may answer a lot).
async fn body_start(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ERROR_BODY_MAX * 4 {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    String::from_utf8_lossy(&bytes)
        .chars()
        .take(ERROR_BODY_MAX)
        .collect()
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

    /// Lanes of `per_endpoint` slots each on a node of 64, with nothing behind them (the
    /// bookkeeping alone: no attempt runs, none is recorded).
    fn lanes(per_endpoint: usize) -> Lanes {
        Lanes {
            global: Arc::new(Semaphore::new(64)),
            per_endpoint,
            lanes: Mutex::default(),
            events: Mutex::default(),
            stop: watch::channel(false).1,
            recorder: Recorder {
                queue: tokio::sync::mpsc::unbounded_channel().0,
            },
        }
    }

    fn due(n: usize) -> Vec<DeliveryRow> {
        (0..n)
            .map(|i| DeliveryRow {
                event_id: format!("evt_{i}"),
                endpoint_id: "we_1".into(),
                merchant_id: "mch_1".into(),
                url: None,
                status: "pending".into(),
                attempts: 0,
                round_attempts: 0,
                next_attempt_at: Some(0),
                claimed_until: Some(1),
                last_attempt_at: None,
                last_status_code: None,
                last_error: None,
                created_at: 0,
                delivered_at: None,
            })
            .collect()
    }

    #[test]
    fn notify_url_lanes_are_a_merchants_host() {
        let notify = |merchant: &str, url: &str| DeliveryRow {
            endpoint_id: NOTIFY_URL_ENDPOINT.into(),
            merchant_id: merchant.into(),
            url: Some(url.into()),
            ..due(1).remove(0)
        };
        let a = lane_key(&notify("mch_a", "https://shop.example/a"));
        assert_eq!(a, lane_key(&notify("mch_a", "https://shop.example/other")));
        assert_ne!(a, lane_key(&notify("mch_b", "https://shop.example/a")));
        assert_ne!(a, lane_key(&notify("mch_a", "https://else.example/a")));
        assert_eq!(lane_key(&due(1).remove(0)), "we_1");
    }

    fn kinds(admitted: &[Admit]) -> (usize, usize, usize) {
        let count = |f: fn(&Admit) -> bool| admitted.iter().filter(|a| f(a)).count();
        (
            count(|a| matches!(a, Admit::Start(..))),
            count(|a| matches!(a, Admit::Queued)),
            count(|a| matches!(a, Admit::Release(_))),
        )
    }

    /// A lane refills once at a time, and what its refill claimed fits in it, however many of
    /// its slots ended meanwhile: nothing is given back to wait for a later claim.
    #[test]
    fn a_lane_refills_once_at_a_time_and_what_it_claims_fits() {
        let lanes = lanes(2);
        let first: Vec<Admit> = due(4).into_iter().map(|d| lanes.admit(d)).collect();
        assert_eq!(kinds(&first), (2, 2, 0), "two run, two wait");
        assert!(matches!(lanes.finish("we_1"), Next::Run(_)));
        assert!(matches!(lanes.finish("we_1"), Next::Run(_)));
        // The first slot to find nothing waiting claims for the lane; the other, ending while
        // that claim runs, leaves the lane to it.
        let Next::Refill(room) = lanes.finish("we_1") else {
            panic!("the first empty slot refills the lane");
        };
        assert_eq!(
            room, 3,
            "two slots and two places to wait, one slot still busy"
        );
        assert!(matches!(lanes.finish("we_1"), Next::Done));
        assert_eq!(lanes.self_fed(), vec!["we_1".to_string()]);
        let refill = lanes.admit_refilled("we_1", due(room));
        assert_eq!(kinds(&refill), (2, 1, 0), "all of the claim fits");
        // The refill is over: the next slot to find nothing waiting refills again.
        assert!(matches!(lanes.finish("we_1"), Next::Run(_)));
        assert!(matches!(lanes.finish("we_1"), Next::Refill(_)));
    }

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
            "http://198.18.0.1/hook",
            "http://250.1.2.3/hook",
            "http://[64:ff9b::7f00:1]/hook",
            "http://[64:ff9b:1::a00:1]/hook",
            "http://[2002:7f00:1::1]/hook",
            "http://[::10.0.0.1]/hook",
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
