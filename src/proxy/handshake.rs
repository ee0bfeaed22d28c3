//! The notebook server's side of a WebSocket upgrade, in plain bytes: write the
//! request head, read the answer's head with httparse, and on 101 keep the bare
//! `TcpStream` for the tunnel.
//!
//! Why not hyper's client: a session then costs a connection task, a request
//! channel, a response oneshot, an upgrade oneshot and a boxed `Upgraded`, which
//! made nbgate's user-space CPU per WebSocket session several times nginx's
//! (bench figure 3). An upgrade is one exchange with no request body, so there is
//! little to parse. A refusal (403, 404, …) is relayed whole, its body read by its
//! framing (RFC 9112 §6.3) up to a bound.

use std::io;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::framing::{self, Framing, Step};
use super::prefixed::Prefixed;

/// An answer head longer than this is not a notebook server's.
const MAX_HEAD: usize = 64 * 1024;
/// A refusal's body is an error page; past this it is not relayed.
const MAX_BODY: usize = 1 << 20;
/// A refusal's body must arrive within this once its head has.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the notebook server answered an upgrade with.
pub enum Answer {
    /// 101: its headers, and the connection, now a WebSocket.
    Switched { headers: HeaderMap, stream: Prefixed<TcpStream> },
    /// Anything else, body included (hop-by-hop headers still in).
    Refused(Response<Bytes>),
}

/// Why an upgrade got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("talking to the notebook server: {0}")]
    Io(#[from] io::Error),
    #[error("the notebook server's answer is not HTTP/1.1: {0}")]
    Malformed(&'static str),
    #[error("the notebook server's answer is over {0} bytes")]
    TooLong(usize),
    #[error("the notebook server's answer did not arrive within {0:?}")]
    Timeout(Duration),
}

impl From<framing::Malformed> for HandshakeError {
    fn from(framing::Malformed(what): framing::Malformed) -> Self {
        HandshakeError::Malformed(what)
    }
}

/// Write `req`'s head (it has no body) on `stream` and read the answer.
pub async fn exchange<B>(mut stream: TcpStream, req: &Request<B>) -> Result<Answer, HandshakeError> {
    stream.write_all(&request_head(req)).await?;
    let mut buf = BytesMut::with_capacity(4096);
    let (status, headers) = loop {
        let (status, headers, len) = read_head(&mut stream, &mut buf).await?;
        buf.advance(len);
        // 1xx other than 101 (a 100 Continue) is followed by the real answer.
        if status == StatusCode::SWITCHING_PROTOCOLS || !status.is_informational() {
            break (status, headers);
        }
    };
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // A copy, not `buf.freeze()`: that would keep the whole 4 KiB read buffer
        // alive for as long as the tunnel is open (+4 KiB per idle WebSocket).
        let early = Bytes::copy_from_slice(&buf);
        return Ok(Answer::Switched { headers, stream: Prefixed::new(early, stream) });
    }
    let body = tokio::time::timeout(BODY_TIMEOUT, read_body(&mut stream, buf, status, &headers))
        .await
        .map_err(|_| HandshakeError::Timeout(BODY_TIMEOUT))??;
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    // The body is whole now; the server's framing no longer applies.
    resp.headers_mut().remove(http::header::TRANSFER_ENCODING);
    resp.headers_mut().remove(http::header::CONTENT_LENGTH);
    Ok(Answer::Refused(resp))
}

