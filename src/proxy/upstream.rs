//! Connections to notebook servers, held by the browser connection they serve.
//!
//! HTTP/1 carries one request at a time and the gateway (`express`, or hyper's
//! server) reads a connection's next request only after the last response went
//! out whole, so a browser connection never needs more than one upstream
//! connection for its requests. Keeping that one with the browser connection
//! skips a shared pool's lock and map lookup.
//!
//! A request without a body (nearly all of JupyterLab's: GETs of contents,
//! kernelspecs, status, static files) is spoken in plain bytes on the browser
//! connection's own task: the head written in one write, the answer's head
//! parsed with httparse, its body read straight off the socket as it is
//! written to the browser. hyper's client costs a connection task, a request
//! channel, a response oneshot and a body channel per request, and two task
//! wake-ups per answer instead of one; on this, the gateway's hottest path
//! (bench figure 1), that was most of nbgate's CPU above nginx's. A request with
//! a body (a save, a new session) goes through hyper's client, which streams it,
//! answers an `Expect: 100-continue` and copes with an answer that arrives
//! before the body is sent. WebSocket upgrades take a connection of their own,
//! since the upgrade consumes it (`handshake`).
//!
//! When a browser connection ends, its idle plain connection becomes one of its
//! route's [`Spares`], which a new browser connection takes for its first
//! request instead of connecting: browsers open and close connections all the
//! time (six per origin, idle ones closed after 30 s), and each connect to a
//! container cost that first request ~50 µs more than through nginx, whose
//! upstream connections outlive the browser's.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::Either;
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::framing::{self, framing, Decoder, Framing, Step};
use super::handshake::{self, Answer as Switch, HandshakeError};

/// A notebook server that does not accept a connection within this is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait for a kept hyper connection to finish its previous exchange
/// before a fresh one is opened instead (it is normally ready at once).
const READY_WAIT: Duration = Duration::from_secs(1);

/// First read of an answer: its head and, for most, its whole body.
const FIRST_READ: usize = 8 * 1024;
/// Reads of a long body grow up to this while they fill the buffer (a 1 MiB
/// notebook in a handful of reads, not a hundred).
const MAX_READ: usize = 256 * 1024;

/// Why a request did not reach the notebook server or got no answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("connecting to {0}: timed out")]
    ConnectTimeout(SocketAddr),
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("the notebook server's answer is not HTTP/1.1: {0}")]
    Malformed(&'static str),
}

/// A kept plain connection: where it goes, the stream, and the spares it joins
/// when its browser connection ends.
type Kept = Arc<Mutex<Option<Idle>>>;

struct Idle {
    addr: SocketAddr,
    stream: TcpStream,
    spares: Spares,
}

/// Most idle connections a route keeps for browser connections to come. A
/// browser keeps at most six to a host, whatever its tabs; 16 covers a user's
/// two or three browsers, for 16 descriptors a route at most.
const SPARES: usize = 16;

/// A route's idle plain connections, left by browser connections that ended.
#[derive(Clone, Default)]
pub struct Spares(Arc<Mutex<Vec<(SocketAddr, TcpStream)>>>);

impl Spares {
    /// An idle connection to `addr` that the server has not closed; the closed
    /// ones found on the way are dropped.
    fn take(&self, addr: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.0.lock().expect("spares lock");
        while let Some((a, stream)) = idle.pop() {
            if a == addr && still_open(&stream) {
                return Some(stream);
            }
        }
        None
    }

