//! A hostile host on loopback: an HTTP/1.1 reverse proxy that sits between two Cordon parties,
//! records every byte it carries, can flip one byte of a chosen message in flight, and can send
//! any recorded request again; plus a scanner that looks for secrets in what it recorded, in
//! every encoding a leak could take.
//!
//! Plain threads and blocking sockets (no async runtime): the relay runs beside `cordon`
//! processes that the tests drive with blocking calls, so nothing can deadlock on a shared
//! executor. It speaks just enough HTTP/1.1 for Cordon's clients and servers: `Content-Length`
//! and chunked bodies, keep-alive towards the client, one fresh connection (`Connection: close`)
//! per request towards the upstream.
// Each test binary uses a different subset.
#![allow(dead_code)]

use base64::Engine as _;
use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the relay carried and the answer it got.
#[derive(Clone, Debug, Default)]
pub struct Exchange {
    /// Which leg (relay) carried it, e.g. `runtime→kbs`.
    pub leg: String,
    /// Position on its leg, from 0.
    pub seq: usize,
    /// The upstream's base URL (`http://host:port`), where [`replay`] sends it.
    pub upstream: String,
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub req_headers: Vec<(String, String)>,
    /// The body as the client sent it (before any tampering), de-chunked.
    pub req_body: Vec<u8>,
    /// Every byte the client sent for this request: request line, headers, body as framed.
    pub req_raw: Vec<u8>,
    /// 502 when the upstream could not be reached.
    pub status: u16,
    pub resp_headers: Vec<(String, String)>,
    /// The body as the upstream sent it (before any tampering), de-chunked.
    pub resp_body: Vec<u8>,
    /// Every byte the upstream sent: status line, headers, body as framed.
    pub resp_raw: Vec<u8>,
    /// What was flipped in flight, if anything.
    pub tampered: Option<String>,
}

impl Exchange {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn req_header(&self, name: &str) -> Option<&str> {
        header(&self.req_headers, name)
    }

    /// `leg #seq METHOD target -> status`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} #{} {} {} -> {}",
            self.leg, self.seq, self.method, self.target, self.status
        )
    }
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Which half of an exchange a tamper rule changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Request,
    Response,
}

/// Where in a message to flip a byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pos {
    /// The first byte of the body.
    First,
    /// The byte in the middle of the body.
    Middle,
    /// The last byte of the body.
    Last,
    /// The middle byte of the value of a JSON string field `"name":"…"` of the body.
    Field(String),
    /// The last character of a header's value.
    Header(String),
}

/// Flip one byte of the `nth` message (counted from 0 among those matching since the rule was
/// set; `None`: every one) whose method is `method` and whose path starts with `path`.
#[derive(Clone, Debug)]
pub struct Tamper {
    pub method: String,
    pub path: String,
    pub nth: Option<usize>,
    pub dir: Dir,
    pub pos: Pos,
}

impl Tamper {
    pub fn new(method: &str, path: &str, dir: Dir, pos: Pos) -> Tamper {
        Tamper {
            method: method.into(),
            path: path.into(),
            nth: Some(0),
            dir,
            pos,
        }
    }

    pub fn every(mut self) -> Tamper {
        self.nth = None;
        self
    }
}

/// Changes one byte to another: a digit to the next digit, a letter to the next letter of its
/// run (`a`-`f`, `g`-`z` and the same in upper case, so hex stays hex and base64 stays base64),
/// anything else by its lowest bit. The result always differs.
pub fn flip_byte(b: u8) -> u8 {
    fn rot(b: u8, lo: u8, hi: u8) -> u8 {
        if b == hi {
            lo
        } else {
            b + 1
        }
    }
    match b {
        b'0'..=b'9' => rot(b, b'0', b'9'),
        b'a'..=b'f' => rot(b, b'a', b'f'),
        b'g'..=b'z' => rot(b, b'g', b'z'),
        b'A'..=b'F' => rot(b, b'A', b'F'),
        b'G'..=b'Z' => rot(b, b'G', b'Z'),
        _ => b ^ 1,
    }
}

