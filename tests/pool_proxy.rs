//! The warm pool and the proxy against the real engine and real JupyterLab
//! (ephemeral mode: a visit gets a container).

mod common;

use std::time::Duration;

use common::{Gateway, TestInstance};
use nbgate::pool::spec::{ASSIGNED_CPU_SHARES, WARM_CPU_SHARES};
use sha2::{Digest, Sha256};

const EPHEMERAL: (&str, &str) = ("NBGATE_AUTH", "ephemeral");

#[tokio::test]
async fn pool_fills_and_a_visit_reaches_jupyter() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &[EPHEMERAL, ("NBGATE_POOL_SIZE", "2")]);
    gw.wait_warm(2).await;
    let (cookie, slot) = gw.visit(None).await;
    assert_eq!(slot.len(), 16, "64-bit hex slot id");
    let resp = gw.http.get(gw.user_url(&slot, "api/status")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = gw.health().await;
    assert_eq!(h["pool"]["assigned"], 1);
    // The same visitor comes back to the same container.
    let (_, again) = gw.visit(Some(&cookie)).await;
    assert_eq!(again, slot);
    // The pool refills to its size.
    gw.wait_warm(2).await;
    // JupyterLab itself loads through the gateway.
    let page = |path: &'static str| {
        let req = gw.http.get(gw.user_url(&slot, path)).header("cookie", &cookie);
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            resp.text().await.unwrap()
        }
    };
    const BANNER: &str = "/hub/static/nbgate.js";
    let lab = page("lab").await;
    assert!(lab.contains("JupyterLab"));
    // `lab` pages get the banner script once; the single-document view and the API do not.
    assert_eq!(lab.matches(BANNER).count(), 1);
    assert!(page("lab/tree/work").await.contains(BANNER));
    assert!(!page("doc/tree/work").await.contains(BANNER));
    assert!(!page("api/status").await.contains(BANNER));
}

#[tokio::test]
async fn kernel_runs_code_over_the_websocket() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &[EPHEMERAL, ("NBGATE_POOL_SIZE", "1")]);
    runs_code_over_the_websocket(&gw).await;
}

/// A visit, a kernel, `print(6 * 7)` over its WebSocket, and a healthy gateway after.
async fn runs_code_over_the_websocket(gw: &Gateway) {
    gw.wait_warm(1).await;
    let (cookie, slot) = gw.visit(None).await;
    let kernel = gw.start_kernel(&cookie, &slot).await;
    let out = gw.execute(&cookie, &slot, &kernel, "print(6 * 7)").await;
    assert_eq!(out.trim(), "42");
    assert_eq!(gw.health().await["status"], "ok");
}

/// Browsers open a new connection for every WebSocket, and the gateway forwards
/// such a first request itself (`proxy::first`). One that follows another request
/// on a kept-alive connection goes through hyper: it must work the same, and a
/// refusal from Jupyter (an unknown kernel) must reach the client on both paths.
#[tokio::test]
async fn a_websocket_after_another_request_on_its_connection_works_too() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;
    use tokio_tungstenite::tungstenite::protocol::Role;
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &[EPHEMERAL, ("NBGATE_POOL_SIZE", "1")]);
    gw.wait_warm(1).await;
    let (cookie, slot) = gw.visit(None).await;
    let kernel = gw.start_kernel(&cookie, &slot).await;
    let host = gw.url.trim_start_matches("http://").to_string();
    let upgrade = |kernel: &str| {
        http::Request::get(format!("/user/{slot}/api/kernels/{kernel}/channels"))
            .header("host", &host)
            .header("cookie", &cookie)
            .header("origin", gw.origin())
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let connection = || async {
        let tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn.with_upgrades());
        let status = http::Request::get(format!("/user/{slot}/api/status"))
            .header("host", &host)
            .header("cookie", &cookie)
            .body(Empty::new())
            .unwrap();
        let resp = sender.send_request(status).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        sender
    };

    let mut sender = connection().await;
    let resp = sender.send_request(upgrade(&kernel)).await.unwrap();
    assert_eq!(resp.status(), 101);
    let io = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Client, None).await;
    assert_eq!(common::KernelSocket { ws }.execute("print(6 * 7)").await.trim(), "42");

    let missing = "00000000-0000-0000-0000-000000000000";
    let resp = connection().await.send_request(upgrade(missing)).await.unwrap();
    assert_eq!(resp.status(), 404, "through hyper");
    match gw.kernel_socket(&slot, missing, Some(&cookie), Some(gw.origin())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 404, "first request")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a WebSocket to a kernel that does not exist"),
    }
    // The kernel's socket still opens as a first request.
    assert_eq!(gw.execute(&cookie, &slot, &kernel, "print(7 * 6)").await.trim(), "42");
}

