//! App: build every part from a validated [`Config`], bind the listeners (their addresses are
//! known when `start` returns) and drain gracefully on shutdown.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use hyper::service::service_fn;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{
    admin::Admin,
    admission::{Admission, AdmissionSettings},
    budget::{Budget, LocalBudget},
    cache::{CacheSettings, CacheStore},
    client,
    clock::EpochClock,
    config::{parse_upstream, Config, ConfigError},
    forward::Forward,
    metrics::Metrics,
    pace::{
        queue::{Queue, QueueSettings},
        PaceLayer,
    },
    retry::{RetryLayer, RetryPolicy},
    secret::{KeySource, KeyStore},
    server::{self, ConnLimits},
    stack::{self, Proxy},
};

/// Why the app could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The key could not be read.
    #[error("cannot load the API key: {0}")]
    Key(std::io::Error),
}

/// A running proxy.
pub struct App {
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// Where the admin endpoints listen.
    pub admin_addr: SocketAddr,
    /// The key in force (reload on SIGHUP).
    pub keys: KeyStore,
    /// Metrics (tests read them directly).
    pub metrics: Metrics,
    queue: Queue,
    ready: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    proxy_task: JoinHandle<hyper_util::server::graceful::GracefulShutdown>,
    admin_task: JoinHandle<hyper_util::server::graceful::GracefulShutdown>,
    watcher: Option<JoinHandle<()>>,
    grace: Duration,
}

impl App {
    /// Build and start everything from `cfg` (already validated) with the key from `key`.
    pub async fn start(cfg: &Config, key: KeySource) -> Result<App, StartError> {
        let base = parse_upstream(&cfg.upstream.url)?;
        let http = client::build(&cfg.upstream)?;
        let keys = KeyStore::load(key).map_err(StartError::Key)?;
        let metrics = Metrics::new();
        let clock = EpochClock::system();
        let b = &cfg.budget;
        let budget: Arc<dyn Budget> = Arc::new(LocalBudget::new(b.limit.get(), b.window, b.headroom));
        let queue = Queue::spawn_with(
            budget.clone(),
            QueueSettings { capacity: cfg.queue.capacity, high_priority_share: cfg.queue.high_priority_share },
        );
        let cache = CacheStore::new(
            CacheSettings {
                enabled: cfg.cache.enabled,
                account: "default".into(),
                ttl: cfg.cache.ttl,
                max_bytes: cfg.cache.max_bytes.as_u64(),
                max_entry_bytes: usize::try_from(cfg.cache.max_entry_bytes.as_u64()).unwrap_or(usize::MAX),
            },
            metrics.clone(),
        );
        let retry = RetryPolicy { max_attempts: cfg.retry.max_attempts.get(), max_wait: cfg.retry.max_wait };
        let forward =
            Forward::new(http, base.clone(), keys.clone(), queue.clone(), metrics.clone(), clock, cfg.upstream.timeout);
        let proxy = Proxy {
            admission: Admission::new(AdmissionSettings {
                allowed_prefixes: cfg.server.allowed_prefixes.clone(),
                max_body: usize::try_from(cfg.server.max_request_body.as_u64()).unwrap_or(usize::MAX),
                client_header: http::HeaderName::from_bytes(cfg.queue.client_header.as_bytes())
                    .map_err(|e| ConfigError::Invalid { key: "queue.client_header", problem: e.to_string() })?,
                max_wait: cfg.queue.max_wait,
                upstream_host: base.authority.host().to_owned(),
                priority_header: header_name("queue.priority_header", &cfg.queue.priority_header)?,
                max_wait_header: header_name("queue.max_wait_header", &cfg.queue.max_wait_header)?,
            }),
            stack: stack::build(
                cache.clone(),
                RetryLayer::new(retry, budget.clone(), metrics.clone()),
                PaceLayer::new(queue.clone(), metrics.clone(), cfg.queue.client_metrics_limit),
                forward,
            ),
            metrics: metrics.clone(),
            budget: budget.clone(),
            clock,
        };
        let ready = Arc::new(AtomicBool::new(true));
        let admin = Admin { metrics: metrics.clone(), budget, cache, ready: ready.clone() };

        let proxy_listener = bind(cfg.server.listen).await?;
        let admin_listener = bind(cfg.server.admin_listen).await?;
        let proxy_addr =
            proxy_listener.local_addr().map_err(|e| StartError::Bind { addr: cfg.server.listen, source: e })?;
        let admin_addr =
            admin_listener.local_addr().map_err(|e| StartError::Bind { addr: cfg.server.admin_listen, source: e })?;
        let limits = ConnLimits {
            max_header_bytes: usize::try_from(cfg.server.max_header_bytes.as_u64()).unwrap_or(usize::MAX),
            header_read_timeout: cfg.server.header_read_timeout,
        };
        let (stop, stop_rx) = watch::channel(false);
        let proxy_task = tokio::spawn(server::serve(
            proxy_listener,
            server::builder(limits),
            move |peer| {
                let proxy = proxy.clone();
                service_fn(move |req| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, Infallible>(proxy.handle(req, peer).await) }
                })
            },
            stop_rx.clone(),
        ));
        let admin_task = tokio::spawn(server::serve(
            admin_listener,
            server::builder(limits),
            move |_| {
                let admin = admin.clone();
                service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(&req).await) }
                })
            },
            stop_rx,
        ));
        let watcher = keys.is_file().then(|| tokio::spawn(watch_key_file(keys.clone())));
        tracing::info!(%proxy_addr, %admin_addr, upstream = %cfg.upstream.url, "Proxy listening");
        Ok(App {
            proxy_addr,
            admin_addr,
            keys,
            metrics,
            queue,
            ready,
            stop,
            proxy_task,
            admin_task,
            watcher,
            grace: cfg.server.shutdown_grace,
        })
    }

    /// Stop accepting, let in-flight and queued requests finish within the grace period, then
    /// answer what is still queued with a `proxy_shutting_down` envelope.
    pub async fn shutdown(self) {
        tracing::info!(grace = ?self.grace, "Shutting down: no new connections");
        self.ready.store(false, Ordering::Release);
        let _ = self.stop.send(true);
        if let Some(w) = &self.watcher {
            w.abort();
        }
        let (Ok(proxy), Ok(admin)) = (self.proxy_task.await, self.admin_task.await) else {
            self.queue.close();
            return;
        };
        drop(admin); // admin connections are not drained
        let drain = proxy.shutdown();
        tokio::pin!(drain);
        tokio::select! {
            _ = &mut drain => tracing::info!("Drained every connection"),
            _ = tokio::time::sleep(self.grace) => {
                tracing::warn!(queued = self.queue.depth(), "Grace period over: refusing what is still queued");
                self.queue.close();
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut drain).await;
            }
        }
        self.queue.close();
    }
}

fn header_name(key: &'static str, name: &str) -> Result<http::HeaderName, ConfigError> {
    http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| ConfigError::Invalid { key, problem: e.to_string() })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
}

/// Re-read the key file every second; the next request uses a new key.
async fn watch_key_file(keys: KeyStore) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match keys.reload() {
            Ok(true) => tracing::info!("API key file changed: using the new key"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "Cannot re-read the API key file; keeping the current key"),
        }
    }
}
