//! The compliance benchmark: the real binary against the bundled mock with adversities on.
//!
//! `cargo bench --bench compliance` (or `scripts/compliance.sh`) builds the release binary,
//! then per scenario starts `racknap-proxy mock ...` and `racknap-proxy --upstream ...` as child
//! processes on free loopback ports, offers five times the limit from three clients for several
//! short windows, and prints upstream 429s, the share of the allowed budget used, client p50/p99
//! waits and fairness (min/max served between clients). Exits non-zero if any scenario saw a
//! 429. `RACKNAP_PROXY_BIN` overrides the binary.

use std::{
    net::{SocketAddr, TcpListener},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use parking_lot::Mutex;
use tokio::time::Instant;

const KEY: &str = "sk_bench_6c1e0a9f4b2d8e7a5c3f1b0d9e8a7c6b";
const LIMIT: u32 = 50;
const WINDOW: Duration = Duration::from_secs(2);
/// Windows measured, after one window of warm-up.
const WINDOWS: u32 = 8;
const CLIENTS: usize = 3;
const LOAD: f64 = 5.0;

type Http = Client<HttpConnector, Empty<Bytes>>;

struct Scenario {
    name: &'static str,
    kind: &'static str,
    skew_ms: i64,
    external_share: f64,
}

#[derive(Default)]
struct Tally {
    served: [u64; CLIENTS],
    waits: Vec<Duration>,
    errors: u64,
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

fn binary() -> String {
    std::env::var("RACKNAP_PROXY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_racknap-proxy").to_string())
}

fn start(s: &Scenario, dir: &std::path::Path) -> (Proc, Proc, SocketAddr, SocketAddr, SocketAddr) {
    let (mock, listen, admin) = (free_addr(), free_addr(), free_addr());
    let external = s.external_share * f64::from(LIMIT) / WINDOW.as_secs_f64();
    let mock_proc = Command::new(binary())
        .args(["mock", "--listen", &mock.to_string(), "--limit", &LIMIT.to_string(), "--window"])
        .arg(format!("{}ms", WINDOW.as_millis()))
        .args(["--window-kind", s.kind, "--clock-skew-ms", &s.skew_ms.to_string()])
        .args(["--external-rate", &external.to_string(), "--key", KEY])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mock starts");
    let config = dir.join(format!("{}.toml", s.name.replace(' ', "_")));
    std::fs::write(&config, "[cache]\nenabled = false\n[log]\nlevel = \"error\"\n[queue]\ncapacity = 100000\n")
        .expect("config written");
    let proxy_proc = Command::new(binary())
        .arg("--config")
        .arg(&config)
        .args(["--listen", &listen.to_string(), "--admin-listen", &admin.to_string()])
        .args(["--upstream", &format!("http://{mock}"), "--limit", &LIMIT.to_string(), "--window"])
        .arg(format!("{}ms", WINDOW.as_millis()))
        .env("RACKNAP_API_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("proxy starts");
    (Proc(mock_proc), Proc(proxy_proc), mock, listen, admin)
}

async fn get(http: &Http, url: String, headers: &[(&str, &str)]) -> Option<(u16, Bytes)> {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = http.request(req.body(Empty::new()).ok()?).await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, body))
}

