//! Configuration: a TOML file (every key optional, defaults below), overridden by flags and the
//! environment, validated before anything binds. The API key itself is never part of the
//! config: only where it comes from ([`KeySource`]).

use std::{
    net::SocketAddr,
    num::NonZeroU32,
    path::{Path, PathBuf},
    time::Duration,
};

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::secret::{InboundToken, KeySource, Secret};

#[cfg(test)]
mod tests;

/// Environment variable holding the API key.
pub const KEY_ENV: &str = "RACKNAP_API_KEY";

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listeners and request limits.
    pub server: ServerConfig,
    /// Where requests go.
    pub upstream: UpstreamConfig,
    /// Where the API key comes from.
    pub key: KeyConfig,
    /// The account's rate limit.
    pub budget: BudgetConfig,
    /// The queue in front of the budget.
    pub queue: QueueConfig,
    /// 429 handling.
    pub retry: RetryConfig,
    /// The GET cache.
    pub cache: CacheConfig,
    /// Logging.
    pub log: LogConfig,
    /// Inbound authentication: who may use the key.
    pub auth: AuthConfig,
}

/// `[server]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Proxy listener (HTTP/1.1 and h2c).
    pub listen: SocketAddr,
    /// Admin listener: /metrics, /healthz, /readyz.
    pub admin_listen: SocketAddr,
    /// Largest request body accepted (buffered so a request can be replayed after a 429).
    pub max_request_body: ByteSize,
    /// Largest request head (request line and headers).
    pub max_header_bytes: ByteSize,
    /// A client must send its whole request head within this time.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A client must send its whole request body within this time (then 408).
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// On SIGTERM/SIGINT, how long in-flight and queued requests may take to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Path prefixes that are forwarded; everything else is refused.
    pub allowed_prefixes: Vec<String>,
    /// Allow a non-loopback `listen` without inbound authentication (logs a warning).
    pub allow_public_bind: bool,
    /// Most client connections open at once; further connections wait in the listen backlog.
    pub max_connections: usize,
    /// A connection with no request in flight and no bytes moving for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

/// `[auth]`: optional inbound tokens. Either list being non-empty turns authentication on.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Header carrying the client's token (never the upstream's `Authorization`).
    pub header: String,
    /// Tokens as `name:token`; the name becomes the client id.
    pub tokens: Vec<InboundToken>,
    /// A file of `name:token` lines, read at start.
    pub tokens_file: Option<PathBuf>,
}

impl AuthConfig {
    /// Whether inbound authentication is configured.
    pub fn is_enabled(&self) -> bool {
        !self.tokens.is_empty() || self.tokens_file.is_some()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { header: "x-proxy-token".into(), tokens: Vec::new(), tokens_file: None }
    }
}

/// `[upstream]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL: `https://host[:port]` or `http://host[:port]`.
    pub url: String,
    /// Extra CA certificates (PEM) trusted besides the public roots.
    pub ca_file: Option<PathBuf>,
    /// TCP + TLS connect timeout.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time allowed for the upstream's response head.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// `[key]`
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KeyConfig {
    /// File holding the key; re-read when it changes. Unset: `RACKNAP_API_KEY`.
    pub file: Option<PathBuf>,
}

/// `[budget]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Requests allowed per window (the server's `X-RateLimit-Limit` replaces it).
    pub limit: NonZeroU32,
    /// The window.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Fraction of the limit kept unused as a margin for timing jitter (0.0 to 0.5).
    pub headroom: f64,
}

/// `[queue]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Most requests waiting for a permit at once.
    pub capacity: usize,
    /// Longest a request waits for a permit.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Header naming the calling service (else the peer address).
    pub client_header: String,
    /// Header carrying a request's priority class: `high` or `low` (the default).
    pub priority_header: String,
    /// Share of the permits reserved for high priority while both classes wait (0 < share ≤ 1;
    /// 1 is strict priority). A class with nobody waiting lends its share to the other.
    pub high_priority_share: f64,
    /// Header a caller uses to say how long it will wait (`5s`), capped by `max_wait`.
    pub max_wait_header: String,
    /// Distinct client ids that get their own label in the per-client queue metrics (the rest
    /// are counted as `other`).
    pub client_metrics_limit: usize,
}

/// `[retry]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per request in all, the first included (1 = never retry a 429).
    pub max_attempts: NonZeroU32,
    /// Longest total time a request may spend waiting out 429s and backing off from faults.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Attempts per request in all when the upstream faults (reset, timeout, 502/503/504), the
    /// first included (1 = never retry a fault). Only idempotent methods are replayed once a
    /// request may have reached the upstream; a refused connection is retried for any method.
    pub fault_attempts: NonZeroU32,
    /// First backoff after a fault; it doubles per fault, with jitter (half to all of it).
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Longest single backoff.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

