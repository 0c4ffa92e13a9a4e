//! Home directories of the Linux accounts the agent creates, as `useradd --create-home` makes
//! them: `home/NAME` under the root, mode 0700, filled from `etc/skel`, owned by the account.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use super::AccountError;
use crate::files::sync_parent;

/// Who owns what the agent creates for an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Creates `root/home/NAME` for `owner`, a copy of `root/etc/skel` (files, directories and
/// symbolic links, modes kept), unless something already has that path: a home left by an
/// account removed earlier is not handed over, its files stay as they are. The directory is
/// built under a temporary name and renamed into place, so a crash never leaves a half-copied
/// home under the account's path. `chown` is false when the agent is not root (tests run by a
/// user): everything then stays the agent's.
pub(super) fn create_home(
    root: &Path,
    name: &str,
    owner: Owner,
    chown: bool,
) -> Result<(), AccountError> {
    let homes = root.join("home");
    let home = homes.join(name);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |e| AccountError::Io(path, e)
    };
    match std::fs::symlink_metadata(&home) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&home)(e)),
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&homes)
        .map_err(io(&homes))?;
    let building = homes.join(format!(".{name}.idem-new"));
    if building.exists() {
        // What a crash left of an earlier attempt: only the agent writes under this name.
        std::fs::remove_dir_all(&building).map_err(io(&building))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&building)
        .map_err(io(&building))?;
    let skel = root.join("etc/skel");
    if skel.is_dir() {
        copy_tree(&skel, &building, owner, chown)?;
    }
    set_owner(&building, owner, chown)?;
    std::fs::rename(&building, &home).map_err(io(&home))?;
    sync_parent(&home).map_err(io(&homes))
}

/// Copies the contents of `from` into the existing directory `to`, giving each copy to `owner`.
fn copy_tree(from: &Path, to: &Path, owner: Owner, chown: bool) -> Result<(), AccountError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |e| AccountError::Io(path, e)
    };
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let metadata = std::fs::symlink_metadata(&source).map_err(io(&source))?;
        let kind = metadata.file_type();
        if kind.is_symlink() {
            let points_to = std::fs::read_link(&source).map_err(io(&source))?;
            std::os::unix::fs::symlink(points_to, &target).map_err(io(&target))?;
        } else if kind.is_dir() {
            std::fs::DirBuilder::new()
                .mode(metadata.mode() & 0o7777)
                .create(&target)
                .map_err(io(&target))?;
            copy_tree(&source, &target, owner, chown)?;
        } else if kind.is_file() {
            std::fs::copy(&source, &target).map_err(io(&target))?;
        } else {
            // Devices, sockets and pipes have no place in a new home.
            continue;
        }
        set_owner(&target, owner, chown)?;
    }
    Ok(())
}

/// Gives `path` (not what a symbolic link points to) to `owner`, when the agent may.
fn set_owner(path: &Path, owner: Owner, chown: bool) -> Result<(), AccountError> {
    if !chown {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(owner.uid), Some(owner.gid))
        .map_err(|e| AccountError::Io(path.to_owned(), e))
}

/// Whether this process runs as root (the owner of `/proc/self` is its effective user).
pub(super) fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
