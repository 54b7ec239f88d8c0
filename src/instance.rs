//! Who a worker process is, as Kafka and `sink_offsets` see it, and the check that no other
//! live process on this host is the same one.
//!
//! The fraud worker's transactional id is `<group>-<instance>`. Fencing needs that name to be
//! stable (a restarted process takes the same id, so the broker aborts the transaction its
//! predecessor left open at once) and unique among live processes (two processes with one id
//! fence each other at every session, for ever). The default instance, the host name, is
//! stable; a second process on the same host with the same name is refused at start by a lock
//! the first one holds for its life. The kernel releases the lock when the holder dies, even
//! by SIGKILL, so a restart is never refused.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Held while the process runs as `key` (a stage's group and its instance name).
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

/// Where the locks live: one folder for every user and TMPDIR, so no setting hides a clash.
const LOCKS: &str = "/tmp/reviewflow-instances";

/// Takes the lock of `group` run as `instance`, or names the process that holds it.
pub fn claim(group: &str, instance: &str) -> Result<Option<InstanceLock>> {
    let name: String = format!("{group}-{instance}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = PathBuf::from(LOCKS).join(format!("{name}.lock"));
    let file = match open(&path) {
        Ok(file) => file,
        Err(e) => {
            // A host where the folder cannot be made (read-only /tmp) still runs; only the
            // check is lost, and the log says so.
            tracing::warn!(path = %path.display(), error = %e, "cannot open the instance lock: a second process with instance {instance} on this host would not be detected");
            return Ok(None);
        }
    };
    match file.try_lock() {
        Ok(()) => {
            let _ = file.set_len(0);
            let _ =
                std::io::Write::write_all(&mut &file, std::process::id().to_string().as_bytes());
            Ok(Some(InstanceLock { _file: file }))
        }
        Err(TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            Err(Error::InstanceClash {
                group: group.into(),
                instance: instance.into(),
                holder: holder.trim().to_string(),
                lock: path,
            })
        }
        Err(TryLockError::Error(e)) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot take the instance lock: a second process with instance {instance} on this host would not be detected");
            Ok(None)
        }
    }
}

fn open(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            // Every user's processes share it, as /tmp itself.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777))?;
        }
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o666)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_a_released_lock_is_taken_again() {
        let group = format!("rf-unit-lock-{}", std::process::id());
        let first = claim(&group, "host").unwrap();
        assert!(first.is_some(), "the first claim takes the lock");
        let second = claim(&group, "host");
        assert!(
            matches!(&second, Err(Error::InstanceClash { holder, .. }) if *holder == std::process::id().to_string()),
            "{second:?}"
        );
        assert!(
            claim(&group, "other-host").unwrap().is_some(),
            "another name is free"
        );
        drop(first);
        let again = claim(&group, "host").unwrap();
        assert!(
            again.is_some(),
            "a released lock (a restart) is taken again"
        );
        drop(again);
        for instance in ["host", "other-host"] {
            let _ =
                std::fs::remove_file(PathBuf::from(LOCKS).join(format!("{group}-{instance}.lock")));
        }
    }
}
