//! Key injection, faithful forwarding, envelopes for what the proxy refuses.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::json;

use crate::support::{self, assert_envelope, client, KEY};

#[tokio::test]
async fn injected_key_reaches_upstream_and_the_clients_own_does_not() {
    let up = support::upstream(100, Duration::from_secs(60)).await;
    let app = support::proxy(&support::config(&up, 100, Duration::from_secs(60))).await;
    let c = client(app.proxy_addr);
    let a = c
        .send(Method::GET, "/v1/customers?limit=2", &[("authorization", "Bearer client-token-xyz")], Bytes::new())
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["success"], true);
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    let auth: Vec<_> = seen[0].headers.get_all("authorization").iter().collect();
    assert_eq!(auth.len(), 1, "exactly one Authorization upstream");
    assert_eq!(auth[0], format!("Bearer {KEY}").as_str());
    assert!(seen[0].headers.get("host").is_some_and(|h| h.to_str().unwrap() == up.addr().to_string()));
}

#[tokio::test]
async fn post_body_method_and_query_arrive_intact() {
    let up = support::upstream(100, Duration::from_secs(60)).await;
    let app = support::proxy(&support::config(&up, 100, Duration::from_secs(60))).await;
    let c = client(app.proxy_addr);
    let customer = c.get("/v1/customers?limit=1").await.json()["data"][0]["id"].as_str().unwrap().to_owned();
    let invoice = json!({"customerId": customer, "items": [{"description": "Hosting", "quantity": 3, "unitPrice": 10.5}], "dueDate": "2026-12-31"});
    let a = c.post_json("/v1/invoices", &invoice).await;
    assert_eq!(a.status, 201, "{}", a.text());
    assert_eq!(a.json()["data"]["amount"], 31.5);
    let last = up.requests().pop().unwrap();
    assert_eq!(last.method, Method::POST);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&last.body).unwrap(), invoice);
    let q = c.get(&format!("/v1/invoices?customerId={customer}&limit=5&offset=0")).await;
    assert_eq!(q.status, 200);
    assert!(up
        .requests()
        .last()
        .unwrap()
        .path_and_query
        .ends_with(&format!("?customerId={customer}&limit=5&offset=0")));
}

#[tokio::test]
async fn upstream_errors_pass_through_in_their_envelope() {
    let up = support::upstream(100, Duration::from_secs(60)).await;
    let app = support::proxy(&support::config(&up, 100, Duration::from_secs(60))).await;
    let c = client(app.proxy_addr);
    let a = c.get("/v1/invoices/inv_00000000").await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["error"]["type"], "not_found");
    let bad = c.post_json("/v1/invoices", &json!({"customerId": "cust_x", "items": []})).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["success"], false);
}

#[tokio::test]
async fn paths_outside_the_api_and_connect_are_refused_with_envelopes() {
    let up = support::upstream(100, Duration::from_secs(60)).await;
    let app = support::proxy(&support::config(&up, 100, Duration::from_secs(60))).await;
    let c = client(app.proxy_addr);
    assert_envelope(&c.get("/admin").await, 403, "proxy_forbidden");
    assert_envelope(&c.get("/v1/../admin").await, 403, "proxy_forbidden");
    assert_envelope(&c.get("/v1/%2e%2e/admin").await, 403, "proxy_forbidden");
    assert_envelope(&c.get("/v1/invoices%2f..%2f..%2fadmin").await, 400, "proxy_bad_request");
    assert_envelope(&c.send(Method::TRACE, "/v1/invoices", &[], Bytes::new()).await, 405, "proxy_method_not_allowed");
    assert!(up.requests().is_empty(), "nothing refused reached the upstream");
}

