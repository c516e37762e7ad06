//! Downstream HTTP/2 with prior knowledge (h2c) on the same port as HTTP/1.1.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::{self, KEY};

#[tokio::test]
async fn h2c_clients_are_served_and_multiplexed() {
    let up = support::upstream(100, Duration::from_secs(60)).await;
    let app = support::proxy(&support::config(&up, 100, Duration::from_secs(60))).await;
    let tcp = tokio::net::TcpStream::connect(app.proxy_addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("h2c handshake");
    tokio::spawn(conn);
    let calls = (0..5).map(|i| {
        let mut sender = sender.clone();
        async move {
            let req = Request::get(format!("http://{}/v1/invoices?limit=1&offset={i}", app.proxy_addr))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = sender.send_request(req).await.expect("h2 response");
            assert_eq!(resp.version(), http::Version::HTTP_2);
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        }
    });
    for (status, body) in futures_util::future::join_all(calls).await {
        assert_eq!(status, 200, "{body:?}");
        assert!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["success"] == true);
    }
    let seen = up.requests();
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|r| r.headers.get("authorization").unwrap() == format!("Bearer {KEY}").as_str()));
}
