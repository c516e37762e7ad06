//! Not an open proxy: raw request targets (what public proxy bug reports used: dot-segments,
//! `%2f`/`%5c`, `..;/`, double encoding, overlong UTF-8, Unicode look-alikes, NUL, CR/LF,
//! absolute-form and userinfo host confusion, CONNECT, upgrades) and inbound authentication.

use std::time::Duration;

use bytes::Bytes;
use http::Method;

use crate::{
    raw,
    support::{self, assert_envelope, client, metric},
};

/// (request target, expected status, expected envelope type or None when hyper refuses first)
const TARGETS: &[(&str, u16, Option<&str>)] = &[
    ("/v1/customers", 200, None),
    ("/admin", 403, Some("proxy_forbidden")),
    ("/v1/../admin", 403, Some("proxy_forbidden")),
    ("/v1/./../admin", 403, Some("proxy_forbidden")),
    ("/v1/%2e%2e/admin", 403, Some("proxy_forbidden")),
    ("/v1/%2E%2e/admin", 403, Some("proxy_forbidden")),
    ("/v1/.%2E/admin", 403, Some("proxy_forbidden")),
    ("//v1/../admin", 403, Some("proxy_forbidden")),
    ("/v1//../../admin", 403, Some("proxy_forbidden")),
    ("/v1/customers/../../../../etc/passwd", 403, Some("proxy_forbidden")),
    ("/V1/customers", 403, Some("proxy_forbidden")),
    ("/v1/%2e%2e%2fadmin", 400, Some("proxy_bad_request")),
    ("/v1/..%2Fadmin", 400, Some("proxy_bad_request")),
    ("/v1/..%2fadmin", 400, Some("proxy_bad_request")),
    ("/v1/..%5cadmin", 400, Some("proxy_bad_request")),
    ("/v1/..%5Cadmin", 400, Some("proxy_bad_request")),
    ("/v1/..;/admin", 400, Some("proxy_bad_request")),
    ("/v1/%2e%2e;jsessionid=1/admin", 400, Some("proxy_bad_request")),
    ("/v1/%252e%252e/admin", 400, Some("proxy_bad_request")),
    ("/v1/%252f", 400, Some("proxy_bad_request")),
    ("/v1/%c0%ae%c0%ae/admin", 400, Some("proxy_bad_request")),
    ("/v1/%e0%80%ae", 400, Some("proxy_bad_request")),
    ("/v1/%ff", 400, Some("proxy_bad_request")),
    ("/v1/%ef%bc%8e%ef%bc%8e/admin", 400, Some("proxy_bad_request")),
    ("/v1/%e2%88%95admin", 400, Some("proxy_bad_request")),
    ("/v1/%00", 400, Some("proxy_bad_request")),
    ("/v1/customers%0d%0aX-Injected:%20yes", 400, Some("proxy_bad_request")),
    ("/v1/customers%09", 400, Some("proxy_bad_request")),
    ("*", 400, Some("proxy_bad_request")),
    ("http://evil.example/v1/customers", 403, Some("proxy_forbidden")),
    ("https://evil.example:443/v1/customers", 403, Some("proxy_forbidden")),
    ("http://127.0.0.1@evil.example/v1/customers", 403, Some("proxy_forbidden")),
    ("http://EVIL.example/v1/customers", 403, Some("proxy_forbidden")),
    ("/v1\\..\\admin", 400, Some("proxy_bad_request")),
    ("/v1/customers\0", 400, None),
];

