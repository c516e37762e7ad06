//! Command line: `run` (the default), `mock`, `demo` and `check`.

use std::{
    net::SocketAddr,
    num::NonZeroU32,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::{Args, Parser, Subcommand};

use crate::{
    app::{App, StartError},
    config::{Config, ConfigError, LogFormat, KEY_ENV},
    mock::{self, FaultRates, MockConfig, WindowKind},
    secret::Secret,
    telemetry,
};

pub mod demo;

/// Exit code for a configuration error (sysexits EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

/// racknap-proxy: a rate-limit-aware egress sidecar for the RackNap API.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: ProxyArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (the default when no command is given).
    Run(ProxyArgs),
    /// Run the bundled RackNap mock API.
    Mock(MockArgs),
    /// Start the mock and the proxy in one process, drive traffic at three times the limit
    /// through the proxy and print a report.
    Demo(demo::DemoArgs),
    /// Validate a configuration and exit.
    Check(ProxyArgs),
    /// Print the effective configuration (file + flags) as TOML, secrets redacted.
    PrintConfig(ProxyArgs),
}

/// Flags that override the config file.
#[derive(Debug, Args, Clone, Default)]
pub struct ProxyArgs {
    /// TOML config file (every key optional; see config/racknap-proxy.toml).
    #[arg(long, env = "RACKNAP_PROXY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Proxy listen address (server.listen).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Admin listen address for /metrics and /healthz (server.admin_listen).
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Upstream base URL (upstream.url).
    #[arg(long)]
    pub upstream: Option<String>,
    /// Extra CA certificate file, PEM (upstream.ca_file).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// File holding the API key, re-read when it changes (key.file).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Requests per window (budget.limit).
    #[arg(long)]
    pub limit: Option<NonZeroU32>,
    /// Window, with a unit: 60s, 1m, 500ms (budget.window).
    #[arg(long, value_parser = parse_duration)]
    pub window: Option<Duration>,
    /// Log format (log.format).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Allow a non-loopback --listen without inbound tokens (server.allow_public_bind); warns.
    #[arg(long)]
    pub allow_public_bind: bool,
}

/// `mock` flags.
#[derive(Debug, Args)]
pub struct MockArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Requests per window.
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
    /// Window, with a unit.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub window: Duration,
    /// The API key the mock accepts (else RACKNAP_API_KEY).
    #[arg(long, env = KEY_ENV, hide_env_values = true)]
    pub key: String,
    /// `fixed` or `sliding`.
    #[arg(long, default_value = "fixed")]
    pub window_kind: WindowKind,
    /// The mock's clock runs this many milliseconds ahead (negative: behind).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub clock_skew_ms: i64,
    /// Another consumer spends this many requests per second of the same account.
    #[arg(long, default_value_t = 0.0)]
    pub external_rate: f64,
    /// Delay before each answer, with a unit.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub latency: Duration,
    /// Fraction of requests answered 502, 503 or 504 (no budget spent).
    #[arg(long, default_value_t = 0.0)]
    pub fault_5xx_rate: f64,
    /// Fraction of requests whose connection is closed without an answer.
    #[arg(long, default_value_t = 0.0)]
    pub fault_reset_rate: f64,
    /// Fraction of requests answered only after --fault-slow.
    #[arg(long, default_value_t = 0.0)]
    pub fault_slow_rate: f64,
    /// Delay of a slow answer, with a unit.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub fault_slow: Duration,
    /// Seed of the fault generator (same seed, same faults).
    #[arg(long, default_value_t = 1)]
    pub fault_seed: u64,
}

/// Parse a duration written with a unit (`2s`, `500ms`, `1m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration with a unit like 2s, 500ms or 1m: {e}"))
}

impl ProxyArgs {
    /// The file (if any) with these flags applied, validated.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut cfg = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        self.apply(&mut cfg);
        cfg.validate()?;
        Ok(cfg)
    }

    fn apply(&self, cfg: &mut Config) {
        if let Some(v) = self.listen {
            cfg.server.listen = v;
        }
        if let Some(v) = self.admin_listen {
            cfg.server.admin_listen = v;
        }
        if let Some(v) = &self.upstream {
            cfg.upstream.url = v.clone();
        }
        if let Some(v) = &self.ca_file {
            cfg.upstream.ca_file = Some(v.clone());
        }
        if let Some(v) = &self.key_file {
            cfg.key.file = Some(v.clone());
        }
        if let Some(v) = self.limit {
            cfg.budget.limit = v;
        }
        if let Some(v) = self.window {
            cfg.budget.window = v;
        }
        if let Some(v) = self.log_format {
            cfg.log.format = v;
        }
        if self.allow_public_bind {
            cfg.server.allow_public_bind = true;
        }
    }
}

