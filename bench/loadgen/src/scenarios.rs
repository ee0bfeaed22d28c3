//! Accounts-mode scenarios against one nbgate (bench/run.sh phases `attendees` and
//! `logins`), driven like a browser: forms with `_xsrf` and `Origin`, cookies kept
//! in a jar, redirects and the "starting" / queue pages followed by hand.
//!
//! * `register-users` — create accounts through `/hub/register` (before a measurement).
//! * `attendees`      — N attendees, staggered: register → lab → kernel (sessions API)
//!   → channels WebSocket → code writes `~/work/attendee-<i>.txt` and
//!   prints its sha256 → close → idle until the gateway recycles the
//!   server → log in again → read the file back → log out.
//! * `login-storm`    — N logins at once while one signed-in user polls its server at a
//!   fixed rate; each login is followed until its lab or the queue page.
//! * `bcrypt-time`    — one bcrypt verify at a cost, timed (the unit of a login's work).
//!
//! Every response with a 5xx status, from the gateway or proxied from a notebook server,
//! is counted and listed (method, path, status). Loops are bounded by count and time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::{
    form, http_client, ms, rss_kib, send, summary, ws_config, xsrf_field, HttpClient, Jar, Resp, WsConn,
};

// ---------------------------------------------------------------- a browser

/// One simulated browser: its own cookie jar, the gateway's origin on every
/// state-changing request, every 5xx noted.
struct Browser {
    client: HttpClient,
    gateway: String,
    jar: Jar,
    five_xx: Vec<String>,
    requests: u64,
}

/// Where a login ended up.
enum Landing {
    /// In the lab: `/user/<slot>/lab` answered 200 (after `retries` clicks on an
    /// error page's "Try again").
    Lab { slot: String, starting_pages: u32, queue_pages: u32, retries: u32 },
    /// On the queue page (only when asked to stop there), at this position.
    Queued { position: Option<u64> },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn random_hex(n_bytes: usize) -> String {
    let mut buf = vec![0u8; n_bytes];
    use std::io::Read;
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).expect("/dev/urandom");
    hex(&buf)
}

/// `/user/<slot>/…` → slot.
fn slot_of(path: &str) -> Option<String> {
    path.strip_prefix("/user/")
        .and_then(|p| p.split('/').next())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Seconds of a `<meta http-equiv="refresh" content="N">`, if any.
fn meta_refresh(body: &[u8]) -> Option<u64> {
    let s = String::from_utf8_lossy(body);
    let i = s.find("http-equiv=\"refresh\"")?;
    let rest = &s[i..];
    let c = rest.find("content=\"")? + 9;
    rest[c..].split(|ch: char| !ch.is_ascii_digit()).next()?.parse().ok()
}

/// The same-origin `/hub/…` target of a message page's button, if any.
fn button_href(body: &str) -> Option<String> {
    let i = body.find("class=\"button\" href=\"")? + 21;
    let href = body[i..].split('"').next()?.replace("&amp;", "&");
    href.starts_with("/hub/").then_some(href)
}

fn retry_after(r: &Resp) -> Option<u64> {
    r.headers.get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok())
}

/// The queue page: 200, `Retry-After`, "… in line".
fn queue_position(r: &Resp) -> Option<Option<u64>> {
    if r.status != StatusCode::OK || retry_after(r).is_none() {
        return None;
    }
    let s = String::from_utf8_lossy(&r.body);
    if !s.contains("in line") {
        return None;
    }
    if s.contains("You are next in line") {
        return Some(Some(1));
    }
    let pos =
        s.find("You are number ").and_then(|i| s[i + 15..].split(' ').next().and_then(|n| n.parse().ok()));
    Some(pos)
}

impl Browser {
    fn new(client: HttpClient, gateway: &str) -> Self {
        Self {
            client,
            gateway: gateway.trim_end_matches('/').to_string(),
            jar: Jar::default(),
            five_xx: Vec::new(),
            requests: 0,
        }
    }

    fn note(&mut self, method: &Method, path: &str, r: &Resp) {
        self.requests += 1;
        self.jar.take(&r.headers);
        if r.status.is_server_error() {
            let p = path.split('?').next().unwrap_or(path);
            self.five_xx.push(format!("{method} {p} → {}", r.status.as_u16()));
        }
    }

