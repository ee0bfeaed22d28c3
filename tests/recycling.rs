//! Recycling and capacity against the real engine and JupyterLab, with short
//! timeouts.

mod common;

use std::time::{Duration, Instant};

use common::{Browser, Gateway, TestInstance};

const KEY: &str = "cull-key";
const PW: &str = "idle but safe";

async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn assigned(gw: &Gateway) -> u64 {
    gw.health().await["pool"]["assigned"].as_u64().unwrap()
}

#[tokio::test]
async fn an_idle_server_is_recycled_and_its_files_stay() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(
        &t,
        &[("NBGATE_REGISTRATION_KEY", KEY), ("NBGATE_POOL_SIZE", "1"), ("NBGATE_IDLE_TIMEOUT", "4s")],
    );
    gw.wait_warm(1).await;
    let b = Browser::new(&gw);
    let slot = b.slot_after(b.register("ida", PW, KEY).await).await;
    // The gateway counts a request as activity when it arrives, so the idle
    // clock starts no later than the moment the request is sent.
    let went_idle = Instant::now();
    b.put_file(&slot, "work/draft.txt", "still here").await;
    wait_until("the idle recycle", Duration::from_secs(30), || async { assigned(&gw).await == 0 }).await;
    let took = went_idle.elapsed();
    assert!(took >= Duration::from_secs(4), "recycled before the idle timeout: {took:?}");
    let gone = b.get(&format!("/user/{slot}/lab")).await;
    assert_eq!(gone.status(), 404);
    let page = gone.text().await.unwrap();
    assert!(page.contains("idle") && page.contains("files in ~/work are safe"), "{page}");
    let home = b.get("/hub/home").await.text().await.unwrap();
    assert!(home.contains("Your server stopped at"), "{home}");
    assert_eq!(common::volumes(&t).len(), 1, "the volume is never removed by recycling");
    let slot = b.slot_after(b.get("/hub/spawn").await).await;
    assert_eq!(b.get_file(&slot, "work/draft.txt").await.as_deref(), Some("still here"));
    eprintln!("idle deadline to container gone: {:?}", took.saturating_sub(Duration::from_secs(4)));
}

