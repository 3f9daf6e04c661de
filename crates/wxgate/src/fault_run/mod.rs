//! `wxgate fault-run`: several gateway nodes on one PostgreSQL database behind HAProxy, the
//! simulator answering with WeChat's faults, nodes killed with SIGKILL and restarted, under a
//! mixed workload of careful clients; then the faults stop, every node comes back, and a
//! checker compares the gateway's database, the simulator and the webhook receiver's log
//! until they agree or the settling time is over. It ends with one line,
//! `fault run: N operations, K kills, F faults, V violations`, and fails when V > 0.

pub mod check;
mod cluster;
mod receiver;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::json;
use tokio::sync::Mutex;
use wechatpay_v3::model::SceneReportInfo;
use wxgate_gateway::app::merchants;
use wxgate_gateway::app::payouts::Scene;
use wxgate_gateway::secrets::MasterKey;
use wxgate_gateway::{Gateway, GatewayConfig};

use cluster::Cluster;
use workload::{Books, Client};

#[derive(Debug, clap::Args)]
pub struct FaultRunArgs {
    /// A fresh PostgreSQL database for the nodes (migrated here). By default a new database is
    /// made next to `WXGATE_TEST_POSTGRES_URL` (default
    /// `postgres://postgres@127.0.0.1:5432/postgres`) and dropped at the end.
    #[arg(long, env = "WXGATE_FAULT_DATABASE_URL")]
    database_url: Option<String>,
    /// Gateway nodes behind the balancer.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Seconds of workload.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Clients working at once.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Mean seconds between kills.
    #[arg(long, default_value_t = 10.0)]
    kill_every: f64,
    /// The CI run: 75 s of workload and a kill about every 9 s.
    #[arg(long)]
    short: bool,
    /// Where the processes' logs go (default: a new temporary folder).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// How long the faults of one phase last.
const FAULT_PHASE: Duration = Duration::from_secs(8);
/// The longest wait for the gateway and WeChat to agree after the faults stop: past a claim's
/// 60 s lease, the nodes' 60 s payout confirmation poll and their first webhook retries
/// (`cluster::WEBHOOK_RETRY_SCHEDULE_MS`), with room for the status syncs that follow.
const SETTLE: Duration = Duration::from_secs(150);
/// How often the checker looks again while settling.
const RECHECK: Duration = Duration::from_secs(5);

/// The simulator's fault phases, in turn with calm ones.
fn fault_phases() -> Vec<serde_json::Value> {
    vec![
        json!({"error_500_rate": 0.15}),
        json!({"error_429_rate": 0.15}),
        json!({"latency_ms": 300}),
        json!({"timeout_after_commit_rate": 0.03, "hang_ms": 11000}),
        json!({"drop_callback_rate": 0.4}),
        json!({"duplicate_callback_rate": 0.4}),
        json!({"reorder_callback_rate": 0.4, "reorder_delay_ms": 3000}),
        json!({"paid_after_close": true}),
        json!({"error_500_rate": 0.05, "drop_callback_rate": 0.2, "duplicate_callback_rate": 0.2}),
    ]
}

/// The counts of the closing line.
#[derive(Default)]
struct Tally {
    kills: u64,
    faults: u64,
}

pub async fn run(mut args: FaultRunArgs) -> anyhow::Result<()> {
    if args.short {
        (args.seconds, args.kill_every) = (75, 9.0);
    }
    let fresh = match &args.database_url {
        Some(_) => None,
        None => Some(
            wxgate_store::testing::postgres()
                .await
                .context("the fault run needs PostgreSQL")?,
        ),
    };
    if let Some(db) = &fresh {
        args.database_url = Some(db.url.clone());
    }
    let outcome = run_on(&args).await;
    if let Some(db) = fresh {
        db.cleanup().await;
    }
    outcome
}

async fn run_on(args: &FaultRunArgs) -> anyhow::Result<()> {
    let database_url = args.database_url.as_deref().context("a database URL")?;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("wxgate-fault-run-{}", wechatpay_v3::nonce(8))),
    };
    std::fs::create_dir_all(&dir)?;
    let master = MasterKey::generate();
    let mut cluster = Cluster::start(&dir, database_url, &master.expose_hex()).await?;
    cluster.run(&["migrate"])?;
    let store = wxgate_gateway::open_store(database_url).await?;
    let merchant =
        merchants::create_sandbox_merchant(&store, &master, &cluster.sim_url, "Fault run").await?;
    let (_, key) = merchants::create_api_key(&store, &merchant.id).await?;
    merchants::set_payout_scene(&store, &merchant.id, Some(&payout_scene())).await?;
    cluster.start_nodes(args.nodes).await?;
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?,
        api: cluster.lb_url.clone(),
        sim: cluster.sim_url.clone(),
        key,
    };
    let log = Arc::new(receiver::Log::default());
    endpoint(&client, &log).await?;
    let balance_at_start = fund_payouts(&client, &merchant.mchid).await?;
    println!(
        "fault run: {} nodes behind {}, logs in {}",
        args.nodes,
        cluster.lb_url,
        dir.display()
    );

    let books = Arc::new(Books::default());
    // The day before yesterday (Beijing time): its bills exist at any hour, while yesterday's
    // exist only from 09:00 (`wxgate_sim::bills::BILL_READY_HOUR`).
    let billed_day = time::OffsetDateTime::now_utc()
        .to_offset(time::macros::offset!(+8))
        .date()
        - time::Duration::days(2);
    workload::reconcile(&client, &books, &billed_day.to_string(), args.nodes * 2).await;
    let cluster = Arc::new(Mutex::new(cluster));
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let tally = load(args, &client, &books, &cluster, until).await?;

    client
        .http
        .delete(format!("{}/sim/faults", client.sim))
        .send()
        .await?;
    cluster.lock().await.all_up().await?;
    let merchant_keys = (merchant.id.as_str(), merchant.mchid.as_str());
    let sources = (books.as_ref(), log.as_ref());
    let config = GatewayConfig::new(database_url, master, cluster.lock().await.lb_url.clone());
    let gw = Gateway::new(store, config);
    let violations = settle(&gw, &client.sim, merchant_keys, sources, balance_at_start).await?;
    for v in violations.iter().take(50) {
        println!("violation: {v}");
    }
    println!(
        "fault run: {} operations, {} kills, {} faults, {} violations",
        books.operations.load(Ordering::Relaxed),
        tally.kills,
        tally.faults,
        violations.len()
    );
    anyhow::ensure!(violations.is_empty(), "the fault run found violations");
    Ok(())
}

