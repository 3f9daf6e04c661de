//! `wxgate bench`: load runs for the figures in docs/BENCHMARKS.md. Benchmarks, not tests:
//! they print measurements and assert nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use wechatpay_v3::auth::MerchantSigner;
use wechatpay_v3::client::{Client, ClientConfig};
use wechatpay_v3::crypto::{Certificate, PrivateKey, PublicKey};
use wechatpay_v3::model::{Amount, PrepayRequest};
use wechatpay_v3::verify::Verifier;

#[derive(Debug, clap::Args)]
pub struct SimBenchArgs {
    /// The simulator to load (start it with `wxgate sim`).
    #[arg(long, default_value = "http://127.0.0.1:8090")]
    url: url::Url,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long to run.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// `public_key` or `certificate`.
    #[arg(long, default_value = "public_key")]
    signing: String,
}

/// Native prepay against the simulator, with the crate's own client (signing each request and
/// verifying each answer), plus this machine's RSA-2048 signing rate as the bound.
pub async fn sim(args: SimBenchArgs) -> anyhow::Result<()> {
    let base = args.url.as_str().trim_end_matches('/').to_string();
    let (client, appid, mchid) = sandbox_client(&base, &args.signing).await?;

    let sign_rate = SigningBound::measure()?.rate;

    let counter = Arc::new(AtomicU64::new(0));
    let report = load(
        args.concurrency,
        Duration::from_secs(args.duration_secs),
        move |w| {
            let (client, appid, mchid, counter) = (
                client.clone(),
                appid.clone(),
                mchid.clone(),
                counter.clone(),
            );
            async move {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let req = PrepayRequest {
                    appid,
                    mchid,
                    description: "bench".into(),
                    out_trade_no: format!("bench{w:03}x{n:010}"),
                    notify_url: "http://127.0.0.1:9/notify".into(),
                    amount: Amount {
                        total: 1,
                        currency: Some("CNY".into()),
                    },
                    ..Default::default()
                };
                client.prepay_native(&req).await.is_ok()
            }
        },
    )
    .await;
    report.print("native prepay", args.concurrency);
    let rate = report.rate();
    // One prepay costs two private-key signatures on this machine: the client's request and
    // the simulator's answer (verifications are cheap public-key operations).
    println!(
        "ratio to the signing bound (signatures/s ÷ 2): {:.2}",
        rate / (sign_rate / 2.0)
    );
    Ok(())
}

/// A new merchant minted at the simulator (`signing`: `public_key` or `certificate`): its
/// credentials bundle.
pub async fn mint_at_simulator(
    http: &reqwest::Client,
    sim: &str,
    signing: &str,
) -> anyhow::Result<serde_json::Value> {
    Ok(http
        .post(format!("{sim}/sim/merchants"))
        .json(&serde_json::json!({"signing": signing}))
        .send()
        .await
        .context("is the simulator running?")?
        .error_for_status()?
        .json()
        .await?)
}

