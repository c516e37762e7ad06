//! Forward: the innermost service. Drops hop-by-hop and inbound credentials, injects
//! `Authorization: Bearer <key>`, sends over the pooled client and feeds every response's
//! budget headers to the Budget. A 401 from the upstream re-reads the key file once, and if the
//! key changed since this attempt was sent, replays the request once with the new key.

use std::{
    task::{Context, Poll},
    time::Duration,
};

use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use tokio::time::Instant;
use tower::Service;

use crate::{
    admission::RequestTrailers,
    body,
    budget::{parse_ratelimit_headers, Ticket},
    client::{HttpClient, OutBody},
    clock::EpochClock,
    config::UpstreamBase,
    context::{ProxyFuture, ProxyRequest, UpstreamTime},
    error::ProxyError,
    metrics::Metrics,
    pace::queue::Queue,
    secret::{KeyStore, Secret},
};

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Remove hop-by-hop headers, those named by `Connection`, and `Upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        if name != header::AUTHORIZATION {
            headers.remove(name);
        }
    }
    headers.remove(header::UPGRADE);
}

/// Sends one attempt upstream.
#[derive(Clone)]
pub struct Forward {
    client: HttpClient,
    base: UpstreamBase,
    key: KeyStore,
    queue: Queue,
    metrics: Metrics,
    clock: EpochClock,
    timeout: Duration,
}

impl Forward {
    /// A forwarder to `base`, observing into the queue's Budget.
    pub fn new(
        client: HttpClient,
        base: UpstreamBase,
        key: KeyStore,
        queue: Queue,
        metrics: Metrics,
        clock: EpochClock,
        timeout: Duration,
    ) -> Self {
        Self { client, base, key, queue, metrics, clock, timeout }
    }

    /// The upstream request and the key it carries.
    fn outbound(&self, req: ProxyRequest) -> Result<(Request<OutBody>, Secret), ProxyError> {
        let (mut parts, body) = req.into_parts();
        let trailers = parts.extensions.remove::<RequestTrailers>().map(|t| t.0);
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = Uri::builder()
            .scheme(self.base.scheme.clone())
            .authority(self.base.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| ProxyError::BadRequest(format!("cannot build the upstream target: {e}")))?;
        strip_hop_by_hop(&mut parts.headers);
        for name in [header::HOST, header::AUTHORIZATION, header::EXPECT, header::CONTENT_LENGTH] {
            parts.headers.remove(name);
        }
        if let Some(t) = &trailers {
            declare_trailers(&mut parts.headers, t);
        }
        let key = self.key.current();
        let bearer = key.bearer().ok_or_else(|| ProxyError::Internal("API key is not a valid header value".into()))?;
        parts.headers.insert(header::AUTHORIZATION, bearer); // after the strip: Connection cannot name it away
        parts.version = http::Version::HTTP_11; // the client picks h2 by ALPN itself
        parts.extensions = http::Extensions::new();
        Ok((Request::from_parts(parts, OutBody::new(body, trailers)), key))
    }

    async fn send(self, req: ProxyRequest) -> Result<crate::context::ProxyResponse, ProxyError> {
        let ticket = req.extensions().get::<Ticket>().copied();
        let replay = self.key.is_file().then(|| crate::context::duplicate(&req));
        let (mut resp, mut elapsed, used) = self.attempt(req, ticket).await?;
        if resp.status() == http::StatusCode::UNAUTHORIZED {
            if let Some(again) = replay.filter(|_| self.key_rotated(&used)) {
                self.metrics.retries.with_label_values(&["401_key_rotated"]).inc();
                tracing::info!("Upstream answered 401 and the key file holds a new key: replaying once with it");
                drop(resp);
                // The replay is another upstream request: it pays its own permit.
                let ctx = crate::context::context_of(&again)?;
                let priority = again.extensions().get::<crate::pace::queue::Priority>().copied().unwrap_or_default();
                let permit = self.queue.acquire_with(ctx.client, priority, ctx.deadline).await?;
                (resp, elapsed, _) = self.attempt(again, Some(permit.ticket())).await?;
            }
            if resp.status() == http::StatusCode::UNAUTHORIZED {
                tracing::warn!(
                    key_source = if self.key.is_file() { "key file" } else { "RACKNAP_API_KEY" },
                    "Upstream refused the API key (401); passing the 401 on. Is the key current?"
                );
            }
        }
        let (mut parts, incoming) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.extensions = http::Extensions::new();
        parts.extensions.insert(UpstreamTime(elapsed));
        Ok(http::Response::from_parts(parts, body::boxed(incoming)))
    }

    /// Re-read the key file; whether the key in force now differs from `used`.
    fn key_rotated(&self, used: &Secret) -> bool {
        if let Err(e) = self.key.reload() {
            tracing::warn!(error = %e, "Upstream answered 401 and the key file cannot be re-read");
        }
        self.key.current() != *used
    }

    /// One upstream exchange: send, time, count, observe the budget headers.
    async fn attempt(
        &self,
        req: ProxyRequest,
        ticket: Option<Ticket>,
    ) -> Result<(Response<Incoming>, std::time::Duration, Secret), ProxyError> {
        let (out, used) = self.outbound(req)?;
        let start = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.client.request(out)).await;
        let elapsed = start.elapsed();
        self.metrics.upstream_duration.observe(elapsed.as_secs_f64());
        let resp = match result {
            Err(_) => {
                self.metrics.upstream_attempts.with_label_values(&["timeout"]).inc();
                return Err(ProxyError::UpstreamTimeout { after: self.timeout });
            }
            Ok(Err(e)) if is_timeout(&e) => {
                self.metrics.upstream_attempts.with_label_values(&["timeout"]).inc();
                return Err(ProxyError::UpstreamTimeout { after: elapsed });
            }
            Ok(Err(e)) => {
                self.metrics.upstream_attempts.with_label_values(&["error"]).inc();
                // is_connect: the connector failed, so no byte of the request left (retry relies on it).
                let cause = error_chain(&e);
                return Err(if e.is_connect() {
                    ProxyError::UpstreamConnect(cause)
                } else {
                    ProxyError::UpstreamUnavailable(cause)
                });
            }
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status().as_u16();
        self.metrics.upstream_attempts.with_label_values(&[resp.status().as_str()]).inc();
        if status == 429 {
            self.metrics.upstream_429.inc();
        }
        let obs = parse_ratelimit_headers(status, resp.headers(), self.clock.now());
        self.queue.budget().observe(ticket, &obs, Instant::now());
        self.queue.budget_changed();
        Ok((resp, elapsed, used))
    }
}

/// `Trailer: <names>` for the trailers actually present (hyper's HTTP/1 encoder sends only
/// declared trailer fields).
fn declare_trailers(headers: &mut HeaderMap, trailers: &HeaderMap) {
    let names: Vec<&str> = trailers.keys().map(HeaderName::as_str).collect();
    if let Ok(v) = HeaderValue::from_str(&names.join(", ")) {
        headers.insert(header::TRAILER, v);
    }
}

/// A connect timeout (ours or the OS's) is a timeout, not an unreachable upstream.
fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut src = Some(e);
    while let Some(s) = src {
        if s.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        src = s.source();
    }
    false
}

/// An error and its sources on one line (hyper's own message is often just "client error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

impl Service<ProxyRequest> for Forward {
    type Response = crate::context::ProxyResponse;
    type Error = ProxyError;
    type Future = ProxyFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ProxyRequest) -> ProxyFuture {
        Box::pin(self.clone().send(req))
    }
}
