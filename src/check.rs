//! `nbgate check`: the environment doctor. One line per check, `ok` or
//! `FAIL: <what> — <how to fix>`; exit status 1 if anything failed.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountBindOptions, MountBindOptionsPropagationEnum, MountType,
};
use bollard::query_parameters::CreateContainerOptions;
use bollard::Docker;
use futures_util::StreamExt;

use crate::config::Config;
use crate::docker::{self, INSTANCE_LABEL, PROBE_LABEL};
use crate::slot::random_token;
use crate::volumes::bind;

type Outcome = Result<String, String>;

pub async fn run(config: &Config) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let mut report = |name: &str, outcome: Outcome| match outcome {
        Ok(detail) => println!("ok    {name}: {detail}"),
        Err(why) => {
            failed = true;
            println!("FAIL: {name} — {why}");
        }
    };

    let docker = match docker::connect().await {
        Ok(d) => d,
        Err(e) => {
            let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
            report(
                "docker",
                Err(format!(
                    "no Docker engine answers at {host} ({e}) — start dockerd, or point DOCKER_HOST at it"
                )),
            );
            report("image", Err("cannot be checked without Docker — fix the docker line first".into()));
            report("hot-binding", Err("cannot be checked without Docker — fix the docker line first".into()));
            report("state dir", check_state_dir(&config.state_dir));
            report("database", check_database(config).await);
            return Ok(ExitCode::FAILURE);
        }
    };
    report(
        "docker",
        docker::describe(&docker)
            .await
            .map(|(v, api)| format!("engine {v}, API {api}"))
            .map_err(|e| format!("{e} — check that dockerd is running")),
    );
    let image = check_image(&docker, &config.image).await;
    let image_ok = image.is_ok();
    report("image", image);
    report("state dir", check_state_dir(&config.state_dir));
    report(
        "hot-binding",
        if image_ok {
            check_hot_binding(&docker, config).await
        } else {
            Err("needs the notebook image for its probe container — run `make images` first".into())
        },
    );
    report("database", check_database(config).await);
    report("firewall", check_firewall(&docker, config).await);
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

async fn check_image(docker: &Docker, image: &str) -> Outcome {
    match docker.inspect_image(image).await {
        Ok(i) => Ok(format!("{image} ({})", i.id.unwrap_or_default().chars().take(19).collect::<String>())),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
            Err(format!("{image} is not present — run `make images` (no registry is needed)"))
        }
        Err(e) => Err(format!("{image}: {e}")),
    }
}

fn check_state_dir(dir: &Path) -> Outcome {
    let probe = dir.join(format!(".nbgate-check-{}", std::process::id()));
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b"ok"))
        .and_then(|()| std::fs::remove_file(&probe))
        .map(|()| dir.display().to_string())
        .map_err(|e| {
            format!(
                "{} is not writable ({e}) — create it or set NBGATE_STATE_DIR to a writable directory",
                dir.display()
            )
        })
}

/// The rules are installed by `nbgate serve`; before that, say so.
async fn check_firewall(docker: &Docker, config: &Config) -> Outcome {
    if !config.firewall {
        return Ok("off (NBGATE_FIREWALL=false): notebooks can reach private addresses".into());
    }
    if !bind::is_root() {
        return Err(
            "needs root to install iptables rules — run as root, or set NBGATE_FIREWALL=false knowingly"
                .into(),
        );
    }
    if std::process::Command::new("iptables").arg("--version").output().is_err() {
        return Err("iptables is missing — apt-get install iptables".into());
    }
    match crate::firewall::bridge_of(docker, &config.instance).await {
        Ok(bridge) if crate::firewall::in_place(&config.instance, &bridge) => {
            Ok(format!("rules in place on {bridge} (metadata, private ranges and the host are blocked)"))
        }
        _ => Ok("iptables available; rules are installed when `nbgate serve` starts".into()),
    }
}

