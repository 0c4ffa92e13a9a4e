//! The deployment files in `deploy/`: the settings file resolves as the service would read it,
//! and the systemd unit passes `systemd-analyze verify` without a warning (an unknown or
//! misspelt directive is only a warning to systemd, which would then run the service without
//! it) and starts idemd with that settings file in the directory it reads.

use std::path::{Path, PathBuf};
use std::process::Command;

use api::Settings;
use api::config::Signup;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

#[test]
fn the_settings_file_resolves_to_a_loopback_https_deployment_with_closed_signup() {
    let config = Settings::from_file(&deploy("idem.toml"))
        .unwrap()
        .resolve()
        .unwrap();
    assert!(config.bind.ip().is_loopback(), "only the proxy is public");
    assert_eq!(config.public_scheme, "https");
    assert_eq!(config.signup, Signup::Closed);
    assert_eq!(config.data_dir, Path::new("/var/lib/idem"));
    assert!(
        !config.trusted_proxies.is_empty(),
        "the proxy names the client"
    );
    assert!(
        config.metrics_bind.is_some_and(|m| m.ip().is_loopback()),
        "the figures stay off the public side"
    );
}

#[test]
fn the_systemd_unit_verifies_and_runs_idemd_with_the_settings_file() {
    let unit = std::fs::read_to_string(deploy("idemd.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    assert_eq!(
        exec,
        "/usr/local/bin/idemd serve --config /etc/idem/idem.toml"
    );
    // The settings file's data directory is the unit's state directory.
    assert!(unit.lines().any(|l| l == "StateDirectory=idem"));
    let config = Settings::from_file(&deploy("idem.toml"))
        .unwrap()
        .resolve()
        .unwrap();
    assert_eq!(config.data_dir, Path::new("/var/lib").join("idem"));
    assert!(unit.lines().any(|l| l.starts_with("LimitNOFILE=")));

    // verify needs the program to exist: the one just built stands in for the installed one.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("idemd.service");
    let unit = unit.replace("/usr/local/bin/idemd", env!("CARGO_BIN_EXE_idemd"));
    std::fs::write(&copy, unit).unwrap();
    let verified = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian's systemd package; scripts/test installs it)");
    let said = String::from_utf8_lossy(&verified.stderr).into_owned()
        + &String::from_utf8_lossy(&verified.stdout);
    assert!(verified.status.success(), "{said}");
    assert!(said.trim().is_empty(), "systemd has remarks: {said}");
}
