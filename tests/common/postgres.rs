//! A real PostgreSQL for the tests: a private cluster (`initdb` into a temp dir, run
//! as the `postgres` user when the tests run as root), on a free loopback port, with
//! a database per test. One cluster per test binary ([`shared`]); a test that stops
//! the server starts one of its own ([`Cluster::start`]). A watchdog stops a cluster
//! when the test process is gone, however it ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// A running cluster.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

static SHARED: OnceLock<Cluster> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The test binary's cluster, started on first use.
pub fn shared() -> &'static Cluster {
    SHARED.get_or_init(Cluster::start)
}

/// A fresh database in the test binary's cluster: its URL.
pub fn database() -> String {
    shared().database()
}

/// Where Debian keeps the server's programs (`/usr/lib/postgresql/VERSION/bin`).
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// Starts a cluster of its own. Without PostgreSQL's programs the test fails:
    /// `scripts/test-env` installs them.
    pub fn start() -> Cluster {
        let bin = bin_dir().expect(
            "PostgreSQL's server programs are missing (/usr/lib/postgresql/*/bin): run scripts/test-env, which installs Debian's postgresql",
        );
        let dir = tempfile::Builder::new().prefix("pg-cluster-").tempdir().unwrap();
        let as_postgres = is_root();
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        std::fs::create_dir(&data).unwrap();
        std::fs::create_dir(&sock).unwrap();
        std::fs::write(dir.path().join("log"), b"").unwrap();
        if as_postgres {
            for p in [dir.path(), &data, &sock, &dir.path().join("log")] {
                run(Command::new("chown").arg("postgres").arg(p));
            }
            run(Command::new("chmod").arg("755").arg(dir.path()));
        }
        let c = Cluster {
            dir,
            bin,
            port: free_port(),
            as_postgres,
        };
        run(&mut c.cmd("initdb", &[
            "-D", data.to_str().unwrap(), "-A", "trust", "-U", "postgres", "--no-sync",
        ]));
        // Speed over durability against a power cut (fsync off), but never against a
        // stopped server: a commit is in the WAL before it is answered (the outage
        // tests stop the server at once, as a crash does).
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .map(|mut f| {
                use std::io::Write;
                writeln!(f, "fsync = off\nfull_page_writes = off\nmax_connections = 300\nshared_buffers = 16MB").unwrap();
            })
            .unwrap();
        c.start_server();
        c.watchdog();
        c
    }

    fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(args).stdin(Stdio::null());
        cmd
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn start_server(&self) {
        let opts = format!("-k {} -p {} -h 127.0.0.1", self.dir.path().join("sock").display(), self.port);
        run(&mut self.cmd("pg_ctl", &[
            "-D", self.data().to_str().unwrap(),
            "-o", &opts,
            "-l", self.dir.path().join("log").to_str().unwrap(),
            "-w", "start",
        ]));
    }

    /// Stops the server at once (connections cut, as a crash or a network loss
    /// looks to the listeners).
    pub fn stop_server(&self) {
        run(&mut self.cmd("pg_ctl", &["-D", self.data().to_str().unwrap(), "-m", "immediate", "-w", "stop"]));
    }

    /// Stops the cluster when this process is gone (a watchdog of its own).
    fn watchdog(&self) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop}; rm -rf {dir}",
            pid = std::process::id(),
            stop = if self.as_postgres {
                format!("runuser -u postgres -- {} -D {} -m immediate stop", self.bin.join("pg_ctl").display(), self.data().display())
            } else {
                format!("{} -D {} -m immediate stop", self.bin.join("pg_ctl").display(), self.data().display())
            },
            dir = self.dir.path().display(),
        );
        Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("setsid sh");
    }

    /// A fresh database: its URL.
    pub fn database(&self) -> String {
        let name = format!("fleet_{}", DATABASES.fetch_add(1, Ordering::SeqCst));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs `sql` in `db` with psql; returns its output (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .cmd("pg_ctl", &["-D", self.data().to_str().unwrap(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
