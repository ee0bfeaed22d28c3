//! HTTPS: loading certificates, reloading them without a restart, the HTTP→HTTPS
//! redirect, and `make secrets` against a real ACME server (Debian's pebble,
//! on loopback only).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use nbgate::tls::{self, HttpRedirect, ReloadingAcceptor};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A self-signed certificate for `localhost` (and 127.0.0.1), with its key.
struct TestCert {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn self_signed(common_name: &str) -> TestCert {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("certificate params");
    params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
    let key = rcgen::KeyPair::generate().expect("key pair");
    let cert = params.self_signed(&key).expect("self-signed certificate");
    TestCert { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
}

/// A certificate/key pair on disk, as an operator would have it.
struct Pair {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl Pair {
    fn new(c: &TestCert) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pair =
            Self { cert: dir.path().join("fullchain.pem"), key: dir.path().join("privkey.pem"), _dir: dir };
        pair.write(&c.cert_pem, &c.key_pem);
        pair
    }

    /// Overwrite in place, certificate first, as certbot's copies would.
    fn write(&self, cert: &str, key: &str) {
        std::fs::write(&self.cert, cert).expect("write cert");
        std::fs::write(&self.key, key).expect("write key");
    }
}

/// A TLS server answering "ok", built from the acceptor the way the gateway is.
async fn serve_ok(acceptor: Arc<ReloadingAcceptor>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

/// What a client saw on one new HTTPS connection.
#[derive(Debug)]
struct Fetched {
    status: u16,
    hsts: Option<String>,
    body: String,
    peer: Vec<u8>,
    alpn: Option<Vec<u8>>,
}

fn client_config(roots: &[&[u8]], alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for der in roots {
        store.add(CertificateDer::from(der.to_vec())).expect("trust anchor");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// `GET /` over a new TLS connection that verifies `server_name` against `roots`.
async fn https_get(addr: SocketAddr, server_name: &str, roots: &[&[u8]]) -> Result<Fetched, String> {
    https_get_with(addr, server_name, "/", client_config(roots, &[tls::ALPN_HTTP1])).await
}

async fn https_get_with(
    addr: SocketAddr,
    server_name: &str,
    path: &str,
    config: rustls::ClientConfig,
) -> Result<Fetched, String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let stream = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| format!("handshake: {e}"))?;
    let (_, session) = stream.get_ref();
    let peer = session.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req =
        http::Request::get(path).header("host", server_name).body(Empty::<Bytes>::new()).expect("request");
    let resp = sender.send_request(req).await.map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let hsts =
        resp.headers().get("strict-transport-security").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Fetched { status, hsts, body: String::from_utf8_lossy(&body).into_owned(), peer, alpn })
}

/// Poll `cond` every 50 ms for at most `limit`.
async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn serves_https_and_reloads_a_renewed_certificate_without_restart() {
    let first = self_signed("nbgate test one");
    let pair = Pair::new(&first);
    let acceptor = Arc::new(
        ReloadingAcceptor::load(&pair.cert, &pair.key)
            .unwrap()
            .with_poll_interval(Duration::from_millis(100)),
    );
    let shutdown = CancellationToken::new();
    let watcher = tokio::spawn(acceptor.clone().watch(shutdown.clone()));
    let addr = serve_ok(acceptor.clone()).await;

    let second = self_signed("nbgate test two");
    let third = self_signed("nbgate test three");
    let roots: [&[u8]; 3] = [&first.der, &second.der, &third.der];

    let got = https_get(addr, "localhost", &roots).await.unwrap();
    assert_eq!((got.status, got.body.as_str()), (200, "ok"));
    assert_eq!(got.peer, first.der, "serves the certificate it loaded");
    assert_eq!(got.alpn.as_deref(), Some(tls::ALPN_HTTP1), "ALPN picks http/1.1");

    // Renewal: new files in place; the next connection gets the new certificate.
    pair.write(&second.cert_pem, &second.key_pem);
    wait_for("the reload", Duration::from_secs(10), || acceptor.reloads() == 1).await;
    let got = https_get(addr, "localhost", &roots).await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.peer, second.der, "a new connection sees the renewed certificate");
    assert_eq!(acceptor.last_error(), None);

