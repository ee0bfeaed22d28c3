//! HTTPS: certificates loaded with rustls, reloaded when the files change.
//!
//! - [`load_server_config`] reads `NBGATE_TLS_CERT` / `NBGATE_TLS_KEY` (PEM: a
//!   certificate chain, and a PKCS#8, RSA or SEC1 key) into a rustls
//!   `ServerConfig` that speaks HTTP/1.1 only. Errors name the variable, the file
//!   and the problem; they never quote the files' contents.
//! - [`ReloadingAcceptor`] holds the current config; [`ReloadingAcceptor::watch`]
//!   polls the two files and swaps in a renewed pair without a restart. A pair
//!   that does not load keeps the old one.
//! - [`redirect_http`] sends plain-HTTP visitors to the HTTPS port, and
//!   [`HttpRedirect`] can also answer ACME HTTP-01 challenges from a webroot so
//!   that `certbot renew --webroot` works while nbgate holds port 80.

use std::convert::Infallible;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// `Strict-Transport-Security` value for responses served over HTTPS: one year,
/// this host only (no `includeSubDomains`: the organizer's other hosts are not ours).
pub const HSTS: &str = "max-age=31536000";

/// The one ALPN protocol offered: the gateway speaks HTTP/1.1 (WebSocket upgrades).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// How often [`ReloadingAcceptor::watch`] looks at the files by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// A client that connects and then says nothing must not hold a connection
/// slot for long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const CERT_VAR: &str = "NBGATE_TLS_CERT";
const KEY_VAR: &str = "NBGATE_TLS_KEY";

/// Why a certificate/key pair cannot be used, phrased for the operator:
/// `NBGATE_TLS_CERT: /x.pem: no certificate found`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{var}: {}: {problem}", path.display())]
pub struct TlsError {
    /// `NBGATE_TLS_CERT` or `NBGATE_TLS_KEY`: the setting to fix.
    pub var: &'static str,
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong with it; never contains the file's contents.
    pub problem: String,
}

impl TlsError {
    fn cert(path: &Path, problem: impl Into<String>) -> Self {
        Self { var: CERT_VAR, path: path.to_owned(), problem: problem.into() }
    }
    fn key(path: &Path, problem: impl Into<String>) -> Self {
        Self { var: KEY_VAR, path: path.to_owned(), problem: problem.into() }
    }
}

/// Read both files and build the server config.
pub fn load_server_config(cert_path: &Path, key_path: &Path) -> Result<ServerConfig, TlsError> {
    let files = Files::read(cert_path, key_path)?;
    server_config_from_pem(&files.cert, &files.key, cert_path, key_path)
}

/// Build the server config from PEM bytes; the paths are only used in errors.
pub fn server_config_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<ServerConfig, TlsError> {
    let chain = parse_chain(cert_pem, cert_path)?;
    let key = parse_key(key_pem, key_path)?;
    // An explicit provider: no process-wide default to install, and no panic if
    // some other crate ever enables a second one.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::cert(cert_path, format!("TLS setup failed: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                TlsError::key(key_path, format!("does not match the certificate in {}", cert_path.display()))
            }
            rustls::Error::InvalidCertificate(e) => {
                TlsError::cert(cert_path, format!("the first certificate is not usable: {e}"))
            }
            _ => TlsError::key(
                key_path,
                "not a usable private key (supported: RSA, ECDSA P-256/P-384, Ed25519)",
            ),
        })?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// Every PEM section of a file, with errors that never echo its lines.
fn sections(
    pem: &[u8],
    path: &Path,
    err: fn(&Path, String) -> TlsError,
) -> Result<Vec<(SectionKind, Vec<u8>)>, TlsError> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| {
        use rustls::pki_types::pem::Error as E;
        // Some variants carry a line of the file (key material, possibly).
        let what = match e {
            E::MissingSectionEnd { .. } => "a PEM section has no END line (truncated file?)",
            E::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed",
            E::Base64Decode(_) => "a PEM section is not valid base64",
            E::SectionTooLarge => "a PEM section is too large",
            _ => "not a PEM file",
        };
        err(path, what.to_string())
    })
}

