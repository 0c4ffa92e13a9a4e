//! Ending accounts' sessions on Linux: every process running as one of their uids (real or
//! effective: a `sudo` it started included) gets SIGKILL, found under the root's `proc`
//! (`/proc` on a real machine; under a throwaway root, only what a test puts there). One scan
//! of the process table serves every account to end at once: a snapshot of the directory
//! can disable hundreds of users, and each scan reads every process's status.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use rustix::process::{Pid, Signal, kill_process};

use super::AccountError;

/// How many times the process table is read again for processes started meanwhile (a shell
/// forking as it is stopped). A process that got SIGKILL starts nothing more, so only a
/// chain of forks racing the scans needs more than two rounds.
const ROUNDS: usize = 16;

/// What `proc/PID/status` says of a process.
struct Status {
    real_uid: u32,
    effective_uid: u32,
    /// A zombie (or a dead task) holds no session: it is only waiting for its parent.
    exited: bool,
}

fn status(text: &str) -> Option<Status> {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let mut uids = field("Uid")?.split_whitespace();
    let real_uid = uids.next()?.parse().ok()?;
    let effective_uid = uids.next()?.parse().ok()?;
    let exited = field("State").is_some_and(|s| s.starts_with(['Z', 'X']));
    Some(Status {
        real_uid,
        effective_uid,
        exited,
    })
}

