//! A real browser, as a person uses nbgate: headless Chromium driven over WebDriver
//! registers, writes and runs a notebook in JupyterLab, saves it in ~/work, logs out,
//! logs in again into a new container and finds the notebook with its output.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them), `ip`
//! (iproute2) and root, for `unshare --net`. On a failure the page is saved as
//! `target/browser-failure-<step>.png` and chromedriver's log beside it.
//!
//! Chromium runs in a network namespace of its own. Chromium aborts every request
//! in flight (`ERR_NETWORK_CHANGED`) whenever an interface or address on its host
//! changes, and Docker adds and removes one for every container it starts or stops:
//! on the host's network the test would fail whenever the pool, or any other test,
//! starts a container at the wrong moment. Inside the namespace there is only `lo`;
//! relays over Unix sockets carry the gateway's port in and chromedriver's port out.

mod common;

use std::fmt::Debug;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Gateway, TestInstance};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// The bound on every wait: a page, an element, a kernel, a file.
const WAIT: Duration = Duration::from_secs(60);
const KEY: &str = "browser-key";
const USER: &str = "ada";
const PASSWORD: &str = "analytical engine";
const NOTEBOOK: &str = "answer.ipynb";

/// Set for the relay inside the namespace: the directory of the Unix sockets.
const RELAY_DIR: &str = "BROWSER_TEST_RELAY_DIR";
/// Set for the relay inside the namespace: the gateway's port.
const RELAY_GATEWAY_PORT: &str = "BROWSER_TEST_GATEWAY_PORT";
/// chromedriver's port inside the namespace, which has nothing else.
const DRIVER_PORT: u16 = 9515;

/// A byte stream the relays can splice: TCP or Unix.
trait Stream: Read + Write + Send + Sized + 'static {
    fn dup(&self) -> std::io::Result<Self>;
    fn close_write(&self);
}

impl Stream for TcpStream {
    fn dup(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn close_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl Stream for UnixStream {
    fn dup(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn close_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// Copy both ways between `a` and `b` until each side closes.
fn splice<A: Stream, B: Stream>(a: A, b: B) -> std::io::Result<()> {
    let (mut a_in, mut a_out) = (a.dup()?, a);
    let (mut b_in, mut b_out) = (b.dup()?, b);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut a_in, &mut b_out);
        b_out.close_write();
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut b_in, &mut a_out);
        a_out.close_write();
    });
    Ok(())
}

/// In a thread: each accepted connection is spliced to a new one from `connect`.
fn relay<A: Stream, B: Stream>(
    mut accept: impl FnMut() -> std::io::Result<A> + Send + 'static,
    connect: impl Fn() -> std::io::Result<B> + Send + 'static,
) {
    std::thread::spawn(move || {
        while let Ok(a) = accept() {
            // A failed connect drops `a`: the client sees the connection close.
            if let Ok(b) = connect() {
                let _ = splice(a, b);
            }
        }
    });
}

