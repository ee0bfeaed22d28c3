//! The notebook image, started with the gateway's spec (base_url + token),
//! answers /api/status with the token and 403 without it.

mod common;

use std::time::{Duration, Instant};

use bollard::query_parameters::CreateContainerOptions;
use nbgate::pool::spec::{container_name, notebook_container, Work, JUPYTER_PORT};
use nbgate::slot::{random_token, SlotId};

#[tokio::test]
async fn image_serves_jupyter_under_base_url_and_token() {
    common::require_docker();
    let t = common::TestInstance::new();
    // Started with the gateway's own spec; `start` waits for /api/status 200.
    let nb = Notebook::start(&t, &[]).await;
    let docker = nbgate::docker::connect().await.expect("Docker answers");
    let info = docker.inspect_container(&nb.name, None).await.unwrap();
    let host_config = info.host_config.unwrap();
    assert_eq!(host_config.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(host_config.memory, host_config.memory_swap);
    assert_eq!(info.config.unwrap().user.as_deref(), Some("1000:100"));

    let body = nb.get_json("api/status").await;
    assert!(body.get("started").is_some(), "{body}");
    let url = format!("{}api/status", nb.base);
    let client = reqwest::Client::new();
    let anonymous = client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 403);
    let wrong = client.get(&url).header("Authorization", "token not-the-token").send().await.unwrap();
    assert_eq!(wrong.status(), 403);
}

/// A notebook container started with the gateway's spec (hot-bind slot mount).
struct Notebook {
    name: String,
    token: String,
    /// `http://127.0.0.1:PORT/user/<slot>/`
    base: String,
    slot_dir: std::path::PathBuf,
    http: reqwest::Client,
}

