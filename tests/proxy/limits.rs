//! Bounds: header size, slow heads, idle connections, the connection cap, upstream timeouts,
//! and ambiguous framing (request smuggling via CL/TE) sent with a raw client.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    raw,
    support::{self, assert_envelope, client},
};

#[tokio::test]
async fn an_oversized_head_is_refused_with_431() {
    let up = support::upstream(1000, Duration::from_secs(60)).await;
    let mut cfg = support::config(&up, 1000, Duration::from_secs(60));
    cfg.server.max_header_bytes = bytesize::ByteSize::kib(16);
    let app = support::proxy(&cfg).await;
    let big = "a".repeat(20 * 1024);
    let req = format!("GET /v1/customers HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let got = raw::exchange(app.proxy_addr, req.as_bytes()).await;
    assert_eq!(raw::status(&got), Some(431), "{got}");
    let many: String = (0..2000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET /v1/customers HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n");
    let got = raw::exchange(app.proxy_addr, req.as_bytes()).await;
    assert!(matches!(raw::status(&got), Some(431 | 400)), "{got}");
    assert!(up.requests().is_empty());
    assert_eq!(closed(&app, "head_too_large", 2.0).await, 2.0, "hyper's refusals are counted");
}

#[tokio::test]
async fn a_client_trickling_its_head_is_cut_off() {
    let up = support::upstream(1000, Duration::from_secs(60)).await;
    let mut cfg = support::config(&up, 1000, Duration::from_secs(60));
    cfg.server.header_read_timeout = Duration::from_millis(500);
    let app = support::proxy(&cfg).await;
    let mut s = TcpStream::connect(app.proxy_addr).await.unwrap();
    s.write_all(b"GET /v1/customers HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // One header line every 100 ms would keep the head open for 20 s.
    let mut cut = false;
    for i in 0..200 {
        if s.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes()).await.is_err() {
            cut = true;
            break;
        }
        let mut b = [0u8; 512];
        if tokio::time::timeout(Duration::from_millis(100), s.read(&mut b)).await.is_ok() {
            cut = true; // EOF, a reset, or an error answer: the server gave up on us
            break;
        }
    }
    assert!(cut, "the trickling client was never cut off");
    assert!(up.requests().is_empty());
    assert_eq!(closed(&app, "header_timeout", 1.0).await, 1.0);
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_cut_at_the_header_timeout_not_the_idle_one() {
    // Found by a user test: 1100 silent connections held every slot for the 60 s idle timeout.
    let up = support::upstream(1000, Duration::from_secs(60)).await;
    let mut cfg = support::config(&up, 1000, Duration::from_secs(60));
    cfg.server.header_read_timeout = Duration::from_millis(300);
    cfg.server.idle_timeout = Duration::from_secs(3600);
    let app = support::proxy(&cfg).await;
    let mut s = TcpStream::connect(app.proxy_addr).await.unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(20)).await, "a silent connection was held open");
    assert_eq!(closed(&app, "header_timeout", 1.0).await, 1.0);
}

#[tokio::test]
async fn a_body_that_trickles_is_answered_408_in_time() {
    // Found by a user test: a POST sending one byte every 5 s held its connection indefinitely.
    let up = support::upstream(1000, Duration::from_secs(60)).await;
    let mut cfg = support::config(&up, 1000, Duration::from_secs(60));
    cfg.server.body_read_timeout = Duration::from_millis(300);
    let app = support::proxy(&cfg).await;
    let mut s = TcpStream::connect(app.proxy_addr).await.unwrap();
    s.write_all(
        b"POST /v1/invoices HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut b = [0u8; 4096];
        while let Ok(n) = s.read(&mut b).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&b[..n]);
            if got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to a trickling body");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("proxy_request_timeout"), "{text}");
    assert!(up.requests().is_empty());
}

/// Connections closed for `reason`, once it reaches `want` (the count lands just after the
/// client saw the close) or after 5 s.
async fn closed(app: &racknap_proxy::App, reason: &str, want: f64) -> f64 {
    let name = format!("racknap_proxy_connections_closed_total{{reason=\"{reason}\"}}");
    let mut got = 0.0;
    for _ in 0..50 {
        got = support::metric(app, &name).await;
        if got >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    got
}

async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut b = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn idle_connections_are_closed_http1_and_h2c() {
    let up = support::upstream(1000, Duration::from_secs(60)).await;
    let mut cfg = support::config(&up, 1000, Duration::from_secs(60));
    cfg.server.idle_timeout = Duration::from_millis(300);
    cfg.server.header_read_timeout = Duration::from_secs(60);
    let app = support::proxy(&cfg).await;
    // HTTP/1.1: one request, then nothing on a kept-alive connection.
    let mut h1 = TcpStream::connect(app.proxy_addr).await.unwrap();
    h1.write_all(b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(raw::status(&raw::read_response(&mut h1).await), Some(403));
    // h2c with prior knowledge: preface and an empty SETTINGS frame, then nothing.
    let mut h2 = TcpStream::connect(app.proxy_addr).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    assert!(closed_within(&mut h1, Duration::from_secs(10)).await, "idle HTTP/1.1 connection kept open");
    assert!(closed_within(&mut h2, Duration::from_secs(10)).await, "idle h2c connection kept open");
    assert_eq!(closed(&app, "idle", 2.0).await, 2.0);
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let up = support::upstream(1000, Duration::from_secs(60)).await;
    let mut cfg = support::config(&up, 1000, Duration::from_secs(60));
    cfg.server.max_connections = 2;
    let app = support::proxy(&cfg).await;
    let req = b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(app.proxy_addr).await.unwrap();
        s.write_all(req).await.unwrap();
        assert_eq!(raw::status(&raw::read_response(&mut s).await), Some(403));
        open.push(s);
    }
    assert_eq!(support::metric(&app, "racknap_proxy_connections_open").await, 2.0);
    let mut third = TcpStream::connect(app.proxy_addr).await.unwrap(); // the kernel's backlog takes it
    third.write_all(req).await.unwrap();
    let mut b = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut b)).await;
    assert!(early.is_err(), "a third connection was served while two were open");
    drop(open.remove(0));
    assert_eq!(raw::status(&raw::read_response(&mut third).await), Some(403), "served once a slot freed");
}

