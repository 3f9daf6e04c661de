//! `wxgate`: one binary for the gateway and its WeChat Pay simulator.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Deserialize;
use tokio::net::TcpListener;
use wxgate_gateway::app::merchants;
use wxgate_gateway::secrets::MasterKey;
use wxgate_gateway::{Application, Gateway, GatewayConfig};
use wxgate_sim::{Sim, SimConfig};
use wxgate_store::Store;

mod activity;
mod bench;
mod callback_bench;
mod fault_run;
mod listen;
mod reconcile;
mod reconcile_bench;

#[derive(Debug, Parser)]
#[command(name = "wxgate", version, about = "A self-hosted WeChat Pay gateway")]
struct Cli {
    /// A TOML settings file (see `wxgate serve --help`).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// Log lines to stderr, filtered by `RUST_LOG` (default `info`): readable text, or with
/// `WXGATE_LOG_FORMAT=json` one JSON object per line, each carrying its request's span fields
/// (`request_id`, and where known `merchant_id` and `payment_id`).
fn init_logs() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match std::env::var("WXGATE_LOG_FORMAT").as_deref() {
        Ok("json") => logs.json().flatten_event(true).init(),
        _ => logs.init(),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the embedded default: gateway + SQLite + simulator, with a sandbox merchant.
    Demo(DemoArgs),
    /// Serve the gateway (SQLite by default, PostgreSQL when the database URL says so).
    #[command(
        long_about = "Serve the gateway (SQLite by default, PostgreSQL when the database URL says so).\n\n\
Settings, from the environment or from a TOML file given with --config (the environment wins):\n\
  WXGATE_DATABASE_URL    database_url     default sqlite://./wxgate-data/wxgate.db (or postgres://user@host/db)\n\
  WXGATE_MASTER_KEY      master_key       64 hex characters; seals merchant secrets (or master_key_file); required\n\
  WXGATE_LISTEN          listen           default 127.0.0.1:8080\n\
  WXGATE_PUBLIC_URL      public_url       how WeChat and shoppers reach this gateway; default http://<listen>\n\
  WXGATE_CONNECT_LISTEN  connect_listen   where the Connect front door listens (its SDKs take no path); off by default\n\
  WXGATE_UPSTREAM_RATE   upstream_rate    orders to WeChat per second per merchant from this node (default 600);\n\
                         queries 3x, refunds 1/4, transfers 1/6 of it, each API paced on its own;\n\
                         background work takes at most half of each; with N nodes give each its share\n\
  WXGATE_PAYOUT_CONFIRMATION_POLL_SECS  payout_confirmation_poll_secs  the longest wait between\n\
                         queries of a payout waiting for its payee (default 600)\n\
  WXGATE_SYNC_SCHEDULE_MS  sync_schedule_ms  waits before each status query of a pending payment\n\
                         or refund, in milliseconds, comma-separated (default\n\
                         5000,10000,15000,30000,60000,120000,300000,600000; the last repeats)\n\
  WXGATE_EVENT_RETENTION_DAYS  event_retention_days  how long events and their webhook delivery\n\
                         logs are kept once none of their deliveries is pending (default 30)\n\
  WXGATE_WEBHOOKS_ALLOW_PRIVATE, WXGATE_WEBHOOK_TIMEOUT_MS, WXGATE_WEBHOOK_RETRY_SCHEDULE_MS,\n\
  WXGATE_WEBHOOK_PER_ENDPOINT\n\
                         [webhooks] allow_private, timeout_ms, retry_schedule_ms, per_endpoint (default 8)\n\
  WXGATE_LOG_FORMAT      (environment only) text (default) or json: one JSON object per log line,\n\
                         with the request's request_id, merchant_id and payment_id; RUST_LOG filters"
    )]
    Serve,
    /// Apply the database migrations this binary has and the database lacks.
    Migrate,
    /// Merchants and their API keys.
    #[command(subcommand)]
    Merchant(MerchantCommand),
    /// Merchant events and their webhook deliveries.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Many nodes under faults: N gateway nodes on one PostgreSQL database behind HAProxy,
    /// nodes killed and restarted, the simulator's faults on, a mixed workload; then a checker
    /// counts every broken promise (see docs/RELIABILITY.md).
    FaultRun(fault_run::FaultRunArgs),
    /// Run the WeChat Pay API v3 simulator (sandbox).
    Sim(SimArgs),
    /// Receive the demo merchant's webhooks locally and print each one, signature checked.
    Listen(listen::ListenArgs),
    /// Reconcile a merchant's days against WeChat's bills now (see POST /v1/reconciliations).
    Reconcile(reconcile::ReconcileArgs),
    /// Load runs that produce the figures in docs/BENCHMARKS.md.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Send an event again, now, to every webhook endpoint subscribed to it (a dead-lettered
    /// delivery starts a new round of retries).
    Redeliver {
        /// The event's id (evt_...).
        event_id: String,
        /// The merchant it belongs to (mch_...).
        #[arg(long)]
        merchant: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Native prepay throughput and latency of a running simulator.
    Sim(bench::SimBenchArgs),
    /// Create and read throughput, latency and peak RSS of a running gateway.
    Gateway(bench::GatewayBenchArgs),
    /// Webhook deliveries per second and the delay from a payment's success to its webhook.
    Webhooks(bench::WebhookBenchArgs),
    /// A day of payments and refunds reconciled against the simulator's bills: rows per
    /// second and the memory it took.
    Reconcile(reconcile_bench::ReconcileBenchArgs),
    /// WeChat's payment callbacks, signed and encrypted, into a running gateway: callbacks per
    /// second and the gateway's CPU per callback (registers a merchant in its database).
    Callbacks(callback_bench::CallbackBenchArgs),
}

