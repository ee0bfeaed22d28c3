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

#[tokio::test]
async fn fault_hammering_a_culled_slot_keeps_memory_and_descriptors_flat() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &[("NBGATE_AUTH", "ephemeral"), ("NBGATE_POOL_SIZE", "1")]);
    gw.wait_warm(1).await;
    let (cookie, slot) = gw.visit(None).await;
    let out = common::nbgate_cli(&t, &["pool", "drain", "--force"]);
    assert!(out.status.success());
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", gw.pid())).unwrap().count();
    // Warm up allocators, then measure.
    for _ in 0..200 {
        let _ = gw.http.get(gw.user_url(&slot, "api/kernels")).header("cookie", &cookie).send().await;
    }
    let (rss_before, _) = common::rss_kib(gw.pid());
    let fds_before = fds();
    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let (http, url, cookie) = (gw.http.clone(), gw.user_url(&slot, "api/kernels"), cookie.clone());
        tasks.spawn(async move {
            for _ in 0..500 {
                let r = http.get(&url).header("cookie", &cookie).send().await.unwrap();
                assert!(r.status() == 404 || r.status() == 403, "{}", r.status());
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let (rss_after, _) = common::rss_kib(gw.pid());
    assert!(fds() <= fds_before + 8, "descriptors grew: {fds_before} -> {}", fds());
    assert!(
        rss_after < rss_before + 8 * 1024,
        "memory grew: {rss_before} KiB -> {rss_after} KiB after 4000 requests"
    );
}