#[tokio::test]
async fn on_one_cpu_a_single_threaded_gateway_runs_code_over_the_websocket() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start_on_one_cpu(&t, &[EPHEMERAL, ("NBGATE_POOL_SIZE", "1")]);
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", gw.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect();
    assert!(
        !threads.iter().any(|c| c.starts_with("tokio-rt-worker")),
        "one CPU: no worker threads, the main thread runs everything; threads: {threads:?}"
    );
    runs_code_over_the_websocket(&gw).await;
}

#[tokio::test]
async fn big_upload_and_download_round_trip_at_flat_memory() {
    use base64::Engine;
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &[EPHEMERAL, ("NBGATE_POOL_SIZE", "1"), ("NBGATE_MEMORY_LIMIT", "1g")]);
    gw.wait_warm(1).await;
    let (cookie, slot) = gw.visit(None).await;
    let (_, peak_before) = common::rss_kib(gw.pid());

    // 100 MB of incompressible bytes, uploaded in chunks as JupyterLab does.
    let mut data = vec![0u8; 100 * 1024 * 1024];
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let chunks: Vec<&[u8]> = data.chunks(8 * 1024 * 1024).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let n = if i + 1 == chunks.len() { -1 } else { i as i64 + 1 };
        let body = serde_json::json!({
            "type": "file", "format": "base64", "name": "big.bin", "path": "big.bin", "chunk": n,
            "content": base64::engine::general_purpose::STANDARD.encode(chunk),
        });
        let resp = gw
            .http
            .put(gw.user_url(&slot, "api/contents/big.bin"))
            .header("cookie", &cookie)
            .header("origin", gw.origin())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "chunk {i}: {}", resp.status());
    }
    let resp =
        gw.http.get(gw.user_url(&slot, "files/big.bin")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut hasher = Sha256::new();
    let mut len = 0usize;
    let mut resp = resp;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        len += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(len, data.len());
    assert_eq!(hasher.finalize()[..], Sha256::digest(&data)[..], "downloaded bytes differ");
    let (_, peak_after) = common::rss_kib(gw.pid());
    let grew_mib = peak_after.saturating_sub(peak_before) / 1024;
    assert!(grew_mib < 40, "gateway peak memory grew by {grew_mib} MiB while 233 MB passed through");
}

