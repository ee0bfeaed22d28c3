//! A browser connection's plain requests to its notebook server, served in
//! plain bytes beside hyper's server.
//!
//! Why: most of an open JupyterLab tab's requests are small bodiless GETs on a
//! kept connection (bench figure 1). For those, hyper's server (its dispatcher's
//! polls, a `Request` and a service future per request, the answer's head and
//! body through its encoder) was a third of the user time nbgate spent per
//! request above nginx's (0.8 of 2.4 µs, A/B by hand on 2026-12-04). Here such
//! a request is read with httparse, forwarded by the same `relay` that hyper's
//! requests go through, and its answer is written in one write when it is
//! whole. Anything else on the connection (another method, a body, an upgrade,
//! `Connection` other than keep-alive, HTTP/1.0, a head that does not parse or
//! is long, a request that `admit` does not forward) hands the connection to
//! hyper with the bytes read so far, for good: refusals and unusual framing
//! keep their one implementation.

use std::cell::RefCell;
use std::io::{self, IoSlice};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::first::HEADER_TIMEOUT;
use super::prefixed::Prefixed;
use super::{admit, handshake, relay, Admission, Browser};
use crate::app::App;

/// A head longer than this is hyper's to read (its limit is 64 KiB).
const MAX_HEAD: usize = 16 * 1024;
/// Room made for each read of a request head.
const READ: usize = 4096;
/// Body data up to this is copied behind the head, for one write.
const COALESCE: usize = 16 * 1024;
/// Body gathered from frames that are ready before it is written.
const MAX_GATHER: usize = 512 * 1024;

/// Serve `stream`'s requests while they are plain GETs and HEADs that `admit`
/// forwards; `buf` holds what was read of the connection so far. Returns the
/// connection for hyper, or None once it is closed (by the browser, a failed
/// write, the header timeout, or the server stopping between requests).
pub async fn serve<S>(
    app: &App,
    browser: &Browser,
    mut stream: S,
    mut buf: BytesMut,
    stop: &mut watch::Receiver<bool>,
) -> Option<Prefixed<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = Vec::new();
    loop {
        // As hyper's `header_read_timeout`: from the end of the last answer, so
        // an idle kept connection is closed too.
        let deadline = Instant::now() + HEADER_TIMEOUT;
        let (req, len) = loop {
            match parse(&buf) {
                Parsed::Whole(req, len) => break (req, len),
                Parsed::Partial if buf.len() < MAX_HEAD => {}
                Parsed::Partial | Parsed::Other => return Some(Prefixed::new(buf.freeze(), stream)),
            }
            buf.reserve(READ);
            tokio::select! {
                biased;
                read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)) => match read {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return None,
                },
                _ = stop.wait_for(|stopped| *stopped) => return None,
            }
        };
        let (route, lab_page) = match admit(app, &req) {
            Admission::Forward { route, upgrade: false, lab_page, .. } => (route, lab_page),
            _ => return Some(Prefixed::new(buf.freeze(), stream)),
        };
        buf.advance(len);
        let head_request = req.method() == Method::HEAD;
        let resp = relay(app, browser, req.into_parts().0, None, &route, lab_page).await;
        if let Err(e) = write_answer(&mut stream, resp, head_request, &mut out).await {
            tracing::debug!(error = %e, "an answer was not written whole; closing the connection");
            return None;
        }
        // An idle kept connection does not keep a big answer's scratch.
        if out.capacity() > READ {
            out = Vec::new();
        }
        if *stop.borrow() {
            return None;
        }
    }
}

/// What the start of `buf` holds. Not boxed: it lives on the stack for one
/// request, and a box would be an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// A whole request this module serves, and the length of its head.
    Whole(Request<()>, usize),
    /// The start of a head.
    Partial,
    /// Anything else: hyper's.
    Other,
}

/// A GET or HEAD to `/user/…` in HTTP/1.1, with one Host, no body, no upgrade,
/// no `Expect`, and no `Connection` but keep-alive.
fn parse(buf: &[u8]) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut slots);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let method = match parsed.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return Parsed::Other,
    };
    let Some(path) = parsed.path.filter(|p| p.starts_with("/user/")) else {
        return Parsed::Other;
    };
    if parsed.version != Some(1) {
        return Parsed::Other;
    }
    let mut hosts = 0;
    for h in parsed.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("connection") {
            let keep_alive = |t: &[u8]| t.trim_ascii().eq_ignore_ascii_case(b"keep-alive");
            if !h.value.split(|&b| b == b',').all(keep_alive) {
                return Parsed::Other;
            }
        } else if ["content-length", "transfer-encoding", "upgrade", "expect"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            return Parsed::Other;
        }
    }
    if hosts != 1 {
        return Parsed::Other;
    }
    match handshake::bodiless_request(method, path, parsed.headers) {
        Some(req) => Parsed::Whole(req, len),
        None => Parsed::Other,
    }
}

