//! SECURITY.md's faults table, "disk full (volume, Docker root, DB)": clear
//! 503s, no crash, recovery without a restart, the database intact.
//!
//! Each disk is made small and filled for real, except Docker's root: filling
//! the host's real /var/lib/docker would hurt everything else on the machine,
//! so a relay in front of the real engine answers creates the way dockerd does
//! when its disk is full, and passes everything else through.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Browser, Gateway, TestInstance};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};

/// A tmpfs of `size` mounted at `dir`, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "nbgate-test-small", &dir.to_string_lossy()])
            .output()
            .unwrap();
        assert!(out.status.success(), "mount tmpfs: {}", String::from_utf8_lossy(&out.stderr));
        Self(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

/// Fill the filesystem holding `dir` until it refuses another byte.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = f.write_all(&block).and_then(|_| f.flush()) {
            assert_eq!(e.raw_os_error(), Some(28), "expected ENOSPC, got {e}");
            break;
        }
    }
    // The last partial block too.
    while f.write_all(&[0u8; 512]).is_ok() {}
    path
}

async fn integrity(t: &TestInstance) -> String {
    let db = common::db(t).await;
    let (r,): (String,) = sqlx::query_as("PRAGMA integrity_check").fetch_one(&db).await.unwrap();
    r
}

async fn user_count(t: &TestInstance) -> i64 {
    let db = common::db(t).await;
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users").fetch_one(&db).await.unwrap();
    n
}

#[tokio::test]
async fn fault_disk_full_database() {
    common::require_docker();
    let t = TestInstance::new();
    let _disk = SmallDisk::mount(&t.state_dir(), "16m");
    let gw = Gateway::start(
        &t,
        &[("NBGATE_REGISTRATION_KEY", "k"), ("NBGATE_POOL_SIZE", "1"), ("NBGATE_MAX_CONTAINERS", "3")],
    );
    gw.wait_warm(1).await;
    let alice = Browser::new(&gw);
    let slot = alice.slot_after(alice.register("alice", "password-a", "k").await).await;
    alice.put_file(&slot, "work/saved.txt", "saved before the disk filled").await;
    // The refill after alice's login writes too: let it finish first.
    gw.wait_warm(1).await;
    let volumes_before = common::volumes(&t).len();

    let filler = fill(&t.state_dir());
    // A login writes (a new session): it cannot, and says why, as a 503.
    let again = Browser::new(&gw);
    let r = again.login("alice", "password-a").await;
    assert_eq!(r.status(), 503, "a login on a full disk");
    assert_eq!(r.headers()["retry-after"], "10");
    assert!(r.text().await.unwrap().contains("out of disk space"));
    // A registration creates nothing: no account, and its new volume is removed.
    let bob = Browser::new(&gw);
    let r = bob.register("bob", "password-b", "k").await;
    assert_eq!(r.status(), 503, "a registration on a full disk");
    assert!(r.text().await.unwrap().contains("out of disk space"));
    assert_eq!(common::volumes(&t).len(), volumes_before, "no volume left behind");
    // What is running keeps running: alice's session and server are untouched.
    assert_eq!(
        alice.get_file(&slot, "work/saved.txt").await.as_deref(),
        Some("saved before the disk filled")
    );
    assert_eq!(alice.get("/hub/home").await.status(), 200);
    assert_eq!(gw.health().await["status"], "ok", "the gateway itself is healthy");

    // Space comes back: everything works again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let again_slot = again.slot_after(again.login("alice", "password-a").await).await;
    assert_eq!(again_slot, slot, "the same server");
    let bob_slot = bob.slot_after(bob.register("bob", "password-b", "k").await).await;
    assert_ne!(bob_slot, slot);
    assert_eq!(user_count(&t).await, 2, "alice and bob, nothing half-made");
    assert_eq!(
        alice.get_file(&slot, "work/saved.txt").await.as_deref(),
        Some("saved before the disk filled")
    );
    drop(gw);
    assert_eq!(integrity(&t).await, "ok");
}