    fn give(&self, addr: SocketAddr, stream: TcpStream) {
        let mut idle = self.0.lock().expect("spares lock");
        if idle.len() < SPARES {
            idle.push((addr, stream));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().expect("spares lock").len()
    }
}

/// The upstream connections of one browser connection. `B`: the request body
/// (the browser's, streamed through when there is one).
pub struct Upstream<B = Incoming> {
    /// For requests without a body; an answer's body puts it back when it ends.
    plain: Kept,
    /// For requests with a body.
    hyper: Mutex<Option<(SocketAddr, SendRequest<B>)>>,
}

impl<B> Default for Upstream<B> {
    fn default() -> Self {
        Self { plain: Kept::default(), hyper: Mutex::new(None) }
    }
}

impl<B> Drop for Upstream<B> {
    /// The browser connection ended: its idle plain connection joins its route's spares.
    fn drop(&mut self) {
        if let Some(Idle { addr, stream, spares }) = self.plain.lock().expect("upstream lock").take() {
            spares.give(addr, stream);
        }
    }
}

/// How one attempt on a plain connection failed.
enum Failure {
    /// A kept connection the server had closed: nothing of an answer came.
    Stale(UpstreamError),
    Other(UpstreamError),
}

impl<B> Upstream<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Send `req` (origin-form URI) to `addr` on a kept connection, or on a new
    /// one if there is none, it goes elsewhere, or it has closed. `spares`: the
    /// route's idle connections (see the module's comment).
    pub async fn send(
        &self,
        addr: SocketAddr,
        spares: &Spares,
        req: Request<B>,
    ) -> Result<Response<Answer>, UpstreamError> {
        if super::has_body(req.headers()) {
            return Ok(self.send_hyper(addr, with_host(req, addr)).await?.map(Either::Right));
        }
        self.send_plain(addr, spares, req.map(drop)).await
    }

    /// Send `req`, which has no body, in plain bytes (see the module's comment).
    pub async fn send_plain(
        &self,
        addr: SocketAddr,
        spares: &Spares,
        req: Request<()>,
    ) -> Result<Response<Answer>, UpstreamError> {
        let req = with_host(req, addr);
        let head = handshake::request_head(&req);
        let head_request = req.method() == Method::HEAD;
        // Sent again on a fresh connection if a kept one turns out closed: only
        // what may be repeated (RFC 9110 §9.2.2), as hyper's client and nginx do.
        let repeatable = req.method().is_idempotent();
        drop(req);
        if let Some(stream) = self.take_plain(addr).or_else(|| spares.take(addr)) {
            match self.exchange(addr, spares, stream, &head, head_request, true).await {
                Ok(resp) => return Ok(resp),
                Err(Failure::Stale(_)) if repeatable => {}
                Err(Failure::Stale(e) | Failure::Other(e)) => return Err(e),
            }
        }
        let stream = open(addr).await?;
        match self.exchange(addr, spares, stream, &head, head_request, false).await {
            Ok(resp) => Ok(resp),
            Err(Failure::Stale(e) | Failure::Other(e)) => Err(e),
        }
    }