    // A corrupt key (certbot interrupted, a bad copy): keep serving the last good pair.
    let corrupt = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";
    pair.write(&third.cert_pem, corrupt);
    wait_for("the corrupt key to be rejected", Duration::from_secs(10), || acceptor.last_error().is_some())
        .await;
    let error = acceptor.last_error().unwrap();
    assert!(error.starts_with(&format!("NBGATE_TLS_KEY: {}: ", pair.key.display())), "{error}");
    assert!(!error.contains("MIGHAgEAMBMGByqGSM49"), "the error quotes the key: {error}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let got = https_get(addr, "localhost", &roots).await.unwrap();
    assert_eq!((got.status, &got.peer), (200, &second.der), "the old pair is kept");
    assert_eq!(acceptor.reloads(), 1);

    // The new certificate with the old key: still rejected, named as a mismatch.
    pair.write(&third.cert_pem, &second.key_pem);
    wait_for("the mismatch to be reported", Duration::from_secs(10), || {
        acceptor.last_error().is_some_and(|e| e.contains("does not match the certificate"))
    })
    .await;
    assert_eq!(https_get(addr, "localhost", &roots).await.unwrap().peer, second.der);

    // Fixed: the good pair goes in and the error clears.
    pair.write(&third.cert_pem, &third.key_pem);
    wait_for("the second reload", Duration::from_secs(10), || acceptor.reloads() == 2).await;
    assert_eq!(https_get(addr, "localhost", &roots).await.unwrap().peer, third.der);
    assert_eq!(acceptor.last_error(), None);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), watcher).await.expect("watcher stops on shutdown").unwrap();
}

#[tokio::test]
async fn a_change_is_used_only_once_it_has_settled() {
    let (first, second) = (self_signed("one"), self_signed("two"));
    let pair = Pair::new(&first);
    let acceptor = ReloadingAcceptor::load(&pair.cert, &pair.key).unwrap();
    assert_eq!(acceptor.poll(), tls::Poll::Unchanged);
    // Half-way through a renewal: new certificate, old key. Not an error yet.
    std::fs::write(&pair.cert, &second.cert_pem).unwrap();
    assert_eq!(acceptor.poll(), tls::Poll::Settling);
    std::fs::write(&pair.key, &second.key_pem).unwrap();
    assert_eq!(acceptor.poll(), tls::Poll::Settling);
    assert_eq!(acceptor.last_error(), None);
    assert_eq!(acceptor.poll(), tls::Poll::Reloaded);
    assert_eq!(acceptor.poll(), tls::Poll::Unchanged);
    // A file that goes away is reported once it stays away; the old config stays.
    std::fs::remove_file(&pair.key).unwrap();
    assert_eq!(acceptor.poll(), tls::Poll::Settling);
    let tls::Poll::Rejected(why) = acceptor.poll() else { panic!("a missing key is rejected") };
    assert_eq!(why, format!("NBGATE_TLS_KEY: {}: file not found", pair.key.display()));
    assert_eq!(acceptor.reloads(), 1);
}

#[tokio::test]
async fn clients_that_only_speak_h2_are_refused_and_clients_without_alpn_are_served() {
    let cert = self_signed("alpn");
    let pair = Pair::new(&cert);
    let addr = serve_ok(Arc::new(ReloadingAcceptor::load(&pair.cert, &pair.key).unwrap())).await;
    let h2_only = client_config(&[&cert.der], &[b"h2"]);
    let err = https_get_with(addr, "localhost", "/", h2_only).await.unwrap_err();
    assert!(err.contains("handshake"), "{err}");
    let no_alpn = https_get_with(addr, "localhost", "/", client_config(&[&cert.der], &[])).await.unwrap();
    assert_eq!((no_alpn.status, no_alpn.alpn), (200, None));
}

