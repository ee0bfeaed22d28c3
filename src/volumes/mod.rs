//! Per-user volumes: naming, creation, and the verified copy a password change
//! makes. One local Docker volume per user, named
//! `<instance>-<sha256hex(username)>-<base64url_nopad(bcrypt hash)>` (the
//! mostly-tmpnb scheme with sha256), labelled `nbgate.instance=<instance>`.
//! The names alone are enough to rebuild the user table.

pub mod admin;
pub mod backup;
pub mod bind;
pub mod copy;
pub mod rekey;

use std::collections::HashMap;
use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bollard::models::VolumeCreateRequest;
use bollard::Docker;

use crate::auth::password::Username;
use crate::docker::INSTANCE_LABEL;

/// The volume name for a user and password hash.
pub fn volume_name(instance: &str, user: &Username, bcrypt_hash: &str) -> String {
    volume_name_for(instance, &user.sha256_hex(), bcrypt_hash)
}

/// The same, from the name's hash (what the DB keeps).
pub fn volume_name_for(instance: &str, name_sha256: &str, bcrypt_hash: &str) -> String {
    format!("{instance}-{name_sha256}-{}", URL_SAFE_NO_PAD.encode(bcrypt_hash))
}

/// Split one of this instance's volume names into (sha256 hex of the
/// username, bcrypt hash). None for any other name.
pub fn parse_volume_name(instance: &str, name: &str) -> Option<(String, String)> {
    let rest = name.strip_prefix(instance)?.strip_prefix('-')?;
    let (sha, encoded) = rest.split_once('-')?;
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let hash = String::from_utf8(URL_SAFE_NO_PAD.decode(encoded).ok()?).ok()?;
    // `$2b$12$` + 53 characters.
    let looks_bcrypt = hash.len() == 60 && hash.starts_with("$2") && hash.as_bytes()[3] == b'$';
    looks_bcrypt.then(|| (sha.to_string(), hash))
}

/// Create the volume (labelled) and give its root to the notebook user.
pub async fn create(docker: &Docker, instance: &str, name: &str) -> Result<PathBuf, bollard::errors::Error> {
    docker
        .create_volume(VolumeCreateRequest {
            name: Some(name.to_string()),
            driver: Some("local".into()),
            labels: Some(HashMap::from([(INSTANCE_LABEL.to_string(), instance.to_string())])),
            ..Default::default()
        })
        .await?;
    let path = mountpoint(docker, name).await?;
    // Files in ~/work belong to jovyan (uid 1000, gid 100).
    if bind::is_root() {
        let _ = nix::unistd::chown(
            &path,
            Some(nix::unistd::Uid::from_raw(1000)),
            Some(nix::unistd::Gid::from_raw(100)),
        );
    }
    Ok(path)
}

/// Where the volume's files are on the host.
pub async fn mountpoint(docker: &Docker, name: &str) -> Result<PathBuf, bollard::errors::Error> {
    Ok(PathBuf::from(docker.inspect_volume(name).await?.mountpoint))
}

/// Remove a volume; one already gone is fine. Only password changes (after a
/// verified copy), restores and `user remove --delete-volume` call this —
/// recycling never does.
pub async fn remove(docker: &Docker, name: &str) -> Result<(), bollard::errors::Error> {
    match docker.remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>).await {
        Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// This instance's volumes: (name, created-at as Docker reports it).
pub async fn list(docker: &Docker, instance: &str) -> Result<Vec<(String, String)>, bollard::errors::Error> {
    let resp = docker
        .list_volumes(Some(bollard::query_parameters::ListVolumesOptions {
            filters: Some(crate::docker::instance_filter(instance)),
        }))
        .await?;
    Ok(resp
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| (v.name, v.created_at.unwrap_or_default()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let user = Username::parse("Alice").unwrap();
        let hash = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
        let name = volume_name("nbgate", &user, hash);
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)), "{name}");
        assert_eq!(parse_volume_name("nbgate", &name), Some((user.sha256_hex(), hash.to_string())));
        assert_eq!(parse_volume_name("nbgat", &name), None, "exact instance prefix");
        assert_eq!(parse_volume_name("other", &name), None);
        assert_eq!(parse_volume_name("nbgate", "nbgate-abc-def"), None);
    }
}
