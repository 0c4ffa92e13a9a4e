//! The agent's systemd unit in `deploy/`: it passes `systemd-analyze verify` without a
//! remark (a misspelt directive is only a warning to systemd, which would then run the agent
//! without it), runs `idem-agent run` on the state directory systemd makes for it, and is
//! restarted whatever ended it (the agent is what ends elevations on time).

use std::path::Path;
use std::process::Command;

#[test]
fn the_agent_unit_verifies_and_follows_the_feed_from_its_state_directory() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/idem-agent.service"),
    )
    .unwrap();
    let value = |key: &str| -> Vec<&str> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    };
    assert_eq!(value("ExecStart"), ["/usr/local/bin/idem-agent run"]);
    assert_eq!(value("StateDirectory"), ["idem-agent"]);
    assert_eq!(
        value("Environment"),
        ["IDEM_AGENT_STATE=/var/lib/idem-agent"],
        "the state directory systemd makes"
    );
    assert_eq!(value("Restart"), ["always"]);
    // What the agent writes: the account files and the homes it makes.
    assert_eq!(value("ReadWritePaths"), ["/etc /home"]);

    // verify needs the program to exist: the one just built stands in for the installed one.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("idem-agent.service");
    let unit = unit.replace(
        "/usr/local/bin/idem-agent",
        env!("CARGO_BIN_EXE_idem-agent"),
    );
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
