//! The rustls path is real: the mock serves HTTPS with a generated certificate and the proxy
//! trusts it through `upstream.ca_file`.

use std::{sync::Arc, time::Duration};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::support::{self, client, KEY};

fn tls_pair(dir: &std::path::Path) -> (Arc<rustls::ServerConfig>, std::path::PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, cert.cert.pem()).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(cert.cert.der().to_vec())], key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (Arc::new(cfg), ca_path)
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("racknap-proxy-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn https_upstream_with_a_generated_certificate() {
    let dir = temp_dir("tls");
    let (server_tls, ca) = tls_pair(&dir);
    let up = support::upstream_with(100, Duration::from_secs(60), |m| m.tls = Some(server_tls)).await;
    assert!(up.base_url().starts_with("https://"));
    let mut cfg = support::config(&up, 100, Duration::from_secs(60));
    cfg.upstream.ca_file = Some(ca);
    let app = support::proxy(&cfg).await;
    let a = client(app.proxy_addr).get("/v1/customers?limit=1").await;
    assert_eq!(a.status, 200, "{}", a.text());
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers.get("authorization").unwrap(), format!("Bearer {KEY}").as_str());
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_502_not_a_silent_downgrade() {
    let dir = temp_dir("untrusted");
    let (server_tls, _ca) = tls_pair(&dir);
    let up = support::upstream_with(100, Duration::from_secs(60), |m| m.tls = Some(server_tls)).await;
    let app = support::proxy(&support::config(&up, 100, Duration::from_secs(60))).await;
    let a = client(app.proxy_addr).get("/v1/customers").await;
    support::assert_envelope(&a, 502, "proxy_upstream_unavailable");
    assert!(up.requests().is_empty());
}
