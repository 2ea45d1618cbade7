//! Secrets read from files, and where the state database lives by default.

use std::path::{Path, PathBuf};

use super::{Env, Secret, Warning};

/// `true` when users other than the owner may read the file (mode bits `044`).
pub fn readable_by_others(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o044 != 0)
            .unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

/// Reads a secret (token, password) from a file: trimmed, not empty. Warns when
/// other users can read it. The error is a message; the caller names the key.
pub(super) fn read_secret_file(path: &Path, warnings: &mut Vec<Warning>) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if readable_by_others(path) {
        warnings.push(Warning::new(
            format!("{} is readable by other users", path.display()),
            format!("run: chmod 600 {}", path.display()),
        ));
    }
    let secret = text.trim();
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret::new(secret))
}

/// Where the state database lives when no path was given: `$STATE_DIRECTORY/state.db`
/// (systemd), else `/var/lib/supervisor-slack/state.db` when writable, else
/// `$XDG_STATE_HOME/supervisor-slack/state.db` (`~/.local/state/...`).
pub fn default_state_path(env: &dyn Env) -> PathBuf {
    if let Some(dir) = env.var("STATE_DIRECTORY") {
        // systemd may pass several, colon-separated: the first is ours.
        let first = dir.split(':').next().unwrap_or(&dir).to_string();
        return PathBuf::from(first).join("state.db");
    }
    let system = Path::new("/var/lib/supervisor-slack");
    if dir_writable(system) {
        return system.join("state.db");
    }
    let base = env
        .var("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            env.var("HOME")
                .map(|h| PathBuf::from(h).join(".local/state"))
        })
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("supervisor-slack").join("state.db")
}

/// `true` when a file can be created in `dir` (tried, then removed).
pub fn dir_writable(dir: &Path) -> bool {
    if !dir.is_dir() {
        return false;
    }
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            true
        }
        Err(_) => false,
    }
}