#[tokio::test]
async fn raw_request_targets_cannot_leave_the_allowed_prefixes() {
    let up = support::upstream(1000, Duration::from_secs(60)).await;
    let app = support::proxy(&support::config(&up, 1000, Duration::from_secs(60))).await;
    let mut failures = Vec::new();
    let mut envelopes = 0.0;
    for (target, want, kind) in TARGETS {
        let req = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        let got = raw::exchange(app.proxy_addr, req.as_bytes()).await;
        let (status, ty) = (raw::status(&got), raw::envelope_type(&got));
        println!("{target:<45} -> {status:?} {ty:?}");
        if status != Some(*want) || (kind.is_some() && ty.as_deref() != *kind) {
            failures.push(format!("{target}: want {want} {kind:?}, got {status:?} {ty:?}"));
        }
        envelopes += f64::from(u8::from(kind.is_some() && *want != 200));
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let forwarded: Vec<_> = up.requests().into_iter().map(|r| r.path_and_query).collect();
    assert_eq!(forwarded, ["/v1/customers"], "only the allowed target reached the upstream");
    let counted: f64 = sum_metric(&app, "racknap_proxy_errors_total").await;
    assert_eq!(counted, envelopes, "every refusal is counted");
}

async fn sum_metric(app: &racknap_proxy::App, name: &str) -> f64 {
    let text = client(app.admin_addr).get("/metrics").await.text();
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[tokio::test]
async fn the_upstream_itself_in_absolute_form_is_forwarded_there_and_host_is_the_upstreams() {
    let up = support::upstream(1000, Duration::from_secs(60)).await;
    let app = support::proxy(&support::config(&up, 1000, Duration::from_secs(60))).await;
    let req =
        format!("GET http://{}/v1/customers HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n", up.addr());
    assert_eq!(raw::status(&raw::exchange(app.proxy_addr, req.as_bytes()).await), Some(200));
    let confusing = "GET /v1/customers HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-Host: evil.example\r\n\
                     X-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\nForwarded: host=evil.example\r\n\
                     X-HTTP-Method-Override: DELETE\r\nConnection: close\r\n\r\n";
    assert_eq!(raw::status(&raw::exchange(app.proxy_addr, confusing.as_bytes()).await), Some(200));
    for seen in up.requests() {
        assert_eq!(seen.headers["host"], up.addr().to_string().as_str());
        for h in ["x-forwarded-host", "x-original-url", "x-rewrite-url", "forwarded", "x-http-method-override"] {
            assert!(!seen.headers.contains_key(h), "{h} reached the upstream");
        }
    }
}

#[tokio::test]
async fn connect_trace_and_every_upgrade_are_refused() {
    let up = support::upstream(1000, Duration::from_secs(60)).await;
    let app = support::proxy(&support::config(&up, 1000, Duration::from_secs(60))).await;
    let cases: &[(&str, u16, &str)] = &[
        ("CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 405, "proxy_method_not_allowed"),
        ("CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n", 405, "proxy_method_not_allowed"),
        ("TRACE /v1/customers HTTP/1.1\r\nHost: x\r\n\r\n", 405, "proxy_method_not_allowed"),
        (
            "GET /v1/customers HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            400,
            "proxy_bad_request",
        ),
        (
            "GET /v1/customers HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
             HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
            400,
            "proxy_bad_request",
        ),
        ("GET /v1/customers HTTP/1.1\r\nHost: x\r\nUpgrade: TLS/1.2\r\n\r\n", 400, "proxy_bad_request"),
        ("GET /v1/customers HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n", 400, "proxy_bad_request"),
    ];
    for (req, want, kind) in cases {
        let got =
            raw::exchange(app.proxy_addr, req.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n").as_bytes()).await;
        assert_eq!(raw::status(&got), Some(*want), "{req:?} -> {got}");
        assert_eq!(raw::envelope_type(&got).as_deref(), Some(*kind), "{req:?} -> {got}");
        assert!(!got.contains("101 Switching"), "{got}");
    }
    assert!(up.requests().is_empty(), "nothing refused reached the upstream");
    assert_eq!(metric(&app, "racknap_proxy_errors_total{type=\"proxy_bad_request\"}").await, 4.0);
}

fn with_tokens(cfg: &mut racknap_proxy::Config) {
    cfg.auth.tokens = vec![
        racknap_proxy::secret::InboundToken::parse("billing:tok_billing_6c1f0e").unwrap(),
        racknap_proxy::secret::InboundToken::parse("reports:tok_reports_9d2a4b").unwrap(),
    ];
}

#[tokio::test]
async fn with_tokens_configured_only_a_valid_token_in_its_own_header_passes() {
    let up = support::upstream(1000, Duration::from_secs(60)).await;
    let mut cfg = support::config(&up, 1000, Duration::from_secs(60));
    with_tokens(&mut cfg);
    let app = support::proxy(&cfg).await;
    let c = client(app.proxy_addr);
    let send = |h: &'static [(&'static str, &'static str)]| {
        let c = c.clone();
        async move { c.send(Method::GET, "/v1/customers", h, Bytes::new()).await }
    };
    assert_envelope(&send(&[]).await, 401, "proxy_unauthenticated");
    assert_envelope(&send(&[("x-proxy-token", "tok_billing_6c1f0")]).await, 401, "proxy_unauthenticated");
    assert_envelope(&send(&[("x-proxy-token", "tok_billing_6c1f0e0")]).await, 401, "proxy_unauthenticated");
    assert_envelope(&send(&[("authorization", "Bearer tok_billing_6c1f0e")]).await, 401, "proxy_unauthenticated");
    assert_envelope(
        &send(&[("x-proxy-token", "tok_billing_6c1f0e"), ("x-proxy-token", "tok_reports_9d2a4b")]).await,
        401,
        "proxy_unauthenticated",
    );
    assert!(up.requests().is_empty(), "nothing unauthenticated reached the upstream");
    for (i, token) in ["tok_billing_6c1f0e", "tok_reports_9d2a4b"].iter().enumerate() {
        let path = format!("/v1/customers?limit={}", i + 1); // distinct: no cache hit
        let a = c.send(Method::GET, &path, &[("x-proxy-token", token)], Bytes::new()).await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|r| !r.headers.contains_key("x-proxy-token")), "the token header is never forwarded");
    assert_eq!(metric(&app, "racknap_proxy_errors_total{type=\"proxy_unauthenticated\"}").await, 5.0);
}

#[tokio::test]
async fn tokens_can_come_from_a_file_and_an_empty_file_is_refused() {
    let up = support::upstream(1000, Duration::from_secs(60)).await;
    let dir = std::env::temp_dir().join(format!("racknap-proxy-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tokens");
    std::fs::write(&file, "# services\nbilling:tok_file_71b3\n\nreports:tok_file_e20c\n").unwrap();
    let mut cfg = support::config(&up, 1000, Duration::from_secs(60));
    cfg.auth.tokens_file = Some(file.clone());
    let app = support::proxy(&cfg).await;
    let c = client(app.proxy_addr);
    assert_envelope(&c.get("/v1/customers").await, 401, "proxy_unauthenticated");
    let ok = c.send(Method::GET, "/v1/customers", &[("x-proxy-token", "tok_file_e20c")], Bytes::new()).await;
    assert_eq!(ok.status, 200);
    std::fs::write(&file, "# nobody\n").unwrap();
    let err = racknap_proxy::App::start(&cfg, racknap_proxy::secret::KeySource::Env(support::key())).await.err();
    assert!(
        err.is_some_and(|e| e.to_string().contains("auth.tokens_file")),
        "an empty token file would silently disable auth"
    );
}

fn bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_racknap-proxy"));
    c.env_remove("RACKNAP_PROXY_CONFIG").env("RACKNAP_API_KEY", "sk_test_bind").env("NO_COLOR", "1");
    c
}

#[test]
fn a_public_bind_without_tokens_is_refused_unless_explicitly_allowed() {
    let out = bin().args(["--listen", "0.0.0.0:0", "--admin-listen", "127.0.0.1:0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.listen") && err.contains("--allow-public-bind"), "{err}");
    let out = bin().args(["check", "--listen", "[::]:0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(78), "check refuses it too");
    let out = bin().args(["check", "--listen", "[::1]:0"]).output().unwrap();
    assert!(out.status.success(), "IPv6 loopback is fine: {}", String::from_utf8_lossy(&out.stderr));

    // Allowed explicitly: it starts, and says loudly what it is doing.
    let mut child = bin()
        .args(["--listen", "0.0.0.0:0", "--admin-listen", "127.0.0.1:0", "--allow-public-bind"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    let mut text = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        text.push_str(&line);
        text.push('\n');
        if line.contains("Proxy listening") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("WITHOUT inbound authentication"), "{text}");
    assert!(text.contains("Proxy listening"), "{text}");
}

#[tokio::test]
async fn the_tokens_name_is_the_fairness_unit_whatever_x_client_id_says() {
    let up = support::upstream(10, Duration::from_secs(2)).await;
    let mut cfg = support::config(&up, 10, Duration::from_secs(2));
    with_tokens(&mut cfg);
    cfg.cache.enabled = false;
    let app = support::proxy(&cfg).await;
    let c = client(app.proxy_addr);
    let get = |path: String, token: &'static str| {
        let c = c.clone();
        tokio::spawn(async move {
            let h = [("x-proxy-token", token), ("x-client-id", "shared")];
            c.send(Method::GET, &path, &h, Bytes::new()).await.status
        })
    };
    let flood: Vec<_> = (1..=6).map(|i| get(format!("/v1/customers?limit={i}"), "tok_billing_6c1f0e")).collect();
    let queued = tokio::time::timeout(Duration::from_secs(10), async {
        while metric(&app, "racknap_proxy_queue_depth").await < 4.0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(queued.is_ok(), "the flood never queued");
    let other = get("/v1/customers?offset=99".into(), "tok_reports_9d2a4b");
    for t in flood.into_iter().chain([other]) {
        assert_eq!(t.await.unwrap(), 200);
    }
    let order: Vec<_> = up.requests().into_iter().map(|r| r.path_and_query).collect();
    let pos = order.iter().position(|p| p.ends_with("offset=99")).unwrap();
    assert!(pos <= 3, "the other token waited behind the flood (position {pos}): {order:?}");
}
