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
    secret::{KeySource, KeyStore, TokenSet},
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
    stop_admin: watch::Sender<bool>,
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
        let tokens = inbound_tokens(cfg)?;
        let metrics = Metrics::new();
        let clock = EpochClock::system();
        let b = &cfg.budget;
        let budget: Arc<dyn Budget> = Arc::new(LocalBudget::new(b.limit.get(), b.window, b.headroom));
        let queue = Queue::spawn_with(
            budget.clone(),
            QueueSettings { capacity: cfg.queue.capacity, high_priority_share: cfg.queue.high_priority_share },
        );
        let cache = CacheStore::new(CacheSettings::from_config(&cfg.cache, "default"), metrics.clone())
            .with_budget(budget.clone()); // read only: is the account limited (stale serving)
        let r = &cfg.retry;
        let retry = RetryPolicy {
            max_attempts: r.max_attempts.get(),
            max_wait: r.max_wait,
            fault_attempts: r.fault_attempts.get(),
            backoff_base: r.backoff_base,
            backoff_max: r.backoff_max,
        };
        let forward =
            Forward::new(http, base.clone(), keys.clone(), queue.clone(), metrics.clone(), clock, cfg.upstream.timeout);
        let proxy = Proxy {
            admission: Admission::new(AdmissionSettings {
                allowed_prefixes: cfg.server.allowed_prefixes.clone(),
                max_body: usize::try_from(cfg.server.max_request_body.as_u64()).unwrap_or(usize::MAX),
                body_read_timeout: cfg.server.body_read_timeout,
                client_header: http::HeaderName::from_bytes(cfg.queue.client_header.as_bytes())
                    .map_err(|e| ConfigError::Invalid { key: "queue.client_header", problem: e.to_string() })?,
                max_wait: cfg.queue.max_wait,
                upstream_host: base.authority.host().to_owned(),
                priority_header: header_name("queue.priority_header", &cfg.queue.priority_header)?,
                max_wait_header: header_name("queue.max_wait_header", &cfg.queue.max_wait_header)?,
                tokens,
                token_header: http::HeaderName::from_bytes(cfg.auth.header.as_bytes())
                    .map_err(|e| ConfigError::Invalid { key: "auth.header", problem: e.to_string() })?,
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
            max_connections: cfg.server.max_connections,
            idle_timeout: cfg.server.idle_timeout,
        };
        let (stop, stop_rx) = watch::channel(false);
        // The admin listener outlives the drain, so /readyz can say 503 while it lasts.
        let (stop_admin, admin_stop_rx) = watch::channel(false);
        let proxy_task = tokio::spawn(server::serve(
            proxy_listener,
            limits,
            move |peer| {
                let proxy = proxy.clone();
                service_fn(move |req| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, Infallible>(proxy.handle(req, peer).await) }
                })
            },
            stop_rx,
            Some(metrics.clone()),
        ));
        let admin_task = tokio::spawn(server::serve(
            admin_listener,
            limits,
            move |_| {
                let admin = admin.clone();
                service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(&req).await) }
                })
            },
            admin_stop_rx,
            None,
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
            stop_admin,
            proxy_task,
            admin_task,
            watcher,
            grace: cfg.server.shutdown_grace,
        })
    }

    /// Stop accepting, let in-flight and queued requests finish within the grace period, then
    /// answer what is still queued with a `proxy_shutting_down` envelope. `/readyz` answers 503
    /// from the first moment; the admin listener closes once the proxy's connections are done.
    pub async fn shutdown(self) {
        tracing::info!(grace = ?self.grace, queued = self.queue.depth(), "Shutting down: no new connections");
        self.ready.store(false, Ordering::Release);
        let _ = self.stop.send(true);
        if let Some(w) = &self.watcher {
            w.abort();
        }
        if let Ok(proxy) = self.proxy_task.await {
            drain(proxy, &self.queue, self.grace).await;
        }
        self.queue.close();
        let _ = self.stop_admin.send(true);
        drop(self.admin_task.await); // admin connections are not drained
        tracing::info!("Shutdown complete");
    }
}

fn header_name(key: &'static str, name: &str) -> Result<http::HeaderName, ConfigError> {
    http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| ConfigError::Invalid { key, problem: e.to_string() })
}

/// Wait for every proxy connection to finish; past `grace`, refuse what is still queued (each
/// waiter gets its envelope) and give the answers a moment to be written.
async fn drain(proxy: hyper_util::server::graceful::GracefulShutdown, queue: &Queue, grace: Duration) {
    let drain = proxy.shutdown();
    tokio::pin!(drain);
    tokio::select! {
        _ = &mut drain => tracing::info!("Drained every connection"),
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(queued = queue.depth(), "Grace period over: refusing what is still queued");
            queue.close();
            if tokio::time::timeout(Duration::from_secs(5), &mut drain).await.is_err() {
                tracing::warn!("Connections still open 5s after the grace period: closing them");
            }
        }
    }
}

/// The inbound tokens; warns when the proxy listens beyond loopback without them.
fn inbound_tokens(cfg: &Config) -> Result<TokenSet, StartError> {
    let tokens = TokenSet::load(&cfg.auth.tokens, cfg.auth.tokens_file.as_deref())
        .map_err(|problem| ConfigError::Invalid { key: "auth.tokens_file", problem })?;
    if cfg.auth.is_enabled() && !tokens.is_enabled() {
        let problem = "holds no token: inbound authentication would be off".into();
        return Err(ConfigError::Invalid { key: "auth.tokens_file", problem }.into());
    }
    if !tokens.is_enabled() && !cfg.server.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %cfg.server.listen,
            "Listening beyond loopback WITHOUT inbound authentication (server.allow_public_bind): \
             anything that reaches this address can spend the account"
        );
    }
    if !cfg.server.admin_listen.ip().is_loopback() {
        tracing::warn!(
            admin_listen = %cfg.server.admin_listen,
            "Admin listener beyond loopback: /metrics and /readyz are readable by anything that reaches it"
        );
    }
    Ok(tokens)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })
}

/// Check the key file every second and re-read it when it changed; the next request uses a
/// new key.
async fn watch_key_file(keys: KeyStore) {
    // The key was read at start: the first check is one period later, not at once.
    let period = Duration::from_secs(1);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing: Option<String> = None; // warn once per distinct problem, not every second
    loop {
        tick.tick().await;
        match keys.reload_if_changed() {
            Ok(changed) => {
                if changed {
                    tracing::info!("API key file changed: using the new key");
                }
                if failing.take().is_some() {
                    tracing::info!("API key file readable again");
                }
            }
            Err(e) => {
                let problem = e.to_string();
                if failing.as_deref() != Some(problem.as_str()) {
                    tracing::warn!(error = %problem, "Cannot re-read the API key file; keeping the current key");
                    failing = Some(problem);
                }
            }
        }
    }
}
