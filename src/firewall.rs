//! Host firewall rules for the notebook network (when running as root):
//! containers may resolve names and reach the internet, but not the cloud
//! metadata service (169.254.0.0/16), other private ranges, or the host's own
//! services. Rules live in two chains of this instance's own, jumped to from
//! `DOCKER-USER` (forwarded traffic; Docker leaves that chain to users) and
//! `INPUT` (traffic to the host); installing is idempotent and stopping the
//! gateway removes them. Only arguments built here reach iptables — never a
//! shell.
//!
//! Forwarded traffic is also sent to the chain straight from `FORWARD`, above
//! Docker's own `ACCEPT` for the bridge: Docker moves its `DOCKER-USER` jump by
//! deleting and re-inserting it whenever a network is created, and a
//! connection opened in that gap would never be checked (its later packets are
//! `ESTABLISHED`). Seen once in the tests, with other networks coming and going.

use std::process::Command;

use sha2::{Digest, Sha256};

/// The chains that send the bridge's forwarded traffic to the instance's chain.
const FORWARD_HOOKS: [&str; 2] = ["DOCKER-USER", "FORWARD"];

/// Ranges no notebook may reach.
pub const BLOCKED: [&str; 5] =
    ["169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"];

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("iptables is not installed (apt-get install iptables)")]
    Missing,
    #[error("iptables {args}: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("bridge name {0:?} is not a plain interface name")]
    BadBridge(String),
}

/// The two chain names of an instance (iptables allows 28 characters).
pub fn chains(instance: &str) -> (String, String) {
    let tag = &hex::encode(Sha256::digest(instance.as_bytes()))[..10];
    (format!("NBGATE-{tag}-FWD"), format!("NBGATE-{tag}-IN"))
}

fn iptables(args: &[&str]) -> Result<bool, FirewallError> {
    let out = Command::new("iptables").arg("-w").args(args).output().map_err(|_| FirewallError::Missing)?;
    if out.status.success() {
        return Ok(true);
    }
    // `-C` answers 1 for "no such rule": a normal answer, not an error.
    if args.first() == Some(&"-C") {
        return Ok(false);
    }
    Err(FirewallError::Failed {
        args: args.join(" "),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// Install (or refresh) the rules for `bridge`, the instance network's Linux
/// bridge interface.
pub fn install(instance: &str, bridge: &str) -> Result<(), FirewallError> {
    if bridge.is_empty()
        || bridge.len() > 15
        || !bridge.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(FirewallError::BadBridge(bridge.to_string()));
    }
    let (fwd, inp) = chains(instance);
    for chain in [&fwd, &inp] {
        let _ = iptables(&["-N", chain]); // exists already: fine
        iptables(&["-F", chain])?;
    }
    let established = ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN"];
    for chain in [&fwd, &inp] {
        let mut rule = vec!["-A", chain.as_str()];
        rule.extend(established);
        iptables(&rule)?;
        // Name resolution stays possible wherever the resolver lives.
        for proto in ["udp", "tcp"] {
            iptables(&["-A", chain, "-p", proto, "--dport", "53", "-j", "RETURN"])?;
        }
    }
    for range in BLOCKED {
        iptables(&["-A", &fwd, "-d", range, "-j", "DROP"])?;
    }
    iptables(&["-A", &fwd, "-j", "RETURN"])?;
    // Nothing new from a notebook to the host itself.
    iptables(&["-A", &inp, "-j", "DROP"])?;
    for chain in FORWARD_HOOKS {
        if !iptables(&["-C", chain, "-i", bridge, "-j", &fwd])? {
            iptables(&["-I", chain, "-i", bridge, "-j", &fwd])?;
        }
    }
    if !iptables(&["-C", "INPUT", "-i", bridge, "-j", &inp])? {
        iptables(&["-I", "INPUT", "-i", bridge, "-j", &inp])?;
    }
    Ok(())
}

/// Remove the jumps and the chains.
pub fn remove(instance: &str, bridge: &str) {
    let (fwd, inp) = chains(instance);
    for chain in FORWARD_HOOKS {
        while matches!(iptables(&["-C", chain, "-i", bridge, "-j", &fwd]), Ok(true)) {
            let _ = iptables(&["-D", chain, "-i", bridge, "-j", &fwd]);
        }
    }
    while matches!(iptables(&["-C", "INPUT", "-i", bridge, "-j", &inp]), Ok(true)) {
        let _ = iptables(&["-D", "INPUT", "-i", bridge, "-j", &inp]);
    }
    for chain in [&fwd, &inp] {
        let _ = iptables(&["-F", chain]);
        let _ = iptables(&["-X", chain]);
    }
}

/// Whether the rules are in place: the forward chain drops the metadata range
/// and both `DOCKER-USER` and `FORWARD` jump to it.
pub fn in_place(instance: &str, bridge: &str) -> bool {
    let (fwd, _) = chains(instance);
    matches!(iptables(&["-C", &fwd, "-d", "169.254.0.0/16", "-j", "DROP"]), Ok(true))
        && FORWARD_HOOKS
            .iter()
            .all(|chain| matches!(iptables(&["-C", chain, "-i", bridge, "-j", &fwd]), Ok(true)))
}

/// The Linux bridge behind the instance's Docker network.
pub async fn bridge_of(docker: &bollard::Docker, instance: &str) -> Result<String, bollard::errors::Error> {
    let net = docker.inspect_network(&crate::docker::network_name(instance), None).await?;
    if let Some(name) = net.options.as_ref().and_then(|o| o.get("com.docker.network.bridge.name")) {
        return Ok(name.clone());
    }
    let id = net.id.unwrap_or_default();
    Ok(format!("br-{}", &id[..id.len().min(12)]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn chain_names_fit_iptables() {
        let (f, i) = super::chains("a-very-long-instance-name");
        assert!(f.len() <= 28 && i.len() <= 28, "{f} {i}");
        assert_ne!(super::chains("a"), super::chains("b"));
    }
}
