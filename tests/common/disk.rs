//! A tmpfs of a test's own: a small disk that fills up, or a read-only one that
//! refuses every write, root's too. Mounting needs root; where the machine refuses,
//! [`Tmpfs::mount`] says so through [`super::cannot_run_here`] (a failure under CI).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted at a directory, unmounted when dropped (declare it after the
/// temp dir it lives in, so that it goes first).
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs with `options` (`size=4m`, `ro,size=64k`) at `at` (created if
    /// missing). `None` where the machine refuses, when the skip is allowed.
    pub fn mount(at: &Path, options: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(at.to_path_buf())),
            other => {
                let said = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                super::cannot_run_here(&format!(
                    "cannot mount a tmpfs ({options}) at {}: {said} (needs root)",
                    at.display()
                ));
                None
            }
        }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes a file until the disk says it is full.
    pub fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }

    /// Removes what [`Tmpfs::fill`] wrote.
    pub fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
