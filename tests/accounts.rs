//! Accounts and persistent volumes against the real engine and JupyterLab.

mod common;

use std::time::Duration;

use common::{Browser, Gateway, TestInstance};

const KEY: &str = "slide-key-42";
const PW: &str = "correct horse battery";

fn env() -> Vec<(&'static str, &'static str)> {
    vec![("NBGATE_REGISTRATION_KEY", KEY), ("NBGATE_POOL_SIZE", "1")]
}

#[tokio::test]
async fn files_in_work_survive_logout_and_login() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &env());
    gw.wait_warm(1).await;
    let b = Browser::new(&gw);
    let slot1 = b.slot_after(b.register("Alice", PW, KEY).await).await;
    b.put_file(&slot1, "work/notes.txt", "kept between visits").await;
    assert_eq!(b.get_file(&slot1, "work/notes.txt").await.as_deref(), Some("kept between visits"));

    let out = b.logout().await;
    assert_eq!(out.status(), 302);
    // The old address is dead at once; the container is recycled behind the
    // answer (the person leaving does not wait for Jupyter to save and stop).
    let gone = b.http.get(b.user_url(&slot1, "api/status")).send().await.unwrap();
    assert!(gone.status() == 403 || gone.status() == 404, "{}", gone.status());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while common::containers(&t).len() != 1 {
        assert!(std::time::Instant::now() < deadline, "the container was not recycled after logout");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    gw.wait_warm(1).await;
    let slot2 = b.slot_after(b.login("alice", PW).await).await;
    assert_ne!(slot1, slot2, "a container is used once");
    assert_eq!(b.get_file(&slot2, "work/notes.txt").await.as_deref(), Some("kept between visits"));
    assert_eq!(common::volumes(&t).len(), 1);
    // A second browser of the same user shares the slot.
    let other = Browser::new(&gw);
    let slot3 = other.slot_after(other.login("ALICE", PW).await).await;
    assert_eq!(slot3, slot2);
}

#[tokio::test]
async fn bad_attempts_are_clear_4xx_and_create_nothing() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &env());
    gw.wait_warm(1).await;
    let b = Browser::new(&gw);
    let _ = b.slot_after(b.register("bob", PW, KEY).await).await;
    gw.wait_warm(1).await;
    let before = (common::volumes(&t).len(), common::containers(&t).len());

    let long_pw = "x".repeat(73);
    let cases: Vec<(&str, String, String, &str, u16, &str)> = vec![
        ("carol", PW.into(), PW.into(), "wrong-key", 403, "registration key is not valid"),
        ("carol", PW.into(), "something else".into(), KEY, 400, "do not match"),
        ("carol", "short".into(), "short".into(), KEY, 400, "at least 8"),
        ("carol", long_pw.clone(), long_pw, KEY, 400, "at most 72 bytes"),
        ("Bob", PW.into(), PW.into(), KEY, 409, "taken"),
        ("ｂob", PW.into(), PW.into(), KEY, 409, "taken"),
        ("bob\u{200b}", PW.into(), PW.into(), KEY, 400, "starts with a letter"),
        ("bob ", PW.into(), PW.into(), KEY, 400, "starts with a letter"),
        ("../x", PW.into(), PW.into(), KEY, 400, "starts with a letter"),
        ("a/b", PW.into(), PW.into(), KEY, 400, "starts with a letter"),
        ("abcdefghijklmnopqrstuvwxyz0123456", PW.into(), PW.into(), KEY, 400, "at most 32"),
        ("", PW.into(), PW.into(), KEY, 400, "Choose a username"),
    ];
    for (user, pw, confirm, key, status, message) in cases {
        let resp = b
            .submit(
                "/hub/register",
                "/hub/register",
                &[
                    ("username", user),
                    ("password", &pw),
                    ("password_confirm", &confirm),
                    ("registration_key", key),
                ],
            )
            .await;
        assert_eq!(resp.status().as_u16(), status, "{user:?}");
        let html = resp.text().await.unwrap();
        assert!(html.contains(message), "{user:?}: no {message:?} in the page");
        assert!(html.contains("<form"), "{user:?}: the form is shown again");
    }
    // A megabyte username and a 10 MB body are refused at once.
    let huge = "a".repeat(1 << 20);
    let resp = b.submit("/hub/register", "/hub/register", &[("username", &huge), ("password", PW)]).await;
    assert_eq!(resp.status(), 413);
    let body = vec![b'a'; 10 << 20];
    let started = std::time::Instant::now();
    let resp = b
        .http
        .post(format!("{}/hub/login", gw.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await;
    // Either the 413 arrives, or the gateway answered it and closed the
    // connection before the client finished writing: refused either way.
    match resp {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "refused fast");

    // Wrong password and unknown user: same status, same page.
    let wrong = b.login("bob", "not the password").await;
    let wrong_status = wrong.status();
    let wrong_body = wrong.text().await.unwrap().replace("bob", "NAME");
    let unknown = b.login("nobody", "not the password").await;
    assert_eq!(wrong_status, 401);
    assert_eq!(unknown.status(), wrong_status);
    assert_eq!(unknown.text().await.unwrap().replace("nobody", "NAME"), wrong_body);

    let db = common::db(&t).await;
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&db).await.unwrap();
    assert_eq!(users, 1);
    assert_eq!((common::volumes(&t).len(), common::containers(&t).len()), before, "nothing was created");
}

