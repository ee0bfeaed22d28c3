//! nbgate's benchmark tools (bench/run.sh): what wrk cannot do.
//!
//! * `upstream`     — the fast static upstream baked into `nbgate/bench-static`: any
//!   path → small JSON, `…/big` → 1 MiB, WebSocket upgrade → echo.
//! * `ws-sessions`  — WebSocket sessions/s (upgrade, one message, close).
//! * `ws-echo`      — echo latency at a fixed message rate with N connections open (timed as `http-rate`).
//! * `ws-idle`      — RSS of a process before/after N idle WebSocket connections, in rounds.
//! * `http-rate`    — fixed-rate HTTP load (open loop), latency from when each request leaves the schedule.
//! * `ready`        — (optionally run a command, then) poll `<base>api/kernels` until 200,
//!   start a kernel and open its WebSocket; times each step.
//! * `visit`        — nbgate ephemeral login (`GET /` → 302 + cookie) then `ready`, N at once.
//! * `hub-signup` / `hub-login` — the JupyterHub + NativeAuthenticator flow, N at once.
//! * `register-users`, `attendees`, `login-storm`, `bcrypt-time` — accounts-mode
//!   scenarios (src/scenarios.rs).
//!
//! Every command prints one JSON object on stdout. Loops are bounded by count and time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

mod scenarios;