#[test]
fn errors_name_the_variable_and_file_and_never_quote_the_key() {
    let good = self_signed("errors");
    let other = self_signed("other");
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let (cert, key) = (file("cert.pem", &good.cert_pem), file("key.pem", &good.key_pem));
    let err = |c: &Path, k: &Path| tls::load_server_config(c, k).expect_err("an error").to_string();
    let d = |p: &Path| p.display().to_string();

    tls::load_server_config(&cert, &key).expect("the good pair loads");
    let missing = dir.path().join("nope.pem");
    assert_eq!(err(&missing, &key), format!("NBGATE_TLS_CERT: {}: file not found", d(&missing)));
    assert_eq!(err(&cert, &missing), format!("NBGATE_TLS_KEY: {}: file not found", d(&missing)));
    let empty = file("empty.pem", "");
    assert!(err(&empty, &key).starts_with(&format!("NBGATE_TLS_CERT: {}: no certificate found", d(&empty))));
    assert!(err(&key, &cert).contains("swapped"), "{}", err(&key, &cert));
    let mismatched = file("other-key.pem", &other.key_pem);
    assert_eq!(
        err(&cert, &mismatched),
        format!("NBGATE_TLS_KEY: {}: does not match the certificate in {}", d(&mismatched), d(&cert))
    );
    let encrypted =
        file("enc.pem", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n");
    assert!(err(&cert, &encrypted).contains("the key is encrypted"), "{}", err(&cert, &encrypted));
    let two = file("two.pem", &format!("{}{}", good.key_pem, other.key_pem));
    assert!(err(&cert, &two).contains("2 private keys found"));

    // Broken PEM whose offending lines carry key-like text: the message must not echo them.
    let secret = "c2VjcmV0LWtleS1tYXRlcmlhbA";
    let broken = [
        format!("-----BEGIN PRIVATE KEY-----\n{secret}!!\n-----END PRIVATE KEY-----\n"),
        format!("-----BEGIN PRIVATE KEY {secret}\n"),
        format!("-----BEGIN PRIVATE KEY-----\n{secret}\n"),
        format!("-----BEGIN PRIVATE KEY-----\n{secret}AAAA\n-----END PRIVATE KEY-----\n"),
    ];
    for (i, text) in broken.iter().enumerate() {
        let p = file(&format!("broken{i}.pem"), text);
        let e = err(&cert, &p);
        assert!(e.starts_with(&format!("NBGATE_TLS_KEY: {}: ", d(&p))), "{e}");
        assert!(!e.contains(secret) && !e.contains("c2VjcmV0"), "case {i} quotes the file: {e}");
    }
    assert!(!err(&file("c.pem", &good.key_pem), &key).contains("MI"), "the cert error quotes the key file");
}

/// RSA (PKCS#1) and EC (SEC1) keys as `openssl` writes them load and serve.
#[tokio::test]
async fn loads_rsa_pkcs1_and_ec_sec1_keys() {
    assert!(
        std::process::Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success()),
        "this test needs the openssl command: apt-get install openssl"
    );
    let dir = tempfile::tempdir().unwrap();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir.path()).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    openssl(&["genrsa", "-traditional", "-out", "rsa.key", "2048"]);
    openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ec.key"]);
    for (key, label) in [("rsa.key", "RSA PRIVATE KEY"), ("ec.key", "EC PRIVATE KEY")] {
        let text = std::fs::read_to_string(dir.path().join(key)).unwrap();
        assert!(text.starts_with(&format!("-----BEGIN {label}-----")), "{key}: {text:.40}");
        let cert = format!("{key}.crt");
        openssl(&[
            "req",
            "-x509",
            "-key",
            key,
            "-out",
            &cert,
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ]);
        let acceptor = ReloadingAcceptor::load(dir.path().join(&cert), dir.path().join(key)).expect(label);
        let addr = serve_ok(Arc::new(acceptor)).await;
        let pem = std::fs::read(dir.path().join(&cert)).unwrap();
        let der = <CertificateDer as rustls::pki_types::pem::PemObject>::from_pem_slice(&pem).unwrap();
        let got = https_get(addr, "localhost", &[&der]).await.expect(label);
        assert_eq!((got.status, got.peer), (200, der.to_vec()), "{label}");
    }
}