/// Write `resp` as HTTP/1.1, framed by its body: its length when known,
/// chunked otherwise, none after HEAD, 1xx, 204 or 304. `out` is scratch.
/// A body that fails part-way is an error: the connection must then close.
pub async fn write_answer<S, B>(
    stream: &mut S,
    resp: Response<B>,
    head_request: bool,
    out: &mut Vec<u8>,
) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut parts, mut body) = resp.into_parts();
    let status = parts.status;
    let bodiless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let headers = &mut parts.headers;
    let chunked = !bodiless
        && match body.size_hint().exact() {
            Some(length) => {
                headers.remove(header::TRANSFER_ENCODING);
                // Usually the upstream's own, which its framing was read by.
                let given = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
                if given.and_then(|v| v.parse::<u64>().ok()) != Some(length) {
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
                }
                false
            }
            None => {
                headers.remove(header::CONTENT_LENGTH);
                headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
                true
            }
        };
    if !headers.contains_key(header::DATE) {
        headers.insert(header::DATE, http_date());
    }
    out.clear();
    handshake::response_head(out, status, headers);
    // Frames that are ready are gathered and written together (one `writev`),
    // as hyper's server did: writing each one as it came took 10 system calls
    // per 1 MiB answer instead of 6, and 12 % more system time.
    let mut pending = Vec::new();
    let mut end = bodiless || body.is_end_stream();
    while !end {
        let mut next = body.frame().await;
        let mut gathered = 0;
        loop {
            match next {
                None => end = true,
                Some(Err(e)) => return Err(io::Error::other(e)),
                // Trailers are dropped, as `upstream` drops them.
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        gathered += data.len();
                        push_data(out, &mut pending, data, chunked);
                    }
                    end = body.is_end_stream();
                }
            }
            if end || gathered >= MAX_GATHER {
                break;
            }
            match body.frame().now_or_never() {
                Some(ready) => next = ready,
                None => break,
            }
        }
        if !end {
            write_pieces(stream, out, &mut pending).await?;
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    write_pieces(stream, out, &mut pending).await?;
    // TLS streams hold written bytes until flushed; for TCP it is free.
    stream.flush().await
}

/// Queue `data` to be written after what `out` holds: small data is copied
/// into `out`, large data is queued as it is, behind `out`'s bytes.
fn push_data(out: &mut Vec<u8>, pending: &mut Vec<Bytes>, data: Bytes, chunked: bool) {
    if data.is_empty() {
        return;
    }
    if chunked {
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    }
    if data.len() <= COALESCE {
        out.extend_from_slice(&data);
    } else {
        if !out.is_empty() {
            pending.push(Bytes::copy_from_slice(out));
            out.clear();
        }
        pending.push(data);
    }
    if chunked {
        out.extend_from_slice(b"\r\n");
    }
}

/// Write `pending`, then `out`, in order, in as few system calls as the stream
/// takes (a plain TCP stream takes up to 16 pieces per `writev`).
async fn write_pieces<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut Vec<u8>,
    pending: &mut Vec<Bytes>,
) -> io::Result<()> {
    if pending.is_empty() {
        stream.write_all(out).await?;
        out.clear();
        return Ok(());
    }
    if !out.is_empty() {
        pending.push(Bytes::copy_from_slice(out));
        out.clear();
    }
    let mut first = 0;
    while first < pending.len() {
        let mut slices = [IoSlice::new(&[]); 16];
        let count = slices.len().min(pending.len() - first);
        for (slice, piece) in slices.iter_mut().zip(&pending[first..]) {
            *slice = IoSlice::new(piece);
        }
        let mut written = stream.write_vectored(&slices[..count]).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let piece = &mut pending[first];
            let taken = written.min(piece.len());
            piece.advance(taken);
            written -= taken;
            if piece.is_empty() {
                first += 1;
            }
        }
    }
    pending.clear();
    Ok(())
}