#[derive(Parser)]
#[command(name = "loadgen", about = "nbgate benchmark tools; each prints one JSON object")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Extra request header `Name: value` (repeatable): Cookie, Origin, Authorization…
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Static upstream: JSON on any path, 1 MiB on …/big, WebSocket echo on upgrade.
    Upstream {
        #[arg(long, default_value = "0.0.0.0:8888")]
        listen: SocketAddr,
    },
    /// WebSocket sessions/s: connect + upgrade, send one message, read the echo, close.
    WsSessions {
        #[arg(long)]
        url: String,
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
    },
    /// Echo latency: open N connections, then send `rate` messages/s spread over them.
    WsEcho {
        #[arg(long)]
        url: String,
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
    },
    /// RSS of --pid (summed with --pid-extra) before/after opening N idle WebSockets, in rounds.
    WsIdle {
        #[arg(long)]
        url: String,
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        /// Process whose VmRSS is read (the proxy under test); repeatable (summed).
        #[arg(long = "pid", required = true)]
        pids: Vec<u32>,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds to let the process settle before each RSS reading.
        #[arg(long, default_value_t = 2.0)]
        settle: f64,
    },
    /// Fixed-rate HTTP GET load; latency from when each request leaves the schedule.
    HttpRate {
        #[arg(long)]
        url: String,
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        rate: f64,
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        #[arg(long, default_value_t = 64)]
        conns: usize,
        /// Also write every answered request's latency (µs, from leaving the schedule), one
        /// per line, to this file: the report pools a peer's runs into one distribution.
        #[arg(long)]
        raw: Option<std::path::PathBuf>,
    },
    /// Fixed-rate HTTP GET load on several peers taking turns in short slices (each peer
    /// at the full rate in its slices), so that a stretch of host stalls falls on every
    /// peer alike; per peer the same JSON as `http-rate`, under `peers`.
    HttpRateTurns {
        /// `NAME=URL` of one peer (repeatable, at least one).
        #[arg(long = "peer", required = true)]
        peers: Vec<String>,
        /// `NAME=Header: value`: a header for that peer's requests (repeatable).
        #[arg(long = "peer-header")]
        peer_headers: Vec<String>,
        #[arg(long)]
        rate: f64,
        /// Seconds of load per peer (the run lasts this times the number of peers).
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Milliseconds of a peer's turn; each cycle of turns takes the next order of the
        /// peers (all orders in turn), so none always follows the same one.
        #[arg(long, default_value_t = 200)]
        slice_ms: u64,
        /// Connections per peer.
        #[arg(long, default_value_t = 64)]
        conns: usize,
        /// Also write each peer's latencies (µs, one per line) to DIR/<prefix><name><suffix>.
        #[arg(long)]
        raw_dir: Option<std::path::PathBuf>,
        #[arg(long, default_value = "")]
        raw_prefix: String,
        #[arg(long, default_value = ".txt")]
        raw_suffix: String,
    },
    /// Optionally run --exec (timed), then wait until <base>api/kernels answers 200,
    /// then (with --kernel) start a kernel and open its channels WebSocket.
    Ready {
        /// Base URL of the notebook server, ending in `/`, e.g. http://127.0.0.1:9000/user/x/
        #[arg(long)]
        base: String,
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        exec: Option<String>,
        #[arg(long)]
        kernel: bool,
        #[arg(long, default_value_t = 120.0)]
        timeout: f64,
    },
    /// nbgate ephemeral visits: N at once, each `GET /` → 302 (cookie) → ready (+kernel).
    Visit {
        #[arg(long)]
        gateway: String,
        #[arg(long, default_value_t = 1)]
        n: usize,
        #[arg(long)]
        kernel: bool,
        #[arg(long, default_value_t = 120.0)]
        timeout: f64,
    },
    /// JupyterHub NativeAuthenticator sign-up of each user (open_signup).
    HubSignup {
        #[arg(long)]
        hub: String,
        #[arg(long, value_delimiter = ',')]
        users: Vec<String>,
        #[arg(long)]
        password: String,
    },
    /// JupyterHub: N users at once: POST /hub/login → GET /hub/spawn → ready (+kernel),
    /// the notebook API reached through the hub's proxy with --token (a service token).
    HubLogin {
        #[arg(long)]
        hub: String,
        #[arg(long, value_delimiter = ',')]
        users: Vec<String>,
        #[arg(long)]
        password: String,
        #[arg(long)]
        token: String,
        #[arg(long)]
        kernel: bool,
        #[arg(long, default_value_t = 180.0)]
        timeout: f64,
    },
    /// nbgate accounts: register N users `<prefix>0…` through /hub/register.
    RegisterUsers {
        #[arg(long)]
        gateway: String,
        #[arg(long)]
        key: String,
        #[arg(long)]
        prefix: String,
        #[arg(long, default_value_t = 1)]
        n: usize,
        #[arg(long)]
        password: String,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// nbgate accounts: N attendees arriving --gap s apart, each registering, running
    /// code in a kernel that writes a file, going idle until recycled, logging in again
    /// and reading the file back.
    Attendees {
        #[arg(long)]
        gateway: String,
        #[arg(long, default_value_t = 50)]
        n: usize,
        /// Number of the first attendee (a later round on the same gateway).
        #[arg(long, default_value_t = 0)]
        first: usize,
        #[arg(long)]
        key: String,
        #[arg(long, default_value_t = 3.0)]
        gap: f64,
        /// Longest wait, after the kernel WebSocket closes, for the server to be recycled.
        #[arg(long, default_value_t = 120.0)]
        idle_wait: f64,
        /// Longest wait for a lab after a register/login (starting and queue pages).
        #[arg(long, default_value_t = 240.0)]
        timeout: f64,
        #[arg(long, default_value_t = 4096)]
        payload_bytes: usize,
        /// The gateway's pid: VmRSS and threads sampled throughout.
        #[arg(long)]
        pid: Option<u32>,
        /// The gateway's NBGATE_INSTANCE: files not read back through it are checked on the volumes.
        #[arg(long)]
        instance: Option<String>,
    },
    /// nbgate accounts: N logins at once (users `<prefix>0…`) while --runner, signed in,
    /// polls its server's api/status at --rate; each login followed to its lab or the queue.
    LoginStorm {
        #[arg(long)]
        gateway: String,
        #[arg(long)]
        prefix: String,
        #[arg(long, default_value_t = 200)]
        n: usize,
        #[arg(long)]
        password: String,
        #[arg(long)]
        runner: String,
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Seconds of polling before the storm (the baseline).
        #[arg(long, default_value_t = 10.0)]
        before: f64,
        /// Seconds of polling after every login has its answer.
        #[arg(long, default_value_t = 5.0)]
        after: f64,
        #[arg(long, default_value_t = 180.0)]
        timeout: f64,
        #[arg(long)]
        pid: Option<u32>,
        /// The gateway's NBGATE_INSTANCE: also poll the runner's container directly.
        #[arg(long)]
        instance: Option<String>,
        /// After the running user's login, wait for this many warm containers (no start in the baseline).
        #[arg(long)]
        wait_warm: Option<u64>,
    },
    /// Time bcrypt verify at a cost (median of N).
    BcryptTime {
        #[arg(long, default_value_t = 10)]
        cost: u32,
        #[arg(long, default_value_t = 5)]
        n: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    raise_nofile();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let rt = if matches!(cli.cmd, Cmd::Upstream { .. }) || threads == 1 {
        // One core's worth of upstream, like nginx with one worker; and a client
        // pinned to one core saves the hand-offs between block_on's thread and a worker.
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?
    };
    let out = rt.block_on(run(cli.cmd))?;
    println!("{out}");
    Ok(())
}

async fn run(cmd: Cmd) -> Result<Value> {
    match cmd {
        Cmd::Upstream { listen } => upstream(listen).await.map(|_| Value::Null),
        Cmd::WsSessions { url, common, concurrency, duration } => {
            ws_sessions(&url, &parse_headers(&common.headers)?, concurrency, duration).await
        }
        Cmd::WsEcho { url, common, conns, rate, duration, warmup } => {
            ws_echo(&url, &parse_headers(&common.headers)?, conns, rate, duration, warmup).await
        }
        Cmd::WsIdle { url, common, conns, pids, rounds, settle } => {
            ws_idle(&url, &parse_headers(&common.headers)?, conns, &pids, rounds, settle).await
        }
        Cmd::HttpRate { url, common, rate, duration, conns, raw } => {
            let peer =
                RatePeer { name: String::new(), uri: url.parse()?, headers: parse_headers(&common.headers)? };
            let mut out = http_rate(vec![peer], rate, duration, None, conns).await?;
            let (_, lat, j) = out.pop().expect("one peer");
            if let Some(path) = raw {
                write_raw(&path, &lat)?;
            }
            Ok(j)
        }
        Cmd::HttpRateTurns {
            peers,
            peer_headers,
            rate,
            duration,
            slice_ms,
            conns,
            raw_dir,
            raw_prefix,
            raw_suffix,
        } => {
            let mut list = Vec::new();
            for p in &peers {
                let (name, url) =
                    p.split_once('=').with_context(|| format!("--peer {p:?}: expected NAME=URL"))?;
                let mine: Vec<String> = peer_headers
                    .iter()
                    .filter_map(|h| h.split_once('=').filter(|(n, _)| *n == name).map(|(_, v)| v.to_string()))
                    .collect();
                list.push(RatePeer {
                    name: name.to_string(),
                    uri: url.parse()?,
                    headers: parse_headers(&mine)?,
                });
            }
            let slice = Duration::from_millis(slice_ms.max(1));
            let mut by_peer = serde_json::Map::new();
            for (name, lat, j) in http_rate(list, rate, duration, Some(slice), conns).await? {
                if let Some(dir) = &raw_dir {
                    write_raw(&dir.join(format!("{raw_prefix}{name}{raw_suffix}")), &lat)?;
                }
                by_peer.insert(name, j);
            }
            Ok(json!({"slice_ms": slice_ms, "peers": by_peer}))
        }
        Cmd::Ready { base, common, exec, kernel, timeout } => {
            let t0 = Instant::now();
            let mut steps = serde_json::Map::new();
            if let Some(cmd) = exec {
                let st = tokio::process::Command::new("sh").arg("-c").arg(&cmd).status().await?;
                if !st.success() {
                    bail!("--exec failed: {st}");
                }
                steps.insert("exec_ms".into(), json!(ms(t0.elapsed())));
            }
            let client = http_client(8);
            let hdrs = parse_headers(&common.headers)?;
            let deadline = t0 + Duration::from_secs_f64(timeout);
            let r = notebook_ready(&client, &base, &hdrs, kernel, t0, deadline).await?;
            steps.extend(r.as_object().cloned().unwrap_or_default());
            Ok(Value::Object(steps))
        }
        Cmd::Visit { gateway, n, kernel, timeout } => visit(&gateway, n, kernel, timeout).await,
        Cmd::HubSignup { hub, users, password } => hub_signup(&hub, &users, &password).await,
        Cmd::HubLogin { hub, users, password, token, kernel, timeout } => {
            hub_login(&hub, &users, &password, &token, kernel, timeout).await
        }
        Cmd::RegisterUsers { gateway, key, prefix, n, password, concurrency } => {
            scenarios::register_users(&gateway, &key, &prefix, n, &password, concurrency).await
        }
        Cmd::Attendees { gateway, n, first, key, gap, idle_wait, timeout, payload_bytes, pid, instance } => {
            scenarios::attendees(scenarios::AttendeeOpts {
                gateway,
                n,
                first,
                key,
                gap,
                idle_wait,
                timeout,
                payload_bytes,
                pid,
                instance,
            })
            .await
        }
        Cmd::LoginStorm {
            gateway,
            prefix,
            n,
            password,
            runner,
            rate,
            before,
            after,
            timeout,
            pid,
            instance,
            wait_warm,
        } => {
            scenarios::login_storm(scenarios::StormOpts {
                gateway,
                prefix,
                n,
                password,
                runner,
                rate,
                before,
                after,
                timeout,
                pid,
                instance,
                wait_warm,
            })
            .await
        }
        Cmd::BcryptTime { cost, n } => {
            tokio::task::spawn_blocking(move || scenarios::bcrypt_time(cost, n)).await?
        }
    }
}

// ---------------------------------------------------------------- helpers

fn raise_nofile() {
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn parse_headers(list: &[String]) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for h in list {
        let (k, v) = h.split_once(':').with_context(|| format!("header {h:?}: expected `Name: value`"))?;
        map.append(HeaderName::from_bytes(k.trim().as_bytes())?, HeaderValue::from_str(v.trim())?);
    }
    Ok(map)
}

/// Latency summary in milliseconds from microsecond samples.
fn summary(mut us: Vec<u64>) -> Value {
    if us.is_empty() {
        return json!({"count": 0});
    }
    us.sort_unstable();
    let q = |p: f64| {
        let i = ((p * us.len() as f64).ceil() as usize).clamp(1, us.len()) - 1;
        us[i] as f64 / 1e3
    };
    let mean = us.iter().sum::<u64>() as f64 / us.len() as f64 / 1e3;
    json!({"count": us.len(), "mean_ms": mean, "p50_ms": q(0.50), "p90_ms": q(0.90),
           "p99_ms": q(0.99), "p999_ms": q(0.999), "max_ms": q(1.0)})
}

fn rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("pid {pid}"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for pid {pid}"))
}

type WsConn = WebSocketStream<TcpStream>;

/// Small buffers: thousands of idle connections must not cost 128 KiB each
/// (tungstenite's default read buffer), neither here nor in the upstream.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0)
}

