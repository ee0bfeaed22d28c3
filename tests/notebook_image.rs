//! The notebook image, started with the gateway's spec (base_url + token),
//! answers /api/status with the token and 403 without it.

mod common;

use std::time::{Duration, Instant};

use bollard::query_parameters::CreateContainerOptions;
use nbgate::pool::spec::{container_name, notebook_container, Work, JUPYTER_PORT};
use nbgate::slot::{random_token, SlotId};

#[tokio::test]
async fn image_serves_jupyter_under_base_url_and_token() {
    common::require_docker();
    let t = common::TestInstance::new();
    let config = t.config(&[]);
    let docker = nbgate::docker::connect().await.expect("Docker answers");
    nbgate::docker::ensure_network(&docker, &config.instance).await.unwrap();

    let slot = SlotId::random();
    let token = random_token();
    let slot_dir = config.slots_dir().join(slot.as_str());
    nbgate::volumes::bind::ensure_shared(&config.slots_dir()).unwrap();
    std::fs::create_dir_all(&slot_dir).unwrap();
    let name = container_name(&config.instance, &slot);
    let body = notebook_container(&config, &slot, &token, Work::Slot(&slot_dir));
    docker
        .create_container(
            Some(CreateContainerOptions { name: Some(name.clone()), ..Default::default() }),
            body,
        )
        .await
        .unwrap();
    docker.start_container(&name, None).await.unwrap();
    let info = docker.inspect_container(&name, None).await.unwrap();
    let port = info.network_settings.unwrap().ports.unwrap()[JUPYTER_PORT].as_ref().unwrap()[0]
        .host_port
        .clone()
        .unwrap();
    let host_config = info.host_config.unwrap();
    assert_eq!(host_config.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(host_config.memory, host_config.memory_swap);
    assert_eq!(info.config.unwrap().user.as_deref(), Some("1000:100"));

    let url = format!("http://127.0.0.1:{port}{}api/status", slot.base_url());
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        match client.get(&url).header("Authorization", format!("token {token}")).send().await {
            Ok(r) if r.status().as_u16() != 502 => break r.status(),
            _ if Instant::now() > deadline => panic!("Jupyter did not answer within 60 s"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(status, 200);
    let body: serde_json::Value = client
        .get(&url)
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body.get("started").is_some(), "{body}");

    let anonymous = client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 403);
    let wrong = client.get(&url).header("Authorization", "token not-the-token").send().await.unwrap();
    assert_eq!(wrong.status(), 403);
}
