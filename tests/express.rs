//! The proxy's plain-bytes path (`proxy::express`) on one browser connection,
//! against a scripted notebook server: pipelined requests answered in order,
//! every framing an answer can come in, hop-by-hop headers dropped, the token
//! scrubbed from a page, the hand-over to hyper part-way through a connection,
//! and an idle connection closed when the gateway stops. In-process gateway;
//! the route points at the script, so no container is needed.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nbgate::proxy::routes::Route;
use nbgate::slot::SlotId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const SLOT: &str = "00112233aabbccdd";
const COOKIE: &str = "nbgate-session-value-for-the-express-test";

/// A message read off a connection: status or method, headers (lower-case
/// names, every value), body.
#[derive(Debug, Default)]
struct Message {
    first: String,
    headers: HashMap<String, Vec<String>>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.first()).map(String::as_str)
    }
}

/// Read one message's head from `conn` (after what `buf` holds); None at EOF.
async fn read_head<R: AsyncRead + Unpin>(conn: &mut R, buf: &mut Vec<u8>, response: bool) -> Option<Message> {
    loop {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let parsed = if response {
            let mut r = httparse::Response::new(&mut slots);
            match r.parse(buf).unwrap() {
                httparse::Status::Complete(len) => {
                    Some((r.code.unwrap().to_string(), r.headers.to_vec(), len))
                }
                httparse::Status::Partial => None,
            }
        } else {
            let mut r = httparse::Request::new(&mut slots);
            match r.parse(buf).unwrap() {
                httparse::Status::Complete(len) => {
                    Some((format!("{} {}", r.method.unwrap(), r.path.unwrap()), r.headers.to_vec(), len))
                }
                httparse::Status::Partial => None,
            }
        };
        if let Some((first, headers, len)) = parsed {
            let mut msg = Message { first, ..Default::default() };
            for h in headers {
                let value = String::from_utf8(h.value.to_vec()).unwrap();
                msg.headers.entry(h.name.to_ascii_lowercase()).or_default().push(value);
            }
            buf.drain(..len);
            return Some(msg);
        }
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await.unwrap();
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn fill<R: AsyncRead + Unpin>(conn: &mut R, buf: &mut Vec<u8>, at_least: usize) {
    while buf.len() < at_least {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection ended inside a body");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// An answer as the browser gets it, its body decoded by its framing.
async fn read_answer<R: AsyncRead + Unpin>(conn: &mut R, buf: &mut Vec<u8>, head_request: bool) -> Message {
    let mut msg = read_head(conn, buf, true).await.expect("an answer");
    if head_request {
        return msg;
    }
    if msg.header("transfer-encoding") == Some("chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                let want = buf.len() + 1;
                fill(conn, buf, want).await;
            };
            let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16).unwrap();
            fill(conn, buf, line_end + 2 + size + 2).await;
            msg.body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                return msg;
            }
        }
    }
    let length: usize = msg.header("content-length").expect("a length or chunks").parse().unwrap();
    fill(conn, buf, length).await;
    msg.body = buf.drain(..length).collect();
    msg
}

/// What the scripted notebook server saw: requests, and connections accepted.
#[derive(Default)]
struct Seen {
    requests: Vec<Message>,
    connections: usize,
}

