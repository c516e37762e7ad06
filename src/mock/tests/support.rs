//! Shared test helpers: a key, a started mock, and a tiny HTTP client returning JSON.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use serde_json::Value;

use crate::{
    clock::EpochClock,
    mock::{MockConfig, MockServer},
    secret::Secret,
};

/// The key every test mock uses.
pub const KEY: &str = "sk_test_mock_key";

/// A config with the test key.
pub fn config() -> MockConfig {
    MockConfig::new(Secret::new(KEY).expect("non-empty key"))
}

/// Start a mock with `cfg`.
pub async fn start(cfg: MockConfig) -> MockServer {
    MockServer::start(cfg).await.expect("mock binds 127.0.0.1:0")
}

/// A skew that puts the mock's clock in the middle of a fixed `window` right now, so a
/// short real-time test never straddles a window boundary.
pub fn mid_window_skew(window: Duration) -> i64 {
    let window_ms = window.as_millis() as i64;
    let now_ms = EpochClock::system().since_epoch().as_millis() as i64;
    window_ms / 2 - now_ms.rem_euclid(window_ms)
}

/// One answer: status, headers and the body parsed as JSON (`Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub json: Value,
}

impl Answer {
    /// A header as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A header parsed as a number.
    pub fn number(&self, name: &str) -> u64 {
        self.header(name).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("numeric {name} header"))
    }

    /// `Date` as epoch seconds.
    pub fn date(&self) -> u64 {
        let date = self.header("date").expect("Date header");
        let t = httpdate::parse_http_date(date).expect("HTTP-date");
        t.duration_since(std::time::UNIX_EPOCH).expect("after epoch").as_secs()
    }

    /// The error envelope's `type`.
    pub fn error_type(&self) -> &str {
        assert_eq!(self.json["success"], false, "an error envelope: {}", self.json);
        self.json["error"]["type"].as_str().expect("error.type")
    }
}

/// A pooled HTTP/1.1 client for one mock.
pub struct TestClient {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl TestClient {
    /// A client for `server`.
    pub fn new(server: &MockServer) -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self { base: server.base_url(), client }
    }

    /// `method path` with the right key.
    pub async fn call(&self, method: Method, path: &str, body: Option<&str>) -> Answer {
        self.send(method, path, Some(KEY), body).await
    }

    /// `GET path` with the right key.
    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }

    /// Send with an optional bearer key and JSON body.
    pub async fn send(&self, method: Method, path: &str, key: Option<&str>, body: Option<&str>) -> Answer {
        let mut req = Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(key) = key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let body = Full::new(Bytes::from(body.unwrap_or_default().to_string()));
        self.request(req.body(body).expect("valid request")).await
    }

    /// Send a prepared request.
    pub async fn request(&self, req: Request<Full<Bytes>>) -> Answer {
        let res = self.client.request(req).await.expect("mock answers");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        let json = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).expect("JSON body") };
        Answer { status: parts.status, headers: parts.headers, body, json }
    }
}
