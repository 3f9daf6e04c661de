//! [`Application`]: the gateway bound to a listener, serving the HTTP router and running the
//! background workers until shutdown.

use std::time::Duration;

use tokio::net::TcpListener;

use crate::gateway::Gateway;
use crate::{delivery, http, sync};

/// How long a stopping node waits for its claimed work (status syncs, webhook attempts) to
/// finish after it stopped taking requests; what is still running then is left to its leases.
pub const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// How often an SQLite store's log is copied into its database file (`Store::checkpoint`):
/// the most a machine that stops can take with it.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// A gateway bound to a listener, ready to run.
pub struct Application {
    listener: TcpListener,
    gateway: Gateway,
    extra: Option<axum::Router>,
    /// Print one line per request (the demo's activity).
    activity: bool,
    /// Where the Connect front door is served, at the root (its SDKs take no path).
    connect: Option<TcpListener>,
}

impl Application {
    pub async fn build(gateway: Gateway, listener: TcpListener) -> anyhow::Result<Self> {
        Ok(Self {
            listener,
            gateway,
            extra: None,
            activity: false,
            connect: None,
        })
    }

    /// Serves the Connect front door at the root of its own listener.
    pub fn with_connect_listener(mut self, listener: TcpListener) -> Self {
        self.connect = Some(listener);
        self
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves more routes beside the gateway's (the demo mounts the simulator this way).
    pub fn with_routes(mut self, routes: axum::Router) -> Self {
        self.extra = Some(routes);
        self
    }

    /// Prints one readable line per request as it is answered (the demo shows its activity
    /// this way).
    pub fn with_activity_log(mut self) -> Self {
        self.activity = true;
        self
    }

    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Serves the API and runs the workers until `shutdown` completes; then stops gracefully:
    /// no new connections, requests in flight answered, claimed work finished or handed back
    /// (within [`STOP_DEADLINE`]).
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let worker = tokio::spawn(sync::run(self.gateway.clone(), stop_rx.clone()));
        let connect = self.connect.map(|listener| {
            let router = http::doors::connect::router(self.gateway.clone());
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stop.changed().await;
                    })
                    .await
            })
        });
        let pressure = {
            let (gw, stop) = (self.gateway.clone(), stop_rx.clone());
            tokio::spawn(async move {
                let changed = |width| gw.metrics().background_width(width);
                let stall = crate::pressure::CpuStall::of_this_node();
                crate::pressure::probe(gw.pressure(), stall, changed, stop).await;
            })
        };
        let checkpoints = tokio::spawn(checkpoints(self.gateway.clone(), stop_rx.clone()));
        let deliveries = tokio::spawn(delivery::run(self.gateway.clone(), stop_rx));
        let mut router = http::router(self.gateway.clone());
        if let Some(extra) = self.extra {
            router = router.merge(extra);
        }
        if self.activity {
            router = router.layer(axum::middleware::from_fn(http::print_activity));
        }
        axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await?;
        let _ = stop_tx.send(true);
        let workers = async {
            let _ = worker.await;
            let _ = deliveries.await;
            let _ = pressure.await;
            let _ = checkpoints.await;
            if let Some(connect) = connect {
                let _ = connect.await;
            }
        };
        if tokio::time::timeout(STOP_DEADLINE, workers).await.is_err() {
            tracing::warn!(
                "stopping: background work still running after {STOP_DEADLINE:?}; its claims will lapse"
            );
        }
        Ok(())
    }
}

/// Copies an SQLite store's log into its database file every [`CHECKPOINT_EVERY`] until
/// `stop` turns true (nothing to do on PostgreSQL).
async fn checkpoints(gw: Gateway, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(CHECKPOINT_EVERY) => {}
        }
        match gw.store().checkpoint().await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => tracing::warn!(error = %e, "copying the SQLite log into the database failed"),
        }
    }
}
