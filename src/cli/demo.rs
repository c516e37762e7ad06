//! `racknap-proxy demo`: the bundled mock and the proxy in one process, traffic at three times
//! the limit through the proxy for a few (short) windows, and a report.

use std::{collections::BTreeMap, net::SocketAddr, num::NonZeroU32, process::ExitCode, sync::Arc, time::Duration};

use bytes::Bytes;
use clap::Args;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tokio::time::Instant;

use crate::{
    app::App,
    config::Config,
    mock::{MockConfig, MockServer},
    secret::{KeySource, Secret},
    telemetry,
};

/// `demo` flags.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Requests per window, for the mock and the proxy.
    #[arg(long, default_value_t = 30)]
    pub limit: u32,
    /// The window, with a unit.
    #[arg(long, default_value = "2s", value_parser = super::parse_duration)]
    pub window: Duration,
    /// How many windows traffic is sent for.
    #[arg(long, default_value_t = 3)]
    pub windows: u32,
    /// Offered load as a multiple of the limit.
    #[arg(long, default_value_t = 3)]
    pub load: u32,
    /// Show the proxy's per-request log lines.
    #[arg(long)]
    pub verbose: bool,
}

type DemoClient = Client<HttpConnector, Full<Bytes>>;

#[derive(Default)]
struct Tally {
    by_status: BTreeMap<u16, u64>,
    cache_hits: u64,
    transport_errors: u64,
    latencies: Vec<Duration>,
}