async fn check_database(config: &Config) -> Outcome {
    match crate::db::open(&config.database_url).await {
        Ok((pool, opened)) => {
            pool.close().await;
            let version = crate::db::MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
            Ok(match (opened.created, opened.applied.len()) {
                (true, _) => format!("created at schema {version}"),
                (false, 0) => format!("schema {version}, up to date"),
                (false, n) => format!("migrated {n} step(s) to schema {version}"),
            })
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Prove that a bind made on the host appears inside a running container.
async fn check_hot_binding(docker: &Docker, config: &Config) -> Outcome {
    if !bind::is_root() {
        return Err("not running as root, so volumes cannot be bound into warm containers — run nbgate as root on the Docker host (logins then start a fresh container, ~2–3 s, instead)".into());
    }
    let slots = config.slots_dir();
    bind::ensure_shared(&slots).map_err(|e| {
        format!("cannot make {} a shared mount ({e}) — nbgate must share the Docker engine's mount namespace (not a container or a rootless engine)", slots.display())
    })?;
    let tag = &random_token()[..12];
    let slot_dir = slots.join(format!("probe-{tag}"));
    let source = config.state_dir.join(format!(".probe-src-{tag}"));
    std::fs::create_dir_all(&slot_dir)
        .and_then(|()| std::fs::create_dir_all(&source))
        .map_err(|e| e.to_string())?;
    std::fs::write(source.join("probe"), tag).map_err(|e| e.to_string())?;

    let name = format!("{}-probe-{tag}", config.instance);
    let result = probe_container(docker, config, &name, &slot_dir, &source, tag).await;
    let _ = docker::force_remove(docker, &name).await;
    let _ = bind::unbind(&slot_dir);
    let _ = std::fs::remove_dir(&slot_dir);
    let _ = std::fs::remove_dir_all(&source);
    result
}

async fn probe_container(
    docker: &Docker,
    config: &Config,
    name: &str,
    slot_dir: &Path,
    source: &Path,
    tag: &str,
) -> Outcome {
    let body = ContainerCreateBody {
        image: Some(config.image.clone()),
        entrypoint: Some(vec!["sleep".into()]),
        cmd: Some(vec!["60".into()]),
        labels: Some(
            [(INSTANCE_LABEL.to_string(), config.instance.clone()), (PROBE_LABEL.to_string(), "1".into())]
                .into(),
        ),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            auto_remove: Some(true),
            mounts: Some(vec![Mount {
                target: Some("/probe".into()),
                source: Some(slot_dir.to_string_lossy().into_owned()),
                typ: Some(MountType::BIND),
                bind_options: Some(MountBindOptions {
                    propagation: Some(MountBindOptionsPropagationEnum::RSLAVE),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        format!("{what}: {e} — the Docker engine must run on this host, in nbgate's mount namespace")
    };
    docker
        .create_container(
            Some(CreateContainerOptions { name: Some(name.into()), ..Default::default() }),
            body,
        )
        .await
        .map_err(|e| fail("creating the probe container", &e))?;
    docker.start_container(name, None).await.map_err(|e| fail("starting the probe container", &e))?;
    bind::bind(source, slot_dir).map_err(|e| fail("binding onto the slot", &e))?;
    let seen = exec_output(docker, name, vec!["cat", "/probe/probe"])
        .await
        .map_err(|e| fail("reading inside the container", &e))?;
    if seen.trim() == tag {
        Ok("a bind on the host appears inside a running container".into())
    } else {
        Err(format!("the bind did not propagate into the container (saw {:?}) — the slots directory must be a shared mount in the engine's namespace", seen.trim()))
    }
}

/// Run a command in a container and collect its output (bounded in time).
pub async fn exec_output(
    docker: &Docker,
    container: &str,
    cmd: Vec<&str>,
) -> Result<String, bollard::errors::Error> {
    let exec = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(cmd),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await?;
    let mut out = String::new();
    if let StartExecResults::Attached { mut output, .. } = docker.start_exec(&exec.id, None).await? {
        let collect = async {
            while let Some(Ok(chunk)) = output.next().await {
                out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), collect).await;
    }
    Ok(out)
}