/// `[cache]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Cache successful GETs.
    pub enabled: bool,
    /// Freshness of an entry (an upstream `max-age` can shorten it).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Total size bound (bodies and headers).
    pub max_bytes: ByteSize,
    /// Bodies above this size are passed through, not cached.
    pub max_entry_bytes: ByteSize,
    /// Freshness per collection, replacing `ttl` there: `"/v1/customers" = "5m"`.
    pub ttl_by_collection: std::collections::BTreeMap<String, humantime_serde::Serde<Duration>>,
    /// How long past expiry an entry may still be served (`X-Cache: STALE`) while the account
    /// is rate limited or the upstream fails; zero turns stale serving off.
    #[serde(with = "humantime_serde")]
    pub stale_max: Duration,
    /// Serve a stale entry instead of queueing when the budget is spent for longer than this.
    #[serde(with = "humantime_serde")]
    pub stale_if_wait: Duration,
}

/// `[log]`
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter (`info`, `racknap_proxy=debug`); `RUST_LOG` overrides.
    pub level: String,
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8080).into(),
            admin_listen: ([127, 0, 0, 1], 9090).into(),
            max_request_body: ByteSize::mib(1),
            max_header_bytes: ByteSize::kib(64),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            allowed_prefixes: vec!["/v1/".into()],
            allow_public_bind: false,
            max_connections: 1024,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            url: "https://api.racknap.com".into(),
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
        }
    }
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self { limit: NonZeroU32::new(1000).unwrap(), window: Duration::from_secs(60), headroom: 0.01 }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            max_wait: Duration::from_secs(60),
            client_header: "x-client-id".into(),
            priority_header: "x-priority".into(),
            high_priority_share: 0.2,
            max_wait_header: "x-max-wait".into(),
            client_metrics_limit: 20,
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: NonZeroU32::new(3).unwrap(),
            max_wait: Duration::from_secs(90),
            fault_attempts: NonZeroU32::new(3).unwrap(),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: Duration::from_secs(30),
            max_bytes: ByteSize::mib(64),
            max_entry_bytes: ByteSize::mib(1),
            ttl_by_collection: std::collections::BTreeMap::new(),
            stale_max: Duration::ZERO,
            stale_if_wait: Duration::from_secs(1),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

/// A configuration problem: names the key and says what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config: {key}: {problem}")]
    Invalid {
        /// Dotted key, e.g. `budget.window`.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// No API key anywhere.
    #[error("no API key: set {KEY_ENV} or key.file in the config")]
    NoKey,
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, problem: problem.into() }
}

