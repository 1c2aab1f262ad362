//! The serving loop over TLS, with the test-only certificates of `testdata/tls` (see its README):
//! requests over https, the trust rules of `ClientTls`, key formats, the handshake deadline, the
//! connection cap and shutdown with stalled handshakes, no plaintext on a TLS listener, no
//! redirect out of https.

use axum::routing::get;
use axum::Router;
use cordon_http::client::ClientTls;
use cordon_http::{serve_with_tls, ServerLimits, ServerTls};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

fn tls_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/tls")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(tls_file(name)).unwrap()
}

fn server_tls() -> ServerTls {
    ServerTls::from_pem_files(&tls_file("server.pem"), &tls_file("server.key")).unwrap()
}

fn with_test_ca() -> ClientTls {
    ClientTls::with_extra_ca_pem(&read("ca.pem"), "test CA").unwrap()
}

fn limits() -> ServerLimits {
    ServerLimits {
        max_connections: 4,
        header_read_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(800),
        tls_handshake_timeout: Duration::from_millis(500),
        ..ServerLimits::default()
    }
}

struct Server {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<()>,
}

async fn start(tls: ServerTls, limits: ServerLimits) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = Router::new().route("/", get(|| async { "ok" })).route(
        "/downgrade",
        get(move || async move {
            axum::response::Redirect::temporary(&format!("http://127.0.0.1:{port}/"))
        }),
    );
    let (tx, rx) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(async move {
        serve_with_tls(listener, router, limits, Some(tls), async {
            let _ = rx.await;
        })
        .await
        .unwrap()
    });
    Server {
        port,
        stop: Some(tx),
        handle,
    }
}

async fn get_text(client: &ClientTls, url: &str) -> Result<String, String> {
    let http = client.client(Duration::from_secs(5)).unwrap();
    let resp = http.get(url).send().await.map_err(error_chain)?;
    resp.text().await.map_err(error_chain)
}

