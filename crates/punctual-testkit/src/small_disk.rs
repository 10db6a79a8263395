//! A filesystem of a size the test sets (a tmpfs), for tests of a disk that fills up.
//!
//! Mounting needs root, which CI has. `SmallDisk::mount_or_skip` returns `None` after a loud
//! message when it cannot mount, and panics instead under `CI=true`, where the test must run.

use std::io::Write;
use std::path::Path;
use std::process::Command;

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (as `mount -o size=` reads it: `16m`).
    pub fn mount(size: &str) -> Result<SmallDisk, String> {
        let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|error| format!("could not run mount: {error}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(SmallDisk { dir })
    }

    /// `mount`, or `None` after saying loudly why the test `test` is skipped; under `CI=true`
    /// a failure to mount fails the test instead.
    pub fn mount_or_skip(size: &str, test: &str) -> Option<SmallDisk> {
        SmallDisk::mount(size)
            .map_err(|why| crate::skip_unless_ci(test, &format!("could not mount a tmpfs: {why}")))
            .ok()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file of non-zero bytes at `name` until the filesystem is full; returns its path.
    pub fn fill(&self, name: &str) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        let mut file = std::fs::File::create(&path).expect("create the filler");
        let block = vec![0x5au8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        // The last block may have been cut short; whatever fitted stays.
        let _ = file.sync_all();
        // Bytes the block writes could not use (less than a block) are taken one at a time.
        while file.write_all(&[0x5a]).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}
