//! Application state and the server: build (bind a port, open the DB, connect
//! to Docker), then run until a shutdown signal. Tests and `nbgate serve` share
//! this path; tests bind port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::Config;
use crate::db::Db;
use crate::docker::DockerHandle;
use crate::pool::Pool;
use crate::proxy::first::First;
use crate::proxy::routes::Routes;

/// Shared state of the running gateway. Cheap to clone (`Arc`).
#[derive(Clone)]
pub struct App(pub Arc<AppInner>);

pub struct AppInner {
    /// Configuration, read once at start.
    pub config: Config,
    /// SQLite pool: users, sessions, slot assignments.
    pub db: Db,
    /// The Docker engine; connects (and negotiates the API) lazily, so the
    /// gateway starts and reports 503 while Docker is down.
    pub docker: DockerHandle,
    /// Warm containers and the starts under way.
    pub pool: Pool,
    /// Assigned slots: upstream, owners, activity.
    pub routes: Routes,
    /// Pooled connections for readiness probes.
    pub probe_client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Empty<bytes::Bytes>,
    >,
    /// Keys the form tokens and the access cookie (`<state>/cookie_secret`).
    pub cookie_secret: Vec<u8>,
    /// Volumes can be bound into running containers (root, shared slots dir).
    pub hot_bind: bool,
    /// Guessing the site password, per address.
    pub access_throttle: crate::auth::throttle::Throttle,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// bcrypt, bounded, off the async workers.
    pub hasher: crate::auth::password::Hasher,
    /// Per-user locks and background server starts.
    pub binder: crate::pool::binder::Binder,
    /// The organizers' banner, cached from the DB's settings.
    announcement: std::sync::RwLock<Option<String>>,
}

impl AppInner {
    pub fn announcement(&self) -> Option<String> {
        self.announcement.read().expect("announcement lock").clone()
    }

    /// Save the banner (DB first, then the cache pages read).
    pub async fn set_announcement(&self, text: Option<&str>) -> Result<(), sqlx::Error> {
        crate::db::admin::set_setting(&self.db, crate::db::admin::ANNOUNCEMENT, text).await?;
        *self.announcement.write().expect("announcement lock") = text.map(str::to_string);
        Ok(())
    }

    /// Whether warm containers get a slot mount point for a user's volume.
    pub fn binds_volumes(&self) -> bool {
        self.hot_bind && self.config.auth == crate::config::AuthMode::Accounts
    }
}

impl std::ops::Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// Most connections served at once; past this, accepting waits (back-pressure
/// instead of running out of file descriptors).
const MAX_CONNECTIONS: usize = 16_384;

/// A built gateway, bound to its port but not yet serving.
pub struct Server {
    listener: TcpListener,
    app: App,
    /// HTTPS when `NBGATE_TLS_CERT`/`NBGATE_TLS_KEY` are set; reloaded when the files change.
    tls: Option<Arc<crate::tls::ReloadingAcceptor>>,
    /// Plain-HTTP listener that redirects to HTTPS (`NBGATE_HTTP_REDIRECT_BIND`).
    redirect: Option<TcpListener>,
}

