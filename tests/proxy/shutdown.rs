//! Graceful shutdown: in-flight requests finish, the queue drains up to the grace period, what
//! is still queued gets the `proxy_shutting_down` envelope, nobody is left without an answer;
//! the binary does the same on SIGTERM and SIGINT and exits 0.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use racknap_proxy::{
    mock::{FaultKind, MockServer},
    App,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    task::JoinHandle,
};

use crate::support::{self, assert_envelope, client, Answer};

/// A proxy whose budget (1 per second) makes requests queue, and `n` clients in that queue.
async fn queued(n: usize, grace: Duration) -> (MockServer, App, Vec<JoinHandle<Answer>>) {
    let (up, app) = support::uncached(2, Duration::from_secs(1), |cfg| cfg.server.shutdown_grace = grace).await;
    let clients = spawn_clients(app.proxy_addr, n);
    wait_until(|| app.metrics.queue_depth.get() >= n as i64 - 2, "requests queue").await;
    (up, app, clients)
}

fn spawn_clients(addr: SocketAddr, n: usize) -> Vec<JoinHandle<Answer>> {
    (0..n).map(|i| tokio::spawn(async move { client(addr).get(&format!("/v1/customers?offset={i}")).await })).collect()
}

/// Poll a condition every 10 ms, for at most 10 s.
async fn wait_until(mut ready: impl FnMut() -> bool, what: &str) {
    for _ in 0..1000 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Every client got an answer (a transport failure panics the client task): the 200s and
/// the shutdown envelopes, counted.
async fn answers(clients: Vec<JoinHandle<Answer>>) -> (usize, usize) {
    let (mut ok, mut refused) = (0, 0);
    for c in clients {
        let a = c.await.expect("every client got an answer, none saw a dropped connection");
        if a.status == 200 {
            ok += 1;
        } else {
            assert_envelope(&a, 503, "proxy_shutting_down");
            assert!(a.header("retry-after").is_some());
            refused += 1;
        }
    }
    (ok, refused)
}

#[tokio::test]
async fn shutdown_answers_every_queued_client_with_200_or_the_envelope() {
    let (_up, app, clients) = queued(10, Duration::from_millis(800)).await;
    let proxy_addr = app.proxy_addr;
    app.shutdown().await;
    let (ok, refused) = answers(clients).await;
    assert_eq!(ok + refused, 10);
    assert!(ok >= 1, "the queue drained during the grace period");
    assert!(refused >= 1, "what was still queued after the grace period got the envelope");
    assert!(tokio::net::TcpStream::connect(proxy_addr).await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn readyz_turns_503_while_draining() {
    let (_up, app, clients) = queued(6, Duration::from_secs(2)).await;
    let admin = app.admin_addr;
    assert_eq!(client(admin).get("/readyz").await.status, 200);
    let shutdown = tokio::spawn(app.shutdown());
    let mut status = 200;
    for _ in 0..100 {
        // A fresh connection each time, as a kubelet probe makes: the admin listener still accepts.
        status = client(admin).get("/readyz").await.status.as_u16();
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, 503, "not ready while draining");
    shutdown.await.unwrap();
    answers(clients).await;
}

#[tokio::test]
async fn an_in_flight_request_finishes_during_shutdown() {
    let (up, app) =
        support::uncached(100, Duration::from_secs(1), |cfg| cfg.server.shutdown_grace = Duration::from_secs(5)).await;
    up.force_fault(1, FaultKind::Slow(Duration::from_millis(500)));
    let c = spawn_clients(app.proxy_addr, 1);
    wait_until(|| up.stats().requests == 1, "the request reached the upstream").await;
    app.shutdown().await;
    assert_eq!(answers(c).await, (1, 0), "answered by the upstream, not cut off");
}

// === the binary ===

/// The proxy binary against `up`, configured by a file; its proxy and admin addresses.
async fn spawn_binary(up: &MockServer) -> (tokio::process::Child, SocketAddr, SocketAddr) {
    let dir = std::env::temp_dir().join(format!("racknap-shutdown-{}-{}", std::process::id(), up.addr().port()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("proxy.toml");
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n\
         [upstream]\nurl = \"{}\"\n[budget]\nlimit = 2\nwindow = \"1s\"\n[cache]\nenabled = false\n\
         [log]\nformat = \"json\"\n",
        up.base_url()
    );
    std::fs::write(&path, toml).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_racknap-proxy"))
        .arg("--config")
        .arg(&path)
        .env("RACKNAP_API_KEY", support::KEY)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = |v: &serde_json::Value, k: &str| v[k].as_str().and_then(|s| s.parse::<SocketAddr>().ok());
    let (proxy, admin) = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the binary logs within 30s")
            .unwrap()
            .expect("the binary logs that it listens");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if let (Some(p), Some(a)) = (addr(&v, "proxy_addr"), addr(&v, "admin_addr")) {
            break (p, a);
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} }); // keep the pipe flowing
    (child, proxy, admin)
}

fn signal(child: &tokio::process::Child, sig: &str) {
    let pid = child.id().expect("still running").to_string();
    let status = std::process::Command::new("kill").args([sig, &pid]).status().unwrap();
    assert!(status.success());
}

async fn exit_code(mut child: tokio::process::Child) -> Option<i32> {
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await.expect("exits within 20s").unwrap();
    status.code()
}

async fn queue_depth(admin: SocketAddr) -> f64 {
    let text = client(admin).get("/metrics").await.text();
    text.lines().find_map(|l| l.strip_prefix("racknap_proxy_queue_depth ")).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

#[tokio::test]
async fn sigterm_with_requests_queued_answers_every_client_and_exits_zero() {
    let up = support::upstream(2, Duration::from_secs(1)).await;
    let (child, proxy, admin) = spawn_binary(&up).await;
    let clients = spawn_clients(proxy, 8);
    for _ in 0..1000 {
        if queue_depth(admin).await >= 5.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(queue_depth(admin).await >= 3.0, "requests are queued when the signal comes");
    signal(&child, "-TERM");
    let (ok, refused) = answers(clients).await;
    assert_eq!(ok + refused, 8);
    assert!(refused >= 1, "the queue outlasted the 1s grace period");
    assert_eq!(exit_code(child).await, Some(0));
}

#[tokio::test]
async fn sigint_exits_zero() {
    let up = support::upstream(100, Duration::from_secs(1)).await;
    let (child, proxy, _) = spawn_binary(&up).await;
    assert_eq!(client(proxy).get("/v1/customers").await.status, 200);
    signal(&child, "-INT");
    assert_eq!(exit_code(child).await, Some(0));
}
