//! Admission: the proxy is not an open proxy. Only origin-form requests (or absolute-form naming
//! the upstream itself) whose normalised path lies under an allowed prefix go on, and their
//! bodies are read (bounded) so they can be replayed. Every request gets a request id and a
//! client identity here.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use http::{header, HeaderName, Method, Request, Uri};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::{
    body::{collect_bounded, Collected},
    context::{ProxyRequest, RequestContext},
    error::ProxyError,
    pace::queue::Priority,
};

/// `X-Max-Wait`: a duration with a unit (`5s`, `1500ms`, `1m`), or bare whole seconds.
pub fn parse_max_wait(value: &str) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() || v.len() > 32 {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse().ok().map(Duration::from_secs);
    }
    humantime::parse_duration(v).ok()
}

pub mod path;

/// What admission enforces.
#[derive(Clone, Debug)]
pub struct AdmissionSettings {
    /// Normalised paths must start with one of these.
    pub allowed_prefixes: Vec<String>,
    /// Largest request body.
    pub max_body: usize,
    /// Header naming the calling service.
    pub client_header: HeaderName,
    /// Wait allowed for a permit.
    pub max_wait: Duration,
    /// The upstream's host, accepted in absolute-form targets.
    pub upstream_host: String,
    /// Header carrying a request's priority class (`high` or `low`).
    pub priority_header: HeaderName,
    /// Header carrying the longest a caller will wait (`5s`, `500ms`), capped by `max_wait`.
    pub max_wait_header: HeaderName,
}

/// Checks and buffers requests.
#[derive(Clone, Debug)]
pub struct Admission {
    settings: Arc<AdmissionSettings>,
}

impl Admission {
    /// Enforce `settings`.
    pub fn new(settings: AdmissionSettings) -> Self {
        Self { settings: Arc::new(settings) }
    }

    /// Check `req` and read its body. `id` is the request id already chosen for logs.
    pub async fn admit(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        id: Arc<str>,
    ) -> Result<ProxyRequest, ProxyError> {
        let received = Instant::now();
        self.check_method(req.method())?;
        if req.headers().contains_key(header::UPGRADE) && req.version() < http::Version::HTTP_2 {
            return Err(ProxyError::BadRequest("protocol upgrades are not forwarded".into()));
        }
        let uri = self.check_target(&req)?;
        let client = self.client_id(&req, peer);
        let priority = self.priority(&req)?;
        let max_wait = self.max_wait(&req)?;
        let (mut parts, body) = req.into_parts();
        let limit = self.settings.max_body;
        let bytes = match collect_bounded(body, limit).await {
            Ok(Collected::Complete(b)) => b,
            Ok(Collected::TooLarge { .. }) => return Err(ProxyError::PayloadTooLarge { limit }),
            Err(e) => return Err(ProxyError::BadRequest(format!("could not read the request body: {e}"))),
        };
        parts.uri = uri;
        parts.extensions = http::Extensions::new();
        parts.extensions.insert(RequestContext { id, client, deadline: received + max_wait });
        parts.extensions.insert(priority);
        Ok(Request::from_parts(parts, bytes))
    }

    fn check_method(&self, m: &Method) -> Result<(), ProxyError> {
        if *m == Method::CONNECT || *m == Method::TRACE {
            return Err(ProxyError::MethodNotAllowed(m.to_string()));
        }
        Ok(())
    }

    /// The origin-form target to forward, normalised.
    fn check_target(&self, req: &Request<Incoming>) -> Result<Uri, ProxyError> {
        let uri = req.uri();
        // HTTP/2 always carries :authority; in HTTP/1 an authority means absolute-form.
        if req.version() < http::Version::HTTP_2 {
            if let Some(host) = uri.host() {
                if !host.eq_ignore_ascii_case(&self.settings.upstream_host) {
                    return Err(ProxyError::Forbidden(format!(
                        "absolute-form target for host {host:?}: this proxy only forwards to its upstream"
                    )));
                }
            }
        }
        let raw = uri.path();
        if raw == "*" || !raw.starts_with('/') {
            return Err(ProxyError::BadRequest("request target must be a path".into()));
        }
        let normal = path::normalize(raw).map_err(ProxyError::BadRequest)?;
        if !self.settings.allowed_prefixes.iter().any(|p| normal.starts_with(p.as_str())) {
            return Err(ProxyError::Forbidden(format!(
                "path {normal:?} is outside the forwarded prefixes ({})",
                self.settings.allowed_prefixes.join(", ")
            )));
        }
        let pq = match uri.query() {
            Some(q) => format!("{normal}?{q}"),
            None => normal,
        };
        Uri::builder()
            .path_and_query(pq)
            .build()
            .map_err(|e| ProxyError::BadRequest(format!("bad request target: {e}")))
    }

    /// The caller's priority class: `high` or `low` (the default when the header is absent).
    fn priority(&self, req: &Request<Incoming>) -> Result<Priority, ProxyError> {
        let name = &self.settings.priority_header;
        let Some(value) = req.headers().get(name) else { return Ok(Priority::Low) };
        match value.to_str().map(|v| v.trim().to_ascii_lowercase()) {
            Ok(v) if v == "high" => Ok(Priority::High),
            Ok(v) if v == "low" => Ok(Priority::Low),
            _ => Err(ProxyError::BadRequest(format!("header {name}: expected \"high\" or \"low\""))),
        }
    }

    /// The caller's longest wait for a permit, capped by `queue.max_wait`.
    fn max_wait(&self, req: &Request<Incoming>) -> Result<Duration, ProxyError> {
        let name = &self.settings.max_wait_header;
        let cap = self.settings.max_wait;
        let Some(value) = req.headers().get(name) else { return Ok(cap) };
        parse_max_wait(value.to_str().unwrap_or("")).map(|d| d.min(cap)).ok_or_else(|| {
            ProxyError::BadRequest(format!("header {name}: expected a duration with a unit such as 5s or 500ms"))
        })
    }

    fn client_id(&self, req: &Request<Incoming>, peer: SocketAddr) -> Arc<str> {
        let named = req
            .headers()
            .get(&self.settings.client_header)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 128);
        match named {
            Some(name) => Arc::from(name),
            None => Arc::from(peer.ip().to_string()),
        }
    }
}
