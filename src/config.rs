//! Typed configuration, read once at start.
//!
//! Precedence: built-in default < TOML file (`--config` / `NBGATE_CONFIG`) <
//! `NBGATE_<KEY>` environment variable < command-line flag. Every value, whatever
//! its source, goes through the same parser, so an error always names the key and
//! its variable (`NBGATE_POOL_SIZE: expected a whole number, got "ten"`).
//! Secrets are wrapped in [`Secret`], whose `Debug` never shows the value.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A value that must never reach a log line or `--help`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// Register/login with accounts and a persistent volume each.
    Accounts,
    /// No accounts, no persistence: a visit gets a warm container (tmpnb).
    Ephemeral,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// The whole configuration. Field docs are the README's config table.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listen address.
    pub bind: SocketAddr,
    /// DB, cookie secret, slot mount points. Absolute once loaded.
    pub state_dir: PathBuf,
    /// `sqlite://…` URL of the database.
    pub database_url: String,
    /// Prefix and label value of every Docker object this gateway owns.
    pub instance: String,
    /// Notebook image.
    pub image: String,
    /// Warm, unassigned containers kept ready.
    pub pool_size: u32,
    /// Hard cap on containers, warm + assigned.
    pub max_containers: u32,
    /// Per-container memory limit in bytes (memory = memory+swap).
    pub memory_limit: u64,
    /// Per-container CPU limit in CPUs.
    pub cpu_limit: f64,
    /// Recycle after this much inactivity.
    pub idle_timeout: Duration,
    /// Recycle an assigned container after this long regardless.
    pub max_age: Duration,
    /// The single registration key from the config, if any.
    pub registration_key: Option<Secret>,
    pub auth: AuthMode,
    /// bcrypt cost for new hashes.
    pub bcrypt_cost: u32,
    /// Recycle the user's container at logout.
    pub stop_on_logout: bool,
    /// Shared site password asked before anything else.
    pub access_password: Option<Secret>,
    /// Organizer's message on the login page.
    pub login_message: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// With TLS, a plain-HTTP listener here redirects to HTTPS (e.g. 0.0.0.0:80).
    pub http_redirect_bind: Option<SocketAddr>,
    pub log_format: LogFormat,
    /// Where a login lands inside the notebook server, e.g. `/lab`.
    pub default_url: String,
    /// Bind volumes into warm containers where possible; false forces the
    /// cold path (a fresh container per login with the volume mounted).
    pub hot_bind: bool,
    /// Install host firewall rules for the notebook network (root only).
    pub firewall: bool,
    /// Each notebook server keeps one kernel started ahead of the first
    /// notebook (about 45 MiB per container), so opening one is instant.
    pub spare_kernel: bool,
}

/// A configuration error, already phrased for the person running nbgate.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Where a raw value came from; used to phrase errors.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    Default,
    File(PathBuf),
    Env,
    Flag,
}

/// One configuration key: its name in the file, and its defaults.
struct Key {
    name: &'static str,
    default: Option<&'static str>,
    secret: bool,
}

const KEYS: &[Key] = &[
    Key { name: "bind", default: Some("127.0.0.1:8000"), secret: false },
    Key { name: "state_dir", default: Some("./state"), secret: false },
    Key { name: "database_url", default: None, secret: false },
    Key { name: "instance", default: Some("nbgate"), secret: false },
    Key { name: "image", default: Some("nbgate/notebook:latest"), secret: false },
    Key { name: "pool_size", default: Some("4"), secret: false },
    Key { name: "max_containers", default: None, secret: false },
    Key { name: "memory_limit", default: Some("512m"), secret: false },
    Key { name: "cpu_limit", default: Some("1.0"), secret: false },
    Key { name: "idle_timeout", default: Some("10m"), secret: false },
    Key { name: "max_age", default: Some("8h"), secret: false },
    Key { name: "registration_key", default: None, secret: true },
    Key { name: "auth", default: Some("accounts"), secret: false },
    Key { name: "bcrypt_cost", default: Some("12"), secret: false },
    Key { name: "stop_on_logout", default: Some("true"), secret: false },
    Key { name: "access_password", default: None, secret: true },
    Key { name: "login_message", default: None, secret: false },
    Key { name: "tls_cert", default: None, secret: false },
    Key { name: "tls_key", default: None, secret: false },
    Key { name: "http_redirect_bind", default: None, secret: false },
    Key { name: "log_format", default: Some("pretty"), secret: false },
    Key { name: "default_url", default: Some("/lab"), secret: false },
    Key { name: "hot_bind", default: Some("true"), secret: false },
    Key { name: "firewall", default: Some("true"), secret: false },
    Key { name: "spare_kernel", default: Some("true"), secret: false },
];