fn error_chain(e: reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_test_ca_by_ip_and_by_name() {
    let s = start(server_tls(), limits()).await;
    let ca = with_test_ca();
    assert_eq!(
        get_text(&ca, &format!("https://127.0.0.1:{}/", s.port))
            .await
            .unwrap(),
        "ok"
    );
    assert_eq!(
        get_text(&ca, &format!("https://localhost:{}/", s.port))
            .await
            .unwrap(),
        "ok"
    );
    // Pinned to the test CA alone, too.
    let only = ClientTls::only_ca_pem(&read("ca.pem"), "test CA").unwrap();
    assert!(!only.trusts_web_pki());
    assert_eq!(
        get_text(&only, &format!("https://127.0.0.1:{}/", s.port))
            .await
            .unwrap(),
        "ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_pki_alone_refuses_the_test_ca() {
    let s = start(server_tls(), limits()).await;
    let err = get_text(
        &ClientTls::default(),
        &format!("https://127.0.0.1:{}/", s.port),
    )
    .await
    .unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_is_refused() {
    // Signed by the trusted CA, but for other.invalid only.
    let tls = ServerTls::from_pem_files(&tls_file("other.pem"), &tls_file("other.key")).unwrap();
    let s = start(tls, limits()).await;
    let err = get_text(&with_test_ca(), &format!("https://127.0.0.1:{}/", s.port))
        .await
        .unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_a_tls_listener_gets_no_answer() {
    let s = start(server_tls(), limits()).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let r = http
        .get(format!("http://127.0.0.1:{}/", s.port))
        .send()
        .await;
    assert!(r.is_err(), "plaintext request answered: {r:?}");
    // Refused by the listener, not merely unanswered by a dead one: https still works.
    assert_eq!(
        get_text(&with_test_ca(), &format!("https://127.0.0.1:{}/", s.port))
            .await
            .unwrap(),
        "ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_out_of_https_is_refused() {
    let s = start(server_tls(), limits()).await;
    let err = get_text(
        &with_test_ca(),
        &format!("https://127.0.0.1:{}/downgrade", s.port),
    )
    .await
    .unwrap_err();
    assert!(err.contains("refusing a redirect from https://"), "{err}");
}

#[test]
fn key_formats_and_mismatches() {
    let cert = read("server.pem");
    // PKCS#8, SEC1 and PKCS#1 (RSA) keys.
    ServerTls::from_pem(&cert, &read("server.key")).unwrap();
    ServerTls::from_pem(&cert, &read("server-sec1.key")).unwrap();
    ServerTls::from_pem(&read("other.pem"), &read("other.key")).unwrap();
    // A key that is not the certificate's.
    let err = ServerTls::from_pem(&cert, &read("other.key")).unwrap_err();
    assert!(
        err.to_string().contains("TLS certificate with TLS key"),
        "{err}"
    );
    // No key, no certificate.
    let err = ServerTls::from_pem(&cert, &cert).unwrap_err();
    assert!(err.to_string().contains("no private key"), "{err}");
    let err = ServerTls::from_pem(&read("server.key"), &read("server.key")).unwrap_err();
    assert!(err.to_string().contains("no PEM CERTIFICATE"), "{err}");
    // A CA file must hold a certificate.
    assert!(ClientTls::with_extra_ca_pem(b"", "empty").is_err());
    assert!(ClientTls::with_extra_ca_pem(&read("server.key"), "a key").is_err());
    let err =
        ServerTls::from_pem_files(&tls_file("missing.pem"), &tls_file("server.key")).unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
    // Debug output never shows the key.
    assert_eq!(
        format!(
            "{:?}",
            ServerTls::from_pem(&cert, &read("server.key")).unwrap()
        ),
        "ServerTls { .. }"
    );
}

/// Whether the server closed `s` (read returns 0 or an error) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
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
async fn stalled_handshakes_are_cut_off_and_do_not_starve_others() {
    // A handshake deadline well above the time a closed connection takes to show, so that "closed
    // at once (over the cap)" and "closed by the deadline" cannot be confused on a slow machine.
    let mut slow = limits();
    slow.tls_handshake_timeout = Duration::from_secs(3);
    let s = start(server_tls(), slow).await;
    let port = s.port;
    // Fill every slot with clients that never finish (or never start) their handshake.
    let mut stalled = tokio::task::spawn_blocking(move || {
        (0..4)
            .map(|i| {
                let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
                if i % 2 == 0 {
                    // The first bytes of a TLS record header, then nothing.
                    c.write_all(&[0x16, 0x03, 0x01]).unwrap();
                }
                c
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    // The cap is reached: a fifth connection is closed at once (well before the 3 s deadline
    // would close it). No wait is needed for the four to be counted: the server takes a
    // connection's slot as it accepts it, and accepts in the order the connections were made.
    let refused = tokio::task::spawn_blocking(move || {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        closed_within(&mut c, Duration::from_secs(1))
    })
    .await
    .unwrap();
    assert!(refused, "connection over the cap was not closed");
    // The handshake deadline (3 s) closes the stalled ones...
    let closed = tokio::task::spawn_blocking(move || {
        stalled
            .iter_mut()
            .all(|c| closed_within(c, Duration::from_secs(10)))
    })
    .await
    .unwrap();
    assert!(closed, "a stalled handshake held its connection");
    // ... and the server answers again.
    assert_eq!(
        get_text(&with_test_ca(), &format!("https://127.0.0.1:{port}/"))
            .await
            .unwrap(),
        "ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_stalled_handshake() {
    let mut long = limits();
    long.tls_handshake_timeout = Duration::from_secs(60);
    let mut s = start(server_tls(), long).await;
    let port = s.port;
    let _stalled = tokio::task::spawn_blocking(move || {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(&[0x16, 0x03, 0x01]).unwrap();
        c
    })
    .await
    .unwrap();
    // A request on another connection, made after it, completes: the server accepts in order,
    // so the stalled connection was accepted (and is in its handshake) before the stop signal.
    assert_eq!(
        get_text(&with_test_ca(), &format!("https://127.0.0.1:{port}/"))
            .await
            .unwrap(),
        "ok"
    );
    s.stop.take().unwrap().send(()).unwrap();
    // Bounded far below the 60 s handshake deadline.
    tokio::time::timeout(Duration::from_secs(5), &mut s.handle)
        .await
        .expect("shutdown waited for a stalled handshake")
        .unwrap();
}
