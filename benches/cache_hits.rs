//! Cache hits through the proxy versus the same GET sent straight to the bundled mock.
//!
//! `cargo bench --bench cache_hits`: loopback only, about 20 s. For each concurrency (1 and
//! 32 keep-alive connections) it runs a fixed time against the proxy (every answer must be
//! `X-Cache: HIT`) and then against the mock, and prints requests/s, p50 and p99 and the
//! ratios. The mock's own counter proves the hits never reached it.

use std::{num::NonZeroU32, time::Duration};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use racknap_proxy::{
    mock::{MockConfig, MockServer},
    secret::{KeySource, Secret},
    App, Config,
};
use tokio::time::Instant;

const KEY: &str = "sk_bench_4f9c2a7e1b3d5f60a8c4e2d1b7f3a9c5";
const PATH: &str = "/v1/customers?limit=10";
const RUN: Duration = Duration::from_secs(4);

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Figures {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let key = Secret::new(KEY).expect("key");
    let mut mock = MockConfig::new(key.clone());
    mock.limit = 100_000_000;
    let up = MockServer::start(mock).await.expect("mock starts");
    let mut cfg = Config::default();
    cfg.server.listen = ([127, 0, 0, 1], 0).into();
    cfg.server.admin_listen = ([127, 0, 0, 1], 0).into();
    cfg.upstream.url = up.base_url();
    cfg.budget.limit = NonZeroU32::new(100_000_000).expect("non-zero");
    cfg.cache.ttl = Duration::from_secs(600);
    let app = App::start(&cfg, KeySource::Env(key)).await.expect("proxy starts");
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let proxy_url = format!("http://{}{PATH}", app.proxy_addr);
    let direct_url = format!("{}{PATH}", up.base_url());
    once(&client, &proxy_url, false).await; // the one miss
    let mut reached = 0;
    println!("cache hits through racknap-proxy vs direct GET {PATH} to the bundled mock (loopback, {RUN:?} each)");
    println!("{:>11} {:>8} {:>12} {:>10} {:>10}", "concurrency", "target", "requests/s", "p50", "p99");
    for concurrency in [1, 32] {
        let before = up.stats().requests;
        let proxy = measure(&client, &proxy_url, true, concurrency).await;
        reached += up.stats().requests - before;
        let direct = measure(&client, &direct_url, false, concurrency).await;
        for (name, f) in [("proxy", &proxy), ("direct", &direct)] {
            println!("{concurrency:>11} {name:>8} {:>12.0} {:>10.1?} {:>10.1?}", f.per_sec, f.p50, f.p99);
        }
        println!(
            "{concurrency:>11} {:>8} {:>11.2}x {:>9.2}x {:>9.2}x   (proxy hit / direct)",
            "ratio",
            proxy.per_sec / direct.per_sec,
            proxy.p50.as_secs_f64() / direct.p50.as_secs_f64(),
            proxy.p99.as_secs_f64() / direct.p99.as_secs_f64()
        );
    }
    println!("requests that reached the mock during the proxy runs: {reached}");
    assert_eq!(reached, 0, "every proxied request was a hit");
    app.shutdown().await;
}

/// `concurrency` loops for [`RUN`]; every latency recorded.
async fn measure(client: &HttpClient, url: &str, expect_hit: bool, concurrency: usize) -> Figures {
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_owned());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while start.elapsed() < RUN {
                    let t = Instant::now();
                    once(&client, &url, expect_hit).await;
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("load task"));
    }
    let elapsed = start.elapsed();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Figures { per_sec: all.len() as f64 / elapsed.as_secs_f64(), p50: pct(0.50), p99: pct(0.99) }
}

async fn once(client: &HttpClient, url: &str, expect_hit: bool) {
    let req =
        Request::get(url).header("authorization", format!("Bearer {KEY}")).body(Full::default()).expect("request");
    let resp = client.request(req).await.expect("answer");
    assert_eq!(resp.status(), 200);
    if expect_hit {
        assert_eq!(resp.headers().get("x-cache").map(|v| v.as_bytes()), Some(&b"HIT"[..]), "a cache hit");
    }
    resp.into_body().collect().await.expect("body");
}