    /// A path on the gateway (absolute URLs of the gateway are made relative).
    fn path_of<'a>(&self, loc: &'a str) -> &'a str {
        loc.strip_prefix(self.gateway.as_str()).unwrap_or(loc)
    }

    async fn request(&mut self, method: Method, path: &str, extra: HeaderMap, body: Bytes) -> Result<Resp> {
        let mut h = extra;
        self.jar.apply(&mut h);
        if method != Method::GET {
            h.insert(http::header::ORIGIN, HeaderValue::from_str(&self.gateway)?);
        }
        let url = format!("{}{path}", self.gateway);
        let r = send(&self.client, method.clone(), &url, &h, body)
            .await
            .with_context(|| format!("{method} {path}"))?;
        self.note(&method, path, &r);
        Ok(r)
    }

    async fn get(&mut self, path: &str) -> Result<Resp> {
        let mut h = HeaderMap::new();
        h.insert(http::header::ACCEPT, HeaderValue::from_static("text/html,application/json"));
        self.request(Method::GET, path, h, Bytes::new()).await
    }

    async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Result<Resp> {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        self.request(Method::POST, path, h, form(fields)).await
    }

    async fn post_json(&mut self, path: &str, body: &Value) -> Result<Resp> {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.request(Method::POST, path, h, Bytes::from(body.to_string())).await
    }

    /// The `_xsrf` of the form on `page`, following same-origin redirects (a
    /// signed-in user asking for the login form lands on /hub/home, whose
    /// forms carry the same token: it is bound to the browser, not the page).
    async fn xsrf(&mut self, page: &str) -> Result<String> {
        let mut path = page.to_string();
        for _ in 0..4 {
            let r = self.get(&path).await?;
            if r.status.is_redirection() {
                let loc = r.headers.get(http::header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("");
                path = self.path_of(loc).to_string();
                continue;
            }
            if !r.status.is_success() {
                bail!("GET {path}: {}", r.status);
            }
            return xsrf_field(&r.body).with_context(|| format!("no _xsrf field on {path}"));
        }
        bail!("too many redirects from {page}")
    }

    /// Follow a register/login answer like a browser: redirects, the "starting"
    /// page (202, refresh) and the queue page (200, Retry-After) until the lab
    /// answers 200 — or, with `stop_on_queue`, until the queue page.
    ///
    /// An error page with a same-origin button (the 503 "Your server did not
    /// start" → "Try again") is clicked, as a person would, at most `max_retries`
    /// times; its 5xx is noted all the same.
    async fn follow(
        &mut self,
        first: Resp,
        first_path: &str,
        stop_on_queue: bool,
        deadline: Instant,
        max_retries: u32,
    ) -> Result<Landing> {
        let (mut r, mut path) = (first, first_path.to_string());
        let (mut starting_pages, mut queue_pages, mut retries) = (0u32, 0u32, 0u32);
        for _ in 0..1000 {
            if Instant::now() > deadline {
                bail!("not in the lab before the deadline (last: {path} {})", r.status);
            }
            if r.status.is_redirection() {
                let loc = r
                    .headers
                    .get(http::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let next = self.path_of(&loc).to_string();
                if next.is_empty() {
                    bail!("{path}: {} without a Location", r.status);
                }
                if let Some(slot) = slot_of(&next) {
                    let lab = self.get(&next).await?;
                    if lab.status == StatusCode::OK {
                        return Ok(Landing::Lab { slot, starting_pages, queue_pages, retries });
                    }
                    if !lab.status.is_redirection() {
                        bail!("GET {next}: {}", lab.status);
                    }
                    (r, path) = (lab, next);
                    continue;
                }
                path = next;
                r = self.get(&path).await?;
                continue;
            }
            if r.status == StatusCode::ACCEPTED {
                // "Starting your server…": the page refreshes itself.
                starting_pages += 1;
                let wait = meta_refresh(&r.body).unwrap_or(1).clamp(1, 10);
                tokio::time::sleep(Duration::from_secs(wait)).await;
                r = self.get(&path).await?;
                continue;
            }
            if let Some(position) = queue_position(&r) {
                queue_pages += 1;
                if stop_on_queue {
                    return Ok(Landing::Queued { position });
                }
                let wait = retry_after(&r).unwrap_or(3).clamp(1, 10);
                tokio::time::sleep(Duration::from_secs(wait)).await;
                r = self.get(&path).await?;
                continue;
            }
            let body = String::from_utf8_lossy(&r.body);
            if r.status.is_server_error() && retries < max_retries {
                if let Some(href) = button_href(&body) {
                    retries += 1;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    path = href;
                    r = self.get(&path).await?;
                    continue;
                }
            }
            let title = body
                .find("<h1")
                .and_then(|i| body[i..].split('>').nth(1))
                .map(|t| t.split('<').next().unwrap_or(""));
            bail!("{path} answered {} ({})", r.status, title.unwrap_or("").trim());
        }
        bail!("more than 1000 pages from {first_path}")
    }

    fn header_map(&self) -> Result<HeaderMap> {
        let mut h = HeaderMap::new();
        self.jar.apply(&mut h);
        h.insert(http::header::ORIGIN, HeaderValue::from_str(&self.gateway)?);
        Ok(h)
    }

    /// Open a WebSocket through the gateway with this browser's cookie and origin;
    /// a refused upgrade's status is noted like any response.
    async fn websocket(&mut self, path: &str) -> Result<WsConn> {
        let url = format!("{}{path}", self.gateway.replacen("http://", "ws://", 1));
        let mut req = url.as_str().into_client_request()?;
        for (k, v) in &self.header_map()? {
            req.headers_mut().insert(k, v.clone());
        }
        let uri = req.uri().clone();
        let tcp = TcpStream::connect((uri.host().context("no host")?, uri.port_u16().unwrap_or(80))).await?;
        tcp.set_nodelay(true)?;
        self.requests += 1;
        let cfg = ws_config().max_message_size(Some(64 << 20)).max_frame_size(Some(16 << 20));
        match tokio::time::timeout(
            Duration::from_secs(30),
            tokio_tungstenite::client_async_with_config(req, tcp, Some(cfg)),
        )
        .await
        {
            Err(_) => bail!("WebSocket {path}: no answer in 30 s"),
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                if resp.status().is_server_error() {
                    self.five_xx.push(format!(
                        "GET(upgrade) {} → {}",
                        path.split('?').next().unwrap_or(path),
                        resp.status().as_u16()
                    ));
                }
                bail!("WebSocket {path}: upgrade answered {}", resp.status())
            }
            Ok(Err(e)) => Err(anyhow!("WebSocket {path}: {e}")),
        }
    }
}