/// Flips the byte of `body` at `pos` (one of the body positions); what was done, or None when
/// the body has no such byte.
pub fn flip_body(body: &mut [u8], pos: &Pos) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    let i = match pos {
        Pos::First => 0,
        Pos::Middle => body.len() / 2,
        Pos::Last => body.len() - 1,
        Pos::Field(name) => {
            let key = format!("\"{name}\":\"");
            let start = find(body, key.as_bytes())? + key.len();
            let len = body[start..].iter().position(|&b| b == b'"')?;
            if len == 0 {
                return None;
            }
            start + len / 2
        }
        Pos::Header(_) => return None,
    };
    let old = body[i];
    body[i] = flip_byte(old);
    Some(format!(
        "body byte {i} of {} ({pos:?}): {:?} -> {:?}",
        body.len(),
        old as char,
        body[i] as char
    ))
}

/// Flips the last character of header `name`; what was done, or None without that header.
pub fn flip_header(headers: &mut [(String, String)], name: &str) -> Option<String> {
    let (_, v) = headers
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))?;
    let mut bytes = v.clone().into_bytes();
    let last = bytes.last_mut()?;
    let old = *last;
    *last = flip_byte(old);
    let new = String::from_utf8(bytes).ok()?;
    let what = format!("header {name}: {v} -> {new}");
    *v = new;
    Some(what)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

struct Shared {
    leg: String,
    upstream: String,
    captured: Mutex<Vec<Exchange>>,
    /// The rule and how many messages matched it so far.
    tamper: Mutex<Option<(Tamper, usize)>>,
    stop: AtomicBool,
}

/// A relay listening on loopback, forwarding to one upstream. Stops accepting when dropped.
pub struct Relay {
    /// `http://127.0.0.1:PORT`: give this to the client instead of the upstream's URL.
    pub url: String,
    shared: Arc<Shared>,
}

