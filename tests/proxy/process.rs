//! The binary: configuration errors, the missing key, `check`.

use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_racknap-proxy"));
    c.env_remove("RACKNAP_API_KEY").env_remove("RACKNAP_PROXY_CONFIG");
    c
}

#[test]
fn no_key_is_a_one_line_error_and_a_non_zero_exit() {
    let out = bin().args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RACKNAP_API_KEY"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn bad_config_names_the_key_and_exits_non_zero() {
    let dir = std::env::temp_dir().join(format!("racknap-proxy-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("[budget]\nwindow = \"10\"\n", "window"),
        ("[budget]\nlimit = 0\n", "limit"),
        ("[cache]\nmax_bytes = \"lots\"\n", "max_bytes"),
        ("[upstream]\nurl = \"ftp://example\"\n", "upstream.url"),
        ("[queue]\ncapacity = 0\n", "queue.capacity"),
        ("[nonsense]\n", "nonsense"),
    ];
    for (i, (toml, names)) in cases.iter().enumerate() {
        let path = dir.join(format!("c{i}.toml"));
        std::fs::write(&path, toml).unwrap();
        let out = bin().arg("check").arg("--config").arg(&path).env("RACKNAP_API_KEY", "k").output().unwrap();
        assert_eq!(out.status.code(), Some(78), "{toml}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(names), "{toml:?} -> {err}");
    }
}

#[test]
fn check_accepts_the_shipped_config_and_never_prints_the_key() {
    let out = bin()
        .args(["check", "--config", concat!(env!("CARGO_MANIFEST_DIR"), "/config/racknap-proxy.toml")])
        .env("RACKNAP_API_KEY", "sk_live_do_not_print_me")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(all.contains("config OK"));
    assert!(!all.contains("do_not_print_me"));
}

#[test]
fn durations_without_units_are_rejected_on_the_command_line() {
    let out = bin().args(["check", "--window", "60"]).env("RACKNAP_API_KEY", "k").output().unwrap();
    assert_eq!(out.status.code(), Some(78), "a bad flag value is a configuration error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unit"));
}
