//! Load generator for `scripts/soak.sh`: open-loop mixed traffic at a fixed rate to a proxy on
//! loopback, for a bounded time and with a bounded number of requests in flight, then a JSON
//! report of what the clients saw (statuses, proxy error types, transport errors, latencies).
//!
//! `cargo run --release --example soak_load -- --proxy 127.0.0.1:8080 --rate 33 --duration 600s`

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use clap::Parser;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use parking_lot::Mutex;
use tokio::{sync::Semaphore, time::Instant};

/// Mixed load at a fixed rate.
#[derive(Debug, Parser)]
struct Args {
    /// The proxy's address (loopback only).
    #[arg(long)]
    proxy: SocketAddr,
    /// Requests per second offered.
    #[arg(long, default_value_t = 33.0)]
    rate: f64,
    /// How long to send, with a unit.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Most requests in flight; beyond, a request is not sent and counted as `skipped`.
    #[arg(long, default_value_t = 2000)]
    max_in_flight: usize,
    /// Client-side timeout of one request, with a unit.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

#[derive(Default)]
struct Tally {
    sent: u64,
    skipped: u64,
    by_status: BTreeMap<u16, u64>,
    /// Proxy-made errors by `error.type`, the upstream's own by `upstream:<type>`, answers to
    /// HEAD (no body) by `bodiless:<status>`, and transport failures by `transport:<kind>`.
    errors: BTreeMap<String, u64>,
    latencies_ms: Vec<u64>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    assert!(args.proxy.ip().is_loopback(), "the soak only sends to loopback");
    assert!(args.rate > 0.0 && args.rate <= 10_000.0, "--rate must be in (0, 10000]");
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let customer = first_customer(&client, args.proxy).await.unwrap_or_else(|| "cust_unknown".into());
    let tally = Arc::new(Mutex::new(Tally::default()));
    let slots = Arc::new(Semaphore::new(args.max_in_flight));
    let gap = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now();
    let mut i: u64 = 0;
    while start.elapsed() < args.duration {
        tokio::time::sleep_until(start + gap.mul_f64(i as f64)).await;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tally.lock().skipped += 1;
            i += 1;
            continue;
        };
        let (client, tally, customer) = (client.clone(), tally.clone(), customer.clone());
        let (addr, timeout) = (args.proxy, args.timeout);
        tokio::spawn(async move {
            one(&client, addr, i, &customer, timeout, &tally).await;
            drop(slot);
        });
        i += 1;
    }
    // Wait for the stragglers (each is bounded by --timeout).
    let _ = slots.acquire_many(u32::try_from(args.max_in_flight).unwrap_or(u32::MAX)).await;
    report(&tally.lock(), start.elapsed());
}

/// The mix: lists (cacheable, repeating), single resources, HEAD, creates, deletes of unknown ids.
fn request_for(i: u64, addr: SocketAddr, customer: &str) -> Request<Full<Bytes>> {
    let (method, path, body) = match i % 20 {
        0..=7 => (Method::GET, format!("/v1/customers?offset={}&limit=5", (i / 20 % 10) * 5), None),
        8..=11 => (Method::GET, format!("/v1/invoices?offset={}&limit=10", i % 37), None),
        12 | 13 => (Method::GET, format!("/v1/invoices?limit=1&offset={}", i % 500), None),
        14 => (Method::HEAD, "/v1/customers?limit=1".to_string(), None),
        15 => (Method::DELETE, format!("/v1/invoices/inv_soak{i:x}"), None),
        16 => (Method::GET, format!("/v1/customers/cust_soak{}", i % 50), None),
        _ => (
            Method::POST,
            "/v1/invoices".to_string(),
            Some(format!(
                r#"{{"customerId":"{customer}","items":[{{"description":"Soak","quantity":1,"unitPrice":1.5}}],"dueDate":"2026-12-31"}}"#
            )),
        ),
    };
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("x-client-id", format!("svc-{}", i % 4));
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    b.body(Full::new(Bytes::from(body.unwrap_or_default()))).expect("valid request")
}

async fn one(client: &HttpClient, addr: SocketAddr, i: u64, customer: &str, timeout: Duration, tally: &Mutex<Tally>) {
    let req = request_for(i, addr, customer);
    let start = Instant::now();
    let result = tokio::time::timeout(timeout, async {
        let resp = client.request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, body))
    })
    .await;
    let mut t = tally.lock();
    t.sent += 1;
    match result {
        Ok(Ok((status, body))) => {
            *t.by_status.entry(status).or_default() += 1;
            t.latencies_ms.push(start.elapsed().as_millis() as u64);
            if status >= 400 {
                let kind = if body.is_empty() { format!("bodiless:{status}") } else { error_type(&body) };
                *t.errors.entry(kind).or_default() += 1;
            }
        }
        Ok(Err(e)) => *t.errors.entry(format!("transport:{}", transport_kind(e.as_ref()))).or_default() += 1,
        Err(_) => *t.errors.entry("transport:client_timeout".into()).or_default() += 1,
    }
}

/// `proxy_*` types as they are; the upstream's own errors prefixed `upstream:`.
fn error_type(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    match v["error"]["type"].as_str() {
        Some(t) if t.starts_with("proxy_") => t.to_string(),
        Some(t) => format!("upstream:{t}"),
        None => "unparsed".to_string(),
    }
}

fn transport_kind(e: &(dyn std::error::Error + 'static)) -> &'static str {
    match e.downcast_ref::<hyper_util::client::legacy::Error>() {
        Some(e) if e.is_connect() => "connect",
        Some(_) => "connection_closed",
        None => "body",
    }
}

async fn first_customer(client: &HttpClient, addr: SocketAddr) -> Option<String> {
    for _ in 0..20 {
        let uri = format!("http://{addr}/v1/customers?limit=1&offset=0");
        if let Ok(resp) = client.request(Request::get(uri).body(Full::new(Bytes::new())).ok()?).await {
            let bytes = resp.into_body().collect().await.ok()?.to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
            if let Some(id) = v["data"][0]["id"].as_str() {
                return Some(id.to_owned());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

fn report(t: &Tally, elapsed: Duration) {
    let mut lat = t.latencies_ms.clone();
    lat.sort_unstable();
    let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0);
    let out = serde_json::json!({
        "elapsed_s": elapsed.as_secs(),
        "sent": t.sent,
        "skipped": t.skipped,
        "by_status": t.by_status,
        "errors": t.errors,
        "latency_ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": lat.last().copied().unwrap_or(0)},
    });
    println!("{out}");
}