#[tokio::test]
async fn attack_09_websocket_and_http_auth_and_origin() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &[EPHEMERAL, ("NBGATE_POOL_SIZE", "2")]);
    gw.wait_warm(2).await;
    let (alice, alice_slot) = gw.visit(None).await;
    let (bob, bob_slot) = gw.visit(None).await;
    assert_ne!(alice_slot, bob_slot);
    let kernel = gw.start_kernel(&alice, &alice_slot).await;
    let status_url = gw.user_url(&alice_slot, "api/status");

    // HTTP: Bob's cookie and no cookie are refused; browsers are sent to start.
    for cookie in [Some(bob.as_str()), None, Some("nbgate-session=forged")] {
        let mut req = gw.http.get(&status_url);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        assert_eq!(req.send().await.unwrap().status(), 403, "{cookie:?}");
    }
    let browser = gw
        .http
        .get(gw.user_url(&alice_slot, "lab"))
        .header("cookie", &bob)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(browser.status(), 302);
    // Traversal from Bob's own slot to Alice's is refused, never proxied.
    for path in [
        format!("../{alice_slot}/api/status"),
        format!("%2e%2e/{alice_slot}/api/status"),
        format!("%2e%2e%2f{alice_slot}/api/status"),
        format!("x/..%2F..%2F{alice_slot}/api/status"),
    ] {
        let url = format!("{}/user/{bob_slot}/{path}", gw.url);
        let status = gw.http.get(&url).header("cookie", &bob).send().await.unwrap().status();
        assert!(status == 400 || status == 403 || status == 404, "{path}: {status}");
    }
    // Forged Host / X-Forwarded-Host change nothing.
    let forged = gw
        .http
        .get(&status_url)
        .header("cookie", &bob)
        .header("x-forwarded-host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    // WebSocket: no 101 for Bob, for no cookie, or for Alice with a foreign Origin.
    for (cookie, origin) in [
        (Some(bob.as_str()), Some(gw.origin().to_string())),
        (None, Some(gw.origin().to_string())),
        (Some(alice.as_str()), Some("https://evil.example".to_string())),
        (Some(alice.as_str()), Some("null".to_string())),
        (Some(alice.as_str()), Some(format!("{}.evil.example", gw.origin()))),
    ] {
        let result = gw.kernel_socket(&alice_slot, &kernel, cookie, origin.as_deref()).await;
        match result {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("upgrade succeeded for cookie={cookie:?} origin={origin:?}"),
        }
    }
    // Alice with a foreign Origin cannot POST or DELETE through.
    let post = gw
        .http
        .post(gw.user_url(&alice_slot, "api/kernels"))
        .header("cookie", &alice)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 403);
    let delete = gw
        .http
        .delete(gw.user_url(&alice_slot, &format!("api/kernels/{kernel}")))
        .header("cookie", &alice)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 403);
    // ... and the kernel is still there.
    let kernels: serde_json::Value = gw
        .http
        .get(gw.user_url(&alice_slot, "api/kernels"))
        .header("cookie", &alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(kernels.as_array().unwrap().len(), 1);
    // The owner with the right origin gets through.
    let ok = gw.execute(&alice, &alice_slot, &kernel, "print('mine')").await;
    assert_eq!(ok.trim(), "mine");
}

#[tokio::test]
async fn containers_cannot_reach_each_other_or_the_host_ports() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &[EPHEMERAL, ("NBGATE_POOL_SIZE", "2")]);
    gw.wait_warm(2).await;
    let (alice, alice_slot) = gw.visit(None).await;
    let (_bob, bob_slot) = gw.visit(None).await;

    let inspect = |slot: &str| {
        let out = std::process::Command::new("docker")
            .args(["inspect", &format!("{}-slot-{slot}", t.name)])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0].clone()
    };
    let bob_info = inspect(&bob_slot);
    let net = format!("{}-net", t.name);
    let bob_ip = bob_info["NetworkSettings"]["Networks"][&net]["IPAddress"].as_str().unwrap().to_string();
    let gateway_ip = bob_info["NetworkSettings"]["Networks"][&net]["Gateway"].as_str().unwrap().to_string();
    let bob_port =
        bob_info["NetworkSettings"]["Ports"]["8888/tcp"][0]["HostPort"].as_str().unwrap().to_string();
    let gw_port = gw.url.rsplit(':').next().unwrap().to_string();

    let kernel = gw.start_kernel(&alice, &alice_slot).await;
    let code = format!(
        r#"
import socket
def probe(host, port):
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((host, int(port))); return "open"
    except Exception as e:
        return type(e).__name__
    finally:
        s.close()
print("peer", probe("{bob_ip}", 8888))
print("host-published", probe("{gateway_ip}", {bob_port}))
print("host-gateway-port", probe("{gateway_ip}", {gw_port}))
import os
print("docker-sock", os.path.exists("/var/run/docker.sock"))
"#
    );
    let out = gw.execute(&alice, &alice_slot, &kernel, &code).await;
    assert!(!out.contains("open"), "a container reached something it must not:\n{out}");
    assert!(out.contains("docker-sock False"), "{out}");
    assert_eq!(out.lines().count(), 4, "{out}");
}