#[derive(Debug, Subcommand)]
enum MerchantCommand {
    /// Create a merchant: a sandbox one wired to a simulator, or a live one.
    Create(Box<MerchantCreateArgs>),
    /// List the merchants.
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// API keys.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// Issue a credential for one of the front doors (other systems' APIs wxgate serves); the
    /// secret is printed once.
    DoorCredential {
        /// The merchant (mch_...).
        #[arg(long)]
        merchant: String,
        /// The front door: payment_intents.
        #[arg(long)]
        door: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a front door's credential (a leaked secret or key): it authenticates nothing
    /// more, and the merchant's tokens and sessions of that door end.
    #[command(name = "door-credential-revoke")]
    DoorCredentialRevoke {
        /// The front door: payment_intents, two_checkout, connect or open_api.
        #[arg(long)]
        door: String,
        /// The credential's id, as `door-credential` printed it.
        #[arg(long)]
        key_id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Set (or clear) the default transfer scene of a merchant's payouts, used when a payout
    /// names none.
    PayoutScene {
        /// The merchant (mch_...).
        #[arg(long)]
        merchant: String,
        /// WeChat's transfer_scene_id, e.g. 1000 (cash marketing) or 1005 (pay for work).
        #[arg(long, required_unless_present = "clear")]
        scene: Option<String>,
        /// One report item of the scene as `info_type=info_content`, e.g.
        /// `--report 活动名称=新会员有礼`; give each the scene needs.
        #[arg(long = "report", value_name = "TYPE=CONTENT")]
        reports: Vec<String>,
        /// Remove the default: payouts must then name their scene.
        #[arg(long, conflicts_with_all = ["scene", "reports"])]
        clear: bool,
    },
    /// Set (or clear) the currency WeChat settles a cross-border merchant in, when its contract
    /// settles in another currency than its payments are priced in. Reconciliation then
    /// posts each payment's conversion into that currency.
    SettlementCurrency {
        /// The merchant (mch_...).
        #[arg(long)]
        merchant: String,
        /// An ISO 4217 code, e.g. USD.
        #[arg(long, required_unless_present = "clear", value_parser = parse_currency)]
        currency: Option<wxgate_domain::Currency>,
        /// Each payment settles in its own currency again.
        #[arg(long, conflicts_with = "currency")]
        clear: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ApiKeyCommand {
    /// Issue a key; it is printed once and stored only as a hash.
    Create {
        /// The merchant (mch_...).
        #[arg(long)]
        merchant: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List a merchant's keys (their ids and times; a key itself is never shown again).
    List {
        /// The merchant (mch_...).
        #[arg(long)]
        merchant: String,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id.
    Revoke {
        /// The key's id (key_...).
        #[arg(long)]
        key_id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct MerchantCreateArgs {
    /// The merchant's display name.
    #[arg(long, default_value = "Merchant")]
    name: String,
    /// Mint the merchant at this simulator (for example http://127.0.0.1:8090).
    #[arg(long, conflicts_with_all = ["mchid"])]
    sandbox_simulator: Option<String>,
    /// A live merchant's WeChat Pay merchant number.
    #[arg(long, requires_all = ["appid", "private_key_file", "serial_no", "apiv3_key_file"])]
    mchid: Option<String>,
    /// The Official Account (or app) appid its payments are made for.
    #[arg(long)]
    appid: Option<String>,
    /// A Mini Program's appid, for mini_program payments (default: --appid).
    #[arg(long)]
    mini_program_appid: Option<String>,
    /// apiclient_key.pem (PKCS#8).
    #[arg(long)]
    private_key_file: Option<PathBuf>,
    /// The merchant API certificate's serial number.
    #[arg(long)]
    serial_no: Option<String>,
    /// A file holding the 32-character APIv3 key.
    #[arg(long)]
    apiv3_key_file: Option<PathBuf>,
    /// A file holding the Official Account's AppSecret: the hosted checkout then learns the
    /// payer's openid inside WeChat (webpage authorization) and pays with the JS API.
    #[arg(long)]
    app_secret_file: Option<PathBuf>,
    /// WeChat Pay's public key (PEM), in public-key mode.
    #[arg(long)]
    platform_public_key_file: Option<PathBuf>,
    /// That public key's id (PUB_KEY_ID_...).
    #[arg(long)]
    platform_public_key_id: Option<String>,
    /// WeChat Pay's platform certificate (PEM), in certificate mode.
    #[arg(long)]
    platform_certificate_file: Option<PathBuf>,
    /// Where WeChat Pay's API is.
    #[arg(long, default_value = "https://api.mch.weixin.qq.com/")]
    api_base_url: String,
    /// Currencies the merchant prices in (comma-separated ISO 4217). CNY only for a domestic
    /// merchant; a cross-border one also needs --merchant-category-code.
    #[arg(long, default_value = "CNY")]
    currencies: String,
    /// A cross-border merchant's category code (4 digits): its payments and refunds go through
    /// WeChat's /v3/global/ endpoints.
    #[arg(long)]
    merchant_category_code: Option<String>,
    /// What happens to a payment that arrives after its order was closed: `accept` it (it
    /// stays visible as paid_after_close) or `refund` it in full automatically.
    #[arg(long, default_value = "accept", value_parser = parse_policy)]
    paid_after_close: wxgate_domain::PaidAfterClosePolicy,
    /// WeChat's fee rate for this merchant in basis points (60 = 0.60 %): reconciliation
    /// reports a bill fee that differs from it.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(0..=1000))]
    fee_rate_bp: u32,
    /// A cross-border merchant's settlement currency (ISO 4217), when WeChat settles it in
    /// another currency than it prices in (default: each payment settles in its own).
    #[arg(long, requires = "merchant_category_code", value_parser = parse_currency)]
    settlement_currency: Option<wxgate_domain::Currency>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090", env = "WXGATE_SIM_LISTEN")]
    listen: SocketAddr,
    /// Keep state in this folder (in memory when absent).
    #[arg(long, env = "WXGATE_SIM_DATA")]
    data: Option<PathBuf>,
    /// Divide callback retry delays and refund settling by this factor.
    #[arg(long, default_value_t = 1.0, value_parser = positive_f64)]
    time_scale: f64,
    /// Simulated seconds from a refund's creation to its outcome.
    #[arg(long, default_value_t = 5.0, value_parser = positive_f64)]
    refund_settle_secs: f64,
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Data folder.
    #[arg(long, default_value = "./.wxgate")]
    data: PathBuf,
    /// Where the Connect front door listens at first start (kept in demo.json afterwards).
    #[arg(long, default_value = "127.0.0.1:0")]
    connect_listen: SocketAddr,
}

fn parse_currency(s: &str) -> Result<wxgate_domain::Currency, String> {
    wxgate_domain::Currency::parse(s).map_err(|e| e.to_string())
}

fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    database_url: Option<String>,
    master_key: Option<String>,
    master_key_file: Option<PathBuf>,
    listen: Option<SocketAddr>,
    public_url: Option<String>,
    connect_listen: Option<SocketAddr>,
    upstream_rate: Option<NonZeroU32>,
    payout_confirmation_poll_secs: Option<NonZeroU32>,
    sync_schedule_ms: Option<Vec<i64>>,
    event_retention_days: Option<NonZeroU32>,
    #[serde(default)]
    webhooks: WebhookSettings,
}

/// The most webhook attempts in flight to one endpoint that may be configured.
const MAX_PER_ENDPOINT: usize = 64;

/// `[webhooks]` in the configuration file; each also has an environment variable.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookSettings {
    /// Allow webhook URLs on loopback and private addresses (`WXGATE_WEBHOOKS_ALLOW_PRIVATE`).
    allow_private: Option<bool>,
    /// One attempt's timeout in milliseconds (`WXGATE_WEBHOOK_TIMEOUT_MS`).
    timeout_ms: Option<u64>,
    /// Waits before each retry, in milliseconds (`WXGATE_WEBHOOK_RETRY_SCHEDULE_MS`, comma-separated).
    retry_schedule_ms: Option<Vec<i64>>,
    /// Attempts in flight to one endpoint at most (`WXGATE_WEBHOOK_PER_ENDPOINT`, default 8).
    per_endpoint: Option<usize>,
}

struct Settings {
    database_url: String,
    master_key: Option<MasterKey>,
    listen: SocketAddr,
    public_url: String,
    /// Where the Connect front door listens, if anywhere.
    connect_listen: Option<SocketAddr>,
    /// Orders to WeChat per second per merchant from this node (other APIs in proportion).
    upstream_rate: Option<NonZeroU32>,
    /// The longest wait between queries of a payout waiting for its payee.
    payout_confirmation_poll_secs: Option<NonZeroU32>,
    /// Waits before each status query of pending work.
    sync_schedule_ms: Option<Vec<i64>>,
    /// How many days events and their delivery logs are kept.
    event_retention_days: Option<NonZeroU32>,
    webhooks: WebhookSettings,
}

impl Settings {
    fn gateway_config(&self, master: MasterKey) -> GatewayConfig {
        let mut config =
            GatewayConfig::new(self.database_url.clone(), master, self.public_url.clone());
        if let Some(allow) = self.webhooks.allow_private {
            config.webhooks_allow_private = allow;
        }
        if let Some(ms) = self.webhooks.timeout_ms {
            config.webhook_timeout = std::time::Duration::from_millis(ms);
        }
        if let Some(n) = self.webhooks.per_endpoint {
            config.webhook_per_endpoint = n;
        }
        if let Some(rate) = self.upstream_rate {
            config.upstream_rate = rate;
        }
        if let Some(secs) = self.payout_confirmation_poll_secs {
            config.payout_confirmation_poll = std::time::Duration::from_secs(secs.get().into());
        }
        if let Some(schedule) = &self.sync_schedule_ms {
            config.sync_schedule_ms = schedule.clone();
        }
        if let Some(days) = self.event_retention_days {
            config.event_retention = std::time::Duration::from_secs(u64::from(days.get()) * 86_400);
        }
        if let Some(schedule) = &self.webhooks.retry_schedule_ms {
            config.webhook_retry_schedule_ms = schedule.clone();
        }
        config
    }
}

const DEFAULT_DATABASE_URL: &str = "sqlite://./wxgate-data/wxgate.db";

fn settings(config: Option<&Path>) -> anyhow::Result<Settings> {
    let file: FileConfig = match config {
        Some(path) => toml::from_str(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("{} is not a valid configuration", path.display()))?,
        None => FileConfig::default(),
    };
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let database_url = env("WXGATE_DATABASE_URL")
        .or(file.database_url)
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
    let master_hex = match (
        env("WXGATE_MASTER_KEY").or(file.master_key),
        file.master_key_file,
    ) {
        (Some(k), _) => Some(k),
        (None, Some(path)) => Some(
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?,
        ),
        (None, None) => None,
    };
    let master_key = master_hex.map(|k| MasterKey::from_hex(&k)).transpose()?;
    let listen = match env("WXGATE_LISTEN") {
        Some(l) => l.parse().context("WXGATE_LISTEN")?,
        None => file
            .listen
            .unwrap_or_else(|| "127.0.0.1:8080".parse().expect("valid")),
    };
    let public_url = env("WXGATE_PUBLIC_URL")
        .or(file.public_url)
        .unwrap_or_else(|| format!("http://{listen}"));
    let webhooks = webhook_settings(file.webhooks)?;
    let connect_listen = match env("WXGATE_CONNECT_LISTEN") {
        Some(l) => Some(l.parse().context("WXGATE_CONNECT_LISTEN")?),
        None => file.connect_listen,
    };
    let positive = |name: &str, fallback: Option<NonZeroU32>| match env(name) {
        Some(v) => v
            .parse()
            .map(Some)
            .with_context(|| format!("{name} must be a whole number above 0")),
        None => Ok(fallback),
    };
    let upstream_rate = positive("WXGATE_UPSTREAM_RATE", file.upstream_rate)?;
    let payout_confirmation_poll_secs = positive(
        "WXGATE_PAYOUT_CONFIRMATION_POLL_SECS",
        file.payout_confirmation_poll_secs,
    )?;
    let sync_schedule_ms = sync_schedule(env("WXGATE_SYNC_SCHEDULE_MS"), file.sync_schedule_ms)?;
    let event_retention_days = positive("WXGATE_EVENT_RETENTION_DAYS", file.event_retention_days)?;
    Ok(Settings {
        database_url,
        master_key,
        listen,
        public_url,
        connect_listen,
        upstream_rate,
        payout_confirmation_poll_secs,
        sync_schedule_ms,
        event_retention_days,
        webhooks,
    })
}

/// The status-sync schedule: the environment's (`from_env`) over the file's, checked.
fn sync_schedule(
    from_env: Option<String>,
    from_file: Option<Vec<i64>>,
) -> anyhow::Result<Option<Vec<i64>>> {
    let schedule = match from_env {
        Some(v) => Some(milliseconds(&v).context("WXGATE_SYNC_SCHEDULE_MS")?),
        None => from_file,
    };
    if schedule
        .as_ref()
        .is_some_and(|s| s.is_empty() || s.iter().any(|ms| *ms <= 0))
    {
        anyhow::bail!("sync_schedule_ms needs at least one wait, each above 0");
    }
    Ok(schedule)
}

/// `5000,10000` as milliseconds.
fn milliseconds(list: &str) -> anyhow::Result<Vec<i64>> {
    Ok(list
        .split(',')
        .map(|ms| ms.trim().parse::<i64>())
        .collect::<Result<_, _>>()?)
}

/// `[webhooks]` with the environment's settings over the file's, checked.
fn webhook_settings(mut webhooks: WebhookSettings) -> anyhow::Result<WebhookSettings> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(v) = env("WXGATE_WEBHOOKS_ALLOW_PRIVATE") {
        webhooks.allow_private = Some(matches!(v.as_str(), "1" | "true" | "yes"));
    }
    if let Some(v) = env("WXGATE_WEBHOOK_TIMEOUT_MS") {
        webhooks.timeout_ms = Some(v.parse().context("WXGATE_WEBHOOK_TIMEOUT_MS")?);
    }
    if let Some(v) = env("WXGATE_WEBHOOK_RETRY_SCHEDULE_MS") {
        webhooks.retry_schedule_ms =
            Some(milliseconds(&v).context("WXGATE_WEBHOOK_RETRY_SCHEDULE_MS")?);
    }
    if let Some(v) = env("WXGATE_WEBHOOK_PER_ENDPOINT") {
        webhooks.per_endpoint = Some(v.parse().context("WXGATE_WEBHOOK_PER_ENDPOINT")?);
    }
    if webhooks
        .per_endpoint
        .is_some_and(|n| !(1..=MAX_PER_ENDPOINT).contains(&n))
    {
        anyhow::bail!("webhook per_endpoint must be from 1 to {MAX_PER_ENDPOINT}");
    }
    if webhooks.timeout_ms == Some(0)
        || webhooks
            .retry_schedule_ms
            .as_ref()
            .is_some_and(|s| s.iter().any(|ms| *ms < 0))
    {
        anyhow::bail!("webhook timeout must be above 0 and retry waits at least 0");
    }
    Ok(webhooks)
}

fn require_master(s: &Settings) -> anyhow::Result<MasterKey> {
    s.master_key.clone().context(
        "a master key is required: set WXGATE_MASTER_KEY (64 hex characters) or master_key_file",
    )
}

fn ensure_sqlite_folder(url: &str) -> anyhow::Result<()> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .map(|p| p.split('?').next().unwrap_or(p))
        && let Some(parent) = Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs go to stderr: stdout carries what a command answers (JSON with --json).
    init_logs();
    let cli = Cli::parse();
    match cli.command {
        Command::Sim(args) => run_sim(args).await,
        Command::Demo(args) => run_demo(args).await,
        Command::Serve => run_serve(settings(cli.config.as_deref())?).await,
        Command::Migrate => {
            let s = settings(cli.config.as_deref())?;
            ensure_sqlite_folder(&s.database_url)?;
            let store = Store::connect(&s.database_url).await?;
            let applied = store.migrate().await?;
            if applied.is_empty() {
                println!("the database is up to date; nothing to apply");
            } else {
                println!("applied {} migrations:", applied.len());
                for m in applied {
                    println!("  {m}");
                }
            }
            Ok(())
        }
        Command::Merchant(cmd) => run_merchant(settings(cli.config.as_deref())?, cmd).await,
        Command::Events(EventsCommand::Redeliver {
            event_id,
            merchant,
            json,
        }) => {
            let s = settings(cli.config.as_deref())?;
            let store = wxgate_gateway::open_store(&s.database_url).await?;
            let gateway = Gateway::new(store, s.gateway_config(require_master(&s)?));
            // The same rules as POST /v1/events/{id}/redeliver.
            use wxgate_domain::id::{EventId, MerchantId};
            let merchant = MerchantId::parse(&merchant).context("--merchant is not a mch_… id")?;
            let event = EventId::parse(&event_id).context("not an evt_… event id")?;
            let (scheduled, _) =
                wxgate_gateway::app::webhooks::redeliver(&gateway, &merchant, &event)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"event_id": event_id, "scheduled": scheduled})
                );
            } else {
                println!(
                    "{event_id}: {scheduled} deliveries scheduled; a running gateway sends them within its poll interval"
                );
            }
            Ok(())
        }
        Command::Listen(args) => listen::run(args).await,
        Command::FaultRun(args) => fault_run::run(args).await,
        Command::Reconcile(args) => {
            let s = settings(cli.config.as_deref())?;
            let store = wxgate_gateway::open_store(&s.database_url).await?;
            let gateway = Gateway::new(store, s.gateway_config(require_master(&s)?));
            reconcile::run(&gateway, args).await
        }
        Command::Bench(BenchCommand::Sim(args)) => bench::sim(args).await,
        Command::Bench(BenchCommand::Gateway(args)) => bench::gateway(args).await,
        Command::Bench(BenchCommand::Webhooks(args)) => bench::webhooks(args).await,
        Command::Bench(BenchCommand::Reconcile(args)) => reconcile_bench::run(args).await,
        Command::Bench(BenchCommand::Callbacks(args)) => {
            bench_callbacks(cli.config.as_deref(), args).await
        }
    }
}

