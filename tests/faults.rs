//! Faults from SECURITY.md's table that are not covered next to their feature.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Gateway, TestInstance};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

/// A Unix-socket relay to the real Docker socket that can be cut and
/// restored: to the gateway it looks exactly like dockerd going away.
struct ChaosSocket {
    path: PathBuf,
    tasks: Option<JoinSet<()>>,
}

impl ChaosSocket {
    fn start(path: PathBuf) -> Self {
        let mut s = Self { path, tasks: None };
        s.up();
        s
    }

    fn up(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).unwrap();
        let mut tasks = JoinSet::new();
        let mut conns = JoinSet::new();
        tasks.spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                conns.spawn(async move {
                    if let Ok(mut docker) = UnixStream::connect("/var/run/docker.sock").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut docker).await;
                    }
                });
            }
        });
        self.tasks = Some(tasks);
    }

    /// Drop the listener and every open connection.
    fn down(&mut self) {
        if let Some(mut t) = self.tasks.take() {
            t.abort_all();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_docker_restart_gives_restarting_pages_then_recovers() {
    common::require_docker();
    let t = TestInstance::new();
    let sock = t.dir.path().join("docker.sock");
    let mut chaos = ChaosSocket::start(sock.clone());
    let host = format!("unix://{}", sock.display());
    let gw = Gateway::start(
        &t,
        &[("NBGATE_AUTH", "ephemeral"), ("NBGATE_POOL_SIZE", "1"), ("DOCKER_HOST", &host)],
    );
    gw.wait_warm(1).await;
    let (cookie, slot) = gw.visit(None).await;

    chaos.down();
    // The gateway notices, answers 503 "restarting" pages, and never panics.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = gw.http.get(format!("{}/", gw.url)).send().await.unwrap();
        if r.status() == 503 {
            assert!(r.text().await.unwrap().contains("restarting"));
            break;
        }
        assert!(Instant::now() < deadline, "no restarting page while Docker was away");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(gw.health().await["status"], "degraded");
    // A running notebook is not the engine: it keeps serving its owner.
    let r = gw.http.get(gw.user_url(&slot, "api/status")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);

    chaos.up();
    // The event stream reconnects, the pool is rebuilt, visits work again.
    let deadline = Instant::now() + Duration::from_secs(60);
    while gw.health().await["status"] != "ok" || gw.health().await["pool"]["warm"] != 1 {
        assert!(Instant::now() < deadline, "never recovered: {}", gw.health().await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_, again) = gw.visit(Some(&cookie)).await;
    assert_eq!(again, slot, "the visitor keeps the container across the outage");
    let (_, other) = gw.visit(None).await;
    assert_ne!(other, slot);
    chaos.down();
    drop(gw);
}

/// SECURITY.md: "clients hammering culled slots for 30 min: file descriptors and
/// memory flat". Open tabs keep polling and their kernels keep reconnecting
/// after the server is gone. `make soak` runs this for 30 minutes
/// (`NBGATE_SOAK_SECONDS=1800`); `make test` for a short while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_hammering_a_culled_slot_keeps_memory_and_descriptors_flat() {
    common::require_docker();
    let seconds: u64 = std::env::var("NBGATE_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &[("NBGATE_AUTH", "ephemeral"), ("NBGATE_POOL_SIZE", "1")]);
    gw.wait_warm(1).await;
    let (cookie, slot) = gw.visit(None).await;
    let out = common::nbgate_cli(&t, &["pool", "drain", "--force"]);
    assert!(out.status.success());
    let pid = gw.pid();
    let fds = move || std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let stop = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = JoinSet::new();
    for client in 0..8 {
        let (http, url, cookie) = (gw.http.clone(), gw.user_url(&slot, "api/kernels"), cookie.clone());
        let origin = gw.url.clone();
        tasks.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop {
                let req = if client < 6 {
                    // A tab polling, on a kept-alive connection.
                    http.get(&url).header("cookie", &cookie)
                } else {
                    // A kernel reconnecting: an upgrade on a new connection each time.
                    http.get(format!("{url}/k/channels"))
                        .header("cookie", &cookie)
                        .header("origin", &origin)
                        .header("connection", "Upgrade, close")
                        .header("upgrade", "websocket")
                        .header("sec-websocket-version", "13")
                        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
                };
                let r = req.send().await.unwrap();
                assert!(r.status() == 404 || r.status() == 403, "{}", r.status());
                let _ = r.bytes().await;
                n += 1;
            }
            n
        });
    }
    // Samples after a warm-up (allocator arenas, connection pools).
    tokio::time::sleep(Duration::from_secs(seconds.min(30) / 3)).await;
    let mut samples = Vec::new();
    while Instant::now() < stop {
        let (rss, _) = common::rss_kib(pid);
        samples.push((rss, fds()));
        tokio::time::sleep(Duration::from_secs((seconds / 20).clamp(1, 60))).await;
    }
    let mut requests = 0;
    while let Some(r) = tasks.join_next().await {
        requests += r.unwrap();
    }
    let (rss_end, _) = common::rss_kib(pid);
    eprintln!("soak: {requests} requests in {seconds} s; (RSS KiB, fds) samples: {samples:?}; RSS at the end {rss_end} KiB");
    let (rss_first, fds_first) = samples[0];
    let rss_max = samples.iter().map(|s| s.0).max().unwrap().max(rss_end);
    let fds_max = samples.iter().map(|s| s.1).max().unwrap();
    assert!(fds_max <= fds_first + 8, "descriptors grew: {samples:?}");
    assert!(rss_max < rss_first + 8 * 1024, "memory grew over {requests} requests: {samples:?}");
}