#[tokio::test]
async fn a_slow_upstream_is_a_504_envelope() {
    let up = support::upstream_with(1000, Duration::from_secs(60), |m| m.latency = Duration::from_secs(3)).await;
    let mut cfg = support::config(&up, 1000, Duration::from_secs(60));
    cfg.upstream.timeout = Duration::from_millis(300);
    let app = support::proxy(&cfg).await;
    assert_envelope(&client(app.proxy_addr).get("/v1/customers").await, 504, "proxy_upstream_timeout");
}

#[tokio::test]
async fn an_upstream_that_never_accepts_is_a_504_envelope() {
    // A listener with a full accept queue: the kernel drops further SYNs, so connect hangs.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(([127, 0, 0, 1], 0).into()).unwrap();
    let listener = sock.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            fillers.push(s);
        }
    }
    let up = support::upstream(1000, Duration::from_secs(60)).await;
    let mut cfg = support::config(&up, 1000, Duration::from_secs(60));
    cfg.upstream.url = format!("http://{addr}");
    cfg.upstream.connect_timeout = Duration::from_millis(300);
    let app = support::proxy(&cfg).await;
    assert_envelope(&client(app.proxy_addr).get("/v1/customers").await, 504, "proxy_upstream_timeout");
    drop(listener);
}

/// Requests whose framing two parsers could read differently. Each hides a second request,
/// `GET /v1/smuggled`, that must never reach the upstream.
const FRAMINGS: &[(&str, &str)] = &[
    ("CL then TE", "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("TE then CL", "Transfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n"),
    ("differing CLs", "Content-Length: 0\r\nContent-Length: 60\r\n\r\n"),
    ("CL list", "Content-Length: 0, 60\r\n\r\n"),
    ("CL with sign", "Content-Length: +0\r\n\r\n"),
    ("TE not chunked last", "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
    ("TE unknown", "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
    ("TE space before colon", "Transfer-Encoding : chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n"),
    ("TE obs-fold", "Transfer-Encoding:\r\n chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n"),
    ("chunk size overflow", "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\n\r\n"),
    ("chunk size junk", "Transfer-Encoding: chunked\r\n\r\n0x0\r\n\r\n"),
];

#[tokio::test]
async fn ambiguous_framing_never_smuggles_a_request_upstream() {
    let up = support::upstream(1000, Duration::from_secs(60)).await;
    let app = support::proxy(&support::config(&up, 1000, Duration::from_secs(60))).await;
    let smuggled = "GET /v1/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    for (name, framing) in FRAMINGS {
        let req = format!("POST /v1/customers HTTP/1.1\r\nHost: x\r\n{framing}{smuggled}");
        let got = raw::exchange(app.proxy_addr, req.as_bytes()).await;
        let statuses = got.matches("HTTP/1.1 ").count();
        println!("{name:<24} -> {:?} {:?}, {statuses} response(s)", raw::status(&got), raw::envelope_type(&got));
        assert!(statuses <= 1, "{name}: a second response means the smuggled request was served: {got}");
        if !name.starts_with("CL then") && !name.starts_with("TE then") {
            assert_eq!(raw::status(&got), Some(400), "{name}: {got}");
        }
    }
    let paths: Vec<_> = up.requests().into_iter().map(|r| r.path_and_query).collect();
    assert!(!paths.iter().any(|p| p.contains("smuggled")), "{paths:?}");
    // hyper refuses bad heads itself (counted by connection); bad chunk sizes surface as an
    // unreadable body in admission (an envelope, counted by type).
    let envelopes = support::metric(&app, "racknap_proxy_errors_total{type=\"proxy_bad_request\"}").await;
    assert_eq!(closed(&app, "malformed", 9.0 - envelopes).await + envelopes, 9.0, "every 400 is counted");
}