/// Names of every key, for the CLI and the docs.
pub fn key_names() -> impl Iterator<Item = &'static str> {
    KEYS.iter().map(|k| k.name)
}

fn env_name(key: &str) -> String {
    format!("NBGATE_{}", key.to_ascii_uppercase())
}

/// Raw values gathered from all layers, before parsing.
#[derive(Default, Debug)]
pub struct Layers {
    values: BTreeMap<&'static str, (String, Source)>,
}

impl Layers {
    /// Start from the built-in defaults.
    pub fn defaults() -> Self {
        let mut layers = Self::default();
        for key in KEYS {
            if let Some(default) = key.default {
                layers.values.insert(key.name, (default.to_string(), Source::Default));
            }
        }
        layers
    }

    /// Apply a TOML file; unknown keys are an error (a typo must not pass silently).
    pub fn file(mut self, path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?;
        let table: toml::Table =
            text.parse().map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?;
        for (name, value) in table {
            let key = KEYS.iter().find(|k| k.name == name).ok_or_else(|| {
                ConfigError(format!(
                    "config file {}: unknown key `{name}` (known keys: {})",
                    path.display(),
                    key_names().collect::<Vec<_>>().join(", ")
                ))
            })?;
            let raw = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(ConfigError(format!(
                        "{} (in {}, or {}): expected a string, number or boolean, got {}",
                        key.name,
                        path.display(),
                        env_name(key.name),
                        other.type_str()
                    )))
                }
            };
            self.values.insert(key.name, (raw, Source::File(path.to_owned())));
        }
        Ok(self)
    }

    /// Apply `NBGATE_<KEY>` variables from `lookup` (the process environment in
    /// production, a map in tests).
    pub fn env(mut self, lookup: impl Fn(&str) -> Option<String>) -> Self {
        for key in KEYS {
            if let Some(value) = lookup(&env_name(key.name)) {
                self.values.insert(key.name, (value, Source::Env));
            }
        }
        self
    }

    /// Apply command-line flags, given as `(key, value)` pairs.
    pub fn flags<'a>(mut self, flags: impl IntoIterator<Item = (&'a str, String)>) -> Self {
        for (name, value) in flags {
            if let Some(key) = KEYS.iter().find(|k| k.name == name) {
                self.values.insert(key.name, (value, Source::Flag));
            }
        }
        self
    }

    fn raw(&self, key: &'static str) -> Option<&(String, Source)> {
        self.values.get(key)
    }

    /// Parse and validate every value.
    pub fn build(self) -> Result<Config, ConfigError> {
        let p = Parser { layers: &self };
        let state_dir = absolute(&PathBuf::from(p.string("state_dir")?.unwrap_or_default()));
        let database_url = match p.string("database_url")? {
            Some(url) => url,
            None => format!("sqlite://{}", state_dir.join("nbgate.db").display()),
        };
        let memory_limit = p.required("memory_limit", "a size such as 512m or 2g", parse_size)?;
        let max_containers = match p.optional("max_containers", "a whole number", parse_u32)? {
            Some(n) => n,
            None => derived_max_containers(host_memory_bytes(), memory_limit),
        };
        let config = Config {
            bind: p.required("bind", "an address such as 127.0.0.1:8000", |s| s.parse().ok())?,
            state_dir,
            database_url,
            instance: p.required(
                "instance",
                "lowercase letters, digits and '-', starting with a letter, at most 24 characters",
                parse_instance,
            )?,
            image: p.required("image", "an image reference", parse_image)?,
            pool_size: p.required("pool_size", "a whole number", parse_u32)?,
            max_containers,
            memory_limit,
            cpu_limit: p.required("cpu_limit", "a number of CPUs such as 1.0 or 0.5", |s| {
                s.parse::<f64>().ok().filter(|c| c.is_finite() && *c > 0.0 && *c <= 1024.0)
            })?,
            idle_timeout: p.required("idle_timeout", "a duration such as 90s, 10m or 8h", parse_duration)?,
            max_age: p.required("max_age", "a duration such as 90s, 10m or 8h", parse_duration)?,
            registration_key: p.string("registration_key")?.filter(|s| !s.is_empty()).map(Secret::new),
            auth: p.required("auth", "`accounts` or `ephemeral`", |s| match s {
                "accounts" => Some(AuthMode::Accounts),
                "ephemeral" => Some(AuthMode::Ephemeral),
                _ => None,
            })?,
            bcrypt_cost: p.required("bcrypt_cost", "a whole number from 4 to 31", |s| {
                s.parse::<u32>().ok().filter(|c| (4..=31).contains(c))
            })?,
            stop_on_logout: p.required("stop_on_logout", "true or false", parse_bool)?,
            access_password: p.string("access_password")?.filter(|s| !s.is_empty()).map(Secret::new),
            login_message: p.string("login_message")?.filter(|s| !s.is_empty()),
            tls_cert: p.string("tls_cert")?.filter(|s| !s.is_empty()).map(PathBuf::from),
            tls_key: p.string("tls_key")?.filter(|s| !s.is_empty()).map(PathBuf::from),
            http_redirect_bind: p
                .optional("http_redirect_bind", "an address such as 0.0.0.0:80", |s| s.parse().ok())?,
            log_format: p.required("log_format", "`pretty` or `json`", |s| match s {
                "pretty" => Some(LogFormat::Pretty),
                "json" => Some(LogFormat::Json),
                _ => None,
            })?,
            default_url: p.required(
                "default_url",
                "a path starting with a single '/', such as /lab",
                |s| {
                    (s.starts_with('/')
                        && !s.starts_with("//")
                        && !s.contains(['\\', '?', '#'])
                        && !s.chars().any(char::is_control))
                    .then(|| s.to_string())
                },
            )?,
            hot_bind: p.required("hot_bind", "true or false", parse_bool)?,
            firewall: p.required("firewall", "true or false", parse_bool)?,
            spare_kernel: p.required("spare_kernel", "true or false", parse_bool)?,
        };
        config.validate()?;
        Ok(config)
    }
}

