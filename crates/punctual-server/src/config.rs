//! `punctual serve`'s configuration: a TOML file, `PUNCTUAL_*` environment variables and flags.
//!
//! Precedence, highest first: a flag, its environment variable, the file (`--config PATH` or
//! `PUNCTUAL_CONFIG`), the default. Every option is in `punctual.example.toml` at the
//! repository's root with what it does. Unknown keys in the file are refused, so a misspelt
//! option is an error rather than a silent default.
//!
//! Owns the options, their defaults and their checks. Must not start anything.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::BoolishValueParser;
use ipnet::IpNet;
use punctual::Config;
use punctual_core::NodeId;
use serde::Deserialize;

use crate::node::NodeConfig;
use crate::webhook::sign::{SECRETS_MAX, Secret};

/// The port `punctual serve` listens on by default.
pub const PORT_DEFAULT: u16 = 7272;
/// The store when none is named: an embedded SQLite file in the working directory.
pub const STORE_DEFAULT: &str = "sqlite:punctual.db";
/// Most webhooks (and other in-process handlers) in flight per node by default.
pub const CONCURRENCY_DEFAULT: usize = 1_000;
/// Longest configuration file read, in bytes.
const FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Most allowed networks.
const ALLOW_NETWORKS_MAX: usize = 64;
/// Largest test-only clock skew either way: a day.
const TEST_CLOCK_SKEW_MAX_MS: i64 = 86_400_000;

/// `punctual serve`'s flags; each also reads its `PUNCTUAL_*` environment variable.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServeArgs {
    /// A TOML configuration file (see punctual.example.toml).
    #[arg(long, env = "PUNCTUAL_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Listen on this address [default: 127.0.0.1:7272].
    #[arg(long, env = "PUNCTUAL_LISTEN", value_name = "ADDRESS")]
    pub listen: Option<String>,
    /// The store: sqlite:PATH (embedded) or postgres://... (a cluster of nodes) [default:
    /// sqlite:punctual.db].
    #[arg(long, env = "PUNCTUAL_STORE", value_name = "STORE")]
    pub store: Option<String>,
    /// With PostgreSQL: the schema punctual's tables are in [default: the search_path].
    #[arg(long, env = "PUNCTUAL_SCHEMA", value_name = "NAME")]
    pub schema: Option<String>,
    /// This node's name, recorded as the holder of its leases [default: hostname-pid].
    #[arg(long, env = "PUNCTUAL_NODE", value_name = "NAME")]
    pub node: Option<String>,
    /// Log lines as text or json [default: text].
    #[arg(long, env = "PUNCTUAL_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// What to log, as a tracing filter (like info or info,punctual=debug) [default: info].
    #[arg(long, env = "PUNCTUAL_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Most webhooks in flight at once on this node [default: 1000].
    #[arg(long, env = "PUNCTUAL_CONCURRENCY", value_name = "N")]
    pub concurrency: Option<usize>,
    /// A webhook signing secret (whsec_...); give several to rotate. Replaces the file's.
    #[arg(
        long = "webhook-secret",
        env = "PUNCTUAL_WEBHOOK_SECRETS",
        value_delimiter = ',',
        value_name = "SECRET"
    )]
    pub webhook_secrets: Vec<String>,
    /// A network webhooks may reach despite the SSRF guard (like 10.0.0.0/8). Replaces the
    /// file's.
    #[arg(
        long = "allow-network",
        env = "PUNCTUAL_ALLOW_NETWORKS",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub allow_networks: Vec<String>,
    /// Serve /metrics without a token.
    #[arg(long, env = "PUNCTUAL_METRICS_PUBLIC", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub metrics_public: Option<bool>,
    /// DEVELOPMENT ONLY: serve every request without a token. Refused on anything but a
    /// loopback address.
    #[arg(long, env = "PUNCTUAL_INSECURE_NO_AUTH", num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub insecure_no_auth: Option<bool>,
    /// TEST ONLY, hidden from --help: move this node's own clock by this many milliseconds
    /// before the database's clock corrects it (PostgreSQL only), so the fault tests can show
    /// that a node whose wall clock is wrong still fires on time. No file key: a configuration
    /// meant for production cannot carry it.
    #[arg(
        long = "test-clock-skew-ms",
        env = "PUNCTUAL_TEST_CLOCK_SKEW_MS",
        hide = true,
        allow_negative_numbers = true,
        value_name = "MS"
    )]
    pub test_clock_skew_ms: Option<i64>,
}

