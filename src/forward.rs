//! Forward: the innermost service. Drops hop-by-hop and inbound credentials, injects
//! `Authorization: Bearer <key>`, sends over the pooled client and feeds every response's
//! budget headers to the Budget.

use std::{
    task::{Context, Poll},
    time::Duration,
};

use http::{header, HeaderMap, HeaderName, Request, Uri};
use http_body_util::Full;
use tokio::time::Instant;
use tower::Service;

use crate::{
    body,
    budget::{parse_ratelimit_headers, Ticket},
    client::HttpClient,
    clock::EpochClock,
    config::UpstreamBase,
    context::{ProxyFuture, ProxyRequest, UpstreamTime},
    error::ProxyError,
    metrics::Metrics,
    pace::queue::Queue,
    secret::KeyStore,
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

    fn outbound(&self, req: ProxyRequest) -> Result<Request<Full<bytes::Bytes>>, ProxyError> {
        let (mut parts, body) = req.into_parts();
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
        let bearer = self
            .key
            .current()
            .bearer()
            .ok_or_else(|| ProxyError::Internal("API key is not a valid header value".into()))?;
        parts.headers.insert(header::AUTHORIZATION, bearer);
        parts.version = http::Version::HTTP_11; // the client picks h2 by ALPN itself
        parts.extensions = http::Extensions::new();
        Ok(Request::from_parts(parts, Full::new(body)))
    }

    async fn send(self, req: ProxyRequest) -> Result<crate::context::ProxyResponse, ProxyError> {
        let ticket = req.extensions().get::<Ticket>().copied();
        let out = self.outbound(req)?;
        let start = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.client.request(out)).await;
        let elapsed = start.elapsed();
        self.metrics.upstream_duration.observe(elapsed.as_secs_f64());
        let resp = match result {
            Err(_) => {
                self.metrics.upstream_attempts.with_label_values(&["timeout"]).inc();
                return Err(ProxyError::UpstreamTimeout { after: self.timeout });
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
        let (mut parts, incoming) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.extensions = http::Extensions::new();
        parts.extensions.insert(UpstreamTime(elapsed));
        Ok(http::Response::from_parts(parts, body::boxed(incoming)))
    }
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