fn labels(pem: &[u8]) -> impl Iterator<Item = &str> {
    std::str::from_utf8(pem)
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
}

fn parse_chain(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let sections = sections(pem, path, TlsError::cert)?;
    let mut chain = Vec::new();
    let mut has_key = false;
    for (kind, der) in sections {
        match kind {
            SectionKind::Certificate => chain.push(CertificateDer::from(der)),
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                has_key = true
            }
            _ => {}
        }
    }
    if chain.is_empty() {
        let hint = if has_key || labels(pem).any(|l| l.contains("PRIVATE KEY")) {
            " (it holds a private key: are NBGATE_TLS_CERT and NBGATE_TLS_KEY swapped?)"
        } else {
            " (expected a PEM `-----BEGIN CERTIFICATE-----` section, such as certbot's fullchain.pem)"
        };
        return Err(TlsError::cert(path, format!("no certificate found{hint}")));
    }
    Ok(chain)
}

fn parse_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let sections = sections(pem, path, TlsError::key)?;
    let mut keys = Vec::new();
    let mut has_cert = false;
    for (kind, der) in sections {
        if kind == SectionKind::Certificate {
            has_cert = true;
        } else if let Some(key) = PrivateKeyDer::from_pem(kind, der) {
            keys.push(key);
        }
    }
    match keys.len() {
        1 => Ok(keys.pop().expect("one key")),
        0 => {
            let hint = if labels(pem).any(|l| l.contains("ENCRYPTED")) {
                " (the key is encrypted: nbgate needs it unencrypted, e.g. `openssl pkey -in KEY -out KEY.pem`)"
            } else if labels(pem).any(|l| l == "OPENSSH PRIVATE KEY") {
                " (this is an SSH key, not a TLS key)"
            } else if has_cert {
                " (it holds a certificate: are NBGATE_TLS_CERT and NBGATE_TLS_KEY swapped?)"
            } else {
                " (expected PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`, such as certbot's privkey.pem)"
            };
            Err(TlsError::key(path, format!("no private key found{hint}")))
        }
        n => Err(TlsError::key(path, format!("{n} private keys found; expected exactly one"))),
    }
}

/// The two files' bytes, read once so that what is parsed is what is fingerprinted.
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Files {
    fn read(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path, err: fn(&Path, String) -> TlsError| {
            std::fs::read(path).map_err(|e| {
                let why = match e.kind() {
                    std::io::ErrorKind::NotFound => "file not found".to_string(),
                    std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                    _ => format!("cannot read: {e}"),
                };
                err(path, why)
            })
        };
        Ok(Self { cert: read(cert_path, TlsError::cert)?, key: read(key_path, TlsError::key)? })
    }

    fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update((self.cert.len() as u64).to_le_bytes());
        h.update(&self.cert);
        h.update(&self.key);
        h.finalize().into()
    }
}

/// What one look at the files found, for telling a settled change from one under way.
#[derive(Clone, PartialEq, Eq)]
enum Seen {
    Files([u8; 32]),
    Unreadable(String),
}

/// What [`ReloadingAcceptor::poll`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// The files are the ones being served.
    Unchanged,
    /// The files changed since the last look; they are used once they read the
    /// same on two looks in a row (certbot writes the two files one after the other).
    Settling,
    /// The new pair is being served.
    Reloaded,
    /// The new pair (or its absence) cannot be used; the old one is kept.
    Rejected(String),
}

#[derive(Default)]
struct WatchState {
    /// Fingerprint of the files currently served.
    loaded: Option<[u8; 32]>,
    /// What the previous look saw, when it differed from `loaded`.
    previous: Option<Seen>,
    /// A settled state already rejected (warned about once).
    rejected: Option<Seen>,
    last_error: Option<String>,
}