#[tokio::test]
async fn oversized_bodies_get_413_and_never_reach_upstream() {
    let up = support::upstream(100, Duration::from_secs(60)).await;
    let mut cfg = support::config(&up, 100, Duration::from_secs(60));
    cfg.server.max_request_body = bytesize::ByteSize::kib(1);
    let app = support::proxy(&cfg).await;
    let big = Bytes::from(vec![b'x'; 4096]);
    let a =
        client(app.proxy_addr).send(Method::POST, "/v1/invoices", &[("content-type", "application/json")], big).await;
    assert_envelope(&a, 413, "proxy_payload_too_large");
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn unreachable_upstream_is_a_502_envelope() {
    let up = support::upstream(100, Duration::from_secs(60)).await;
    let mut cfg = support::config(&up, 100, Duration::from_secs(60));
    up.shutdown().await;
    cfg.upstream.connect_timeout = Duration::from_secs(2);
    let app = support::proxy(&cfg).await;
    let a = client(app.proxy_addr).get("/v1/customers").await;
    assert_envelope(&a, 502, "proxy_upstream_unavailable");
    assert!(!a.text().contains(KEY));
}

#[tokio::test]
async fn responses_carry_a_request_id_and_the_budget_fields() {
    let up = support::upstream(100, Duration::from_secs(60)).await;
    let app = support::proxy(&support::config(&up, 100, Duration::from_secs(60))).await;
    let a = client(app.proxy_addr).get("/v1/customers").await;
    assert!(a.header("x-request-id").is_some_and(|v| v.starts_with("req_")));
    assert_eq!(a.header("ratelimit-policy"), Some("\"account\";q=100;w=60"));
    let rl = a.header("ratelimit").unwrap();
    assert!(rl.starts_with("\"account\";r=") && rl.contains(";t="), "{rl}");
}

mod faithful {
    //! What the proxy must forward exactly, against a scripted upstream of our own.

    use std::{sync::atomic::Ordering, time::Duration};

    use bytes::Bytes;
    use http::Method;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpSocket,
    };

    use crate::{
        echo::{self, Echo},
        raw,
        support::{self, client, KEY},
    };

    async fn proxy_to(echo: &Echo) -> racknap_proxy::App {
        let mut cfg = racknap_proxy::Config::default();
        cfg.server.listen = ([127, 0, 0, 1], 0).into();
        cfg.server.admin_listen = ([127, 0, 0, 1], 0).into();
        cfg.upstream.url = echo.url();
        support::proxy(&cfg).await
    }

    #[tokio::test]
    async fn hop_by_hop_and_connection_named_headers_are_dropped_both_ways_but_never_the_key() {
        let echo = Echo::start().await;
        let app = proxy_to(&echo).await;
        let c = client(app.proxy_addr);
        let hdrs = [
            ("connection", "authorization, x-drop-me, host"),
            ("x-drop-me", "1"),
            ("keep-alive", "timeout=1"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("authorization", "Bearer client-own"),
            ("x-multi", "one"),
            ("x-multi", "two"),
            ("link", "</a>; rel=prev"),
            ("link", "</b>; rel=next"),
            ("x-kept", "1"),
        ];
        let a = c.send(Method::POST, "/v1/echo", &hdrs, Bytes::from_static(b"{}")).await;
        assert_eq!(a.status, 200, "{}", a.text());
        let seen = echo.seen().pop().unwrap();
        let auth: Vec<_> = seen.headers.get_all("authorization").iter().collect();
        assert_eq!(auth, [format!("Bearer {KEY}").as_str()], "the injected key survives `Connection: authorization`");
        assert_eq!(seen.headers["host"], echo.addr.unwrap().to_string().as_str());
        for h in ["x-drop-me", "keep-alive", "proxy-authorization", "proxy-connection", "te", "connection"] {
            assert!(!seen.headers.contains_key(h), "{h} was forwarded");
        }
        assert_eq!(seen.headers.get_all("x-multi").iter().collect::<Vec<_>>(), ["one", "two"]);
        assert_eq!(seen.headers.get_all("link").iter().count(), 2);
        for round in ["miss", "cached"] {
            let a = c.get("/v1/headers").await;
            let cookies: Vec<_> = a.headers.get_all("set-cookie").iter().collect();
            assert_eq!(cookies, ["a=1; Path=/", "b=2; Path=/"], "{round}");
            assert_eq!(a.headers.get_all("link").iter().count(), 2, "{round}");
            assert_eq!(a.header("x-kept"), Some("yes"), "{round}");
            assert!(a.header("x-hop-secret").is_none(), "{round}: a header the upstream's Connection named");
            assert!(a.header("keep-alive").is_none(), "{round}");
        }
    }

    #[tokio::test]
    async fn head_answers_keep_their_content_length() {
        let echo = Echo::start().await;
        let app = proxy_to(&echo).await;
        let a = client(app.proxy_addr).send(Method::HEAD, "/v1/head", &[], Bytes::new()).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("content-length"), Some("1234"));
        assert!(a.body.is_empty());
    }

    #[tokio::test]
    async fn expect_100_continue_is_answered_by_the_proxy_and_not_forwarded() {
        let echo = Echo::start().await;
        let mut cfg = racknap_proxy::Config::default();
        cfg.server.listen = ([127, 0, 0, 1], 0).into();
        cfg.server.admin_listen = ([127, 0, 0, 1], 0).into();
        cfg.upstream.url = echo.url();
        cfg.server.max_request_body = bytesize::ByteSize::kib(1);
        let app = support::proxy(&cfg).await;
        let mut s = tokio::net::TcpStream::connect(app.proxy_addr).await.unwrap();
        let head = "POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n";
        s.write_all(head.as_bytes()).await.unwrap();
        let mut b = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await.expect("100 within 10s").unwrap();
        assert!(String::from_utf8_lossy(&b[..n]).starts_with("HTTP/1.1 100 Continue"), "{:?}", &b[..n]);
        s.write_all(b"hello world").await.unwrap();
        let rest = raw::read_to_close(&mut s).await;
        assert_eq!(raw::status(&rest), Some(200), "{rest}");
        let seen = echo.seen().pop().unwrap();
        assert_eq!(seen.body, "hello world");
        assert!(!seen.headers.contains_key("expect"));
        // Too large by its declared length: 413 at once, no 100, the body never sent.
        let big = "POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n";
        let got = raw::exchange(app.proxy_addr, big.as_bytes()).await;
        assert_eq!(raw::status(&got), Some(413), "{got}");
        assert_eq!(echo.seen().len(), 1);
    }

    #[tokio::test]
    async fn chunked_request_bodies_arrive_with_their_trailers() {
        let echo = Echo::start().await;
        let app = proxy_to(&echo).await;
        let req = "POST /v1/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\
                   Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc123\r\nX-Other: 7\r\n\r\n";
        let got = raw::exchange(app.proxy_addr, req.as_bytes()).await;
        assert_eq!(raw::status(&got), Some(200), "{got}");
        let seen = echo.seen().pop().unwrap();
        assert_eq!(seen.body, "hello world");
        let t = seen.trailers.expect("trailers reached the upstream");
        assert_eq!(t["x-checksum"], "abc123");
        assert_eq!(t["x-other"], "7");
    }

    #[tokio::test]
    async fn a_large_response_streams_and_a_stalled_reader_stalls_the_upstream() {
        let echo = Echo::start().await;
        let app = proxy_to(&echo).await;
        let sock = TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(64 * 1024).unwrap();
        let mut s = sock.connect(app.proxy_addr).await.unwrap();
        s.write_all(b"GET /v1/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut read = 0u64;
        while read < 1024 * 1024 {
            read += s.read(&mut buf).await.unwrap() as u64;
        }
        // Stop reading; wait until the upstream stops producing.
        let mut last = u64::MAX;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = echo.produced.load(Ordering::Relaxed);
            if now == last {
                break;
            }
            last = now;
        }
        println!("client read {read} B, upstream produced {last} B while the client stalled");
        assert!(last < echo::BIG / 4, "the proxy buffered {last} of {} bytes for a stalled reader", echo::BIG);
        loop {
            match s.read(&mut buf).await.unwrap() {
                0 => break,
                n => read += n as u64,
            }
        }
        assert!(read >= echo::BIG, "the whole body arrived ({read} bytes with framing)");
        assert_eq!(echo.produced.load(Ordering::Relaxed), echo::BIG);
    }
}