// ---------------------------------------------------------------- kernel messages

fn kernel_msg(msg_type: &str, content: Value, session: &str) -> (String, String) {
    let id = random_hex(16);
    let m = json!({
        "header": {"msg_id": id, "username": "bench", "session": session, "msg_type": msg_type,
                   "version": "5.3", "date": "2026-01-01T00:00:00Z"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [], "content": content,
    });
    (id, m.to_string())
}

/// Send a request on the shell channel; collect stream output until the kernel
/// is idle for it (and, for `kernel_info_request`, until its reply).
async fn kernel_call(
    ws: &mut WsConn,
    msg_type: &str,
    content: Value,
    session: &str,
    limit: Duration,
) -> Result<String> {
    let (id, text) = kernel_msg(msg_type, content, session);
    ws.send(Message::Text(text.into())).await?;
    let want_reply = msg_type.replace("_request", "_reply");
    let (mut out, mut replied, mut idle) = (String::new(), false, false);
    let deadline = tokio::time::Instant::now() + limit;
    while !(replied && (idle || msg_type == "kernel_info_request")) {
        let m = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => bail!("{msg_type}: no answer in {} s", limit.as_secs()),
            Ok(None) => bail!("{msg_type}: kernel WebSocket closed"),
            Ok(Some(Err(e))) => bail!("{msg_type}: {e}"),
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(_))) => continue,
        };
        let v: Value = serde_json::from_str(&m).unwrap_or(Value::Null);
        if v["parent_header"]["msg_id"] != id.as_str() {
            continue;
        }
        match v["msg_type"].as_str().unwrap_or("") {
            "stream" => out.push_str(v["content"]["text"].as_str().unwrap_or("")),
            "error" => bail!("{msg_type}: {}: {}", v["content"]["ename"], v["content"]["evalue"]),
            "status" if v["content"]["execution_state"] == "idle" => idle = true,
            t if t == want_reply => {
                if v["content"]["status"] != "ok" {
                    bail!("{msg_type}: reply status {}", v["content"]["status"]);
                }
                replied = true;
            }
            _ => {}
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- process sampler

/// VmRSS and thread count of a process, sampled every 100 ms until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Value>,
}

/// user + system CPU seconds of a process.
fn cpu_s(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15 of stat; `rest` starts at field 3.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks as f64 / hz)
}

fn threads_of(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok())
}

impl Sampler {
    fn start(pid: Option<u32>) -> Option<Self> {
        let pid = pid?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let (mut rss_max, mut thr_max, mut n) = (0u64, 0u64, 0u64);
            let first = rss_kib(pid).ok();
            let (cpu0, t0) = (cpu_s(pid), Instant::now());
            while !s.load(Ordering::Relaxed) {
                if let Ok(r) = rss_kib(pid) {
                    rss_max = rss_max.max(r);
                }
                if let Some(t) = threads_of(pid) {
                    thr_max = thr_max.max(t);
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let cpu = cpu_s(pid).zip(cpu0).map(|(b, a)| b - a);
            let secs = t0.elapsed().as_secs_f64();
            json!({"pid": pid, "rss_first_kib": first, "rss_max_kib": rss_max, "rss_last_kib": rss_kib(pid).ok(),
                   "threads_max": thr_max, "threads_last": threads_of(pid), "samples": n,
                   "cpu_s": cpu, "seconds": secs, "cores_used": cpu.map(|c| c / secs)})
        });
        Some(Self { stop, task })
    }

    async fn finish(s: Option<Self>) -> Value {
        match s {
            Some(s) => {
                s.stop.store(true, Ordering::Relaxed);
                s.task.await.unwrap_or(Value::Null)
            }
            None => Value::Null,
        }
    }
}

fn pct(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    Some(s[i])
}

fn ms_summary(v: &[f64]) -> Value {
    json!({"count": v.len(), "p50_ms": pct(v, 0.5), "p90_ms": pct(v, 0.9), "p99_ms": pct(v, 0.99), "max_ms": pct(v, 1.0)})
}

// ---------------------------------------------------------------- register-users