/// The callback bench registers its merchant in the gateway's database.
async fn bench_callbacks(
    config: Option<&Path>,
    args: callback_bench::CallbackBenchArgs,
) -> anyhow::Result<()> {
    let s = settings(config)?;
    let store = wxgate_gateway::open_store(&s.database_url).await?;
    callback_bench::run(args, store, require_master(&s)?).await
}

async fn run_serve(s: Settings) -> anyhow::Result<()> {
    let master = require_master(&s)?;
    ensure_sqlite_folder(&s.database_url)?;
    let store = wxgate_gateway::open_store(&s.database_url).await?;
    wxgate_gateway::warn_of_database_settings(&store).await?;
    let listener = TcpListener::bind(s.listen)
        .await
        .with_context(|| format!("cannot listen on {}", s.listen))?;
    let gateway = Gateway::new(store, s.gateway_config(master));
    let mut app = Application::build(gateway, listener).await?;
    if let Some(addr) = s.connect_listen {
        let connect = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        println!("the Connect front door listening on {addr}");
        app = app.with_connect_listener(connect);
    }
    println!(
        "wxgate gateway listening on {} (public URL {})",
        s.listen, s.public_url
    );
    app.run(shutdown_signal()).await
}

async fn run_merchant(s: Settings, cmd: MerchantCommand) -> anyhow::Result<()> {
    ensure_sqlite_folder(&s.database_url)?;
    let store = wxgate_gateway::open_store(&s.database_url).await?;
    match cmd {
        MerchantCommand::Create(args) => create_merchant(&s, &store, &args).await?,
        MerchantCommand::List { json } => list_merchants(&store, json).await?,
        MerchantCommand::DoorCredential {
            merchant,
            door,
            json,
        } => door_credential(&store, &s, &merchant, &door, json).await?,
        MerchantCommand::DoorCredentialRevoke { door, key_id, json } => {
            revoke_door_credential(&store, &door, &key_id, json).await?
        }
        MerchantCommand::PayoutScene {
            merchant,
            scene,
            reports,
            clear: _,
        } => set_payout_scene(&store, &merchant, scene, &reports).await?,
        MerchantCommand::SettlementCurrency {
            merchant,
            currency,
            clear: _,
        } => {
            merchants::set_settlement_currency(&store, &merchant, currency).await?;
            match currency {
                Some(c) => println!("{merchant} is settled in {}", c.code()),
                None => println!("{merchant}'s payments each settle in their own currency"),
            }
        }
        MerchantCommand::ApiKey(ApiKeyCommand::List { merchant, json }) => {
            list_api_keys(&store, &merchant, json).await?
        }
        MerchantCommand::ApiKey(ApiKeyCommand::Create { merchant, json }) => {
            let (id, key) = merchants::create_api_key(&store, &merchant).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"key_id": id, "api_key": key, "merchant_id": merchant})
                );
            } else {
                println!(
                    "API key {id} for {merchant}:\n{key}\nIt is shown only now; wxgate keeps a hash."
                );
            }
        }
        MerchantCommand::ApiKey(ApiKeyCommand::Revoke { key_id, json }) => {
            let revoked = store
                .revoke_api_key(&key_id, wxgate_gateway::now_ms())
                .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"key_id": key_id, "revoked": revoked})
                );
            } else if revoked {
                println!("revoked {key_id}");
            } else {
                anyhow::bail!("no active key {key_id}");
            }
        }
    }
    Ok(())
}

