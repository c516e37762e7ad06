//! Secret hygiene: the binary runs a whole scenario with every log at TRACE (hyper, h2,
//! rustls, ours) and the API keys and inbound tokens appear nowhere: not in logs, error bodies,
//! `/metrics`, `check` or `print-config` output.

use std::{process::Stdio, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client as HyperClient, rt::TokioExecutor};
use parking_lot::Mutex;
use racknap_proxy::mock::ForcedHeaders;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{self, client, KEY};

const WRONG_KEY: &str = "sk_test_revoked_5d1c8e7f2a";
const INLINE_TOKEN: &str = "tok_inline_a83f5e60b1";
const FILE_TOKEN: &str = "tok_hygiene_4b7e91c2d0";

fn bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_racknap-proxy"));
    c.env_remove("RACKNAP_API_KEY").env_remove("RACKNAP_PROXY_CONFIG").env("RUST_LOG", "trace");
    c
}

fn signal(pid: u32, sig: &str) {
    assert!(std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

#[tokio::test]
async fn no_secret_appears_anywhere_with_trace_logging() {
    let up = support::upstream(1000, Duration::from_secs(60)).await;
    let dir = std::env::temp_dir().join(format!("racknap-proxy-hygiene-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key_file, tokens_file, config) = (dir.join("key"), dir.join("tokens"), dir.join("proxy.toml"));
    std::fs::write(&key_file, KEY).unwrap();
    std::fs::write(&tokens_file, format!("svc:{FILE_TOKEN}\n")).unwrap();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nmax_request_body = \"1KiB\"\n\
         [upstream]\nurl = \"{}\"\n[key]\nfile = \"{}\"\n[retry]\nmax_attempts = 1\n\
         [auth]\ntokens = [\"inline:{INLINE_TOKEN}\"]\ntokens_file = \"{}\"\n[log]\nformat = \"json\"\nlevel = \"trace\"\n",
        up.base_url(),
        key_file.display(),
        tokens_file.display()
    );
    std::fs::write(&config, toml).unwrap();

    let mut child = tokio::process::Command::from(bin())
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (addrs_tx, addrs_rx) = tokio::sync::oneshot::channel();
    let reader = {
        let log = log.clone();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            let mut tx = Some(addrs_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("Proxy listening") {
                    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                    let addr = |k: &str| v[k].as_str().unwrap().parse::<std::net::SocketAddr>().unwrap();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send((addr("proxy_addr"), addr("admin_addr")));
                    }
                }
                log.lock().push_str(&line);
                log.lock().push('\n');
            }
        })
    };
    let (proxy, admin) = tokio::time::timeout(Duration::from_secs(30), addrs_rx).await.unwrap().unwrap();
    let mut seen = String::new();
    let c = client(proxy);
    let send = |m: Method, path: &str, token: Option<&str>, body: &'static [u8]| {
        let c = c.clone();
        let path = path.to_owned();
        let token = token.map(str::to_owned);
        async move {
            let h: Vec<(&str, &str)> = token.as_deref().map(|t| vec![("x-proxy-token", t)]).unwrap_or_default();
            c.send(m, &path, &h, Bytes::from_static(body)).await
        }
    };
    let ok = send(Method::GET, "/v1/customers", Some(INLINE_TOKEN), b"").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    seen += &ok.text();

    // HTTP/2 (h2c) too: h2's own trace logs see the token header.
    let h2 = HyperClient::builder(TokioExecutor::new()).http2_only(true).build_http::<Full<Bytes>>();
    let req = Request::get(format!("http://{proxy}/v1/customers?limit=2"))
        .header("x-proxy-token", FILE_TOKEN)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = h2.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    seen += &String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes());

    up.force_429(1, Duration::from_secs(1), ForcedHeaders::RateLimit);
    let limited = send(Method::GET, "/v1/invoices", Some(FILE_TOKEN), b"").await;
    assert_eq!(limited.status, 429);
    for (m, path, token, body, want) in [
        (Method::GET, "/v1/customers?limit=3", None, &b""[..], 401),
        (Method::GET, "/v1/customers?limit=3", Some("tok_guess"), b"", 401),
        (Method::GET, "/admin", Some(INLINE_TOKEN), b"", 403),
        (Method::POST, "/v1/invoices", Some(INLINE_TOKEN), &[b'x'; 2048][..], 413),
        (Method::POST, "/v1/invoices", Some(INLINE_TOKEN), b"{}", 400),
    ] {
        let a = send(m, path, token, body).await;
        assert_eq!(a.status, want, "{path}: {}", a.text());
        seen += &a.text();
    }

    // The upstream refuses the key: revoked key in the file, SIGHUP, 401 passed on with a log line.
    std::fs::write(&key_file, WRONG_KEY).unwrap();
    signal(pid, "-HUP");
    let mut got_401 = false;
    for i in 0..50 {
        let a = send(Method::GET, &format!("/v1/customers?offset={i}"), Some(INLINE_TOKEN), b"").await;
        seen += &a.text();
        if a.status == 401 {
            got_401 = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(got_401, "the revoked key never reached the upstream");
    std::fs::write(&key_file, KEY).unwrap();
    signal(pid, "-HUP");

    seen += &client(admin).get("/metrics").await.text();
    signal(pid, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.unwrap().unwrap();
    assert!(status.success());
    reader.await.unwrap();
    for cmd in ["check", "print-config"] {
        let out = bin().arg(cmd).arg("--config").arg(&config).output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        seen += &String::from_utf8_lossy(&out.stdout);
        seen += &String::from_utf8_lossy(&out.stderr);
    }
    let log = log.lock().clone();
    let traces = log.lines().filter(|l| l.contains("\"TRACE\"")).count();
    println!("{} log lines ({traces} at TRACE), {} bytes of other output", log.lines().count(), seen.len());
    assert!(traces > 100, "the scenario did not run at trace level");
    assert!(log.contains("Upstream refused the API key"), "a persistent 401 is logged clearly");
    assert!(seen.contains("inline:<redacted>"), "print-config shows tokens by name only");
    let everything = log + &seen;
    for secret in [KEY, WRONG_KEY, INLINE_TOKEN, FILE_TOKEN] {
        if let Some(at) = everything.find(secret) {
            let from = at.saturating_sub(300);
            panic!("{secret} leaked: …{}…", &everything[from..(at + secret.len() + 50).min(everything.len())]);
        }
    }
}
