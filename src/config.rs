//! Typed settings, layered: built-in defaults < TOML file (`--config`) < `SHOAL_*`
//! environment variables < command-line flags. Unknown keys are errors at every layer,
//! so a misspelt setting is reported instead of silently ignored.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

/// A secret value: usable by the program, never shown by `Debug` or `Display`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on; 0 picks a free one (tests).
    pub port: u16,
    /// `postgres://…` for PostgreSQL, `sqlite:…` for a SQLite file elsewhere; unset
    /// means the embedded SQLite store in `data_dir`.
    pub database_url: Option<Secret>,
    /// Where the embedded store keeps its files.
    pub data_dir: PathBuf,
    /// Most connections the store pool opens.
    pub database_max_connections: u32,
    /// How long a request waits for a store connection before it is answered
    /// `unavailable`, in milliseconds.
    pub database_acquire_timeout_ms: u64,
    /// Key that signs access tokens; unset means one generated once and kept in the
    /// store, shared by every node using it.
    pub jwt_secret: Option<Secret>,
    /// Lifetime of an access token, in seconds.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a refresh token, in seconds.
    pub refresh_token_ttl_secs: u64,
    /// Largest request body accepted, in bytes (CSV imports have their own limit).
    pub max_body_bytes: usize,
    /// Largest CSV import accepted, in bytes.
    pub max_import_bytes: usize,
    /// HTTP worker threads; 0 means one per core.
    pub http_workers: usize,
    /// Argon2id memory cost in KiB for password hashes.
    pub argon2_memory_kib: u32,
    /// Argon2id passes over memory.
    pub argon2_iterations: u32,
    /// `redis://…` to fan events out to the other nodes of a cluster; unset for one node.
    pub redis_url: Option<Secret>,
    /// The Redis pub/sub channel the nodes of one cluster share; it also prefixes the
    /// cluster's Redis keys (board leases).
    pub redis_channel: String,
    /// The base URL other nodes reach this node at, for forwarded writes (cluster
    /// mode). Unset: `http://<host>:<port>`, which needs a host other nodes can reach.
    pub advertise_url: Option<String>,
    /// How long a board's lease lasts without renewal, in milliseconds: the time for
    /// another node to take over a board whose owner died. Renewed every third of it.
    pub lease_ttl_ms: u64,
    /// A topic actor with no subscribers is stopped after this many idle seconds.
    pub passivate_after_secs: u64,
    /// Frames one WebSocket connection may have waiting; past that the client is told
    /// to resync.
    pub ws_outbound_queue: usize,
    /// Bearer token that `/metrics` asks for; unset means `/metrics` is off. The
    /// figures say how busy the node is and with how many connections, which is no
    /// one's business but its operators'.
    pub metrics_token: Option<Secret>,
    /// Serve the web app's files from this folder (a checkout's `web/`) instead of the
    /// copies compiled into the binary: for working on the app, where an edit then
    /// needs a restart, not a rebuild. Read once at start-up.
    pub web_dir: Option<PathBuf>,
    /// E-mail inboxes may name mail servers at loopback, private or link-local
    /// addresses (an on-premises server, a test machine). Off by default: a workspace
    /// admin could otherwise make this server connect into its own network.
    pub mail_allow_private_hosts: bool,
    /// Largest attachment of an incoming mail kept, in bytes; a larger one is
    /// described on its message but not kept.
    pub mail_attachment_max_bytes: usize,
    /// How long an e-mail inbox whose server refuses its login waits before trying
    /// again, in seconds (saving its settings tries at once).
    pub mail_failing_retry_secs: u64,
    /// A reply left `sending` this long (its node died mid-send) is sent again, in
    /// seconds. Shorter risks a second copy of a slow send; longer delays the reply.
    pub mail_send_stale_secs: u64,
    /// Run the e-mail workers (mailbox sync, reply sending) on this node. Off for a node
    /// that should only serve clients; in a cluster the nodes that run them share the
    /// work through leases.
    pub mail_workers: bool,
    /// The SMTP server this server mails members' notifications through (assigned to
    /// them, mentioned), for members who ask for it: `smtps://user:password@host:465`
    /// (TLS), `smtp://user:password@host:587` (STARTTLS), or `smtp+plain://host:port`
    /// (plain, only to this machine). Unset: no notification mails.
    pub notify_smtp_url: Option<Secret>,
    /// The address notification mails come from.
    pub notify_from: Option<String>,
    /// Where people reach this server's web app (`https://crm.example.com`), for the
    /// links in notification mails; unset, the mails carry no link.
    pub public_url: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            host: "127.0.0.1".into(),
            port: 8080,
            database_url: None,
            data_dir: PathBuf::from("./data"),
            database_max_connections: 10,
            database_acquire_timeout_ms: 5000,
            jwt_secret: None,
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            max_body_bytes: 1024 * 1024,
            max_import_bytes: 20 * 1024 * 1024,
            http_workers: 0,
            // OWASP's recommended minimum for argon2id: 19 MiB, 2 passes.
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            redis_url: None,
            redis_channel: "shoal:events".into(),
            advertise_url: None,
            lease_ttl_ms: 5000,
            passivate_after_secs: 300,
            ws_outbound_queue: 1024,
            metrics_token: None,
            web_dir: None,
            mail_allow_private_hosts: false,
            mail_attachment_max_bytes: 25 * 1024 * 1024,
            mail_failing_retry_secs: 300,
            mail_send_stale_secs: 120,
            mail_workers: true,
            notify_smtp_url: None,
            notify_from: None,
            public_url: None,
        }
    }
}

