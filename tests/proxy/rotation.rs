//! Key rotation: the key file is re-read (on change, on SIGHUP via `KeyStore::reload`, and on
//! a 401 from the upstream), the next request uses the new key, and no request is dropped.

use std::{path::PathBuf, time::Duration};

use racknap_proxy::{secret::KeySource, App};

use crate::support::{self, client, metric};

const OLD: &str = "sk_test_old_0e4d7c1a9b2f";
const NEW: &str = support::KEY; // the mock accepts only this one

fn key_file(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("racknap-proxy-rot-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("api-key");
    std::fs::write(&path, content).unwrap();
    path
}

async fn start(up: &racknap_proxy::mock::MockServer, key: &std::path::Path) -> App {
    let mut cfg = support::config(up, 1000, Duration::from_secs(60));
    cfg.cache.enabled = false;
    App::start(&cfg, KeySource::File(key.to_owned())).await.unwrap()
}

#[tokio::test]
async fn a_401_rereads_the_key_file_and_replays_once_with_the_new_key() {
    let up = support::upstream(1000, Duration::from_secs(60)).await;
    let file = key_file("replay", OLD);
    let app = start(&up, &file).await;
    std::fs::write(&file, format!("{NEW}\n")).unwrap(); // rotated; the 1 s watcher has not run yet
    let a = client(app.proxy_addr).get("/v1/customers").await;
    assert_eq!(a.status, 200, "{}", a.text());
    let auth: Vec<_> = up.requests().iter().map(|r| r.headers["authorization"].to_str().unwrap().to_owned()).collect();
    assert_eq!(auth, [format!("Bearer {OLD}"), format!("Bearer {NEW}")], "one 401, one replay with the new key");
    assert_eq!(metric(&app, "racknap_proxy_retries_total{reason=\"401_key_rotated\"}").await, 1.0);
    let b = client(app.proxy_addr).get("/v1/customers?limit=1").await;
    assert_eq!(b.status, 200);
    assert_eq!(up.requests().len(), 3, "the next request used the new key straight away");
}

#[tokio::test]
async fn a_persistent_401_is_passed_on_without_a_replay() {
    let up = support::upstream(1000, Duration::from_secs(60)).await;
    let file = key_file("persistent", OLD);
    let app = start(&up, &file).await;
    let a = client(app.proxy_addr).get("/v1/customers").await;
    assert_eq!(a.status, 401);
    assert_eq!(a.json()["error"]["type"], "unauthorized", "the upstream's own envelope");
    assert_eq!(up.requests().len(), 1, "the key did not change: no replay");
    assert!(!a.text().contains(OLD));
}

#[tokio::test]
async fn requests_in_flight_during_a_rotation_all_succeed() {
    let up = support::upstream_with(1000, Duration::from_secs(60), |m| m.latency = Duration::from_millis(50)).await;
    let file = key_file("inflight", OLD);
    let app = start(&up, &file).await;
    let c = client(app.proxy_addr);
    let mut tasks = Vec::new();
    for i in 0..30 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move { c.get(&format!("/v1/customers?limit={}", i % 5 + 1)).await.status }));
        if i == 10 {
            std::fs::write(&file, NEW).unwrap();
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200, "a request was dropped by the rotation");
    }
}

#[tokio::test]
async fn the_watcher_and_sighup_reload_pick_up_a_changed_file() {
    let up = support::upstream(1000, Duration::from_secs(60)).await;
    let file = key_file("watch", OLD);
    let app = start(&up, &file).await;
    std::fs::write(&file, NEW).unwrap();
    let picked = tokio::time::timeout(Duration::from_secs(10), async {
        while app.keys.current().expose() != NEW {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(picked.is_ok(), "the file watcher never loaded the new key");
    std::fs::write(&file, OLD).unwrap();
    app.keys.reload().unwrap(); // what SIGHUP does (the watcher may have been first: no `changed` check)
    assert_eq!(app.keys.current().expose(), OLD);
}