/// Sends SIGKILL to every live process under `proc` that runs as one of `uids`, scanning
/// again until a scan finds none it has not tried yet; answers, per uid, how many the signal
/// reached (a process whose real and effective uids are both in `uids` counts under its real
/// one). A process that ends between the scan and the signal is not an error; an unreadable
/// process table is.
pub(super) fn stop_processes_of(
    proc: &Path,
    uids: &BTreeSet<u32>,
) -> Result<BTreeMap<u32, usize>, AccountError> {
    let io = |e| AccountError::Io(proc.to_owned(), e);
    // Every pid tried (so a process on its way out is not signalled for ever), and how many
    // of them the signal reached.
    let mut tried = HashSet::new();
    let mut stopped: BTreeMap<u32, usize> = uids.iter().map(|&uid| (uid, 0)).collect();
    if uids.is_empty() {
        return Ok(stopped);
    }
    for _ in 0..ROUNDS {
        let entries = match std::fs::read_dir(proc) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(stopped),
            Err(e) => return Err(io(e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io)?;
            // Only positive pids: kill(2) reads 0 and negative ones as process groups.
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
                .and_then(|n| i32::try_from(n).ok())
                .and_then(Pid::from_raw)
            else {
                continue;
            };
            if tried.contains(&pid) {
                continue;
            }
            // Gone since the listing, or never a process: nothing to stop.
            let Ok(text) = std::fs::read_to_string(entry.path().join("status")) else {
                continue;
            };
            let Some(status) = status(&text).filter(|s| !s.exited) else {
                continue;
            };
            if let Some(&uid) = [status.real_uid, status.effective_uid]
                .iter()
                .find(|uid| uids.contains(uid))
            {
                found.push((pid, uid));
            }
        }
        if found.is_empty() {
            return Ok(stopped);
        }
        for (pid, uid) in found {
            tried.insert(pid);
            match kill_process(pid, Signal::KILL) {
                Ok(()) => *stopped.entry(uid).or_default() += 1,
                // It ended on its own since the scan.
                Err(rustix::io::Errno::SRCH) => {}
                Err(e) => {
                    return Err(AccountError::Io(
                        proc.join(pid.as_raw_nonzero().to_string()),
                        std::io::Error::from(e),
                    ));
                }
            }
        }
    }
    let uids: Vec<String> = uids.iter().map(u32::to_string).collect();
    Err(AccountError::Invalid(format!(
        "processes of uid {} kept starting after {} were stopped",
        uids.join(", "),
        stopped.values().sum::<usize>()
    )))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command};

    /// A status file as Linux writes it (abridged), for a process of `uid` in `state`.
    fn status_file(uid: u32, effective: u32, state: &str) -> String {
        format!(
            "Name:\tsleep\nUmask:\t0022\nState:\t{state}\nTgid:\t7\nPid:\t7\nPPid:\t1\n\
             Uid:\t{uid}\t{effective}\t{uid}\t{uid}\nGid:\t100\t100\t100\t100\n"
        )
    }

    pub(in crate::accounts) fn sleeper() -> Child {
        Command::new("sleep").arg("120").spawn().unwrap()
    }

    /// Puts `child` into the table under `proc` as a process of `uid`.
    pub(in crate::accounts) fn list(
        proc: &Path,
        child: &Child,
        uid: u32,
        effective: u32,
        state: &str,
    ) {
        let dir = proc.join(child.id().to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("status"), status_file(uid, effective, state)).unwrap();
    }

    pub(in crate::accounts) fn killed(child: &mut Child) -> bool {
        child.wait().unwrap().signal() == Some(9)
    }

    /// `stop_processes_of` for one uid: how many of its processes it stopped.
    fn stop_one(proc: &Path, uid: u32) -> Result<usize, AccountError> {
        Ok(stop_processes_of(proc, &BTreeSet::from([uid]))?[&uid])
    }

    #[test]
    fn stops_the_processes_of_the_given_uids_only_in_one_scan() {
        let root = tempfile::tempdir().unwrap();
        let proc = root.path().join("proc");
        let (mut session, mut sudo, mut second, mut other, mut zombie) =
            (sleeper(), sleeper(), sleeper(), sleeper(), sleeper());
        list(&proc, &session, 60_123, 60_123, "S (sleeping)");
        // A `sudo` the account started: effective uid root, real uid the account's.
        list(&proc, &sudo, 60_123, 0, "R (running)");
        list(&proc, &second, 60_125, 60_125, "S (sleeping)");
        list(&proc, &other, 60_124, 60_124, "S (sleeping)");
        list(&proc, &zombie, 60_123, 60_123, "Z (zombie)");
        // What else is in /proc is not a process.
        std::fs::create_dir_all(proc.join("sys")).unwrap();
        std::fs::write(proc.join("uptime"), "1.0 1.0\n").unwrap();
        std::fs::create_dir_all(proc.join("4242")).unwrap();

        let stopped = stop_processes_of(&proc, &BTreeSet::from([60_123, 60_125, 60_126])).unwrap();
        assert_eq!(
            stopped,
            BTreeMap::from([(60_123, 2), (60_125, 1), (60_126, 0)])
        );
        assert!(killed(&mut session));
        assert!(killed(&mut sudo));
        assert!(killed(&mut second));
        // Others are untouched.
        assert_eq!(other.try_wait().unwrap(), None);
        assert_eq!(zombie.try_wait().unwrap(), None);
        assert_eq!(
            stop_processes_of(&proc, &BTreeSet::new()).unwrap(),
            BTreeMap::new(),
            "nothing asked, nothing stopped"
        );
        assert_eq!(other.try_wait().unwrap(), None);
        other.kill().unwrap();
        zombie.kill().unwrap();
        other.wait().unwrap();
        zombie.wait().unwrap();
    }

    #[test]
    fn a_process_gone_meanwhile_or_no_table_is_not_an_error() {
        let root = tempfile::tempdir().unwrap();
        let proc = root.path().join("proc");
        assert_eq!(stop_one(&proc, 60_123).unwrap(), 0, "no table");
        // The table lists a process that ended between the scan and the signal: ESRCH. Its
        // pid is one no process can have (pids stay below pid_max), so that no process that
        // took a freed pid meanwhile is signalled by this test.
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap();
        let gone = proc.join(pid_max.trim());
        std::fs::create_dir_all(&gone).unwrap();
        std::fs::write(
            gone.join("status"),
            status_file(60_123, 60_123, "S (sleeping)"),
        )
        .unwrap();
        assert_eq!(stop_one(&proc, 60_123).unwrap(), 0, "ended meanwhile");
        // Its entry went between the listing and the read.
        std::fs::remove_file(gone.join("status")).unwrap();
        assert_eq!(stop_one(&proc, 60_123).unwrap(), 0, "no status");
    }

    #[test]
    fn status_lines_are_read_as_linux_writes_them() {
        let parsed = status(&status_file(1001, 0, "S (sleeping)")).unwrap();
        assert_eq!((parsed.real_uid, parsed.effective_uid), (1001, 0));
        assert!(!parsed.exited);
        assert!(
            status(&status_file(1001, 1001, "Z (zombie)"))
                .unwrap()
                .exited
        );
        assert!(status(&status_file(1001, 1001, "X (dead)")).unwrap().exited);
        assert!(status("Name:\tsleep\nUid:\tx\t1\n").is_none());
        assert!(status("Name:\tsleep\n").is_none());
        // This very process, as the real /proc shows it.
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        let uid = std::fs::metadata("/proc/self").unwrap();
        let parsed = status(&own).unwrap();
        assert_eq!(
            parsed.real_uid,
            std::os::unix::fs::MetadataExt::uid(&uid),
            "{own}"
        );
        assert!(!parsed.exited);
    }
}
