//! The pooled upstream client: hyper-util's legacy client over rustls (HTTP/2 by ALPN), and
//! the outbound body: the buffered request body, then its trailers if it had any.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};
use rustls::{pki_types::pem::PemObject, pki_types::CertificateDer, RootCertStore};

use crate::config::{ConfigError, UpstreamConfig};

/// The client type used for every upstream call.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, OutBody>;

/// A buffered request body and optional trailers. Without trailers its length is exact (sent
/// with `Content-Length`); with them it is sent chunked, trailers last.
#[derive(Debug, Default)]
pub struct OutBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl OutBody {
    /// `data`, then `trailers`.
    pub fn new(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self { data: (!data.is_empty()).then_some(data), trailers: trailers.filter(|t| !t.is_empty()) }
    }
}

impl http_body::Body for OutBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let len = self.data.as_ref().map_or(0, |d| d.len() as u64);
        match self.trailers {
            None => SizeHint::with_exact(len),
            Some(_) => {
                let mut h = SizeHint::new();
                h.set_lower(len);
                h
            }
        }
    }
}

/// Build the client: public roots plus `upstream.ca_file`, connect timeout, pooled.
pub fn build(cfg: &UpstreamConfig) -> Result<HttpClient, ConfigError> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = &cfg.ca_file {
        let invalid = |problem: String| ConfigError::Invalid { key: "upstream.ca_file", problem };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("{}: bad PEM: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(invalid(format!("{} holds no certificate", path.display())));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Invalid { key: "upstream", problem: e.to_string() })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(cfg.connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https))
}
