//! Connections to notebook servers, held by the browser connection they serve.
//!
//! HTTP/1 carries one request at a time and hyper reads a connection's next
//! request only after the last response went out whole, so a browser connection
//! never needs more than one upstream connection for its requests. Keeping that
//! one with the browser connection skips a shared pool's lock, map lookup and
//! the task per request that hands a connection back: this is the gateway's
//! hottest path (bench figure 1). WebSocket upgrades take a connection of their
//! own, since the upgrade consumes it.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use http::{header, HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

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
}

/// The upstream connection of one browser connection.
#[derive(Default)]
pub struct Upstream {
    kept: Mutex<Option<(SocketAddr, SendRequest<Incoming>)>>,
}

impl Upstream {
    /// Send `req` (origin-form URI) to `addr` on the kept connection, or on a
    /// new one if there is none, it goes elsewhere, or it has closed.
    pub async fn send(&self, addr: SocketAddr, req: Request<Incoming>) -> Result<Response<Incoming>, UpstreamError> {
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
        let mut sender = connect(addr, false).await?;
        let resp = sender.send_request(req).await?;
        self.keep(addr, sender);
        Ok(resp)
    }

    fn take(&self, addr: SocketAddr) -> Option<SendRequest<Incoming>> {
        let mut kept = self.kept.lock().expect("upstream lock");
        match kept.take() {
            Some((a, sender)) if a == addr && !sender.is_closed() => Some(sender),
            _ => None,
        }
    }

    fn keep(&self, addr: SocketAddr, sender: SendRequest<Incoming>) {
        *self.kept.lock().expect("upstream lock") = Some((addr, sender));
    }
}

/// Send a WebSocket upgrade on a connection of its own.
pub async fn upgrade(addr: SocketAddr, req: Request<Incoming>) -> Result<Response<Incoming>, UpstreamError> {
    let mut sender = connect(addr, true).await?;
    Ok(sender.send_request(with_host(req, addr)).await?)
}

/// HTTP/1.1 requires a Host; an HTTP/1.0 client may not have sent one.
fn with_host(mut req: Request<Incoming>, addr: SocketAddr) -> Request<Incoming> {
    if !req.headers().contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(&addr.to_string()) {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    req
}

/// Open a connection and run it on its own task until both ends are done
/// with it (the sender dropped and the last response read, or an upgrade).
async fn connect(addr: SocketAddr, upgrades: bool) -> Result<SendRequest<Incoming>, UpstreamError> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(UpstreamError::Connect(addr, e)),
        Err(_) => return Err(UpstreamError::ConnectTimeout(addr)),
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::Builder::new().handshake(TokioIo::new(stream)).await?;
    if upgrades {
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "upstream connection ended");
            }
        });
    } else {
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "upstream connection ended");
            }
        });
    }
    Ok(sender)
}