async fn wait_ready(http: &Http, url: String) {
    for _ in 0..200 {
        if get(http, url.clone(), &[]).await.is_some_and(|(s, _)| s == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{url} never answered");
}

async fn mock_stats(http: &Http, mock: SocketAddr) -> serde_json::Value {
    let (_, body) = get(http, format!("http://{mock}/__mock/stats"), &[]).await.expect("stats");
    serde_json::from_slice(&body).expect("stats JSON")
}

fn count(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// Offer `LOAD` × the limit, spread over the clients, until `until`.
async fn offer(http: &Http, proxy: SocketAddr, until: Instant, measure: (Instant, Instant)) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let every = Duration::from_secs_f64(WINDOW.as_secs_f64() / (LOAD * f64::from(LIMIT)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = Instant::now();
    let mut i = 0u64;
    while next < until {
        tokio::time::sleep_until(next).await;
        let (http, tally, client) = (http.clone(), tally.clone(), (i % CLIENTS as u64) as usize);
        tasks.spawn(async move {
            let asked = Instant::now();
            let url = format!("http://{proxy}/v1/invoices?offset={i}&limit=1");
            let id = format!("svc-{client}");
            let answer = get(&http, url, &[("x-client-id", &id)]).await;
            let done = Instant::now();
            let mut t = tally.lock();
            match answer {
                Some((200, _)) if done >= measure.0 && done < measure.1 => {
                    t.served[client] += 1;
                    t.waits.push(done - asked);
                }
                Some((200, _)) => {}
                _ => t.errors += 1,
            }
        });
        next += every;
        i += 1;
    }
    tasks.abort_all(); // the backlog left at the end goes away (spends nothing)
    while tasks.join_next().await.is_some() {}
    Arc::try_unwrap(tally).ok().expect("tasks done").into_inner()
}

fn quantile(w: &mut [Duration], q: f64) -> Duration {
    w.sort_unstable();
    w.get(((w.len().max(1) - 1) as f64 * q).round() as usize).copied().unwrap_or_default()
}

async fn run(s: &Scenario, dir: &std::path::Path) -> (u64, String) {
    let (_mock, _proxy, mock, listen, admin) = start(s, dir);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let http: Http = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(4096).build(connector);
    wait_ready(&http, format!("http://{admin}/healthz")).await;
    wait_ready(&http, format!("http://{mock}/__mock/stats")).await;
    let start = Instant::now();
    let t0 = start + WINDOW;
    let t1 = t0 + WINDOW * WINDOWS;
    let before = tokio::spawn({
        let http = http.clone();
        async move {
            tokio::time::sleep_until(t0).await;
            mock_stats(&http, mock).await
        }
    });
    let after = tokio::spawn({
        let http = http.clone();
        async move {
            tokio::time::sleep_until(t1).await;
            mock_stats(&http, mock).await
        }
    });
    let mut tally = offer(&http, listen, t1, (t0, t1)).await;
    let (before, after) = (before.await.expect("stats"), after.await.expect("stats"));
    let ok = count(&after, "ok") - count(&before, "ok");
    let limited = count(&after, "rateLimited");
    let span = (t1 - t0).as_secs_f64();
    let external = s.external_share * f64::from(LIMIT) / WINDOW.as_secs_f64() * span;
    let allowed = f64::from(LIMIT) * span / WINDOW.as_secs_f64() - external;
    let (min, max) = (tally.served.iter().min().copied().unwrap_or(0), tally.served.iter().max().copied().unwrap_or(0));
    let (p50, p99) = (quantile(&mut tally.waits, 0.5), quantile(&mut tally.waits, 0.99));
    let row = format!(
        "| {:<22} | {:>11} | {:>5.1}% ({}/{:.0}) | {:>8.0?} | {:>8.0?} | {:>5.2} ({}/{}) |",
        s.name,
        limited,
        100.0 * ok as f64 / allowed,
        ok,
        allowed,
        p50,
        p99,
        min as f64 / max.max(1) as f64,
        min,
        max
    );
    (limited, row)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench` probes benches with --list
    }
    let scenarios = [
        Scenario { name: "fixed", kind: "fixed", skew_ms: 0, external_share: 0.0 },
        Scenario { name: "sliding", kind: "sliding", skew_ms: 0, external_share: 0.0 },
        Scenario { name: "skew +30s (fixed)", kind: "fixed", skew_ms: 30_000, external_share: 0.0 },
        Scenario { name: "skew -30s (fixed)", kind: "fixed", skew_ms: -30_000, external_share: 0.0 },
        Scenario { name: "external 30% (fixed)", kind: "fixed", skew_ms: 0, external_share: 0.3 },
        Scenario { name: "external 30% (sliding)", kind: "sliding", skew_ms: 0, external_share: 0.3 },
    ];
    let dir = std::env::temp_dir().join(format!("racknap-compliance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    println!(
        "limit {LIMIT} per {WINDOW:?}, load {LOAD}x from {CLIENTS} clients, {WINDOWS} windows measured after one of warm-up\n"
    );
    println!(
        "| scenario               | upstream 429s | budget used          | p50 wait | p99 wait | fairness min/max |"
    );
    println!(
        "|------------------------|-------------:|---------------------:|---------:|---------:|-----------------:|"
    );
    let mut total_429 = 0;
    for s in &scenarios {
        let (limited, row) = run(s, &dir).await;
        total_429 += limited;
        println!("{row}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    if total_429 > 0 {
        std::process::exit(1);
    }
}
