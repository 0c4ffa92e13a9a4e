//! Files the agent and the authenticator keep (state, keys, cached branding, the system's
//! account files), written atomically: a temporary file beside the target, synced, renamed
//! over it, and the directory synced, so that a crash leaves the old contents or the new,
//! never a mix, and the rename itself survives.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The permissions a written file gets.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// This mode, whatever the file had (secrets: always 0600).
    Exactly(u32),
    /// The existing file's mode, owner and group; this mode for a new file. For system files
    /// written on the system's behalf: Debian's `/etc/shadow` is `root:shadow 0640`, and
    /// `unix_chkpwd`, which checks passwords for screen lockers, reads it through that group.
    KeepOr(u32),
}

/// Writes `contents` to `path` atomically, with permissions as `mode` says.
pub fn write_atomically(path: &Path, contents: &[u8], mode: Mode) -> std::io::Result<()> {
    let before = match (mode, std::fs::metadata(path)) {
        (Mode::Exactly(_), _) => None,
        (Mode::KeepOr(_), Ok(metadata)) => Some(metadata),
        (Mode::KeepOr(_), Err(e)) if e.kind() == std::io::ErrorKind::NotFound => None,
        (Mode::KeepOr(_), Err(e)) => return Err(e),
    };
    let mode = match mode {
        Mode::Exactly(mode) | Mode::KeepOr(mode) => mode,
    };
    let temporary = temporary_beside(path);
    let written = write_new(&temporary, contents, mode, before.as_ref())
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    sync_parent(path)
}

/// Writes a copy of `from` to `to` atomically, with `from`'s mode, owner and group: the
/// `passwd-`, `shadow-` and `group-` copies that shadow-utils keeps of the files it edits,
/// which an administrator restores a damaged file from. `Ok(false)` if `from` does not exist.
pub fn copy_atomically(from: &Path, to: &Path) -> std::io::Result<bool> {
    let contents = match std::fs::read(from) {
        Ok(contents) => contents,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let metadata = std::fs::metadata(from)?;
    let temporary = temporary_beside(to);
    let written = write_new(&temporary, &contents, 0o600, Some(&metadata))
        .and_then(|()| std::fs::rename(&temporary, to));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    sync_parent(to).map(|()| true)
}

/// `path`'s name with `.PID.idem-tmp` added: two processes writing the same file never share
/// a temporary.
fn temporary_beside(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.idem-tmp", std::process::id()));
    path.with_file_name(name)
}

fn write_new(
    temporary: &Path,
    contents: &[u8],
    mode: u32,
    before: Option<&std::fs::Metadata>,
) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(temporary)?;
    if let Some(before) = before {
        let now = file.metadata()?;
        if (now.uid(), now.gid()) != (before.uid(), before.gid()) {
            std::os::unix::fs::fchown(&file, Some(before.uid()), Some(before.gid()))?;
        }
    }
    // After the owner: changing it clears set-id bits.
    let mode = before.map_or(mode, |m| m.mode() & 0o7777);
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Syncs the directory holding `path`, so that a rename or creation in it is durable.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(directory)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_gets_the_mode_and_an_existing_one_keeps_its_own_unless_told() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomically(&path, b"one", Mode::KeepOr(0o600)).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomically(&path, b"two", Mode::KeepOr(0o600)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(mode(&path), 0o640);
        write_atomically(&path, b"three", Mode::Exactly(0o600)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"three");
        assert_eq!(mode(&path), 0o600);
        // Nothing but the file itself is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_copy_keeps_the_contents_and_mode_and_a_missing_file_is_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("shadow"), dir.path().join("shadow-"));
        assert!(!copy_atomically(&from, &to).unwrap());
        assert!(!to.exists());
        std::fs::write(&from, b"root:*:19000::::::\n").unwrap();
        std::fs::set_permissions(&from, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::write(&to, b"an older copy").unwrap();
        assert!(copy_atomically(&from, &to).unwrap());
        assert_eq!(std::fs::read(&to).unwrap(), b"root:*:19000::::::\n");
        assert_eq!(std::fs::metadata(&to).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        write_atomically(&path, b"old", Mode::Exactly(0o600)).unwrap();
        // A directory where the temporary would go: the write fails before the rename.
        std::fs::create_dir(temporary_beside(&path)).unwrap();
        assert!(write_atomically(&path, b"new", Mode::Exactly(0o600)).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
    }
}
