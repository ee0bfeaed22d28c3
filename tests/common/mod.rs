//! Shared test support: a unique instance per test, cleaned up by label in Drop.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use nbgate::config::{Config, Layers};

/// One test's world: its own `NBGATE_INSTANCE`, state dir and Docker objects.
/// Dropping it removes every container, volume and network with its label.
pub struct TestInstance {
    pub name: String,
    pub dir: tempfile::TempDir,
}

impl TestInstance {
    pub fn new() -> Self {
        let name = format!("t{}", &nbgate::slot::random_token()[..10]);
        let dir = tempfile::Builder::new().prefix("nbgate-test-").tempdir().expect("temp dir");
        Self { name, dir }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Environment for a child `nbgate` process.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("NBGATE_INSTANCE".into(), self.name.clone()),
            ("NBGATE_STATE_DIR".into(), self.state_dir().display().to_string()),
            ("NBGATE_BIND".into(), "127.0.0.1:0".into()),
            ("NBGATE_POOL_SIZE".into(), "0".into()),
            ("NBGATE_BCRYPT_COST".into(), "4".into()),
        ]
    }

    /// A config for in-process use, with `extra` as `NBGATE_*` variables.
    pub fn config(&self, extra: &[(&str, &str)]) -> Config {
        let mut env: Vec<(String, String)> = self.env();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Layers::defaults()
            .env(|k| env.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
            .build()
            .expect("test config is valid")
    }
}

impl Drop for TestInstance {
    fn drop(&mut self) {
        let label = format!("label=nbgate.instance={}", self.name);
        // A gateway stopped mid-start may still have a create in flight at
        // the engine: sweep twice.
        for sweep in 0..2 {
            if sweep == 1 {
                std::thread::sleep(std::time::Duration::from_millis(1500));
            }
            self.sweep(&label);
        }
        // Anything still bound under the slots dir must go before the temp dir.
        unmount_below(&self.state_dir().join("slots"));
        let left = docker_lines(&["ps", "-aq", "--filter", &label]);
        if !std::thread::panicking() {
            assert!(left.is_empty(), "containers of {} left behind: {left:?}", self.name);
        }
    }
}

impl TestInstance {
    fn sweep(&self, label: &str) {
        for (list, rm) in [
            (vec!["ps", "-aq", "--filter", label], vec!["rm", "-f"]),
            (vec!["volume", "ls", "-q", "--filter", label], vec!["volume", "rm", "-f"]),
            (vec!["network", "ls", "-q", "--filter", label], vec!["network", "rm"]),
        ] {
            let ids = docker_lines(&list);
            if !ids.is_empty() {
                let mut args = rm.clone();
                args.extend(ids.iter().map(String::as_str));
                let _ = Command::new("docker").args(&args).output();
            }
        }
    }
}

fn docker_lines(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker").args(args).output().expect("the docker CLI runs");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

fn unmount_below(dir: &Path) {
    let Ok(mounts) = nbgate::volumes::bind::mounts() else { return };
    let mut points: Vec<_> =
        mounts.into_iter().map(|m| m.mount_point).filter(|p| p.starts_with(dir)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(&p).output();
    }
}

/// Fail loudly, never skip, when Docker does not answer.
pub fn require_docker() {
    let out = Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("Docker engine unreachable: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("the docker CLI cannot run: {e}"),
    }
}

pub fn nbgate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_nbgate")
}

/// A running `nbgate serve` child; SIGTERM and wait on drop.
pub struct Gateway {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub http: reqwest::Client,
}

impl Gateway {
    /// Start the binary with the instance's environment plus `extra`.
    pub fn start(t: &TestInstance, extra: &[(&str, &str)]) -> Self {
        Self::start_with_stderr(t, extra, std::process::Stdio::inherit())
    }

    /// The same, with the gateway's log written to `log`.
    pub fn start_logged(t: &TestInstance, extra: &[(&str, &str)], log: &Path) -> Self {
        Self::start_with_stderr(t, extra, std::fs::File::create(log).expect("log file").into())
    }

