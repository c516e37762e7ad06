//! Added latency per request: the same GET sent straight to the bundled mock and through the
//! proxy (cache off, so every request goes upstream), sequentially over loopback.
//!
//! Run: `cargo bench --bench latency` (optionally `-- N` for the number of requests).
//! Prints medians, p99 and the ratio against the direct call.

use std::{net::SocketAddr, num::NonZeroU32, time::Duration};

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

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn timed(client: &HttpClient, base: &str, auth: Option<&str>, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut req = Request::get(format!("{base}/v1/customers?limit=1&offset={}", i % 2));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let start = Instant::now();
        let resp = client.request(req.body(Full::new(Bytes::new())).unwrap()).await.expect("request");
        resp.into_body().collect().await.expect("body");
        out.push(start.elapsed());
    }
    out
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(name: &str, mut v: Vec<Duration>) -> Duration {
    v.sort();
    let (p50, p99) = (pct(&v, 0.5), pct(&v, 0.99));
    println!("{name:<28} p50 {:>8.1} µs   p99 {:>8.1} µs", p50.as_secs_f64() * 1e6, p99.as_secs_f64() * 1e6);
    p50
}

async fn proxy_for(mock: &MockServer, key: &Secret, cache: bool) -> App {
    let mut cfg = Config::default();
    cfg.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.server.admin_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.upstream.url = mock.base_url();
    cfg.budget.limit = NonZeroU32::new(100_000_000).unwrap();
    cfg.cache.enabled = cache;
    cfg.validate().unwrap();
    App::start(&cfg, KeySource::Env(key.clone())).await.unwrap()
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5_000);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let key = Secret::new("sk_bench_0123456789abcdef").unwrap();
        let mut mcfg = MockConfig::new(key.clone());
        mcfg.limit = 100_000_000;
        let mock = MockServer::start(mcfg).await.unwrap();
        let miss = proxy_for(&mock, &key, false).await;
        let hit = proxy_for(&mock, &key, true).await;
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let bearer = format!("Bearer {}", key.expose());
        let direct_base = mock.base_url();
        let (miss_base, hit_base) = (format!("http://{}", miss.proxy_addr), format!("http://{}", hit.proxy_addr));
        // Warm up pools and the proxy's first-answer probe.
        timed(&client, &direct_base, Some(&bearer), 200).await;
        timed(&client, &miss_base, None, 200).await;
        timed(&client, &hit_base, None, 200).await;
        println!("{n} sequential GETs over loopback, one keep-alive connection each way");
        let direct = summary("direct to the mock", timed(&client, &direct_base, Some(&bearer), n).await);
        let proxied = summary("through the proxy (miss)", timed(&client, &miss_base, None, n).await);
        let cached = summary("through the proxy (hit)", timed(&client, &hit_base, None, n).await);
        println!(
            "added latency (p50)          {:>8.1} µs   ratio proxied/direct {:.2}   hit/direct {:.2}",
            (proxied.as_secs_f64() - direct.as_secs_f64()) * 1e6,
            proxied.as_secs_f64() / direct.as_secs_f64(),
            cached.as_secs_f64() / direct.as_secs_f64()
        );
        assert_eq!(mock.stats().rate_limited, 0);
    });
}