impl Server {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let (db, opened) = crate::db::open(&config.database_url).await?;
        if opened.created {
            tracing::info!(url = %config.database_url, "database created");
        }
        let listener = TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("NBGATE_BIND: cannot listen on {}", config.bind))?;
        let tls = crate::tls::ReloadingAcceptor::from_config(&config)?.map(Arc::new);
        let redirect = match config.http_redirect_bind {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("NBGATE_HTTP_REDIRECT_BIND: cannot listen on {addr}"))?,
            ),
            None => None,
        };
        let cookie_secret =
            load_or_create_secret(&config.state_dir.join("cookie_secret")).with_context(|| {
                format!("NBGATE_STATE_DIR: cannot keep the cookie secret in {}", config.state_dir.display())
            })?;
        let hot_bind = config.hot_bind
            && crate::volumes::bind::is_root()
            && crate::volumes::bind::ensure_shared(&config.slots_dir())
                .map_err(|e| tracing::warn!(error = %e, "hot-binding unavailable: logins will start fresh containers"))
                .is_ok();
        let bcrypt_cost = config.bcrypt_cost;
        let announcement = crate::db::admin::setting(&db, crate::db::admin::ANNOUNCEMENT).await?;
        let probe_client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(10))
            .build_http();
        let app = App(Arc::new(AppInner {
            config,
            db,
            docker: DockerHandle::new(),
            pool: Pool::new(),
            routes: Routes::default(),
            probe_client,
            cookie_secret,
            hot_bind,
            access_throttle: Default::default(),
            metrics: Default::default(),
            hasher: crate::auth::password::Hasher::new(bcrypt_cost),
            binder: Default::default(),
            announcement: std::sync::RwLock::new(announcement),
        }));
        Ok(Self { listener, app, tls, redirect })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn app(&self) -> &App {
        &self.app
    }

    /// Serve until `shutdown` resolves, then stop accepting, let open requests
    /// finish (bounded), and return.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let router = crate::web::router(self.app.clone());
        let tasks = CancellationToken::new();
        let mut helpers = Vec::new();
        if let Some(tls) = &self.tls {
            helpers.push(tokio::spawn(tls.clone().watch(tasks.clone())));
        }
        if let Some(listener) = self.redirect.take() {
            let https_port = self.listener.local_addr().map(|a| a.port()).unwrap_or(443);
            // Serves ACME http-01 challenges from the webroot `make secrets` uses.
            let redirect = crate::tls::HttpRedirect {
                https_port,
                acme_webroot: Some(self.app.config.state_dir.join("letsencrypt/webroot")),
            };
            helpers.push(tokio::spawn(redirect.serve(listener, tasks.clone())));
        }
        let supervisors = [
            tokio::spawn(crate::pool::supervise::follow_docker(self.app.clone(), tasks.clone())),
            tokio::spawn(crate::pool::supervise::refill(self.app.clone(), tasks.clone())),
            tokio::spawn(crate::culler::run(self.app.clone(), tasks.clone())),
        ];
        // Connections watch this to finish their current request and close.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(crate::proxy::first::HEADER_TIMEOUT)
            .max_buf_size(64 * 1024);
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
                () = &mut shutdown => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: wait a little rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let (app, router) = (self.app.clone(), router.clone());
            let (builder, stop, tls) = (builder.clone(), stop_rx.clone(), self.tls.clone());
            tokio::spawn(async move {
                let conn = Connection { app, router, peer, builder, stop };
                match tls {
                    // Boxed: inline, rustls' handshake made every connection's task
                    // 16 KB, TLS or not, for as long as the connection stays open.
                    Some(tls) => match Box::pin(tls.accept(stream)).await {
                        Ok(stream) => conn.serve(Box::new(stream), permit).await,
                        Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
                    },
                    None => conn.serve(stream, permit).await,
                }
            });
        }
        drop(self.listener);
        tasks.cancel();
        for task in supervisors {
            let _ = task.await;
        }
        for task in helpers {
            let _ = task.await;
        }
        tracing::info!("shutting down: waiting for open requests");
        let _ = stop_tx.send(true);
        let all_closed = permits.acquire_many(MAX_CONNECTIONS as u32);
        if tokio::time::timeout(Duration::from_secs(10), all_closed).await.is_err() {
            tracing::warn!("some connections did not finish within 10 s; closing them");
        }
        if self.app.config.firewall && crate::volumes::bind::is_root() {
            if let Ok(docker) = self.app.docker.get().await {
                if let Ok(bridge) = crate::firewall::bridge_of(&docker, &self.app.config.instance).await {
                    crate::firewall::remove(&self.app.config.instance, &bridge);
                }
            }
        }
        self.app.db.close().await;
        Ok(())
    }
}

