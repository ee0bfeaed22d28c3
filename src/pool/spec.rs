//! The notebook container spec: the one place that says how a container is
//! made. Nothing user-supplied reaches it; `docker inspect` of any container
//! equals this spec (SECURITY.md #11).

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountBindOptions, MountBindOptionsPropagationEnum, MountType,
    PortBinding, ResourcesUlimits,
};

use crate::config::Config;
use crate::docker::{network_name, INSTANCE_LABEL, SLOT_LABEL};
use crate::slot::SlotId;

/// Port Jupyter listens on inside the container.
pub const JUPYTER_CONTAINER_PORT: u16 = 8888;
/// The same, as Docker names it.
pub const JUPYTER_PORT: &str = "8888/tcp";
/// Where the user's volume appears.
pub const WORK_DIR: &str = "/home/jovyan/work";
/// Processes per container: enough for JupyterLab, a few kernels and a
/// terminal; a fork bomb stops here.
pub const PIDS_LIMIT: i64 = 512;

/// CPU weight of a container someone uses (Docker's default).
pub const ASSIGNED_CPU_SHARES: i64 = 1024;
/// CPU weight of a warm container until it is handed out, the least the
/// kernel takes: starting JupyterLabs (a refill after a burst of logins) yield
/// the CPU to servers people are using, and still start at full speed on an
/// idle host (weights only matter when the CPU is short).
pub const WARM_CPU_SHARES: i64 = 2;

/// Docker name of a slot's container.
pub fn container_name(instance: &str, slot: &SlotId) -> String {
    format!("{instance}-slot-{slot}")
}

/// What is mounted at `~/work`.
#[derive(Clone, Copy, Debug)]
pub enum Work<'a> {
    /// Nothing: `~/work` lives in the container and goes with it (ephemeral).
    Ephemeral,
    /// The slot's mount point on the host, with `rslave` propagation: a volume
    /// bound onto it later appears inside the running container (DESIGN.md
    /// "Verified" 2). This is what warm containers get.
    Slot(&'a Path),
    /// A user's volume, mounted by Docker (the cold path, without hot-binding).
    Volume(&'a str),
}

/// The create body for a notebook container of `slot`.
pub fn notebook_container(
    config: &Config,
    slot: &SlotId,
    token: &str,
    work: Work<'_>,
) -> ContainerCreateBody {
    let labels = HashMap::from([
        (INSTANCE_LABEL.to_string(), config.instance.clone()),
        (SLOT_LABEL.to_string(), slot.to_string()),
    ]);
    let memory = i64::try_from(config.memory_limit).unwrap_or(i64::MAX);
    let cpu_shares = if matches!(work, Work::Volume(_)) { ASSIGNED_CPU_SHARES } else { WARM_CPU_SHARES };
    let mounts = match work {
        Work::Ephemeral => None,
        Work::Slot(dir) => Some(vec![Mount {
            target: Some(WORK_DIR.into()),
            source: Some(dir.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            bind_options: Some(MountBindOptions {
                propagation: Some(MountBindOptionsPropagationEnum::RSLAVE),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        Work::Volume(name) => Some(vec![Mount {
            target: Some(WORK_DIR.into()),
            source: Some(name.to_string()),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        }]),
    };
    ContainerCreateBody {
        image: Some(config.image.clone()),
        user: Some("1000:100".into()),
        env: Some(vec![
            format!("NBGATE_BASE_URL={}", slot.base_url()),
            format!("JUPYTER_TOKEN={token}"),
            // Read by the image's jupyter_server_config.py (docker/notebook/nbgate_spare.py).
            format!("NBGATE_SPARE_KERNEL={}", u8::from(config.spare_kernel)),
        ]),
        labels: Some(labels),
        exposed_ports: Some(vec![JUPYTER_PORT.into()]),
        stop_timeout: Some(10),
        host_config: Some(HostConfig {
            network_mode: Some(network_name(&config.instance)),
            port_bindings: Some(HashMap::from([(
                JUPYTER_PORT.to_string(),
                Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(String::new()) }]),
            )])),
            memory: Some(memory),
            memory_swap: Some(memory),
            nano_cpus: Some((config.cpu_limit * 1e9) as i64),
            cpu_shares: Some(cpu_shares),
            pids_limit: Some(PIDS_LIMIT),
            ulimits: Some(vec![ResourcesUlimits {
                name: Some("nofile".into()),
                soft: Some(4096),
                hard: Some(8192),
            }]),
            cap_drop: Some(vec!["ALL".into()]),
            // Read-only image; the home directory and /tmp are size-capped
            // tmpfs (counted in the memory limit), ~/work is the volume.
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([
                (
                    "/home/jovyan".to_string(),
                    "rw,nosuid,nodev,size=256m,uid=1000,gid=100,mode=0755".to_string(),
                ),
                ("/tmp".to_string(), "rw,nosuid,nodev,size=256m,mode=1777".to_string()),
            ])),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            mounts,
            privileged: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}
