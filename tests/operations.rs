//! Operating nbgate: backups proven to restore, admin tools, metrics.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::{Browser, Gateway, TestInstance};
use sha2::{Digest, Sha256};

const KEY: &str = "ops-key";
const PW: &str = "operator pass";

fn env() -> Vec<(&'static str, &'static str)> {
    vec![("NBGATE_REGISTRATION_KEY", KEY), ("NBGATE_POOL_SIZE", "1")]
}

fn mountpoint(volume: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["volume", "inspect", "-f", "{{.Mountpoint}}", volume])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Everything that must survive a round trip: bytes, modes, owners, links.
fn fingerprint(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let what = if meta.file_type().is_symlink() {
            format!("link -> {}", std::fs::read_link(&p).unwrap().display())
        } else if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            "dir".into()
        } else {
            hex::encode(Sha256::digest(std::fs::read(&p).unwrap()))
        };
        out.push(format!(
            "{rel} {what} {:o} {}:{} {}",
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid(),
            if meta.is_dir() { 0 } else { meta.mtime() }
        ));
    }
    out.sort();
    out
}

fn cli_ok(t: &TestInstance, args: &[&str]) -> String {
    let out = common::nbgate_cli(t, args);
    assert!(
        out.status.success(),
        "nbgate {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn backup_remove_restore_round_trips_byte_for_byte() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &env());
    gw.wait_warm(1).await;
    let b = Browser::new(&gw);
    let slot = b.slot_after(b.register("rita", PW, KEY).await).await;
    b.put_file(&slot, "work/analysis.py", "print('hello')\n").await;
    let volume = common::volumes(&t)[0].clone();
    let root = mountpoint(&volume);
    std::fs::create_dir_all(format!("{root}/data/raw")).unwrap();
    std::fs::write(
        format!("{root}/data/raw/big.bin"),
        (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(format!("{root}/secret.txt"), "mode 600").unwrap();
    std::fs::set_permissions(format!("{root}/secret.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("data/raw/big.bin", format!("{root}/latest")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", format!("{root}/outside-link")).unwrap();
    std::os::unix::fs::lchown(format!("{root}/data"), Some(1000), Some(100)).unwrap();
    let before = fingerprint(Path::new(&root));

    let dest = t.dir.path().join("backup");
    let out = cli_ok(&t, &["volume", "backup", "--dest", dest.to_str().unwrap()]);
    assert!(out.contains("backed up 1 volume"), "{out}");
    assert!(cli_ok(&t, &["volume", "verify", "--src", dest.to_str().unwrap()]).contains("ok    "));

    // Lose the volume entirely (once logout's recycle has unbound it).
    b.logout().await;
    common::wait_unbound(&t).await;
    let rm = std::process::Command::new("docker").args(["volume", "rm", &volume]).output().unwrap();
    assert!(rm.status.success(), "{}", String::from_utf8_lossy(&rm.stderr));
    let out = cli_ok(&t, &["volume", "restore", "--src", dest.to_str().unwrap(), "--user", "rita"]);
    assert!(out.contains("restored 1 volume"), "{out}");
    assert_eq!(fingerprint(Path::new(&mountpoint(&volume))), before, "restored tree differs");
    let link = std::fs::read_link(format!("{}/outside-link", mountpoint(&volume))).unwrap();
    assert_eq!(link, Path::new("/etc/passwd"), "symlinks stay links");
    gw.wait_warm(1).await;
    let slot = b.slot_after(b.login("rita", PW).await).await;
    assert_eq!(b.get_file(&slot, "work/analysis.py").await.as_deref(), Some("print('hello')\n"));

    // A flipped byte is caught.
    let archive = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .unwrap();
    let mut bytes = std::fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&archive, bytes).unwrap();
    let out = common::nbgate_cli(&t, &["volume", "verify", "--src", dest.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FAIL: "),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // ... and a corrupt backup is never restored over live data.
    let out = common::nbgate_cli(&t, &["volume", "restore", "--src", dest.to_str().unwrap()]);
    assert!(!out.status.success());
    assert_eq!(b.get_file(&slot, "work/analysis.py").await.as_deref(), Some("print('hello')\n"));
}

#[tokio::test]
async fn a_backup_while_a_kernel_writes_is_consistent() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &env());
    gw.wait_warm(1).await;
    let b = Browser::new(&gw);
    let slot = b.slot_after(b.register("sam", PW, KEY).await).await;
    let kernel = gw.start_kernel(&b.cookie(), &slot).await;
    let code = r#"
import threading, os
def writer():
    n = 0
    with open('/home/jovyan/work/log.txt', 'a') as f:
        while n < 2_000_000:
            f.write(f'line {n:09d} ' + 'x' * 80 + '\n')
            n += 1
            if n % 100 == 0:
                f.flush()
threading.Thread(target=writer, daemon=True).start()
print('writing')
"#;
    assert_eq!(gw.execute(&b.cookie(), &slot, &kernel, code).await.trim(), "writing");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let dest = t.dir.path().join("live-backup");
    let out = cli_ok(&t, &["volume", "backup", "--dest", dest.to_str().unwrap(), "--user", "sam"]);
    assert!(out.contains("backed up 1 volume"), "{out}");
    // Restore the archive into a scratch directory with the library and check
    // the file is whole: complete, consecutive lines.
    let manifest = nbgate::volumes::backup::Manifest::load(&dest).unwrap();
    let entry = &manifest.volumes[0];
    nbgate::volumes::backup::verify_archive(&dest, entry).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let archive = nbgate::volumes::backup::archive_path(&dest, entry).unwrap();
    nbgate::volumes::backup::restore_archive(&archive, scratch.path(), &mut |_| {}).unwrap();
    let text = std::fs::read_to_string(scratch.path().join("log.txt")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 100, "the writer was running");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(*line, format!("line {i:09} {}", "x".repeat(80)), "line {i} torn or out of order");
    }
    let size = entry.record.entries.iter().find(|e| e.path == Path::new("log.txt")).unwrap().size;
    assert_eq!(size as usize, text.len(), "manifest and archive agree on the size");
}

/// Parse Prometheus text into name{labels} -> value, failing on any bad line.
fn parse_metrics(text: &str) -> std::collections::HashMap<String, f64> {
    let mut out = std::collections::HashMap::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") || line.is_empty() {
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(name.starts_with("nbgate_"), "{line}");
        out.insert(name.to_string(), value);
    }
    out
}

#[tokio::test]
async fn metrics_parse_and_move_as_things_happen() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &env());
    gw.wait_warm(1).await;
    let get = || async {
        parse_metrics(
            &gw.http.get(format!("{}/hub/metrics", gw.url)).send().await.unwrap().text().await.unwrap(),
        )
    };
    let before = get().await;
    assert_eq!(before["nbgate_pool_warm"], 1.0);
    assert_eq!(before["nbgate_registrations_total"], 0.0);
    let b = Browser::new(&gw);
    let slot = b.slot_after(b.register("tess", PW, KEY).await).await;
    b.put_file(&slot, "work/x.txt", "x").await;
    assert_eq!(b.login("tess", "wrong wrong").await.status(), 401);
    let kernel = gw.start_kernel(&b.cookie(), &slot).await;
    gw.execute(&b.cookie(), &slot, &kernel, "print(1)").await;
    b.logout().await;
    // Logout recycles behind its answer: the counter moves when that is done.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let after = loop {
        let m = get().await;
        if m.contains_key("nbgate_recycles_total{reason=\"logout\"}") {
            break m;
        }
        assert!(std::time::Instant::now() < deadline, "no logout recycle counted: {m:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(after["nbgate_registrations_total"], 1.0);
    assert_eq!(after["nbgate_login_failures_total"], 1.0);
    assert!(after["nbgate_proxied_requests_total"] >= 2.0);
    assert!(after["nbgate_proxied_response_bytes_total"] > 0.0);
    assert_eq!(after["nbgate_websockets_total"], 1.0);
    assert_eq!(after["nbgate_recycles_total{reason=\"logout\"}"], 1.0);
    assert!(after["nbgate_spawn_seconds_count"] >= 1.0);
    assert!(after["nbgate_login_seconds_count"] >= 1.0);
}