/// Every key, with its environment variable name derived as `SHOAL_<KEY>`.
const KEYS: &[&str] = &[
    "host",
    "port",
    "database_url",
    "data_dir",
    "database_max_connections",
    "database_acquire_timeout_ms",
    "jwt_secret",
    "access_token_ttl_secs",
    "refresh_token_ttl_secs",
    "max_body_bytes",
    "max_import_bytes",
    "http_workers",
    "argon2_memory_kib",
    "argon2_iterations",
    "redis_url",
    "redis_channel",
    "advertise_url",
    "lease_ttl_ms",
    "passivate_after_secs",
    "ws_outbound_queue",
    "metrics_token",
    "web_dir",
    "mail_allow_private_hosts",
    "mail_attachment_max_bytes",
    "mail_failing_retry_secs",
    "mail_send_stale_secs",
    "mail_workers",
    "notify_smtp_url",
    "notify_from",
    "public_url",
];

/// Environment variables with the prefix that are not settings but still ours.
const OTHER_ENV: &[&str] = &["SHOAL_LOG", "SHOAL_TOKEN"];

impl Settings {
    pub fn acquire_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.database_acquire_timeout_ms)
    }

    /// Loads defaults, then `file`, then the `SHOAL_*` variables in `env`.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Settings> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("{} is not valid TOML", path.display()))?
            }
            None => toml::Table::new(),
        };
        for (name, value) in env {
            let Some(key) = name.strip_prefix("SHOAL_") else { continue };
            if OTHER_ENV.contains(&name.as_str()) || key.starts_with("TEST_") {
                continue;
            }
            let key = key.to_ascii_lowercase();
            if !KEYS.contains(&key.as_str()) {
                bail!("unknown setting {name} in the environment; known: {}", env_names().join(", "));
            }
            // Checked alone first, so that a bad value is named by its variable.
            let mut alone = toml::Table::new();
            alone.insert(key.clone(), env_value(&value));
            if let Err(e) = Settings::deserialize(toml::Value::Table(alone)) {
                bail!("invalid value for {name}: {}", e.message());
            }
            table.insert(key, env_value(&value));
        }
        let settings: Settings = Settings::deserialize(toml::Value::Table(table)).map_err(|e| anyhow::anyhow!("invalid settings: {e}"))?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.access_token_ttl_secs == 0 || self.refresh_token_ttl_secs == 0 {
            bail!("token lifetimes must be positive");
        }
        if self.max_body_bytes < 1024 {
            bail!("max_body_bytes must be at least 1024");
        }
        if let Some(s) = &self.jwt_secret {
            if s.expose().len() < 32 {
                bail!("jwt_secret must be at least 32 characters");
            }
        }
        if self.lease_ttl_ms < 300 {
            bail!("lease_ttl_ms must be at least 300");
        }
        if let Some(url) = &self.advertise_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.ends_with('/') {
                bail!("advertise_url must be an http(s) URL without a trailing slash, such as http://10.0.0.5:8080");
            }
        }
        if self.ws_outbound_queue < 16 {
            bail!("ws_outbound_queue must be at least 16");
        }
        if self.metrics_token.as_ref().is_some_and(|t| t.expose().len() < 16) {
            bail!("metrics_token must be at least 16 characters");
        }
        if self.argon2_memory_kib < 8 || self.argon2_iterations == 0 {
            bail!("argon2 cost settings are too low");
        }
        Ok(())
    }

    pub fn lease_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.lease_ttl_ms)
    }

    pub fn is_embedded(&self) -> bool {
        self.database_url.is_none()
    }
}

fn env_names() -> Vec<String> {
    KEYS.iter().map(|k| format!("SHOAL_{}", k.to_ascii_uppercase())).collect()
}

/// Environment values are strings; numbers and booleans are recognised so they can
/// fill typed settings.
fn env_value(s: &str) -> toml::Value {
    if let Ok(n) = s.parse::<i64>() {
        return toml::Value::Integer(n);
    }
    match s {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn the_environment_overrides_the_file_and_the_file_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("shoal-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("shoal.toml");
        std::fs::write(&file, "port = 9000\nhost = \"0.0.0.0\"\n").unwrap();
        let s = Settings::load(Some(&file), env(&[("SHOAL_PORT", "9100"), ("PATH", "/bin")])).unwrap();
        assert_eq!(s.port, 9100);
        assert_eq!(s.host, "0.0.0.0");
        assert_eq!(s.max_body_bytes, Settings::default().max_body_bytes);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn unknown_keys_are_rejected_in_the_file_and_the_environment() {
        let dir = std::env::temp_dir().join(format!("shoal-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("shoal.toml");
        std::fs::write(&file, "prot = 9000\n").unwrap();
        assert!(Settings::load(Some(&file), env(&[])).is_err());
        assert!(Settings::load(None, env(&[("SHOAL_PROT", "1")])).is_err());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_bad_value_in_the_environment_is_named_by_its_variable() {
        let e = Settings::load(None, env(&[("SHOAL_PORT", "eighty")])).unwrap_err().to_string();
        assert!(e.contains("SHOAL_PORT") && e.contains("u16"), "{e}");
        let e = Settings::load(None, env(&[("SHOAL_HTTP_WORKERS", "-1")])).unwrap_err().to_string();
        assert!(e.contains("SHOAL_HTTP_WORKERS"), "{e}");
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let s = Settings {
            jwt_secret: Some(Secret::new("x".repeat(40))),
            ..Settings::default()
        };
        assert!(!format!("{s:?}").contains("xxxx"));
    }
}
