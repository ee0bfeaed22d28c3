//! The Docker engine connection and the objects every part shares: the
//! instance label and the isolated network.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::RemoveContainerOptions;
use bollard::Docker;

/// Label carrying the instance name on every object nbgate creates.
pub const INSTANCE_LABEL: &str = "nbgate.instance";
/// Label carrying the slot id on notebook containers.
pub const SLOT_LABEL: &str = "nbgate.slot";
/// Label marking throwaway containers of `nbgate check`.
pub const PROBE_LABEL: &str = "nbgate.probe";

/// Connect (honouring `DOCKER_HOST`) and agree on an API version, so old
/// engines (Debian's 20.10, API 1.41) work.
pub async fn connect() -> Result<Docker, bollard::errors::Error> {
    let docker = Docker::connect_with_defaults()?.with_timeout(Duration::from_secs(120));
    let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
        .await
        .map_err(|_| bollard::errors::Error::RequestTimeoutError)??;
    Ok(docker)
}

/// Engine version and API version, or why the engine does not answer.
pub async fn describe(docker: &Docker) -> Result<(String, String), bollard::errors::Error> {
    let v = tokio::time::timeout(Duration::from_secs(5), docker.version())
        .await
        .map_err(|_| bollard::errors::Error::RequestTimeoutError)??;
    Ok((v.version.unwrap_or_default(), v.api_version.unwrap_or_default()))
}

/// Name of the instance's bridge network.
pub fn network_name(instance: &str) -> String {
    format!("{instance}-net")
}

/// Create the instance's bridge network if missing: inter-container traffic
/// off, so one user's container cannot reach another's Jupyter port.
pub async fn ensure_network(docker: &Docker, instance: &str) -> Result<String, bollard::errors::Error> {
    let name = network_name(instance);
    if docker.inspect_network(&name, None).await.is_ok() {
        return Ok(name);
    }
    let request = NetworkCreateRequest {
        name: name.clone(),
        driver: Some("bridge".into()),
        options: Some(HashMap::from([
            ("com.docker.network.bridge.enable_icc".into(), "false".into()),
            ("com.docker.network.bridge.enable_ip_masquerade".into(), "true".into()),
        ])),
        labels: Some(HashMap::from([(INSTANCE_LABEL.into(), instance.into())])),
        ..Default::default()
    };
    match docker.create_network(request).await {
        Ok(_) => Ok(name),
        // Another start raced us to it: fine.
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => Ok(name),
        Err(e) => Err(e),
    }
}

/// Filter selecting exactly this instance's objects (label equality, never a prefix).
pub fn instance_filter(instance: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![format!("{INSTANCE_LABEL}={instance}")])])
}

/// Remove a container whatever its state; a container already gone is fine.
pub async fn force_remove(docker: &Docker, id: &str) -> Result<(), bollard::errors::Error> {
    match docker
        .remove_container(id, Some(RemoveContainerOptions { force: true, v: false, ..Default::default() }))
        .await
    {
        Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A lazily connected Docker client. The first successful negotiation is
/// kept; until then every use tries again, so nbgate can start before dockerd.
#[derive(Default)]
pub struct DockerHandle {
    client: tokio::sync::RwLock<Option<Docker>>,
}

impl DockerHandle {
    pub fn new() -> Self {
        Self::default()
    }

    pub async fn get(&self) -> Result<Docker, bollard::errors::Error> {
        if let Some(d) = self.client.read().await.as_ref() {
            return Ok(d.clone());
        }
        let docker = connect().await?;
        *self.client.write().await = Some(docker.clone());
        Ok(docker)
    }

    /// Whether the engine answers a ping now.
    pub async fn ping(&self) -> Result<(), bollard::errors::Error> {
        let docker = self.get().await?;
        tokio::time::timeout(Duration::from_secs(3), docker.ping())
            .await
            .map_err(|_| bollard::errors::Error::RequestTimeoutError)??;
        Ok(())
    }
}
