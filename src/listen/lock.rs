//! One writer per state file: a second listener pointed at the same state database
//! (say `numprocs=2`, or two `[eventlistener]` blocks sharing settings) would deliver
//! everything twice. The first listener holds an exclusive lock on `<state>.lock`,
//! which also names its pid; a second one refuses to start and says who holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock, held for the life of the process (the OS releases it on any exit,
/// `kill -9` included).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    pub path: PathBuf,
}

/// Why the lock could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another listener (pid {pid}) already uses the state database {state}: two listeners on one state file would deliver every event twice; give each [eventlistener] its own --state (or SUPERVISOR_SLACK_STATE), or run one listener (numprocs=1)", pid = .pid.as_deref().unwrap_or("unknown"), state = .state.display())]
    Held { state: PathBuf, pid: Option<String> },
    #[error("cannot create the lock file {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `<state>.lock` beside the state database.
pub fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl StateLock {
    /// Takes the lock for `state`, or says which process holds it.
    pub fn acquire(state: &Path) -> Result<StateLock, LockError> {
        let path = lock_path(state);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = Some(pid.trim().to_string()).filter(|p| !p.is_empty());
                return Err(LockError::Held {
                    state: state.to_path_buf(),
                    pid,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // Ours: say who we are, for the next one that tries.
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(StateLock { _file: file, path })
    }
}