impl Config {
    /// Load from the real process environment, a file and flags.
    pub fn load(
        file: Option<&Path>,
        flags: impl IntoIterator<Item = (&'static str, String)>,
    ) -> Result<Self, ConfigError> {
        let mut layers = Layers::defaults();
        if let Some(path) = file {
            layers = layers.file(path)?;
        }
        layers.env(|name| std::env::var(name).ok()).flags(flags).build()
    }

    /// Rules between keys.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.pool_size > self.max_containers {
            return Err(ConfigError(format!(
                "NBGATE_POOL_SIZE ({}) is larger than NBGATE_MAX_CONTAINERS ({}): lower the pool size or raise the cap",
                self.pool_size, self.max_containers
            )));
        }
        if self.max_containers == 0 {
            return Err(ConfigError(
                "NBGATE_MAX_CONTAINERS: must be at least 1 (with the derived default, the host has too little memory for NBGATE_MEMORY_LIMIT)".into(),
            ));
        }
        if self.http_redirect_bind.is_some() && self.tls_cert.is_none() {
            return Err(ConfigError(
                "NBGATE_HTTP_REDIRECT_BIND redirects to HTTPS: set NBGATE_TLS_CERT and NBGATE_TLS_KEY too"
                    .into(),
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError("NBGATE_TLS_CERT and NBGATE_TLS_KEY: give both or neither".into()));
        }
        if !self.database_url.starts_with("sqlite:") {
            return Err(ConfigError(format!(
                "NBGATE_DATABASE_URL: only sqlite: URLs are supported, got {:?}",
                self.database_url
            )));
        }
        Ok(())
    }

    /// Directory holding one mount point per slot.
    pub fn slots_dir(&self) -> PathBuf {
        self.state_dir.join("slots")
    }

    /// Label value and name prefix of this gateway's Docker objects.
    pub fn label(&self) -> String {
        format!("nbgate.instance={}", self.instance)
    }

    /// Whether the gateway serves HTTPS.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }
}

struct Parser<'a> {
    layers: &'a Layers,
}

impl Parser<'_> {
    fn string(&self, key: &'static str) -> Result<Option<String>, ConfigError> {
        Ok(self.layers.raw(key).map(|(v, _)| v.clone()))
    }

    fn optional<T>(
        &self,
        key: &'static str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        let Some((raw, source)) = self.layers.raw(key) else {
            return Ok(None);
        };
        match parse(raw.trim()) {
            Some(v) => Ok(Some(v)),
            None => Err(invalid(key, source, expected, raw)),
        }
    }

    fn required<T>(
        &self,
        key: &'static str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        self.optional(key, expected, parse)?
            .ok_or_else(|| ConfigError(format!("{}: a value is required", env_name(key))))
    }
}