impl Relay {
    /// Starts a relay named `leg` in front of `upstream` (`http://host:port`).
    pub fn start(leg: &str, upstream: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay: bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            leg: leg.to_string(),
            upstream: upstream.trim_end_matches('/').to_string(),
            captured: Mutex::new(Vec::new()),
            tamper: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = serve_connection(&s, conn);
                });
            }
        });
        Relay { url, shared }
    }

    pub fn leg(&self) -> &str {
        &self.shared.leg
    }

    pub fn upstream(&self) -> &str {
        &self.shared.upstream
    }

    /// Sets (or, with None, clears) the tamper rule; its match count starts from 0.
    pub fn set_tamper(&self, t: Option<Tamper>) {
        *self.shared.tamper.lock().unwrap() = t.map(|t| (t, 0));
    }

    /// Everything carried so far.
    pub fn captured(&self) -> Vec<Exchange> {
        self.shared.captured.lock().unwrap().clone()
    }

    /// How many exchanges were carried so far.
    pub fn count(&self) -> usize {
        self.shared.captured.lock().unwrap().len()
    }

    /// The exchanges from index `from` on.
    pub fn since(&self, from: usize) -> Vec<Exchange> {
        self.shared.captured.lock().unwrap()[from..].to_vec()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

/// Whether the tamper rule takes this message; counts the match.
fn take_tamper(s: &Shared, method: &str, path: &str, dir: Dir) -> Option<Pos> {
    let mut guard = s.tamper.lock().unwrap();
    let (t, seen) = guard.as_mut()?;
    if t.dir != dir || !t.method.eq_ignore_ascii_case(method) || !path.starts_with(&t.path) {
        return None;
    }
    let n = *seen;
    *seen += 1;
    match t.nth {
        Some(k) if k != n => None,
        _ => Some(t.pos.clone()),
    }
}

fn serve_connection(s: &Shared, conn: TcpStream) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    loop {
        let Some(msg) = read_message(&mut reader, None)? else {
            return Ok(());
        };
        let (method, target) = {
            let mut parts = msg.start.splitn(3, ' ');
            let m = parts.next().unwrap_or("").to_string();
            let t = parts.next().unwrap_or("").to_string();
            (m, t)
        };
        let path = target.split('?').next().unwrap_or("").to_string();
        let close = header(&msg.headers, "connection")
            .map(|v| v.eq_ignore_ascii_case("close"))
            .unwrap_or(false);

        let mut tampered = Vec::new();
        let mut fwd_headers = msg.headers.clone();
        let mut fwd_body = msg.body.clone();
        if let Some(pos) = take_tamper(s, &method, &path, Dir::Request) {
            let what = match &pos {
                Pos::Header(name) => flip_header(&mut fwd_headers, name),
                other => flip_body(&mut fwd_body, other),
            };
            tampered.push(format!(
                "request {}",
                what.unwrap_or_else(|| format!("{pos:?}: nothing to flip"))
            ));
        }

        let upstream = send_raw(&s.upstream, &method, &target, &fwd_headers, &fwd_body);
        let (status, resp_headers, resp_body, resp_raw) = match upstream {
            Ok(r) => (r.status, r.headers, r.body, r.raw),
            Err(e) => {
                let body = format!("{{\"error\":\"relay: upstream: {e}\"}}").into_bytes();
                (502, vec![], body, vec![])
            }
        };
        let mut out_headers = resp_headers.clone();
        let mut out_body = resp_body.clone();
        if let Some(pos) = take_tamper(s, &method, &path, Dir::Response) {
            let what = match &pos {
                Pos::Header(name) => flip_header(&mut out_headers, name),
                other => flip_body(&mut out_body, other),
            };
            tampered.push(format!(
                "response {}",
                what.unwrap_or_else(|| format!("{pos:?}: nothing to flip"))
            ));
        }

        {
            let mut captured = s.captured.lock().unwrap();
            let seq = captured.len();
            captured.push(Exchange {
                leg: s.leg.clone(),
                seq,
                upstream: s.upstream.clone(),
                method: method.clone(),
                target: target.clone(),
                req_headers: msg.headers,
                req_body: msg.body,
                req_raw: msg.raw,
                status,
                resp_headers,
                resp_body,
                resp_raw,
                tampered: if tampered.is_empty() {
                    None
                } else {
                    Some(tampered.join("; "))
                },
            });
        }

        let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
        for (n, v) in &out_headers {
            if is_hop_by_hop(n) {
                continue;
            }
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n", out_body.len()));
        if close {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        writer.write_all(head.as_bytes())?;
        writer.write_all(&out_body)?;
        writer.flush()?;
        if close {
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "content-length",
        "te",
        "trailer",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// A parsed HTTP/1.1 message: start line, headers, de-chunked body, and every byte read.
struct Message {
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    raw: Vec<u8>,
}

/// Reads one message; None on a clean end of stream before it. `request_method` is None when
/// reading a request, else the method of the request this response answers.
fn read_message<R: BufRead>(
    r: &mut R,
    request_method: Option<&str>,
) -> io::Result<Option<Message>> {
    let mut raw = Vec::new();
    let start;
    // Skip blank lines between messages (RFC 9112 §2.2).
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        raw.extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if !text.is_empty() {
            start = text;
            break;
        }
    }
    let mut headers = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "in headers"));
        }
        raw.extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if text.is_empty() {
            break;
        }
        if let Some((n, v)) = text.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    let status: Option<u16> = request_method.map(|_| {
        start
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    });
    let no_body = match (request_method, status) {
        (Some(m), Some(st)) => {
            m.eq_ignore_ascii_case("HEAD") || (100..200).contains(&st) || st == 204 || st == 304
        }
        _ => false,
    };
    let chunked = header(&headers, "transfer-encoding")
        .map(|v| v.to_ascii_lowercase().contains("chunked"))
        .unwrap_or(false);
    let length: Option<usize> = header(&headers, "content-length").and_then(|v| v.parse().ok());
    let mut body = Vec::new();
    if no_body {
    } else if chunked {
        loop {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "in chunk size",
                ));
            }
            raw.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line);
            let size_text = text
                .trim()
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            let size = usize::from_str_radix(&size_text, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let mut t = Vec::new();
                    if r.read_until(b'\n', &mut t)? == 0 {
                        break;
                    }
                    raw.extend_from_slice(&t);
                    if t == b"\r\n" || t == b"\n" {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0u8; size];
            r.read_exact(&mut chunk)?;
            raw.extend_from_slice(&chunk);
            body.extend_from_slice(&chunk);
            let mut crlf = Vec::new();
            r.read_until(b'\n', &mut crlf)?;
            raw.extend_from_slice(&crlf);
        }
    } else if let Some(n) = length {
        body = vec![0u8; n];
        r.read_exact(&mut body)?;
        raw.extend_from_slice(&body);
    } else if request_method.is_some() {
        // A response without length: up to the end of the connection.
        r.read_to_end(&mut body)?;
        raw.extend_from_slice(&body);
    }
    Ok(Some(Message {
        start,
        headers,
        body,
        raw,
    }))
}