/// A new sandbox merchant at the simulator, and the crate's client for it (one attempt per
/// request, so the benchmark measures requests, not retries): (client, appid, mchid).
async fn sandbox_client(base: &str, signing: &str) -> anyhow::Result<(Client, String, String)> {
    let bundle = mint_at_simulator(&reqwest::Client::new(), base, signing).await?;
    let s = |k: &str| bundle[k].as_str().unwrap_or_default().to_string();
    let mut verifier = Verifier::new();
    if signing == "certificate" {
        verifier.add_certificate(Certificate::from_pem(&s("platform_certificate"))?);
    } else {
        verifier.add_public_key(
            s("platform_public_key_id"),
            PublicKey::from_spki_pem(&s("platform_public_key"))?,
        );
    }
    let signer = MerchantSigner {
        mchid: s("mchid"),
        serial_no: s("merchant_serial_no"),
        key: PrivateKey::from_pkcs8_pem(&s("merchant_private_key"))?,
    };
    let mut config = ClientConfig::new(url::Url::parse(&format!("{base}/"))?, signer, verifier);
    config.attempts_max = 1;
    let client = Client::new(config)?;
    Ok((client, s("appid"), s("mchid")))
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// RSA-2048 PKCS#1 v1.5 SHA-256 signing with every core at it, for two seconds: the bound
/// of the runs that sign.
pub struct SigningBound {
    /// Signatures per second, all cores together.
    pub rate: f64,
    /// The CPU one signature costs while every core signs (read from this process's own CPU
    /// time, so other processes and stolen time do not count; cores that are hyperthreads of
    /// one physical core slow each other down, as they do under load).
    pub loaded_cpu_secs: f64,
}

impl SigningBound {
    /// Measures the bound and prints it.
    pub fn measure() -> anyhow::Result<Self> {
        let key = Arc::new(PrivateKey::generate().expect("key generation"));
        let deadline = Instant::now() + Duration::from_secs(2);
        let (started, cpu_before) = (Instant::now(), process_cpu_secs(std::process::id())?);
        let threads: Vec<_> = (0..cores())
            .map(|_| {
                let key = key.clone();
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        key.sign(SIGNED);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let total: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
        let cpu = process_cpu_secs(std::process::id())? - cpu_before;
        let bound = Self {
            rate: total as f64 / started.elapsed().as_secs_f64(),
            loaded_cpu_secs: cpu / total.max(1) as f64,
        };
        println!(
            "RSA-2048 signing on all {} cores: {:.0} signatures/s",
            cores(),
            bound.rate
        );
        Ok(bound)
    }
}

/// What the signing bounds sign: a request's signing string.
const SIGNED: &[u8] =
    b"POST\n/v3/pay/transactions/native\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n{}\n";

/// The CPU one RSA-2048 signature costs with one core signing and the others idle, in
/// seconds, from this process's own CPU time.
fn one_core_signature_cpu_secs() -> anyhow::Result<f64> {
    const SIGNATURES: u32 = 1_000;
    let key = PrivateKey::generate().expect("key generation");
    let before = process_cpu_secs(std::process::id())?;
    for _ in 0..SIGNATURES {
        key.sign(SIGNED);
    }
    Ok((process_cpu_secs(std::process::id())? - before) / f64::from(SIGNATURES))
}

/// A process's CPU time so far (user + system), in seconds, from /proc.
fn process_cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    stat_cpu_secs(&stat).with_context(|| format!("cannot read /proc/{pid}/stat"))
}

/// The fields of a /proc/<pid>/stat line after the command name (which may hold spaces):
/// state is the first, the parent's pid the second, utime the 12th and stime the 13th.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// The CPU time (user + system, in seconds) a /proc/<pid>/stat line holds.
fn stat_cpu_secs(stat: &str) -> Option<f64> {
    let fields = stat_fields(stat);
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    Some((ticks(11)? + ticks(12)?) / clock_ticks_per_sec())
}

/// How many times the threads of process `pid` have left the CPU so far (voluntary and
/// involuntary context switches, summed over its live threads, from /proc): the wake-ups and
/// hand-offs a request costs beyond its instructions.
fn process_switches(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue; // the thread ended meanwhile
        };
        total += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok(total)
}

/// The machine's CPU time so far, busy and in all (idle included), in clock ticks, from
/// /proc/stat: how much of the machine a phase kept busy.
fn machine_ticks() -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().unwrap_or_default();
    let fields: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    anyhow::ensure!(fields.len() >= 5, "cannot read /proc/stat");
    // user nice system idle iowait irq softirq steal ...: idle and iowait are not busy.
    let total: f64 = fields.iter().take(8).sum();
    Ok((total - fields[3] - fields[4], total))
}

/// CPU taken during a phase: the gateway's (when its pid is known), the database server's
/// (when its main process is known: `server_cpu_secs`) and the machine's.
pub struct CpuProbe {
    pid: Option<u32>,
    database: Option<u32>,
    gateway: f64,
    switches: u64,
    server: f64,
    machine: (f64, f64),
}

/// What a phase took, from [`CpuProbe::stop`].
pub struct CpuSpent {
    /// The gateway's CPU seconds (0 without its pid).
    pub gateway: f64,
    /// The gateway's context switches (0 without its pid).
    pub switches: u64,
    /// The database server's CPU seconds, when its pid is known.
    pub database: Option<f64>,
    /// The share of the machine's CPU that was busy.
    pub busy: f64,
}

impl CpuProbe {
    pub fn start(pid: Option<u32>) -> anyhow::Result<Self> {
        Self::with_database(pid, None)
    }