fn invalid(key: &'static str, source: &Source, expected: &str, raw: &str) -> ConfigError {
    let secret = KEYS.iter().any(|k| k.name == key && k.secret);
    let shown = if secret { "[redacted]".to_string() } else { format!("{:?}", truncate(raw, 80)) };
    let var = env_name(key);
    let place = match source {
        Source::Env | Source::Default => var,
        Source::File(path) => format!("{key} in {} (or {var})", path.display()),
        Source::Flag => format!("--{} (or {var})", key.replace('_', "-")),
    };
    ConfigError(format!("{place}: expected {expected}, got {shown}"))
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

/// Absolute, without `.` components (Docker bind sources must be absolute).
fn absolute(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_owned())
    };
    joined.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect()
}

pub fn parse_u32(s: &str) -> Option<u32> {
    s.parse().ok()
}

pub fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// `90s`, `10m`, `8h`, `1h 30m` (humantime). Zero is refused: it would recycle at once.
pub fn parse_duration(s: &str) -> Option<Duration> {
    humantime::parse_duration(s).ok().filter(|d| !d.is_zero())
}

/// `512m`, `2g`, `1.5GiB`: Docker's convention, where `m` means MiB.
pub fn parse_size(s: &str) -> Option<u64> {
    // Docker reads `512m` as 512 MiB; bytesize reads `m` as MB. Map the bare
    // single-letter suffixes to binary units so both agree.
    let lower = s.to_ascii_lowercase();
    let binary = match lower.strip_suffix(['k', 'm', 'g', 't']) {
        Some(num) if num.chars().all(|c| c.is_ascii_digit() || c == '.') && !num.is_empty() => {
            format!("{num}{}iB", lower[num.len()..].to_ascii_uppercase())
        }
        _ => s.to_string(),
    };
    binary.parse::<bytesize::ByteSize>().ok().map(|b| b.as_u64()).filter(|b| *b >= 6 * 1024 * 1024)
    // Docker's minimum memory limit
}

fn parse_instance(s: &str) -> Option<String> {
    let ok = (1..=24).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.ends_with('-');
    ok.then(|| s.to_string())
}

fn parse_image(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && !s.starts_with('-')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "./:_-@".contains(c));
    ok.then(|| s.to_string())
}