/// An answer from [`send_raw`].
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub raw: Vec<u8>,
}

/// Sends one request to `base` (`http://host:port`) on a fresh connection, with `headers` as
/// given (hop-by-hop headers replaced by `Content-Length` and `Connection: close`).
pub fn send_raw(
    base: &str,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> io::Result<RawResponse> {
    let addr = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut conn = TcpStream::connect(&addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    let mut has_host = false;
    for (n, v) in headers {
        if is_hop_by_hop(n) {
            continue;
        }
        has_host |= n.eq_ignore_ascii_case("host");
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !has_host {
        head.push_str(&format!("host: {addr}\r\n"));
    }
    if !body.is_empty() || !matches!(method, "GET" | "HEAD") {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("connection: close\r\n\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()?;
    let mut reader = BufReader::new(conn);
    let msg = read_message(&mut reader, Some(method))?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no response"))?;
    let status = msg
        .start
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "status line"))?;
    Ok(RawResponse {
        status,
        headers: msg.headers,
        body: msg.body,
        raw: msg.raw,
    })
}

/// A plain request (for the tests' own calls that no relay should see): status and body.
pub fn http(base: &str, method: &str, target: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let headers: Vec<(String, String)> = if body.is_empty() {
        vec![]
    } else {
        vec![("content-type".into(), "application/json".into())]
    };
    match send_raw(base, method, target, &headers, body) {
        Ok(r) => (r.status, r.body),
        Err(e) => (0, format!("request failed: {e}").into_bytes()),
    }
}

/// Sends a recorded request to its upstream again, byte for byte: status and body.
pub fn replay(ex: &Exchange) -> (u16, Vec<u8>) {
    resend(ex, &ex.req_headers, &ex.req_body)
}

/// Sends a recorded request to its upstream with other headers or another body.
pub fn resend(ex: &Exchange, headers: &[(String, String)], body: &[u8]) -> (u16, Vec<u8>) {
    match send_raw(&ex.upstream, &ex.method, &ex.target, headers, body) {
        Ok(r) => (r.status, r.body),
        Err(e) => (0, format!("resend failed: {e}").into_bytes()),
    }
}

// ---- the scanner ----

/// A secret found in a recorded exchange.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Finding {
    pub secret: String,
    /// `leg #seq METHOD target -> status`.
    pub exchange: String,
    /// `request`, `request body`, `request target`, `response` or `response body`.
    pub part: &'static str,
    /// `raw`, `hex`, `HEX`, `base64@k`, `base64url@k` (k: the secret's offset mod 3).
    pub encoding: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "secret {:?} in the {} of {} ({})",
            self.secret, self.part, self.exchange, self.encoding
        )
    }
}