/// One request written as raw bytes; returns the status and the Location header.
async fn raw_request(addr: SocketAddr, head: &str) -> (u16, Option<String>, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
        .await
        .expect("response")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let location = text
        .lines()
        .find_map(|l| l.strip_prefix("location: ").or_else(|| l.strip_prefix("Location: ")))
        .map(str::to_string);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, location, body)
}

async fn start_redirect(
    redirect: HttpRedirect,
) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    (addr, shutdown.clone(), tokio::spawn(redirect.serve(listener, shutdown)))
}

#[tokio::test]
async fn redirect_http_sends_308_to_https_and_400_for_a_bad_host() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(tls::redirect_http(listener, 8443, shutdown.clone()));
    let (default_port, stop_default, default_server) =
        start_redirect(HttpRedirect { https_port: 443, acme_webroot: None }).await;

    let get = |host: &str, target: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };
    let cases = [
        ("nb.example.org:8080", "/lab?x=1&y=%2F", "https://nb.example.org:8443/lab?x=1&y=%2F"),
        ("nb.example.org", "/", "https://nb.example.org:8443/"),
        (
            "127.0.0.1:80",
            "/hub/login?next=%2Fhub%2Fhome",
            "https://127.0.0.1:8443/hub/login?next=%2Fhub%2Fhome",
        ),
        ("[::1]:80", "/x", "https://[::1]:8443/x"),
        ("nb.example.org", "http://nb.example.org/abs", "https://nb.example.org:8443/abs"),
    ];
    for (host, target, want) in cases {
        let (status, location, _) = raw_request(addr, &get(host, target)).await;
        assert_eq!((status, location.as_deref()), (308, Some(want)), "Host: {host}, {target}");
    }
    let (status, location, _) = raw_request(default_port, &get("nb.example.org:80", "/lab")).await;
    assert_eq!(
        (status, location.as_deref()),
        (308, Some("https://nb.example.org/lab")),
        "port 443 is implied"
    );

    let bad_hosts = [
        "evil.com/x",
        "evil.com@nb.example.org",
        "nb.example.org:99999",
        "nb.example.org:80:80",
        "a b",
        "evil.com\\@nb.example.org",
        "nb.example.org%0d%0aSet-Cookie:%20x=1",
        "nb.example.org?.evil.com",
        "nb.example.org#.evil.com",
        "",
        "[::1",
    ];
    for host in bad_hosts {
        let (status, location, body) = raw_request(addr, &get(host, "/")).await;
        assert_eq!((status, location), (400, None), "Host: {host:?}");
        assert!(body.contains("Host"), "Host: {host:?}: {body}");
    }
    let other_requests = [
        "GET / HTTP/1.0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.org\r\nHost: evil.com\r\nConnection: close\r\n\r\n",
        "GET http://evil.com/ HTTP/1.1\r\nHost: nb.example.org\r\nConnection: close\r\n\r\n",
    ];
    for req in other_requests {
        let (status, location, _) = raw_request(addr, req).await;
        assert_eq!((status, location), (400, None), "{req:?}");
    }

    shutdown.cancel();
    stop_default.cancel();
    tokio::time::timeout(Duration::from_secs(5), server).await.expect("redirect_http stops").unwrap();
    tokio::time::timeout(Duration::from_secs(5), default_server).await.expect("stops").unwrap();
}