#[tokio::test]
async fn attack_07_name_collisions_concurrent_registrations_make_one_account() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &env());
    gw.wait_warm(1).await;
    let names = ["dave", "Dave", "DAVE", "ｄａｖｅ", "dAve"];
    let mut tasks = Vec::new();
    for i in 0..50 {
        let b = Browser::new(&gw);
        let name = names[i % names.len()];
        tasks.push(tokio::spawn(async move { b.register(name, PW, KEY).await.status().as_u16() }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 302).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 302 || *s == 409), "{statuses:?}");
    let db = common::db(&t).await;
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&db).await.unwrap();
    assert_eq!(users, 1);
    assert_eq!(common::volumes(&t).len(), 1);
}

#[tokio::test]
async fn volume_name_follows_the_scheme() {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &env());
    gw.wait_warm(1).await;
    let b = Browser::new(&gw);
    b.slot_after(b.register("Erin", PW, KEY).await).await;
    let vols = common::volumes(&t);
    assert_eq!(vols.len(), 1);
    let sha = hex::encode(Sha256::digest(b"erin"));
    let prefix = format!("{}-{sha}-", t.name);
    let suffix =
        vols[0].strip_prefix(&prefix).unwrap_or_else(|| panic!("{} does not start with {prefix}", vols[0]));
    assert!(vols[0].chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)));
    let hash =
        String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(suffix).unwrap()).unwrap();
    assert!(bcrypt::verify(PW, &hash).unwrap(), "the suffix is a bcrypt hash of the password");
}