/// `wxgate merchant create`: a sandbox merchant wired to a simulator, or a live one from its
/// credential files; then its region and paid-after-close policy.
async fn create_merchant(
    s: &Settings,
    store: &wxgate_store::Store,
    args: &MerchantCreateArgs,
) -> anyhow::Result<()> {
    let master = require_master(s)?;
    let currencies = args
        .currencies
        .split(',')
        .map(|c| wxgate_domain::Currency::parse(c.trim()))
        .collect::<Result<Vec<_>, _>>()
        .context("--currencies")?;
    merchants::check_region(&currencies, args.merchant_category_code.as_deref())?;
    let merchant = match &args.sandbox_simulator {
        Some(sim) => merchants::create_sandbox_merchant(store, &master, sim, &args.name).await?,
        None => {
            let new = live_merchant(args, &currencies)?;
            merchants::create_merchant(store, &master, new, wxgate_gateway::now_ms()).await?
        }
    };
    let codes: Vec<&str> = currencies.iter().map(|c| c.code()).collect();
    if merchant.merchant_category_code != args.merchant_category_code
        || merchant.currencies != codes.join(",")
    {
        let mcc = args.merchant_category_code.as_deref();
        merchants::set_region(store, &merchant.id, &currencies, mcc).await?;
    }
    if merchant.paid_after_close_policy != args.paid_after_close {
        merchants::set_paid_after_close_policy(store, &merchant.id, args.paid_after_close).await?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"merchant_id": merchant.id, "mchid": merchant.mchid, "appid": merchant.appid, "mode": merchant.mode.as_str()})
        );
    } else {
        println!(
            "created merchant {} (mchid {}, {})",
            merchant.id,
            merchant.mchid,
            merchant.mode.as_str()
        );
    }
    Ok(())
}