#[tokio::test]
async fn attack_05_admin_escalation_and_the_admin_page_and_api() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &[("NBGATE_REGISTRATION_KEY", KEY), ("NBGATE_POOL_SIZE", "2")]);
    gw.wait_warm(2).await;
    // "admin" as a username and admin=1 in the body grant nothing.
    let mallory = Browser::new(&gw);
    let r = mallory
        .submit(
            "/hub/register",
            "/hub/register",
            &[
                ("username", "Admin"),
                ("password", PW),
                ("password_confirm", PW),
                ("registration_key", KEY),
                ("admin", "1"),
                ("is_admin", "true"),
            ],
        )
        .await;
    mallory.slot_after(r).await;
    assert_eq!(mallory.get("/hub/admin").await.status(), 403);
    gw.wait_warm(1).await;
    let boss = Browser::new(&gw);
    let victim_slot = boss.slot_after(boss.register("boss", PW, KEY).await).await;
    let _ = victim_slot;
    cli_ok(&t, &["user", "make-admin", "boss"]);
    let page = boss.get("/hub/admin").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("admin") && html.contains("running"), "the admin sees users and servers");
    // Stop mallory's server from the page.
    let list = cli_ok(&t, &["user", "list"]);
    assert!(list.contains("admin ") || list.contains("admin"), "{list}");
    let db = common::db(&t).await;
    let mallory_id: i64 =
        sqlx::query_scalar("SELECT id FROM users WHERE username = 'admin'").fetch_one(&db).await.unwrap();
    let r = boss.submit("/hub/admin", "/hub/admin/stop", &[("user_id", &mallory_id.to_string())]).await;
    assert_eq!(r.status(), 200);
    let api = |tok: &str| {
        gw.http.get(format!("{}/hub/api/users", gw.url)).header("authorization", format!("token {tok}"))
    };
    let users: serde_json::Value = {
        let out = cli_ok(&t, &["token", "create", "ci"]);
        let token = out.split_whitespace().nth(2).unwrap().to_string();
        let users = api(&token).send().await.unwrap().json().await.unwrap();
        // Announcement through the API, then on the login page.
        let r = gw
            .http
            .put(format!("{}/hub/api/announcement", gw.url))
            .header("authorization", format!("token {token}"))
            .json(&serde_json::json!({"text": "Break until 15:00"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        assert!(Browser::new(&gw)
            .get("/hub/login")
            .await
            .text()
            .await
            .unwrap()
            .contains("Break until 15:00"));
        // Stop through the API.
        let r = gw
            .http
            .post(format!("{}/hub/api/users/boss/stop", gw.url))
            .header("authorization", format!("token {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        cli_ok(&t, &["token", "revoke", "ci"]);
        assert_eq!(api(&token).send().await.unwrap().status(), 403, "revoked tokens are refused");
        users
    };
    let admin_entry = users.as_array().unwrap().iter().find(|u| u["name"] == "admin").unwrap();
    assert_eq!(admin_entry["running"], false, "stopped by the admin");
    assert_eq!(admin_entry["admin"], false);
    assert_eq!(api("not-a-token").send().await.unwrap().status(), 403);
    assert_eq!(gw.http.get(format!("{}/hub/api/users", gw.url)).send().await.unwrap().status(), 403);
    assert_eq!(common::volumes(&t).len(), 2, "stopping never removes volumes");
}