#[tokio::test]
async fn sigkill_and_restart_keep_the_session_and_the_kernel() {
    common::require_docker();
    let t = TestInstance::new();
    let env = [EPHEMERAL, ("NBGATE_POOL_SIZE", "1")];
    let gw = Gateway::start(&t, &env);
    gw.wait_warm(1).await;
    let (cookie, slot) = gw.visit(None).await;
    let kernel = gw.start_kernel(&cookie, &slot).await;
    assert_eq!(gw.execute(&cookie, &slot, &kernel, "x = 41; print('set')").await.trim(), "set");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(gw.pid()), nix::sys::signal::Signal::SIGKILL).unwrap();
    drop(gw);

    let gw = Gateway::start(&t, &env);
    // Adoption happens before the pool is reported; wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while gw.health().await["pool"]["assigned"] != 1 {
        assert!(std::time::Instant::now() < deadline, "assigned container not adopted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, again) = gw.visit(Some(&cookie)).await;
    assert_eq!(again, slot, "the visitor keeps the container");
    assert_eq!(
        gw.execute(&cookie, &slot, &kernel, "print(x + 1)").await.trim(),
        "42",
        "kernel state survived"
    );
    let names = std::process::Command::new("docker")
        .args(["ps", "-q", "--filter", &format!("label=nbgate.instance={}", t.name)])
        .output()
        .unwrap();
    let count = String::from_utf8_lossy(&names.stdout).lines().count();
    assert!(count <= 2, "duplicates after restart: {count} containers");
}