    pub fn with_database(pid: Option<u32>, database: Option<u32>) -> anyhow::Result<Self> {
        Ok(Self {
            pid,
            database,
            gateway: pid.map(process_cpu_secs).transpose()?.unwrap_or(0.0),
            switches: pid.map(process_switches).transpose()?.unwrap_or(0),
            server: database.map(server_cpu_secs).transpose()?.unwrap_or(0.0),
            machine: machine_ticks()?,
        })
    }

    pub fn stop(&self) -> anyhow::Result<CpuSpent> {
        let gateway = self.pid.map(process_cpu_secs).transpose()?;
        let switches = self.pid.map(process_switches).transpose()?;
        let database = self.database.map(server_cpu_secs).transpose()?;
        let (busy, total) = machine_ticks()?;
        Ok(CpuSpent {
            gateway: gateway.map_or(0.0, |now| now - self.gateway),
            switches: switches.map_or(0, |now| now.saturating_sub(self.switches)),
            database: database.map(|now| now - self.server),
            busy: (busy - self.machine.0) / (total - self.machine.1).max(1.0),
        })
    }
}

impl CpuSpent {
    /// Prints the gateway's context switches per `what` over `n` requests.
    fn print_switches(&self, what: &str, n: f64) {
        println!(
            "gateway context switches per {what}: {:.2}",
            self.switches as f64 / n
        );
    }