#[tokio::test]
async fn the_redirect_listener_answers_acme_challenges_from_the_webroot() {
    let webroot = tempfile::tempdir().unwrap();
    let challenges = webroot.path().join(".well-known/acme-challenge");
    std::fs::create_dir_all(&challenges).unwrap();
    std::fs::write(challenges.join("tok-EN_123"), "tok-EN_123.thumbprint").unwrap();
    std::fs::write(webroot.path().join("secret.txt"), "not for you").unwrap();
    let (addr, shutdown, server) =
        start_redirect(HttpRedirect { https_port: 443, acme_webroot: Some(webroot.path().to_path_buf()) })
            .await;
    let get =
        |target: &str| format!("GET {target} HTTP/1.1\r\nHost: nb.example.org\r\nConnection: close\r\n\r\n");

    let (status, _, body) = raw_request(addr, &get("/.well-known/acme-challenge/tok-EN_123")).await;
    assert_eq!((status, body.as_str()), (200, "tok-EN_123.thumbprint"));
    for target in [
        "/.well-known/acme-challenge/missing",
        "/.well-known/acme-challenge/../../secret.txt",
        "/.well-known/acme-challenge/..%2F..%2Fsecret.txt",
        "/.well-known/acme-challenge/",
    ] {
        let (status, location, body) = raw_request(addr, &get(target)).await;
        assert_eq!((status, location), (404, None), "{target}");
        assert!(!body.contains("not for you"), "{target}");
    }
    let (status, location, _) = raw_request(addr, &get("/.well-known/other")).await;
    assert_eq!((status, location.as_deref()), (308, Some("https://nb.example.org/.well-known/other")));
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), server).await.expect("stops").unwrap();
}

// ---- make secrets against pebble --------------------------------------------

/// Child processes killed (and reaped) when the test ends, however it ends.
#[derive(Default)]
struct Children(Vec<(&'static str, std::process::Child, PathBuf)>);

impl Children {
    fn spawn(&mut self, name: &'static str, cmd: &mut std::process::Command, log: PathBuf) {
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.0.push((name, child, log));
    }

    fn logs(&self) -> String {
        self.0
            .iter()
            .map(|(name, _, log)| {
                format!("--- {name} ---\n{}", std::fs::read_to_string(log).unwrap_or_default())
            })
            .collect()
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn require_commands(commands: &[&str]) {
    let missing: Vec<_> = commands
        .iter()
        .filter(|c| {
            !std::env::var_os("PATH")
                .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(c).is_file()))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{missing:?} not found: this test runs `make secrets` against a local ACME server; \
         install them with `apt-get install certbot pebble`"
    );
}

/// A port on loopback that was free a moment ago (for programs that take a port number).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A CA and a certificate for 127.0.0.1 signed by it, for pebble's own HTTPS listener.
fn loopback_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "nbgate test ACME CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let paths = (dir.join("ca.pem"), dir.join("acme.pem"), dir.join("acme.key"));
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, leaf.pem()).unwrap();
    std::fs::write(&paths.2, leaf_key.serialize_pem()).unwrap();
    paths
}

async fn wait_listening(port: u16, what: &str, children: &Children) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} did not listen on {port}\n{}",
            children.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pebble on loopback. `validate`: `None` = every challenge passes without a