/// Parse the command line and run; the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("racknap-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        None => runtime.block_on(run(cli.run)),
        Some(Command::Run(args)) => runtime.block_on(run(args)),
        Some(Command::Check(args)) => check(&args),
        Some(Command::PrintConfig(args)) => print_config(&args),
        Some(Command::Mock(args)) => runtime.block_on(run_mock(args)),
        Some(Command::Demo(args)) => runtime.block_on(demo::run(args)),
    }
}

/// Help and version exit 0; a bad flag value is a configuration error (78); other usage errors 2.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let _ = e.print();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            ExitCode::SUCCESS
        }
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => ExitCode::from(EXIT_CONFIG),
        _ => ExitCode::from(2),
    }
}

fn config_error(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("racknap-proxy: {e}");
    ExitCode::from(EXIT_CONFIG)
}

fn env_key() -> Option<String> {
    std::env::var(KEY_ENV).ok()
}

fn check(args: &ProxyArgs) -> ExitCode {
    let cfg = match args.load() {
        Ok(cfg) => cfg,
        Err(e) => return config_error(&e),
    };
    if let Err(e) = cfg.key_source(env_key()) {
        return config_error(&e);
    }
    let source = args.config.as_deref().map_or("built-in defaults".to_string(), |p: &Path| p.display().to_string());
    println!(
        "config OK ({source}): listen {}, upstream {}, {} requests per {}",
        cfg.server.listen,
        cfg.upstream.url,
        cfg.budget.limit,
        humantime::format_duration(cfg.budget.window)
    );
    ExitCode::SUCCESS
}

/// The effective config as TOML. Tokens print as `name:<redacted>`; the key is never part of
/// the config (only `key.file`, a path).
fn print_config(args: &ProxyArgs) -> ExitCode {
    let cfg = match args.load() {
        Ok(cfg) => cfg,
        Err(e) => return config_error(&e),
    };
    match toml::to_string(&cfg) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("racknap-proxy: cannot print the config: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: ProxyArgs) -> ExitCode {
    let cfg = match args.load() {
        Ok(cfg) => cfg,
        Err(e) => return config_error(&e),
    };
    telemetry::init(cfg.log.format, &cfg.log.level);
    let key = match cfg.key_source(env_key()) {
        Ok(k) => k,
        Err(e) => return config_error(&e),
    };
    let app = match App::start(&cfg, key).await {
        Ok(app) => app,
        Err(e @ StartError::Config(_)) => return config_error(&e),
        Err(e) => {
            eprintln!("racknap-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    wait_for_signals(&app).await;
    app.shutdown().await;
    ExitCode::SUCCESS
}

/// Until SIGTERM or SIGINT; SIGHUP re-reads the key file.
async fn wait_for_signals(app: &App) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("Received SIGTERM"); return; }
            _ = tokio::signal::ctrl_c() => { tracing::info!("Received SIGINT"); return; }
            _ = hup.recv() => match app.keys.reload() {
                Ok(changed) => tracing::info!(changed, "Received SIGHUP: key re-read"),
                Err(e) => tracing::warn!(error = %e, "Received SIGHUP: cannot re-read the key"),
            },
        }
    }
}

async fn run_mock(args: MockArgs) -> ExitCode {
    telemetry::init(LogFormat::Text, "info");
    let Some(key) = Secret::new(&args.key) else {
        return config_error(&"mock: --key (or RACKNAP_API_KEY) must not be empty");
    };
    if args.limit == 0 || args.window.is_zero() {
        return config_error(&"mock: --limit and --window must be greater than zero");
    }
    let faults = FaultRates {
        status_5xx: args.fault_5xx_rate,
        reset: args.fault_reset_rate,
        slow: args.fault_slow_rate,
        slow_for: args.fault_slow,
        seed: args.fault_seed,
    };
    if let Err(e) = faults.check() {
        return config_error(&format!("mock: {e}"));
    }
    let mut cfg = MockConfig::new(key);
    cfg.faults = faults;
    cfg.listen = args.listen;
    cfg.limit = args.limit;
    cfg.window = args.window;
    cfg.window_kind = args.window_kind;
    cfg.clock_skew_ms = args.clock_skew_ms;
    cfg.external_rate = args.external_rate;
    cfg.latency = args.latency;
    match mock::run(cfg).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("racknap-proxy mock: {e}");
            ExitCode::FAILURE
        }
    }
}
