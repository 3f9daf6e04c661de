//! The processes of a fault run: the simulator, N `wxgate serve` nodes on one database, and
//! HAProxy in front of them. Nodes keep their ports across restarts, so the balancer's
//! configuration never changes; a killed node is out of rotation until its `/readyz` answers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

/// The nodes' longest wait between queries of a payout waiting for its payee.
pub const PAYOUT_CONFIRMATION_POLL_SECS: u64 = 60;
/// The nodes' waits before each webhook retry. The receiver refuses 5 % of deliveries at
/// random, so about one run in three has an event refused three times (some 3,000 events ×
/// 0.05³); with the default schedule its fourth attempt comes 180 s later, after SETTLE
/// (mod.rs) is over, and an event made late in the run read as lost. Here five attempts fall
/// within 67 s.
pub const WEBHOOK_RETRY_SCHEDULE_MS: &str = "2000,5000,10000,20000,30000,30000,30000,30000";

/// How long a process gets to start listening.
const START_WAIT: Duration = Duration::from_secs(30);

pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    env: Vec<(String, String)>,
    pub sim_url: String,
    pub lb_url: String,
    ports: Vec<u16>,
    nodes: Vec<Option<Child>>,
    others: Vec<Child>,
}

/// A port free right now on loopback.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until something listens on `port`.
async fn listening(port: u16) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + START_WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "nothing listens on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn log_file(dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    Ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))?)
}

impl Cluster {
    /// Starts the simulator; nodes and the balancer come with [`Cluster::start_nodes`].
    pub async fn start(dir: &Path, database_url: &str, master_hex: &str) -> anyhow::Result<Self> {
        let bin = std::env::current_exe()?;
        let sim_port = free_port()?;
        let sim = Command::new(&bin)
            .args(["sim", "--listen", &format!("127.0.0.1:{sim_port}")])
            .args(["--time-scale", "10"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(dir, "sim.log")?)
            .spawn()
            .context("starting the simulator")?;
        listening(sim_port).await?;
        let lb_port = free_port()?;
        let env = vec![
            ("WXGATE_DATABASE_URL".into(), database_url.into()),
            ("WXGATE_MASTER_KEY".into(), master_hex.into()),
            (
                "WXGATE_PUBLIC_URL".into(),
                format!("http://127.0.0.1:{lb_port}"),
            ),
            ("WXGATE_WEBHOOKS_ALLOW_PRIVATE".into(), "1".into()),
            // A payee's answer whose notification is lost is found within this (see
            // SETTLE in mod.rs).
            (
                "WXGATE_PAYOUT_CONFIRMATION_POLL_SECS".into(),
                PAYOUT_CONFIRMATION_POLL_SECS.to_string(),
            ),
            (
                "WXGATE_WEBHOOK_RETRY_SCHEDULE_MS".into(),
                WEBHOOK_RETRY_SCHEDULE_MS.into(),
            ),
            ("RUST_LOG".into(), "warn".into()),
        ];
        Ok(Self {
            dir: dir.to_path_buf(),
            bin,
            env,
            sim_url: format!("http://127.0.0.1:{sim_port}"),
            lb_url: format!("http://127.0.0.1:{lb_port}"),
            ports: Vec::new(),
            nodes: Vec::new(),
            others: vec![sim],
        })
    }

    /// Runs a `wxgate` subcommand to its end with the nodes' environment.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = Command::new(&self.bin)
            .args(args)
            .envs(self.env.iter().cloned())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "wxgate {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Starts `n` nodes and HAProxy in front of them.
    pub async fn start_nodes(&mut self, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            self.ports.push(free_port()?);
            self.nodes.push(None);
        }
        for i in 0..n {
            self.restart(i).await?;
        }
        let config = self.dir.join("haproxy.cfg");
        std::fs::write(&config, self.haproxy_config())?;
        let haproxy = Command::new(haproxy_binary())
            .args(["-db", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir, "haproxy.log")?)
            .spawn()
            .context("starting HAProxy (is it installed?)")?;
        self.others.push(haproxy);
        let lb_port = self.lb_url.rsplit(':').next().unwrap_or_default().parse()?;
        listening(lb_port).await
    }

    fn haproxy_config(&self) -> String {
        let lb = self.lb_url.trim_start_matches("http://");
        let servers: String = self
            .ports
            .iter()
            .enumerate()
            .map(|(i, port)| format!("  server node{i} 127.0.0.1:{port} check\n"))
            .collect();
        format!(
            "global\n  maxconn 4096\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 90s\n  timeout server 90s\n  \
             retries 3\n  option redispatch\n\
             frontend api\n  bind {lb}\n  default_backend nodes\n\
             backend nodes\n  balance roundrobin\n  option httpchk GET /readyz\n  \
             default-server inter 300ms fall 1 rise 1\n{servers}"
        )
    }

    pub fn nodes(&self) -> usize {
        self.ports.len()
    }

    /// Kills node `i` with SIGKILL (no chance to finish anything) and waits for it to die.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.nodes[i].take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts node `i` (again) on its port and waits until it listens.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let child = Command::new(&self.bin)
            .arg("serve")
            .envs(self.env.iter().cloned())
            .env("WXGATE_LISTEN", format!("127.0.0.1:{}", self.ports[i]))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir, &format!("node{i}.log"))?)
            .spawn()
            .context("starting a node")?;
        self.nodes[i] = Some(child);
        listening(self.ports[i]).await
    }

    /// Starts every node that is down.
    pub async fn all_up(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_none() {
                self.restart(i).await?;
            }
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self
            .nodes
            .iter_mut()
            .flatten()
            .chain(self.others.iter_mut())
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Debian installs HAProxy in /usr/sbin, which is not on every PATH.
fn haproxy_binary() -> &'static str {
    if Path::new("/usr/sbin/haproxy").exists() {
        "/usr/sbin/haproxy"
    } else {
        "haproxy"
    }
}