/// Run the demo; exit code 0 only when no client saw a 429 and nothing failed.
pub async fn run(args: DemoArgs) -> ExitCode {
    telemetry::init(Default::default(), if args.verbose { "info" } else { "warn" });
    match drive(&args).await {
        Ok(ok) if ok => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("racknap-proxy demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn drive(args: &DemoArgs) -> Result<bool, Box<dyn std::error::Error>> {
    if args.limit == 0 || args.windows == 0 || args.window.is_zero() || args.load == 0 {
        return Err("--limit, --window, --windows and --load must be greater than zero".into());
    }
    let key = Secret::new(&format!("demo_{:016x}", rand::random::<u64>())).expect("non-empty");
    let mut mock_cfg = MockConfig::new(key.clone());
    mock_cfg.limit = args.limit;
    mock_cfg.window = args.window;
    let mock = MockServer::start(mock_cfg).await?;

    let mut cfg = Config::default();
    cfg.server.listen = ([127, 0, 0, 1], 0).into();
    cfg.server.admin_listen = ([127, 0, 0, 1], 0).into();
    cfg.upstream.url = mock.base_url();
    cfg.budget.limit = NonZeroU32::new(args.limit).expect("checked");
    cfg.budget.window = args.window;
    cfg.queue.max_wait = args.window * (args.windows * args.load + 2);
    cfg.validate()?;
    let app = App::start(&cfg, KeySource::Env(key)).await?;

    let total = u64::from(args.limit * args.windows * args.load);
    let gap = args.window / (args.limit * args.load);
    println!(
        "racknap-proxy demo: mock at {} allows {} requests per {}; sending {} requests at {}x the limit through the proxy at {}",
        mock.base_url(), args.limit, humantime::format_duration(args.window), total, args.load, app.proxy_addr
    );
    let client: DemoClient = Client::builder(TokioExecutor::new()).build_http();
    let tally = Arc::new(parking_lot::Mutex::new(Tally::default()));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        tokio::time::sleep_until(started + gap * i as u32).await;
        let (client, tally, addr) = (client.clone(), tally.clone(), app.proxy_addr);
        tasks.push(tokio::spawn(async move { one_request(&client, addr, i, &tally).await }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed();
    let stats = mock.stats();
    let ok = report(args, &tally.lock(), total, stats.requests, stats.rate_limited, elapsed);
    app.shutdown().await;
    mock.shutdown().await;
    Ok(ok)
}

/// A mix of what a billing integration does: customer lookups and invoice pages (cacheable,
/// repeated), single invoices, and new invoices (writes that invalidate the invoice listings).
fn request_for(i: u64) -> Request<Full<Bytes>> {
    let (method, path, body) = match i % 10 {
        0..=3 => (Method::GET, format!("/v1/customers?offset={}&limit=5", (i / 10 % 5) * 5), None),
        4..=6 => (Method::GET, format!("/v1/invoices?offset={}&limit=10", (i % 13) * 10), None),
        7 | 8 => (Method::GET, format!("/v1/invoices?limit=1&offset={}", i % 250), None),
        _ => (
            Method::POST,
            "/v1/invoices".to_string(),
            Some(
                r#"{"customerId":"CUSTOMER","items":[{"description":"Demo line","quantity":2,"unitPrice":12.5}],"dueDate":"2026-12-31"}"#,
            ),
        ),
    };
    let mut b = Request::builder().method(method).uri(path).header("x-client-id", format!("svc-{}", i % 3));
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    b.body(Full::new(Bytes::from(body.unwrap_or_default().to_owned()))).expect("valid request")
}

async fn one_request(client: &DemoClient, addr: SocketAddr, i: u64, tally: &parking_lot::Mutex<Tally>) {
    let mut req = request_for(i);
    if req.method() == Method::POST {
        // Create invoices for a real customer: ask (through the proxy) for the first one.
        let customer = first_customer(client, addr).await.unwrap_or_default();
        let body =
            String::from_utf8_lossy(&req.body().clone().collect().await.map(|c| c.to_bytes()).unwrap_or_default())
                .replace("CUSTOMER", &customer);
        *req.body_mut() = Full::new(Bytes::from(body));
    }
    let uri = format!("http://{addr}{}", req.uri()).parse().expect("valid uri");
    *req.uri_mut() = uri;
    let start = Instant::now();
    let result = client.request(req).await;
    let mut t = tally.lock();
    match result {
        Ok(resp) => {
            *t.by_status.entry(resp.status().as_u16()).or_default() += 1;
            if resp.headers().get("x-cache").is_some_and(|v| v == "HIT") {
                t.cache_hits += 1;
            }
            t.latencies.push(start.elapsed());
        }
        Err(_) => t.transport_errors += 1,
    }
}

async fn first_customer(client: &DemoClient, addr: SocketAddr) -> Option<String> {
    let uri = format!("http://{addr}/v1/customers?limit=1&offset=0");
    let resp = client.request(Request::get(uri).body(Full::new(Bytes::new())).ok()?).await.ok()?;
    let bytes = resp.into_body().collect().await.ok()?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["data"][0]["id"].as_str().map(str::to_owned)
}

fn report(args: &DemoArgs, t: &Tally, total: u64, upstream: u64, upstream_429: u64, elapsed: Duration) -> bool {
    let client_429 = t.by_status.get(&StatusCode::TOO_MANY_REQUESTS.as_u16()).copied().unwrap_or(0);
    let ok: u64 = t.by_status.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum();
    let mut lat = t.latencies.clone();
    lat.sort();
    let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or_default();
    let windows = elapsed.as_secs_f64() / args.window.as_secs_f64();
    let rate = upstream as f64 / windows;
    println!();
    println!("  requests sent            {total}");
    println!("  answered 2xx             {ok}");
    println!("  answers by status        {:?}", t.by_status);
    println!("  transport errors         {}", t.transport_errors);
    println!("  429s seen by clients     {client_429}");
    println!("  cache hits               {}", t.cache_hits);
    println!("  upstream calls           {upstream}");
    println!("  upstream 429s            {upstream_429}");
    println!("  elapsed                  {:.2}s ({windows:.1} windows)", elapsed.as_secs_f64());
    println!(
        "  upstream rate            {rate:.1} per window = {:.0}% of the limit ({})",
        100.0 * rate / f64::from(args.limit),
        args.limit
    );
    println!(
        "  client latency p50/p99   {:.0}ms / {:.0}ms",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
    let pass = client_429 == 0 && upstream_429 == 0 && t.transport_errors == 0 && ok == total;
    println!(
        "  result                   {}",
        if pass { "PASS: zero 429s, every request answered 2xx" } else { "FAIL" }
    );
    pass
}
