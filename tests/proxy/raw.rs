//! A raw TCP client: request targets and framings exactly as written, which hyper's client
//! would normalise or refuse to send.

#![allow(dead_code)]

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Send `request` as is and read until the server closes (requests should say
/// `Connection: close`) or 10 s pass.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    read_to_close(&mut s).await
}

/// Everything until EOF (a reset counts as EOF), at most 10 s.
pub async fn read_to_close(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// Read one response (head and `Content-Length` body) from a kept-alive connection.
pub async fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n =
            tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte)).await.expect("head within 10s").unwrap();
        assert!(n > 0, "closed mid-head: {}", String::from_utf8_lossy(&buf));
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut body)).await.expect("body within 10s").unwrap();
    head + &String::from_utf8_lossy(&body)
}

/// The status code of the first response in `text`.
pub fn status(text: &str) -> Option<u16> {
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// The first value of header `name` in a response head.
pub fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.split("\r\n\r\n").next()?.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The `error.type` of an envelope body, if the response is one.
pub fn envelope_type(text: &str) -> Option<String> {
    let body = text.split_once("\r\n\r\n")?.1;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["error"]["type"].as_str().map(str::to_owned)
}