/// look (PEBBLE_VA_ALWAYS_VALID); `Some(dns_port)` = real HTTP-01 checks, names
/// resolved by pebble-challtestsrv to 127.0.0.1.
async fn start_pebble(
    dir: &Path,
    http01_port: u16,
    dns_port: Option<u16>,
    children: &mut Children,
) -> Pebble {
    let (ca, cert, key) = loopback_ca(dir);
    let (acme_port, management_port) = (free_port(), free_port());
    let config = serde_json::json!({ "pebble": {
        "listenAddress": format!("127.0.0.1:{acme_port}"),
        "managementListenAddress": format!("127.0.0.1:{management_port}"),
        "certificate": cert, "privateKey": key,
        "httpPort": http01_port, "tlsPort": free_port(),
        "ocspResponderURL": "", "externalAccountBindingRequired": false,
    }});
    let config_path = dir.join("pebble.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let mut cmd = std::process::Command::new("pebble");
    cmd.arg("-config").arg(&config_path).env("PEBBLE_VA_NOSLEEP", "1").env("PEBBLE_WFE_NONCEREJECT", "0");
    match dns_port {
        None => {
            cmd.env("PEBBLE_VA_ALWAYS_VALID", "1");
        }
        Some(port) => {
            cmd.arg("-dnsserver").arg(format!("127.0.0.1:{port}")).env("PEBBLE_AUTHZREUSE", "0");
        }
    }
    children.spawn("pebble", &mut cmd, dir.join("pebble.log"));
    wait_listening(acme_port, "pebble", children).await;
    Pebble { directory: format!("https://127.0.0.1:{acme_port}/dir"), ca, management_port }
}

struct Pebble {
    /// The ACME directory URL.
    directory: String,
    /// The CA of pebble's own HTTPS listeners, for REQUESTS_CA_BUNDLE.
    ca: PathBuf,
    /// Serves `/roots/0`, the root the issued certificates chain to.
    management_port: u16,
}

impl Pebble {
    /// DER of the root certificate pebble issues under (made afresh at each start).
    async fn issuing_root(&self) -> Vec<u8> {
        let ca = std::fs::read(&self.ca).unwrap();
        let ca = <CertificateDer as rustls::pki_types::pem::PemObject>::from_pem_slice(&ca).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], self.management_port));
        let got = https_get_with(addr, "127.0.0.1", "/roots/0", client_config(&[&ca], &[])).await.unwrap();
        assert_eq!(got.status, 200, "{}", got.body);
        <CertificateDer as rustls::pki_types::pem::PemObject>::from_pem_slice(got.body.as_bytes())
            .unwrap()
            .to_vec()
    }
}

/// Run scripts/secrets.sh with `env`; returns its stdout, or panics with everything logged.
async fn run_secrets(env: &[(&str, String)], children: &Children) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/secrets.sh");
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(&script).env_remove("ACME_WEBROOT").env_remove("HTTP01_ADDRESS").kill_on_drop(true);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("secrets.sh took over 60 s\n{}", children.logs()))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "secrets.sh failed\n--- stdout ---\n{stdout}\n--- stderr ---\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        children.logs()
    );
    stdout
}

/// The issued pair is linked into state/tls, printed as settings, and loads.
fn check_issued(state: &Path, fqdn: &str, stdout: &str) {
    let (cert, key) = (state.join("tls/fullchain.pem"), state.join("tls/privkey.pem"));
    assert!(stdout.contains(&format!("NBGATE_TLS_CERT={}", cert.display())), "{stdout}");
    assert!(stdout.contains(&format!("NBGATE_TLS_KEY={}", key.display())), "{stdout}");
    assert!(
        std::fs::symlink_metadata(&cert).unwrap().file_type().is_symlink(),
        "linked, so renewals show through"
    );
    let acceptor = ReloadingAcceptor::load(&cert, &key).expect("nbgate loads what certbot wrote");
    drop(acceptor);
    let pem = std::fs::read(&cert).unwrap();
    let chain: Vec<_> = <CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(chain.len() >= 2, "fullchain has the leaf and the intermediate");
    // The SAN dNSName is stored as plain ASCII in the DER.
    assert!(chain[0].windows(fqdn.len()).any(|w| w == fqdn.as_bytes()), "the certificate names {fqdn}");
}