async fn ws_connect(url: &str, headers: &HeaderMap) -> Result<WsConn> {
    let mut req = url.into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().append(k, v.clone());
    }
    let uri = req.uri().clone();
    let host = uri.host().context("url without host")?;
    let port = uri.port_u16().unwrap_or(80);
    let tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    let (ws, resp) = tokio_tungstenite::client_async_with_config(req, tcp, Some(ws_config())).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        bail!("upgrade answered {}", resp.status());
    }
    Ok(ws)
}

/// Wait for the next data frame (skipping pings/pongs).
async fn ws_recv(ws: &mut WsConn) -> Result<Message> {
    loop {
        match ws.next().await {
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => return Ok(m),
            Some(Ok(Message::Close(_))) | None => bail!("closed"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

async fn ws_close(mut ws: WsConn) {
    if ws.close(None).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
}

// ---------------------------------------------------------------- upstream

static SMALL: &[u8] = br#"{"connections":0,"kernels":0,"last_activity":"2026-01-01T00:00:00.000000Z","started":"2026-01-01T00:00:00.000000Z"}"#;

async fn upstream(listen: SocketAddr) -> Result<()> {
    let big = Bytes::from(vec![b'x'; 1 << 20]);
    let listener = TcpListener::bind(listen).await?;
    eprintln!("upstream listening on {listen}");
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let big = big.clone();
        tokio::spawn(async move {
            let tcp = match raw_websocket(tcp).await {
                Ok(()) => return,
                Err(tcp) => tcp,
            };
            let svc = hyper::service::service_fn(move |req| upstream_handle(req, big.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades()
                .await;
        });
    }
}

/// A connection that opens with a WebSocket upgrade is answered and echoed in plain
/// bytes, as the ws-sessions client speaks: with hyper's upgrade and tungstenite the
/// upstream cost the load core more than a proxy costs its own, so the direct path was
/// only 1.12× the proxied one (BENCH.md: it must be well above). Anything else (plain
/// HTTP, a head longer than the peek) goes back to hyper untouched; an upgrade that
/// takes that way is echoed by the same `echo_frames`.
async fn raw_websocket(tcp: TcpStream) -> std::result::Result<(), TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = [0u8; 4096];
    let Ok(n) = tcp.peek(&mut head).await else { return Err(tcp) };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = req.parse(&head[..n]) else { return Err(tcp) };
    let value = |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    if !value("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket")) {
        return Err(tcp);
    }
    let Some(key) = value("sec-websocket-key") else { return Err(tcp) };
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key)
    );
    let mut tcp = tcp;
    // The head is known to be there: take it off the socket, then answer.
    if tcp.read_exact(&mut head[..len]).await.is_err() || tcp.write_all(answer.as_bytes()).await.is_err() {
        return Ok(());
    }
    let _ = echo_frames(&mut tcp).await;
    Ok(())
}

/// Echo every data frame back unmasked, answer a ping with a pong and a close with a
/// close, then end the stream (the server closes first, RFC 6455 §7.1.1).
async fn echo_frames<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    tcp: &mut S,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const MAX_FRAME: usize = 1 << 20;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Whole frames at the front of the buffer.
        while let Some((opcode, header, payload)) = frame_bounds(&buf) {
            let fin_opcode = buf[0];
            let mask: Option<[u8; 4]> =
                (buf[1] & 0x80 != 0).then(|| buf[header - 4..header].try_into().unwrap());
            let data = &mut buf[header..header + payload];
            if let Some(m) = mask {
                data.iter_mut().enumerate().for_each(|(i, b)| *b ^= m[i % 4]);
            }
            let reply_opcode = if opcode == 0x9 { 0xA } else { opcode };
            if opcode != 0xA {
                let mut out = Vec::with_capacity(payload + 10);
                out.push((fin_opcode & 0xF0) | reply_opcode);
                match payload {
                    n if n < 126 => out.push(n as u8),
                    n if n < 65536 => {
                        out.push(126);
                        out.extend_from_slice(&(n as u16).to_be_bytes());
                    }
                    n => {
                        out.push(127);
                        out.extend_from_slice(&(n as u64).to_be_bytes());
                    }
                }
                out.extend_from_slice(data);
                tcp.write_all(&out).await?;
            }
            buf.drain(..header + payload);
            if opcode == 0x8 {
                return Ok(());
            }
        }
        if buf.len() > MAX_FRAME {
            return Ok(());
        }
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// (opcode, header length, payload length) once `b` holds a whole frame.
fn frame_bounds(b: &[u8]) -> Option<(u8, usize, usize)> {
    if b.len() < 2 {
        return None;
    }
    let (ext, short) = match b[1] & 0x7F {
        126 => (2, None),
        127 => (8, None),
        n => (0, Some(n as usize)),
    };
    let header = 2 + ext + if b[1] & 0x80 != 0 { 4 } else { 0 };
    if b.len() < header {
        return None;
    }
    let payload =
        short.unwrap_or_else(|| b[2..2 + ext].iter().fold(0usize, |acc, x| (acc << 8) | *x as usize));
    (b.len() >= header.checked_add(payload)?).then_some((b[0] & 0x0F, header, payload))
}

async fn upstream_handle(req: Request<Incoming>, big: Bytes) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let is_ws = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if is_ws {
        let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
            return Ok(Response::builder().status(400).body(Full::new(Bytes::new())).unwrap());
        };
        let accept = derive_accept_key(key.as_bytes());
        tokio::spawn(async move {
            if let Ok(up) = hyper::upgrade::on(req).await {
                let _ = echo_frames(&mut TokioIo::new(up)).await;
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept)
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    // Drain a request body, if any.
    let path_is_big = req.uri().path().ends_with("/big");
    let _ = req.into_body().collect().await;
    let body = if path_is_big { big } else { Bytes::from_static(SMALL) };
    Ok(Response::builder().header("content-type", "application/json").body(Full::new(body)).unwrap())
}

// ---------------------------------------------------------------- WebSocket figures

/// One WebSocket session in plain bytes: the upgrade request, a masked "hello", its
/// echo, a close and the server's close, then the end of the stream. The proxy sees
/// the bytes a browser's library would send; the client costs far less than
/// tungstenite's, so the load core stays ahead of the proxy under test (BENCH.md:
/// the direct path must stay well above the proxied one).
struct RawSession {
    addr: SocketAddr,
    request: Vec<u8>,
    hello: Vec<u8>,
    close: Vec<u8>,
}

/// RFC 6455's sample nonce and its accept value: the proxies do not care which key it is.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &[u8] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const WS_ECHO: &[u8] = b"\x81\x05hello";

impl RawSession {
    fn new(url: &str, headers: &HeaderMap) -> Result<Self> {
        let uri: http::Uri = url.replacen("ws://", "http://", 1).parse()?;
        let host = uri.host().context("url without host")?;
        let port = uri.port_u16().unwrap_or(80);
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?.next().context("no address")?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n"
        )
        .into_bytes();
        for (k, v) in headers {
            request.extend_from_slice(k.as_str().as_bytes());
            request.extend_from_slice(b": ");
            request.extend_from_slice(v.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        Ok(Self {
            addr,
            request,
            hello: masked_frame(0x1, b"hello"),
            close: masked_frame(0x8, &1000u16.to_be_bytes()),
        })
    }

    async fn run(&self) -> Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        tcp.write_all(&self.request).await?;
        let mut buf = [0u8; 2048];
        let mut n = 0;
        let head = loop {
            let r = tcp.read(&mut buf[n..]).await?;
            if r == 0 {
                bail!("closed during the handshake");
            }
            n += r;
            if let Some(i) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if n == buf.len() {
                bail!("handshake answer over {} bytes", buf.len());
            }
        };
        if !buf.starts_with(b"HTTP/1.1 101") {
            let line = buf[..head].split(|&b| b == b'\r').next().unwrap_or_default();
            bail!("upgrade answered {}", String::from_utf8_lossy(line));
        }
        if !buf[..head].windows(WS_ACCEPT.len()).any(|w| w == WS_ACCEPT) {
            bail!("wrong Sec-WebSocket-Accept");
        }
        // Frames only after the 101 (RFC 6455 §4.1); bytes past the head are the server's.
        buf.copy_within(head..n, 0);
        n -= head;
        tcp.write_all(&self.hello).await?;
        while n < WS_ECHO.len() {
            let r = tcp.read(&mut buf[n..]).await?;
            if r == 0 {
                bail!("closed before the echo");
            }
            n += r;
        }
        if &buf[..WS_ECHO.len()] != WS_ECHO {
            bail!("unexpected echo frame");
        }
        tcp.write_all(&self.close).await?;
        // The server's close frame, then the end of the stream (the server closes first).
        tokio::time::timeout(Duration::from_secs(2), async {
            while tcp.read(&mut buf).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await
        .map_err(|_| anyhow!("no end of stream within 2 s of the close"))??;
        Ok(())
    }
}

/// A client frame (FIN set, masked, payload under 126 bytes).
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

async fn ws_sessions(url: &str, headers: &HeaderMap, concurrency: usize, duration: f64) -> Result<Value> {
    let session = Arc::new(RawSession::new(url, headers)?);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(duration);
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(tokio::sync::Mutex::new(None::<String>));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (session, errors, first_error) = (session.clone(), errors.clone(), first_error.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                match tokio::time::timeout(Duration::from_secs(10), session.run()).await {
                    Ok(Ok(())) => lat.push(t.elapsed().as_micros() as u64),
                    Ok(Err(e)) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().await.get_or_insert(e.to_string());
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().await.get_or_insert("timeout".into());
                    }
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ok = all.len();
    Ok(json!({
        "sessions": ok, "errors": errors.load(Ordering::Relaxed), "first_error": *first_error.lock().await,
        "seconds": elapsed, "sessions_per_s": ok as f64 / elapsed, "session_latency": summary(all),
        "concurrency": concurrency,
    }))
}

/// Open `n` connections, at most `parallel` handshakes at a time.
async fn open_many(
    url: &str,
    headers: &HeaderMap,
    n: usize,
    parallel: usize,
) -> (Vec<WsConn>, u64, Option<String>) {
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (url, headers, sem) = (url.to_string(), headers.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await;
            tokio::time::timeout(Duration::from_secs(20), ws_connect(&url, &headers))
                .await
                .map_err(|_| anyhow!("timeout"))
                .and_then(|r| r)
        }));
    }
    let (mut conns, mut errors, mut first) = (Vec::with_capacity(n), 0, None);
    for t in tasks {
        match t.await {
            Ok(Ok(ws)) => conns.push(ws),
            Ok(Err(e)) => {
                errors += 1;
                first.get_or_insert(e.to_string());
            }
            Err(e) => {
                errors += 1;
                first.get_or_insert(e.to_string());
            }
        }
    }
    (conns, errors, first)
}

async fn ws_echo(
    url: &str,
    headers: &HeaderMap,
    n: usize,
    rate: f64,
    duration: f64,
    warmup: f64,
) -> Result<Value> {
    let t_open = Instant::now();
    let (conns, open_errors, first_open_error) = open_many(url, headers, n, 100).await;
    let open_s = t_open.elapsed().as_secs_f64();
    if conns.is_empty() {
        bail!("no connection opened: {}", first_open_error.unwrap_or_default());
    }
    let open = conns.len();
    let period = Duration::from_secs_f64(open as f64 / rate);
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + Duration::from_secs_f64(warmup);
    let end = measure_from + Duration::from_secs_f64(duration);
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(open);
    for (i, mut ws) in conns.into_iter().enumerate() {
        let errors = errors.clone();
        // Spread the connections' phases evenly over one period.
        let phase = period.mul_f64(i as f64 / open as f64);
        tasks.push(tokio::spawn(async move {
            // (from the send, from the intended time) per echo, in µs
            let mut lat = Vec::new();
            let mut intended = start + phase;
            let payload = "x".repeat(64);
            while intended < end {
                // As in `http_rate`, the timer's whole-millisecond lag is not the peer's; but
                // when the last echo came back after this send was due, the delay is the
                // peer's and counts from the intended time (no coordinated omission).
                let early = Instant::now() < intended;
                tokio::time::sleep_until(intended.into()).await;
                let sent = if early { Instant::now() } else { intended };
                let r = tokio::time::timeout(Duration::from_secs(10), async {
                    ws.send(Message::Text(payload.clone().into())).await?;
                    ws_recv(&mut ws).await
                })
                .await;
                match r {
                    Ok(Ok(_)) => {
                        if intended >= measure_from {
                            lat.push((
                                sent.elapsed().as_micros() as u64,
                                intended.elapsed().as_micros() as u64,
                            ));
                        }
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                intended += period;
            }
            ws_close(ws).await;
            lat
        }));
    }
    let mut both = Vec::new();
    for t in tasks {
        both.extend(t.await?);
    }
    let (all, all_intended): (Vec<u64>, Vec<u64>) = both.into_iter().unzip();
    Ok(json!({
        "open": open, "open_errors": open_errors, "first_open_error": first_open_error, "open_seconds": open_s,
        "rate": rate, "seconds": duration, "errors": errors.load(Ordering::Relaxed),
        "achieved_rate": all.len() as f64 / duration, "echo_latency": summary(all),
        "echo_latency_from_intended": summary(all_intended),
    }))
}

async fn ws_idle(
    url: &str,
    headers: &HeaderMap,
    n: usize,
    pids: &[u32],
    rounds: usize,
    settle: f64,
) -> Result<Value> {
    let rss = || -> Result<u64> { pids.iter().map(|p| rss_kib(*p)).sum() };
    let settle = Duration::from_secs_f64(settle);
    tokio::time::sleep(settle).await;
    let base = rss()?;
    let mut out = Vec::new();
    for round in 0..rounds {
        let t = Instant::now();
        let (mut conns, errors, first_error) = open_many(url, headers, n, 200).await;
        let open_s = t.elapsed().as_secs_f64();
        tokio::time::sleep(settle).await;
        let rss_open = rss()?;
        // Every connection must still be alive: one echo each.
        let mut alive = 0usize;
        for ws in conns.iter_mut() {
            let ok = tokio::time::timeout(Duration::from_secs(5), async {
                ws.send(Message::Text("ping".into())).await?;
                ws_recv(ws).await
            })
            .await;
            if matches!(ok, Ok(Ok(_))) {
                alive += 1;
            }
        }
        let opened = conns.len();
        // Close politely, a few hundred at a time.
        let mut closing = Vec::new();
        for ws in conns.drain(..) {
            closing.push(tokio::spawn(ws_close(ws)));
            if closing.len() >= 500 {
                for c in closing.drain(..) {
                    let _ = c.await;
                }
            }
        }
        for c in closing {
            let _ = c.await;
        }
        tokio::time::sleep(settle).await;
        let rss_closed = rss()?;
        let per_conn =
            if opened > 0 { (rss_open as f64 - base as f64) * 1024.0 / opened as f64 } else { 0.0 };
        out.push(json!({
            "round": round + 1, "opened": opened, "open_errors": errors, "first_error": first_error,
            "alive": alive, "open_seconds": open_s, "rss_open_kib": rss_open, "rss_closed_kib": rss_closed,
            "bytes_per_conn": per_conn,
        }));
    }
    let first_closed = out.first().and_then(|r| r["rss_closed_kib"].as_u64()).unwrap_or(0);
    let last_closed = out.last().and_then(|r| r["rss_closed_kib"].as_u64()).unwrap_or(0);
    Ok(json!({
        "conns": n, "rss_base_kib": base, "rounds": out,
        "bytes_per_conn": out.first().map(|r| r["bytes_per_conn"].clone()).unwrap_or(Value::Null),
        "soak_growth_kib": last_closed as i64 - first_closed as i64,
    }))
}

// ---------------------------------------------------------------- HTTP

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn http_client(max_idle: usize) -> HttpClient {
    let mut conn = hyper_util::client::legacy::connect::HttpConnector::new();
    conn.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(max_idle).build(conn)
}

struct RatePeer {
    name: String,
    uri: http::Uri,
    headers: HeaderMap,
}

fn write_raw(path: &std::path::Path, us: &[u64]) -> Result<()> {
    let lines: String = us.iter().map(|us| format!("{us}\n")).collect();
    std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))
}

/// The next order of `order` in lexicographic sequence, wrapping to the first:
/// cycling through every order of the peers.
fn next_order(order: &mut [usize]) {
    let n = order.len();
    let Some(i) = (1..n).rev().find(|&i| order[i - 1] < order[i]) else {
        order.reverse();
        return;
    };
    let j = (i..n).rev().find(|&j| order[j] > order[i - 1]).expect("order[i] qualifies");
    order.swap(i - 1, j);
    order[i..].reverse();
}

/// Which peer sends each of the `per_peer × n` requests: turns of `turn` each, the
/// order of the peers changing every cycle when `reorder`.
fn schedule(per_peer: u64, n: usize, interval: Duration, turn: Duration, reorder: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let (mut cycle, mut sent_by) = (0u64, vec![0u64; n]);
    let mut plan = Vec::with_capacity(per_peer as usize * n);
    for i in 0..per_peer * n as u64 {
        let k = (interval.mul_f64(i as f64).as_nanos() / turn.as_nanos()) as u64;
        while k / n as u64 > cycle {
            cycle += 1;
            if reorder {
                next_order(&mut order);
                // No peer takes two turns in a row.
                if plan.last() == Some(&order[0]) {
                    order.rotate_left(1);
                }
            }
        }
        let mut who = order[(k % n as u64) as usize];
        // Turns need not split the requests evenly at the end: give the rest to whoever
        // is short, so every peer gets exactly `per_peer`.
        if sent_by[who] >= per_peer {
            who = (0..n).find(|&p| sent_by[p] < per_peer).expect("plan holds per_peer × n");
        }
        sent_by[who] += 1;
        plan.push(who);
    }
    plan
}

/// Open-loop load at `rate` on every peer for `duration` seconds each; with `slice`,
/// the peers take turns of that length (one at a time), else they run one after the
/// other. Returns, per peer, its latencies (µs) and its JSON summary.
async fn http_rate(
    peers: Vec<RatePeer>,
    rate: f64,
    duration: f64,
    slice: Option<Duration>,
    conns: usize,
) -> Result<Vec<(String, Vec<u64>, Value)>> {
    let n = peers.len();
    let clients: Vec<HttpClient> = (0..n).map(|_| http_client(conns)).collect();
    // Warm each peer's connection pool a little (not measured).
    for (p, client) in peers.iter().zip(&clients) {
        for _ in 0..conns.min(8) {
            let _ = send(client, Method::GET, &p.uri.to_string(), &p.headers, Bytes::new()).await;
        }
    }
    let per_peer = (rate * duration).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    // Without slices, one turn per peer covering all its requests.
    let turn = slice.unwrap_or(interval.mul_f64(per_peer as f64)).max(interval);
    let sems: Vec<_> = (0..n).map(|_| Arc::new(tokio::sync::Semaphore::new(conns))).collect();
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks: Vec<Vec<_>> = (0..n).map(|_| Vec::with_capacity(per_peer as usize)).collect();
    let plan = schedule(per_peer, n, interval, turn, slice.is_some());
    for (i, &who) in plan.iter().enumerate() {
        let offset = interval.mul_f64(i as f64);
        let intended = start + offset;
        tokio::time::sleep_until(intended.into()).await;
        // tokio's timer wakes on whole milliseconds, so a request leaves up to ~1 ms after
        // its intended time whatever the peer; timed from intended, that lag is the same
        // uniform 0–1 ms in every peer's p99 and swamps differences of a few hundred µs.
        // So latency runs from when the request left the loop; waiting for one of the
        // `conns` connections still counts (the loop never waits on a response).
        let sent = Instant::now();
        let (client, uri, headers, sem) =
            (clients[who].clone(), peers[who].uri.clone(), peers[who].headers.clone(), sems[who].clone());
        tasks[who].push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await;
            let mut req = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
            *req.headers_mut() = headers;
            let r = tokio::time::timeout(Duration::from_secs(10), async {
                let resp = client.request(req).await?;
                let status = resp.status();
                resp.into_body().collect().await?;
                Ok::<_, anyhow::Error>(status)
            })
            .await;
            match r {
                Ok(Ok(s)) if s.is_success() => {
                    Ok((sent.elapsed().as_micros() as u64, intended.elapsed().as_micros() as u64))
                }
                Ok(Ok(s)) => Err(format!("status {s}")),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timeout".into()),
            }
        }));
    }
    let mut out = Vec::with_capacity(n);
    let mut results = Vec::with_capacity(n);
    for peer_tasks in tasks {
        let mut both = Vec::with_capacity(peer_tasks.len());
        let (mut errors, mut first_error) = (0u64, None);
        for t in peer_tasks {
            match t.await? {
                Ok(pair) => both.push(pair),
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        results.push((both, errors, first_error));
    }
    // Each peer had 1/n of the time.
    let elapsed = start.elapsed().as_secs_f64() / n as f64;
    for (p, (both, errors, first_error)) in peers.into_iter().zip(results) {
        let (lat, from_intended): (Vec<u64>, Vec<u64>) = both.into_iter().unzip();
        let j = json!({
            "rate": rate, "requests": per_peer, "errors": errors, "first_error": first_error,
            "achieved_rate": lat.len() as f64 / elapsed, "latency": summary(lat.clone()),
            "latency_from_intended": summary(from_intended), "conns": conns,
        });
        out.push((p.name, lat, j));
    }
    Ok(out)
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

async fn send(
    client: &HttpClient,
    method: Method,
    url: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Resp> {
    let mut req = Request::builder().method(method).uri(url).body(Full::new(body))?;
    for (k, v) in headers {
        req.headers_mut().append(k, v.clone());
    }
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| anyhow!("timeout: {url}"))??;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Resp { status: parts.status, headers: parts.headers, body })
}

/// Cookies as a browser would keep them (name → value), enough for these flows.
#[derive(Default, Clone)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    fn take(&mut self, headers: &HeaderMap) {
        for v in headers.get_all(http::header::SET_COOKIE) {
            if let Some((nv, _)) = v.to_str().ok().map(|s| s.split_once(';').unwrap_or((s, ""))) {
                if let Some((n, v)) = nv.split_once('=') {
                    self.0.insert(n.trim().to_string(), v.trim().to_string());
                }
            }
        }
    }
    fn header(&self) -> Option<HeaderValue> {
        if self.0.is_empty() {
            return None;
        }
        let s = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        HeaderValue::from_str(&s).ok()
    }
    fn apply(&self, h: &mut HeaderMap) {
        if let Some(v) = self.header() {
            h.insert(http::header::COOKIE, v);
        }
    }
}

