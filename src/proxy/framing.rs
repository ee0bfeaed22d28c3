//! How a notebook server's answer delimits its body (RFC 9112 §6.3), and an
//! incremental decoder for chunked bodies (§7.1) fed from a read buffer: the
//! streamed answers of `upstream` and the buffered refusals of `handshake` both
//! use them. Trailers are read and dropped.

use bytes::{Buf, Bytes, BytesMut};
use http::{header, HeaderMap, StatusCode};

/// A chunk-size line or the trailer section longer than this is not a notebook
/// server's.
const MAX_LINE: usize = 8 * 1024;

/// How an answer's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// None: an answer to HEAD, a 1xx, 204 or 304.
    Empty,
    Length(u64),
    Chunked,
    /// Up to the end of the stream: the connection is not reused.
    UntilClose,
}

/// The framing of an answer with `status` and `headers` to a HEAD request or not.
pub fn framing(head_request: bool, status: StatusCode, headers: &HeaderMap) -> Result<Framing, Malformed> {
    if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Ok(if super::has_token(headers, header::TRANSFER_ENCODING, "chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    // Repeated or listed lengths must agree (RFC 9110 §8.6); digits only.
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.to_str().map_err(|_| Malformed("content-length"))?.split(',') {
            let item = item.trim();
            let n = (!item.is_empty() && item.bytes().all(|b| b.is_ascii_digit()))
                .then(|| item.parse::<u64>().ok())
                .flatten()
                .ok_or(Malformed("content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Malformed("conflicting content-lengths"));
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::UntilClose, Framing::Length))
}

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one, so many bytes read.
    Trailers(usize),
    Done,
}

/// What one step of decoding gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Body bytes.
    Data(Bytes),
    /// The buffer holds no whole next piece: read more, then step again.
    More,
    /// The body ended; the buffer now starts after it.
    Done,
}

/// The body's framing is broken.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

#[derive(Debug)]
pub struct Decoder {
    state: State,
}

impl Default for Decoder {
    fn default() -> Self {
        Self { state: State::Size }
    }
}

impl Decoder {
    /// Decode from the front of `buf`, consuming what was decoded.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, Malformed> {
        loop {
            match self.state {
                State::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((len, size))) => {
                        buf.advance(len);
                        self.state = if size == 0 { State::Trailers(0) } else { State::Data(size) };
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_LINE => {
                        return Err(Malformed("chunk size line too long"))
                    }
                    Ok(httparse::Status::Partial) => return Ok(Step::More),
                    Err(_) => return Err(Malformed("chunk size")),
                },
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - take as u64;
                    self.state = if left == 0 { State::DataEnd } else { State::Data(left) };
                    return Ok(Step::Data(buf.split_to(take).freeze()));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Malformed("chunk end"));
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers(read) => match buf.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        buf.advance(2);
                        self.state = State::Done;
                    }
                    Some(i) if read + i + 2 <= MAX_LINE => {
                        buf.advance(i + 2);
                        self.state = State::Trailers(read + i + 2);
                    }
                    None if read + buf.len() <= MAX_LINE => return Ok(Step::More),
                    _ => return Err(Malformed("trailers too long")),
                },
                State::Done => return Ok(Step::Done),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `wire` `piece` bytes at a time; the body, and what was left after it.
    fn decode_in_pieces(wire: &[u8], piece: usize) -> Result<(Vec<u8>, Vec<u8>), Malformed> {
        let (mut dec, mut buf, mut body) = (Decoder::default(), BytesMut::new(), Vec::new());
        let mut rest = wire;
        loop {
            match dec.step(&mut buf)? {
                Step::Data(b) => body.extend_from_slice(&b),
                Step::Done => return Ok((body, [&buf[..], rest].concat())),
                Step::More if rest.is_empty() => return Err(Malformed("cut short")),
                Step::More => {
                    let n = piece.min(rest.len());
                    buf.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
            }
        }
    }

    #[test]
    fn a_body_decodes_the_same_whatever_the_read_sizes() {
        let wire = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for piece in [1, 2, 3, 7, 64, wire.len()] {
            let (body, rest) = decode_in_pieces(wire, piece).unwrap();
            assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.", "pieces of {piece}");
            assert_eq!(rest, b"NEXT", "what follows the body stays in the buffer");
        }
    }

    #[test]
    fn broken_framing_is_an_error() {
        assert_eq!(decode_in_pieces(b"zz\r\n", 64), Err(Malformed("chunk size")));
        assert_eq!(decode_in_pieces(b"2\r\nabXY0\r\n\r\n", 64), Err(Malformed("chunk end")));
        let long_size = [b'0'; MAX_LINE + 10];
        assert!(decode_in_pieces(&long_size, 1024).is_err(), "a size line without end");
        let mut trailers = b"0\r\n".to_vec();
        trailers.extend(std::iter::repeat_n(b"X-A: b\r\n".as_slice(), 2000).flatten());
        assert_eq!(decode_in_pieces(&trailers, 512), Err(Malformed("trailers too long")));
    }
}
