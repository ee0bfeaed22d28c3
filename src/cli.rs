//! Command line: `nbgate serve | check` and, as their issues land, the admin
//! commands. Config flags mirror the config keys one for one; they carry no
//! defaults here, so `--help` never prints a configured value (or a secret).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "nbgate", version, about = "A JupyterLab for everyone in the room: gateway, warm pool and per-user volumes", long_about = None)]
pub struct Cli {
    /// TOML config file (keys as in the README's table, lowercase).
    #[arg(long, global = true, env = "NBGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(ConfigArgs),
    /// Check the environment: Docker, image, state dir, hot-binding, database.
    Check(ConfigArgs),
    /// Manage registration keys kept in the database.
    Key {
        #[command(subcommand)]
        action: KeyAction,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// The warm pool: status, drain (e.g. after `make images`), refill.
    Pool {
        #[command(subcommand)]
        action: PoolAction,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Accounts: list, show, expire, remove, reset-password, make-admin.
    User {
        #[command(subcommand)]
        action: UserAction,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// API tokens for /hub/api.
    Token {
        #[command(subcommand)]
        action: TokenAction,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Volume tools.
    Volume {
        #[command(subcommand)]
        action: VolumeAction,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

impl Command {
    pub fn config_args(&self) -> &ConfigArgs {
        match self {
            Command::Serve(a) | Command::Check(a) => a,
            Command::Key { config, .. }
            | Command::Volume { config, .. }
            | Command::Pool { config, .. }
            | Command::User { config, .. }
            | Command::Token { config, .. } => config,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Add a key; prints it once (only its hash is stored).
    Add {
        /// Name admins use for the key, e.g. `pycon-2026`.
        #[arg(long)]
        name: String,
        /// The key itself; random when omitted.
        #[arg(long)]
        key: Option<String>,
        /// How many accounts it may create.
        #[arg(long)]
        max_uses: Option<u32>,
        /// Last moment it works: a date (2026-12-31), an RFC 3339 time, or a duration from now (7d).
        #[arg(long)]
        valid_until: Option<String>,
        /// Accounts made with it expire after this many days.
        #[arg(long)]
        account_days: Option<u32>,
        /// Approved e-mail domains, comma-separated: `gmail.com,*.edu` or `*`.
        #[arg(long)]
        email_domains: Option<String>,
    },
    /// List keys with their uses and limits.
    List,
    /// Revoke a key by name.
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Every account with its state.
    List,
    /// One account in detail.
    Show { name: String },
    /// End an account's lifetime (now, or at a date/duration); its server is recycled, its volume kept.
    Expire {
        name: String,
        /// `now` (default), a date (2026-12-31), an RFC 3339 time, or a duration from now (7d); `never` lifts it.
        #[arg(long, default_value = "now")]
        at: String,
    },
    /// Remove an account; its volume is kept unless --delete-volume.
    Remove {
        name: String,
        /// Also delete the user's files.
        #[arg(long)]
        delete_volume: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Set a new password (random unless given); files move with it.
    ResetPassword {
        name: String,
        /// The new password (8–72 bytes); random when omitted. Prefer omitting: flags show in `ps`.
        #[arg(long)]
        password: Option<String>,
    },
    /// Grant (or with --revoke, take away) the admin role.
    MakeAdmin {
        name: String,
        #[arg(long)]
        revoke: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create a token; prints it once (only its hash is stored).
    Create { name: String },
    /// List tokens.
    List,
    /// Revoke a token by name.
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
pub enum PoolAction {
    /// Containers of this instance: warm, assigned, other.
    Status,
    /// Replace every warm container (the gateway starts new ones from the
    /// current image); assigned ones finish their session unless --force.
    Drain {
        /// Also stop assigned servers now (users' files are kept).
        #[arg(long)]
        force: bool,
    },
    /// Wait until the running gateway reports a full pool.
    Refill {
        /// Give up after this long.
        #[arg(long, default_value = "5m")]
        timeout: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum VolumeAction {
    /// Rebuild the user table from this instance's volume names (after losing the DB).
    RebuildIndex,
    /// Write one compressed tar per volume and a manifest of checksums into DIR.
    Backup {
        #[arg(long, value_name = "DIR")]
        dest: std::path::PathBuf,
        /// Only this user's volume.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Check every archive in DIR against its manifest.
    Verify {
        #[arg(long, value_name = "DIR")]
        src: std::path::PathBuf,
    },
    /// Restore volumes from DIR (verified first), swapping each in for the live one.
    Restore {
        #[arg(long, value_name = "DIR")]
        src: std::path::PathBuf,
        /// Only this user's volume.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
}

macro_rules! config_flags {
    ($($field:ident: $help:literal),* $(,)?) => {
        /// Flags overriding config keys (after the file and `NBGATE_*` variables).
        #[derive(Debug, Default, Args)]
        pub struct ConfigArgs {
            $(
                #[doc = $help]
                #[arg(long, value_name = "VALUE", hide_env_values = true)]
                pub $field: Option<String>,
            )*
        }

        impl ConfigArgs {
            /// The flags that were given, as `(key, value)` pairs.
            pub fn pairs(&self) -> Vec<(&'static str, String)> {
                let mut out = Vec::new();
                $( if let Some(v) = &self.$field { out.push((stringify!($field), v.clone())); } )*
                out
            }
        }
    };
}

config_flags! {
    bind: "Listen address [NBGATE_BIND]",
    state_dir: "State directory: database, cookie secret, slot mount points [NBGATE_STATE_DIR]",
    database_url: "Database URL [NBGATE_DATABASE_URL]",
    instance: "Prefix and label of this gateway's Docker objects [NBGATE_INSTANCE]",
    image: "Notebook image [NBGATE_IMAGE]",
    pool_size: "Warm containers kept ready [NBGATE_POOL_SIZE]",
    max_containers: "Hard cap on containers, warm + assigned [NBGATE_MAX_CONTAINERS]",
    memory_limit: "Memory per container, e.g. 512m [NBGATE_MEMORY_LIMIT]",
    cpu_limit: "CPUs per container, e.g. 1.0 [NBGATE_CPU_LIMIT]",
    idle_timeout: "Recycle after this much inactivity, e.g. 10m [NBGATE_IDLE_TIMEOUT]",
    max_age: "Recycle an assigned container after this long, e.g. 8h [NBGATE_MAX_AGE]",
    registration_key: "Registration key (prefer the variable: flags show in `ps`) [NBGATE_REGISTRATION_KEY]",
    auth: "`accounts` or `ephemeral` [NBGATE_AUTH]",
    bcrypt_cost: "bcrypt cost for new password hashes [NBGATE_BCRYPT_COST]",
    stop_on_logout: "Recycle the user's container at logout [NBGATE_STOP_ON_LOGOUT]",
    access_password: "Shared site password (prefer the variable) [NBGATE_ACCESS_PASSWORD]",
    login_message: "Organizer's message on the login page [NBGATE_LOGIN_MESSAGE]",
    tls_cert: "PEM certificate chain for HTTPS [NBGATE_TLS_CERT]",
    tls_key: "PEM private key for HTTPS [NBGATE_TLS_KEY]",
    http_redirect_bind: "With TLS, redirect plain HTTP here to HTTPS, e.g. 0.0.0.0:80 [NBGATE_HTTP_REDIRECT_BIND]",
    log_format: "`pretty` or `json` [NBGATE_LOG_FORMAT]",
    default_url: "Where a login lands in the notebook server, e.g. /lab [NBGATE_DEFAULT_URL]",
    firewall: "Install firewall rules keeping notebooks from metadata, private ranges and the host [NBGATE_FIREWALL]",
    hot_bind: "Bind volumes into warm containers when possible (false: fresh container per login) [NBGATE_HOT_BIND]",
    spare_kernel: "Keep one kernel started ahead in every notebook server (~45 MiB each) [NBGATE_SPARE_KERNEL]",
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_config_key_has_a_flag() {
        let cmd = Cli::command();
        let serve = cmd.find_subcommand("serve").unwrap();
        for key in crate::config::key_names() {
            let long = key.replace('_', "-");
            assert!(serve.get_arguments().any(|a| a.get_long() == Some(long.as_str())), "no --{long} flag");
        }
    }

    #[test]
    fn flags_become_pairs() {
        let cli = Cli::parse_from(["nbgate", "serve", "--pool-size", "7", "--max-age", "1h"]);
        let args = cli.command.config_args();
        assert_eq!(args.pairs(), vec![("pool_size", "7".to_string()), ("max_age", "1h".to_string())]);
    }
}
