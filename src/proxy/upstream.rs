//! Connections to notebook servers, held by the browser connection they serve.
//!
//! HTTP/1 carries one request at a time and hyper reads a connection's next
//! request only after the last response went out whole, so a browser connection
//! never needs more than one upstream connection for its requests. Keeping that
//! one with the browser connection skips a shared pool's lock, map lookup and
//! the task per request that hands a connection back: this is the gateway's
//! hottest path (bench figure 1). WebSocket upgrades take a connection of their
//! own, since the upgrade consumes it, spoken in plain bytes (`handshake`).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use http::{header, HeaderValue, Request, Response};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::handshake::{self, Answer, HandshakeError};

/// A notebook server that does not accept a connection within this is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait for a kept connection to finish its previous exchange before
/// a fresh one is opened instead (it is normally ready at once).
const READY_WAIT: Duration = Duration::from_secs(1);

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
}

/// The upstream connection of one browser connection. `B`: the request body
/// (the browser's, streamed through).
pub struct Upstream<B = Incoming> {
    kept: Mutex<Option<(SocketAddr, SendRequest<B>)>>,
}

impl<B> Default for Upstream<B> {
    fn default() -> Self {
        Self { kept: Mutex::new(None) }
    }
}

impl<B> Upstream<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Send `req` (origin-form URI) to `addr` on the kept connection, or on a
    /// new one if there is none, it goes elsewhere, or it has closed.
    pub async fn send(&self, addr: SocketAddr, req: Request<B>) -> Result<Response<Incoming>, UpstreamError> {
        let mut req = with_host(req, addr);
        if let Some(mut sender) = self.take(addr) {
            let ready = sender.is_ready()
                || matches!(tokio::time::timeout(READY_WAIT, sender.ready()).await, Ok(Ok(())));
            if ready {
                match sender.try_send_request(req).await {
                    Ok(resp) => {
                        self.keep(addr, sender);
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
        self.keep(addr, sender);
        Ok(resp)
    }

    fn take(&self, addr: SocketAddr) -> Option<SendRequest<B>> {
        let mut kept = self.kept.lock().expect("upstream lock");
        match kept.take() {
            Some((a, sender)) if a == addr && !sender.is_closed() => Some(sender),
            _ => None,
        }
    }

    fn keep(&self, addr: SocketAddr, sender: SendRequest<B>) {
        *self.kept.lock().expect("upstream lock") = Some((addr, sender));
    }
}

/// Send a WebSocket upgrade (a head without a body) on a connection of its own,
/// in plain bytes (see `handshake`).
pub async fn upgrade(addr: SocketAddr, req: Request<()>) -> Result<Answer, UpstreamError> {
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

/// Open a connection and run it on its own task until both ends are done
/// with it (the sender dropped and the last response read).
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
    use http_body_util::{BodyExt, Empty};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A raw HTTP/1.1 server on loopback that answers `close_after` requests
    /// per connection, then closes it. Returns its address and the number of
    /// connections it accepted.
    async fn server(close_after: usize) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    for _ in 0..close_after {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                            }
                        }
                        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                        buf.drain(..end);
                        let body = format!("conn {n}");
                        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                        if stream.write_all(format!("{head}{body}").as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    // Closed without `Connection: close`, as an idle timeout would.
                });
            }
        });
        (addr, accepted)
    }

    async fn get(upstream: &Upstream<Empty<bytes::Bytes>>, addr: SocketAddr) -> String {
        let req = Request::get("/api/status").body(Empty::new()).unwrap();
        let resp = upstream.send(addr, req).await.expect("the request is answered");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_browser_connection_reuses_one_upstream_connection() {
        let (addr, accepted) = server(usize::MAX).await;
        let upstream = Upstream::default();
        for _ in 0..5 {
            assert_eq!(get(&upstream, addr).await, "conn 1");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced_and_the_request_still_answered() {
        let (addr, accepted) = server(1).await;
        let upstream = Upstream::default();
        for i in 1..=4 {
            assert_eq!(get(&upstream, addr).await, format!("conn {i}"));
            // Let the close arrive, as between a browser's clicks.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn another_upstream_gets_its_own_connection() {
        let (a, accepted_a) = server(usize::MAX).await;
        let (b, accepted_b) = server(usize::MAX).await;
        let upstream = Upstream::default();
        get(&upstream, a).await;
        get(&upstream, b).await;
        get(&upstream, a).await;
        assert_eq!(accepted_a.load(Ordering::SeqCst), 2, "the kept connection went to b");
        assert_eq!(accepted_b.load(Ordering::SeqCst), 1);
    }
}