    /// Write a request head on `stream`; read the answer's head, and leave its
    /// body to be read as the browser's side takes it.
    async fn exchange(
        &self,
        addr: SocketAddr,
        spares: &Spares,
        mut stream: TcpStream,
        head: &[u8],
        head_request: bool,
        reused: bool,
    ) -> Result<Response<Answer>, Failure> {
        // A reused connection that fails before any answer was closed by the server.
        let failed = |e: UpstreamError, nothing_came: bool| {
            if reused && nothing_came {
                Failure::Stale(e)
            } else {
                Failure::Other(e)
            }
        };
        if let Err(e) = stream.write_all(head).await {
            return Err(failed(HandshakeError::Io(e).into(), true));
        }
        let mut buf = BytesMut::with_capacity(FIRST_READ);
        let mut informational = false;
        let (status, mut headers, http10) = loop {
            let (status, headers, len) = match handshake::read_head(&mut stream, &mut buf).await {
                Ok(head) => head,
                Err(e) => {
                    let nothing_came = !informational && buf.is_empty();
                    return Err(failed(e.into(), nothing_came));
                }
            };
            let http10 = buf.starts_with(b"HTTP/1.0");
            buf.advance(len);
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(Failure::Other(UpstreamError::Malformed("101 to a request without Upgrade")));
            }
            // 100 Continue, 103 Early Hints: the answer follows.
            if !status.is_informational() {
                break (status, headers, http10);
            }
            informational = true;
        };
        let framing = framing(head_request, status, &headers)
            .map_err(|framing::Malformed(what)| Failure::Other(UpstreamError::Malformed(what)))?;
        if headers.contains_key(header::TRANSFER_ENCODING) {
            // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length.
            headers.remove(header::CONTENT_LENGTH);
        }
        let reusable = !http10
            && !super::has_token(&headers, header::CONNECTION, "close")
            && !matches!(framing, Framing::UntilClose);
        let home = reusable.then(|| (self.plain.clone(), addr, spares.clone()));
        let mut resp = Response::new(Either::Left(Plain::new(stream, buf, framing, home)));
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        Ok(resp)
    }

    /// The kept plain connection, if it goes to `addr` and the server has not
    /// closed it.
    fn take_plain(&self, addr: SocketAddr) -> Option<TcpStream> {
        match self.plain.lock().expect("upstream lock").take() {
            Some(Idle { addr: a, stream, .. }) if a == addr && still_open(&stream) => Some(stream),
            _ => None,
        }
    }

    async fn send_hyper(
        &self,
        addr: SocketAddr,
        mut req: Request<B>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        if let Some(mut sender) = self.take_hyper(addr) {
            let ready = sender.is_ready()
                || matches!(tokio::time::timeout(READY_WAIT, sender.ready()).await, Ok(Ok(())));
            if ready {
                match sender.try_send_request(req).await {
                    Ok(resp) => {
                        self.keep_hyper(addr, sender);
                        return Ok(resp);
                    }
                    // Not written: the server closed the idle connection. A new one is safe.
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => req = unsent,
                        None => return Err(e.into_error().into()),
                    },
                }
            }
        }
        let mut sender = connect(addr).await?;
        let resp = sender.send_request(req).await?;
        self.keep_hyper(addr, sender);
        Ok(resp)
    }

    fn take_hyper(&self, addr: SocketAddr) -> Option<SendRequest<B>> {
        let mut kept = self.hyper.lock().expect("upstream lock");
        match kept.take() {
            Some((a, sender)) if a == addr && !sender.is_closed() => Some(sender),
            _ => None,
        }
    }

    fn keep_hyper(&self, addr: SocketAddr, sender: SendRequest<B>) {
        *self.hyper.lock().expect("upstream lock") = Some((addr, sender));
    }
}