/// The scene every payout of the run is made under.
fn payout_scene() -> Scene {
    Scene {
        id: "1000".into(),
        report_infos: vec![
            SceneReportInfo {
                info_type: "活动名称".into(),
                info_content: "故障演练".into(),
            },
            SceneReportInfo {
                info_type: "奖励说明".into(),
                info_content: "演练奖励".into(),
            },
        ],
    }
}

/// Tops WeChat's operation account up for the run's payouts; its balance then.
async fn fund_payouts(client: &Client, mchid: &str) -> anyhow::Result<i64> {
    client
        .http
        .post(format!(
            "{}/sim/merchants/{mchid}/operation_balance",
            client.sim
        ))
        .json(&json!({"amount": PAYOUT_FUNDS}))
        .send()
        .await?
        .error_for_status()?;
    check::operation_balance(&client.http, &client.sim, mchid).await
}

/// What WeChat's operation account gets for the run's payouts: 1,000,000.00 CNY.
const PAYOUT_FUNDS: i64 = 100_000_000;

/// The merchant's webhook endpoint, pointed at the receiver, with its secret handed over.
async fn endpoint(client: &Client, log: &Arc<receiver::Log>) -> anyhow::Result<()> {
    let url = receiver::start(log.clone()).await?;
    let e: serde_json::Value = client
        .http
        .post(format!("{}/v1/webhook_endpoints", client.api))
        .bearer_auth(&client.key)
        .json(&json!({"url": url}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let secret = (
        e["secret_id"].as_str().context("secret_id")?.to_string(),
        e["secret"].as_str().context("secret")?.to_string(),
    );
    *log.secret.lock().expect("secret") = Some(secret);
    Ok(())
}

/// The workload, the killer and the fault phases, together until `until`.
async fn load(
    args: &FaultRunArgs,
    client: &Client,
    books: &Arc<Books>,
    cluster: &Arc<Mutex<Cluster>>,
    until: Instant,
) -> anyhow::Result<Tally> {
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..args.clients {
        let (client, books) = (client.clone(), books.clone());
        clients.spawn(async move { workload::worker(client, &books, until).await });
    }
    let (kills, faults) = tokio::join!(
        killer(cluster, args.kill_every, until),
        faulter(client, until)
    );
    while clients.join_next().await.is_some() {}
    Ok(Tally {
        kills: kills?,
        faults: faults?,
    })
}

/// Kills a random node with SIGKILL about every `every` seconds and starts it again shortly
/// after. Returns the kills.
async fn killer(cluster: &Arc<Mutex<Cluster>>, every: f64, until: Instant) -> anyhow::Result<u64> {
    let mut kills = 0;
    loop {
        let wait = rand::rng().random_range(every * 0.5..every * 1.5);
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        if Instant::now() >= until {
            return Ok(kills);
        }
        let mut c = cluster.lock().await;
        let node = rand::rng().random_range(0..c.nodes());
        c.kill(node)?;
        kills += 1;
        let down = rand::rng().random_range(200..1500);
        tokio::time::sleep(Duration::from_millis(down)).await;
        c.restart(node).await?;
    }
}

/// Turns the simulator's fault phases on in turn, a calm phase between two. Returns the
/// faults turned on (one per kind per phase).
async fn faulter(client: &Client, until: Instant) -> anyhow::Result<u64> {
    let phases = fault_phases();
    let mut faults = 0;
    let mut calm = true;
    while Instant::now() < until {
        let phase = match calm {
            true => json!({}),
            false => phases.choose(&mut rand::rng()).cloned().unwrap_or_default(),
        };
        faults += phase.as_object().map_or(0, |o| o.len() as u64);
        client
            .http
            .put(format!("{}/sim/faults", client.sim))
            .json(&phase)
            .send()
            .await?
            .error_for_status()?;
        calm = !calm;
        tokio::time::sleep(FAULT_PHASE.min(until.saturating_duration_since(Instant::now()))).await;
    }
    Ok(faults)
}

/// Checks until the gateway and WeChat agree, or [`SETTLE`] is over: the violations left.
async fn settle(
    gw: &Gateway,
    sim: &str,
    merchant: (&str, &str),
    sources: (&Books, &receiver::Log),
    balance_at_start: i64,
) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let observed = check::gather(gw, sim, merchant, sources, balance_at_start).await?;
        let violations = check::judge(&observed);
        if violations.is_empty() || Instant::now() >= deadline {
            println!("{}", observed.summary());
            return Ok(violations);
        }
        println!(
            "settling: {} disagreements left, for example {}",
            violations.len(),
            violations[0]
        );
        tokio::time::sleep(RECHECK).await;
    }
}