/// The shortest secret the scanner takes: shorter ones would match by chance.
pub const MIN_SECRET: usize = 12;

/// The byte strings whose presence means `secret` is there: the raw bytes, hex in both cases,
/// and for base64 and base64url the characters that depend on the secret alone at each of the
/// three offsets (mod 3) it can have inside a longer encoded string, so padding and neighbours
/// do not matter.
pub fn encodings(secret: &[u8]) -> Vec<(String, Vec<u8>)> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut out = vec![
        ("raw".to_string(), secret.to_vec()),
        ("hex".to_string(), hex::encode(secret).into_bytes()),
        ("HEX".to_string(), hex::encode_upper(secret).into_bytes()),
    ];
    for (name, engine) in [
        ("base64", &STANDARD_NO_PAD),
        ("base64url", &URL_SAFE_NO_PAD),
    ] {
        for k in 0..3usize {
            let mut data = vec![0u8; k];
            data.extend_from_slice(secret);
            let text = engine.encode(&data).into_bytes();
            // Character i carries bits [6i, 6i+6); the secret holds bits [8k, 8(k+n)).
            let lo = 8 * k;
            let hi = 8 * (k + secret.len());
            let core: Vec<u8> = text
                .iter()
                .enumerate()
                .filter(|(i, _)| 6 * i >= lo && 6 * i + 6 <= hi)
                .map(|(_, &c)| c)
                .collect();
            out.push((format!("{name}@{k}"), core));
        }
    }
    out
}

/// Looks for every secret, in every encoding of [`encodings`], in every byte of `exchanges`:
/// the raw request (request line with the URL, headers, body as framed), the de-chunked request
/// body, the percent-decoded target, the raw response and the de-chunked response body.
pub fn scan(exchanges: &[Exchange], secrets: &[(String, Vec<u8>)]) -> Vec<Finding> {
    // Index every needle by its first MIN_SECRET bytes; then one pass over each haystack.
    let mut needles: Vec<(usize, String, Vec<u8>)> = Vec::new();
    for (i, (name, secret)) in secrets.iter().enumerate() {
        assert!(
            secret.len() >= MIN_SECRET,
            "secret {name:?} is {} bytes; the scanner needs at least {MIN_SECRET}",
            secret.len()
        );
        for (enc, bytes) in encodings(secret) {
            needles.push((i, enc, bytes));
        }
    }
    let mut index: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for (n, (_, _, bytes)) in needles.iter().enumerate() {
        index.entry(&bytes[..MIN_SECRET]).or_default().push(n);
    }
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    for ex in exchanges {
        let target = percent_decode(ex.target.as_bytes());
        let parts: [(&'static str, &[u8]); 5] = [
            ("request", &ex.req_raw),
            ("request body", &ex.req_body),
            ("request target", &target),
            ("response", &ex.resp_raw),
            ("response body", &ex.resp_body),
        ];
        for (part, hay) in parts {
            if hay.len() < MIN_SECRET {
                continue;
            }
            for at in 0..=hay.len() - MIN_SECRET {
                let Some(cands) = index.get(&hay[at..at + MIN_SECRET]) else {
                    continue;
                };
                for &n in cands {
                    let (i, enc, bytes) = &needles[n];
                    if hay[at..].starts_with(bytes) {
                        let f = Finding {
                            secret: secrets[*i].0.clone(),
                            exchange: ex.describe(),
                            part,
                            encoding: enc.clone(),
                        };
                        if seen.insert(f.clone()) {
                            found.push(f);
                        }
                    }
                }
            }
        }
    }
    found
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(&s[i + 1..i + 3]), 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if s[i] == b'+' { b' ' } else { s[i] });
        i += 1;
    }
    out
}
