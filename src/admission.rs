//! Admission: the proxy is not an open proxy. Only origin-form requests (or absolute-form naming
//! the upstream itself) whose normalised path lies under an allowed prefix go on, and their
//! bodies are read (bounded) so they can be replayed. Every request gets a request id and a
//! client identity here: the name of its inbound token when authentication is on, else the
//! client header or the peer address.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, Method, Request, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::{
    context::{ProxyRequest, RequestContext},
    error::ProxyError,
    pace::queue::Priority,
    secret::TokenSet,
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
    /// Time allowed to receive the whole request body.
    pub body_read_timeout: Duration,
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
    /// Inbound tokens (empty: authentication off).
    pub tokens: TokenSet,
    /// Header carrying the inbound token; always removed before forwarding.
    pub token_header: HeaderName,
}

/// Request extension: trailers of a chunked request body, forwarded after the body.
#[derive(Clone, Debug)]
pub struct RequestTrailers(pub HeaderMap);

/// Headers through which a client could steer the upstream's routing, host or method
/// (IIS/Symfony-style overrides): a proxy that checks the path must not forward them.
const ROUTING_OVERRIDES: [&str; 10] = [
    "x-original-url",
    "x-rewrite-url",
    "x-forwarded-host",
    "x-forwarded-server",
    "x-forwarded-prefix",
    "x-forwarded-path",
    "forwarded",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

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
        let named = self.authenticate(&req)?;
        self.check_method(req.method())?;
        check_no_upgrade(&req)?;
        let uri = self.check_target(&req)?;
        let client = named.unwrap_or_else(|| self.client_id(&req, peer));
        let priority = self.priority(&req)?;
        let max_wait = self.max_wait(&req)?;
        let (mut parts, body) = req.into_parts();
        parts.headers.remove(&self.settings.token_header);
        for name in ROUTING_OVERRIDES {
            parts.headers.remove(name);
        }
        let read = read_body(body, self.settings.max_body);
        let (bytes, trailers) = tokio::time::timeout(self.settings.body_read_timeout, read)
            .await
            .map_err(|_| ProxyError::RequestTimeout { after: self.settings.body_read_timeout })??;
        parts.uri = uri;
        parts.extensions = http::Extensions::new();
        parts.extensions.insert(RequestContext { id, client, deadline: received + max_wait });
        parts.extensions.insert(priority);
        if let Some(t) = trailers {
            parts.extensions.insert(RequestTrailers(t));
        }
        Ok(Request::from_parts(parts, bytes))
    }

    /// With tokens configured: the name of the presented token, or 401.
    fn authenticate(&self, req: &Request<Incoming>) -> Result<Option<Arc<str>>, ProxyError> {
        let tokens = &self.settings.tokens;
        if !tokens.is_enabled() {
            return Ok(None);
        }
        let header = &self.settings.token_header;
        let mut values = req.headers().get_all(header).iter();
        let (Some(v), None) = (values.next(), values.next()) else {
            return Err(ProxyError::Unauthenticated(header.to_string()));
        };
        let name = tokens.verify(v.as_bytes()).ok_or_else(|| ProxyError::Unauthenticated(header.to_string()))?;
        tracing::debug!(client = %name, "Inbound token accepted");
        Ok(Some(name))
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

/// HTTP/1 upgrades (websocket, h2c, anything) would turn the proxy into a tunnel: refused, as
/// is an `HTTP2-Settings` header or `Connection: upgrade` without a protocol.
fn check_no_upgrade<B>(req: &Request<B>) -> Result<(), ProxyError> {
    if req.version() >= http::Version::HTTP_2 {
        return Ok(()); // h2 has no Upgrade; extended CONNECT is refused with CONNECT
    }
    let h = req.headers();
    let conn_upgrade = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if h.contains_key(header::UPGRADE) || h.contains_key("http2-settings") || conn_upgrade {
        return Err(ProxyError::BadRequest("protocol upgrades are not forwarded".into()));
    }
    Ok(())
}

/// Read the body (bounded) and keep its trailers. A declared length over the limit is refused
/// before anything is read, so `Expect: 100-continue` clients get 413 without sending.
async fn read_body(mut body: Incoming, limit: usize) -> Result<(Bytes, Option<HeaderMap>), ProxyError> {
    use http_body::Body as _;
    if body.size_hint().lower() > limit as u64 {
        return Err(ProxyError::PayloadTooLarge { limit });
    }
    let mut buf = BytesMut::new();
    let mut trailers: Option<HeaderMap> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ProxyError::BadRequest(format!("could not read the request body: {e}")))?;
        match frame.into_data() {
            Ok(data) => {
                if buf.len() + data.len() > limit {
                    return Err(ProxyError::PayloadTooLarge { limit });
                }
                buf.extend_from_slice(&data);
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers.get_or_insert_with(HeaderMap::new).extend(t);
                }
            }
        }
    }
    Ok((buf.freeze(), trailers))
}