/// `wxgate merchant door-credential-revoke`.
async fn revoke_door_credential(
    store: &Store,
    door: &str,
    key_id: &str,
    json: bool,
) -> anyhow::Result<()> {
    let door = wxgate_domain::door::Door::parse(door).with_context(|| {
        format!("no front door {door:?} (payment_intents, two_checkout, connect, open_api)")
    })?;
    let now = wxgate_gateway::now_ms();
    let revoked = wxgate_gateway::app::doors::revoke_credential(store, door, key_id, now).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"door": door.as_str(), "key_id": key_id, "revoked": revoked})
        );
    } else if revoked {
        println!("revoked {} credential {key_id}", door.as_str());
    } else {
        anyhow::bail!("no active {} credential {key_id}", door.as_str());
    }
    Ok(())
}

/// `wxgate merchant door-credential`: a front door's key id and secret, shown once.
async fn door_credential(
    store: &Store,
    settings: &Settings,
    merchant: &str,
    door: &str,
    json: bool,
) -> anyhow::Result<()> {
    let door = wxgate_domain::door::Door::parse(door)
        .with_context(|| format!("no front door {door:?} (payment_intents)"))?;
    anyhow::ensure!(
        store.merchant(merchant).await?.is_some(),
        "no merchant {merchant}"
    );
    let master = require_master(settings)?;
    let (key_id, secret) = wxgate_gateway::app::doors::create_credential(
        store,
        &master,
        merchant,
        door,
        wxgate_gateway::now_ms(),
    )
    .await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"door": door.as_str(), "merchant_id": merchant, "key_id": key_id, "secret": secret})
        );
    } else {
        println!(
            "{} credential for {merchant}: id {key_id}\nsecret {secret}\nThe secret is shown only now; wxgate keeps it sealed.",
            door.as_str()
        );
    }
    Ok(())
}