impl Notebook {
    /// A container of the gateway's spec; `config` as `NBGATE_*` variables.
    async fn start(t: &common::TestInstance, config: &[(&str, &str)]) -> Self {
        let config = t.config(config);
        let docker = nbgate::docker::connect().await.expect("Docker answers");
        nbgate::docker::ensure_network(&docker, &config.instance).await.unwrap();
        let slot = SlotId::random();
        let token = random_token();
        let slot_dir = config.slots_dir().join(slot.as_str());
        nbgate::volumes::bind::ensure_shared(&config.slots_dir()).unwrap();
        std::fs::create_dir_all(&slot_dir).unwrap();
        let name = container_name(&config.instance, &slot);
        let body = notebook_container(&config, &slot, &token, Work::Slot(&slot_dir));
        docker
            .create_container(
                Some(CreateContainerOptions { name: Some(name.clone()), ..Default::default() }),
                body,
            )
            .await
            .unwrap();
        docker.start_container(&name, None).await.unwrap();
        let info = docker.inspect_container(&name, None).await.unwrap();
        let port = info.network_settings.unwrap().ports.unwrap()[JUPYTER_PORT].as_ref().unwrap()[0]
            .host_port
            .clone()
            .unwrap();
        let nb = Self {
            name,
            token,
            base: format!("http://127.0.0.1:{port}{}", slot.base_url()),
            slot_dir,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match nb.req(reqwest::Method::GET, "api/status").send().await {
                Ok(r) if r.status() == 200 => break,
                _ if Instant::now() > deadline => panic!("Jupyter did not answer within 60 s"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        nb
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", format!("token {}", self.token))
    }

    async fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self.req(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    /// The container's log (Jupyter logs to stderr).
    fn logs(&self) -> String {
        let out = std::process::Command::new("docker").args(["logs", &self.name]).output().unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    /// Ids from the log lines "nbgate spare kernel ready: <id>", in order.
    fn spares_ready(&self) -> Vec<String> {
        self.logs()
            .lines()
            .filter_map(|l| l.split("nbgate spare kernel ready: ").nth(1))
            .map(|rest| rest.split_whitespace().next().unwrap().to_string())
            .collect()
    }

    /// Wait until `n` spares have been logged ready; their ids.
    async fn wait_spares(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ids = self.spares_ready();
            if ids.len() >= n {
                return ids;
            }
            assert!(Instant::now() < deadline, "{n} spare kernel(s) never got ready; log:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Command lines of the kernel processes in the container.
    fn kernel_processes(&self) -> Vec<String> {
        let out = std::process::Command::new("docker")
            .args(["exec", &self.name, "ps", "-eo", "args"])
            .output()
            .unwrap();
        assert!(out.status.success(), "ps in the container: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("ipykernel_launcher"))
            .map(str::to_string)
            .collect()
    }

    async fn mkdir(&self, path: &str) {
        let r = self
            .req(reqwest::Method::PUT, &format!("api/contents/{path}"))
            .json(&serde_json::json!({"type": "directory"}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "creating {path}: {}", r.status());
    }

    /// POST /api/sessions for a notebook at `path`; the kernel id.
    async fn session(&self, path: &str) -> String {
        let name = path.rsplit('/').next().unwrap();
        let r = self
            .req(reqwest::Method::POST, "api/sessions")
            .json(&serde_json::json!({"path": path, "name": name, "type": "notebook", "kernel": {"name": "python3"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "POST /api/sessions for {path}");
        let v: serde_json::Value = r.json().await.unwrap();
        v["kernel"]["id"].as_str().unwrap().to_string()
    }

    /// Run `code` in kernel `id` over its WebSocket (straight to the container); its stdout.
    async fn execute(&self, id: &str, code: &str) -> String {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("{}api/kernels/{id}/channels", self.base.replacen("http", "ws", 1));
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert("authorization", format!("token {}", self.token).parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("kernel socket opens");
        common::KernelSocket { ws }.execute(code).await
    }
}

/// Seconds since boot (same clock as a process start time in /proc/<pid>/stat).
fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime").unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

/// In-kernel: working directory, JPY_SESSION_NAME, the process start time in
/// seconds since boot, names our preparation must not leave behind, and the
/// execution counter (a silent preparation does not advance it).
const PROBE: &str = "import os as __o\n\
print(__o.getcwd())\n\
print(__o.environ.get('JPY_SESSION_NAME'))\n\
print(int(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[19]) / __o.sysconf('SC_CLK_TCK'))\n\
print(sorted(k for k in ('os', 'sys', 'CWD', 'SET', 'UNSET', 'old', 'ip', 'dh', 'k', 'p', 'names') if k in globals()))\n\
print(get_ipython().execution_count)\n\
print(sorted(__o.listdir('.')))\n";

struct Probe {
    cwd: String,
    session_name: String,
    started: f64,
    leftovers: String,
    execution_count: String,
    files: String,
}

async fn probe(nb: &Notebook, kernel: &str) -> Probe {
    let out = nb.execute(kernel, PROBE).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "probe output: {out:?}");
    Probe {
        cwd: lines[0].into(),
        session_name: lines[1].into(),
        started: lines[2].parse().unwrap(),
        leftovers: lines[3].into(),
        execution_count: lines[4].into(),
        files: lines[5].into(),
    }
}

/// The user's volume, bound onto the slot after the container (and its spare)
/// started, as the gateway's hot-bind does; it holds `sub/seen.txt`.
fn bind_user_volume(t: &common::TestInstance, nb: &Notebook) {
    let data = t.dir.path().join("volume-data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("sub/seen.txt"), "x").unwrap();
    for p in [data.clone(), data.join("sub"), data.join("sub/seen.txt")] {
        std::os::unix::fs::chown(&p, Some(1000), Some(100)).unwrap();
    }
    nbgate::volumes::bind::bind(&data, &nb.slot_dir).unwrap();
}

#[tokio::test]
async fn spare_kernel_is_hidden_then_handed_out_in_the_notebook_directory() {
    common::require_docker();
    let t = common::TestInstance::new();
    let nb = Notebook::start(&t, &[]).await;

    // A spare starts by itself once the server is up, and stays invisible.
    let first = nb.wait_spares(1).await;
    assert_eq!(first.len(), 1, "one spare at a time: {first:?}");
    let spare = first[0].clone();
    assert_eq!(nb.get_json("api/kernels").await, serde_json::json!([]));
    assert_eq!(nb.get_json("api/status").await["kernels"], 0);
    let procs = nb.kernel_processes();
    assert_eq!(procs.len(), 1, "{procs:?}");
    assert!(procs[0].contains(&spare), "{procs:?}");

    // The user's volume arrives after the spare started; the notebook lives in it.
    bind_user_volume(&t, &nb);
    nb.mkdir("work/sub").await;
    let before_post = uptime();
    let kernel = nb.session("work/sub/a.ipynb").await;
    assert_eq!(kernel, spare, "the session got the pre-started spare");

    let p = probe(&nb, &kernel).await;
    assert_eq!(p.cwd, "/home/jovyan/work/sub");
    assert_eq!(p.session_name, "/home/jovyan/work/sub/a.ipynb");
    assert_eq!(p.files, "['seen.txt']", "the kernel sees the bound volume, not the old ~/work");
    assert!(p.started <= before_post, "kernel process started at {} s, POST at {before_post} s", p.started);
    assert_eq!(p.leftovers, "[]", "the preparation left names in the user namespace");
    assert_eq!(p.execution_count, "1");

    let listed = nb.get_json("api/kernels").await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["id"], kernel.as_str());
    assert_eq!(nb.get_json("api/status").await["kernels"], 1);

    // Used once: no replacement sits idle in a server someone uses.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(nb.spares_ready().len(), 1, "no second spare");
    assert_eq!(nb.kernel_processes().len(), 1, "only the user's kernel");

    // A restart keeps the notebook's directory and session name.
    let r = nb.req(reqwest::Method::POST, &format!("api/kernels/{kernel}/restart")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let p = probe(&nb, &kernel).await;
    assert_eq!(
        (p.cwd.as_str(), p.session_name.as_str()),
        ("/home/jovyan/work/sub", "/home/jovyan/work/sub/a.ipynb")
    );
    assert!(p.started > before_post, "restart made a new process");

    // A kernel asked for by id starts normally and leaves the spare alone.
    let wanted = "0b5e0b5e-0000-4000-8000-000000000001";
    let r = nb
        .req(reqwest::Method::POST, "api/kernels")
        .json(&serde_json::json!({"name": "python3", "kernel_id": wanted}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["id"], wanted);

    // The second notebook starts a kernel the normal way, in its own directory.
    nb.mkdir("work/other").await;
    let before_second = uptime();
    let kernel2 = nb.session("work/other/b.ipynb").await;
    assert_ne!(kernel2, spare);
    let p = probe(&nb, &kernel2).await;
    assert!(p.started >= before_second, "a new kernel process");
    assert_eq!(p.cwd, "/home/jovyan/work/other");
    assert_eq!(p.session_name, "/home/jovyan/work/other/b.ipynb");
    assert_eq!(p.execution_count, "1");
    assert_eq!(nb.get_json("api/status").await["kernels"], 3);
    assert_eq!(nb.spares_ready().len(), 1, "still no second spare");
}

/// A server stopped before its first notebook (a drained or recycled warm
/// container) exits: its unused spare does not keep the container alive.
#[tokio::test]
async fn a_server_with_an_unused_spare_kernel_stops() {
    common::require_docker();
    let t = common::TestInstance::new();
    let nb = Notebook::start(&t, &[]).await;
    nb.wait_spares(1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = nb.req(reqwest::Method::POST, "api/shutdown").send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = std::process::Command::new("docker")
            .args(["inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", &nb.name])
            .output()
            .unwrap();
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if state == "false 0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the container did not stop cleanly: {state}; log:\n{}",
            nb.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn spare_kernel_off_with_nbgate_spare_kernel_false() {
    common::require_docker();
    let t = common::TestInstance::new();
    let nb = Notebook::start(&t, &[("NBGATE_SPARE_KERNEL", "false")]).await;
    // Enabled, a spare is up within a second or two of /api/status; give it more.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(nb.kernel_processes(), Vec::<String>::new());
    assert!(!nb.logs().contains("nbgate spare kernel"), "{}", nb.logs());

    // A normal start: the reference the spare's handout must match.
    bind_user_volume(&t, &nb);
    nb.mkdir("work/sub").await;
    let before_post = uptime();
    let kernel = nb.session("work/sub/a.ipynb").await;
    let p = probe(&nb, &kernel).await;
    assert_eq!(p.cwd, "/home/jovyan/work/sub");
    assert_eq!(p.session_name, "/home/jovyan/work/sub/a.ipynb");
    assert_eq!(p.files, "['seen.txt']");
    assert!(p.started >= before_post, "started at {} s, POST at {before_post} s", p.started);
    assert_eq!(p.execution_count, "1");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(nb.kernel_processes().len(), 1, "no spare after a kernel start either");
}