/// An idle connection the server closed (or wrote to unasked) has become
/// readable. Asked of tokio's cached readiness, so a quiet one costs no
/// system call; a readable one gets a one-byte read to tell which.
fn still_open(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            matches!(stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

/// What is left to read of a plain answer's body.
#[derive(Debug)]
enum Reading {
    Length(u64),
    Chunked(Decoder),
    UntilClose,
    Done,
}

/// A plain answer's body, read off the connection as it is polled, on the
/// polling task. When it has been read whole, the connection goes back to its
/// browser connection (`home`) for the next request; dropped before that, the
/// connection is closed, so no stale bytes can reach another answer.
pub struct Plain {
    stream: Option<TcpStream>,
    buf: BytesMut,
    reading: Reading,
    home: Option<(Kept, SocketAddr, Spares)>,
    next_read: usize,
}

impl Plain {
    fn new(
        stream: TcpStream,
        buf: BytesMut,
        framing: Framing,
        home: Option<(Kept, SocketAddr, Spares)>,
    ) -> Self {
        let reading = match framing {
            Framing::Empty | Framing::Length(0) => Reading::Done,
            Framing::Length(n) => Reading::Length(n),
            Framing::Chunked => Reading::Chunked(Decoder::default()),
            Framing::UntilClose => Reading::UntilClose,
        };
        let mut body = Self { stream: Some(stream), buf, reading, home, next_read: FIRST_READ };
        if matches!(body.reading, Reading::Done) {
            body.finish();
        }
        body
    }

    /// The body has ended: the connection goes home if it may be reused and
    /// nothing unasked followed the answer.
    fn finish(&mut self) {
        self.reading = Reading::Done;
        let stream = self.stream.take();
        if let (Some(stream), Some((kept, addr, spares))) = (stream, self.home.take()) {
            if self.buf.is_empty() {
                *kept.lock().expect("upstream lock") = Some(Idle { addr, stream, spares });
            }
        }
    }

    /// Read more of the body into `buf`; Ok(0) at the end of the stream.
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        if self.buf.capacity() - self.buf.len() < FIRST_READ / 2 {
            self.buf.reserve(self.next_read);
        }
        let spare = self.buf.capacity() - self.buf.len();
        let n = ready!(tokio_util::io::poll_read_buf(Pin::new(stream), cx, &mut self.buf))?;
        if n == spare {
            self.next_read = (self.next_read * 2).min(MAX_READ);
        }
        Poll::Ready(Ok(n))
    }

    fn fail(&mut self, e: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.reading = Reading::Done;
        self.stream = None;
        self.home = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for Plain {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            match &mut this.reading {
                Reading::Done => return Poll::Ready(None),
                Reading::Length(left) if !this.buf.is_empty() => {
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(this.buf.len());
                    *left -= take as u64;
                    let data = this.buf.split_to(take).freeze();
                    if *left == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Reading::Chunked(decoder) => match decoder.step(&mut this.buf) {
                    Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Step::Done) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Step::More) => {}
                    Err(framing::Malformed(what)) => {
                        return this.fail(io::Error::new(io::ErrorKind::InvalidData, what))
                    }
                },
                Reading::UntilClose if !this.buf.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(this.buf.split().freeze()))));
                }
                Reading::Length(_) | Reading::UntilClose => {}
            }
            match this.poll_more(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if matches!(this.reading, Reading::UntilClose) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => return this.fail(io::ErrorKind::UnexpectedEof.into()),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.reading, Reading::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.reading {
            Reading::Done => SizeHint::with_exact(0),
            Reading::Length(left) => SizeHint::with_exact(left),
            Reading::Chunked(_) | Reading::UntilClose => SizeHint::default(),
        }
    }
}

/// An answer's body: read plainly, or by hyper's client.
pub type Answer = Either<Plain, Incoming>;

/// Send a WebSocket upgrade (a head without a body) on a connection of its own,
/// in plain bytes (see `handshake`).
pub async fn upgrade(addr: SocketAddr, req: Request<()>) -> Result<Switch, UpstreamError> {
    let stream = open(addr).await?;
    Ok(handshake::exchange(stream, &with_host(req, addr)).await?)
}

