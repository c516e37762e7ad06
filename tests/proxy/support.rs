//! Test harness: the bundled mock as upstream and the proxy, both on 127.0.0.1:0 inside the
//! test's runtime, and a small client.

#![allow(dead_code)]

use std::{net::SocketAddr, num::NonZeroU32, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client as HyperClient},
    rt::TokioExecutor,
};
use racknap_proxy::{
    mock::{MockConfig, MockServer},
    secret::{KeySource, Secret},
    App, Config,
};

/// The key the mock accepts and the proxy injects.
pub const KEY: &str = "sk_test_4f9c2a7e1b3d5f60a8c4e2d1b7f3a9c5";

pub fn key() -> Secret {
    Secret::new(KEY).unwrap()
}

/// A mock upstream with `limit` per `window`.
pub async fn upstream(limit: u32, window: Duration) -> MockServer {
    upstream_with(limit, window, |_| {}).await
}

pub async fn upstream_with(limit: u32, window: Duration, tweak: impl FnOnce(&mut MockConfig)) -> MockServer {
    let mut cfg = MockConfig::new(key());
    cfg.limit = limit;
    cfg.window = window;
    tweak(&mut cfg);
    MockServer::start(cfg).await.expect("mock starts")
}

/// A config pointing at `upstream` with the same limit and window, listeners on port 0.
pub fn config(upstream: &MockServer, limit: u32, window: Duration) -> Config {
    let mut cfg = Config::default();
    cfg.server.listen = ([127, 0, 0, 1], 0).into();
    cfg.server.admin_listen = ([127, 0, 0, 1], 0).into();
    cfg.upstream.url = upstream.base_url();
    cfg.budget.limit = NonZeroU32::new(limit).unwrap();
    cfg.budget.window = window;
    cfg
}

pub async fn proxy(cfg: &Config) -> App {
    cfg.validate().expect("valid test config");
    App::start(cfg, KeySource::Env(key())).await.expect("proxy starts")
}

/// A mock with `limit` per `window` and a proxy in front of it with the cache off (so every
/// request is an upstream call), after `tweak` adjusts the proxy's config.
pub async fn uncached(limit: u32, window: Duration, tweak: impl FnOnce(&mut Config)) -> (MockServer, App) {
    let up = upstream(limit, window).await;
    let mut cfg = config(&up, limit, window);
    cfg.cache.enabled = false;
    tweak(&mut cfg);
    let app = proxy(&cfg).await;
    (up, app)
}

/// A downstream answer, fully read.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A plain HTTP/1.1 client for one address.
#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    inner: HyperClient<HttpConnector, Full<Bytes>>,
}

pub fn client(addr: SocketAddr) -> Client {
    Client { addr, inner: HyperClient::builder(TokioExecutor::new()).build_http() }
}

impl Client {
    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, &[], Bytes::new()).await
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> Answer {
        let bytes = Bytes::from(serde_json::to_vec(body).unwrap());
        self.send(Method::POST, path, &[("content-type", "application/json")], bytes).await
    }

    pub async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Bytes) -> Answer {
        let mut req = Request::builder().method(method).uri(format!("http://{}{path}", self.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.request(req.body(Full::new(body)).unwrap()).await
    }

    pub async fn request(&self, req: Request<Full<Bytes>>) -> Answer {
        let resp = tokio::time::timeout(Duration::from_secs(60), self.inner.request(req))
            .await
            .expect("answer within 60s")
            .expect("request succeeds at the transport level");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body reads").to_bytes();
        Answer { status: parts.status, headers: parts.headers, body }
    }
}

/// Scrape /metrics and return the value of the first sample whose line starts with `prefix`.
pub async fn metric(app: &App, prefix: &str) -> f64 {
    let text = client(app.admin_addr).get("/metrics").await.text();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Assert an error envelope of `type`.
pub fn assert_envelope(a: &Answer, status: u16, error_type: &str) {
    assert_eq!(a.status.as_u16(), status, "{}", a.text());
    let v = a.json();
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(v["code"], status, "{v}");
    assert_eq!(v["error"]["type"], error_type, "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(v["meta"]["requestId"].as_str().is_some_and(|m| m.starts_with("req_")), "{v}");
    assert!(v["meta"]["timestamp"].as_str().is_some_and(|m| m.ends_with('Z')), "{v}");
}
