//! Slow and excess clients cannot hold the server: over loopback, with short limits.

use axum::routing::{get, post};
use axum::Router;
use cordon_http::{serve, ServerLimits};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

async fn start(
    limits: ServerLimits,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let router = Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        )
        .route(
            "/echo",
            post(|body: axum::body::Bytes| async move { body.len().to_string() }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(async move {
        serve(listener, router, limits, async {
            let _ = rx.await;
        })
        .await
        .unwrap()
    });
    (addr, tx, handle)
}

fn limits() -> ServerLimits {
    ServerLimits {
        max_connections: 8,
        header_read_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(800),
        nodelay: true,
        ..ServerLimits::default()
    }
}

/// Whether the server closed `s` (read returns 0 or an error) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a response (e.g. 408) before the close
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_and_do_not_starve_others() {
    let (addr, _stop, _h) = start(limits()).await;
    let a = addr.clone();
    tokio::task::spawn_blocking(move || {
        // Fill every connection slot with clients that never finish their headers.
        let mut slow: Vec<TcpStream> = (0..8)
            .map(|_| {
                let mut s = TcpStream::connect(&a).unwrap();
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
                s
            })
            .collect();
        // Excess connections are closed at once, not queued.
        let mut extra = TcpStream::connect(&a).unwrap();
        extra
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert!(closed_within(&mut extra, Duration::from_secs(2)));
        // The slow ones are closed once the header deadline passes...
        let start = Instant::now();
        for s in &mut slow {
            assert!(
                closed_within(s, Duration::from_secs(5)),
                "a slow client was not cut off"
            );
        }
        assert!(start.elapsed() < Duration::from_secs(5));
    })
    .await
    .unwrap();
    // ...and a normal client is served again.
    let body = reqwest::get(format!("http://{addr}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_too_slowly_gets_408() {
    let (addr, _stop, _h) = start(limits()).await;
    let response = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
            .unwrap();
        // Trickle a few bytes, far slower than the request deadline allows.
        for _ in 0..3 {
            let _ = s.write_all(b"a");
            std::thread::sleep(Duration::from_millis(400));
        }
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_open_requests_finish() {
    let (addr, stop, handle) = start(limits()).await;
    let slow = tokio::spawn(reqwest::get(format!("http://{addr}/slow")));
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    let resp = slow.await.unwrap().unwrap();
    assert_eq!(resp.text().await.unwrap(), "done");
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .unwrap()
        .unwrap();
    // No longer accepting.
    assert!(reqwest::get(format!("http://{addr}/")).await.is_err());
}