/// The TLS config in use, swapped when the certificate files change.
/// Each new connection takes the current config; open connections keep theirs.
pub struct ReloadingAcceptor {
    cert_path: PathBuf,
    key_path: PathBuf,
    /// Read on every accept, written on reload: a `RwLock` is plenty.
    current: RwLock<Arc<ServerConfig>>,
    state: Mutex<WatchState>,
    reloads: AtomicU64,
    poll_interval: Duration,
}

impl ReloadingAcceptor {
    /// Load the pair now; an error here should stop nbgate from starting.
    pub fn load(cert_path: impl Into<PathBuf>, key_path: impl Into<PathBuf>) -> Result<Self, TlsError> {
        let (cert_path, key_path) = (cert_path.into(), key_path.into());
        let files = Files::read(&cert_path, &key_path)?;
        let config = server_config_from_pem(&files.cert, &files.key, &cert_path, &key_path)?;
        let state = WatchState { loaded: Some(files.fingerprint()), ..Default::default() };
        Ok(Self {
            cert_path,
            key_path,
            current: RwLock::new(Arc::new(config)),
            state: Mutex::new(state),
            reloads: AtomicU64::new(0),
            poll_interval: DEFAULT_POLL_INTERVAL,
        })
    }

    /// From `NBGATE_TLS_CERT`/`NBGATE_TLS_KEY`; `None` when TLS is off.
    pub fn from_config(config: &crate::config::Config) -> Result<Option<Self>, TlsError> {
        match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Self::load(cert, key).map(Some),
            _ => Ok(None),
        }
    }

    /// How often [`watch`](Self::watch) looks at the files (tests use a short one).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The config new connections get.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current.read().expect("tls config lock").clone()
    }

    /// An acceptor with the current config, for one new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.server_config())
    }

    /// The TLS handshake with the current config, bounded by [`HANDSHAKE_TIMEOUT`].
    pub async fn accept<IO>(&self, io: IO) -> std::io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor().accept(io))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
    }

    /// How many times a new pair has been swapped in.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Why the files on disk are not the ones being served, if they are not.
    pub fn last_error(&self) -> Option<String> {
        self.state.lock().expect("tls watch lock").last_error.clone()
    }

    /// Look at the files once (blocking file reads) and reload if a change has settled.
    pub fn poll(&self) -> Poll {
        let read = Files::read(&self.cert_path, &self.key_path);
        let seen = match &read {
            Ok(files) => Seen::Files(files.fingerprint()),
            Err(e) => Seen::Unreadable(e.to_string()),
        };
        let mut state = self.state.lock().expect("tls watch lock");
        if matches!(seen, Seen::Files(fp) if Some(fp) == state.loaded) {
            // Unchanged, or changed back to what is served.
            state.previous = None;
            state.rejected = None;
            state.last_error = None;
            return Poll::Unchanged;
        }
        if state.previous.as_ref() != Some(&seen) {
            state.previous = Some(seen);
            return Poll::Settling;
        }
        if state.rejected.as_ref() == Some(&seen) {
            return Poll::Rejected(state.last_error.clone().unwrap_or_default());
        }
        let loaded = read.and_then(|files| {
            let config = server_config_from_pem(&files.cert, &files.key, &self.cert_path, &self.key_path)?;
            Ok((config, files.fingerprint(), leaf_fingerprint(&files.cert)))
        });
        match loaded {
            Ok((config, fingerprint, leaf)) => {
                *self.current.write().expect("tls config lock") = Arc::new(config);
                self.reloads.fetch_add(1, Ordering::Relaxed);
                *state = WatchState { loaded: Some(fingerprint), ..Default::default() };
                tracing::info!(cert = %self.cert_path.display(), sha256 = %leaf, "TLS certificate reloaded");
                Poll::Reloaded
            }
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(error = %message, "TLS files changed but cannot be used; still serving the previous certificate");
                state.rejected = Some(seen);
                state.last_error = Some(message.clone());
                Poll::Rejected(message)
            }
        }
    }

    /// Poll the files every interval until `shutdown`; reloads happen in [`poll`](Self::poll).
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let me = self.clone();
            // File reads can block (network filesystems); keep them off the workers.
            if let Err(e) = tokio::task::spawn_blocking(move || me.poll()).await {
                tracing::error!(error = %e, "TLS file watcher failed");
            }
        }
    }
}

