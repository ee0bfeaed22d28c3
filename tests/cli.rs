//! The binary as an organizer runs it: `check`, `serve`, config errors.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn nbgate(t: &common::TestInstance) -> Command {
    let mut cmd = Command::new(common::nbgate_bin());
    cmd.envs(t.env()).env_remove("NBGATE_CONFIG").current_dir(t.dir.path());
    cmd
}

#[test]
fn check_passes_on_this_machine() {
    common::require_docker();
    let t = common::TestInstance::new();
    let out = nbgate(&t).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "nbgate check failed:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    for name in ["docker", "image", "state dir", "hot-binding", "database"] {
        assert!(text.contains(&format!("ok    {name}:")), "no ok line for {name}:\n{text}");
    }
}

#[test]
fn check_fails_for_a_missing_image() {
    common::require_docker();
    let t = common::TestInstance::new();
    let out = nbgate(&t).arg("check").env("NBGATE_IMAGE", "nbgate/no-such-image:0").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("FAIL: image — nbgate/no-such-image:0 is not present — run `make images`"),
        "{text}"
    );
}

#[test]
fn check_fails_when_docker_is_unreachable() {
    let t = common::TestInstance::new();
    let out = nbgate(&t).arg("check").env("DOCKER_HOST", "unix:///nonexistent/docker.sock").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("FAIL: docker — no Docker engine answers at unix:///nonexistent/docker.sock"),
        "{text}"
    );
}

#[test]
fn invalid_config_names_the_variable_and_hides_secrets() {
    let t = common::TestInstance::new();
    let out = nbgate(&t).arg("serve").env("NBGATE_POOL_SIZE", "ten").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(r#"NBGATE_POOL_SIZE: expected a whole number, got "ten""#), "{err}");

    let help = nbgate(&t)
        .args(["serve", "--help"])
        .env("NBGATE_REGISTRATION_KEY", "sekrit-slide-key")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--registration-key") && !help.contains("sekrit-slide-key"), "{help}");
}

/// Start `nbgate serve` and return it with its bound address.
fn start_serve(t: &common::TestInstance, extra: &[(&str, &str)]) -> (std::process::Child, String) {
    let mut child = nbgate(t)
        .arg("serve")
        .envs(extra.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("nbgate listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, addr)
}

fn wait_exit(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("nbgate did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn serve_answers_health_and_stops_on_sigterm() {
    common::require_docker();
    let t = common::TestInstance::new();
    let (mut child, addr) = start_serve(&t, &[]);
    let resp = reqwest::get(format!("{addr}/hub/health")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["docker"]["reachable"], true);
    for field in ["warm", "assigned", "cap"] {
        assert!(body["pool"][field].is_u64(), "pool.{field} missing: {body}");
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn health_is_503_while_docker_is_unreachable() {
    let t = common::TestInstance::new();
    let (mut child, addr) = start_serve(&t, &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    let resp = reqwest::get(format!("{addr}/hub/health")).await.unwrap();
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_ne!(body["status"], "ok");
    assert_eq!(body["docker"]["reachable"], false);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)).code(), Some(0));
}
