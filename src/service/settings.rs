//! The daemon's settings: one TOML file (`sediment.toml`), environment overrides, and
//! command-line flags over both; unknown keys are refused and every value is checked
//! by [`Settings::validate`] when loaded, naming the key.
//!
//! With no file at all the embedded default applies: listen on `127.0.0.1:8408`, the
//! SQLite catalog `./sediment-catalog.db`, the built-in per-layer policies.
//!
//! Environment overrides (after the file, before flags): `SEDIMENT_LISTEN`,
//! `SEDIMENT_CATALOG`, `SEDIMENT_DAEMON_ID`, `SEDIMENT_WORKERS` (concurrency),
//! `SEDIMENT_ADMIN_TOKEN` and `SEDIMENT_READ_TOKEN` (comma-separated for several).
//! Tokens are kept only as SHA-256 hashes. Storage profiles take secrets from the
//! environment (`"${AWS_SECRET_ACCESS_KEY}"`), resolved when a table is opened.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytesize::ByteSize;
use sediment_catalog::{LayerPolicies, NewTable};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::error::{Error, Result};

/// Everything `sediment serve` and `sediment run-once` read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// The catalog: `sqlite://PATH` or `postgres://USER@HOST:PORT/DB`.
    pub catalog: String,
    /// This daemon's name in leases (default: host name and process id).
    pub daemon_id: Option<String>,
    pub workers: WorkerSettings,
    pub scheduler: SchedulerSettings,
    pub jobs: JobSettings,
    pub api: ApiSettings,
    pub auth: AuthSettings,
    /// Named storage options for table locations (`[storage.lake]`); a table names one.
    pub storage: BTreeMap<String, BTreeMap<String, String>>,
    /// Per-layer policy overrides over the built-in defaults (`[policies.bronze.compaction]`).
    pub policies: PolicyOverrides,
    /// Tables registered when the daemon starts (when not registered yet).
    pub tables: Vec<NewTable>,
    /// Pipelines between the tables (`[[pipelines]]`), by name.
    pub pipelines: Vec<crate::pipeline::PipelineSpec>,
    /// Storage prices for the cost report, USD per GB-month by class (default: S3's
    /// us-east-1 list prices).
    pub storage_prices: crate::maintain::tiering::StoragePrices,
}

/// Worker pool of one daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// Jobs running at once.
    pub concurrency: usize,
    /// Memory the running jobs share; each gets `memory_budget / concurrency`.
    pub memory_budget: ByteSize,
    /// How long a claim lasts without a heartbeat; a job whose daemon died is taken
    /// over after this.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often a running job renews its lease.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// How often an idle worker looks for work.
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// Attempts per job before it fails for good.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles with every further one.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// On SIGTERM, how long running jobs may go on before they are given back.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

/// The scheduler.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerSettings {
    /// Whether this daemon schedules jobs (every daemon may; the catalog keeps one active
    /// job per table and kind).
    pub enabled: bool,
    /// How often tables are looked at.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// A scheduled job waits up to this long (spread by table and kind) so a fleet of
    /// tables does not start at once.
    #[serde(with = "humantime_serde")]
    pub jitter: Duration,
    /// Tables looked at concurrently in a tick (each look is a log listing, and a
    /// whole log read the first time: on S3 a serial pass over many tables would keep
    /// the workers waiting).
    pub parallelism: usize,
}

/// Job history.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobSettings {
    /// Finished jobs are kept this long.
    #[serde(with = "humantime_serde")]
    pub history: Duration,
}

/// The HTTP API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Largest request body.
    pub max_body: ByteSize,
    /// Longest a request may take.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

/// API tokens.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    pub tokens: Vec<TokenSettings>,
}

/// One token: its SHA-256 (hex) and role. `printf %s TOKEN | sha256sum` makes the hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// Who it belongs to (logged, never the token).
    pub name: String,
    pub role: Role,
    pub sha256: String,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read tables, jobs, tags and metrics.
    Read,
    /// Also register tables, start and cancel jobs, tag, restore.
    Admin,
}

/// Per-layer overrides of the built-in policies (any subset of a policy's fields).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyOverrides {
    pub bronze: serde_json::Value,
    pub silver: serde_json::Value,
    pub gold: serde_json::Value,
}