    /// The same, allowed one CPU only (`taskset -c 0`, which execs it: same pid).
    pub fn start_on_one_cpu(t: &TestInstance, extra: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "0", nbgate_bin()]);
        Self::spawn(t, extra, std::process::Stdio::inherit(), cmd)
    }

    fn start_with_stderr(t: &TestInstance, extra: &[(&str, &str)], stderr: std::process::Stdio) -> Self {
        Self::spawn(t, extra, stderr, Command::new(nbgate_bin()))
    }

    fn spawn(
        t: &TestInstance,
        extra: &[(&str, &str)],
        stderr: std::process::Stdio,
        mut cmd: Command,
    ) -> Self {
        use std::io::{BufRead, BufReader};
        let mut child = cmd
            .envs(t.env())
            .envs(extra.iter().copied())
            .env_remove("NBGATE_CONFIG")
            .current_dir(t.dir.path())
            .arg("serve")
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("nbgate starts");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("nbgate listening on ")
            .unwrap_or_else(|| panic!("first line {line:?}"))
            .to_string();
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { child, url, http }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn origin(&self) -> &str {
        &self.url
    }

    pub async fn health(&self) -> serde_json::Value {
        self.http.get(format!("{}/hub/health", self.url)).send().await.unwrap().json().await.unwrap()
    }

    /// Wait until `pool.warm` reaches `n`.
    pub async fn wait_warm(&self, n: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let h = self.health().await;
            if h["pool"]["warm"].as_u64().unwrap_or(0) >= n {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "pool never reached {n} warm: {h}");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// An ephemeral visit: `(cookie header value, slot)`.
    pub async fn visit(&self, cookie: Option<&str>) -> (String, String) {
        let mut req = self.http.get(format!("{}/", self.url));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 302, "visit did not redirect: {}", resp.text().await.unwrap_or_default());
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        let slot = location.strip_prefix("/user/").unwrap().split('/').next().unwrap().to_string();
        let cookie = match resp.headers().get("set-cookie") {
            Some(sc) => sc.to_str().unwrap().split(';').next().unwrap().to_string(),
            None => cookie.expect("a new visitor gets a cookie").to_string(),
        };
        (cookie, slot)
    }

    pub fn user_url(&self, slot: &str, path: &str) -> String {
        format!("{}/user/{slot}/{path}", self.url)
    }

    /// Start a kernel through the gateway; its id.
    pub async fn start_kernel(&self, cookie: &str, slot: &str) -> String {
        let resp = self
            .http
            .post(self.user_url(slot, "api/kernels"))
            .header("cookie", cookie)
            .header("origin", self.origin())
            .json(&serde_json::json!({"name": "python3"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        resp.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string()
    }

    /// Open a kernel's WebSocket through the gateway with the given headers.
    pub async fn kernel_socket(
        &self,
        slot: &str,
        kernel: &str,
        cookie: Option<&str>,
        origin: Option<&str>,
    ) -> Result<KernelSocket, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let ws_url =
            format!("{}/user/{slot}/api/kernels/{kernel}/channels", self.url.replacen("http", "ws", 1));
        let mut req = ws_url.into_client_request().unwrap();
        if let Some(c) = cookie {
            req.headers_mut().insert("cookie", c.parse().unwrap());
        }
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(KernelSocket { ws })
    }

    /// Run `code` in a kernel over its WebSocket; its stdout.
    pub async fn execute(&self, cookie: &str, slot: &str, kernel: &str, code: &str) -> String {
        let mut socket = self
            .kernel_socket(slot, kernel, Some(cookie), Some(self.origin()))
            .await
            .expect("kernel socket opens");
        socket.execute(code).await
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct KernelSocket<S = tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    pub ws: tokio_tungstenite::WebSocketStream<S>,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> KernelSocket<S> {
    /// Send an execute_request without waiting for it; its message id.
    pub async fn send_execute(&mut self, code: &str) -> String {
        use futures_util::SinkExt;
        let msg_id = nbgate::slot::random_token();
        let msg = serde_json::json!({
            "header": {"msg_id": msg_id, "username": "test", "session": "test-session", "msg_type": "execute_request", "version": "5.3", "date": "2026-01-01T00:00:00Z"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": false, "store_history": false, "user_expressions": {}, "allow_stdin": false, "stop_on_error": true},
        });
        self.ws.send(tokio_tungstenite::tungstenite::Message::Text(msg.to_string().into())).await.unwrap();
        msg_id
    }

    /// Send an execute_request and collect the stream output until idle.
    pub async fn execute(&mut self, code: &str) -> String {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let msg_id = self.send_execute(code).await;
        let mut out = String::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let next =
                tokio::time::timeout_at(deadline, self.ws.next()).await.expect("kernel answered within 60 s");
            let Some(Ok(Message::Text(text))) = next else {
                if let Some(Ok(_)) = next {
                    continue;
                }
                panic!("kernel socket closed: {next:?}");
            };
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if v["parent_header"]["msg_id"] != msg_id.as_str() {
                continue;
            }
            match v["msg_type"].as_str() {
                Some("stream") => out.push_str(v["content"]["text"].as_str().unwrap_or("")),
                Some("error") => out.push_str(&format!("ERROR: {}", v["content"]["evalue"])),
                Some("status") if v["content"]["execution_state"] == "idle" => return out,
                _ => {}
            }
        }
    }
}

/// Resident and peak memory of a process, in KiB.
pub fn rss_kib(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A browser-like client: its own cookie jar, no automatic redirects, the
/// gateway's Origin on every POST, `_xsrf` read from the page like a form does.
pub struct Browser {
    pub http: reqwest::Client,
    pub jar: std::sync::Arc<reqwest::cookie::Jar>,
    pub base: String,
}

impl Browser {
    pub fn new(gw: &Gateway) -> Self {
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_provider(jar.clone())
            .build()
            .unwrap();
        Self { http, jar, base: gw.url.clone() }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.base)).header("accept", "text/html").send().await.unwrap()
    }

    /// The `_xsrf` value of the form on `page`.
    /// The token is bound to the browser, not the page: when `page` redirects
    /// (a signed-in user asking for the login form), another form serves.
    pub async fn xsrf(&self, page: &str) -> String {
        const FIELD: &str = r#"name="_xsrf" value=""#;
        for p in [page, "/hub/home", "/hub/login", "/hub/register"] {
            let html = self.get(p).await.text().await.unwrap();
            if let Some(start) = html.find(FIELD) {
                let rest = &html[start + FIELD.len()..];
                return rest[..rest.find('"').unwrap()].to_string();
            }
        }
        panic!("no form with _xsrf reachable from {page}")
    }

    /// POST a form as the page at `page` would, with its `_xsrf`.
    pub async fn submit(&self, page: &str, action: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let xsrf = self.xsrf(page).await;
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        form.push(("_xsrf", &xsrf));
        self.http
            .post(format!("{}{action}", self.base))
            .header("origin", &self.base)
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    pub async fn register(&self, user: &str, password: &str, key: &str) -> reqwest::Response {
        self.submit(
            "/hub/register",
            "/hub/register",
            &[
                ("username", user),
                ("password", password),
                ("password_confirm", password),
                ("registration_key", key),
            ],
        )
        .await
    }

    pub async fn login(&self, user: &str, password: &str) -> reqwest::Response {
        self.submit("/hub/login", "/hub/login", &[("username", user), ("password", password)]).await
    }

    pub async fn logout(&self) -> reqwest::Response {
        self.submit("/hub/home", "/hub/logout", &[]).await
    }

    /// The cookie header this browser sends to the gateway.
    pub fn cookie(&self) -> String {
        use reqwest::cookie::CookieStore;
        self.jar
            .cookies(&self.base.parse().unwrap())
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }

    /// Follow a login/register answer to the slot: `/user/<slot>/…` directly,
    /// or through the pending page.
    pub async fn slot_after(&self, resp: reqwest::Response) -> String {
        assert_eq!(
            resp.status(),
            302,
            "expected a redirect, got {}: {}",
            resp.status(),
            resp.text().await.unwrap()
        );
        let mut location = resp.headers()["location"].to_str().unwrap().to_string();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while location.starts_with("/hub/spawn-pending") {
            assert!(std::time::Instant::now() < deadline, "server never started");
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            let r = self.get(&location).await;
            if r.status() == 302 {
                location = r.headers()["location"].to_str().unwrap().to_string();
            }
        }
        location
            .strip_prefix("/user/")
            .unwrap_or_else(|| panic!("not a slot: {location}"))
            .split('/')
            .next()
            .unwrap()
            .to_string()
    }

    pub fn user_url(&self, slot: &str, path: &str) -> String {
        format!("{}/user/{slot}/{path}", self.base)
    }

    /// Write a text file through the contents API; Jupyter's answer.
    pub async fn save_file(&self, slot: &str, path: &str, text: &str) -> reqwest::Response {
        self.http
            .put(self.user_url(slot, &format!("api/contents/{path}")))
            .header("origin", &self.base)
            .json(&serde_json::json!({"type": "file", "format": "text", "content": text}))
            .send()
            .await
            .unwrap()
    }

    /// Write a text file through the contents API, which must succeed.
    pub async fn put_file(&self, slot: &str, path: &str, text: &str) {
        let resp = self.save_file(slot, path, text).await;
        assert!(resp.status().is_success(), "writing {path}: {}", resp.status());
    }

    /// Read a text file through the contents API (None if absent).
    pub async fn get_file(&self, slot: &str, path: &str) -> Option<String> {
        let resp = self
            .http
            .get(self.user_url(slot, &format!("api/contents/{path}?content=1")))
            .send()
            .await
            .unwrap();
        if resp.status() == 404 {
            return None;
        }
        assert!(resp.status().is_success(), "reading {path}: {}", resp.status());
        let v: serde_json::Value = resp.json().await.unwrap();
        v["content"].as_str().map(str::to_string)
    }
}

/// Read-only access to a test gateway's database.
pub async fn db(t: &TestInstance) -> sqlx::SqlitePool {
    let url = format!("sqlite://{}?mode=ro", t.state_dir().join("nbgate.db").display());
    sqlx::SqlitePool::connect(&url).await.unwrap()
}

/// Read-write access, for setting up states the UI cannot reach quickly.
pub async fn db_rw(t: &TestInstance) -> sqlx::SqlitePool {
    let url = format!("sqlite://{}", t.state_dir().join("nbgate.db").display());
    sqlx::SqlitePool::connect(&url).await.unwrap()
}

/// Names of this instance's volumes.
pub fn volumes(t: &TestInstance) -> Vec<String> {
    docker_lines(&["volume", "ls", "-q", "--filter", &format!("label=nbgate.instance={}", t.name)])
}

/// Ids of this instance's running containers.
pub fn containers(t: &TestInstance) -> Vec<String> {
    docker_lines(&["ps", "-q", "--filter", &format!("label=nbgate.instance={}", t.name)])
}

/// `docker inspect -f FORMAT OBJECT`, trimmed; the object must exist.
pub fn inspect(object: &str, format: &str) -> String {
    let out =
        Command::new("docker").args(["inspect", "-f", format, object]).output().expect("the docker CLI runs");
    assert!(out.status.success(), "docker inspect {object}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Run `nbgate <args>` with the instance's environment.
pub fn nbgate_cli(t: &TestInstance, args: &[&str]) -> std::process::Output {
    Command::new(nbgate_bin())
        .envs(t.env())
        .env_remove("NBGATE_CONFIG")
        .current_dir(t.dir.path())
        .args(args)
        .output()
        .unwrap()
}

/// Logout recycles behind its answer: wait until no user volume is bound
/// under the instance's slots directory.
pub async fn wait_unbound(t: &TestInstance) {
    let slots = t.state_dir().join("slots");
    let bound = || {
        nbgate::volumes::bind::mounts()
            .unwrap()
            .into_iter()
            .any(|m| m.mount_point.starts_with(&slots) && m.mount_point != slots)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while bound() {
        assert!(std::time::Instant::now() < deadline, "a volume was still bound 30 s after logout");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
