//! Who ran an operator command, as the operator log's actor: the Unix user of the process that
//! asked (the control socket's peer, or the command itself on a stopped service) and the user
//! the kernel's audit attached to that process's login session (`/proc/PID/loginuid`).
//!
//! The login user is what makes the record worth reading: operators run `idemd` as root or
//! as the service's own user (the control socket answers no one else), through `sudo` or
//! `su`, which keep the login user while they change the process's user. Only a process with
//! `CAP_AUDIT_CONTROL` can set it, and the PAM module `pam_loginuid` does so at each login;
//! where nothing set it (a container, a service started at boot), it is absent.
//!
//! Names come from `/etc/passwd` as the command runs, so the record still says who it was
//! after an account is removed or its uid reused; users known only to a directory service
//! (LDAP, SSSD) are recorded by number alone.

use std::path::Path;

/// The kernel's "no login user" (`(uid_t) -1` in `/proc/PID/loginuid`).
const UNSET_LOGIN_UID: u32 = u32::MAX;

/// Who asked for an operator command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorIdentity {
    uid: User,
    login: Option<User>,
}

/// A Unix user, by number and, when `/etc/passwd` has it, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
struct User {
    uid: u32,
    name: Option<String>,
}

impl OperatorIdentity {
    /// The process `pid` of user `uid` (a control socket's peer credentials). Without a pid
    /// (the kernel gives none across some namespaces), only the user is known.
    pub fn of_peer(uid: u32, pid: Option<i32>) -> Self {
        let login = pid
            .filter(|pid| *pid > 0)
            .and_then(|pid| read_login_uid(&Path::new("/proc").join(pid.to_string())));
        Self::resolve(uid, login, &read_passwd())
    }

    /// This process: an operator command run while the service is stopped.
    pub fn of_this_process() -> Self {
        let uid = rustix::process::getuid().as_raw();
        Self::resolve(uid, read_login_uid(Path::new("/proc/self")), &read_passwd())
    }

    /// `uid` and `login_uid`, named from `passwd` (the text of `/etc/passwd`).
    fn resolve(uid: u32, login_uid: Option<u32>, passwd: &str) -> Self {
        let user = |uid| User {
            uid,
            name: user_name(passwd, uid),
        };
        OperatorIdentity {
            uid: user(uid),
            login: login_uid.map(user),
        }
    }

    /// The operator log's actor: `operator:uid=0(root),login=1000(alice)`, or
    /// `operator:uid=0(root)` without a login user.
    pub fn actor(&self) -> String {
        let mut actor = format!("{}:uid={}", crate::operator_log::ACTOR, self.uid);
        if let Some(login) = &self.login {
            actor.push_str(&format!(",login={login}"));
        }
        actor
    }
}

impl std::fmt::Display for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}({name})", self.uid),
            None => write!(f, "{}", self.uid),
        }
    }
}

/// The login user of the process whose `/proc` directory is `proc`, if one is set.
fn read_login_uid(proc: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(proc.join("loginuid")).ok()?;
    parse_login_uid(&text)
}

/// A `loginuid` file's number; none when unset or unreadable.
fn parse_login_uid(text: &str) -> Option<u32> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|uid| *uid != UNSET_LOGIN_UID)
}

/// `/etc/passwd`, or nothing if it cannot be read (names are then left out).
fn read_passwd() -> String {
    std::fs::read_to_string("/etc/passwd").unwrap_or_default()
}

/// The name of user `uid` in `passwd`: the first entry with that uid, if its name is a plain
/// one (letters, digits, `.`, `_`, `-`, at most 32 bytes; anything else would make the actor
/// ambiguous, so such a user is recorded by number).
fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let entry_uid: u32 = fields.next()?.parse().ok()?;
        let plain = !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        (entry_uid == uid && plain).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        # a comment line\n\
        broken line\n\
        idem:x:998:998::/var/lib/idem:/usr/sbin/nologin\n\
        alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n\
        alias:x:1000:1000::/home/alice:/bin/bash\n\
        bad(name):x:1001:1001::/home/b:/bin/sh\n";

    #[test]
    fn root_through_sudo_names_the_person_who_logged_in() {
        let identity = OperatorIdentity::resolve(0, Some(1000), PASSWD);
        assert_eq!(identity.actor(), "operator:uid=0(root),login=1000(alice)");
    }

    #[test]
    fn without_a_login_user_only_the_user_is_recorded() {
        let identity = OperatorIdentity::resolve(998, None, PASSWD);
        assert_eq!(identity.actor(), "operator:uid=998(idem)");
    }

    #[test]
    fn users_passwd_does_not_name_plainly_are_recorded_by_number() {
        // 1001's name has characters an actor cannot carry unambiguously; 4242 is unknown
        // (a directory service's user).
        let identity = OperatorIdentity::resolve(1001, Some(4242), PASSWD);
        assert_eq!(identity.actor(), "operator:uid=1001,login=4242");
        let identity = OperatorIdentity::resolve(0, Some(1000), "");
        assert_eq!(identity.actor(), "operator:uid=0,login=1000");
    }

    #[test]
    fn the_first_entry_of_a_shared_uid_names_it() {
        assert_eq!(user_name(PASSWD, 1000).as_deref(), Some("alice"));
    }

    #[test]
    fn an_unset_or_garbled_login_uid_is_absent() {
        assert_eq!(parse_login_uid("4294967295"), None);
        assert_eq!(parse_login_uid("1000\n"), Some(1000));
        assert_eq!(parse_login_uid("0"), Some(0));
        assert_eq!(parse_login_uid(""), None);
        assert_eq!(parse_login_uid("-1"), None);
        assert_eq!(parse_login_uid("12a"), None);
    }

    #[test]
    fn this_process_is_recorded_as_its_own_user() {
        let uid = rustix::process::getuid().as_raw();
        let actor = OperatorIdentity::of_this_process().actor();
        assert!(actor.starts_with(&format!("operator:uid={uid}")), "{actor}");
        // A peer that is this process is the same identity as this process.
        let pid = i32::try_from(std::process::id()).unwrap();
        assert_eq!(OperatorIdentity::of_peer(uid, Some(pid)).actor(), actor);
    }

    #[test]
    fn a_peer_without_a_pid_is_recorded_by_user_alone() {
        for pid in [None, Some(0), Some(-1)] {
            let actor = OperatorIdentity::of_peer(0, pid).actor();
            assert!(actor.starts_with("operator:uid=0"), "{actor}");
            assert!(
                !actor.contains("login="),
                "{pid:?} names no process: {actor}"
            );
        }
    }
}
