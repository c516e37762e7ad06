//! A tiny scripted upstream on 127.0.0.1:0 that records what arrives (trailers included) and
//! answers by path: repeated and connection-scoped response headers, a HEAD with a length, and
//! a large body produced lazily so a test can see how far ahead of the client it runs.

#![allow(dead_code)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use parking_lot::Mutex;

/// Size of `/v1/big`.
pub const BIG: u64 = 256 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

#[derive(Clone, Default)]
pub struct Echo {
    pub addr: Option<SocketAddr>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Bytes of `/v1/big` produced so far.
    pub produced: Arc<AtomicU64>,
}

impl Echo {
    pub async fn start() -> Echo {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let mut echo = Echo { addr: Some(listener.local_addr().unwrap()), ..Echo::default() };
        let state = echo.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| state.clone().handle(req));
                    let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        echo.addr = echo.addr.take();
        echo
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr.unwrap())
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }

    async fn handle(self, req: Request<Incoming>) -> Result<Response<UnsyncBoxBody<Bytes, Infallible>>, Infallible> {
        let (parts, body) = req.into_parts();
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        let path = parts.uri.path().to_owned();
        self.seen.lock().push(Seen {
            method: parts.method.clone(),
            path: path.clone(),
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        });
        let full = |b: &'static str| Full::new(Bytes::from_static(b.as_bytes())).boxed_unsync();
        let resp = match path.as_str() {
            "/v1/headers" => Response::builder()
                .header("set-cookie", "a=1; Path=/")
                .header("set-cookie", "b=2; Path=/")
                .header("link", "</v1/a>; rel=next")
                .header("link", "</v1/b>; rel=last")
                .header("connection", "x-hop-secret")
                .header("x-hop-secret", "upstream-internal")
                .header("keep-alive", "timeout=5")
                .header("x-kept", "yes")
                .body(full("{}")),
            "/v1/head" => Response::builder().header("content-length", "1234").body(full("")),
            "/v1/big" => Response::builder().body(self.big_body()),
            _ => Response::builder().body(full("{}")),
        };
        Ok(resp.unwrap())
    }

    fn big_body(&self) -> UnsyncBoxBody<Bytes, Infallible> {
        let produced = self.produced.clone();
        let chunk = Bytes::from(vec![b'x'; CHUNK]);
        let stream = futures_util::stream::unfold(0u64, move |sent| {
            let (produced, chunk) = (produced.clone(), chunk.clone());
            async move {
                if sent >= BIG {
                    return None;
                }
                produced.fetch_add(CHUNK as u64, Ordering::Relaxed);
                Some((Ok::<_, Infallible>(Frame::data(chunk)), sent + CHUNK as u64))
            }
        });
        StreamBody::new(stream).boxed_unsync()
    }
}