/// The inside of the browser's network namespace: the test binary runs the
/// browser test again through `unshare --net` with `RELAY_DIR` set, and that
/// run comes here instead. It serves the gateway's port on
/// this namespace's loopback, runs chromedriver, and exposes chromedriver's port as
/// a Unix socket. It ends, with chromedriver and Chromium, when the test's end of
/// its stdin closes.
fn chromium_network_namespace() {
    let Ok(dir) = std::env::var(RELAY_DIR) else { return };
    let dir = PathBuf::from(dir);
    let gw_port: u16 = std::env::var(RELAY_GATEWAY_PORT).unwrap().parse().unwrap();
    let gateway = TcpListener::bind(("127.0.0.1", gw_port)).unwrap();
    let gateway_sock = dir.join("gateway.sock");
    relay(move || gateway.accept().map(|(s, _)| s), move || UnixStream::connect(&gateway_sock));
    let mut driver = Command::new("chromedriver")
        .arg(format!("--port={DRIVER_PORT}"))
        .arg(format!("--log-path={}", dir.join("chromedriver.log").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("chromedriver starts: apt-get install chromium chromium-driver");
    let driver_sock = UnixListener::bind(dir.join("driver.sock")).unwrap();
    relay(move || driver_sock.accept().map(|(s, _)| s), || TcpStream::connect(("127.0.0.1", DRIVER_PORT)));
    // The test holds the other end of stdin; EOF means it is gone.
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    let _ = driver.kill();
    let _ = driver.wait();
    // Chromium and its helpers are in this process group.
    let _ = nix::sys::signal::killpg(nix::unistd::getpgrp(), nix::sys::signal::Signal::SIGKILL);
}

/// chromedriver and Chromium in a network namespace of their own (see the top of
/// the file), with the WebDriver port relayed out to a free loopback port here.
/// Dropping it ends the namespace's processes.
struct ChromeDriver {
    inside: Child,
    stdin: Option<ChildStdin>,
    url: String,
    dir: PathBuf,
}

impl ChromeDriver {
    async fn start(gw: &Gateway, dir: &Path) -> Self {
        let gw_addr: std::net::SocketAddr = gw.url.trim_start_matches("http://").parse().unwrap();
        // The gateway, for the relay inside.
        let gateway_sock = UnixListener::bind(dir.join("gateway.sock")).unwrap();
        relay(move || gateway_sock.accept().map(|(s, _)| s), move || TcpStream::connect(gw_addr));
        // chromedriver, for the WebDriver client here.
        let webdriver = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", webdriver.local_addr().unwrap());
        let driver_sock = dir.join("driver.sock");
        relay(move || webdriver.accept().map(|(s, _)| s), move || UnixStream::connect(&driver_sock));

        let mut cmd = Command::new("unshare");
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut inside = cmd
            .args(["--net", "--", "sh", "-c", r#"ip link set lo up && exec "$@""#, "sh"])
            .arg(std::env::current_exe().unwrap())
            .args([
                "a_person_writes_a_notebook_and_finds_it_after_logging_in_again",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(RELAY_DIR, dir)
            .env(RELAY_GATEWAY_PORT, gw_addr.port().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("unshare cannot start ({e}): the browser test needs root"));
        let stdin = inside.stdin.take();
        let mut driver = Self { inside, stdin, url, dir: dir.to_path_buf() };

        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(Some(status)) = driver.inside.try_wait() {
                panic!("the browser's network namespace ended at once ({status}); is this root?");
            }
            let ready = async {
                let v: Value = http.get(format!("{}/status", driver.url)).send().await?.json().await?;
                Ok::<_, reqwest::Error>(v["value"]["ready"].as_bool().unwrap_or(false))
            };
            match ready.await {
                Ok(true) => return driver,
                Ok(false) => last = "chromedriver /status says not ready".into(),
                Err(e) => last = format!("chromedriver /status: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        driver.stop();
        panic!("chromedriver never answered: {last}")
    }

    fn stop(&mut self) {
        drop(self.stdin.take());
        // The group holds unshare's process, chromedriver and Chromium.
        let pgid = nix::unistd::Pid::from_raw(self.inside.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.inside.wait();
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A headless Chromium session. Fields drop in order: the session, then the driver
/// (and with it Chromium), then the profile directory.
struct Ui {
    c: Client,
    base: String,
    http: reqwest::Client,
    driver: ChromeDriver,
    _profile: tempfile::TempDir,
}

impl Ui {
    async fn start(gw: &Gateway) -> Self {
        let profile = tempfile::Builder::new().prefix("nbgate-chromium-").tempdir().unwrap();
        let driver = ChromeDriver::start(gw, profile.path()).await;
        let user_data = profile.path().join("user-data");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", user_data.display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let c =
            tokio::time::timeout(WAIT, ClientBuilder::new(connector).capabilities(caps).connect(&driver.url))
                .await
                .expect("Chromium started within the wait")
                .expect("a WebDriver session with headless Chromium");
        Self { c, base: gw.url.clone(), http: gw.http.clone(), driver, _profile: profile }
    }

    /// Save a screenshot for `step`, print where, and panic with `msg`.
    async fn fail(&self, step: &str, msg: impl std::fmt::Display) -> ! {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
        let path = dir.join(format!("browser-failure-{step}.png"));
        let url = match tokio::time::timeout(Duration::from_secs(10), self.c.current_url()).await {
            Ok(Ok(u)) => u.to_string(),
            _ => "(unknown)".into(),
        };
        let _ = std::fs::create_dir_all(&dir);
        let shot = match tokio::time::timeout(Duration::from_secs(20), self.c.screenshot()).await {
            Ok(Ok(png)) => std::fs::write(&path, png)
                .map(|_| path.display().to_string())
                .unwrap_or_else(|e| format!("not saved: {e}")),
            Ok(Err(e)) => format!("not taken: {e}"),
            Err(_) => "not taken: timed out".into(),
        };
        let log = dir.join("browser-failure-chromedriver.log");
        if std::fs::copy(self.driver.dir.join("chromedriver.log"), &log).is_ok() {
            eprintln!("chromedriver's log: {}", log.display());
        }
        eprintln!("browser test failed at step {step:?}; page {url}; screenshot: {shot}");
        panic!("step {step}: {msg} (page {url}; screenshot: {shot})")
    }

    /// Run one WebDriver command of `step`, bounded by the wait.
    async fn run<T, E: Debug>(&self, step: &str, what: &str, fut: impl Future<Output = Result<T, E>>) -> T {
        match tokio::time::timeout(WAIT, fut).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => self.fail(step, format!("{what}: {e:?}")).await,
            Err(_) => self.fail(step, format!("{what}: no answer within {WAIT:?}")).await,
        }
    }

    /// Poll `script` (a function body) for up to `within` until it returns
    /// something other than null/false/""; that value, or the last answer.
    async fn poll_js(&self, script: &str, args: &[Value], within: Duration) -> Result<Value, Value> {
        let deadline = Instant::now() + within;
        loop {
            let last =
                match tokio::time::timeout(Duration::from_secs(10), self.c.execute(script, args.to_vec()))
                    .await
                {
                    Ok(Ok(v)) if !matches!(v, Value::Null | Value::Bool(false)) && v != "" => return Ok(v),
                    Ok(Ok(v)) => v,
                    // A page on its way out answers with an error; try again.
                    Ok(Err(e)) => Value::String(format!("{e}")),
                    Err(_) => Value::String("script timed out".into()),
                };
            if Instant::now() > deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `poll_js` within the wait, failing `step` if it runs out.
    async fn wait_js(&self, step: &str, what: &str, script: &str, args: Vec<Value>) -> Value {
        match self.poll_js(script, &args, WAIT).await {
            Ok(v) => v,
            Err(last) => self.fail(step, format!("waited {WAIT:?} for {what}; last answer {last}")).await,
        }
    }

    /// Wait for a displayed element matching `css`; it.
    async fn wait_visible(&self, step: &str, css: &str) -> Element {
        let deadline = Instant::now() + WAIT;
        let mut last: String;
        loop {
            let found = tokio::time::timeout(Duration::from_secs(10), async {
                for el in self.c.find_all(Locator::Css(css)).await? {
                    // An element can go stale between finding and asking.
                    if el.is_displayed().await.unwrap_or(false) {
                        return Ok(Some(el));
                    }
                }
                Ok::<_, fantoccini::error::CmdError>(None)
            })
            .await;
            match found {
                Ok(Ok(Some(el))) => return el,
                Ok(Ok(None)) => last = "none displayed".into(),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "no answer".into(),
            }
            if Instant::now() > deadline {
                self.fail(step, format!("waited {WAIT:?} for a displayed {css}: {last}")).await;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn goto(&self, step: &str, path: &str) {
        let url = format!("{}{path}", self.base);
        self.run(step, &format!("open {url}"), self.c.goto(&url)).await;
    }

    async fn fill(&self, step: &str, id: &str, text: &str) {
        let el = self.wait_visible(step, &format!("#{id}")).await;
        self.run(step, &format!("type into #{id}"), el.send_keys(text)).await;
    }

    async fn click(&self, step: &str, el: &Element, what: &str) {
        self.run(step, &format!("click {what}"), el.click()).await;
    }

    /// Wait until the address is `/user/<slot>/lab…` and JupyterLab's shell is up; the slot.
    async fn wait_for_lab(&self, step: &str) -> String {
        let path = self
            .wait_js(
                step,
                "JupyterLab at /user/<slot>/lab",
                "const m = location.pathname.match(/^\\/user\\/([^/]+)\\/lab/);
                 return m && document.querySelector('#jp-main-dock-panel') ? m[1] : null;",
                vec![],
            )
            .await;
        path.as_str().unwrap().to_string()
    }

    /// The browser's cookies for the gateway, as a `Cookie` header.
    async fn cookie_header(&self, step: &str) -> String {
        let cookies = self.run(step, "read cookies", self.c.get_all_cookies()).await;
        cookies.iter().map(|c| format!("{}={}", c.name(), c.value())).collect::<Vec<_>>().join("; ")
    }

    /// GET a contents-API path with the browser's cookies; the JSON, or None on 404.
    async fn contents(&self, step: &str, slot: &str, path: &str) -> Option<Value> {
        let cookie = self.cookie_header(step).await;
        let url = format!("{}/user/{slot}/api/contents/{path}?content=1", self.base);
        let get = async {
            let resp = self.http.get(&url).header("cookie", cookie).send().await?;
            if resp.status() == 404 {
                return Ok(Ok(None));
            }
            if !resp.status().is_success() {
                return Ok(Err(resp.status()));
            }
            resp.json().await.map(|v| Ok(Some(v)))
        };
        match tokio::time::timeout(WAIT, get).await {
            Ok(Ok(Ok(v))) => v,
            Ok(Ok(Err(status))) => self.fail(step, format!("GET {url}: {status}")).await,
            Ok(Err(e)) => self.fail(step, format!("GET {url}: {e}")).await,
            Err(_) => self.fail(step, format!("GET {url}: no answer within {WAIT:?}")).await,
        }
    }
}

/// Whether a notebook's JSON has a cell whose output shows `42`.
fn has_output_42(nb: &Value) -> bool {
    nb["content"]["cells"].as_array().into_iter().flatten().any(|cell| {
        cell["outputs"].as_array().into_iter().flatten().any(|out| {
            let text = match &out["text"] {
                Value::Array(lines) => lines.iter().filter_map(Value::as_str).collect::<String>(),
                Value::String(s) => s.clone(),
                _ => String::new(),
            };
            text.trim() == "42"
        })
    })
}

#[tokio::test]
async fn a_person_writes_a_notebook_and_finds_it_after_logging_in_again() {
    // Started again inside the browser's network namespace: be that side.
    if std::env::var_os(RELAY_DIR).is_some() {
        return chromium_network_namespace();
    }
    common::require_docker();
    let started = Instant::now();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &[("NBGATE_REGISTRATION_KEY", KEY), ("NBGATE_POOL_SIZE", "1")]);
    gw.wait_warm(1).await;
    let ui = Ui::start(&gw).await;

    // Register through the form.
    let step = "register";
    ui.goto(step, "/hub/register").await;
    ui.fill(step, "username", USER).await;
    ui.fill(step, "password", PASSWORD).await;
    ui.fill(step, "password_confirm", PASSWORD).await;
    ui.fill(step, "registration_key", KEY).await;
    let submit = ui.wait_visible(step, "form[action='/hub/register'] button[type=submit]").await;
    ui.click(step, &submit, "Register and start").await;
    let step = "lab-after-register";
    let slot1 = ui.wait_for_lab(step).await;
    let card = ui.wait_visible(step, ".jp-Launcher .jp-LauncherCard[data-category='Notebook']").await;
    eprintln!("registered: JupyterLab in slot {slot1} after {:?}", started.elapsed());

    // A notebook from the launcher, in the file browser's folder: ~/work.
    let step = "new-notebook";
    ui.click(step, &card, "the Python 3 notebook card").await;
    let editor = ui.wait_visible(step, ".jp-NotebookPanel .jp-Cell .jp-InputArea-editor .cm-content").await;
    // Code run before the kernel is connected is dropped: wait for "Idle" as a person would.
    ui.wait_js(
        step,
        "the kernel to be idle",
        "return [...document.querySelectorAll('.jp-StatusBar-TextItem')]
           .some(e => /^Python 3.*\\| Idle$/.test(e.textContent.trim()));",
        vec![],
    )
    .await;
    ui.click(step, &editor, "the first cell").await;
    ui.run(step, "type the code", editor.send_keys("print(6*7)")).await;
    ui.run(step, "Shift+Enter", editor.send_keys(&(Key::Shift + &Key::Enter))).await;
    let step = "run-cell";
    ui.wait_js(
        step,
        "the output 42",
        "return [...document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output')]
           .some(o => o.textContent.trim() === '42');",
        vec![],
    )
    .await;

    // Save with Ctrl+S; JupyterLab asks for a name on the first save of an Untitled
    // file (its default), and the notebook is then saved under that name.
    let step = "save";
    let active = ui.run(step, "the focused element", ui.c.active_element()).await;
    ui.run(step, "Ctrl+S", active.send_keys(&(Key::Control + "s"))).await;
    let asked = ui
        .poll_js("return !!document.querySelector('.jp-Dialog input');", &[], Duration::from_secs(5))
        .await
        .is_ok();
    if asked {
        let input = ui.wait_visible(step, ".jp-Dialog input").await;
        ui.run(step, "clear the name", input.clear()).await;
        ui.run(step, "type the name", input.send_keys(NOTEBOOK)).await;
        let rename = ui.wait_visible(step, ".jp-Dialog .jp-mod-accept").await;
        ui.click(step, &rename, "Rename").await;
    }
    // The name on the notebook's tab, once no dialog is open and nothing is unsaved.
    let saved = ui
        .wait_js(
            step,
            "the notebook saved under its name",
            "if (document.querySelector('.jp-Dialog')) return null;
             const tab = document.querySelector('#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current');
             if (!tab || tab.classList.contains('jp-mod-dirty')) return null;
             const name = tab.querySelector('.lm-TabBar-tabLabel').textContent.trim();
             return name.endsWith('.ipynb') && (arguments[0] === '' || name === arguments[0]) ? name : null;",
            vec![json!(if asked { NOTEBOOK } else { "" })],
        )
        .await;
    let saved = saved.as_str().unwrap().to_string();
    let step = "saved-in-work";
    let deadline = Instant::now() + WAIT;
    loop {
        let nb = ui.contents(step, &slot1, &format!("work/{saved}")).await;
        if nb.as_ref().is_some_and(has_output_42) {
            break;
        }
        if Instant::now() > deadline {
            let work = ui.contents(step, &slot1, "work").await;
            let home = ui.contents(step, &slot1, "").await;
            let names = |l: Option<Value>| -> Vec<String> {
                l.and_then(|l| l["content"].as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|e| e["path"].as_str().map(str::to_string))
                    .collect()
            };
            ui.fail(
                step,
                format!(
                    "work/{saved} with the output 42 is not in ~/work: work has {:?}, home has {:?}",
                    names(work),
                    names(home)
                ),
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("saved work/{saved} after {:?}", started.elapsed());

    // Log out from the hub's home page.
    let step = "logout";
    ui.goto(step, "/hub/home").await;
    let out = ui.wait_visible(step, "form[action='/hub/logout'] button[type=submit]").await;
    ui.click(step, &out, "Log out").await;
    ui.wait_js(step, "the login page", "return location.pathname === '/hub/login';", vec![]).await;

    // Log in again: a new container with the same ~/work.
    gw.wait_warm(1).await;
    let step = "login";
    ui.goto(step, "/hub/login").await;
    ui.fill(step, "username", USER).await;
    ui.fill(step, "password", PASSWORD).await;
    let submit = ui.wait_visible(step, "form[action='/hub/login'] button[type=submit]").await;
    ui.click(step, &submit, "Log in").await;
    let step = "lab-after-login";
    let slot2 = ui.wait_for_lab(step).await;
    if slot2 == slot1 {
        ui.fail(step, format!("logged in again into the old slot {slot1}")).await;
    }
    eprintln!("logged in again: slot {slot2} after {:?}", started.elapsed());

    // The file browser, opened in ~/work, lists the notebook.
    let step = "file-browser";
    ui.wait_js(
        step,
        &format!("{saved} in the file browser"),
        "return [...document.querySelectorAll('.jp-DirListing-item .jp-DirListing-itemText')]
           .some(e => e.textContent.trim() === arguments[0]);",
        vec![json!(saved)],
    )
    .await;
    ui.wait_js(
        step,
        "the file browser in work",
        "const crumbs = document.querySelector('.jp-FileBrowser .jp-BreadCrumbs');
         return crumbs && crumbs.textContent.includes('work');",
        vec![],
    )
    .await;

    // Opened, it still shows the saved output.
    let step = "reopen";
    ui.goto(step, &format!("/user/{slot2}/lab/tree/work/{saved}")).await;
    ui.wait_js(
        step,
        "the saved output 42 in the reopened notebook",
        "return [...document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output')]
           .some(o => o.textContent.trim() === '42');",
        vec![],
    )
    .await;
    let nb = ui.contents(step, &slot2, &format!("work/{saved}")).await;
    if !nb.as_ref().is_some_and(has_output_42) {
        ui.fail(step, format!("work/{saved} through the API of the new slot: {nb:?}")).await;
    }

    let _ = tokio::time::timeout(Duration::from_secs(10), ui.c.clone().close()).await;
    eprintln!("browser test done in {:?}", started.elapsed());
}