/// The catalog of the embedded default.
pub const DEFAULT_CATALOG: &str = "sqlite://./sediment-catalog.db";
/// Where the API listens by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8408";

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("a socket address"),
            catalog: DEFAULT_CATALOG.into(),
            daemon_id: None,
            workers: WorkerSettings::default(),
            scheduler: SchedulerSettings::default(),
            jobs: JobSettings::default(),
            api: ApiSettings::default(),
            auth: AuthSettings::default(),
            storage: BTreeMap::new(),
            policies: PolicyOverrides::default(),
            tables: Vec::new(),
            pipelines: Vec::new(),
            storage_prices: Default::default(),
        }
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 2,
            memory_budget: ByteSize::gib(1),
            lease: Duration::from_secs(60),
            heartbeat: Duration::from_secs(15),
            poll: Duration::from_secs(2),
            max_attempts: 3,
            retry_backoff: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self { enabled: true, tick: Duration::from_secs(10), jitter: Duration::from_secs(5), parallelism: 8 }
    }
}

impl Default for JobSettings {
    fn default() -> Self {
        Self { history: Duration::from_secs(30 * 86_400) }
    }
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self { max_body: ByteSize::mib(1), request_timeout: Duration::from_secs(60) }
    }
}

impl Settings {
    /// Read `path` (or the embedded default when `None`), then the environment; validated.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let mut settings = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::invalid(format!("cannot read settings file {}: {e}", path.display())))?;
                Self::from_toml(&text).map_err(|e| e.context(format!("settings file {}", path.display())))?
            }
            None => Settings::default(),
        };
        settings.apply_env(|key| std::env::var(key).ok())?;
        settings.validate()?;
        Ok(settings)
    }

    /// Parse TOML (unknown keys refused, naming them); not yet validated.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::invalid(e.to_string().trim_end().to_string()))
    }

    /// Apply the `SEDIMENT_*` environment overrides read through `var`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<()> {
        if let Some(listen) = var("SEDIMENT_LISTEN") {
            self.listen = parse_listen(&listen).map_err(|e| e.context("SEDIMENT_LISTEN"))?;
        }
        if let Some(catalog) = var("SEDIMENT_CATALOG") {
            self.catalog = catalog;
        }
        if let Some(id) = var("SEDIMENT_DAEMON_ID") {
            self.daemon_id = Some(id);
        }
        if let Some(n) = var("SEDIMENT_WORKERS") {
            self.workers.concurrency = n
                .parse()
                .map_err(|_| Error::invalid(format!("SEDIMENT_WORKERS: expected a number of workers, found {n:?}")))?;
        }
        for (key, role) in [("SEDIMENT_ADMIN_TOKEN", Role::Admin), ("SEDIMENT_READ_TOKEN", Role::Read)] {
            if let Some(tokens) = var(key) {
                for token in tokens.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    self.auth.tokens.push(TokenSettings {
                        name: key.to_ascii_lowercase(),
                        role,
                        sha256: token_hash(token),
                    });
                }
            }
        }
        Ok(())
    }

    /// Refuse what cannot work, naming the key.
    pub fn validate(&self) -> Result<()> {
        let w = &self.workers;
        if w.concurrency == 0 || w.concurrency > 256 {
            return Err(Error::invalid(format!("workers.concurrency: 1 to 256, found {}", w.concurrency)));
        }
        if w.memory_budget.as_u64() / (w.concurrency as u64) < 16 * 1024 * 1024 {
            return Err(Error::invalid(format!(
                "workers.memory_budget: at least 16MiB per worker, found {} for {} workers",
                w.memory_budget, w.concurrency
            )));
        }
        if w.heartbeat.is_zero() || w.lease < w.heartbeat * 2 {
            return Err(Error::invalid(format!(
                "workers.lease: at least twice workers.heartbeat ({:?}), found {:?}",
                w.heartbeat, w.lease
            )));
        }
        if w.poll.is_zero() {
            return Err(Error::invalid("workers.poll: above zero"));
        }
        if w.max_attempts == 0 {
            return Err(Error::invalid("workers.max_attempts: at least 1, found 0"));
        }
        if self.scheduler.tick.is_zero() {
            return Err(Error::invalid("scheduler.tick: above zero"));
        }
        if !self.catalog.starts_with("sqlite:")
            && !self.catalog.starts_with("postgres://")
            && !self.catalog.starts_with("postgresql://")
        {
            return Err(Error::invalid(format!(
                "catalog: expected sqlite://PATH or postgres://USER@HOST/DB, found {:?}",
                self.catalog
            )));
        }
        for (i, token) in self.auth.tokens.iter().enumerate() {
            if token.sha256.len() != 64 || !token.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::invalid(format!(
                    "auth.tokens[{i}].sha256: expected 64 hex digits (printf %s TOKEN | sha256sum), found {:?}",
                    token.sha256
                )));
            }
        }
        if self.auth.tokens.is_empty() && !self.listen.ip().is_loopback() {
            return Err(Error::invalid(format!(
                "auth.tokens: listening on {} (not loopback) needs at least one token (auth.tokens or SEDIMENT_ADMIN_TOKEN)",
                self.listen
            )));
        }
        self.storage_prices.validate("storage_prices").map_err(|e| Error::invalid(e.to_string()))?;
        let policies = self.layer_policies()?;
        for (i, table) in self.tables.iter().enumerate() {
            sediment_catalog::validate_table_name(&table.name)
                .map_err(|e| Error::invalid(format!("tables[{i}].{e}")))?;
            if let Some(profile) = &table.storage_options
                && !self.storage.contains_key(profile)
            {
                return Err(Error::invalid(format!(
                    "tables[{i}].storage_options: no [storage.{profile}] in the settings"
                )));
            }
            policies
                .get(table.layer)
                .with_overrides(table.policy.as_ref().unwrap_or(&serde_json::Value::Null))
                .map_err(|e| Error::invalid(format!("tables[{i}] ({}): {e}", table.name)))?;
            for (name, expression) in &table.constraints {
                crate::write::constraints::check_declared(name, expression).map_err(|e| {
                    Error::invalid(format!("tables[{i}] ({}).constraints: {}", table.name, e.message()))
                })?;
            }
        }
        crate::pipeline::validate_pipelines(&self.pipelines)?;
        Ok(())
    }

    /// The per-layer policies: the built-in ones with this file's overrides.
    pub fn layer_policies(&self) -> Result<LayerPolicies> {
        let p = &self.policies;
        LayerPolicies::with_overrides(&p.bronze, &p.silver, &p.gold).map_err(|e| Error::invalid(e.to_string()))
    }

    /// The storage options of a named profile, with `${VAR}` taken from the environment.
    pub fn storage_options(&self, profile: Option<&str>) -> Result<crate::StorageOptions> {
        let Some(profile) = profile else { return Ok(Default::default()) };
        let options = self.storage.get(profile).ok_or_else(|| {
            Error::invalid(format!("storage profile {profile:?} is not in the settings ([storage.{profile}])"))
        })?;
        options
            .iter()
            .map(|(key, value)| {
                Ok((key.clone(), expand_env(value).map_err(|e| e.context(format!("storage.{profile}.{key}")))?))
            })
            .collect()
    }

    /// This daemon's name in leases.
    pub fn daemon_id(&self) -> String {
        self.daemon_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
            let host = if host.is_empty() { "sediment".to_string() } else { host };
            format!("{host}-{}", std::process::id())
        })
    }
}