#[tokio::test]
async fn pebble_issues_a_certificate_through_make_secrets() {
    require_commands(&["certbot", "pebble"]);
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let mut children = Children::default();
        let http01_port = free_port();
        let pebble = start_pebble(dir.path(), http01_port, None, &mut children).await;
        let state = dir.path().join("state");
        let fqdn = "nbgate.test";
        let stdout = run_secrets(
            &[
                ("FQDN", fqdn.into()),
                ("EMAIL", "ops@nbgate.test".into()),
                ("STATE_DIR", state.display().to_string()),
                ("ACME_SERVER", pebble.directory.clone()),
                ("HTTP01_PORT", http01_port.to_string()),
                ("HTTP01_ADDRESS", "127.0.0.1".into()),
                ("REQUESTS_CA_BUNDLE", pebble.ca.display().to_string()),
            ],
            &children,
        )
        .await;
        check_issued(&state, fqdn, &stdout);
    })
    .await
    .expect("the whole exchange takes under 90 s");
}

/// The whole life of a certificate with nbgate holding port 80: `make secrets`
/// with ACME_WEBROOT, real HTTP-01 validation (pebble fetches the token from the
/// redirect listener, which serves the webroot), served over HTTPS, then
/// `certbot renew --webroot` through the same listener, and the renewed
/// certificate served without a restart. DNS answers come from
/// pebble-challtestsrv and are 127.0.0.1 only.
#[tokio::test]
async fn pebble_renews_through_the_redirect_listener_and_the_new_certificate_is_served() {
    require_commands(&["certbot", "pebble", "pebble-challtestsrv"]);
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let mut children = Children::default();
        let dns_port = free_port();
        children.spawn(
            "pebble-challtestsrv",
            std::process::Command::new("pebble-challtestsrv").args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{}", free_port()),
            ]),
            dir.path().join("challtestsrv.log"),
        );
        wait_listening(dns_port, "pebble-challtestsrv", &children).await;

        let state = dir.path().join("state");
        let le = state.join("letsencrypt");
        let webroot = le.join("webroot");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http01_port = listener.local_addr().unwrap().port();
        let shutdown = CancellationToken::new();
        let redirect = HttpRedirect { https_port: 443, acme_webroot: Some(webroot.clone()) };
        let server = tokio::spawn(redirect.serve(listener, shutdown.clone()));

        let pebble = start_pebble(dir.path(), http01_port, Some(dns_port), &mut children).await;
        let fqdn = "webroot.nbgate.test";
        let stdout = run_secrets(
            &[
                ("FQDN", fqdn.into()),
                ("EMAIL", "ops@nbgate.test".into()),
                ("STATE_DIR", state.display().to_string()),
                ("ACME_SERVER", pebble.directory.clone()),
                ("ACME_WEBROOT", webroot.display().to_string()),
                ("REQUESTS_CA_BUNDLE", pebble.ca.display().to_string()),
            ],
            &children,
        )
        .await;
        check_issued(&state, fqdn, &stdout);
        let challenge_url = format!("http://{fqdn}:{http01_port}/.well-known/acme-challenge/");
        let fetched = || {
            std::fs::read_to_string(dir.path().join("pebble.log")).unwrap().matches(&challenge_url).count()
        };
        assert!(fetched() > 0, "pebble fetched the token from the redirect listener\n{}", children.logs());

        // Served, and trusted by a client that knows only pebble's root.
        let acceptor = Arc::new(
            ReloadingAcceptor::load(state.join("tls/fullchain.pem"), state.join("tls/privkey.pem"))
                .unwrap()
                .with_poll_interval(Duration::from_millis(100)),
        );
        let watcher = tokio::spawn(acceptor.clone().watch(shutdown.clone()));
        let addr = serve_ok(acceptor.clone()).await;
        let root = pebble.issuing_root().await;
        let issued = https_get(addr, fqdn, &[&root]).await.expect("the issued certificate verifies");
        assert_eq!((issued.status, issued.body.as_str()), (200, "ok"));

        // Renewal, the way secrets.sh says to run it while nbgate holds port 80.
        let before = fetched();
        let renew = tokio::process::Command::new("certbot")
            // Without a terminal certbot renew first sleeps up to 8 minutes (load spreading for cron).
            .args(["renew", "-n", "--force-renewal", "--no-random-sleep-on-renew", "--config-dir"])
            .arg(&le)
            .arg("--work-dir")
            .arg(le.join("work"))
            .arg("--logs-dir")
            .arg(le.join("logs"))
            .arg("--webroot")
            .arg("-w")
            .arg(&webroot)
            .env("REQUESTS_CA_BUNDLE", &pebble.ca)
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        assert!(
            renew.status.success(),
            "certbot renew failed\n{}{}\n{}",
            String::from_utf8_lossy(&renew.stdout),
            String::from_utf8_lossy(&renew.stderr),
            children.logs()
        );
        assert!(fetched() > before, "the renewal was validated through the redirect listener");
        wait_for("the renewed certificate", Duration::from_secs(10), || acceptor.reloads() == 1).await;
        let renewed = https_get(addr, fqdn, &[&root]).await.expect("the renewed certificate verifies");
        assert_eq!(renewed.status, 200);
        assert_ne!(renewed.peer, issued.peer, "a new connection gets the renewed certificate");
        assert_eq!(acceptor.last_error(), None);

        shutdown.cancel();
        server.await.unwrap();
        watcher.await.unwrap();
    })
    .await
    .expect("the whole exchange takes under 90 s");
}