mod tls_identity {
    //! Host and the TLS server name are the upstream's, whatever the client says.

    use std::{sync::Arc, time::Duration};

    use bytes::Bytes;
    use http::Method;
    use parking_lot::Mutex;
    use rustls::{
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
        server::{ClientHello, ResolvesServerCert},
        sign::CertifiedKey,
    };

    use crate::support::{self, client};

    #[derive(Debug)]
    struct RecordSni {
        inner: Arc<dyn ResolvesServerCert>,
        seen: Arc<Mutex<Vec<Option<String>>>>,
    }

    impl ResolvesServerCert for RecordSni {
        fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            self.seen.lock().push(hello.server_name().map(str::to_owned));
            self.inner.resolve(hello)
        }
    }

    #[tokio::test]
    async fn host_and_sni_are_the_upstreams_not_the_clients() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = std::env::temp_dir().join(format!("racknap-proxy-sni-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert.cert.der().to_vec())], key)
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        tls.cert_resolver = Arc::new(RecordSni { inner: tls.cert_resolver.clone(), seen: seen.clone() });
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let up = support::upstream_with(1000, Duration::from_secs(60), |m| m.tls = Some(Arc::new(tls))).await;
        let mut cfg = support::config(&up, 1000, Duration::from_secs(60));
        cfg.upstream.url = format!("https://localhost:{}", up.addr().port());
        cfg.upstream.ca_file = Some(ca);
        let app = support::proxy(&cfg).await;
        let hdrs = [("host", "evil.example"), ("x-forwarded-host", "evil.example")];
        let a = client(app.proxy_addr).send(Method::GET, "/v1/customers", &hdrs, Bytes::new()).await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(*seen.lock(), [Some("localhost".to_owned())], "SNI is the upstream's name");
        let r = up.requests().pop().unwrap();
        let host =
            r.headers.get("host").map(|h| h.to_str().unwrap().to_owned()).unwrap_or_else(|| "(h2 :authority)".into());
        assert!(host == format!("localhost:{}", up.addr().port()) || host == "(h2 :authority)", "{host}");
        assert!(!r.headers.contains_key("x-forwarded-host"));
    }
}