#[tokio::test]
async fn password_change_moves_every_file() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &env());
    gw.wait_warm(1).await;
    let b = Browser::new(&gw);
    let slot = b.slot_after(b.register("fay", PW, KEY).await).await;
    for i in 0..5 {
        b.put_file(&slot, &format!("work/file{i}.txt"), &format!("content {i}")).await;
    }
    let old_volume = common::volumes(&t)[0].clone();
    let resp = b
        .submit(
            "/hub/home",
            "/hub/password",
            &[
                ("old_password", PW),
                ("new_password", "new password 2"),
                ("new_password_confirm", "new password 2"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let vols = common::volumes(&t);
    assert_eq!(vols.len(), 1, "old volume removed after the verified copy");
    assert_ne!(vols[0], old_volume);
    b.logout().await;
    gw.wait_warm(1).await;
    assert_eq!(b.login("fay", PW).await.status(), 401, "the old password no longer works");
    let slot = b.slot_after(b.login("fay", "new password 2").await).await;
    for i in 0..5 {
        assert_eq!(b.get_file(&slot, &format!("work/file{i}.txt")).await, Some(format!("content {i}")));
    }
}

#[tokio::test]
async fn a_kill_during_a_password_change_loses_nothing() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &env());
    gw.wait_warm(1).await;
    let b = Browser::new(&gw);
    let slot = b.slot_after(b.register("gus", PW, KEY).await).await;
    b.put_file(&slot, "work/precious.txt", "do not lose me").await;
    // Enough data that the copy takes a moment, written straight into the volume.
    let vol = common::volumes(&t)[0].clone();
    let out = std::process::Command::new("docker")
        .args(["volume", "inspect", "-f", "{{.Mountpoint}}", &vol])
        .output()
        .unwrap();
    let mountpoint = String::from_utf8_lossy(&out.stdout).trim().to_string();
    for i in 0..40 {
        std::fs::write(format!("{mountpoint}/blob{i}.bin"), vec![i as u8; 4 << 20]).unwrap();
    }
    let xsrf = b.xsrf("/hub/home").await;
    let http = b.http.clone();
    let url = format!("{}/hub/password", gw.url);
    let origin = gw.url.clone();
    let change = tokio::spawn(async move {
        let form = [
            ("_xsrf", xsrf.as_str()),
            ("old_password", PW),
            ("new_password", "another secret"),
            ("new_password_confirm", "another secret"),
        ];
        let _ = http.post(url).header("origin", origin).form(&form).send().await;
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(gw.pid()), nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = change.await;
    drop(gw);

    let gw = Gateway::start(&t, &env());
    gw.wait_warm(1).await;
    let b = Browser::new(&gw);
    let resp = b.login("gus", PW).await;
    let resp = if resp.status() == 302 { resp } else { b.login("gus", "another secret").await };
    let slot = b.slot_after(resp).await;
    assert_eq!(b.get_file(&slot, "work/precious.txt").await.as_deref(), Some("do not lose me"));
    let vols = common::volumes(&t);
    assert_eq!(vols.len(), 1, "the leftover volume was cleaned up: {vols:?}");
    let out = std::process::Command::new("docker")
        .args(["volume", "inspect", "-f", "{{.Mountpoint}}", &vols[0]])
        .output()
        .unwrap();
    let mountpoint = String::from_utf8_lossy(&out.stdout).trim().to_string();
    for i in 0..40 {
        let data = std::fs::read(format!("{mountpoint}/blob{i}.bin")).unwrap();
        assert!(data.len() == 4 << 20 && data.iter().all(|x| *x == i as u8), "blob{i} damaged");
    }
}

#[tokio::test]
async fn rebuild_index_after_losing_the_database() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &env());
    gw.wait_warm(1).await;
    let b = Browser::new(&gw);
    let slot = b.slot_after(b.register("hana", PW, KEY).await).await;
    b.put_file(&slot, "work/thesis.txt", "chapter one").await;
    b.logout().await;
    common::wait_unbound(&t).await;
    drop(gw);
    for f in ["nbgate.db", "nbgate.db-wal", "nbgate.db-shm"] {
        let _ = std::fs::remove_file(t.state_dir().join(f));
    }
    let out = common::nbgate_cli(&t, &["volume", "rebuild-index"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rebuilt 1 user"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let gw = Gateway::start(&t, &env());
    gw.wait_warm(1).await;
    let b = Browser::new(&gw);
    assert_eq!(b.login("hana", "wrong password").await.status(), 401);
    let slot = b.slot_after(b.login("hana", PW).await).await;
    assert_eq!(b.get_file(&slot, "work/thesis.txt").await.as_deref(), Some("chapter one"));
}

#[tokio::test]
async fn throttling_holds_across_a_restart() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &env());
    let b = Browser::new(&gw);
    // Five free tries, then each failure must wait, doubling.
    let mut statuses = Vec::new();
    let mut wait = 0;
    for _ in 0..12 {
        let resp = b.login("ivan", "guess guess").await;
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            let html = resp.text().await.unwrap();
            let n = html
                .split("Try again in ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok());
            wait = n.expect("the page says how long");
            break;
        }
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // Wait the block out and fail once more: the next block is longer.
    tokio::time::sleep(Duration::from_secs(wait + 1)).await;
    assert_eq!(b.login("ivan", "guess guess").await.status(), 401);
    drop(gw);
    let gw = Gateway::start(&t, &env());
    let b = Browser::new(&gw);
    let resp = b.login("ivan", "guess guess").await;
    assert_eq!(resp.status(), 429);
    assert!(resp.text().await.unwrap().contains("Try again in"));
}

#[tokio::test]
async fn keys_expiry_uses_and_domains_each_have_their_message() {
    common::require_docker();
    let t = TestInstance::new();
    // Only DB keys: the config key is absent.
    let add = |args: &[&str]| {
        let mut all = vec!["key", "add"];
        all.extend_from_slice(args);
        let out = common::nbgate_cli(&t, &all);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let gw0 = Gateway::start(&t, &[("NBGATE_POOL_SIZE", "0")]);
    let b0 = Browser::new(&gw0);
    let closed = b0.get("/hub/register").await.text().await.unwrap();
    assert!(closed.contains("Registration is closed"), "no key at all: registration closed");
    drop(gw0);
    add(&["--name", "once", "--key", "one-use-key", "--max-uses", "1"]);
    add(&["--name", "old", "--key", "old-key", "--valid-until", "2020-01-01"]);
    add(&["--name", "edu", "--key", "edu-key", "--email-domains", "*.edu"]);
    add(&["--name", "short", "--key", "short-key", "--account-days", "1"]);
    let gw = Gateway::start(&t, &[("NBGATE_POOL_SIZE", "1")]);
    gw.wait_warm(1).await;

    let reg = |b: &Browser, user: &'static str, key: &'static str, email: &'static str| {
        let b = Browser { http: b.http.clone(), jar: b.jar.clone(), base: b.base.clone() };
        async move {
            let r = b
                .submit(
                    "/hub/register",
                    "/hub/register",
                    &[
                        ("username", user),
                        ("password", PW),
                        ("password_confirm", PW),
                        ("registration_key", key),
                        ("email", email),
                    ],
                )
                .await;
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let b = Browser::new(&gw);
    assert!(b.get("/hub/register").await.text().await.unwrap().contains(r#"name="email""#), "e-mail asked");
    let (s, _) = reg(&b, "jo", "one-use-key", "").await;
    assert_eq!(s, 302);
    let b = Browser::new(&gw);
    let (s, html) = reg(&b, "kim", "one-use-key", "").await;
    assert_eq!(s, 403);
    assert!(html.contains("used as many times as allowed"), "{html}");
    let (s, html) = reg(&b, "kim", "old-key", "").await;
    assert_eq!(s, 403);
    assert!(html.contains("has expired"));
    let (s, html) = reg(&b, "kim", "edu-key", "").await;
    assert_eq!(s, 400);
    assert!(html.contains("needs your e-mail"));
    let (s, html) = reg(&b, "kim", "edu-key", "kim@gmail.com").await;
    assert_eq!(s, 403);
    assert!(html.contains("does not accept e-mail addresses from that domain"));
    let (s, _) = reg(&b, "kim", "edu-key", "kim@cs.uni.edu").await;
    assert_eq!(s, 302);
    let b = Browser::new(&gw);
    let (s, _) = reg(&b, "lee", "short-key", "").await;
    assert_eq!(s, 302);
    // Lee's account lifetime runs out.
    let db = common::db_rw(&t).await;
    sqlx::query("UPDATE users SET expires_at = 1 WHERE username = 'lee'").execute(&db).await.unwrap();
    b.logout().await;
    let resp = b.login("lee", PW).await;
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("Your account expired"));
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&db).await.unwrap();
    assert_eq!(users, 3, "refused registrations created nothing");
}

#[tokio::test]
async fn user_redirect_logs_in_first_then_lands_in_the_server() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &env());
    gw.wait_warm(1).await;
    let b = Browser::new(&gw);
    let r = b.get("/hub/user-redirect/lab/tree/work/intro.ipynb?x=1").await;
    assert_eq!(r.status(), 302);
    let login = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        login.starts_with("/hub/login?next=%2Fhub%2Fuser-redirect%2Flab")
            || login.starts_with("/hub/login?next=/hub/user-redirect/lab"),
        "{login}"
    );
    b.slot_after(b.register("mia", PW, KEY).await).await;
    let r = b.get("/hub/user-redirect/lab/tree/work/intro.ipynb?x=1").await;
    let to = r.headers()["location"].to_str().unwrap().to_string();
    assert!(to.starts_with("/user/") && to.ends_with("/lab/tree/work/intro.ipynb?x=1"), "{to}");
}

#[tokio::test]
async fn cold_path_starts_a_container_with_the_volume() {
    common::require_docker();
    let t = TestInstance::new();
    let mut e = env();
    e.push(("NBGATE_HOT_BIND", "false"));
    let gw = Gateway::start(&t, &e);
    let b = Browser::new(&gw);
    let r = b.register("nico", PW, KEY).await;
    assert_eq!(r.status(), 302);
    assert!(
        r.headers()["location"].to_str().unwrap().starts_with("/hub/spawn-pending"),
        "progress page first"
    );
    let pending = b.get("/hub/spawn-pending").await;
    if pending.status() == 202 {
        assert!(pending.text().await.unwrap().contains("Starting your server"));
    }
    let slot = b.slot_after(r).await;
    b.put_file(&slot, "work/cold.txt", "mounted by Docker").await;
    assert_eq!(gw.health().await["pool"]["warm"], 0, "no warm containers without hot-binding");
    b.logout().await;
    let slot2 = b.slot_after(b.login("nico", PW).await).await;
    assert_ne!(slot, slot2);
    assert_eq!(b.get_file(&slot2, "work/cold.txt").await.as_deref(), Some("mounted by Docker"));
}