/// The gateway itself over HTTPS: health answered with HSTS, and the plain
/// HTTP listener redirecting to it.
#[tokio::test]
async fn the_gateway_serves_https_with_hsts_and_redirects_plain_http() {
    let c = self_signed("gateway");
    let pair = Pair::new(&c);
    let state = tempfile::tempdir().unwrap();
    let redirect_port = free_port();
    let env: Vec<(String, String)> = vec![
        ("NBGATE_STATE_DIR".into(), state.path().display().to_string()),
        ("NBGATE_BIND".into(), "127.0.0.1:0".into()),
        ("NBGATE_INSTANCE".into(), format!("tls{}", std::process::id())),
        ("NBGATE_POOL_SIZE".into(), "0".into()),
        ("NBGATE_TLS_CERT".into(), pair.cert.display().to_string()),
        ("NBGATE_TLS_KEY".into(), pair.key.display().to_string()),
        ("NBGATE_HTTP_REDIRECT_BIND".into(), format!("127.0.0.1:{redirect_port}")),
        ("NBGATE_FIREWALL".into(), "false".into()),
    ];
    let config = nbgate::config::Layers::defaults()
        .env(|k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        .build()
        .unwrap();
    let server = nbgate::app::Server::build(config).await.unwrap();
    let addr = server.local_addr();
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let running = tokio::spawn(server.run_until(async move { stopped.cancelled().await }));
    let got = https_get_with(addr, "localhost", "/hub/health", client_config(&[&c.der], &[tls::ALPN_HTTP1]))
        .await
        .unwrap();
    assert!(got.status == 200 || got.status == 503, "{}", got.status);
    assert!(got.body.contains("\"pool\""), "{}", got.body);
    assert_eq!(got.hsts.as_deref(), Some(tls::HSTS));
    let redirect: SocketAddr = format!("127.0.0.1:{redirect_port}").parse().unwrap();
    let (status, location, _) = raw_request(
        redirect,
        "GET /hub/login?next=/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 308);
    assert_eq!(
        location.as_deref(),
        Some(format!("https://localhost:{}/hub/login?next=/x", addr.port()).as_str())
    );
    stop.cancel();
    running.await.unwrap().unwrap();
    // What the gateway made for its instance: the network and the shared slots mount.
    let instance = format!("tls{}", std::process::id());
    let _ = std::process::Command::new("docker").args(["network", "rm", &format!("{instance}-net")]).output();
    let _ = std::process::Command::new("umount").arg("-l").arg(state.path().join("slots")).output();
}
