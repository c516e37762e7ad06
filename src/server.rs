//! The accept loop shared by the proxy and admin listeners: HTTP/1.1 and h2c on one port
//! (`auto::Builder`), each connection watched for graceful shutdown, accept errors backed off.
//! At most `max_connections` are open at once: the loop stops accepting at the limit, so further
//! clients wait in the kernel's listen backlog (and time out there) rather than being reset.
//! A connection with nothing in flight and no bytes moving for `idle_timeout` is closed.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    net::TcpListener,
    sync::{watch, Semaphore},
};

use crate::{body::Body, metrics::Metrics};

pub mod idle;

/// Connection-level limits.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Time a client has to send its request head.
    pub header_read_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Close a connection idle this long.
    pub idle_timeout: Duration,
}

/// A hyper connection builder with `limits` applied.
pub fn builder(limits: ConnLimits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    b.http2().timer(TokioTimer::new()).max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    b
}

/// Accept on `listener` until `stop` turns true; return the watcher of the open connections.
pub async fn serve<F, S>(
    listener: TcpListener,
    limits: ConnLimits,
    make_service: F,
    mut stop: watch::Receiver<bool>,
    metrics: Option<Metrics>,
) -> GracefulShutdown
where
    F: Fn(SocketAddr) -> S,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let builder = builder(limits);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let activity = idle::Activity::new();
                    let io = TokioIo::new(idle::Watched::new(stream, activity.clone()));
                    let conn = builder.serve_connection(io, track(make_service(peer), activity.clone())).into_owned();
                    let conn = graceful.watch(conn);
                    let (idle_timeout, head_timeout) = (limits.idle_timeout, limits.header_read_timeout);
                    let metrics = metrics.clone();
                    if let Some(m) = &metrics {
                        m.connections_open.inc();
                    }
                    tokio::spawn(async move {
                        let closed = tokio::select! {
                            r = conn => r.err().map(|e| {
                                tracing::debug!(error = %e, %peer, "Connection ended with an error");
                                close_reason(&*e)
                            }),
                            _ = activity.silent_for(head_timeout) => {
                                tracing::debug!(%peer, "Closed a connection that sent nothing");
                                Some("header_timeout")
                            }
                            _ = activity.idle(idle_timeout) => {
                                tracing::debug!(%peer, "Closed an idle connection");
                                Some("idle")
                            }
                        };
                        drop(permit);
                        if let Some(m) = metrics {
                            m.connections_open.dec();
                            if let Some(reason) = closed {
                                m.connections_closed.with_label_values(&[reason]).inc();
                            }
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "Accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        }
    }
    graceful
}

/// `svc` with every request counted in flight on its connection's `activity`.
fn track<S>(
    svc: S,
    activity: Arc<idle::Activity>,
) -> impl hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible, Future: Send>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    hyper::service::service_fn(move |req| {
        let guard = activity.begin();
        let fut = svc.call(req);
        async move {
            let r = fut.await;
            drop(guard);
            r
        }
    })
}

/// The metric label for a connection error: hyper's own refusals by kind.
fn close_reason(e: &(dyn std::error::Error + Send + Sync + 'static)) -> &'static str {
    match e.downcast_ref::<hyper::Error>() {
        Some(h) if h.is_parse_too_large() => "head_too_large",
        Some(h) if h.is_parse() => "malformed",
        Some(h) if h.is_timeout() => "header_timeout",
        _ => "error",
    }
}