/// Poll `<base>api/kernels` until 200; then optionally start a kernel and open its
/// channels WebSocket. Times are milliseconds since `t0`.
async fn notebook_ready(
    client: &HttpClient,
    base: &str,
    headers: &HeaderMap,
    kernel: bool,
    t0: Instant,
    deadline: Instant,
) -> Result<Value> {
    let api = format!("{base}api/kernels");
    let mut polls = 0u64;
    loop {
        polls += 1;
        let last = match send(client, Method::GET, &api, headers, Bytes::new()).await {
            Ok(r) if r.status == StatusCode::OK => break,
            Ok(r) => format!("status {}", r.status),
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            bail!("{api} not ready before the deadline (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let api_ms = ms(t0.elapsed());
    let mut out = json!({"api_kernels_ms": api_ms, "polls": polls});
    if kernel {
        let mut h = headers.clone();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let r = send(client, Method::POST, &api, &h, Bytes::from_static(br#"{"name":"python3"}"#)).await?;
        if !r.status.is_success() {
            bail!("POST {api}: {} {}", r.status, String::from_utf8_lossy(&r.body));
        }
        let k: Value = serde_json::from_slice(&r.body)?;
        let id = k["id"].as_str().context("kernel without id")?.to_string();
        out["kernel_started_ms"] = json!(ms(t0.elapsed()));
        let ws_url = format!("{}api/kernels/{id}/channels", base.replacen("http://", "ws://", 1));
        let ws = ws_connect(&ws_url, headers).await.with_context(|| format!("kernel WebSocket {ws_url}"))?;
        out["kernel_ws_ms"] = json!(ms(t0.elapsed()));
        drop(ws);
        // Leave the server as we found it.
        let _ = send(client, Method::DELETE, &format!("{api}/{id}"), headers, Bytes::new()).await;
    }
    Ok(out)
}

fn burst_summary(results: Vec<Result<Value>>, t_all: Duration, key: &str) -> Value {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let mut usable: Vec<f64> = ok.iter().filter_map(|v| v[key].as_f64()).collect();
    usable.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut logins: Vec<f64> = ok.iter().filter_map(|v| v["login_ms"].as_f64()).collect();
    logins.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let med = |v: &Vec<f64>| if v.is_empty() { Value::Null } else { json!(v[v.len() / 2]) };
    let all_api = ok
        .iter()
        .filter_map(|v| v["api_kernels_ms"].as_f64())
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    json!({
        "n": ok.len() + errors.len(), "ok": ok.len(), "errors": errors.len(), "error_list": errors,
        "all_usable_ms": usable.last(), "median_usable_ms": med(&usable), "usable_key": key,
        "all_api_kernels_ms": all_api,
        "last_login_ms": logins.last(), "median_login_ms": med(&logins),
        "logins_per_s": logins.last().map(|l| ok.len() as f64 / (l / 1e3)),
        "wall_ms": ms(t_all), "each": ok,
    })
}

// ---------------------------------------------------------------- nbgate visits

async fn visit(gateway: &str, n: usize, kernel: bool, timeout: f64) -> Result<Value> {
    let gateway = gateway.trim_end_matches('/').to_string();
    let client = http_client(4 * n.max(1));
    let t_all = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (client, gateway) = (client.clone(), gateway.clone());
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let deadline = t0 + Duration::from_secs_f64(timeout);
            // Like a browser: a "please wait" page (Retry-After / Refresh) is followed
            // until the deadline; anything else that is not a redirect is an error.
            let mut waits = 0u32;
            let mut jar = Jar::default();
            let r = loop {
                let mut h = HeaderMap::new();
                jar.apply(&mut h);
                let r = send(&client, Method::GET, &format!("{gateway}/"), &h, Bytes::new()).await?;
                jar.take(&r.headers);
                if r.status.is_redirection() {
                    break r;
                }
                let retry = r
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .or_else(|| r.headers.get("refresh"))
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(';').next())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                match retry {
                    Some(secs) if Instant::now() + Duration::from_secs(secs) < deadline => {
                        waits += 1;
                        tokio::time::sleep(Duration::from_secs(secs.clamp(1, 10))).await;
                    }
                    _ => bail!("GET / answered {} (expected a redirect into /user/<slot>/)", r.status),
                }
            };
            let loc =
                r.headers.get(http::header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let path = loc.strip_prefix(&gateway).unwrap_or(&loc);
            let slot = path
                .strip_prefix("/user/")
                .and_then(|p| p.split('/').next())
                .filter(|s| !s.is_empty())
                .with_context(|| format!("GET / redirected to {loc:?}, not /user/<slot>/…"))?
                .to_string();
            if jar.0.is_empty() {
                bail!("GET / set no cookie");
            }
            let login_ms = ms(t0.elapsed());
            let mut h = HeaderMap::new();
            jar.apply(&mut h);
            h.insert(http::header::ORIGIN, HeaderValue::from_str(&gateway)?);
            let base = format!("{gateway}/user/{slot}/");
            let mut v = notebook_ready(&client, &base, &h, kernel, t0, deadline).await?;
            v["login_ms"] = json!(login_ms);
            v["waited_pages"] = json!(waits);
            v["slot"] = json!(slot);
            v["cookie"] = json!(jar.header().and_then(|h| h.to_str().ok().map(str::to_string)));
            Ok(v)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.map_err(anyhow::Error::from).and_then(|r| r));
    }
    Ok(burst_summary(results, t_all.elapsed(), if kernel { "kernel_ws_ms" } else { "api_kernels_ms" }))
}

// ---------------------------------------------------------------- JupyterHub

fn xsrf_field(html: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(html);
    let i = s.find("name=\"_xsrf\"")?;
    let rest = &s[i..];
    let v = rest.find("value=\"")? + 7;
    let end = rest[v..].find('"')?;
    Some(rest[v..v + end].to_string())
}

fn form(fields: &[(&str, &str)]) -> Bytes {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    Bytes::from(fields.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&"))
}

/// GET a form page and return (jar with its cookies, its _xsrf field).
async fn get_form(client: &HttpClient, url: &str, jar: &mut Jar) -> Result<String> {
    let mut h = HeaderMap::new();
    jar.apply(&mut h);
    let r = send(client, Method::GET, url, &h, Bytes::new()).await?;
    jar.take(&r.headers);
    if !r.status.is_success() {
        bail!("GET {url}: {}", r.status);
    }
    xsrf_field(&r.body).with_context(|| format!("no _xsrf field in {url}"))
}

async fn post_form(client: &HttpClient, url: &str, jar: &mut Jar, origin: &str, body: Bytes) -> Result<Resp> {
    let mut h = HeaderMap::new();
    jar.apply(&mut h);
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
    h.insert(http::header::ORIGIN, HeaderValue::from_str(origin)?);
    h.insert(http::header::REFERER, HeaderValue::from_str(url)?);
    let r = send(client, Method::POST, url, &h, body).await?;
    jar.take(&r.headers);
    Ok(r)
}

async fn hub_signup(hub: &str, users: &[String], password: &str) -> Result<Value> {
    let hub = hub.trim_end_matches('/');
    let client = http_client(4);
    let mut done = Vec::new();
    for u in users {
        let mut jar = Jar::default();
        let url = format!("{hub}/hub/signup");
        let xsrf = get_form(&client, &url, &mut jar).await?;
        let r = post_form(
            &client,
            &url,
            &mut jar,
            hub,
            form(&[
                ("username", u),
                ("signup_password", password),
                ("signup_password_confirmation", password),
                ("_xsrf", &xsrf),
            ]),
        )
        .await?;
        let body = String::from_utf8_lossy(&r.body);
        // NativeAuthenticator answers 200 either way; success is its "alert-success" box.
        if !(r.status.is_redirection() || (r.status.is_success() && body.contains("alert-success"))) {
            let msg = body.find("role=\"alert\"").map(|i| &body[i..]).unwrap_or(&body);
            bail!("signup of {u}: {} {}", r.status, msg.chars().take(300).collect::<String>());
        }
        done.push(u.clone());
    }
    Ok(json!({"signed_up": done}))
}

async fn hub_login(
    hub: &str,
    users: &[String],
    password: &str,
    token: &str,
    kernel: bool,
    timeout: f64,
) -> Result<Value> {
    let hub = hub.trim_end_matches('/').to_string();
    let client = http_client(4 * users.len().max(1));
    // Fetch every login form first (not timed: the browser has the page open).
    let mut prepared = Vec::new();
    for u in users {
        let mut jar = Jar::default();
        let xsrf = get_form(&client, &format!("{hub}/hub/login"), &mut jar).await?;
        prepared.push((u.clone(), jar, xsrf));
    }
    let t_all = Instant::now();
    let mut tasks = Vec::new();
    for (u, mut jar, xsrf) in prepared {
        let (client, hub, password, token) =
            (client.clone(), hub.clone(), password.to_string(), token.to_string());
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let deadline = t0 + Duration::from_secs_f64(timeout);
            let url = format!("{hub}/hub/login");
            let r = post_form(
                &client,
                &url,
                &mut jar,
                &hub,
                form(&[("username", &u), ("password", &password), ("_xsrf", &xsrf)]),
            )
            .await?;
            if !r.status.is_redirection() {
                bail!(
                    "login of {u}: {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body).chars().take(300).collect::<String>()
                );
            }
            let login_ms = ms(t0.elapsed());
            // What the browser does next: /hub/spawn starts the server.
            let mut h = HeaderMap::new();
            jar.apply(&mut h);
            let r = send(&client, Method::GET, &format!("{hub}/hub/spawn"), &h, Bytes::new()).await?;
            if !(r.status.is_redirection() || r.status.is_success()) {
                bail!("GET /hub/spawn for {u}: {}", r.status);
            }
            let spawn_ms = ms(t0.elapsed());
            let mut h = HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, HeaderValue::from_str(&format!("token {token}"))?);
            let base = format!("{hub}/user/{u}/");
            let mut v = notebook_ready(&client, &base, &h, kernel, t0, deadline).await?;
            v["login_ms"] = json!(login_ms);
            v["spawn_requested_ms"] = json!(spawn_ms);
            v["user"] = json!(u);
            Ok(v)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.map_err(anyhow::Error::from).and_then(|r| r));
    }
    Ok(burst_summary(results, t_all.elapsed(), if kernel { "kernel_ws_ms" } else { "api_kernels_ms" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_cycle_through_every_permutation() {
        let mut o = vec![0, 1, 2];
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..6 {
            seen.insert(o.clone());
            next_order(&mut o);
        }
        assert_eq!(seen.len(), 6);
        assert_eq!(o, vec![0, 1, 2]);
    }

    #[test]
    fn turns_give_every_peer_its_share_in_slices_and_vary_who_follows_whom() {
        let ms = Duration::from_millis;
        let plan = schedule(3000, 3, ms(1), ms(200), true);
        for p in 0..3 {
            assert_eq!(plan.iter().filter(|&&w| w == p).count(), 3000);
        }
        // Runs of one peer are whole 200 ms turns.
        let runs: Vec<(usize, usize)> = plan.chunk_by(|a, b| a == b).map(|c| (c[0], c.len())).collect();
        assert!(runs.iter().all(|&(_, len)| len == 200), "{runs:?}");
        // Every peer follows each of the others at some point.
        let follows: std::collections::BTreeSet<(usize, usize)> =
            runs.windows(2).map(|w| (w[0].0, w[1].0)).collect();
        assert_eq!(follows.len(), 6, "{follows:?}");
        // Without turns: one peer after the other.
        let plain = schedule(10, 2, ms(1), ms(10), false);
        assert_eq!(plain, [vec![0; 10], vec![1; 10]].concat());
    }
}