impl Config {
    /// Read and parse a TOML file (no validation yet).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse { path: path.to_owned(), message })
    }

    /// Parse TOML text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Check ranges and consistency. Every rejection names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        parse_upstream(&self.upstream.url)?;
        if self.budget.window < Duration::from_millis(100) {
            return Err(invalid("budget.window", "must be at least 100ms"));
        }
        if !(0.0..=0.5).contains(&self.budget.headroom) || self.budget.headroom.is_nan() {
            return Err(invalid("budget.headroom", "must be between 0.0 and 0.5"));
        }
        if self.queue.capacity == 0 {
            return Err(invalid("queue.capacity", "must be at least 1"));
        }
        if self.queue.max_wait.is_zero() {
            return Err(invalid("queue.max_wait", "must be greater than zero"));
        }
        if http::HeaderName::from_bytes(self.queue.client_header.as_bytes()).is_err() {
            return Err(invalid("queue.client_header", "is not a valid header name"));
        }
        if http::HeaderName::from_bytes(self.queue.priority_header.as_bytes()).is_err() {
            return Err(invalid("queue.priority_header", "is not a valid header name"));
        }
        if http::HeaderName::from_bytes(self.queue.max_wait_header.as_bytes()).is_err() {
            return Err(invalid("queue.max_wait_header", "is not a valid header name"));
        }
        if !(self.queue.high_priority_share > 0.0 && self.queue.high_priority_share <= 1.0) {
            return Err(invalid("queue.high_priority_share", "must be greater than 0.0 and at most 1.0"));
        }
        if self.retry.backoff_base.is_zero() || self.retry.backoff_max < self.retry.backoff_base {
            return Err(invalid("retry.backoff_base", "must be greater than zero and at most retry.backoff_max"));
        }
        if self.cache.enabled && self.cache.ttl.is_zero() {
            return Err(invalid("cache.ttl", "must be greater than zero (or set cache.enabled = false)"));
        }
        for (collection, ttl) in &self.cache.ttl_by_collection {
            let segments: Vec<&str> = collection.split('/').collect();
            if !matches!(segments.as_slice(), ["", version, name] if !version.is_empty() && !name.is_empty()) {
                return Err(invalid(
                    "cache.ttl_by_collection",
                    format!("{collection:?} is not a collection like \"/v1/customers\""),
                ));
            }
            if ttl.is_zero() {
                return Err(invalid("cache.ttl_by_collection", format!("{collection:?}: must be greater than zero")));
            }
        }
        if self.cache.max_entry_bytes > self.cache.max_bytes {
            return Err(invalid("cache.max_entry_bytes", "must not exceed cache.max_bytes"));
        }
        if self.server.max_request_body.as_u64() > 64 * 1024 * 1024 {
            return Err(invalid("server.max_request_body", "must be at most 64MiB (bodies are buffered for replay)"));
        }
        if self.server.max_header_bytes.as_u64() < 8192 {
            return Err(invalid("server.max_header_bytes", "must be at least 8KiB"));
        }
        if self.server.allowed_prefixes.is_empty() {
            return Err(invalid(
                "server.allowed_prefixes",
                "must name at least one prefix (else every request is refused)",
            ));
        }
        if self.server.allowed_prefixes.iter().any(|p| !p.starts_with('/') || !p.ends_with('/')) {
            return Err(invalid("server.allowed_prefixes", "each prefix must start and end with '/'"));
        }
        if self.server.listen == self.server.admin_listen && self.server.listen.port() != 0 {
            return Err(invalid("server.admin_listen", "must differ from server.listen"));
        }
        self.validate_exposure()?;
        if let Some(ca) = &self.upstream.ca_file {
            if !ca.is_file() {
                return Err(invalid("upstream.ca_file", format!("{} is not a readable file", ca.display())));
            }
        }
        Ok(())
    }

    /// Inbound authentication and where the proxy may listen.
    fn validate_exposure(&self) -> Result<(), ConfigError> {
        let h = http::HeaderName::from_bytes(self.auth.header.as_bytes())
            .map_err(|_| invalid("auth.header", "is not a valid header name"))?;
        let reserved =
            [http::header::AUTHORIZATION, http::header::PROXY_AUTHORIZATION, http::header::HOST, http::header::COOKIE];
        if reserved.contains(&h) {
            return Err(invalid("auth.header", format!("must not be {h}: it has a meaning of its own upstream")));
        }
        if self.server.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }
        if self.server.idle_timeout.is_zero() {
            return Err(invalid("server.idle_timeout", "must be greater than zero"));
        }
        if !self.server.listen.ip().is_loopback() && !self.auth.is_enabled() && !self.server.allow_public_bind {
            return Err(invalid(
                "server.listen",
                format!(
                    "{} is not a loopback address and inbound authentication is off: anything that reaches it \
                     could spend the account. Configure auth.tokens or auth.tokens_file, or accept the risk with \
                     server.allow_public_bind = true (--allow-public-bind)",
                    self.server.listen
                ),
            ));
        }
        Ok(())
    }

    /// Where the key comes from: `key.file` if set (it must hold a key now), else the
    /// environment variable's value as given by `env`.
    pub fn key_source(&self, env: Option<String>) -> Result<KeySource, ConfigError> {
        if let Some(path) = &self.key.file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid("key.file", format!("cannot read {}: {e}", path.display())))?;
            Secret::parse(&text).map_err(|problem| invalid("key.file", format!("{} {problem}", path.display())))?;
            return Ok(KeySource::File(path.clone()));
        }
        match env.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
            None => Err(ConfigError::NoKey),
            Some(v) => Secret::parse(v).map(KeySource::Env).map_err(|problem| invalid(KEY_ENV, problem)),
        }
    }
}

/// The upstream base, split and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamBase {
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    /// `host[:port]`.
    pub authority: http::uri::Authority,
}

/// Check `upstream.url`: http or https, a host, no path beyond `/`, no query, no credentials.
pub fn parse_upstream(url: &str) -> Result<UpstreamBase, ConfigError> {
    let key = "upstream.url";
    let uri: http::Uri = url.parse().map_err(|e| invalid(key, format!("{url:?} is not a URL: {e}")))?;
    let scheme = uri.scheme().cloned().ok_or_else(|| invalid(key, "must start with https:// or http://"))?;
    if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
        return Err(invalid(key, format!("scheme {scheme} is not http or https")));
    }
    let authority = uri.authority().cloned().ok_or_else(|| invalid(key, "has no host"))?;
    if authority.as_str().contains('@') {
        return Err(invalid(key, "must not carry credentials"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(invalid(key, "must be a bare origin such as https://api.racknap.com (no path or query)"));
    }
    Ok(UpstreamBase { scheme, authority })
}