#[tokio::test]
async fn a_container_removed_behind_our_back_is_replaced() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &[EPHEMERAL, ("NBGATE_POOL_SIZE", "1")]);
    gw.wait_warm(1).await;
    let list = || {
        let out = std::process::Command::new("docker")
            .args(["ps", "-q", "--no-trunc", "--filter", &format!("label=nbgate.instance={}", t.name)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect::<Vec<_>>()
    };
    let before = list();
    assert_eq!(before.len(), 1);
    std::process::Command::new("docker").args(["rm", "-f", &before[0]]).output().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let now = list();
        let warm = gw.health().await["pool"]["warm"].as_u64().unwrap();
        if warm == 1 && now.len() == 1 && now[0] != before[0] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not replaced: {now:?}, warm {warm}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_full_house_gets_the_full_page() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &[EPHEMERAL, ("NBGATE_POOL_SIZE", "1"), ("NBGATE_MAX_CONTAINERS", "1")]);
    gw.wait_warm(1).await;
    let (_first, _) = gw.visit(None).await;
    let resp = gw.http.get(format!("{}/", gw.url)).send().await.unwrap();
    assert_eq!(resp.status(), 200, "never a 5xx for a full house");
    assert!(resp.headers().contains_key("retry-after"));
    let html = resp.text().await.unwrap();
    assert!(html.contains("No free notebook server"), "{html}");
    assert!(html.contains(r#"http-equiv="refresh""#), "the page refreshes itself");
}

/// A refill after a burst of logins must not starve the servers people use:
/// warm containers start with the least CPU weight and get the full weight
/// when they are handed out.
#[tokio::test]
async fn servers_in_use_outweigh_warm_ones_for_the_cpu() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &[("NBGATE_AUTH", "ephemeral"), ("NBGATE_POOL_SIZE", "1")]);
    gw.wait_warm(1).await;
    let shares = |id: &str| common::inspect(id, "{{.HostConfig.CpuShares}}").parse::<i64>().unwrap();
    let warm = common::containers(&t);
    assert_eq!(warm.len(), 1);
    assert_eq!(shares(&warm[0]), WARM_CPU_SHARES, "a warm container yields");
    let (_, slot) = gw.visit(None).await;
    let assigned = format!("{}-slot-{slot}", t.name);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while shares(&assigned) != ASSIGNED_CPU_SHARES {
        assert!(std::time::Instant::now() < deadline, "the assigned server never got the full CPU weight");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    gw.wait_warm(1).await;
    let refilled: Vec<_> =
        common::containers(&t).into_iter().filter(|id| shares(id) == WARM_CPU_SHARES).collect();
    assert_eq!(refilled.len(), 1, "the refill's new container yields too");
}

/// The gateway talks to Jupyter on the container's address on the instance
/// network, not through the 127.0.0.1-published port (whose userland
/// docker-proxy would cost host CPU and descriptors on every request).
#[tokio::test]
async fn the_gateway_reaches_jupyter_on_the_network_not_through_docker_proxy() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &[EPHEMERAL, ("NBGATE_POOL_SIZE", "1")]);
    gw.wait_warm(1).await;
    let (cookie, slot) = gw.visit(None).await;
    let name = format!("{}-slot-{slot}", t.name);
    let ip = common::inspect(&name, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}");
    let published =
        common::inspect(&name, r#"{{(index (index .NetworkSettings.Ports "8888/tcp") 0).HostPort}}"#);
    assert!(!ip.is_empty() && !published.is_empty(), "ip {ip:?}, published port {published:?}");
    let resp = gw.http.get(gw.user_url(&slot, "api/status")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // The proxied request's upstream connection stays pooled: look at it.
    let ss = std::process::Command::new("ss").args(["-Htnp", "state", "established"]).output().unwrap();
    assert!(ss.status.success(), "ss: {}", String::from_utf8_lossy(&ss.stderr));
    let ours = format!("pid={},", gw.pid());
    let peers: Vec<String> = String::from_utf8_lossy(&ss.stdout)
        .lines()
        .filter(|l| l.contains(&ours))
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
        .collect();
    assert!(peers.contains(&format!("{ip}:8888")), "no connection to {ip}:8888 among {peers:?}");
    let via_proxy = format!("127.0.0.1:{published}");
    assert!(!peers.contains(&via_proxy), "the gateway went through docker-proxy: {peers:?}");
}

/// Docker creates and starts one container at a time (JupyterLab's own start-up
/// still overlaps): parallel creates stall the servers people use on a busy
/// host (bench figure 9).
#[tokio::test]
async fn containers_are_created_one_at_a_time() {
    common::require_docker();
    let t = TestInstance::new();
    let since = unix_now();
    let gw = Gateway::start(&t, &[EPHEMERAL, ("NBGATE_POOL_SIZE", "4")]);
    gw.wait_warm(4).await;
    let until = unix_now() + 1;
    let label = format!("label=nbgate.instance={}", t.name);
    let out = std::process::Command::new("docker")
        .args(["events", "--since", &since.to_string(), "--until", &until.to_string(), "--filter", &label])
        .args([
            "--filter",
            "event=create",
            "--filter",
            "event=start",
            "--format",
            "{{.Action}} {{.Actor.ID}}",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "docker events: {}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(events.len(), 8, "four creates and four starts: {events:?}");
    for pair in events.chunks(2) {
        let (create, start) = (&pair[0], &pair[1]);
        assert!(create.starts_with("create "), "{events:?}");
        assert_eq!(start.strip_prefix("start "), create.strip_prefix("create "), "interleaved: {events:?}");
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}