/// Parse `HOST:PORT`.
pub fn parse_listen(text: &str) -> Result<SocketAddr> {
    text.parse().map_err(|_| Error::invalid(format!("expected an address such as 127.0.0.1:8408, found {text:?}")))
}

/// The SHA-256 of a token, as hex.
pub fn token_hash(token: &str) -> String {
    let digest = sha2::Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Replace `${VAR}` with the environment's value; a missing variable is an error.
fn expand_env(value: &str) -> Result<String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| Error::invalid(format!("unclosed ${{ in {value:?}")))?;
        let name = &after[..end];
        let var = std::env::var(name).map_err(|_| Error::invalid(format!("environment variable {name} is not set")))?;
        out.push_str(&var);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sediment_catalog::Layer;

    #[test]
    fn the_example_config_loads() {
        let text = include_str!("../../sediment.example.toml");
        let settings = Settings::from_toml(text).unwrap();
        settings.validate().unwrap();
        assert_eq!(settings.tables.len(), 4);
        assert_eq!(settings.pipelines.len(), 3);
        let history = settings.pipelines.iter().find(|p| p.name == "customers_history").unwrap();
        assert_eq!(history.effective_at(), Some("event_seq"));
        let policies = settings.layer_policies().unwrap();
        assert_ne!(policies.bronze, sediment_catalog::Policy::builtin(Layer::Bronze), "the example overrides bronze");
    }

    #[test]
    fn declared_constraints_are_checked_when_the_settings_load() {
        let settings = |constraints: &str| {
            let text = format!(
                "[[tables]]\nname = \"s.orders\"\nlayer = \"silver\"\nlocation = \"/tmp/o\"\nconstraints = {constraints}\n"
            );
            Settings::from_toml(&text).and_then(|s| s.validate())
        };
        settings(r#"{ amount_ok = "amount >= 0" }"#).unwrap();
        let err = settings(r#"{ "bad name" = "amount >= 0" }"#).unwrap_err();
        assert!(err.to_string().contains("s.orders") && err.to_string().contains("bad name"), "{err}");
        let err = settings(r#"{ amount_ok = "amount >= " }"#).unwrap_err();
        assert!(err.to_string().contains("does not parse"), "{err}");
    }

    #[test]
    fn the_default_needs_no_file() {
        let settings = Settings::default();
        settings.validate().unwrap();
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8408");
        assert_eq!(settings.catalog, "sqlite://./sediment-catalog.db");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = Settings::from_toml("[workers]\nconcurency = 4\n").unwrap_err();
        assert!(err.to_string().contains("concurency"), "{err}");
        let err = Settings::from_toml("[workers]\nlease = \"ten minutes\"\n").unwrap_err();
        assert!(err.to_string().contains("lease"), "{err}");
        let err = Settings::from_toml("listen = \"localhost\"\n").unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
        let settings = Settings::from_toml("[policies.bronze.compaction]\nmin_small_file = 3\n").unwrap();
        let err = settings.validate().unwrap_err();
        assert!(err.to_string().contains("policies.bronze") && err.to_string().contains("min_small_file"), "{err}");
        let settings = Settings::from_toml("[policies.gold.vacuum]\nretention = \"3 weeks ago\"\n").unwrap();
        assert!(settings.validate().unwrap_err().to_string().contains("policies.gold.vacuum"));
        let settings = Settings::from_toml("[workers]\nlease = \"10s\"\nheartbeat = \"8s\"\n").unwrap();
        assert!(settings.validate().unwrap_err().to_string().contains("workers.lease"));
        let settings = Settings::from_toml("listen = \"0.0.0.0:8408\"\n").unwrap();
        assert!(settings.validate().unwrap_err().to_string().contains("auth.tokens"));
        let settings = Settings::from_toml("catalog = \"mysql://x\"\n").unwrap();
        assert!(settings.validate().unwrap_err().to_string().contains("catalog"));
    }

    #[test]
    fn environment_overrides_and_tokens() {
        let mut settings = Settings::default();
        let env = |key: &str| match key {
            "SEDIMENT_LISTEN" => Some("127.0.0.1:9999".to_string()),
            "SEDIMENT_ADMIN_TOKEN" => Some("a1, a2".to_string()),
            "SEDIMENT_READ_TOKEN" => Some("r1".to_string()),
            _ => None,
        };
        settings.apply_env(env).unwrap();
        settings.validate().unwrap();
        assert_eq!(settings.listen.port(), 9999);
        let roles: Vec<Role> = settings.auth.tokens.iter().map(|t| t.role).collect();
        assert_eq!(roles, [Role::Admin, Role::Admin, Role::Read]);
        assert_eq!(settings.auth.tokens[0].sha256, token_hash("a1"));
        assert!(!format!("{settings:?}").contains("\"a1\""), "tokens are kept as hashes only");
        let mut bad = Settings::default();
        assert!(bad.apply_env(|k| (k == "SEDIMENT_WORKERS").then(|| "many".to_string())).is_err());
    }
}