/// SHA-256 of the first certificate, as `openssl x509 -fingerprint -sha256` prints it.
fn leaf_fingerprint(cert_pem: &[u8]) -> String {
    let der = CertificateDer::pem_slice_iter(cert_pem)
        .next()
        .and_then(Result::ok)
        .map(|c| c.to_vec())
        .unwrap_or_default();
    Sha256::digest(&der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// Plain-HTTP listener in front of the HTTPS one.
#[derive(Clone, Debug)]
pub struct HttpRedirect {
    /// Where visitors are sent; `443` is left out of the URL.
    pub https_port: u16,
    /// When set, `GET /.well-known/acme-challenge/<token>` is answered from
    /// `<webroot>/.well-known/acme-challenge/<token>` (certbot `--webroot -w <webroot>`).
    pub acme_webroot: Option<PathBuf>,
}

/// Most plain-HTTP connections at once (they live for one redirect each).
const MAX_REDIRECT_CONNECTIONS: usize = 1024;

/// Answer every request on `listener` with `308` to the same path on HTTPS.
pub async fn redirect_http(listener: TcpListener, https_port: u16, shutdown: CancellationToken) {
    HttpRedirect { https_port, acme_webroot: None }.serve(listener, shutdown).await
}

impl HttpRedirect {
    /// Serve until `shutdown`, then let open connections finish (bounded).
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(MAX_REDIRECT_CONNECTIONS));
        let tracker = TaskTracker::new();
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10)).max_buf_size(16 * 1024);
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
                () = shutdown.cancelled() => break,
            };
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed (HTTP redirect)");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = shutdown.cancelled() => break,
            };
            let this = this.clone();
            let service = hyper::service::service_fn(move |req| {
                let this = this.clone();
                async move { Ok::<_, Infallible>(this.respond(&req).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = shutdown.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                    }
                }
                drop(permit);
            });
        }
        drop(listener);
        tracker.close();
        tracker.wait().await;
    }

    async fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        if let Some(webroot) = &self.acme_webroot {
            if let Some(token) = req.uri().path().strip_prefix("/.well-known/acme-challenge/") {
                return acme_challenge(webroot, token).await;
            }
        }
        match redirect_location(req, self.https_port) {
            Some(location) => Response::builder()
                .status(StatusCode::PERMANENT_REDIRECT)
                .header(header::LOCATION, location)
                .header(header::CONTENT_LENGTH, "0")
                .body(Full::default())
                .expect("valid response"),
            None => plain(StatusCode::BAD_REQUEST, "400 Bad Request: missing or invalid Host header\n"),
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(text.as_bytes())))
        .expect("valid response")
}

/// The token is a base64url string (RFC 8555 §8.3); anything else is not a file we wrote.
async fn acme_challenge(webroot: &Path, token: &str) -> Response<Full<Bytes>> {
    let valid = !token.is_empty()
        && token.len() <= 256
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return plain(StatusCode::NOT_FOUND, "404 Not Found\n");
    }
    match tokio::fs::read(webroot.join(".well-known/acme-challenge").join(token)).await {
        Ok(body) => Response::builder()
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(Bytes::from(body)))
            .expect("valid response"),
        Err(_) => plain(StatusCode::NOT_FOUND, "404 Not Found\n"),
    }
}

