use super::*;

#[test]
fn the_shipped_file_is_the_defaults() {
    let text = include_str!("../../config/racknap-proxy.toml");
    let cfg = Config::from_toml(text).expect("shipped config parses");
    assert_eq!(cfg, Config::default());
    cfg.validate().unwrap();
}

#[test]
fn durations_and_sizes_take_units() {
    let cfg = Config::from_toml("[budget]\nwindow = \"500ms\"\n[cache]\nmax_bytes = \"8MiB\"\n").unwrap();
    assert_eq!(cfg.budget.window, Duration::from_millis(500));
    assert_eq!(cfg.cache.max_bytes, ByteSize::mib(8));
    assert!(Config::from_toml("[budget]\nwindow = 60\n").is_err());
    assert!(Config::from_toml("[budget]\nwindow = \"60\"\n").is_err());
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let err = Config::from_toml("[budget]\nlimt = 5\n").unwrap_err();
    assert!(err.contains("limt"), "{err}");
}

#[test]
fn zero_limit_is_rejected() {
    let err = Config::from_toml("[budget]\nlimit = 0\n").unwrap_err();
    assert!(err.contains("limit"), "{err}");
}

fn rejects(mutate: impl FnOnce(&mut Config), key: &str) {
    let mut cfg = Config::default();
    mutate(&mut cfg);
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains(key), "{err}");
}

#[test]
fn tiny_window_is_rejected() {
    rejects(|c| c.budget.window = Duration::from_millis(5), "budget.window");
}

#[test]
fn headroom_out_of_range_is_rejected() {
    rejects(|c| c.budget.headroom = 0.9, "budget.headroom");
    rejects(|c| c.budget.headroom = f64::NAN, "budget.headroom");
}

#[test]
fn zero_capacity_and_wait_are_rejected() {
    rejects(|c| c.queue.capacity = 0, "queue.capacity");
    rejects(|c| c.queue.max_wait = Duration::ZERO, "queue.max_wait");
}

#[test]
fn bad_upstream_urls_are_rejected() {
    for url in ["api.racknap.com", "ftp://x", "https://", "https://user:pw@host", "https://host/v1", "https://h?x=1"] {
        rejects(|c| c.upstream.url = url.into(), "upstream.url");
    }
    assert!(parse_upstream("http://127.0.0.1:8081").is_ok());
    assert!(parse_upstream("https://api.racknap.com/").is_ok());
}

#[test]
fn entry_larger_than_cache_is_rejected() {
    rejects(|c| c.cache.max_entry_bytes = ByteSize::gib(1), "cache.max_entry_bytes");
}

#[test]
fn bad_prefixes_and_header_names_are_rejected() {
    rejects(|c| c.server.allowed_prefixes = vec!["v1".into()], "server.allowed_prefixes");
    rejects(|c| c.server.allowed_prefixes = vec![], "server.allowed_prefixes");
    rejects(|c| c.queue.client_header = "bad header".into(), "queue.client_header");
}

#[test]
fn key_comes_from_file_first_then_env() {
    let cfg = Config::default();
    assert!(matches!(cfg.key_source(None), Err(ConfigError::NoKey)));
    assert!(matches!(cfg.key_source(Some("  ".into())), Err(ConfigError::NoKey)));
    assert!(matches!(cfg.key_source(Some("k".into())), Ok(KeySource::Env(_))));
    let mut with_file = Config::default();
    with_file.key.file = Some("/nonexistent/key".into());
    let err = with_file.key_source(Some("k".into())).unwrap_err().to_string();
    assert!(err.contains("key.file"), "{err}");
}

#[test]
fn debug_output_holds_no_key() {
    let source = Config::default().key_source(Some("sk_live_secret_value".into())).unwrap();
    assert!(!format!("{source:?}").contains("secret_value"));
}

#[test]
fn priority_and_max_wait_keys_are_checked() {
    rejects(|c| c.queue.high_priority_share = 0.0, "queue.high_priority_share");
    rejects(|c| c.queue.high_priority_share = 1.5, "queue.high_priority_share");
    rejects(|c| c.queue.high_priority_share = f64::NAN, "queue.high_priority_share");
    rejects(|c| c.queue.priority_header = "bad header".into(), "queue.priority_header");
    rejects(|c| c.queue.max_wait_header = "".into(), "queue.max_wait_header");
}

#[test]
fn zero_or_inverted_backoff_is_rejected() {
    rejects(|c| c.retry.backoff_base = Duration::ZERO, "retry.backoff_base");
    rejects(|c| c.retry.backoff_max = Duration::from_millis(1), "retry.backoff_base");
}

#[test]
fn an_env_key_that_cannot_be_a_header_is_rejected_by_name() {
    let err = Config::default().key_source(Some("abc\ndef".into())).unwrap_err().to_string();
    assert!(err.contains(KEY_ENV) && err.contains("line break") && !err.contains("abc"), "{err}");
}