/// `GET <origin-form> HTTP/1.1`, then the headers as they are: `http` has already
/// refused any name or value with a CR or LF, so nothing can be injected.
pub fn request_head<B>(req: &Request<B>) -> Vec<u8> {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(req.method().as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    write_headers(&mut head, req.headers());
    head
}

/// `HTTP/1.1 <status>`, then the headers as they are (see `request_head`),
/// appended to `head`.
pub fn response_head(head: &mut Vec<u8>, status: StatusCode, headers: &HeaderMap) {
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    write_headers(head, headers);
}

fn write_headers(head: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
}

/// A request without a body from httparse's pieces, checked by `http`'s rules;
/// None if the path or a header breaks them.
pub fn bodiless_request(method: Method, path: &str, headers: &[httparse::Header<'_>]) -> Option<Request<()>> {
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = path.parse::<Uri>().ok()?;
    *req.headers_mut() = header_map(headers)?;
    Some(req)
}

/// Headers the proxy may add to a message it relays (`Authorization`, three
/// `X-Forwarded-*`, `Content-Length`, `Date`, …).
pub const ROOM: usize = 6;

/// Headers parsed by httparse, checked by `http`'s rules; None if one breaks them.
pub fn header_map(parsed: &[httparse::Header<'_>]) -> Option<HeaderMap> {
    // With room: a full map grows (rehashes) on the proxy's first insert, which
    // was ~8 % of the proxy's instructions per request (callgrind).
    let mut headers = HeaderMap::with_capacity(parsed.len() + ROOM);
    for h in parsed {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        headers.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    Some(headers)
}

/// Read until `buf` starts with a whole answer head: (status, headers, its length).
pub async fn read_head(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> Result<(StatusCode, HeaderMap, usize), HandshakeError> {
    loop {
        if !buf.is_empty() {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut slots);
            match resp.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = resp
                        .code
                        .and_then(|c| StatusCode::from_u16(c).ok())
                        .ok_or(HandshakeError::Malformed("status code"))?;
                    let headers = header_map(resp.headers).ok_or(HandshakeError::Malformed("header"))?;
                    return Ok((status, headers, len));
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(HandshakeError::Malformed("over 64 headers"))
                }
                Err(_) => return Err(HandshakeError::Malformed("head")),
            }
        }
        if buf.len() >= MAX_HEAD {
            return Err(HandshakeError::TooLong(MAX_HEAD));
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(HandshakeError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// A refusal's body, by its framing: none, chunked, a length, or up to the end of
/// the stream. `buf` holds what came after the head.
async fn read_body(
    stream: &mut TcpStream,
    mut buf: BytesMut,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<Bytes, HandshakeError> {
    match framing::framing(false, status, headers)? {
        Framing::Empty => Ok(Bytes::new()),
        Framing::Chunked => read_chunked(stream, buf).await,
        Framing::Length(length) => {
            let length = usize::try_from(length)
                .ok()
                .filter(|&l| l <= MAX_BODY)
                .ok_or(HandshakeError::TooLong(MAX_BODY))?;
            while buf.len() < length {
                more(stream, &mut buf).await?;
            }
            buf.truncate(length);
            Ok(buf.freeze())
        }
        Framing::UntilClose => loop {
            if buf.len() > MAX_BODY {
                return Err(HandshakeError::TooLong(MAX_BODY));
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(buf.freeze());
            }
        },
    }
}

/// Decode a chunked body whole, up to `MAX_BODY`.
async fn read_chunked(stream: &mut TcpStream, mut buf: BytesMut) -> Result<Bytes, HandshakeError> {
    let mut decoder = framing::Decoder::default();
    let mut body = BytesMut::new();
    loop {
        match decoder.step(&mut buf)? {
            Step::Data(data) if body.len() + data.len() > MAX_BODY => {
                return Err(HandshakeError::TooLong(MAX_BODY))
            }
            Step::Data(data) => body.extend_from_slice(&data),
            Step::More => more(stream, &mut buf).await?,
            Step::Done => return Ok(body.freeze()),
        }
    }
}

async fn more(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<(), HandshakeError> {
    match stream.read_buf(buf).await? {
        0 => Err(HandshakeError::Io(io::ErrorKind::UnexpectedEof.into())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::net::TcpListener;

    /// A one-shot server: reads a request head, records it, writes `answer`,
    /// then keeps the connection open for `then` to use.
    async fn serve(answer: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<(Vec<u8>, TcpStream)>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut chunk = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0);
                head.extend_from_slice(&chunk[..n]);
            }
            s.write_all(answer).await.unwrap();
            (head, s)
        });
        (addr, task)
    }

    fn upgrade_request() -> Request<()> {
        Request::get("/user/x/api/kernels/k/channels?session_id=1")
            .header("host", "nb:8888")
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap()
    }

    async fn exchange_with(answer: &'static [u8]) -> (Result<Answer, HandshakeError>, Vec<u8>, TcpStream) {
        let (addr, server) = serve(answer).await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let result = exchange(stream, &upgrade_request()).await;
        let (head, s) = server.await.unwrap();
        (result, head, s)
    }

    /// The server writes `answer`, then closes the connection.
    async fn exchange_then_close(answer: &'static [u8]) -> Result<Answer, HandshakeError> {
        let (addr, server) = serve(answer).await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let closer = tokio::spawn(async move { drop(server.await.unwrap()) });
        let result = exchange(stream, &upgrade_request()).await;
        closer.await.unwrap();
        result
    }

    #[tokio::test]
    async fn a_101_keeps_the_connection_and_the_frame_that_came_with_it() {
        let (answer, head, mut server) = exchange_with(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi",
        )
        .await;
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("GET /user/x/api/kernels/k/channels?session_id=1 HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        let Ok(Answer::Switched { headers, mut stream }) = answer else { panic!("not switched") };
        assert_eq!(headers["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        server.write_all(b"\x81\x03you").await.unwrap();
        let mut got = [0u8; 9];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x81\x02hi\x81\x03you", "the early frame first, then the stream");
        stream.write_all(b"\x88\x00").await.unwrap();
        let mut back = [0u8; 2];
        server.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"\x88\x00");
    }

    #[tokio::test]
    async fn a_refusal_is_relayed_with_its_body_by_content_length() {
        let (answer, _, _server) = exchange_with(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\nX-Why: origin\r\n\r\nforbiddenEXTRA",
        )
        .await;
        let Ok(Answer::Refused(resp)) = answer else { panic!("not refused") };
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(resp.headers()["x-why"], "origin");
        assert_eq!(resp.body().as_ref(), b"forbidden");
    }

    #[tokio::test]
    async fn a_chunked_refusal_is_decoded_after_a_100_continue() {
        let (answer, _, _server) = exchange_with(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n\
              4;ext=1\r\nCan \r\nc\r\nonly Upgrade\r\n0\r\nX-Trailer: t\r\n\r\n",
        )
        .await;
        let Ok(Answer::Refused(resp)) = answer else { panic!("not refused") };
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert!(!resp.headers().contains_key("transfer-encoding"));
        assert_eq!(resp.body().as_ref(), b"Can only Upgrade");
    }

    #[tokio::test]
    async fn a_refusal_without_framing_ends_with_the_stream() {
        let answer = exchange_then_close(b"HTTP/1.1 404 Not Found\r\n\r\nno such kernel").await;
        let Ok(Answer::Refused(resp)) = answer else { panic!("not refused") };
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.body().as_ref(), b"no such kernel");
    }

    #[tokio::test]
    async fn garbage_and_oversized_answers_are_errors_not_panics() {
        let (answer, _, _s) = exchange_with(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
        assert!(matches!(answer, Err(HandshakeError::Malformed(_))));
        let (answer, _, _s) = exchange_with(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n").await;
        assert!(matches!(answer, Err(HandshakeError::TooLong(_))));
        let (answer, _, _s) =
            exchange_with(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").await;
        assert!(matches!(answer, Err(HandshakeError::Malformed(_))));
        let answer = exchange_then_close(b"HTTP/1.1 101 Switching").await;
        assert!(matches!(answer, Err(HandshakeError::Io(_))), "a head cut short");
    }
}