/// Total host memory from /proc/meminfo (None off Linux).
pub fn host_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Default cap: what fits in 90 % of host memory after 1 GiB for the host,
/// Docker and the gateway, at the configured per-container limit.
pub fn derived_max_containers(host_memory: Option<u64>, memory_limit: u64) -> u32 {
    const HEADROOM: u64 = 1 << 30;
    let Some(total) = host_memory else { return 8 };
    let usable = (total / 10 * 9).saturating_sub(HEADROOM);
    u32::try_from(usable / memory_limit.max(1)).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn build(env: &[(&str, &str)], flags: &[(&'static str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Layers::defaults()
            .env(|k| env.get(k).cloned())
            .flags(flags.iter().map(|(k, v)| (*k, v.to_string())))
            .build()
    }

    #[test]
    fn defaults_match_the_design_table() {
        let c = build(&[], &[]).unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:8000");
        assert!(c.state_dir.ends_with("state"));
        assert!(c.state_dir.is_absolute());
        assert_eq!(c.database_url, format!("sqlite://{}/nbgate.db", c.state_dir.display()));
        assert_eq!(c.instance, "nbgate");
        assert_eq!(c.image, "nbgate/notebook:latest");
        assert_eq!(c.pool_size, 4);
        assert_eq!(c.memory_limit, 512 * 1024 * 1024);
        assert_eq!(c.cpu_limit, 1.0);
        assert_eq!(c.idle_timeout, Duration::from_secs(600));
        assert_eq!(c.max_age, Duration::from_secs(8 * 3600));
        assert!(c.registration_key.is_none());
        assert_eq!(c.auth, AuthMode::Accounts);
        assert_eq!(c.bcrypt_cost, 12);
        assert!(c.stop_on_logout);
        assert_eq!(c.log_format, LogFormat::Pretty);
        assert_eq!(c.max_containers, derived_max_containers(host_memory_bytes(), c.memory_limit));
    }

    #[test]
    fn file_then_env_then_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nbgate.toml");
        std::fs::write(&path, "pool_size = 2\nidle_timeout = \"5m\"\nimage = \"from/file\"\n").unwrap();
        let env: HashMap<&str, &str> = [("NBGATE_POOL_SIZE", "3"), ("NBGATE_IMAGE", "from/env")].into();
        let c = Layers::defaults()
            .file(&path)
            .unwrap()
            .env(|k| env.get(k).map(|v| v.to_string()))
            .flags([("image", "from/flag".to_string())])
            .build()
            .unwrap();
        assert_eq!(c.idle_timeout, Duration::from_secs(300), "file beats default");
        assert_eq!(c.pool_size, 3, "env beats file");
        assert_eq!(c.image, "from/flag", "flag beats env");
    }

    #[test]
    fn every_invalid_value_names_its_variable() {
        let cases: &[(&str, &str, &str)] = &[
            ("NBGATE_POOL_SIZE", "ten", r#"NBGATE_POOL_SIZE: expected a whole number, got "ten""#),
            ("NBGATE_BIND", "localhost", "NBGATE_BIND: expected an address"),
            ("NBGATE_INSTANCE", "Bad_Name", "NBGATE_INSTANCE: expected lowercase"),
            ("NBGATE_IMAGE", "--privileged", "NBGATE_IMAGE: expected an image reference"),
            ("NBGATE_MAX_CONTAINERS", "-1", "NBGATE_MAX_CONTAINERS: expected a whole number"),
            ("NBGATE_MEMORY_LIMIT", "lots", "NBGATE_MEMORY_LIMIT: expected a size"),
            ("NBGATE_MEMORY_LIMIT", "1k", "NBGATE_MEMORY_LIMIT: expected a size"),
            ("NBGATE_CPU_LIMIT", "0", "NBGATE_CPU_LIMIT: expected a number of CPUs"),
            ("NBGATE_IDLE_TIMEOUT", "soon", "NBGATE_IDLE_TIMEOUT: expected a duration"),
            ("NBGATE_MAX_AGE", "0s", "NBGATE_MAX_AGE: expected a duration"),
            ("NBGATE_AUTH", "oauth", "NBGATE_AUTH: expected `accounts` or `ephemeral`"),
            ("NBGATE_BCRYPT_COST", "3", "NBGATE_BCRYPT_COST: expected a whole number from 4 to 31"),
            ("NBGATE_STOP_ON_LOGOUT", "maybe", "NBGATE_STOP_ON_LOGOUT: expected true or false"),
            ("NBGATE_LOG_FORMAT", "xml", "NBGATE_LOG_FORMAT: expected `pretty` or `json`"),
            ("NBGATE_DEFAULT_URL", "//evil.com", "NBGATE_DEFAULT_URL: expected a path"),
            ("NBGATE_DATABASE_URL", "postgres://x", "NBGATE_DATABASE_URL: only sqlite"),
            ("NBGATE_TLS_CERT", "/x.pem", "NBGATE_TLS_CERT and NBGATE_TLS_KEY"),
        ];
        for (var, value, want) in cases {
            let err = build(&[(var, value)], &[]).expect_err(var).to_string();
            assert!(err.starts_with(want), "{var}={value}: got {err:?}, want {want:?}");
        }
        let err =
            build(&[("NBGATE_POOL_SIZE", "9"), ("NBGATE_MAX_CONTAINERS", "3")], &[]).unwrap_err().to_string();
        assert!(err.contains("NBGATE_POOL_SIZE") && err.contains("NBGATE_MAX_CONTAINERS"), "{err}");
    }

    #[test]
    fn errors_from_files_and_flags_name_key_and_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "pool_size = \"ten\"\n").unwrap();
        let err = Layers::defaults().file(&path).unwrap().build().unwrap_err().to_string();
        assert!(err.starts_with("pool_size in ") && err.contains("NBGATE_POOL_SIZE"), "{err}");

        std::fs::write(&path, "pool_sise = 3\n").unwrap();
        let err = Layers::defaults().file(&path).unwrap_err().to_string();
        assert!(err.contains("unknown key `pool_sise`"), "{err}");

        let err = build(&[], &[("pool_size", "x")]).unwrap_err().to_string();
        assert!(err.starts_with("--pool-size (or NBGATE_POOL_SIZE)"), "{err}");
    }

    #[test]
    fn secrets_are_redacted() {
        let c = build(
            &[("NBGATE_REGISTRATION_KEY", "hunter2-key"), ("NBGATE_ACCESS_PASSWORD", "open-sesame")],
            &[],
        )
        .unwrap();
        assert_eq!(c.registration_key.as_ref().unwrap().expose(), "hunter2-key");
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2-key") && !shown.contains("open-sesame"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn sizes_follow_docker() {
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("2g"), Some(2 << 30));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_size("m"), None);
        assert_eq!(parse_size("-5m"), None);
    }

    #[test]
    fn derived_cap_leaves_headroom() {
        let gib = 1u64 << 30;
        assert_eq!(derived_max_containers(Some(24 * gib), 512 << 20), 41);
        assert_eq!(derived_max_containers(Some(gib), 512 << 20), 1);
        assert_eq!(derived_max_containers(None, 512 << 20), 8);
    }
}
