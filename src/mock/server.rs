//! The mock's listener and lifecycle: bind, accept (optionally TLS), serve each connection
//! with hyper's auto (HTTP/1.1 + h2) builder, and stop on shutdown or drop.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
};
use parking_lot::Mutex;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::{JoinHandle, JoinSet},
};
use tokio_rustls::TlsAcceptor;

use super::{
    fault::{FaultKind, FaultPlan},
    handler::{handle, Log, Shared},
    limiter::{Limiter, MockClock},
    store::Store,
    ForcedHeaders, MockConfig, MockStats, RecordedRequest,
};
use crate::clock::EpochClock;

/// How long in-flight requests may finish after shutdown before connections are dropped.
const GRACE: Duration = Duration::from_secs(1);

/// A running mock. Dropping it (or [`MockServer::shutdown`]) stops the server.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    https: bool,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Bind `cfg.listen`, spawn the accept loop on the current runtime, and return.
    pub async fn start(cfg: MockConfig) -> std::io::Result<MockServer> {
        let listener = TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let clock = MockClock::new(EpochClock::system().shifted(cfg.clock_skew_ms));
        let limiter = Limiter::new(cfg.window_kind, cfg.limit, cfg.window, cfg.external_rate, clock);
        let shared = Arc::new(Shared {
            key: cfg.key,
            latency: cfg.latency,
            cache_headers: cfg.cache_headers,
            clock,
            limiter: Mutex::new(limiter),
            store: Mutex::new(Store::seeded()),
            log: Mutex::new(Log::default()),
            faults: Mutex::new(FaultPlan::new(cfg.faults)),
        });
        let https = cfg.tls.is_some();
        let acceptor = cfg.tls.map(TlsAcceptor::from);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, acceptor, shared.clone(), stopped));
        Ok(MockServer { addr, https, shared, stop, task: Some(task) })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn base_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MockStats {
        self.shared.log.lock().stats.clone()
    }

    /// Every request received so far (the stats endpoint excluded), in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        let mut requests = self.shared.log.lock().requests.clone();
        requests.sort_by_key(|r| r.at); // stable: ties keep the order they were logged in
        requests
    }

    /// Answer the next `count` requests with 429 whatever the budget, carrying `headers`;
    /// the reset is `reset_in` after each such request arrives. Forced 429s spend no budget.
    pub fn force_429(&self, count: u32, reset_in: Duration, headers: ForcedHeaders) {
        self.shared.limiter.lock().force(count, reset_in, headers);
    }

    /// Make the next `count` requests fault as `kind` (5xx, reset or slow), whatever the budget.
    pub fn force_fault(&self, count: u32, kind: FaultKind) {
        self.shared.faults.lock().force(count, kind);
    }

    /// Stop accepting, let in-flight requests finish (briefly), and wait for the loop to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Start a mock and serve until ctrl-c or SIGTERM (the `mock` subcommand).
pub async fn run(cfg: MockConfig) -> std::io::Result<()> {
    let (limit, window, kind) = (cfg.limit, cfg.window, cfg.window_kind);
    let server = MockServer::start(cfg).await?;
    tracing::info!(url = %server.base_url(), limit, window = ?window, ?kind, "Mock RackNap API listening");
    wait_for_signal().await;
    tracing::info!("Received shutdown signal");
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let stream = tokio::select! {
            () = stop_requested(&mut stopped) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::debug!(%error, "Mock accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let watcher = graceful.watcher();
        conns.spawn(connection(stream, acceptor.clone(), shared.clone(), watcher));
    }
    drop(listener);
    let _ = tokio::time::timeout(GRACE, graceful.shutdown()).await;
    conns.abort_all();
}

/// Resolves once shutdown is asked for (or the handle is gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await.map(|_| ());
}

async fn connection(
    stream: TcpStream,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let _ = stream.set_nodelay(true);
    match acceptor {
        None => serve(stream, shared, watcher).await,
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(tls) => serve(tls, shared, watcher).await,
            Err(error) => tracing::debug!(%error, "Mock TLS handshake failed"),
        },
    }
}

async fn serve<I>(io: I, shared: Arc<Shared>, watcher: hyper_util::server::graceful::Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| handle(shared.clone(), req));
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), service);
    if let Err(error) = watcher.watch(conn).await {
        tracing::debug!(%error, "Mock connection ended with an error");
    }
}