/// The file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<String>,
    store: Option<String>,
    schema: Option<String>,
    node: Option<String>,
    log_format: Option<String>,
    log_level: Option<String>,
    metrics_public: Option<bool>,
    insecure_no_auth: Option<bool>,
    #[serde(default)]
    engine: EngineFile,
    #[serde(default)]
    idempotency: IdempotencyFile,
    #[serde(default)]
    webhooks: WebhooksFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EngineFile {
    concurrency: Option<usize>,
    lease_ms: Option<u64>,
    heartbeat_ms: Option<u64>,
    leader_lease_ms: Option<u64>,
    grace_ms: Option<u64>,
    retention_hours: Option<u64>,
    schedule_ahead_ms: Option<u64>,
    occurrence_retention_hours: Option<u64>,
    queues: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdempotencyFile {
    ttl_hours: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhooksFile {
    secrets: Option<Vec<String>>,
    allow_networks: Option<Vec<String>>,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything `punctual serve` runs with, checked.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub node: NodeConfig,
    /// The store as named (`sqlite:PATH` or `postgres://...`); opened by the caller.
    pub store: String,
    pub schema: Option<String>,
    pub log_format: LogFormat,
    pub log_level: String,
    /// TEST ONLY (`--test-clock-skew-ms`): how far this node's own clock is moved before the
    /// database's clock corrects it, in milliseconds; 0 in every real deployment.
    pub test_clock_skew_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{option}: {reason}")]
    Invalid {
        option: &'static str,
        reason: String,
    },
}

fn invalid(option: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        option,
        reason: reason.into(),
    }
}

impl ServeConfig {
    /// Reads the file named by `args.config` (if any) and applies the flags (with their
    /// environment variables, which clap has already folded in) over it.
    pub fn load(args: &ServeArgs) -> Result<ServeConfig, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => File::default(),
        };
        ServeConfig::resolve(args, file)
    }

    fn resolve(args: &ServeArgs, file: File) -> Result<ServeConfig, ConfigError> {
        let listen_text = args
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| format!("127.0.0.1:{PORT_DEFAULT}"));
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            invalid(
                "listen",
                format!("{listen_text:?} is not an address like 127.0.0.1:{PORT_DEFAULT}"),
            )
        })?;
        let store = args
            .store
            .clone()
            .or(file.store)
            .unwrap_or_else(|| STORE_DEFAULT.to_owned());
        let schema = args.schema.clone().or(file.schema);
        let log_format = match args.log_format.clone().or(file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "log_format",
                    format!("{other:?} is not text or json"),
                ));
            }
        };
        let log_level = args
            .log_level
            .clone()
            .or(file.log_level)
            .unwrap_or_else(|| "info".to_owned());
        let insecure_no_auth = args
            .insecure_no_auth
            .or(file.insecure_no_auth)
            .unwrap_or(false);
        if insecure_no_auth && !listen.ip().is_loopback() {
            return Err(invalid(
                "insecure_no_auth",
                format!(
                    "serves without authentication, so it may listen only on a loopback address, not {listen}"
                ),
            ));
        }
        let metrics_public = args.metrics_public.or(file.metrics_public).unwrap_or(false);

        let mut engine = Config::default();
        if let Some(node) = args.node.clone().or(file.node) {
            engine.node = NodeId::new(&node).map_err(|error| invalid("node", error.to_string()))?;
        }
        engine.concurrency = args
            .concurrency
            .or(file.engine.concurrency)
            .unwrap_or(CONCURRENCY_DEFAULT);
        if !(1..=100_000).contains(&engine.concurrency) {
            return Err(invalid("concurrency", "must be within 1 ..= 100000"));
        }
        let millis = |option: &'static str,
                      value: Option<u64>,
                      min: u64,
                      max: u64|
         -> Result<Option<Duration>, ConfigError> {
            match value {
                Some(value) if !(min..=max).contains(&value) => Err(invalid(
                    option,
                    format!("{value} is outside {min} ..= {max}"),
                )),
                Some(value) => Ok(Some(Duration::from_millis(value))),
                None => Ok(None),
            }
        };
        if let Some(lease) = millis("engine.lease_ms", file.engine.lease_ms, 1_000, 3_600_000)? {
            engine.lease = lease;
            engine.heartbeat = lease / 3;
        }
        if let Some(heartbeat) = millis(
            "engine.heartbeat_ms",
            file.engine.heartbeat_ms,
            100,
            1_200_000,
        )? {
            if heartbeat * 2 > engine.lease {
                return Err(invalid(
                    "engine.heartbeat_ms",
                    "must be at most half of engine.lease_ms",
                ));
            }
            engine.heartbeat = heartbeat;
        }
        if let Some(leader_lease) = millis(
            "engine.leader_lease_ms",
            file.engine.leader_lease_ms,
            1_000,
            3_600_000,
        )? {
            engine.leader_lease = leader_lease;
            engine.leader_renew = leader_lease / 3;
        }
        if let Some(grace) = millis("engine.grace_ms", file.engine.grace_ms, 0, 3_600_000)? {
            engine.grace = grace;
        }
        if let Some(hours) = file.engine.retention_hours {
            if !(1..=24 * 366).contains(&hours) {
                return Err(invalid(
                    "engine.retention_hours",
                    "must be within 1 ..= 8784 (a year)",
                ));
            }
            engine.retention = Duration::from_secs(hours * 3600);
        }
        if let Some(ahead) = millis(
            "engine.schedule_ahead_ms",
            file.engine.schedule_ahead_ms,
            500,
            3_600_000,
        )? {
            engine.schedule_ahead = ahead;
        }
        if let Some(hours) = file.engine.occurrence_retention_hours {
            if !(1..=24 * 3660).contains(&hours) {
                return Err(invalid(
                    "engine.occurrence_retention_hours",
                    "must be within 1 ..= 87840 (ten years)",
                ));
            }
            engine.occurrence_retention = Duration::from_secs(hours * 3600);
        }
        if let Some(queues) = file.engine.queues {
            let queues = queues
                .iter()
                .map(|queue| {
                    punctual_core::Queue::new(queue)
                        .map_err(|error| invalid("engine.queues", error.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            engine.queues = Some(queues);
        }
        let ttl_hours = file.idempotency.ttl_hours.unwrap_or(24);
        if !(1..=24 * 30).contains(&ttl_hours) {
            return Err(invalid(
                "idempotency.ttl_hours",
                "must be within 1 ..= 720 (30 days)",
            ));
        }

        let secret_texts = if args.webhook_secrets.is_empty() {
            file.webhooks.secrets.unwrap_or_default()
        } else {
            args.webhook_secrets.clone()
        };
        if secret_texts.len() > SECRETS_MAX {
            return Err(invalid(
                "webhooks.secrets",
                format!("at most {SECRETS_MAX}"),
            ));
        }
        let webhook_secrets = secret_texts
            .iter()
            .enumerate()
            .map(|(index, text)| {
                Secret::parse(text).map_err(|error| {
                    invalid("webhooks.secrets", format!("secret {}: {error}", index + 1))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let network_texts = if args.allow_networks.is_empty() {
            file.webhooks.allow_networks.unwrap_or_default()
        } else {
            args.allow_networks.clone()
        };
        if network_texts.len() > ALLOW_NETWORKS_MAX {
            return Err(invalid(
                "webhooks.allow_networks",
                format!("at most {ALLOW_NETWORKS_MAX}"),
            ));
        }
        let allow_networks = network_texts
            .iter()
            .map(|text| {
                text.trim().parse::<IpNet>().map_err(|_| {
                    invalid(
                        "webhooks.allow_networks",
                        format!("{text:?} is not a network like 10.0.0.0/8"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let test_clock_skew_ms = args.test_clock_skew_ms.unwrap_or(0);
        if test_clock_skew_ms.abs() > TEST_CLOCK_SKEW_MAX_MS {
            return Err(invalid(
                "test_clock_skew_ms",
                format!("must be within +-{TEST_CLOCK_SKEW_MAX_MS}"),
            ));
        }
        // A SQLite node reads the system clock as it is: nothing would correct the skew.
        if test_clock_skew_ms != 0 && !store.starts_with("postgres") {
            return Err(invalid(
                "test_clock_skew_ms",
                "applies only to a PostgreSQL store, whose clock corrects it",
            ));
        }

        Ok(ServeConfig {
            node: NodeConfig {
                listen,
                engine,
                insecure_no_auth,
                metrics_public,
                idempotency_ttl: Duration::from_secs(ttl_hours * 3600),
                webhook_secrets,
                allow_networks,
            },
            store,
            schema,
            log_format,
            log_level,
            test_clock_skew_ms,
        })
    }
}

fn read_file(path: &Path) -> Result<File, ConfigError> {
    let error = |reason: String| ConfigError::File {
        path: path.to_owned(),
        reason,
    };
    let metadata = std::fs::metadata(path).map_err(|e| error(e.to_string()))?;
    if metadata.len() > FILE_BYTES_MAX {
        return Err(error(format!(
            "it is {} bytes; the limit is {FILE_BYTES_MAX}",
            metadata.len()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    toml::from_str(&text).map_err(|e| error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> File {
        toml::from_str(text).expect("valid TOML")
    }

    #[test]
    fn defaults_run_with_nothing_else() {
        let config = ServeConfig::resolve(&ServeArgs::default(), File::default()).expect("valid");
        assert_eq!(
            config.node.listen,
            SocketAddr::from(([127, 0, 0, 1], PORT_DEFAULT))
        );
        assert_eq!(config.store, STORE_DEFAULT);
        assert_eq!(config.node.engine.concurrency, CONCURRENCY_DEFAULT);
        assert!(!config.node.insecure_no_auth);
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.node.idempotency_ttl, Duration::from_secs(24 * 3600));
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let from_file = file(
            r#"
            listen = "127.0.0.1:9000"
            store = "sqlite:/var/lib/punctual.db"
            log_format = "json"
            [engine]
            concurrency = 50
            lease_ms = 6000
            leader_lease_ms = 1500
            [webhooks]
            allow_networks = ["10.0.0.0/8"]
            "#,
        );
        let args = ServeArgs {
            listen: Some("127.0.0.1:9100".to_owned()),
            ..ServeArgs::default()
        };
        let config = ServeConfig::resolve(&args, from_file).expect("valid");
        assert_eq!(config.node.listen.port(), 9100);
        assert_eq!(config.store, "sqlite:/var/lib/punctual.db");
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.node.engine.concurrency, 50);
        assert_eq!(config.node.engine.lease, Duration::from_secs(6));
        assert_eq!(config.node.engine.heartbeat, Duration::from_secs(2));
        assert_eq!(
            config.node.engine.leader_lease,
            Duration::from_millis(1_500)
        );
        assert_eq!(config.node.engine.leader_renew, Duration::from_millis(500));
        assert_eq!(config.node.allow_networks.len(), 1);
        assert_eq!(config.test_clock_skew_ms, 0);
    }

    #[test]
    fn bad_options_are_refused_with_their_name() {
        let refused = |args: ServeArgs, text: &str| {
            ServeConfig::resolve(&args, file(text))
                .expect_err("refused")
                .to_string()
        };
        assert!(refused(ServeArgs::default(), "listen = \"everywhere\"").starts_with("listen"));
        assert!(refused(ServeArgs::default(), "log_format = \"xml\"").starts_with("log_format"));
        assert!(
            refused(ServeArgs::default(), "[engine]\nlease_ms = 10").starts_with("engine.lease_ms")
        );
        assert!(
            refused(ServeArgs::default(), "[webhooks]\nsecrets = [\"nope\"]")
                .starts_with("webhooks.secrets")
        );
        assert!(
            refused(
                ServeArgs::default(),
                "[webhooks]\nallow_networks = [\"ten\"]"
            )
            .starts_with("webhooks.allow_networks")
        );
        let open = ServeArgs {
            listen: Some("0.0.0.0:7272".to_owned()),
            insecure_no_auth: Some(true),
            ..ServeArgs::default()
        };
        assert!(refused(open, "").starts_with("insecure_no_auth"));
        assert!(
            refused(ServeArgs::default(), "[engine]\nleader_lease_ms = 10")
                .starts_with("engine.leader_lease_ms")
        );
        let skewed = |store: &str| ServeArgs {
            store: Some(store.to_owned()),
            test_clock_skew_ms: Some(60_000),
            ..ServeArgs::default()
        };
        assert!(refused(skewed("sqlite:jobs.db"), "").starts_with("test_clock_skew_ms"));
        let config = ServeConfig::resolve(&skewed("postgres://h/db"), File::default())
            .expect("a skew on PostgreSQL");
        assert_eq!(config.test_clock_skew_ms, 60_000);
        assert!(
            toml::from_str::<File>("lissen = \"x\"").is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn the_example_file_in_the_repository_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../punctual.example.toml");
        let text = std::fs::read_to_string(&path).expect("the example exists");
        let parsed: File = toml::from_str(&text).expect("the example parses");
        ServeConfig::resolve(&ServeArgs::default(), parsed).expect("the example is valid");
    }
}