/// `https://<host>[:port]<path-and-query>`, or `None` when the Host header is
/// missing, repeated, or anything but a hostname or IP with an optional port.
fn redirect_location<B>(req: &Request<B>, https_port: u16) -> Option<HeaderValue> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let (Some(value), None) = (hosts.next(), hosts.next()) else {
        return None;
    };
    let host_header = value.to_str().ok()?;
    let host = host_without_port(host_header)?;
    // An absolute-form target (`GET http://a/ HTTP/1.1`) must agree with Host.
    if let Some(authority) = req.uri().authority() {
        if !authority.as_str().eq_ignore_ascii_case(host_header) {
            return None;
        }
    }
    let path = req.uri().path_and_query().map(|p| p.as_str()).filter(|p| p.starts_with('/')).unwrap_or("/");
    let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
    HeaderValue::try_from(format!("https://{host}{port}{path}")).ok()
}

/// The host part of a Host header value: a DNS name, an IPv4 address or a
/// bracketed IPv6 address, with an optional numeric port that is dropped.
pub fn host_without_port(value: &str) -> Option<&str> {
    if value.is_empty() || value.len() > 260 {
        return None;
    }
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (&value[..v6.len() + 2], port)
    } else {
        match value.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (value, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty()
            || port.len() > 5
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u16>().is_err()
        {
            return None;
        }
    }
    if !host.starts_with('[') && !is_dns_name(host) {
        return None;
    }
    Some(host)
}

/// LDH labels (letters, digits, hyphen) of 1–63 characters, at most 253 in all,
/// optionally ending in a dot. Dotted IPv4 addresses pass as well.
fn is_dns_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_values() {
        let good = [
            ("example.org", "example.org"),
            ("example.org:8080", "example.org"),
            ("Nb-Gate.example.org.", "Nb-Gate.example.org."),
            ("10.0.0.1:80", "10.0.0.1"),
            ("[::1]", "[::1]"),
            ("[2001:db8::1]:8000", "[2001:db8::1]"),
            ("localhost", "localhost"),
        ];
        for (value, host) in good {
            assert_eq!(host_without_port(value), Some(host), "{value}");
        }
        let bad = [
            "",
            "evil.com/x",
            "evil.com@x",
            "a b",
            "evil.com:",
            "evil.com:99999",
            "evil.com:80:80",
            "evil.com:8o",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[zz::1]",
            "-a.com",
            "a-.com",
            "a..com",
            ".",
            "ex_ample.org",
            "a.com\\b",
            "é.com",
            "a.com?x",
            "a.com#x",
            "user:pw@a.com",
        ];
        for value in bad {
            assert_eq!(host_without_port(value), None, "{value:?}");
        }
    }

    #[test]
    fn location_keeps_path_and_query_and_drops_port_443() {
        let req = |host: &str, uri: &str| Request::builder().uri(uri).header("host", host).body(()).unwrap();
        let loc = |r: &Request<()>, port| redirect_location(r, port).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(loc(&req("a.org:80", "/x/y?z=1&w"), 443).as_deref(), Some("https://a.org/x/y?z=1&w"));
        assert_eq!(loc(&req("a.org", "/"), 8443).as_deref(), Some("https://a.org:8443/"));
        assert_eq!(loc(&req("[::1]:80", "//evil.com/"), 443).as_deref(), Some("https://[::1]//evil.com/"));
        assert_eq!(loc(&req("a.org", "http://a.org/p"), 443).as_deref(), Some("https://a.org/p"));
        assert_eq!(loc(&req("a.org", "http://evil.com/p"), 443), None);
        let no_host = Request::builder().uri("/").body(()).unwrap();
        assert_eq!(loc(&no_host, 443), None);
        let mut two = req("a.org", "/");
        two.headers_mut().append("host", HeaderValue::from_static("b.org"));
        assert_eq!(loc(&two, 443), None);
    }
}