    /// Prints the database server's CPU per `what` over `n` requests, when it was measured.
    fn print_database(&self, what: &str, n: f64) {
        if let Some(spent) = self.database {
            println!(
                "database server CPU per {what}: {:.1} µs (its main process and children)",
                spent / n * 1e6
            );
        }
    }
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`), asked once.
fn clock_ticks_per_sec() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Where creates go, for the runs that make them.
struct CreateRun<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
    api_key: &'a str,
    concurrency: usize,
    /// The database server's main process, when known (`GatewayBenchArgs::database_pid`).
    database: Option<u32>,
}

/// The gateway's CPU per native create, against one RSA-2048 signature (on one core, and with
/// every core signing: `loaded_signature`): creates for 4 s, then the CPU their first status
/// sync takes, reported separately. Answers the payments it made.
async fn cpu_per_create(
    run: &CreateRun<'_>,
    pid: u32,
    loaded_signature: f64,
) -> anyhow::Result<Vec<String>> {
    let signature = one_core_signature_cpu_secs()?;
    let probe = CpuProbe::with_database(Some(pid), run.database)?;
    let (creates, ids) = create_load(
        run.http,
        run.base,
        run.api_key,
        run.concurrency,
        Duration::from_secs(4),
    )
    .await;
    let last_create = Instant::now();
    let spent = probe.stop()?;
    let n = creates.latencies_us.len().max(1) as f64;
    let per_create = spent.gateway / n;
    println!(
        "gateway CPU per native create: {:.3} ms over {n} creates = {:.2} × one RSA-2048 signature on one core ({:.3} ms), {:.2} × one with every core signing ({:.3} ms)",
        per_create * 1000.0,
        per_create / signature,
        signature * 1000.0,
        per_create / loaded_signature,
        loaded_signature * 1000.0
    );
    spent.print_switches("create", n);
    spent.print_database("create", n);
    let probe = CpuProbe::with_database(Some(pid), run.database)?;
    first_sync_done(run.http, run.base, last_create).await?;
    let spent = probe.stop()?;
    println!(
        "their first status sync: {:.3} ms of gateway CPU per payment (done {:.1} s after the last create)",
        spent.gateway / n * 1000.0,
        last_create.elapsed().as_secs_f64()
    );
    spent.print_database("payment's first sync (and the wait for it)", n);
    Ok(ids)
}

/// How long the gateway's CPU per read is measured.
const CPU_READS: Duration = Duration::from_secs(2);

/// The gateway's CPU per `GET /v1/payments/{id}` of `ids`, read for 2 s while nothing else
/// runs (their first sync is done, the next is 10 s away).
/// Set against `bare`, the gateway's CPU per `GET /health` in the bare phase.
async fn cpu_per_read(
    run: &CreateRun<'_>,
    pid: u32,
    ids: Vec<String>,
    bare: f64,
) -> anyhow::Result<()> {
    anyhow::ensure!(!ids.is_empty(), "no payment was created");
    let probe = CpuProbe::with_database(Some(pid), run.database)?;
    let reads = read_load(run, ids, CPU_READS).await;
    let spent = probe.stop()?;
    let n = reads.latencies_us.len().max(1) as f64;
    let per_read = spent.gateway / n;
    println!(
        "gateway CPU per read (GET /v1/payments/{{id}}, nothing else running): {:.1} µs over {n} reads = {:.2} × the CPU per GET /health ({:.1} µs)",
        per_read * 1e6,
        per_read / bare,
        bare * 1e6
    );
    spent.print_switches("read", n);
    spent.print_database("read", n);
    Ok(())
}

/// Reads of `ids` for `duration` while the payments made so far are synced, then who had the
/// machine meanwhile: how busy it was, and how much of it the gateway took.
async fn reads_beside_sync(
    run: &CreateRun<'_>,
    ids: Vec<String>,
    duration: Duration,
    pid: Option<u32>,
) -> anyhow::Result<Report> {
    let probe = CpuProbe::start(pid)?;
    let started = Instant::now();
    let get = read_load(run, ids, duration).await;
    let spent = probe.stop()?;
    get.print("GET /v1/payments/{id}", run.concurrency);
    println!(
        "while it ran: the machine {:.0} % busy, the gateway {:.2} cores of {} ({:.1} µs of its CPU per read, its syncs included)",
        spent.busy * 100.0,
        spent.gateway / started.elapsed().as_secs_f64(),
        cores(),
        spent.gateway / get.latencies_us.len().max(1) as f64 * 1e6
    );
    Ok(get)
}

/// CPU time so far of process `root` and of its children, in seconds: a database server's
/// main process and the processes it forked (PostgreSQL's backends, one per connection, which
/// live as long as the gateway's pool keeps them).
fn server_cpu_secs(root: u32) -> anyhow::Result<f64> {
    let mut total = process_cpu_secs(root)?;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A child may exit between the listing and the reading: it is left out.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let parent = stat_fields(&stat)
            .get(1)
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(root) {
            total += stat_cpu_secs(&stat).unwrap_or(0.0);
        }
    }
    Ok(total)
}

/// `GET /v1/payments/{id}` of `ids` in turn, for `duration`.
async fn read_load(run: &CreateRun<'_>, ids: Vec<String>, duration: Duration) -> Report {
    let ids = Arc::new(ids);
    let reads = Arc::new(AtomicU64::new(0));
    let (http, base, key) = (
        run.http.clone(),
        run.base.to_string(),
        run.api_key.to_string(),
    );
    load(run.concurrency, duration, move |_| {
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        let id = ids[(reads.fetch_add(1, Ordering::Relaxed) as usize) % ids.len()].clone();
        async move { matches!(http.get(format!("{base}/v1/payments/{id}")).bearer_auth(&key).send().await, Ok(r) if r.status() == 200) }
    })
    .await
}

/// How long after its create a payment's first status sync falls due (the gateway's default
/// schedule); the next is 10 s after that.
const FIRST_SYNC: Duration = Duration::from_secs(5);
/// How often the gateway's sync backlog is read while waiting for it to drain.
const BACKLOG_POLL: Duration = Duration::from_millis(100);

/// Waits for the first status sync of the payments created up to `last_create`: until it
/// falls due, then until the gateway's `wxgate_sync_due` gauge reads 0.
async fn first_sync_done(
    http: &reqwest::Client,
    base: &str,
    last_create: Instant,
) -> anyhow::Result<()> {
    tokio::time::sleep_until((last_create + FIRST_SYNC).into()).await;
    let mut poll = tokio::time::interval(BACKLOG_POLL);
    loop {
        poll.tick().await;
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let due = text
            .lines()
            .find_map(|l| l.strip_prefix("wxgate_sync_due "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .context("the gateway's /metrics has no wxgate_sync_due")?;
        if due == 0.0 {
            return Ok(());
        }
    }
}

/// What a load run measured.
pub struct Report {
    pub latencies_us: Vec<u64>,
    errors: u64,
    elapsed_secs: f64,
}

impl Report {
    pub fn rate(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed_secs
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        let n = self.latencies_us.len();
        if n == 0 {
            return 0.0;
        }
        self.latencies_us[((n as f64 * p) as usize).min(n - 1)] as f64 / 1000.0
    }

    /// One line: `what`, then the counts and latencies; `concurrency` 0 for an open loop.
    pub fn print(&self, what: &str, concurrency: usize) {
        let load = match concurrency {
            0 => String::new(),
            n => format!(" at concurrency {n}"),
        };
        println!(
            "{what}: {} ok, {} errors in {:.1} s{load}: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
            self.latencies_us.len(),
            self.errors,
            self.elapsed_secs,
            self.rate(),
            self.percentile_ms(0.50),
            self.percentile_ms(0.99),
        );
    }
}

/// When a load run's workers stop.
enum Limit {
    /// At this instant; each call of `op` is given its worker's number.
    Until(Instant),
    /// Once every item is done; each call of `op` is given the next item's number.
    Items(AtomicU64, u64),
}

impl Limit {
    /// What the next call of `op` by worker `w` is given, or `None` when the run is over.
    fn next(&self, w: usize) -> Option<usize> {
        match self {
            Self::Until(deadline) => (Instant::now() < *deadline).then_some(w),
            Self::Items(next, total) => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                (i < *total).then_some(i as usize)
            }
        }
    }
}

/// Runs `op(worker)` from `concurrency` workers for `duration`; `op` says whether it succeeded.
pub async fn load<F, Fut>(concurrency: usize, duration: Duration, op: F) -> Report
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    drive(concurrency, Limit::Until(Instant::now() + duration), op).await
}

/// Runs `op(item)` once for each of `items` items, from `concurrency` workers.
pub async fn load_items<F, Fut>(concurrency: usize, items: usize, op: F) -> Report
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    drive(
        concurrency,
        Limit::Items(AtomicU64::new(0), items as u64),
        op,
    )
    .await
}

async fn drive<F, Fut>(concurrency: usize, limit: Limit, op: F) -> Report
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let (op, limit) = (Arc::new(op), Arc::new(limit));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (op, errors, limit) = (op.clone(), errors.clone(), limit.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while let Some(given) = limit.next(w) {
                    let t = Instant::now();
                    if op(given).await {
                        latencies.push(t.elapsed().as_micros() as u64);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies_us = Vec::new();
    for worker in workers {
        latencies_us.extend(worker.await.unwrap_or_default());
    }
    latencies_us.sort_unstable();
    Report {
        latencies_us,
        errors: errors.load(Ordering::Relaxed),
        elapsed_secs: started.elapsed().as_secs_f64(),
    }
}

#[derive(Debug, clap::Args)]
pub struct GatewayBenchArgs {
    /// The gateway to load (with `wxgate serve` and a simulator behind it).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A merchant API key.
    #[arg(long, env = "WXGATE_BENCH_API_KEY")]
    api_key: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long each phase runs.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// The gateway's process id, to read its CPU time and peak RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// The database server's main process (PostgreSQL's postmaster), when it runs on this
    /// machine: its CPU and its children's is reported beside the gateway's.
    #[arg(long)]
    database_pid: Option<u32>,
}

/// Create-payment (native) and get-payment throughput of a running gateway, each with its
/// bound: the signing rate for creates, a bare HTTP round trip (`GET /health`) for reads.
pub async fn gateway(args: GatewayBenchArgs) -> anyhow::Result<()> {
    let base = args.url.trim_end_matches('/').to_string();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let duration = Duration::from_secs(args.duration_secs);
    let signing = SigningBound::measure()?;

    let bare_probe = CpuProbe::start(args.pid)?;
    let bare = {
        let (http, base) = (http.clone(), base.clone());
        load(args.concurrency, duration, move |_| {
            let (http, base) = (http.clone(), base.clone());
            async move { matches!(http.get(format!("{base}/health")).send().await, Ok(r) if r.status().is_success()) }
        })
        .await
    };
    bare.print("bare HTTP round trip (GET /health)", args.concurrency);
    // The gateway's CPU per bare request: the bound its CPU per read is set against.
    let bare_spent = bare_probe.stop()?;
    let bare_n = bare.latencies_us.len().max(1) as f64;
    let bare_cpu = bare_spent.gateway / bare_n;
    bare_spent.print_switches("GET /health", bare_n);

    let run = CreateRun {
        http: &http,
        base: &base,
        api_key: &args.api_key,
        concurrency: args.concurrency,
        database: args.database_pid,
    };
    if let Some(pid) = args.pid {
        let ids = cpu_per_create(&run, pid, signing.loaded_cpu_secs).await?;
        cpu_per_read(&run, pid, ids, bare_cpu).await?;
    }
    let (create, ids) = create_load(&http, &base, &args.api_key, args.concurrency, duration).await;
    create.print("create payment (native)", args.concurrency);
    // Each create costs two RSA signatures on this machine: the gateway's request, the
    // simulator's answer (and one more verification each way, which is cheap).
    println!(
        "create ratio to the signing bound (signatures/s ÷ 2): {:.2}",
        create.rate() / (signing.rate / 2.0)
    );

    // The paced run sees the steady state (its own payments' sync, from 5 s in), not the peak
    // run's backlog.
    first_sync_done(&http, &base, Instant::now()).await?;
    let half = create.rate() / 2.0;
    let paced = paced_creates(&http, &base, &args.api_key, half, duration).await;
    paced.print(
        &format!("create payment (native) at half the peak rate ({half:.0}/s, open loop)"),
        0,
    );
    anyhow::ensure!(!ids.is_empty(), "no payment was created");
    let get = reads_beside_sync(&run, ids, duration, args.pid).await?;
    println!(
        "GET ratio to the bare-HTTP bound: {:.2}",
        get.rate() / bare.rate()
    );
    print_peak_rss(args.pid)
}

#[derive(Debug, clap::Args)]
pub struct WebhookBenchArgs {
    /// The gateway (started with WXGATE_WEBHOOKS_ALLOW_PRIVATE=1: the receiver is on loopback).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The simulator behind it, which pays the payments.
    #[arg(long, default_value = "http://127.0.0.1:8090")]
    sim: String,
    /// A merchant API key.
    #[arg(long, env = "WXGATE_BENCH_API_KEY")]
    api_key: String,
    /// Events delivered in the throughput run.
    #[arg(long, default_value_t = 2000)]
    events: usize,
    /// Payments in the latency run.
    #[arg(long, default_value_t = 500)]
    latency_events: usize,
    /// Payments made at once while producing events.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The gateway's process id, to read its peak RSS.
    #[arg(long)]
    pid: Option<u32>,
}

/// Arrivals at the local receiver: event id, the event's creation time (ms), arrival time (ms).
#[derive(Default)]
struct Arrivals {
    log: std::sync::Mutex<Vec<(String, i64, i64)>>,
    /// Woken at every arrival.
    arrived: tokio::sync::Notify,
}

impl Arrivals {
    fn push(&self, arrival: (String, i64, i64)) {
        self.log.lock().expect("arrivals").push(arrival);
        self.arrived.notify_one();
    }

    fn len(&self) -> usize {
        self.log.lock().expect("arrivals").len()
    }

    /// Waits until `n` webhooks have arrived, woken by each arrival, for `limit` at most.
    async fn wait_for(&self, n: usize, limit: Duration) -> anyhow::Result<()> {
        let all = async {
            while self.len() < n {
                self.arrived.notified().await;
            }
        };
        tokio::time::timeout(limit, all)
            .await
            .map_err(|_| anyhow::anyhow!("only {} of {n} webhooks arrived", self.len()))
    }
}

/// Creates native payments for `duration`; the report, and the ids made (for the reads).
async fn create_load(
    http: &reqwest::Client,
    base: &str,
    api_key: &str,
    concurrency: usize,
    duration: Duration,
) -> (Report, Vec<String>) {
    let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let run = wechatpay_v3::nonce(10);
    let counter = Arc::new(AtomicU64::new(0));
    let create = {
        let (http, base, key, ids, counter) = (
            http.clone(),
            base.to_string(),
            api_key.to_string(),
            ids.clone(),
            counter.clone(),
        );
        load(concurrency, duration, move |_| {
            let (http, base, key, ids) = (http.clone(), base.clone(), key.clone(), ids.clone());
            let order = format!("b{run}{:010}", counter.fetch_add(1, Ordering::Relaxed));
            async move {
                let Some(id) = create_one(&http, &base, &key, &order).await else {
                    return false;
                };
                ids.lock().expect("ids lock").push(id);
                true
            }
        })
        .await
    };
    let ids = std::mem::take(&mut *ids.lock().expect("ids lock"));
    (create, ids)
}

/// One native create; the payment's id when it was created.
async fn create_one(http: &reqwest::Client, base: &str, key: &str, order: &str) -> Option<String> {
    let body = serde_json::json!({"amount": 1, "currency": "CNY", "merchant_order_id": order, "description": "bench", "integration": "native"});
    let res = http
        .post(format!("{base}/v1/payments"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .ok()?;
    if res.status() != 201 {
        return None;
    }
    let v: serde_json::Value = res.json().await.ok()?;
    Some(v["id"].as_str().unwrap_or_default().to_string())
}

/// Creates at a fixed arrival rate (an open loop: each create starts on schedule, whether or
/// not the earlier ones have answered), for the latency at a given load.
async fn paced_creates(
    http: &reqwest::Client,
    base: &str,
    api_key: &str,
    rate: f64,
    duration: Duration,
) -> Report {
    let run = wechatpay_v3::nonce(10);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1.0)));
    let started = Instant::now();
    let mut calls = Vec::new();
    let mut n = 0u64;
    while started.elapsed() < duration {
        ticks.tick().await;
        let (http, base, key) = (http.clone(), base.to_string(), api_key.to_string());
        let order = format!("p{run}{n:010}");
        n += 1;
        calls.push(tokio::spawn(async move {
            let t = Instant::now();
            create_one(&http, &base, &key, &order)
                .await
                .map(|_| t.elapsed().as_micros() as u64)
        }));
    }
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    for call in calls {
        match call.await.ok().flatten() {
            Some(us) => latencies_us.push(us),
            None => errors += 1,
        }
    }
    latencies_us.sort_unstable();
    Report {
        latencies_us,
        errors,
        elapsed_secs: started.elapsed().as_secs_f64(),
    }
}

/// A local webhook receiver that logs every arrival; its URL.
async fn start_receiver(arrivals: Arc<Arrivals>) -> anyhow::Result<String> {
    let receiver = {
        let arrivals = arrivals.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let arrivals = arrivals.clone();
                async move {
                    let at = unix_ms();
                    if let Ok(e) = serde_json::from_slice::<serde_json::Value>(&body) {
                        let created = e["created_at"]
                            .as_str()
                            .and_then(|t| {
                                time::OffsetDateTime::parse(
                                    t,
                                    &time::format_description::well_known::Rfc3339,
                                )
                                .ok()
                            })
                            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                            .unwrap_or(at);
                        let id = e["id"].as_str().unwrap_or_default().to_string();
                        arrivals.push((id, created, at));
                    }
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    Ok(hook_url)
}

/// The delays from each event's creation to its webhook's arrival: p50, p99, max.
fn print_delays(arrivals: &Arrivals) {
    let mut delays: Vec<i64> = arrivals
        .log
        .lock()
        .expect("arrivals")
        .iter()
        .map(|(_, created, at)| at - created)
        .collect();
    delays.sort_unstable();
    let pct = |p: f64| delays[((delays.len() as f64 * p) as usize).min(delays.len() - 1)];
    println!(
        "payment success → webhook arrival over {} events: p50 {} ms, p99 {} ms, max {} ms",
        delays.len(),
        pct(0.50),
        pct(0.99),
        delays.last().copied().unwrap_or(0)
    );
}

/// The gateway's peak resident memory, when its process id is known.
fn print_peak_rss(pid: Option<u32>) -> anyhow::Result<()> {
    let Some(pid) = pid else { return Ok(()) };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    if let Some(line) = status.lines().find(|l| l.starts_with("VmHWM")) {
        println!(
            "gateway peak RSS: {}",
            line.trim_start_matches("VmHWM:").trim()
        );
    }
    Ok(())
}

fn unix_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Webhook deliveries per second to a local receiver, and the delay from a payment's success
/// (its event's commit) to the webhook's arrival.
pub async fn webhooks(args: WebhookBenchArgs) -> anyhow::Result<()> {
    let base = args.url.trim_end_matches('/').to_string();
    let sim = args.sim.trim_end_matches('/').to_string();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let arrivals: Arc<Arrivals> = Arc::default();
    let hook_url = start_receiver(arrivals.clone()).await?;

    let endpoint_id = throughput(&http, &base, &sim, &args, &arrivals, &hook_url).await?;

    // Latency: the endpoint listens while payments succeed.
    arrivals.log.lock().expect("arrivals").clear();
    let made = pay_many(&http, &base, &sim, &args.api_key, args.latency_events, 4).await?;
    arrivals.wait_for(made, Duration::from_secs(60)).await?;
    print_delays(&arrivals);
    let _ = http
        .delete(format!("{base}/v1/webhook_endpoints/{endpoint_id}"))
        .bearer_auth(&args.api_key)
        .send()
        .await;
    print_peak_rss(args.pid)
}

/// Throughput: events made with no endpoint listening, then all sent at once. Returns the
/// endpoint made for them.
async fn throughput(
    http: &reqwest::Client,
    base: &str,
    sim: &str,
    args: &WebhookBenchArgs,
    arrivals: &Arrivals,
    hook_url: &str,
) -> anyhow::Result<String> {
    let started_at =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?;
    let made = pay_many(
        http,
        base,
        sim,
        &args.api_key,
        args.events,
        args.concurrency,
    )
    .await?;
    println!("{made} payments made and paid (their events written, nobody subscribed yet)");
    let endpoint: serde_json::Value = http
        .post(format!("{base}/v1/webhook_endpoints"))
        .bearer_auth(&args.api_key)
        .json(&serde_json::json!({"url": hook_url}))
        .send()
        .await?
        .error_for_status()
        .context("creating the endpoint (is WXGATE_WEBHOOKS_ALLOW_PRIVATE=1 set?)")?
        .json()
        .await?;
    let t = Instant::now();
    let probe = CpuProbe::start(args.pid)?;
    let scheduled: serde_json::Value = http
        .post(format!("{base}/v1/events/redeliver"))
        .bearer_auth(&args.api_key)
        .json(&serde_json::json!({"created_gte": started_at}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let scheduled = scheduled["scheduled"].as_u64().unwrap_or(0) as usize;
    arrivals
        .wait_for(scheduled, Duration::from_secs(120))
        .await?;
    let elapsed = t.elapsed().as_secs_f64();
    let CpuSpent {
        gateway: gateway_cpu,
        busy,
        ..
    } = probe.stop()?;
    println!(
        "webhook deliveries: {scheduled} in {elapsed:.2} s: {:.0}/s (scheduled in one call, delivered by the worker)",
        scheduled as f64 / elapsed
    );
    println!(
        "  gateway CPU per delivery {:.3} ms; the machine's cores were {:.0} % busy",
        gateway_cpu / scheduled.max(1) as f64 * 1000.0,
        busy * 100.0
    );

    Ok(endpoint["id"].as_str().unwrap_or_default().to_string())
}

/// Creates `n` native payments and has the simulator pay each, `concurrency` at a time; waits
/// until the gateway shows them all succeeded. Returns how many.
async fn pay_many(
    http: &reqwest::Client,
    base: &str,
    sim: &str,
    key: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<usize> {
    let next = Arc::new(AtomicU64::new(0));
    let run = wechatpay_v3::nonce(8);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, base, sim, key, next, run) = (
                http.clone(),
                base.to_string(),
                sim.to_string(),
                key.to_string(),
                next.clone(),
                run.clone(),
            );
            tokio::spawn(async move {
                let mut ids = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= n {
                        return Ok::<_, anyhow::Error>(ids);
                    }
                    let p: serde_json::Value = http
                        .post(format!("{base}/v1/payments"))
                        .bearer_auth(&key)
                        .json(&serde_json::json!({"amount": 1, "currency": "CNY", "merchant_order_id": format!("w{run}{i:08}"), "description": "bench", "integration": "native"}))
                        .send()
                        .await?
                        .error_for_status()?
                        .json()
                        .await?;
                    http.post(format!("{sim}/sim/payer/pay"))
                        .json(&serde_json::json!({"code_url": p["next_action"]["display_qr_code"]["data"]}))
                        .send()
                        .await?
                        .error_for_status()?;
                    ids.push(p["id"].as_str().unwrap_or_default().to_string());
                }
            })
        })
        .collect();
    let mut ids = Vec::new();
    for w in workers {
        ids.extend(w.await??);
    }
    // The callbacks are asynchronous: wait until every payment shows succeeded.
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &ids {
        loop {
            let p: serde_json::Value = http
                .get(format!("{base}/v1/payments/{id}"))
                .bearer_auth(key)
                .send()
                .await?
                .json()
                .await?;
            if p["status"] == "succeeded" {
                break;
            }
            // Each check is a round trip to the gateway; the callback is usually already in.
            anyhow::ensure!(Instant::now() < deadline, "payment {id} never succeeded");
        }
    }
    Ok(ids.len())
}