/// HTTP/1.1 requires a Host; an HTTP/1.0 client may not have sent one.
fn with_host<B>(mut req: Request<B>, addr: SocketAddr) -> Request<B> {
    if !req.headers().contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(&addr.to_string()) {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    req
}

/// Open a connection for hyper's client and run it on its own task until both
/// ends are done with it (the sender dropped and the last response read).
async fn connect<B>(addr: SocketAddr) -> Result<SendRequest<B>, UpstreamError>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, conn) = http1::Builder::new().handshake(TokioIo::new(open(addr).await?)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%addr, error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// A TCP connection to `addr`, with Nagle off (answers and frames are small and
/// interactive).
async fn open(addr: SocketAddr) -> Result<TcpStream, UpstreamError> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(UpstreamError::Connect(addr, e)),
        Err(_) => return Err(UpstreamError::ConnectTimeout(addr)),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use http_body_util::{BodyExt, Full};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;

    /// What the test server does with one request.
    struct Reply {
        /// Written one after another, a little apart (a body in pieces).
        pieces: Vec<Vec<u8>>,
        /// Then close the connection.
        close: bool,
    }

    fn reply(answer: &str) -> Reply {
        Reply { pieces: vec![answer.as_bytes().to_vec()], close: false }
    }

    /// `200 OK` with a length, saying which connection and request it was.
    fn numbered(conn: usize, nth: usize) -> Reply {
        let body = format!("conn {conn} req {nth}");
        reply(&format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()))
    }

    /// A raw HTTP/1.1 server on loopback; `script(connection, request, head)`
    /// (counted from 1) says how to answer. Returns its address and the number
    /// of connections it accepted. A request body (by content-length) is read
    /// and appended to the head it is given.
    async fn server(script: fn(usize, usize, &str) -> Reply) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let conn = count.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    for nth in 1.. {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                            }
                        }
                        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        let mut head = String::from_utf8(buf.drain(..end).collect()).unwrap();
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_string)
                            })
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        while buf.len() < length {
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                            }
                        }
                        head.push_str(&String::from_utf8(buf.drain(..length).collect()).unwrap());
                        let Reply { pieces, close } = script(conn, nth, &head);
                        for piece in pieces {
                            if stream.write_all(&piece).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        if close {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    async fn request(
        upstream: &Upstream<Full<Bytes>>,
        addr: SocketAddr,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, HeaderMap, String), String> {
        request_via(upstream, addr, &Spares::default(), req).await
    }

    /// `request` with a route's spares.
    async fn request_via(
        upstream: &Upstream<Full<Bytes>>,
        addr: SocketAddr,
        spares: &Spares,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, HeaderMap, String), String> {
        let resp = upstream.send(addr, spares, req).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((parts.status, parts.headers, String::from_utf8(body.to_vec()).unwrap()))
    }

    async fn get(upstream: &Upstream<Full<Bytes>>, addr: SocketAddr) -> String {
        get_via(upstream, addr, &Spares::default()).await
    }

    async fn get_via(upstream: &Upstream<Full<Bytes>>, addr: SocketAddr, spares: &Spares) -> String {
        let req = Request::get("/api/status").body(Full::default()).unwrap();
        request_via(upstream, addr, spares, req).await.expect("the request is answered").2
    }

    #[tokio::test]
    async fn a_browser_connection_reuses_one_upstream_connection() {
        let (addr, accepted) = server(|c, n, _| numbered(c, n)).await;
        let upstream = Upstream::default();
        for nth in 1..=5 {
            assert_eq!(get(&upstream, addr).await, format!("conn 1 req {nth}"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_new_browser_connection_takes_the_idle_connection_an_ended_one_left() {
        let (addr, accepted) = server(|c, n, _| numbered(c, n)).await;
        let spares = Spares::default();
        let first = Upstream::default();
        assert_eq!(get_via(&first, addr, &spares).await, "conn 1 req 1");
        assert_eq!(spares.len(), 0, "kept by its browser connection while that lives");
        drop(first);
        assert_eq!(spares.len(), 1);
        let second = Upstream::default();
        assert_eq!(get_via(&second, addr, &spares).await, "conn 1 req 2");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // Another route's spares are not this one's.
        let (elsewhere, _) = server(|c, n, _| numbered(c, n)).await;
        drop(second);
        let third = Upstream::default();
        assert_eq!(get_via(&third, elsewhere, &spares).await, "conn 1 req 1");
        assert_eq!(spares.len(), 0, "the spare to the other address was dropped, not used");
    }

    #[tokio::test]
    async fn spares_the_server_closed_are_dropped_and_a_route_keeps_at_most_sixteen() {
        let (addr, accepted) = server(|conn, nth, _| Reply { close: true, ..numbered(conn, nth) }).await;
        let spares = Spares::default();
        let first = Upstream::default();
        assert_eq!(get_via(&first, addr, &spares).await, "conn 1 req 1");
        drop(first);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = Upstream::default();
        assert_eq!(get_via(&second, addr, &spares).await, "conn 2 req 1");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);

        let (addr, accepted) = server(|c, n, _| numbered(c, n)).await;
        let spares = Spares::default();
        let mut browsers = Vec::new();
        for _ in 0..20 {
            let upstream = Upstream::default();
            get_via(&upstream, addr, &spares).await;
            browsers.push(upstream);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 20);
        drop(browsers);
        assert_eq!(spares.len(), SPARES);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced_and_the_request_still_answered() {
        let (addr, accepted) = server(|conn, nth, _| Reply { close: true, ..numbered(conn, nth) }).await;
        let upstream = Upstream::default();
        for i in 1..=4 {
            assert_eq!(get(&upstream, addr).await, format!("conn {i} req 1"));
            // Let the close arrive, as between a browser's clicks.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
    }

    /// The server closes a kept connection just as the next request arrives:
    /// a GET is sent again on a new connection; a POST is not repeated.
    #[tokio::test]
    async fn a_close_racing_the_next_request_repeats_only_what_may_be_repeated() {
        let script = |conn, nth, _: &str| match (conn, nth) {
            (1, 2) | (3, 2) => Reply { pieces: vec![], close: true },
            _ => numbered(conn, nth),
        };
        let (addr, accepted) = server(script).await;
        let upstream = Upstream::default();
        assert_eq!(get(&upstream, addr).await, "conn 1 req 1");
        assert_eq!(get(&upstream, addr).await, "conn 2 req 1", "sent again on a new connection");
        let (addr, _) = server(script).await;
        let upstream = Upstream::default();
        assert_eq!(get(&upstream, addr).await, "conn 1 req 1");
        let post = Request::post("/api/kernels/k/interrupt").body(Full::default()).unwrap();
        assert!(request(&upstream, addr, post).await.is_err(), "a POST is not sent twice");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn another_upstream_gets_its_own_connection() {
        let (a, accepted_a) = server(|c, n, _| numbered(c, n)).await;
        let (b, accepted_b) = server(|c, n, _| numbered(c, n)).await;
        let upstream = Upstream::default();
        get(&upstream, a).await;
        get(&upstream, b).await;
        get(&upstream, a).await;
        assert_eq!(accepted_a.load(Ordering::SeqCst), 2, "the kept connection went to b");
        assert_eq!(accepted_b.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_chunked_answer_in_pieces_is_streamed_whole_and_the_connection_kept() {
        let (addr, accepted) = server(|_, _, _| Reply {
            pieces: [
                "HTTP/1.1 200 OK\r\nTransfer-",
                "Encoding: chunked\r\n\r\n4;x=1\r\nWi",
                "ki\r\n5\r\npedia\r",
                "\n0\r\nT: 1\r\n",
                "\r\n",
            ]
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect(),
            close: false,
        })
        .await;
        let upstream = Upstream::default();
        for _ in 0..3 {
            assert_eq!(get(&upstream, addr).await, "Wikipedia");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_long_body_arrives_whole_with_its_length() {
        let (addr, accepted) = server(|_, _, _| {
            let body = vec![b'x'; 3 << 20];
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
            Reply { pieces: vec![head, body[..100].to_vec(), body[100..].to_vec()], close: false }
        })
        .await;
        let upstream = Upstream::<Full<Bytes>>::default();
        for _ in 0..2 {
            let req = Request::get("/files/big").body(Full::default()).unwrap();
            let resp = upstream.send(addr, &Spares::default(), req).await.unwrap();
            assert_eq!(resp.body().size_hint().exact(), Some(3 << 20));
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert!(body.len() == 3 << 20 && body.iter().all(|&b| b == b'x'));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn bodiless_answers_leave_the_connection_ready() {
        let (addr, accepted) = server(|_, nth, head| match nth {
            // A HEAD's answer announces a length it does not send.
            1 => {
                assert!(head.starts_with("HEAD "));
                reply("HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n")
            }
            2 => reply("HTTP/1.1 304 Not Modified\r\netag: \"a\"\r\ncontent-length: 99\r\n\r\n"),
            3 => reply("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"),
            _ => reply("HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlast"),
        })
        .await;
        let upstream = Upstream::default();
        let head = Request::head("/files/a").body(Full::default()).unwrap();
        let (status, headers, body) = request(&upstream, addr, head).await.unwrap();
        assert_eq!(
            (status, &headers["content-length"], body.as_str()),
            (StatusCode::OK, &HeaderValue::from(1234), "")
        );
        let (status, _, body) =
            request(&upstream, addr, Request::get("/a").body(Full::default()).unwrap()).await.unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::NOT_MODIFIED, ""));
        let (status, headers, _) =
            request(&upstream, addr, Request::get("/a").body(Full::default()).unwrap()).await.unwrap();
        assert_eq!(status, StatusCode::NO_CONTENT, "informational answers are skipped");
        assert!(!headers.contains_key("link"));
        assert_eq!(get(&upstream, addr).await, "last");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answer_that_ends_with_its_connection_is_read_to_the_end_and_not_reused() {
        let (addr, accepted) = server(|conn, nth, _| match conn {
            1 => Reply {
                pieces: vec![b"HTTP/1.1 200 OK\r\n\r\nuntil ".to_vec(), b"the end".to_vec()],
                close: true,
            },
            2 => Reply {
                close: true,
                ..reply("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 5\r\n\r\nclose")
            },
            3 => reply("HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\n1.0"),
            _ => numbered(conn, nth),
        })
        .await;
        let upstream = Upstream::default();
        assert_eq!(get(&upstream, addr).await, "until the end");
        assert_eq!(get(&upstream, addr).await, "close");
        assert_eq!(get(&upstream, addr).await, "1.0");
        assert_eq!(get(&upstream, addr).await, "conn 4 req 1", "none of them kept");
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_body_cut_short_or_left_unread_closes_its_connection() {
        let (addr, accepted) = server(|conn, nth, _| match conn {
            1 => Reply { close: true, ..reply("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this") },
            2 => Reply {
                pieces: vec![
                    b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\nfirst ten,".to_vec(),
                    b"second ten".to_vec(),
                ],
                close: false,
            },
            _ => numbered(conn, nth),
        })
        .await;
        let upstream = Upstream::default();
        let cut = request(&upstream, addr, Request::get("/a").body(Full::default()).unwrap()).await;
        assert!(cut.is_err(), "a short body is an error, not a short answer");
        let resp = upstream
            .send(addr, &Spares::default(), Request::get("/b").body(Full::default()).unwrap())
            .await
            .unwrap();
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "first ten,");
        drop(body);
        assert_eq!(get(&upstream, addr).await, "conn 3 req 1", "the rest of the last body never leaks here");
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn broken_answers_are_errors_not_panics() {
        let (addr, _) = server(|conn, _, _| match conn {
            1 => reply("SSH-2.0-OpenSSH_9.2\r\n\r\n"),
            2 => reply("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd"),
            3 => reply("HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\nabc"),
            4 => reply("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n"),
            _ => reply("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n"),
        })
        .await;
        let upstream = Upstream::default();
        for _ in 0..5 {
            let req = Request::get("/a").body(Full::default()).unwrap();
            assert!(request(&upstream, addr, req).await.is_err());
        }
    }

    #[tokio::test]
    async fn a_request_with_a_body_is_streamed_by_hyper_beside_the_plain_connection() {
        let (addr, accepted) = server(|conn, nth, head| {
            if head.starts_with("PUT ") {
                assert!(head.ends_with("\r\n\r\n{\"content\": 1}"), "{head}");
            }
            numbered(conn, nth)
        })
        .await;
        let upstream = Upstream::default();
        assert_eq!(get(&upstream, addr).await, "conn 1 req 1");
        let put = Request::put("/api/contents/a.ipynb")
            .header("content-length", "14")
            .body(Full::new(Bytes::from_static(b"{\"content\": 1}")))
            .unwrap();
        assert_eq!(request(&upstream, addr, put).await.unwrap().2, "conn 2 req 1");
        assert_eq!(get(&upstream, addr).await, "conn 1 req 2");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}