#[tokio::test]
async fn a_busy_kernel_is_not_recycled_but_a_polling_tab_is() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(
        &t,
        &[("NBGATE_AUTH", "ephemeral"), ("NBGATE_POOL_SIZE", "2"), ("NBGATE_IDLE_TIMEOUT", "8s")],
    );
    gw.wait_warm(2).await;
    // Visitor 1 starts a long computation and walks away (socket closed).
    let (busy_cookie, busy_slot) = gw.visit(None).await;
    let kernel = gw.start_kernel(&busy_cookie, &busy_slot).await;
    {
        let mut socket =
            gw.kernel_socket(&busy_slot, &kernel, Some(&busy_cookie), Some(gw.origin())).await.unwrap();
        socket.send_execute("import time\ntime.sleep(30)").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Visitor 2 leaves a tab open that only polls. Its last activity is the
    // visit itself, so the idle clock starts no later than the visit does.
    let started = Instant::now();
    let (poll_cookie, poll_slot) = gw.visit(None).await;
    let mut poll_status = 200;
    while started.elapsed() < Duration::from_secs(25) && poll_status == 200 {
        for path in ["api/kernels", "api/sessions", "api/contents?content=1", "api/status"] {
            let r = gw
                .http
                .get(gw.user_url(&poll_slot, path))
                .header("cookie", &poll_cookie)
                .send()
                .await
                .unwrap();
            poll_status = r.status().as_u16();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(poll_status, 404, "a tab that only polls is recycled");
    assert!(started.elapsed() >= Duration::from_secs(8), "recycled before the idle timeout");
    // By now the busy one has been silent for longer than the idle timeout, and still runs.
    let r = gw
        .http
        .get(gw.user_url(&busy_slot, "api/status"))
        .header("cookie", &busy_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a busy kernel keeps its server");
    // Once the computation ends, it goes idle and is recycled too.
    wait_until("the finished computation's recycle", Duration::from_secs(60), || async {
        gw.http
            .get(gw.user_url(&busy_slot, "api/status"))
            .header("cookie", &busy_cookie)
            .send()
            .await
            .unwrap()
            .status()
            == 404
    })
    .await;
    // The pool refills.
    gw.wait_warm(2).await;
}

#[tokio::test]
async fn at_the_cap_logins_queue_in_arrival_order() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(
        &t,
        &[("NBGATE_REGISTRATION_KEY", KEY), ("NBGATE_POOL_SIZE", "1"), ("NBGATE_MAX_CONTAINERS", "1")],
    );
    gw.wait_warm(1).await;
    let first = Browser::new(&gw);
    first.slot_after(first.register("una", PW, KEY).await).await;
    let waiting: Vec<Browser> = (0..3).map(|_| Browser::new(&gw)).collect();
    for (i, b) in waiting.iter().enumerate() {
        let r = b.register(&format!("wait{i}"), PW, KEY).await;
        assert_eq!(r.status(), 302);
        assert!(r.headers()["location"].to_str().unwrap().starts_with("/hub/spawn-pending"));
    }
    for (i, b) in waiting.iter().enumerate() {
        let page = b.get("/hub/spawn-pending").await;
        assert_eq!(page.status(), 200, "never a 5xx at the cap");
        let html = page.text().await.unwrap();
        let want = if i == 0 {
            "You are next in line".to_string()
        } else {
            format!("You are number {} in line", i + 1)
        };
        assert!(html.contains(&want), "{i}: {html}");
        assert!(html.contains(r#"http-equiv="refresh""#));
    }
    // The first user leaves; the first in line gets the server.
    first.logout().await;
    wait_until("the first in line to be admitted", Duration::from_secs(60), || async {
        let r = waiting[0].get("/hub/spawn-pending").await;
        for b in &waiting[1..] {
            let _ = b.get("/hub/spawn-pending").await; // keep their places
        }
        r.status() == 302 && r.headers()["location"].to_str().unwrap().starts_with("/user/")
    })
    .await;
    let html = waiting[1].get("/hub/spawn-pending").await.text().await.unwrap();
    assert!(html.contains("You are next in line"), "{}", html.split("<p>").nth(1).unwrap_or(""));
    let html = waiting[2].get("/hub/spawn-pending").await.text().await.unwrap();
    assert!(html.contains("You are number 2 in line"), "{}", html.split("<p>").nth(1).unwrap_or(""));
}

#[tokio::test]
async fn running_out_of_memory_is_explained_and_others_are_unaffected() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(
        &t,
        &[("NBGATE_AUTH", "ephemeral"), ("NBGATE_POOL_SIZE", "2"), ("NBGATE_MEMORY_LIMIT", "300m")],
    );
    gw.wait_warm(2).await;
    let (hog, hog_slot) = gw.visit(None).await;
    let (calm, calm_slot) = gw.visit(None).await;
    let calm_kernel = gw.start_kernel(&calm, &calm_slot).await;
    let hog_kernel = gw.start_kernel(&hog, &hog_slot).await;
    {
        let mut socket =
            gw.kernel_socket(&hog_slot, &hog_kernel, Some(&hog), Some(gw.origin())).await.unwrap();
        socket.send_execute("x = bytearray(1024 * 1024 * 1024)").await;
    }
    wait_until("the memory notice", Duration::from_secs(60), || async {
        let v: serde_json::Value = gw
            .http
            .get(format!("{}/hub/api/me/server", gw.url))
            .header("cookie", &hog)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        v["notice"].as_str().is_some_and(|n| n.contains("300m memory"))
            || !v["running"].as_bool().unwrap_or(true)
    })
    .await;
    // The neighbour still computes.
    assert_eq!(gw.execute(&calm, &calm_slot, &calm_kernel, "print(1 + 1)").await.trim(), "2");
    // And the hog can carry on: a fresh kernel (or server) works.
    let (hog2, slot2) = gw.visit(Some(&hog)).await;
    let k = gw.start_kernel(&hog2, &slot2).await;
    assert_eq!(gw.execute(&hog2, &slot2, &k, "print('back')").await.trim(), "back");
}

#[tokio::test]
async fn drain_replaces_every_warm_container() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(&t, &[("NBGATE_AUTH", "ephemeral"), ("NBGATE_POOL_SIZE", "2")]);
    gw.wait_warm(2).await;
    let (cookie, slot) = gw.visit(None).await;
    gw.wait_warm(2).await;
    let before = common::containers(&t);
    let out = common::nbgate_cli(&t, &["pool", "drain"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("removed 2 warm"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    wait_until("a refilled pool of new containers", Duration::from_secs(90), || async {
        let now = common::containers(&t);
        let fresh = now.iter().filter(|c| !before.contains(c)).count();
        gw.health().await["pool"]["warm"] == 2 && fresh == 2
    })
    .await;
    // The assigned one finished nothing: it still serves its visitor.
    let r = gw.http.get(gw.user_url(&slot, "api/status")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let out = common::nbgate_cli(&t, &["pool", "status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 warm, 1 assigned"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // --force stops assigned servers too.
    let out = common::nbgate_cli(&t, &["pool", "drain", "--force"]);
    assert!(out.status.success());
    wait_until("the forced stop", Duration::from_secs(30), || async { assigned(&gw).await == 0 }).await;
    let page = gw
        .http
        .get(gw.user_url(&slot, "lab"))
        .header("cookie", &cookie)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert!(page.text().await.unwrap().contains("update by the organizers"));
}

#[tokio::test]
async fn a_login_at_the_idle_deadline_keeps_its_server_and_files() {
    common::require_docker();
    let t = TestInstance::new();
    let gw = Gateway::start(
        &t,
        &[("NBGATE_REGISTRATION_KEY", KEY), ("NBGATE_POOL_SIZE", "1"), ("NBGATE_IDLE_TIMEOUT", "4s")],
    );
    gw.wait_warm(1).await;
    let first = Browser::new(&gw);
    let slot = first.slot_after(first.register("zoe", PW, KEY).await).await;
    first.put_file(&slot, "work/keep.txt", "bound").await;
    // Idle almost to the deadline, then a second login races the culler.
    tokio::time::sleep(Duration::from_millis(3600)).await;
    let second = Browser::new(&gw);
    let slot2 = second.slot_after(second.login("zoe", PW).await).await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let r = second.http.get(second.user_url(&slot2, "api/status")).send().await.unwrap();
        assert_eq!(r.status(), 200, "the server a login was just sent to was recycled");
    }
    assert_eq!(
        second.get_file(&slot2, "work/keep.txt").await.as_deref(),
        Some("bound"),
        "the volume is still bound"
    );
}