/// In front of the real engine: passes every request through, except that
/// while `full` is set, creates answer as dockerd does on a full disk.
struct FullDockerRelay {
    full: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FullDockerRelay {
    fn start(path: &Path) -> Self {
        let full = Arc::new(AtomicBool::new(false));
        let listener = UnixListener::bind(path).unwrap();
        let flag = full.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let flag = flag.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| relay(req, flag.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(client), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self { full, task }
    }
}

impl Drop for FullDockerRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type RelayBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

async fn relay(
    req: hyper::Request<Incoming>,
    full: Arc<AtomicBool>,
) -> Result<hyper::Response<RelayBody>, String> {
    let path = req.uri().path().to_string();
    if full.load(Ordering::SeqCst)
        && req.method() == hyper::Method::POST
        && (path.ends_with("/containers/create") || path.ends_with("/volumes/create"))
    {
        let body = r#"{"message":"mkdir /var/lib/docker/overlay2/nbgate-test: no space left on device"}"#;
        return Ok(hyper::Response::builder()
            .status(500)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed())
            .unwrap());
    }
    let docker = UnixStream::connect("/var/run/docker.sock").await.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(docker)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn.with_upgrades());
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.map(BodyExt::boxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_disk_full_docker_root() {
    common::require_docker();
    let t = TestInstance::new();
    let sock = t.dir.path().join("docker.sock");
    let relay = FullDockerRelay::start(&sock);
    let host = format!("unix://{}", sock.display());
    let gw = Gateway::start(
        &t,
        &[
            ("NBGATE_REGISTRATION_KEY", "k"),
            ("NBGATE_POOL_SIZE", "1"),
            ("NBGATE_MAX_CONTAINERS", "4"),
            ("DOCKER_HOST", &host),
        ],
    );
    gw.wait_warm(1).await;
    let alice = Browser::new(&gw);
    let slot = alice.slot_after(alice.register("alice", "password-a", "k").await).await;
    alice.put_file(&slot, "work/saved.txt", "kept").await;
    gw.wait_warm(1).await;

    relay.full.store(true, Ordering::SeqCst);
    // The warm container is replaced (as after `make images`) and its
    // replacement cannot be created: every new server is refused with a page
    // that says why, and health tells the organizer.
    assert!(common::nbgate_cli(&t, &["pool", "drain"]).status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let h = gw.health().await;
        if h["status"] == "degraded" {
            assert!(h["pool"]["start_error"].as_str().unwrap().contains("no space left on device"), "{h}");
            break;
        }
        assert!(Instant::now() < deadline, "health never said so: {h}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let bob = Browser::new(&gw);
    let started = Instant::now();
    let r = bob.register("bob", "password-b", "k").await;
    assert_eq!(r.status(), 503, "a registration while Docker's disk is full");
    assert!(r.text().await.unwrap().contains("out of disk space"));
    assert!(started.elapsed() < Duration::from_secs(20), "answered at once, not after a wait");
    assert_eq!(user_count(&t).await, 1, "bob's account was not made");
    assert_eq!(common::volumes(&t).len(), 1);
    // Alice keeps working.
    assert_eq!(alice.get_file(&slot, "work/saved.txt").await.as_deref(), Some("kept"));

    relay.full.store(false, Ordering::SeqCst);
    // Space is back: the pool refills by itself and bob gets in.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let h = gw.health().await;
        if h["status"] == "ok" && h["pool"]["warm"] == 1 {
            assert!(h["pool"].get("start_error").is_none(), "{h}");
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {h}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let bob_slot = bob.slot_after(bob.register("bob", "password-b", "k").await).await;
    assert_ne!(bob_slot, slot);
    assert_eq!(user_count(&t).await, 2);
    drop(gw);
    drop(relay);
}

#[tokio::test]
async fn fault_disk_full_volume() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &[("NBGATE_REGISTRATION_KEY", "k"), ("NBGATE_POOL_SIZE", "1")]);
    gw.wait_warm(1).await;
    let alice = Browser::new(&gw);
    let slot = alice.slot_after(alice.register("alice", "password-a", "k").await).await;
    let saved = "x".repeat(100_000);
    alice.put_file(&slot, "work/saved.txt", &saved).await;
    assert_eq!(alice.logout().await.status(), 302);
    common::wait_unbound(&t).await;

    // Alice's volume becomes a small disk holding what she saved.
    let volume = common::volumes(&t).pop().unwrap();
    let out = Command::new("docker")
        .args(["volume", "inspect", "-f", "{{.Mountpoint}}", &volume])
        .output()
        .unwrap();
    let data = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let copy = t.dir.path().join("copy");
    assert!(Command::new("cp").arg("-a").arg(&data).arg(&copy).status().unwrap().success());
    let _disk = SmallDisk::mount(&data, "1m");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", copy.display()))
        .arg(&data)
        .status()
        .unwrap()
        .success());

    let slot = alice.slot_after(alice.login("alice", "password-a").await).await;
    assert_eq!(alice.get_file(&slot, "work/saved.txt").await.as_deref(), Some(saved.as_str()));
    // Saving more than fits fails with Jupyter's own message (shown by JupyterLab
    // as a save error), and the file saved before is untouched.
    let big = "y".repeat(2_000_000);
    let r = alice.save_file(&slot, "work/saved.txt", &big).await;
    assert!(r.status().is_server_error(), "{}", r.status());
    assert!(r.text().await.unwrap().contains("No space left on device"));
    assert_eq!(
        alice.get_file(&slot, "work/saved.txt").await.as_deref(),
        Some(saved.as_str()),
        "not truncated"
    );
    // The gateway is unaffected, and a save that fits works at once.
    assert_eq!(gw.health().await["status"], "ok");
    assert_eq!(alice.get("/hub/home").await.status(), 200);
    alice.put_file(&slot, "work/small.txt", "fits").await;
    assert_eq!(alice.get_file(&slot, "work/small.txt").await.as_deref(), Some("fits"));
    drop(gw);
}