/// `Date` for an answer without one (a proxy adds it, RFC 9110 §6.6.1, as
/// hyper's server did), formatted once a second per worker thread.
fn http_date() -> HeaderValue {
    thread_local! {
        static LAST: RefCell<(i64, HeaderValue)> = const { RefCell::new((i64::MIN, HeaderValue::from_static(""))) };
    }
    let now = chrono::Utc::now();
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != now.timestamp() {
            let text = now.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            *last = (now.timestamp(), HeaderValue::from_str(&text).expect("a date is a valid header"));
        }
        last.1.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use http_body_util::{Full, StreamBody};

    fn whole(raw: &[u8]) -> Option<(Request<()>, usize)> {
        match parse(raw) {
            Parsed::Whole(req, len) => Some((req, len)),
            _ => None,
        }
    }

    #[test]
    fn plain_gets_and_heads_are_taken_with_their_head_length() {
        let raw = b"GET /user/abc/api/status?x=1 HTTP/1.1\r\nHost: gw\r\nConnection: Keep-Alive\r\n\
            Cookie: nbgate-session=s\r\n\r\nGET /user/abc/next HTTP/1.1\r\n";
        let (req, len) = whole(raw).expect("a GET");
        assert_eq!(&raw[len..len + 4], b"GET ");
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/user/abc/api/status");
        assert_eq!(req.uri().query(), Some("x=1"));
        assert_eq!(req.headers()["cookie"], "nbgate-session=s");
        let (req, _) = whole(b"HEAD /user/abc/f HTTP/1.1\r\nhost: gw\r\n\r\n").expect("a HEAD");
        assert_eq!(req.method(), Method::HEAD);
    }

    #[test]
    fn a_head_cut_short_waits_for_more() {
        assert!(matches!(parse(b""), Parsed::Partial));
        assert!(matches!(parse(b"GET /user/abc/x HTTP/1.1\r\nHost: g"), Parsed::Partial));
    }

    #[test]
    fn everything_else_is_left_to_hyper() {
        let cases: [&[u8]; 12] = [
            b"POST /user/abc/x HTTP/1.1\r\nHost: g\r\nContent-Length: 0\r\n\r\n",
            b"GET /user/abc/x HTTP/1.0\r\nHost: g\r\n\r\n",
            b"GET /hub/login HTTP/1.1\r\nHost: g\r\n\r\n",
            b"GET /user/abc/x HTTP/1.1\r\n\r\n",
            b"GET /user/abc/x HTTP/1.1\r\nHost: g\r\nHost: h\r\n\r\n",
            b"GET /user/abc/x HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\n\r\nhello",
            b"GET /user/abc/x HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET /user/abc/x HTTP/1.1\r\nHost: g\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET /user/abc/x HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n",
            b"GET /user/abc/x HTTP/1.1\r\nHost: g\r\nExpect: 100-continue\r\n\r\n",
            b"GET /user/abc/x HTTP/1.1\r\nHost: g\r\nX: a\x7fb\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ];
        for case in cases {
            assert!(matches!(parse(case), Parsed::Other), "{}", String::from_utf8_lossy(case));
        }
    }

    async fn written<B>(resp: Response<B>, head_request: bool) -> io::Result<String>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut got = Vec::new();
        write_answer(&mut got, resp, head_request, &mut Vec::new()).await?;
        Ok(String::from_utf8(got).unwrap())
    }

    #[tokio::test]
    async fn a_known_length_is_sent_as_content_length_with_a_date() {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"hello")));
        resp.headers_mut().insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        let got = written(resp, false).await.unwrap();
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.contains("content-length: 5\r\n") && got.contains("\r\ndate: "), "{got}");
        assert!(!got.contains("transfer-encoding"), "{got}");
        assert!(got.ends_with("GMT\r\n\r\nhello"), "{got}");
    }

    #[tokio::test]
    async fn an_unknown_length_is_chunked_and_the_upstreams_date_is_kept() {
        let frames: Vec<Result<Frame<Bytes>, io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"hello"))),
            Ok(Frame::data(Bytes::new())),
            Ok(Frame::data(Bytes::from(vec![b'x'; 20_000]))),
        ];
        let mut resp = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
        resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        resp.headers_mut().insert(header::DATE, HeaderValue::from_static("then"));
        let got = written(resp, false).await.unwrap();
        assert!(got.contains("transfer-encoding: chunked\r\n") && got.contains("date: then\r\n"), "{got}");
        assert!(!got.contains("content-length"), "{got}");
        let body = got.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(body, format!("5\r\nhello\r\n4e20\r\n{}\r\n0\r\n\r\n", "x".repeat(20_000)));
    }

    #[tokio::test]
    async fn heads_and_204s_have_no_body_and_keep_their_headers() {
        let mut resp = Response::new(Full::new(Bytes::new()));
        resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("1234"));
        let got = written(resp, true).await.unwrap();
        assert!(got.contains("content-length: 1234\r\n") && got.ends_with("\r\n\r\n"), "{got}");
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let got = written(resp, false).await.unwrap();
        assert!(got.starts_with("HTTP/1.1 204 No Content\r\n") && got.ends_with("\r\n\r\n"), "{got}");
        assert!(!got.contains("content-length") && !got.contains("transfer-encoding"), "{got}");
    }

    #[tokio::test]
    async fn pieces_written_a_few_bytes_at_a_time_arrive_whole_and_in_order() {
        let (mut ours, mut theirs) = tokio::io::duplex(7);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut out = b"tail".to_vec();
        let mut pending = vec![Bytes::from_static(b"head;"), Bytes::new(), Bytes::from(vec![b'x'; 100])];
        write_pieces(&mut ours, &mut out, &mut pending).await.unwrap();
        assert!(out.is_empty() && pending.is_empty());
        drop(ours);
        let want = [&b"head;"[..], &[b'x'; 100], b"tail"].concat();
        assert_eq!(reader.await.unwrap(), want);
    }

    #[tokio::test]
    async fn a_body_that_fails_part_way_is_an_error() {
        let frames: Vec<Result<Frame<Bytes>, io::Error>> =
            vec![Ok(Frame::data(Bytes::from_static(b"par"))), Err(io::ErrorKind::UnexpectedEof.into())];
        let resp = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
        assert!(written(resp, false).await.is_err());
    }
}