/// `wxgate merchant payout-scene`: the merchant's default scene, checked against WeChat's table.
async fn set_payout_scene(
    store: &Store,
    merchant: &str,
    scene: Option<String>,
    reports: &[String],
) -> anyhow::Result<()> {
    let scene = match scene {
        Some(id) => {
            let report_infos = reports
                .iter()
                .map(|r| {
                    let (t, c) = r
                        .split_once('=')
                        .with_context(|| format!("--report {r:?} is not TYPE=CONTENT"))?;
                    Ok(wechatpay_v3::model::SceneReportInfo {
                        info_type: t.to_string(),
                        info_content: c.to_string(),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Some(wxgate_gateway::app::payouts::Scene { id, report_infos })
        }
        None => None,
    };
    merchants::set_payout_scene(store, merchant, scene.as_ref()).await?;
    match &scene {
        Some(s) => println!("payouts of {merchant} use scene {} by default", s.id),
        None => println!("payouts of {merchant} must name their scene"),
    }
    Ok(())
}

/// `wxgate merchant list`: one line (or JSON object) per merchant.
async fn list_merchants(store: &Store, json: bool) -> anyhow::Result<()> {
    for m in merchants::list(store).await? {
        if json {
            println!(
                "{}",
                serde_json::json!({"merchant_id": m.id, "name": m.name, "mchid": m.mchid, "appid": m.appid, "mode": m.mode.as_str(), "currencies": m.currencies, "settlement_currency": m.settlement_currency})
            );
        } else {
            let settles = m
                .settlement_currency
                .as_deref()
                .map(|c| format!("  settles in {c}"))
                .unwrap_or_default();
            println!(
                "{}  {}  mchid {}  {}  {}{settles}",
                m.id,
                m.name,
                m.mchid,
                m.mode.as_str(),
                m.currencies
            );
        }
    }
    Ok(())
}

/// `wxgate merchant api-key list`: a merchant's keys, active or revoked.
async fn list_api_keys(store: &Store, merchant: &str, json: bool) -> anyhow::Result<()> {
    let time = |ms: i64| wxgate_gateway::views::rfc3339(ms);
    for k in merchants::api_keys(store, merchant).await? {
        let revoked = k.revoked_at.map(time);
        if json {
            println!(
                "{}",
                serde_json::json!({"key_id": k.id, "created_at": time(k.created_at), "revoked_at": revoked})
            );
        } else {
            let state = revoked.map_or("active".to_string(), |t| format!("revoked {t}"));
            println!("{}  created {}  {state}", k.id, time(k.created_at));
        }
    }
    Ok(())
}

/// `--paid-after-close`: accept or refund.
fn parse_policy(value: &str) -> Result<wxgate_domain::PaidAfterClosePolicy, String> {
    wxgate_domain::PaidAfterClosePolicy::parse(value)
        .ok_or_else(|| format!("{value:?} is not accept or refund"))
}

/// A live merchant from the command line and the files it names.
fn live_merchant(
    args: &MerchantCreateArgs,
    currencies: &[wxgate_domain::Currency],
) -> anyhow::Result<merchants::NewMerchant> {
    let read = |p: &Option<PathBuf>, what: &str| -> anyhow::Result<Option<String>> {
        p.as_ref()
            .map(|p| {
                std::fs::read_to_string(p)
                    .with_context(|| format!("reading the {what} {}", p.display()))
            })
            .transpose()
    };
    Ok(merchants::NewMerchant {
        name: args.name.clone(),
        mode: wxgate_domain::MerchantMode::Live,
        mchid: args
            .mchid
            .clone()
            .context("--mchid or --sandbox-simulator is required")?,
        appid: args.appid.clone().context("--appid")?,
        mini_program_appid: args.mini_program_appid.clone(),
        api_base_url: args.api_base_url.clone(),
        merchant_serial_no: args.serial_no.clone().context("--serial-no")?,
        merchant_private_key_pem: read(&args.private_key_file, "private key")?
            .context("--private-key-file")?,
        apiv3_key: read(&args.apiv3_key_file, "APIv3 key")?
            .context("--apiv3-key-file")?
            .trim()
            .to_string(),
        app_secret: read(&args.app_secret_file, "AppSecret")?.map(|s| s.trim().to_string()),
        platform_public_key_id: args.platform_public_key_id.clone(),
        platform_public_key: read(&args.platform_public_key_file, "platform public key")?,
        platform_certificate: read(&args.platform_certificate_file, "platform certificate")?,
        currencies: currencies.to_vec(),
        paid_after_close_policy: args.paid_after_close,
        merchant_category_code: args.merchant_category_code.clone(),
        fee_rate_bp: args.fee_rate_bp,
        settlement_currency: args.settlement_currency,
    })
}

async fn run_sim(args: SimArgs) -> anyhow::Result<()> {
    let sim = Sim::new(SimConfig {
        data_dir: args.data,
        time_scale: args.time_scale,
        refund_settle_secs: args.refund_settle_secs,
        ..SimConfig::default()
    })?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("WeChat Pay simulator listening on http://{addr}");
    println!("  create a sandbox merchant: curl -s -X POST http://{addr}/sim/merchants");
    println!("  payer page:                http://{addr}/sim/payer");
    wxgate_sim::serve(listener, sim, shutdown_signal()).await
}

/// The embedded default: one server on one address with the gateway's API and the simulator,
/// SQLite and the simulator's state in the data folder, a sandbox merchant and its API key.
async fn run_demo(args: DemoArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("cannot create {}", args.data.display()))?;
    let master = demo_master_key(&args.data)?;
    let database_url = format!("sqlite://{}", args.data.join("wxgate.db").display());
    let store = Store::connect(&database_url).await?;
    store.migrate().await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let base = format!("http://{}", listener.local_addr()?);
    let sim = Sim::new(SimConfig {
        data_dir: Some(args.data.join("simulator")),
        ..SimConfig::default()
    })?;
    let persister = sim.start_persister();
    let mut config = GatewayConfig::new(database_url, master.clone(), base.clone());
    // The demo runs on this machine: its webhooks may go to a local receiver.
    config.webhooks_allow_private = true;
    let gateway = Gateway::new(store.clone(), config);
    let connect = demo_connect_listener(&args).await?;
    let connect_endpoint = format!("http://{}", connect.local_addr()?);
    let app = Application::build(gateway.clone(), listener)
        .await?
        .with_routes(wxgate_sim::router(sim.clone()))
        .with_connect_listener(connect)
        .with_activity_log();
    let server = tokio::spawn(app.run(shutdown_signal()));

    let demo = demo_merchant(
        &gateway,
        &sim,
        &master,
        &args.data,
        &base,
        &connect_endpoint,
    )
    .await?;
    let key = demo["api_key"].as_str().unwrap_or_default();
    println!("wxgate demo on {base} (data in {})", args.data.display());
    println!(
        "  merchant {}  API key {key}",
        demo["merchant_id"].as_str().unwrap_or_default()
    );
    if let Some(link) = demo["payment_link"].as_str() {
        println!(
            "  checkout: {link}  (open it in a browser: each press of Pay makes a hosted payment)"
        );
    }
    println!("  simulator payer page: {base}/sim/payer");
    println!("  try it:");
    // A fresh order id each start, so the printed command never meets one already used.
    let order = wechatpay_v3::nonce(10);
    println!(
        "    curl -s {base}/v1/payments -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n      -d '{{\"amount\": 100, \"currency\": \"CNY\", \"merchant_order_id\": \"demo-{order}\", \"description\": \"Test\", \"integration\": \"native\"}}'"
    );
    println!("activity (one line per request, event and webhook attempt):");
    if let Some(merchant) = demo["merchant_id"]
        .as_str()
        .and_then(wxgate_domain::id::MerchantId::parse)
    {
        tokio::spawn(activity::follow(gateway.clone(), merchant));
    }
    let result = server.await?;
    if let Some(task) = persister {
        task.abort();
    }
    sim.persist()?;
    result
}

/// The demo's merchant, API key and payment link, made on first start and kept in `demo.json`.
async fn demo_merchant(
    gateway: &Gateway,
    sim: &Sim,
    master: &MasterKey,
    data: &Path,
    base: &str,
    connect_endpoint: &str,
) -> anyhow::Result<serde_json::Value> {
    let demo_file = data.join("demo.json");
    if let Ok(bytes) = std::fs::read(&demo_file) {
        return Ok(serde_json::from_slice(&bytes)?);
    }
    let store = gateway.store();
    let merchant = merchants::create_sandbox_merchant(store, master, base, "Demo shop").await?;
    let (_, key) = merchants::create_api_key(store, &merchant.id).await?;
    let link = demo_link(gateway, &merchant.id).await?;
    merchants::set_payout_scene(store, &merchant.id, Some(&demo_payout_scene())).await?;
    // The simulated WeChat user's openid under the demo AppID: a payee for payouts.
    let openid = wxgate_sim::payer::openid_for(&merchant.appid, "payer");
    let now = wxgate_gateway::now_ms();
    let door = wxgate_domain::door::Door::TwoCheckout;
    let (code, secret_key) =
        wxgate_gateway::app::doors::create_credential(store, master, &merchant.id, door, now)
            .await?;
    let (api_key_id, secret_api_key) = wxgate_gateway::app::doors::create_credential(
        store,
        master,
        &merchant.id,
        wxgate_domain::door::Door::Connect,
        now,
    )
    .await?;
    let (app_id, keys) = wxgate_gateway::app::doors::create_credential(
        store,
        master,
        &merchant.id,
        wxgate_domain::door::Door::OpenApi,
        now,
    )
    .await?;
    let keys: serde_json::Value = serde_json::from_str(&keys)?;
    let compat = serde_json::json!({
        "open_api": {"base_url": base, "app_id": app_id,
            "merchant_private_key": keys["merchant_private_key"],
            "platform_public_key": keys["platform_public_key"]},
        "connect": {"api_endpoint": connect_endpoint, "merchant_id": merchant.id,
            "api_key_id": api_key_id, "secret_api_key": secret_api_key},
        "payment_intents": demo_payment_intents(gateway, master, base).await?,
        "two_checkout": {"base_url": format!("{base}/rpc/6.0/"), "merchant_code": code,
            "secret_key": secret_key},
    });
    let demo = serde_json::json!({"api_base": base, "api_key": key, "merchant_id": merchant.id, "simulator_base": base, "payment_link": link.url, "sandbox_openid": openid, "compat": compat});
    // The simulator's merchants go to disk before demo.json names them (its own persister runs
    // every half second), so a demo stopped at once still knows them when it starts again.
    sim.persist()?;
    write_private(&demo_file, &serde_json::to_vec_pretty(&demo)?)?;
    Ok(demo)
}

/// The Connect door's listener: where demo.json says it was (so its `compat.connect` stays
/// true across restarts), else `--connect-listen`.
async fn demo_connect_listener(args: &DemoArgs) -> anyhow::Result<TcpListener> {
    let kept = std::fs::read(args.data.join("demo.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|d| {
            d["compat"]["connect"]["api_endpoint"]
                .as_str()
                .map(str::to_string)
        })
        .and_then(|e| e.trim_start_matches("http://").parse::<SocketAddr>().ok());
    let addr = kept.unwrap_or(args.connect_listen);
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (the Connect front door)"))
}

/// The payment-intents door's sandbox merchant (a cross-border one, pricing in HKD as that
/// system's example does), its credential, and an access token valid for a day.
async fn demo_payment_intents(
    gateway: &Gateway,
    master: &MasterKey,
    base: &str,
) -> anyhow::Result<serde_json::Value> {
    use wxgate_domain::door::Door;
    let store = gateway.store();
    let merchant = merchants::create_sandbox_merchant(store, master, base, "Demo HK shop").await?;
    merchants::set_region(
        store,
        &merchant.id,
        &[wxgate_domain::Currency::HKD],
        Some("5411"),
    )
    .await?;
    let now = wxgate_gateway::now_ms();
    let door = Door::PaymentIntents;
    let (uid, secret) =
        wxgate_gateway::app::doors::create_credential(store, master, &merchant.id, door, now)
            .await?;
    let day = 24 * 3600 * 1000;
    let (token, _) = wxgate_gateway::app::doors::issue_token(gateway, door, &merchant.id, day)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
    Ok(
        serde_json::json!({"base_url": base, "access_token": token, "uid": uid,
        "client_secret": secret, "merchant_id": merchant.id}),
    )
}

/// The demo merchant's default payout scene (cash marketing), so a payout needs no scene.
fn demo_payout_scene() -> wxgate_gateway::app::payouts::Scene {
    let item = |t: &str, c: &str| wechatpay_v3::model::SceneReportInfo {
        info_type: t.into(),
        info_content: c.into(),
    };
    wxgate_gateway::app::payouts::Scene {
        id: "1000".into(),
        report_infos: vec![item("活动名称", "演示活动"), item("奖励说明", "演示奖励")],
    }
}

/// The demo's payment link: ¥1.00 for a demo item, so a hosted checkout is one click away.
async fn demo_link(
    gateway: &Gateway,
    merchant_id: &str,
) -> anyhow::Result<wxgate_store::PaymentLinkRow> {
    let new = wxgate_gateway::app::links::NewLink {
        currency: wxgate_domain::Currency::CNY,
        amount: Some(100),
        amount_min: None,
        amount_max: None,
        description: "Demo item".into(),
        return_url: None,
        max_uses: None,
        expires_at: None,
        merchant_reference: None,
    };
    let merchant = wxgate_domain::id::MerchantId::stored(merchant_id);
    wxgate_gateway::app::links::create(gateway, &merchant, new)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))
}

/// The demo's master key lives beside its data, created on first start.
fn demo_master_key(data: &Path) -> anyhow::Result<MasterKey> {
    let path = data.join("master.key");
    match std::fs::read_to_string(&path) {
        Ok(hex) => Ok(MasterKey::from_hex(&hex)?),
        Err(_) => {
            let key = MasterKey::generate();
            write_private(&path, key.expose_hex().as_bytes())?;
            Ok(key)
        }
    }
}

/// Writes a file readable by its owner only.
/// Writes a file only its owner can read, whole or not at all: the bytes go to a temporary
/// file created with owner-only permissions, which is then renamed into place, so a reader
/// never sees a half-written file and the content is never readable by others.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&temporary)
        .with_context(|| format!("writing {}", temporary.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// The status-sync schedule comes from the file (or its variable) and is checked.
    #[test]
    fn a_sync_schedule_is_read_and_checked() {
        let file = std::env::temp_dir().join(format!("wxgate-sync-{}.toml", std::process::id()));
        std::fs::write(&file, "sync_schedule_ms = [1000, 60000]\n").unwrap();
        let read = super::settings(Some(&file)).unwrap();
        assert_eq!(read.sync_schedule_ms, Some(vec![1000, 60000]));
        for bad in ["sync_schedule_ms = []", "sync_schedule_ms = [5000, 0]"] {
            std::fs::write(&file, bad).unwrap();
            let refused = super::settings(Some(&file)).err().unwrap().to_string();
            assert!(refused.contains("sync_schedule_ms"), "{bad}: {refused}");
        }
        assert_eq!(super::milliseconds(" 5, 10").unwrap(), vec![5, 10]);
        assert!(super::milliseconds("5,x").is_err());
        std::fs::remove_file(&file).unwrap();
    }

    /// The command line is well formed, and every subcommand's help renders.
    #[test]
    fn every_subcommand_has_help() {
        let cli = super::Cli::command();
        cli.clone().debug_assert();
        fn walk(cmd: &clap::Command, path: &str, seen: &mut Vec<String>) {
            let mut cmd = cmd.clone();
            let help = cmd.render_long_help().to_string();
            assert!(help.contains("Usage:"), "{path}: {help}");
            for arg in cmd.get_arguments() {
                let documented = arg.get_help().is_some()
                    || arg.is_positional()
                    || arg.get_id() == "help"
                    || arg.get_id() == "version";
                assert!(documented, "{path} --{} has no description", arg.get_id());
            }
            seen.push(path.to_string());
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), seen);
            }
        }
        let mut seen = Vec::new();
        walk(&cli, "wxgate", &mut seen);
        for expected in [
            "wxgate serve",
            "wxgate merchant list",
            "wxgate merchant api-key list",
            "wxgate events redeliver",
        ] {
            assert!(
                seen.iter().any(|s| s == expected),
                "{expected} missing from {seen:?}"
            );
        }
        let serve = cli
            .find_subcommand("serve")
            .unwrap()
            .clone()
            .render_long_help()
            .to_string();
        assert!(
            serve.contains("WXGATE_DATABASE_URL") && serve.contains("WXGATE_MASTER_KEY"),
            "{serve}"
        );
    }
}