/// One browser connection, plain or TLS, and what serving it needs.
struct Connection {
    app: App,
    router: axum::Router,
    peer: SocketAddr,
    builder: http1::Builder,
    /// Turns true when the server stops: finish the current request and close.
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Connection {
    /// Serve until the connection ends or the server stops. A WebSocket's
    /// tunnel gives up its permit: open WebSockets do not hold up a shutdown
    /// (nor did they when hyper handed them over).
    async fn serve<S>(mut self, stream: S, permit: OwnedSemaphorePermit)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let first = tokio::select! {
            first = crate::proxy::first::read(&self.app, self.peer, stream) => first,
            _ = self.stop.wait_for(|s| *s) => return,
        };
        match first {
            First::Http { buf, stream } => {
                let browser = Arc::new(crate::proxy::Browser::new(self.peer));
                let rest =
                    crate::proxy::express::serve(&self.app, &browser, stream, buf, &mut self.stop).await;
                if let Some(rest) = rest {
                    self.serve_http(TokioIo::new(rest), browser).await;
                }
            }
            First::Tunnel(tunnel) => {
                drop(permit);
                // A task of its own, about 1 KB: this one's future is 2–4 KB, and an
                // idle WebSocket would keep it for hours (bench figure 3, idle bytes).
                tokio::spawn(tunnel.run());
            }
            First::Done => {}
        }
    }

    async fn serve_http<I>(self, io: I, browser: Arc<crate::proxy::Browser>)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let Connection { app, router, peer, builder, mut stop } = self;
        let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let (app, router, browser) = (app.clone(), router.clone(), browser.clone());
            async move {
                // The proxy path skips the router: it is the hot path.
                if req.uri().path().starts_with("/user/") {
                    return Ok::<_, std::convert::Infallible>(
                        crate::proxy::handle(&app, &browser, req).await,
                    );
                }
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(crate::web::Peer(peer));
                let mut resp = router.oneshot(req).await?;
                if app.config.tls() {
                    resp.headers_mut().insert(
                        http::header::STRICT_TRANSPORT_SECURITY,
                        http::HeaderValue::from_static(crate::tls::HSTS),
                    );
                }
                Ok(resp)
            }
        });
        let conn = builder.serve_connection(io, service).with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }
}

/// 32 random bytes kept in a 0600 file; made on first start.
fn load_or_create_secret(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() >= 32 => return Ok(bytes),
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} is too short; remove it to make a new one",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut bytes = vec![0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    Ok(bytes)
}

/// `nbgate serve`.
pub async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    raise_nofile();
    let server = Server::build(config).await?;
    let addr = server.local_addr();
    tracing::info!(%addr, "nbgate listening");
    // A line on stdout that scripts and tests can wait for.
    let scheme = if server.tls.is_some() { "https" } else { "http" };
    println!("nbgate listening on {scheme}://{addr}");
    server.run_until(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Raise the open-files soft limit to the hard one. Each browser connection,
/// WebSocket and its upstream holds a descriptor: a room of 100 passes a shell's
/// usual 1,024 (the hard limit is what the operator allowed; systemd's unit sets
/// both).
fn raise_nofile() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    // An unlimited hard limit cannot be the soft one (the kernel caps it at
    // fs.nr_open): leave that case as it is.
    let (Some(soft), Some(hard)) = (limit.current, limit.maximum) else { return };
    if soft < hard {
        limit.current = Some(hard);
        match setrlimit(Resource::Nofile, limit) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open-files limit"),
            Err(e) => tracing::warn!(error = %e, soft, "could not raise the open-files limit"),
        }
    }
}

/// SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

#[cfg(test)]
mod nofile_tests {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

    /// nextest runs each test in its own process: lowering this one's limit
    /// touches no other test.
    #[test]
    fn raises_the_soft_open_files_limit_to_the_hard_one() {
        // Lowering both limits is always allowed; 4,096 stays below any sane hard one.
        let hard = getrlimit(Resource::Nofile).maximum.map_or(4096, |h| h.min(4096));
        assert!(hard > 256, "hard open-files limit {hard} leaves nothing to raise");
        setrlimit(Resource::Nofile, Rlimit { current: Some(256), maximum: Some(hard) }).unwrap();
        super::raise_nofile();
        assert_eq!(getrlimit(Resource::Nofile).current, Some(hard));
    }
}
