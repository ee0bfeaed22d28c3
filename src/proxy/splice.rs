//! The WebSocket tunnel: after both sides switched protocols, bytes are copied
//! both ways as they come (nothing is buffered or re-framed). Only the frame
//! headers are read on the way, so that data frames count as activity and the
//! ping/pong that keeps an idle tab's socket open does not. The session's
//! switch (logout, recycling) closes the tunnel.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

use super::routes::Route;

const BUFFER: usize = 8 * 1024;

/// Copy both ways until either side closes or `closed` fires (logout,
/// recycling). Generic over the streams, so tests use in-memory pipes.
///
/// The first end of stream ends the tunnel, once what came before it has been
/// written on: a WebSocket has its own closing handshake, so passing a TCP
/// half-close on (a `shutdown`, then waiting for the other side's) only costs two
/// system calls and a round trip per session. nginx's upgraded connections do the same.
pub async fn splice<A, B>(client: A, upstream: B, route: &Route, closed: CancellationToken)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut client = Touching { inner: client, route, frames: FrameWatcher::default() };
    let mut upstream = Touching { inner: upstream, route, frames: FrameWatcher::default() };
    // 8 KiB a direction, nginx's proxy_buffer_size: an idle tunnel then costs about
    // what nginx's does (19 against 18 KB); with 16 KiB it was 28 KB, and the heap kept
    // growing over rounds of open and close (bench figure 3).
    tokio::select! {
        _ = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, BUFFER, BUFFER) => {}
        () = closed.cancelled() => {}
    }
}

/// A stream that marks the route active whenever a data frame arrives.
struct Touching<'a, T> {
    inner: T,
    route: &'a Route,
    frames: FrameWatcher,
}

impl<T: AsyncRead + Unpin> AsyncRead for Touching<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let this = &mut *self;
            if this.frames.feed(&buf.filled()[before..]) {
                this.route.touch();
            }
        }
        poll
    }
}

/// Follows WebSocket frame boundaries (RFC 6455 §5.2) through a byte stream,
/// reading headers only. If the stream stops making sense, every byte counts
/// as activity (never less activity than there was).
#[derive(Default)]
struct FrameWatcher {
    header: Vec<u8>,
    payload_left: u64,
    lost: bool,
}

impl FrameWatcher {
    /// Feed bytes; true if a data frame (text, binary, continuation) began.
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        if self.lost {
            return true;
        }
        let mut data = false;
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skip = self.payload_left.min(bytes.len() as u64);
                self.payload_left -= skip;
                bytes = &bytes[skip as usize..];
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            let Some((opcode, payload)) = parse_header(&self.header) else { continue };
            self.header.clear();
            match opcode {
                0x0..=0x2 => data = true,
                0x8..=0xA => {}
                _ => {
                    self.lost = true;
                    return true;
                }
            }
            self.payload_left = payload;
        }
        data
    }
}

/// (opcode, payload length) once `h` holds a whole frame header.
fn parse_header(h: &[u8]) -> Option<(u8, u64)> {
    if h.len() < 2 {
        return None;
    }
    let opcode = h[0] & 0x0F;
    let masked = h[1] & 0x80 != 0;
    let (len_bytes, short) = match h[1] & 0x7F {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(n as u64)),
    };
    let total = 2 + len_bytes + if masked { 4 } else { 0 };
    if h.len() < total {
        return None;
    }
    let payload =
        short.unwrap_or_else(|| h[2..2 + len_bytes].iter().fold(0u64, |acc, b| (acc << 8) | *b as u64));
    Some((opcode, payload))
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Touching<'_, T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    /// Called by the copy once the other side has ended and everything it sent is
    /// flushed here: ending the copy (an error is its only way out) drops both
    /// streams, which closes them.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the other side ended the tunnel")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn route() -> Route {
        Route::new(crate::slot::SlotId::random(), "c".into(), ([127, 0, 0, 1], 1).into(), "t", None, 0)
    }

    fn frame(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        let mask = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(mask | n as u8),
            n if n < 65536 => {
                f.push(mask | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(mask | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn pings_are_not_activity_data_frames_are() {
        let mut w = FrameWatcher::default();
        assert!(!w.feed(&frame(0x9, b"ping", false)));
        assert!(!w.feed(&frame(0xA, b"pong", true)));
        assert!(w.feed(&frame(0x1, b"{\"msg\": 1}", true)));
        // A big binary frame split at awkward places, then a ping.
        let mut bytes = frame(0x2, &vec![0x89; 70_000], false);
        bytes.extend(frame(0x9, b"", false));
        let (a, rest) = bytes.split_at(1);
        let (b, c) = rest.split_at(40_000);
        assert!(!w.feed(a), "half a header says nothing yet");
        assert!(w.feed(b));
        assert!(!w.feed(c), "the rest of the payload, then a ping");
        let mut bytes = frame(0x9, b"", false);
        bytes.extend(frame(0x1, &[b'x'; 300], true));
        for chunk in bytes.chunks(3) {
            w.feed(chunk);
        }
        assert_eq!(w.payload_left, 0);
        assert!(w.header.is_empty());
        assert!(!w.lost);
        assert!(w.feed(&[0x83, 0x00]), "an unknown opcode: count everything from now on");
    }

    #[tokio::test]
    async fn bytes_flow_both_ways_and_count_as_activity() {
        let route = route();
        let (mut browser, client_side) = tokio::io::duplex(64);
        let (upstream_side, mut jupyter) = tokio::io::duplex(64);
        let closed = CancellationToken::new();
        let before = route.last_activity_millis();
        let pump = splice(client_side, upstream_side, &route, closed.clone());
        let talk = async {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let msg = frame(0x1, b"execute", true);
            browser.write_all(&msg).await.unwrap();
            let mut buf = vec![0u8; msg.len()];
            jupyter.read_exact(&mut buf).await.unwrap();
            assert_eq!(buf, msg);
            let reply = frame(0x1, b"result", false);
            jupyter.write_all(&reply).await.unwrap();
            let mut buf = vec![0u8; reply.len()];
            browser.read_exact(&mut buf).await.unwrap();
            assert_eq!(buf, reply);
            closed.cancel();
        };
        tokio::join!(pump, talk);
        assert!(route.last_activity_millis() >= before);
    }

    #[tokio::test]
    async fn the_first_end_of_stream_closes_both_sides_after_its_bytes() {
        let route = route();
        let (mut browser, client_side) = tokio::io::duplex(64);
        let (upstream_side, mut jupyter) = tokio::io::duplex(64);
        let pump = splice(client_side, upstream_side, &route, CancellationToken::new());
        let talk = async {
            let close = frame(0x8, &1000u16.to_be_bytes(), false);
            jupyter.write_all(&close).await.unwrap();
            jupyter.shutdown().await.unwrap();
            let mut got = Vec::new();
            browser.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, close, "the close frame arrives, then the end of the stream");
            // The browser never closed its side, yet Jupyter's side is closed too.
            let mut rest = Vec::new();
            jupyter.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), async { tokio::join!(pump, talk) })
            .await
            .expect("the tunnel ends without waiting for the browser's end of stream");
    }

    #[tokio::test]
    async fn the_switch_closes_the_tunnel() {
        let route = route();
        let (_browser, client_side) = tokio::io::duplex(64);
        let (upstream_side, _jupyter) = tokio::io::duplex(64);
        let closed = CancellationToken::new();
        closed.cancel();
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            splice(client_side, upstream_side, &route, closed),
        )
        .await
        .expect("a cancelled tunnel ends at once");
    }
}