/// The notebook server: answers by the last path segment, in every framing.
async fn notebook_server() -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            record.lock().unwrap().connections += 1;
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(mut req) = read_head(&mut conn, &mut buf, false).await {
                    if let Some(length) = req.header("content-length").map(|l| l.parse::<usize>().unwrap()) {
                        fill(&mut conn, &mut buf, length).await;
                        req.body = buf.drain(..length).collect();
                    }
                    let head = req.first.starts_with("HEAD ");
                    let answer: Vec<u8> = match req.first.rsplit('/').next().unwrap() {
                        "len" if head => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec(),
                        "len" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: x-secret\r\n\
                            X-Secret: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\n\r\nhello"
                            .to_vec(),
                        "chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                            5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
                            .to_vec(),
                        "close" => b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close".to_vec(),
                        "page" => {
                            let page = format!("<html><head></head><body>{TOKEN}</body></html>");
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{page}",
                                page.len()
                            )
                            .into_bytes()
                        }
                        _ => {
                            let mut a =
                                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", req.body.len())
                                    .into_bytes();
                            a.extend_from_slice(&req.body);
                            a
                        }
                    };
                    let close = req.first.ends_with("/close");
                    record.lock().unwrap().requests.push(req);
                    conn.write_all(&answer).await.unwrap();
                    if close {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn get(path: &str, method: &str) -> String {
    format!(
        "{method} /user/{SLOT}/{path} HTTP/1.1\r\nHost: gw\r\nConnection: keep-alive\r\n\
         Cookie: nbgate-session={COOKIE}; theme=dark\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
    )
}

/// A gateway in this process whose one route goes to the scripted server.
struct Gateway {
    _instance: common::TestInstance,
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Gateway {
    async fn start() -> Self {
        let instance = common::TestInstance::new();
        let server =
            nbgate::app::Server::build(instance.config(&[("NBGATE_FIREWALL", "false")])).await.unwrap();
        let (upstream, seen) = notebook_server().await;
        let route = Arc::new(Route::new(SlotId::parse(SLOT).unwrap(), "c".into(), upstream, TOKEN, None, 0));
        route.add_owner(nbgate::auth::session::hash(COOKIE));
        server.app().routes.insert(route);
        let addr = server.local_addr();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let running = tokio::spawn(server.run_until(async move { stopped.cancelled().await }));
        Self { _instance: instance, addr, seen, stop, running }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.running.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn one_connection_serves_pipelined_requests_in_every_framing_then_hands_over_to_hyper() {
    let gw = Gateway::start().await;
    let mut conn = TcpStream::connect(gw.addr).await.unwrap();
    let mut buf = Vec::new();
    // Six requests in one write: each answer must come back whole and in order.
    let pipelined = [
        get("len", "GET"),
        get("chunked", "GET"),
        get("len", "HEAD"),
        get("close", "GET"),
        get("page", "GET"),
        get("len", "GET"),
    ]
    .concat();
    conn.write_all(pipelined.as_bytes()).await.unwrap();

    let len = read_answer(&mut conn, &mut buf, false).await;
    assert_eq!((len.first.as_str(), len.body.as_slice()), ("200", &b"hello"[..]));
    assert_eq!(len.header("x-kept"), Some("yes"));
    for hop in ["x-secret", "keep-alive", "connection"] {
        assert_eq!(len.header(hop), None, "{hop} is hop-by-hop");
    }
    assert!(len.header("date").is_some_and(|d| d.ends_with(" GMT")), "{len:?}");

    let chunked = read_answer(&mut conn, &mut buf, false).await;
    assert_eq!(chunked.body, b"hello world");
    assert_eq!(chunked.header("x-trailer"), None);

    let head = read_answer(&mut conn, &mut buf, true).await;
    assert_eq!((head.first.as_str(), head.header("content-length")), ("200", Some("5")));

    // HTTP/1.0 without a length ends with its connection upstream; the browser's
    // stays open, so it gets chunks.
    let close = read_answer(&mut conn, &mut buf, false).await;
    assert_eq!(close.body, b"until close");
    assert_eq!(close.header("transfer-encoding"), Some("chunked"));

    let page = read_answer(&mut conn, &mut buf, false).await;
    let text = String::from_utf8(page.body.clone()).unwrap();
    assert!(text.starts_with("<html>") && !text.contains(TOKEN), "{text}");
    assert_eq!(page.header("content-length"), Some(text.len().to_string().as_str()));

    assert_eq!(read_answer(&mut conn, &mut buf, false).await.body, b"hello");

    // A request with a body is hyper's from here on; the connection goes on.
    let post = format!(
        "POST /user/{SLOT}/echo HTTP/1.1\r\nHost: gw\r\nOrigin: http://gw\r\n\
         Cookie: nbgate-session={COOKIE}; theme=dark\r\nContent-Length: 4\r\n\r\nping"
    );
    conn.write_all(post.as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut conn, &mut buf, false).await.body, b"ping");
    conn.write_all(get("len", "GET").as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut conn, &mut buf, false).await.body, b"hello");

    {
        let seen = gw.seen.lock().unwrap();
        assert_eq!(seen.requests.len(), 8);
        for req in &seen.requests {
            assert_eq!(req.header("authorization"), Some(format!("token {TOKEN}").as_str()), "{req:?}");
            assert_eq!(req.header("cookie"), Some("theme=dark"), "{req:?}");
            assert_eq!(req.headers["x-forwarded-for"], ["127.0.0.1"], "{req:?}");
            assert_eq!(req.header("x-forwarded-host"), Some("gw"), "{req:?}");
            assert_eq!(req.header("connection"), None, "{req:?}");
        }
        // The first upstream connection ended with `close`; the second was kept
        // for the other plain requests, the one after the hand-over included;
        // the POST went on hyper's client connection.
        assert_eq!(seen.connections, 3);
    }
    gw.stop().await;
}

#[tokio::test]
async fn an_idle_plain_connection_is_closed_when_the_gateway_stops() {
    let gw = Gateway::start().await;
    let mut conn = TcpStream::connect(gw.addr).await.unwrap();
    let mut buf = Vec::new();
    conn.write_all(get("len", "GET").as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut conn, &mut buf, false).await.body, b"hello");
    gw.stop.cancel();
    // Well inside the 10 s the gateway gives open requests before it gives up.
    let mut rest = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(8), conn.read(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "{read:?}");
    gw.running.await.unwrap().unwrap();
}