pub async fn register_users(
    gateway: &str,
    key: &str,
    prefix: &str,
    n: usize,
    password: &str,
    concurrency: usize,
) -> Result<Value> {
    let client = http_client(concurrency.max(1) * 2);
    let t0 = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (client, gateway, key, password, sem) =
            (client.clone(), gateway.to_string(), key.to_string(), password.to_string(), sem.clone());
        let name = format!("{prefix}{i}");
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await;
            let mut b = Browser::new(client, &gateway);
            let r = async {
                let x = b.xsrf("/hub/register").await?;
                let r = b
                    .post_form(
                        "/hub/register",
                        &[
                            ("username", &name),
                            ("password", &password),
                            ("password_confirm", &password),
                            ("registration_key", &key),
                            ("_xsrf", &x),
                        ],
                    )
                    .await?;
                if !r.status.is_redirection() {
                    bail!("register {name}: {}", r.status);
                }
                Ok::<_, anyhow::Error>(())
            }
            .await;
            (r, b.five_xx)
        }));
    }
    let (mut ok, mut errors, mut five) = (0usize, Vec::new(), Vec::new());
    for t in tasks {
        let (r, f) = t.await?;
        five.extend(f);
        match r {
            Ok(()) => ok += 1,
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    Ok(
        json!({"registered": ok, "errors": errors.len(), "error_list": errors.iter().take(10).collect::<Vec<_>>(),
              "five_xx": five.len(), "five_xx_list": five.iter().take(20).collect::<Vec<_>>(),
              "seconds": t0.elapsed().as_secs_f64(), "concurrency": concurrency}),
    )
}

// ---------------------------------------------------------------- attendees

pub struct AttendeeOpts {
    pub gateway: String,
    pub n: usize,
    /// Number of the first attendee (`attendee<first>`…): a later round on the same gateway.
    pub first: usize,
    pub key: String,
    pub gap: f64,
    pub idle_wait: f64,
    pub timeout: f64,
    pub payload_bytes: usize,
    pub pid: Option<u32>,
    /// The gateway's instance: files of attendees who could not read them back
    /// through the gateway are checked on their volumes.
    pub instance: Option<String>,
}

/// `attendee-<i>.txt` on the user's volume (found by its name's prefix,
/// `<instance>-<sha256(username)>-`): its sha256, or None if absent.
async fn file_on_volume(instance: &str, user: &str, i: usize) -> Result<Option<String>> {
    let out = tokio::process::Command::new("docker")
        .args(["volume", "ls", "-q", "--filter", &format!("label=nbgate.instance={instance}")])
        .output()
        .await?;
    let prefix = format!("{instance}-{}-", sha256_hex(user.as_bytes()));
    let vols = String::from_utf8_lossy(&out.stdout);
    let vol = vols.lines().find(|l| l.starts_with(&prefix)).context("no volume for the user")?;
    let out = tokio::process::Command::new("docker")
        .args(["volume", "inspect", "-f", "{{.Mountpoint}}", vol])
        .output()
        .await?;
    let mp = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match std::fs::read(format!("{mp}/attendee-{i}.txt")) {
        Ok(b) => Ok(Some(sha256_hex(&b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// One attendee's whole flow; fills `v` with the times as it goes.
async fn attendee(
    b: &mut Browser,
    i: usize,
    o: &AttendeeOpts,
    v: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    let name = format!("attendee{i}");
    let password = format!("pw-{}", random_hex(8));
    let deadline = Instant::now() + Duration::from_secs_f64(o.timeout);

    // 1. Register (the page is open: its GET is not timed), follow to the lab.
    let x = b.xsrf("/hub/register").await?;
    let t0 = Instant::now();
    let r = b
        .post_form(
            "/hub/register",
            &[
                ("username", &name),
                ("password", &password),
                ("password_confirm", &password),
                ("registration_key", &o.key),
                ("_xsrf", &x),
            ],
        )
        .await?;
    v.insert("register_ms".into(), json!(ms(t0.elapsed())));
    if !r.status.is_redirection() {
        bail!("POST /hub/register: {}", r.status);
    }
    let Landing::Lab { slot, starting_pages, queue_pages, retries } =
        b.follow(r, "/hub/register", false, deadline, 3).await?
    else {
        unreachable!()
    };
    v.insert("lab_ms".into(), json!(ms(t0.elapsed())));
    v.insert("starting_pages".into(), json!(starting_pages));
    v.insert("queue_pages".into(), json!(queue_pages));
    v.insert("retries".into(), json!(retries));
    v.insert("slot".into(), json!(slot));

    // 2. A notebook session (as JupyterLab opens one), its kernel's channels, kernel_info.
    let nb = format!("work/attendee-{i}.ipynb");
    let r = b
        .post_json(
            &format!("/user/{slot}/api/sessions"),
            &json!({"path": nb, "name": nb, "type": "notebook", "kernel": {"name": "python3"}}),
        )
        .await?;
    if r.status != StatusCode::CREATED {
        bail!(
            "POST api/sessions: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body).chars().take(200).collect::<String>()
        );
    }
    let s: Value = serde_json::from_slice(&r.body)?;
    let kernel = s["kernel"]["id"].as_str().context("session without a kernel id")?.to_string();
    let session = random_hex(16);
    let mut ws =
        b.websocket(&format!("/user/{slot}/api/kernels/{kernel}/channels?session_id={session}")).await?;
    v.insert("kernel_ws_ms".into(), json!(ms(t0.elapsed())));
    kernel_call(&mut ws, "kernel_info_request", json!({}), &session, Duration::from_secs(60)).await?;
    v.insert("usable_ms".into(), json!(ms(t0.elapsed())));

    // 3. Write the file from the kernel; it prints the sha256 it wrote.
    let payload = random_hex(o.payload_bytes / 2);
    let want = sha256_hex(payload.as_bytes());
    v.insert("sha256".into(), json!(want));
    let code = format!(
        "import hashlib, os\np = os.path.join(os.path.expanduser('~'), 'work', 'attendee-{i}.txt')\n\
         data = '{payload}'\nwith open(p, 'w') as f:\n    f.write(data)\n    f.flush()\n    os.fsync(f.fileno())\n\
         print(hashlib.sha256(open(p, 'rb').read()).hexdigest())\n"
    );
    let content = json!({"code": code, "silent": false, "store_history": true, "user_expressions": {}, "allow_stdin": false, "stop_on_error": true});
    let out = kernel_call(&mut ws, "execute_request", content, &session, Duration::from_secs(60)).await?;
    v.insert("executed_ms".into(), json!(ms(t0.elapsed())));
    if out.trim() != want {
        bail!("the kernel printed {:?}, expected the sha256 {want}", out.trim());
    }
    super::ws_close(ws).await;
    let t_idle = Instant::now();

    // 4. Idle: nothing but the gateway's own status API (no activity) until the
    //    server is recycled.
    let idle_deadline = t_idle + Duration::from_secs_f64(o.idle_wait);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let r = b.get("/hub/api/me/server").await?;
        let running = serde_json::from_slice::<Value>(&r.body).ok().and_then(|v| v["running"].as_bool());
        if r.status == StatusCode::OK && running == Some(false) {
            break;
        }
        if Instant::now() > idle_deadline {
            bail!(
                "the server was not recycled within {} s of going idle (last: {} running={running:?})",
                o.idle_wait,
                r.status
            );
        }
    }
    v.insert("recycled_after_s".into(), json!(t_idle.elapsed().as_secs_f64()));
    // The old slot is gone: what a tab left open would see.
    let r = b.get(&format!("/user/{slot}/api/status")).await?;
    v.insert("old_slot_status".into(), json!(r.status.as_u16()));

    // 5. Come back: log in again, follow to the (new) lab, read the file back.
    let deadline = Instant::now() + Duration::from_secs_f64(o.timeout);
    let x = b.xsrf("/hub/login").await?;
    let t1 = Instant::now();
    let r = b.post_form("/hub/login", &[("username", &name), ("password", &password), ("_xsrf", &x)]).await?;
    v.insert("relogin_answer_ms".into(), json!(ms(t1.elapsed())));
    if !r.status.is_redirection() {
        bail!("POST /hub/login: {}", r.status);
    }
    let Landing::Lab { slot: slot2, starting_pages, queue_pages, retries } =
        b.follow(r, "/hub/login", false, deadline, 3).await?
    else {
        unreachable!()
    };
    v.insert("relogin_lab_ms".into(), json!(ms(t1.elapsed())));
    v.insert("relogin_starting_pages".into(), json!(starting_pages));
    v.insert("relogin_queue_pages".into(), json!(queue_pages));
    v.insert("relogin_retries".into(), json!(retries));
    v.insert("new_slot".into(), json!(slot2 != slot));
    let r = b
        .get(&format!("/user/{slot2}/api/contents/work/attendee-{i}.txt?content=1&format=text&type=file"))
        .await?;
    v.insert("file_read_ms".into(), json!(ms(t1.elapsed())));
    let file = match r.status {
        StatusCode::OK => {
            let c: Value = serde_json::from_slice(&r.body)?;
            let got = c["content"].as_str().unwrap_or("");
            if sha256_hex(got.as_bytes()) == want {
                "ok"
            } else {
                "mismatch"
            }
        }
        StatusCode::NOT_FOUND => "lost",
        s => bail!("reading the file back: {s}"),
    };
    v.insert("file".into(), json!(file));

    // 6. Leave: log out (recycles the server at once).
    let x = b.xsrf("/hub/home").await?;
    let t2 = Instant::now();
    let r = b.post_form("/hub/logout", &[("_xsrf", &x)]).await?;
    v.insert("logout_ms".into(), json!(ms(t2.elapsed())));
    if !r.status.is_redirection() {
        bail!("POST /hub/logout: {}", r.status);
    }
    Ok(())
}

pub async fn attendees(o: AttendeeOpts) -> Result<Value> {
    let o = Arc::new(o);
    let client = http_client(4);
    let sampler = Sampler::start(o.pid);
    let t_all = Instant::now();
    let mut tasks = Vec::new();
    for i in o.first..o.first + o.n {
        let (o, client) = (o.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(o.gap * (i - o.first) as f64)).await;
            let mut b = Browser::new(client, &o.gateway);
            let mut v = serde_json::Map::new();
            v.insert("i".into(), json!(i));
            let t = Instant::now();
            let r = attendee(&mut b, i, &o, &mut v).await;
            v.insert("total_s".into(), json!(t.elapsed().as_secs_f64()));
            if let Err(e) = &r {
                v.insert("error".into(), json!(format!("{e:#}")));
            }
            v.insert("five_xx".into(), json!(b.five_xx));
            v.insert("requests".into(), json!(b.requests));
            Value::Object(v)
        }));
    }
    let mut each = Vec::new();
    for t in tasks {
        each.push(t.await.unwrap_or_else(|e| json!({"error": format!("task: {e}")})));
    }
    let wall = t_all.elapsed().as_secs_f64();
    // Written but never read back through the gateway: look on the volume.
    if let Some(inst) = &o.instance {
        for v in each.iter_mut() {
            if v.get("sha256").is_some() && v.get("file").is_none() {
                let i = v["i"].as_u64().unwrap_or(0) as usize;
                let r = file_on_volume(inst, &format!("attendee{i}"), i).await;
                v["file_on_volume"] = json!(match r {
                    Ok(Some(h)) if v["sha256"] == h.as_str() => "ok".to_string(),
                    Ok(Some(_)) => "mismatch".to_string(),
                    Ok(None) => "lost".to_string(),
                    Err(e) => format!("unknown: {e:#}"),
                });
            }
        }
    }
    let sampled = Sampler::finish(sampler).await;
    let col = |k: &str| each.iter().filter_map(|v| v[k].as_f64()).collect::<Vec<_>>();
    let count_file = |s: &str| each.iter().filter(|v| v["file"] == s).count();
    let ok = each.iter().filter(|v| v.get("error").is_none() && v["file"] == "ok").count();
    let errors: Vec<String> =
        each.iter().filter_map(|v| v["error"].as_str().map(|e| format!("attendee{}: {e}", v["i"]))).collect();
    let five: Vec<String> = each
        .iter()
        .flat_map(|v| v["five_xx"].as_array().cloned().unwrap_or_default())
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect();
    // A file is lost when it is not found, through the gateway or (for an attendee
    // who could not get back in) on the volume; never checked = unverified.
    let written = each.iter().filter(|v| v.get("sha256").is_some()).count();
    let on_vol = |s: &str| each.iter().filter(|v| v["file_on_volume"] == s).count();
    let lost = count_file("lost") + on_vol("lost");
    let mismatched = count_file("mismatch") + on_vol("mismatch");
    let unverified = written
        - count_file("ok")
        - count_file("mismatch")
        - count_file("lost")
        - on_vol("ok")
        - on_vol("mismatch")
        - on_vol("lost");
    Ok(json!({
        "n": o.n, "ok": ok, "errors": errors.len(), "error_list": errors, "five_xx": five.len(), "five_xx_list": five,
        "files_written": written, "files_ok": count_file("ok"), "files_mismatched": mismatched, "files_lost": lost,
        "files_lost_404": count_file("lost"), "files_ok_on_volume": on_vol("ok"), "files_unverified": unverified,
        "retried": each.iter().filter(|v| v["retries"].as_u64().unwrap_or(0) + v["relogin_retries"].as_u64().unwrap_or(0) > 0).count(),
        "usable": ms_summary(&col("usable_ms")), "lab": ms_summary(&col("lab_ms")), "register": ms_summary(&col("register_ms")),
        "relogin_lab": ms_summary(&col("relogin_lab_ms")), "relogin_file": ms_summary(&col("file_read_ms")),
        "logout": ms_summary(&col("logout_ms")),
        "recycled_after_s": {"min": col("recycled_after_s").iter().cloned().reduce(f64::min), "max": col("recycled_after_s").iter().cloned().reduce(f64::max)},
        "waited_starting": each.iter().filter(|v| v["starting_pages"].as_u64().unwrap_or(0) + v["relogin_starting_pages"].as_u64().unwrap_or(0) > 0).count(),
        "waited_queue": each.iter().filter(|v| v["queue_pages"].as_u64().unwrap_or(0) + v["relogin_queue_pages"].as_u64().unwrap_or(0) > 0).count(),
        "requests": each.iter().filter_map(|v| v["requests"].as_u64()).sum::<u64>(),
        "gap_s": o.gap, "wall_s": wall, "gateway": sampled, "each": each,
    }))
}

// ---------------------------------------------------------------- login storm

pub struct StormOpts {
    pub gateway: String,
    pub prefix: String,
    pub n: usize,
    pub password: String,
    pub runner: String,
    pub rate: f64,
    pub before: f64,
    pub after: f64,
    pub timeout: f64,
    pub pid: Option<u32>,
    /// The gateway's instance: also poll the runner's container directly.
    pub instance: Option<String>,
    /// Before the baseline, wait until the pool has this many warm containers.
    pub wait_warm: Option<u64>,
}

/// One poll of the running user: intended start (µs since the poller's start),
/// latency from the intended start (µs), and what went wrong if anything.
type Poll = (u64, u64, Option<String>);

pub async fn login_storm(o: StormOpts) -> Result<Value> {
    let gw = o.gateway.trim_end_matches('/').to_string();
    let client = http_client(8);

    // The running user: signed in, in the lab, its server answering.
    let mut runner = Browser::new(client.clone(), &gw);
    let x = runner.xsrf("/hub/login").await?;
    let r = runner
        .post_form("/hub/login", &[("username", &o.runner), ("password", &o.password), ("_xsrf", &x)])
        .await?;
    let Landing::Lab { slot: rslot, .. } =
        runner.follow(r, "/hub/login", false, Instant::now() + Duration::from_secs(120), 0).await?
    else {
        unreachable!()
    };
    let status_url = format!("{gw}/user/{rslot}/api/status");
    let rh = runner.header_map()?;
    // The runner's login may have taken a warm container: let the pool refill
    // before the baseline, so that no start falls into it.
    if let Some(want) = o.wait_warm {
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            let r = send(&client, Method::GET, &format!("{gw}/hub/health"), &HeaderMap::new(), Bytes::new())
                .await?;
            let warm = serde_json::from_slice::<Value>(&r.body)
                .ok()
                .and_then(|v| v["pool"]["warm"].as_u64())
                .unwrap_or(0);
            if warm >= want {
                break;
            }
            if Instant::now() > until {
                bail!("the pool did not refill to {want} warm within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // Every login form open (not timed: the browsers have the page loaded).
    let mut prepared = Vec::new();
    let mut prep_five = Vec::new();
    for i in 0..o.n {
        let mut b = Browser::new(http_client(2), &gw);
        let x = b.xsrf("/hub/login").await?;
        prep_five.append(&mut b.five_xx);
        prepared.push((format!("{}{i}", o.prefix), b, x));
    }

    // The same server polled directly (its published port, its token), for
    // telling the gateway's share of any slowdown from the notebook server's.
    let direct = match &o.instance {
        Some(inst) => direct_target(inst, &rslot).await.map_err(|e| eprintln!("direct path: {e:#}")).ok(),
        None => None,
    };

    // The pollers: open loop at a fixed rate (latency from each poll's intended
    // start, so a stalled gateway cannot hide by delaying the next poll).
    let stop = Arc::new(AtomicBool::new(false));
    let poll_start = Instant::now();
    let hard_end = poll_start + Duration::from_secs_f64(o.before + o.timeout + o.after + 30.0);
    let (poller, polls) = spawn_poller(
        client.clone(),
        status_url.clone(),
        rh.clone(),
        o.rate,
        poll_start,
        hard_end,
        stop.clone(),
    );
    let direct_poller = direct.map(|(url, h)| {
        // Half a period later: the two never queue behind each other.
        let offset = Duration::from_secs_f64(0.5 / o.rate);
        spawn_poller(http_client(8), url, h, o.rate, poll_start + offset, hard_end, stop.clone())
    });
    tokio::time::sleep(Duration::from_secs_f64(o.before)).await;

    // The storm: every POST at once.
    let sampler = Sampler::start(o.pid);
    let t_burst = Instant::now();
    let deadline = t_burst + Duration::from_secs_f64(o.timeout);
    let gate = Arc::new(tokio::sync::Barrier::new(o.n));
    let mut tasks = Vec::new();
    for (name, mut b, x) in prepared {
        let (password, gate) = (o.password.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            let t0 = Instant::now();
            let mut v = serde_json::Map::new();
            let r = async {
                let r = b
                    .post_form("/hub/login", &[("username", &name), ("password", &password), ("_xsrf", &x)])
                    .await?;
                v.insert("post_ms".into(), json!(ms(t0.elapsed())));
                v.insert("post_status".into(), json!(r.status.as_u16()));
                if !r.status.is_redirection() {
                    bail!("POST /hub/login: {}", r.status);
                }
                b.follow(r, "/hub/login", true, deadline, 0).await
            }
            .await;
            v.insert("answered_ms".into(), json!(ms(t0.elapsed())));
            v.insert("answered_at_ms".into(), json!(ms(t0.duration_since(t_burst) + t0.elapsed())));
            match r {
                Ok(Landing::Lab { starting_pages, .. }) => {
                    v.insert("outcome".into(), json!("lab"));
                    v.insert("starting_pages".into(), json!(starting_pages));
                }
                Ok(Landing::Queued { position }) => {
                    v.insert("outcome".into(), json!("queued"));
                    v.insert("position".into(), json!(position));
                }
                Err(e) => {
                    v.insert("outcome".into(), json!("error"));
                    v.insert("error".into(), json!(format!("{name}: {e:#}")));
                }
            }
            v.insert("five_xx".into(), json!(b.five_xx));
            Value::Object(v)
        }));
    }
    let mut each = Vec::new();
    for t in tasks {
        each.push(t.await.unwrap_or_else(|e| json!({"outcome": "error", "error": format!("task: {e}")})));
    }
    let t_done = t_burst.elapsed();
    let sampled = Sampler::finish(sampler).await;
    tokio::time::sleep(Duration::from_secs_f64(o.after)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = poller.await;
    let direct_polls = match direct_poller {
        Some((h, p)) => {
            let _ = h.await;
            let v = p.lock().unwrap().clone();
            Some(v)
        }
        None => None,
    };

    let burst_at = t_burst.duration_since(poll_start).as_micros() as u64;
    let done_at = burst_at + t_done.as_micros() as u64;
    let polls = polls.lock().unwrap().clone();
    let window_of = |polls: &[Poll], a: u64, b: u64| {
        let lat: Vec<u64> =
            polls.iter().filter(|p| p.0 >= a && p.0 < b && p.2.is_none()).map(|p| p.1).collect();
        let errs: Vec<&String> =
            polls.iter().filter(|p| p.0 >= a && p.0 < b).filter_map(|p| p.2.as_ref()).collect();
        let mut s = summary(lat);
        s["errors"] = json!(errs.len());
        s["first_error"] = json!(errs.first());
        s
    };
    let posts_at = burst_at
        + each.iter().filter_map(|v| v["post_ms"].as_f64()).fold(0.0, f64::max).mul_add(1000.0, 0.0) as u64;
    let before = window_of(&polls, 0, burst_at);
    let during = window_of(&polls, burst_at, done_at);
    // While logins are being checked (bcrypt), and after that until the last answer
    // (admitted users' containers starting, queue pages).
    let during_posts = window_of(&polls, burst_at, posts_at);
    let during_rest = window_of(&polls, posts_at, done_at);
    let after = window_of(&polls, done_at, u64::MAX);
    let direct = direct_polls.as_ref().map(|d| {
        json!({"before": window_of(d, 0, burst_at), "during": window_of(d, burst_at, done_at), "after": window_of(d, done_at, u64::MAX),
               "during_posts": window_of(d, burst_at, posts_at), "during_rest": window_of(d, posts_at, done_at)})
    });
    let ratio = match (during["p99_ms"].as_f64(), before["p99_ms"].as_f64()) {
        (Some(d), Some(b)) if b > 0.0 => Some(d / b),
        _ => None,
    };
    let count = |s: &str| each.iter().filter(|v| v["outcome"] == s).count();
    let five: Vec<String> = each
        .iter()
        .flat_map(|v| v["five_xx"].as_array().cloned().unwrap_or_default())
        .filter_map(|x| x.as_str().map(str::to_string))
        .chain(prep_five)
        .chain(runner.five_xx.iter().cloned())
        .chain(polls.iter().filter_map(|p| p.2.as_ref().filter(|e| e.starts_with("status 5")).cloned()))
        .collect();
    let col = |k: &str, outcome: Option<&str>| {
        each.iter()
            .filter(|v| outcome.is_none_or(|o| v["outcome"] == o))
            .filter_map(|v| v[k].as_f64())
            .collect::<Vec<_>>()
    };
    let posts = col("post_ms", None);
    Ok(json!({
        "n": o.n, "lab": count("lab"), "queued": count("queued"), "errors": count("error"),
        "error_list": each.iter().filter_map(|v| v["error"].as_str()).take(10).collect::<Vec<_>>(),
        "five_xx": five.len(), "five_xx_list": five.iter().take(20).collect::<Vec<_>>(),
        "all_posts_answered_ms": posts.iter().cloned().reduce(f64::max),
        "all_answered_ms": ms(t_done),
        "post": ms_summary(&posts),
        "to_lab": ms_summary(&col("answered_ms", Some("lab"))),
        "to_queue": ms_summary(&col("answered_ms", Some("queued"))),
        "max_position": each.iter().filter_map(|v| v["position"].as_u64()).max(),
        "runner": {"slot": rslot, "rate": o.rate, "before": before, "during": during, "after": after,
                   "during_posts": during_posts, "during_rest": during_rest,
                   "p99_during_over_before": ratio, "polls": polls.len(), "direct": direct},
        "gateway": sampled,
        "each": each,
    }))
}

/// Poll `url` at `rate` from `start` until `stop` (or `hard_end`).
fn spawn_poller(
    client: HttpClient,
    url: String,
    headers: HeaderMap,
    rate: f64,
    start: Instant,
    hard_end: Instant,
    stop: Arc<AtomicBool>,
) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Vec<Poll>>>) {
    let polls: Arc<Mutex<Vec<Poll>>> = Arc::default();
    let out = polls.clone();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let h = tokio::spawn(async move {
        let mut k = 0u32;
        let mut inflight = Vec::new();
        loop {
            let intended = start + interval * k;
            k += 1;
            if stop.load(Ordering::Relaxed) || intended > hard_end {
                break;
            }
            tokio::time::sleep_until(intended.into()).await;
            let (polls, client, url, headers) = (polls.clone(), client.clone(), url.clone(), headers.clone());
            inflight.push(tokio::spawn(async move {
                let r = tokio::time::timeout(
                    Duration::from_secs(10),
                    send(&client, Method::GET, &url, &headers, Bytes::new()),
                )
                .await;
                let err = match r {
                    Ok(Ok(r)) if r.status == StatusCode::OK => None,
                    Ok(Ok(r)) => Some(format!("status {}", r.status.as_u16())),
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some("timeout".into()),
                };
                // Both pollers are binned by the gateway poller's clock (`start` may be offset).
                let at = intended.saturating_duration_since(start).as_micros() as u64;
                polls.lock().unwrap().push((at, intended.elapsed().as_micros() as u64, err));
            }));
        }
        for t in inflight {
            let _ = t.await;
        }
    });
    (h, out)
}

/// The runner's container, reached on its own address with its token.
async fn direct_target(instance: &str, slot: &str) -> Result<(String, HeaderMap)> {
    let run = |args: Vec<String>| async move {
        let o = tokio::process::Command::new("docker").args(&args).output().await?;
        if !o.status.success() {
            bail!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr));
        }
        Ok::<_, anyhow::Error>(String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let cid = run(vec![
        "ps".into(),
        "-q".into(),
        "--filter".into(),
        format!("label=nbgate.instance={instance}"),
        "--filter".into(),
        format!("label=nbgate.slot={slot}"),
    ])
    .await?;
    let cid = cid.lines().next().context("no container for the runner's slot")?.to_string();
    // Its own address, the path the gateway takes (not docker-proxy's published port).
    let ips = run(vec![
        "inspect".into(),
        "-f".into(),
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}".into(),
        cid.clone(),
    ])
    .await?;
    let ip = ips.split_whitespace().next().context("the runner's container has no address")?.to_string();
    let env =
        run(vec!["inspect".into(), "-f".into(), "{{range .Config.Env}}{{println .}}{{end}}".into(), cid])
            .await?;
    let token = env.lines().find_map(|l| l.strip_prefix("JUPYTER_TOKEN=")).context("no JUPYTER_TOKEN")?;
    let mut h = HeaderMap::new();
    h.insert(http::header::AUTHORIZATION, HeaderValue::from_str(&format!("token {token}"))?);
    Ok((format!("http://{ip}:8888/user/{slot}/api/status"), h))
}

// ---------------------------------------------------------------- bcrypt

pub fn bcrypt_time(cost: u32, n: usize) -> Result<Value> {
    let h = bcrypt::hash("correct horse battery", cost)?;
    let mut each = Vec::new();
    for _ in 0..n.max(1) {
        let t = Instant::now();
        let ok = bcrypt::verify("correct horse battery", &h)?;
        each.push(ms(t.elapsed()));
        if !ok {
            bail!("bcrypt verify failed");
        }
    }
    let median = pct(&each, 0.5);
    Ok(json!({"cost": cost, "n": each.len(), "median_ms": median, "each_ms": each}))
}
