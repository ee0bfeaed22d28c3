//! A connection's first request, read before hyper sees the connection. A
//! WebSocket upgrade that the proxy forwards is forwarded here in plain bytes
//! and the connection becomes the tunnel; anything else goes on to `express`
//! (and from there to hyper) along with the bytes already read.
//!
//! Why: browsers open a new connection for every WebSocket, so an upgrade is
//! nearly always a first request. Through hyper each one cost a connection
//! task with its buffers and header timer, an upgrade oneshot, a boxed
//! `Upgraded` and a second task for the tunnel (bench figure 3). Whatever is
//! unusual (a head that does not come in one read, a request that the proxy
//! refuses) takes hyper's path, so every refusal of ours is made in one place.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use bytes::BytesMut;
use http::header::CONNECTION;
use http::{HeaderValue, Method, Request, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::prefixed::Prefixed;
use super::routes::Route;
use super::{admit, forwarded_for, handshake, has_body, splice, switch_upstream, Admission};
use crate::app::App;
use crate::metrics::Metrics;

/// A request head must arrive within this, as hyper's `header_read_timeout`.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// One read; a WebSocket upgrade's head is well under 1 KiB. A longer head is
/// hyper's to read.
const FIRST_READ: usize = 4096;

/// What became of a connection's first request.
pub enum First<S> {
    /// Not a WebSocket forwarded here: HTTP, served by `express` or hyper;
    /// `buf` holds what was read so far.
    Http { buf: BytesMut, stream: S },
    /// Switched at both ends: the tunnel is ready to run.
    Tunnel(Tunnel<S>),
    /// Nothing more to do: the client left, was too slow, or was answered.
    Done,
}

/// A browser's WebSocket and the notebook server's, both past their 101.
pub struct Tunnel<S> {
    client: S,
    upstream: Prefixed<TcpStream>,
    route: Arc<Route>,
    closed: CancellationToken,
    metrics: Arc<Metrics>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Tunnel<S> {
    /// Copy both ways until either side closes or the session is closed.
    pub async fn run(self) {
        let _open = self.metrics.websocket_opened();
        splice::splice(self.client, self.upstream, &self.route, self.closed).await;
    }
}

/// Read the first request from `stream` (from `peer`) and forward it if it is
/// a WebSocket upgrade that `admit` lets through.
pub async fn read<S>(app: &App, peer: SocketAddr, mut stream: S) -> First<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(FIRST_READ);
    match tokio::time::timeout(HEADER_TIMEOUT, stream.read_buf(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => return First::Done,
    }
    let admitted = upgrade_request(&buf).and_then(|req| match admit(app, &req) {
        Admission::Forward { route, closed, upgrade: true, .. } if !has_body(req.headers()) => {
            Some((req, route, closed))
        }
        _ => None,
    });
    let Some((req, route, closed)) = admitted else {
        return First::Http { buf, stream };
    };
    let (parts, ()) = req.into_parts();
    match switch_upstream(app, &forwarded_for(peer), parts, &route).await {
        Ok((headers, upstream)) => {
            let mut head = Vec::with_capacity(256);
            handshake::response_head(&mut head, StatusCode::SWITCHING_PROTOCOLS, &headers);
            if let Err(e) = stream.write_all(&head).await {
                tracing::debug!(error = %e, "the browser left before its 101");
                return First::Done;
            }
            First::Tunnel(Tunnel { client: stream, upstream, route, closed, metrics: app.metrics.clone() })
        }
        Err(refusal) => {
            answer(&mut stream, refusal).await;
            First::Done
        }
    }
}

/// The head in `buf`, if it is all of `buf` and could be a WebSocket upgrade
/// to a notebook server: `GET /user/… HTTP/1.1` with an `Upgrade` header.
/// `admit` decides the rest, as for any request.
fn upgrade_request(buf: &[u8]) -> Option<Request<()>> {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut slots);
    // Bytes after the head (a pipelined request) are hyper's business.
    match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len == buf.len() => {}
        _ => return None,
    }
    let path = parsed.path.filter(|p| p.starts_with("/user/"))?;
    if parsed.method != Some("GET")
        || parsed.version != Some(1)
        || !parsed.headers.iter().any(|h| h.name.eq_ignore_ascii_case("upgrade"))
    {
        return None;
    }
    handshake::bodiless_request(Method::GET, path, parsed.headers)
}

/// Write a refusal whole, then close: the browser's connection was to become
/// a WebSocket, so it is not kept for more requests.
async fn answer<S: AsyncWrite + Unpin>(stream: &mut S, mut resp: Response) {
    resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    match super::express::write_answer(stream, resp, false, &mut Vec::new()).await {
        Ok(()) => {
            let _ = stream.shutdown().await;
        }
        Err(e) => tracing::debug!(error = %e, "a refusal was not written whole"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::TRANSFER_ENCODING;

    const UPGRADE: &[u8] = b"GET /user/abc/api/kernels/k/channels?session_id=1 HTTP/1.1\r\n\
        Host: 127.0.0.1:8000\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn a_whole_upgrade_head_is_taken() {
        let req = upgrade_request(UPGRADE).expect("an upgrade");
        assert_eq!(req.uri().path(), "/user/abc/api/kernels/k/channels");
        assert_eq!(req.uri().query(), Some("session_id=1"));
        assert_eq!(req.headers()["upgrade"], "websocket");
        assert_eq!(req.headers()["sec-websocket-version"], "13");
    }

    #[test]
    fn anything_else_is_left_to_hyper() {
        let cases: [&[u8]; 8] = [
            // Cut short, and with a request pipelined behind it.
            &UPGRADE[..UPGRADE.len() - 2],
            &[UPGRADE, b"GET / HTTP/1.1\r\n\r\n"].concat(),
            // Another method, version, path, or no Upgrade.
            b"POST /user/abc/x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
            b"GET /user/abc/x HTTP/1.0\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
            b"GET /hub/login HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
            b"GET /user/abc/api/status HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n",
            // Not HTTP, or a header value http refuses.
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"GET /user/abc/x HTTP/1.1\r\nUpgrade: web\x7fsocket\r\n\r\n",
        ];
        for case in cases {
            assert!(upgrade_request(case).is_none(), "{}", String::from_utf8_lossy(case));
        }
    }

    #[tokio::test]
    async fn a_refusal_is_written_whole_with_its_length_and_closes() {
        let (mut ours, mut theirs) = tokio::io::duplex(4096);
        let mut resp = Response::new(axum::body::Body::from("no such kernel"));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        resp.headers_mut().insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        answer(&mut ours, resp).await;
        drop(ours);
        let mut got = String::new();
        theirs.read_to_string(&mut got).await.unwrap();
        assert!(got.starts_with("HTTP/1.1 404 Not Found\r\n"), "{got}");
        assert!(got.contains("content-length: 14\r\n") && got.contains("connection: close\r\n"), "{got}");
        assert!(!got.contains("transfer-encoding"), "{got}");
        assert!(got.ends_with("\r\n\r\nno such kernel"), "{got}");
    }
}
