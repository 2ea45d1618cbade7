//! The Debian package and the container example, installed and run for real.
//!
//! - The `.deb` that `scripts/package` makes (from this test build's binary: no
//!   release build) is installed with `dpkg -i` into a *sandbox*: a mount namespace in
//!   which this machine's `/etc`, `/usr` and `/var` are the lower layers of overlays
//!   whose writable upper layers are a temp dir, and `/run` is a fresh tmpfs. dpkg,
//!   its maintainer scripts, supervisord and the installed binary all run there
//!   unchanged (`/usr/bin/supervisor-slack`, `/etc/supervisor/conf.d/…`), while the
//!   machine's own files and dpkg database are never touched.
//! - The files, modes and conffiles are checked as dpkg installed them; `check` reads
//!   the installed settings; a real supervisord (`$SUPERVISORD`, standing for Debian's)
//!   reads the installed block, which ships disabled; once the token is written and the
//!   block enabled, it posts to the stand-in. An upgrade keeps the edits and restarts
//!   the listener; removing keeps settings and state, purging removes them.
//! - The container example (`examples/container/`) is replayed as its Dockerfile
//!   builds it and run with supervisord as PID 1 of its own PID namespace, its
//!   `supervisord.conf` unchanged, the state on a directory standing for the volume;
//!   stopped during a Slack outage and started afresh on the same volume, it loses
//!   nothing.
//!
//! Needs root (`unshare`, overlay mounts), dpkg and cargo-deb (`scripts/test-env`
//! installs it). Without them the tests say so and skip — never under CI, where a
//! missing prerequisite fails them.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use common::outbox::{outbox, Row};
use common::slack::{header, options, parent_process, thread_serials, TOKEN};
use common::supervisord::supervisord_path;
use common::{descendants, kill_tree, secs, signal, wait_until, SLACK_BIN};
use supervisor_slack::standin::{Fault, StandIn, Thread};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const SETTINGS: &str = "/etc/supervisor-slack/settings.toml";
const BLOCK: &str = "/etc/supervisor/conf.d/supervisor-slack.conf";
const STATE_DB: &str = "/var/lib/supervisor-slack/state.db";

fn repo(path: &str) -> PathBuf {
    Path::new(MANIFEST_DIR).join(path)
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---- prerequisites -------------------------------------------------------------

fn command_works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether everything the sandboxed tests need is here. Under CI a missing piece
/// fails the test; elsewhere the test says what is missing and skips.
fn prerequisites(test: &str) -> bool {
    let mut missing = Vec::new();
    if !command_works("sh", &["-c", "test \"$(id -u)\" = 0"]) {
        missing.push("root".to_string());
    }
    for tool in ["unshare", "nsenter", "dpkg", "dpkg-deb", "dpkg-query"] {
        if !command_works("sh", &["-c", &format!("command -v {tool}")]) {
            missing.push(tool.to_string());
        }
    }
    if !command_works("cargo", &["deb", "--version"]) {
        missing.push("cargo-deb (scripts/test-env installs it)".into());
    }
    if missing.is_empty() {
        if let Err(e) = Sandbox::try_new(&[]) {
            missing.push(format!("a mount namespace with overlays ({e})"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs {}: under CI every prerequisite must be there",
        missing.join(", ")
    );
    eprintln!(
        "SKIPPED {test}: missing {} (run as root after scripts/test-env)",
        missing.join(", ")
    );
    false
}

// ---- the .deb ------------------------------------------------------------------

/// The `.deb` of this test build's binary, made once by `scripts/package --binary`.
fn deb() -> PathBuf {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("package-test-deb");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let started = std::time::Instant::now();
        let out = Command::new(repo("scripts/package"))
            .arg("--binary")
            .arg(SLACK_BIN)
            .arg("--output")
            .arg(format!("{}/", dir.display()))
            .stdin(Stdio::null())
            .output()
            .expect("running scripts/package");
        assert!(
            out.status.success(),
            "scripts/package failed:\n{}",
            text(&out)
        );
        let path = PathBuf::from(
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .lines()
                .last()
                .unwrap_or(""),
        );
        assert!(
            path.is_file() && path.extension().is_some_and(|e| e == "deb"),
            "scripts/package printed no .deb path:\n{}",
            text(&out)
        );
        eprintln!(
            "package: {} ({} KiB) in {:.1}s",
            path.display(),
            fs::metadata(&path).unwrap().len() / 1024,
            started.elapsed().as_secs_f64()
        );
        path
    })
    .clone()
}

// ---- the sandbox ---------------------------------------------------------------

/// A mount namespace held open by a sleeping process: `/etc`, `/usr` and `/var` are
/// overlays (this machine's directories below, a temp dir above, writable), `/run` a
/// fresh tmpfs, and each volume a bind mount. Commands run inside with [`Self::run`];
/// the test reads and writes its files through `/proc/PID/root` ([`Self::path`]).
struct Sandbox {
    holder: Child,
    _layers: tempfile::TempDir,
}

impl Sandbox {
    fn new(volumes: &[(&Path, &str)]) -> Sandbox {
        Sandbox::try_new(volumes).unwrap_or_else(|e| panic!("sandbox: {e}"))
    }

    fn try_new(volumes: &[(&Path, &str)]) -> Result<Sandbox, String> {
        // An overlay's upper layer must not live inside its lower one.
        let outside_lowers = |dir: &Path| {
            !["/etc/", "/usr/", "/var/"]
                .iter()
                .any(|lower| dir.starts_with(lower))
        };
        let base = [Path::new(env!("CARGO_TARGET_TMPDIR")), Path::new("/tmp")]
            .into_iter()
            .find(|d| outside_lowers(d))
            .ok_or("no directory outside /etc, /usr and /var for the layers")?;
        let layers = tempfile::Builder::new()
            .prefix("sandbox-")
            .tempdir_in(base)
            .map_err(|e| e.to_string())?;
        let l = layers.path().to_str().unwrap().to_string();
        assert!(!l.contains(|c: char| c.is_whitespace() || c == '\'' || c == ','));
        let mut script = String::from("set -e\n");
        for d in ["etc", "usr", "var"] {
            fs::create_dir_all(layers.path().join("upper").join(d)).unwrap();
            fs::create_dir_all(layers.path().join("work").join(d)).unwrap();
            script.push_str(&format!(
                "mount -t overlay sandbox -o lowerdir=/{d},upperdir={l}/upper/{d},workdir={l}/work/{d} /{d}\n"
            ));
        }
        script.push_str("mount -t tmpfs sandbox /run\n");
        for (host, inside) in volumes {
            script.push_str(&format!(
                "mkdir -p '{inside}'\nmount --bind '{}' '{inside}'\n",
                host.display()
            ));
        }
        script.push_str("touch /run/.sandbox-ready\nexec sleep 100000\n");
        let holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("unshare: {e}"))?;
        let mut sb = Sandbox {
            holder,
            _layers: layers,
        };
        let ready = wait_until(secs(10), || {
            sb.path("/run/.sandbox-ready").exists() || matches!(sb.holder.try_wait(), Ok(Some(_)))
        });
        if !ready || !sb.path("/run/.sandbox-ready").exists() {
            let _ = sb.holder.kill();
            let mut err = String::new();
            if let Some(mut e) = sb.holder.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(format!("the sandbox did not come up: {}", err.trim()));
        }
        Ok(sb)
    }

    fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// `path` inside the sandbox, as this process reaches it.
    fn path(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.pid()))
    }

    fn read(&self, path: &str) -> String {
        read(self.path(path))
    }

    fn write(&self, path: &str, text: &str, mode: u32) {
        let p = self.path(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap_or_else(|e| panic!("writing {path}: {e}"));
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Edits a file in place: `from` must be there.
    fn edit(&self, path: &str, from: &str, to: &str) {
        let before = self.read(path);
        assert_eq!(
            before.matches(from).count(),
            1,
            "{path} must hold {from:?} once"
        );
        fs::write(self.path(path), before.replacen(from, to, 1)).unwrap();
    }

    fn mode(&self, path: &str) -> u32 {
        fs::metadata(self.path(path))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .permissions()
            .mode()
            & 0o7777
    }

    /// A command run inside (working directory `/`), with `.venv/bin` (supervisord,
    /// supervisorctl) first on `PATH` as Debian's would be in `/usr/bin`.
    fn command(&self, program: &str) -> Command {
        let venv_bin = supervisord_path().parent().unwrap().to_path_buf();
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(self.pid().to_string())
            .args(["-m", "--wd=/", "--"])
            .arg(program)
            .env(
                "PATH",
                format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", venv_bin.display()),
            )
            .stdin(Stdio::null());
        c
    }

    fn run(&self, argv: &[&str]) -> Output {
        self.command(argv[0])
            .args(&argv[1..])
            .output()
            .unwrap_or_else(|e| panic!("running {argv:?} in the sandbox: {e}"))
    }

    fn run_ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv);
        assert!(
            out.status.success(),
            "{argv:?} failed ({}):\n{}",
            out.status,
            text(&out)
        );
        text(&out)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A supervisord running inside a [`Sandbox`], with its stdout and stderr (what a
/// container's log would show) collected.
struct SandboxedSupervisord {
    child: Option<Child>,
    /// The supervisord process itself (under `unshare` when PID 1).
    pid: u32,
    conf: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

fn collect(mut from: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let to = Arc::new(Mutex::new(String::new()));
    let sink = to.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    to
}

impl SandboxedSupervisord {
    /// `supervisord -n -c CONF` inside the sandbox; as PID 1 of a new PID namespace
    /// when `pid1` (a container's). Waits until it answers `supervisorctl pid`.
    fn start(sb: &Sandbox, conf: &str, env: &[(&str, &str)], pid1: bool) -> SandboxedSupervisord {
        let supervisord = supervisord_path();
        let mut c = if pid1 {
            let mut c = sb.command("unshare");
            c.args(["--pid", "--fork", "--kill-child", "--mount-proc"])
                .arg(&supervisord);
            c
        } else {
            sb.command(supervisord.to_str().unwrap())
        };
        c.args(["-n", "-c", conf])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = c.spawn().expect("starting supervisord in the sandbox");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let mut pid = child.id();
        if pid1 {
            // unshare forks supervisord: its child.
            assert!(
                wait_until(secs(5), || {
                    descendants(child.id()).first().is_some_and(|&p| {
                        pid = p;
                        true
                    })
                }),
                "unshare did not start supervisord"
            );
        }
        let mut sv = SandboxedSupervisord {
            child: Some(child),
            pid,
            conf: conf.to_string(),
            stdout,
            stderr,
        };
        let up = wait_until(secs(15), || {
            if let Ok(Some(status)) = sv.child.as_mut().unwrap().try_wait() {
                panic!(
                    "supervisord exited at start with {status}:\n{}",
                    sv.stderr()
                );
            }
            sb.run(&["supervisorctl", "-c", &sv.conf, "pid"])
                .status
                .success()
        });
        assert!(
            up,
            "supervisord did not answer within 15 s:\n{}",
            sv.stderr()
        );
        sv
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn ctl(&self, sb: &Sandbox, args: &[&str]) -> Output {
        let mut argv = vec!["supervisorctl", "-c", &self.conf];
        argv.extend_from_slice(args);
        sb.run(&argv)
    }

    /// `supervisorctl status NAME`'s state word; `None` when it does not know NAME.
    fn state(&self, sb: &Sandbox, name: &str) -> Option<String> {
        let out = String::from_utf8_lossy(&self.ctl(sb, &["status", name]).stdout).into_owned();
        if out.contains("no such process") {
            return None;
        }
        let word = out.split_whitespace().nth(1)?.to_string();
        word.chars().all(|c| c.is_ascii_uppercase()).then_some(word)
    }

    fn wait_for_state(&self, sb: &Sandbox, name: &str, state: &str, logs: impl Fn() -> String) {
        let mut last = None;
        let ok = wait_until(secs(20), || {
            last = self.state(sb, name);
            last.as_deref() == Some(state)
        });
        assert!(
            ok,
            "{name} did not reach {state} (last: {last:?})\n{}",
            logs()
        );
    }

    fn process_pid(&self, sb: &Sandbox, name: &str) -> Option<u32> {
        String::from_utf8_lossy(&self.ctl(sb, &["pid", name]).stdout)
            .trim()
            .parse()
            .ok()
            .filter(|&p| p > 0)
    }

    /// SIGTERM to supervisord (what `docker stop` sends PID 1, what init sends a
    /// service); waits for it to stop its programs and exit.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(self.pid, "TERM");
        let exited = wait_until(secs(30), || matches!(child.try_wait(), Ok(Some(_))));
        if !exited {
            kill_tree(child.id());
            let _ = child.wait();
            panic!(
                "supervisord did not stop within 30 s of SIGTERM:\n{}",
                self.stderr()
            );
        }
    }
}

impl Drop for SandboxedSupervisord {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_tree(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The outbox rows of the state database at `db` inside the sandbox, read there
/// (with the virtualenv's Python), through the same overlay as the listener: SQLite
/// resolves `/proc/PID/root` to this machine's `/`, so the test cannot open it itself.
fn outbox_in(sb: &Sandbox, db: &str) -> Vec<Row> {
    const READ: &str = "import json, sqlite3, sys\n\
        c = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True, timeout=5)\n\
        q = 'SELECT serial, process, event, delivered_at, instance FROM outbox ORDER BY id'\n\
        for serial, process, event, delivered, instance in c.execute(q):\n\
        \x20   print(json.dumps([serial, process, json.loads(event).get('to') or '', delivered is not None, instance]))\n";
    let out = sb.run(&["python3", "-c", READ, db]);
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let (serial, process, to, delivered, instance): (u64, String, String, bool, String) =
                serde_json::from_str(line).unwrap();
            Row {
                serial,
                process,
                to,
                delivered,
                instance,
            }
        })
        .collect()
}

// ---- reading the configuration files -------------------------------------------

/// The `key=value` lines of one `[section]` of a supervisord configuration file.
fn section(conf: &str, name: &str) -> BTreeMap<String, String> {
    let mut inside = false;
    let mut keys = BTreeMap::new();
    for line in conf.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == format!("[{name}]");
            continue;
        }
        if !inside || line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line}"));
        keys.insert(k.trim().to_string(), v.trim().to_string());
    }
    assert!(!keys.is_empty(), "no [{name}] section in:\n{conf}");
    keys
}

fn without(mut keys: BTreeMap<String, String>, drop: &[&str]) -> BTreeMap<String, String> {
    for k in drop {
        keys.remove(*k);
    }
    keys
}

fn with(mut keys: BTreeMap<String, String>, set: &[(&str, &str)]) -> BTreeMap<String, String> {
    for (k, v) in set {
        keys.insert(k.to_string(), v.to_string());
    }
    keys
}

/// The packaged settings file without its package header, and with the two keys the
/// package sets commented out again: what `init --settings` prints.
fn settings_as_init_prints(packaged: &str) -> String {
    let start = packaged
        .find("# supervisor-slack settings (TOML)")
        .expect("the packaged settings hold init's text");
    packaged[start..]
        .replacen("\ntoken_file = ", "\n# token_file = ", 1)
        .replacen("\nstate = ", "\n# state = ", 1)
}

// ---- the tests ---------------------------------------------------------------------

/// The packaged files say what `init` says, and the container example's listener is
/// the packaged block, enabled and logging to the container: a change to one that
/// forgets the others fails here.
#[test]
fn packaged_files_agree_with_init_the_readme_and_the_container_example() {
    let block = read(repo("packaging/supervisor-slack.conf"));
    let init_block = supervisor_slack::init::supervisord_block(
        Path::new("/usr/bin/supervisor-slack"),
        Some(Path::new(SETTINGS)),
    );
    let packaged = section(&block, "eventlistener:supervisor-slack");
    assert_eq!(
        packaged,
        with(
            without(
                section(&init_block, "eventlistener:slack"),
                &["environment"]
            ),
            &[("autostart", "false")]
        ),
        "the packaged block is init's, disabled, with the token and channel in the settings file"
    );
    assert_eq!(
        packaged["command"],
        "/usr/bin/supervisor-slack --config /etc/supervisor-slack/settings.toml listen"
    );

    let settings = read(repo("packaging/settings.toml"));
    assert_eq!(
        settings_as_init_prints(&settings),
        supervisor_slack::init::starter_settings(),
        "packaging/settings.toml is init's starter file with token_file and state set"
    );
    assert!(settings.contains("\ntoken_file = \"/etc/supervisor-slack/token\"\n"));
    assert!(settings.contains("\nstate = \"/var/lib/supervisor-slack/state.db\"\n"));

    // The app manifest shipped in /usr/share/doc is the README's, word for word.
    let readme = read(repo("README.md"));
    let start = readme.find("```yaml\n").expect("README has the manifest") + 8;
    let yaml = &readme[start..start + readme[start..].find("```").unwrap()];
    let indent = yaml
        .lines()
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap();
    let from_readme: Vec<&str> = yaml.lines().map(|l| &l[indent.min(l.len())..]).collect();
    let manifest = read(repo("packaging/slack-app-manifest.yaml"));
    let shipped: Vec<&str> = manifest.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(shipped, from_readme);

    let container = read(repo("examples/container/supervisord.conf"));
    assert_eq!(
        section(&container, "eventlistener:supervisor-slack"),
        with(
            without(packaged, &["stderr_logfile_backups"]),
            &[
                ("autostart", "true"),
                ("stderr_logfile", "/dev/stderr"),
                ("stderr_logfile_maxbytes", "0"),
            ]
        ),
        "the container's listener is the packaged block, enabled, logging to the container's stderr"
    );
    let supervisord = section(&container, "supervisord");
    assert_eq!(supervisord["nodaemon"], "true");
    assert_eq!(supervisord["logfile"], "/dev/stderr");
}

/// A Debian host's supervisord configuration, as the `supervisor` package installs it
/// (`/etc/supervisor/supervisord.conf`), and one program of the operator's.
fn debian_supervisor(sb: &Sandbox) {
    sb.write(
        "/etc/supervisor/supervisord.conf",
        "; as Debian's supervisor package installs it\n\
         [unix_http_server]\nfile=/var/run/supervisor.sock\nchmod=0700\n\n\
         [supervisord]\nlogfile=/var/log/supervisor/supervisord.log\n\
         pidfile=/var/run/supervisord.pid\nchildlogdir=/var/log/supervisor\n\n\
         [rpcinterface:supervisor]\n\
         supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
         [supervisorctl]\nserverurl=unix:///var/run/supervisor.sock\n\n\
         [include]\nfiles = /etc/supervisor/conf.d/*.conf\n",
        0o644,
    );
    sb.write(
        "/etc/supervisor/conf.d/web.conf",
        "[program:web]\ncommand=/bin/sh -c 'exec sleep 100000'\nstartsecs=0\n",
        0o644,
    );
    fs::create_dir_all(sb.path("/var/log/supervisor")).unwrap();
}

fn web_thread(standin: &StandIn, channel: &str) -> Option<Thread> {
    standin
        .channel(channel)
        .into_iter()
        .find(|t| parent_process(t) == "web")
}

/// The operator's whole path on a Debian host: install while supervisord runs (the
/// block arrives disabled: nothing runs, nothing posts), `check` names the missing
/// token, write it, check, enable, and the listener posts; an upgrade keeps the edits
/// and restarts the listener; removing keeps settings and state; purging removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_installs_checks_posts_upgrades_and_purges() {
    if !prerequisites("the_package_installs_checks_posts_upgrades_and_purges") {
        return;
    }
    let deb = deb();
    let deb = deb.to_str().unwrap();
    let standin = StandIn::start(options()).await.unwrap();
    let sb = Sandbox::new(&[]);
    debian_supervisor(&sb);
    let sv = SandboxedSupervisord::start(&sb, "/etc/supervisor/supervisord.conf", &[], false);
    let logs = || {
        format!(
            "--- supervisord.log ---\n{}\n--- supervisor-slack.err.log ---\n{}",
            fs::read_to_string(sb.path("/var/log/supervisor/supervisord.log")).unwrap_or_default(),
            fs::read_to_string(sb.path("/var/log/supervisor/supervisor-slack.err.log"))
                .unwrap_or_default()
        )
    };
    sv.wait_for_state(&sb, "web", "RUNNING", logs);

    // Installed while supervisord runs: postinst tells it (reread, update), and the
    // listener is known but not started.
    let installed = sb.run_ok(&["dpkg", "-i", "--force-depends", deb]);
    assert!(
        installed.contains("supervisor-slack: available"),
        "{installed}"
    );
    assert!(
        installed.contains("supervisor-slack: added process group"),
        "{installed}"
    );
    assert!(
        installed.contains("the listener is installed disabled; it needs a token and a channel"),
        "{installed}"
    );
    assert_eq!(
        sv.state(&sb, "supervisor-slack").as_deref(),
        Some("STOPPED")
    );

    // What dpkg installed: files, modes, conffiles, the state directory.
    for (path, mode) in [
        ("/usr/bin/supervisor-slack", 0o755),
        (BLOCK, 0o644),
        (SETTINGS, 0o640),
        ("/var/lib/supervisor-slack", 0o750),
        ("/usr/share/doc/supervisor-slack/README.md", 0o644),
        ("/usr/share/doc/supervisor-slack/README.Debian", 0o644),
        (
            "/usr/share/doc/supervisor-slack/slack-app-manifest.yaml",
            0o644,
        ),
        (
            "/usr/share/doc/supervisor-slack/templates/reply.json.j2",
            0o644,
        ),
    ] {
        assert_eq!(sb.mode(path), mode, "mode of {path}: {:o}", sb.mode(path));
    }
    assert!(sb.path("/var/lib/supervisor-slack").is_dir());
    assert_eq!(
        sb.read(BLOCK),
        read(repo("packaging/supervisor-slack.conf"))
    );
    assert_eq!(sb.read(SETTINGS), read(repo("packaging/settings.toml")));
    assert_eq!(
        sb.read("/usr/share/doc/supervisor-slack/README.md"),
        read(repo("README.md"))
    );
    let query = |field: &str| {
        sb.run_ok(&[
            "dpkg-query",
            "-W",
            &format!("-f=${{{field}}}"),
            "supervisor-slack",
        ])
    };
    let conffiles: Vec<String> = query("Conffiles")
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(conffiles, [BLOCK, SETTINGS]);
    assert_eq!(query("Status"), "install ok installed");
    assert!(
        query("Depends").contains("supervisor"),
        "{}",
        query("Depends")
    );

    // The installed binary prints the installed block (apart from what the package
    // deliberately changes: see the test above).
    let init = sb.run_ok(&[
        "/usr/bin/supervisor-slack",
        "--config",
        SETTINGS,
        "init",
        "--supervisord",
    ]);
    assert_eq!(
        section(&init, "eventlistener:slack")["command"],
        section(&sb.read(BLOCK), "eventlistener:supervisor-slack")["command"]
    );

    // check, as the operator runs it: the token is what is missing.
    let check =
        |sb: &Sandbox| sb.run(&["/usr/bin/supervisor-slack", "--config", SETTINGS, "check"]);
    let before = check(&sb);
    assert_eq!(before.status.code(), Some(1), "{}", text(&before));
    let said = text(&before);
    assert!(
        said.contains("PROBLEM") && said.contains("token_file"),
        "{said}"
    );
    assert!(
        said.contains("cannot read /etc/supervisor-slack/token"),
        "{said}"
    );

    // Nothing ran, nothing was posted.
    assert!(standin.calls().is_empty(), "{:?}", standin.calls());
    assert!(!sb
        .path("/var/log/supervisor/supervisor-slack.err.log")
        .exists());

    // The operator: the token, the channel (and here the stand-in as Slack), check.
    sb.write("/etc/supervisor-slack/token", &format!("{TOKEN}\n"), 0o600);
    sb.edit(SETTINGS, "channel = \"#ops\"", "channel = \"#deploys\"");
    sb.edit(SETTINGS, "# host = \"web-1\"", "host = \"db-7\"");
    sb.edit(
        SETTINGS,
        "# api_url = \"https://slack.com/api\"",
        &format!("api_url = \"{}\"", standin.api_url()),
    );
    let after = check(&sb);
    let said = text(&after);
    assert_eq!(after.status.code(), Some(0), "{said}");
    assert!(
        said.contains("settings file /etc/supervisor-slack/settings.toml is valid"),
        "{said}"
    );
    assert!(said.contains("token works"), "{said}");
    assert!(said.contains("channels: #deploys"), "{said}");
    assert!(
        said.contains(&format!("state database {STATE_DB} can be created")),
        "{said}"
    );
    assert!(!said.contains(TOKEN), "check shows the token:\n{said}");
    assert!(standin.calls_to("auth.test").len() == 1);

    // Enabled, the listener starts and posts.
    sb.edit(BLOCK, "\nautostart=false\n", "\nautostart=true\n");
    sv.ctl(&sb, &["reread"]);
    let update = text(&sv.ctl(&sb, &["update"]));
    assert!(update.contains("supervisor-slack"), "{update}");
    sv.wait_for_state(&sb, "supervisor-slack", "RUNNING", logs);
    assert_eq!(
        sv.ctl(&sb, &["restart", "web"]).status.code(),
        Some(0),
        "restart web"
    );
    let posted = standin
        .wait_for(secs(30), |s| {
            web_thread(s, "#deploys").is_some_and(|t| header(&t).contains("RUNNING"))
        })
        .await;
    assert!(posted, "no RUNNING card for web in #deploys\n{}", logs());
    let thread = web_thread(&standin, "#deploys").unwrap();
    assert!(
        header(&thread).contains("db-7"),
        "the host label: {}",
        header(&thread)
    );
    let listener_log = read(sb.path("/var/log/supervisor/supervisor-slack.err.log"));
    assert!(
        listener_log.contains("listening for supervisord events"),
        "{listener_log}"
    );
    assert!(!listener_log.contains(TOKEN));
    assert!(
        wait_until(secs(10), || {
            let rows = outbox_in(&sb, STATE_DB);
            rows.iter()
                .any(|r| r.process == "web" && r.to == "RUNNING" && r.delivered)
        }),
        "the outbox in {STATE_DB}: {:?}",
        outbox_in(&sb, STATE_DB)
    );

    // An upgrade (the same version again): the edited conffiles are kept, the
    // listener restarts on the new program and goes on in the same thread.
    let old_pid = sv
        .process_pid(&sb, "supervisor-slack")
        .expect("listener pid");
    let upgraded = sb.run_ok(&["dpkg", "-i", "--force-depends", "--force-confold", deb]);
    assert!(upgraded.contains("supervisor-slack: stopped"), "{upgraded}");
    assert!(sb.read(BLOCK).contains("autostart=true"));
    assert!(sb.read(SETTINGS).contains("channel = \"#deploys\""));
    sv.wait_for_state(&sb, "supervisor-slack", "RUNNING", logs);
    let new_pid = sv
        .process_pid(&sb, "supervisor-slack")
        .expect("listener pid");
    assert_ne!(old_pid, new_pid, "the listener was restarted by postinst");
    sv.ctl(&sb, &["stop", "web"]);
    let stopped = standin
        .wait_for(secs(30), |s| {
            web_thread(s, "#deploys").is_some_and(|t| header(&t).contains("STOPPED"))
        })
        .await;
    assert!(stopped, "no STOPPED card after the upgrade\n{}", logs());
    assert_eq!(
        standin
            .channel("#deploys")
            .iter()
            .filter(|t| parent_process(t) == "web")
            .count(),
        1,
        "one thread for web, continued after the upgrade"
    );
    assert!(thread_serials(&web_thread(&standin, "#deploys").unwrap()).len() >= 4);

    // Removed: the program is gone and supervisord no longer runs it; settings,
    // token, state and the block (conffiles) stay.
    let removed = sb.run_ok(&["dpkg", "-r", "supervisor-slack"]);
    assert!(!sb.path("/usr/bin/supervisor-slack").exists(), "{removed}");
    assert_eq!(sv.state(&sb, "supervisor-slack"), None, "{removed}");
    assert!(sv.process_pid(&sb, "supervisor-slack").is_none());
    for kept in [SETTINGS, BLOCK, "/etc/supervisor-slack/token", STATE_DB] {
        assert!(sb.path(kept).exists(), "remove kept {kept}");
    }
    assert!(sb.read(SETTINGS).contains("#deploys"));
    assert_eq!(query("Status"), "deinstall ok config-files");

    // Purged: settings, token, state, block and log are gone.
    sb.run_ok(&["dpkg", "-P", "supervisor-slack"]);
    for gone in [
        "/etc/supervisor-slack",
        BLOCK,
        "/var/lib/supervisor-slack",
        "/var/log/supervisor/supervisor-slack.err.log",
    ] {
        assert!(!sb.path(gone).exists(), "purge left {gone}");
    }
    let status = sb.run(&["dpkg-query", "-W", "-f=${Status}", "supervisor-slack"]);
    assert!(
        !text(&status).contains("install ok") && !text(&status).contains("config-files"),
        "{}",
        text(&status)
    );
    assert_eq!(
        sv.state(&sb, "web").as_deref(),
        Some("STOPPED"),
        "the operator's program is untouched"
    );
}

/// What the Dockerfile does, replayed in a fresh sandbox: the `.deb` installed with
/// dpkg, the packaged block removed, `supervisord.conf` and `conf.d/` copied in, the
/// secret mounted. Checks that the Dockerfile says exactly these steps.
fn container(deb: &str, volume: &Path) -> Sandbox {
    let dockerfile = read(repo("examples/container/Dockerfile"));
    for step in [
        "FROM debian:bookworm-slim",
        "apt-get install -y --no-install-recommends supervisor ca-certificates /tmp/supervisor-slack_*.deb",
        "rm /etc/supervisor/conf.d/supervisor-slack.conf",
        "COPY supervisord.conf /etc/supervisor/supervisord.conf",
        "COPY conf.d/ /etc/supervisor/conf.d/",
        "ENV SLACK_TOKEN_FILE=/run/secrets/slack_token",
        "VOLUME /var/lib/supervisor-slack",
        r#"CMD ["/usr/bin/supervisord", "-n", "-c", "/etc/supervisor/supervisord.conf"]"#,
    ] {
        assert!(dockerfile.contains(step), "the Dockerfile no longer says {step:?}: update this test");
    }
    let sb = Sandbox::new(&[(volume, "/var/lib/supervisor-slack")]);
    // The supervisor package's part: its log directory (supervisord is $SUPERVISORD).
    fs::create_dir_all(sb.path("/var/log/supervisor")).unwrap();
    sb.run_ok(&["dpkg", "-i", "--force-depends", deb]);
    fs::remove_file(sb.path(BLOCK)).unwrap();
    sb.write(
        "/etc/supervisor/supervisord.conf",
        &read(repo("examples/container/supervisord.conf")),
        0o644,
    );
    for entry in fs::read_dir(repo("examples/container/conf.d")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        sb.write(
            &format!("/etc/supervisor/conf.d/{}", name.to_string_lossy()),
            &read(entry.path()),
            0o644,
        );
    }
    // The secret, as `-v …:/run/secrets/slack_token:ro` mounts it.
    sb.write("/run/secrets/slack_token", &format!("{TOKEN}\n"), 0o400);
    sb
}

fn app_rows(volume: &Path) -> Vec<Row> {
    outbox(&volume.join("state.db"))
        .into_iter()
        .filter(|r| r.process == "app")
        .collect()
}

fn app_thread(standin: &StandIn) -> Option<Thread> {
    standin
        .channel("#deploys")
        .into_iter()
        .find(|t| parent_process(t) == "app")
}

/// The container example as PID 1: a container stopped while Slack is down, and a new
/// one started from the image on the same volume, lose nothing — every event of both
/// reaches Slack, in one thread — and the logs are on the container's stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_example_as_pid1_loses_nothing_across_a_restart() {
    if !prerequisites("the_container_example_as_pid1_loses_nothing_across_a_restart") {
        return;
    }
    let deb = deb();
    let deb = deb.to_str().unwrap();
    let standin = StandIn::start(options()).await.unwrap();
    let volume = tempfile::Builder::new()
        .prefix("volume-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let api_url = standin.api_url();
    // ENV from the Dockerfile, and what `docker run -e` adds.
    let env = [
        ("SLACK_TOKEN_FILE", "/run/secrets/slack_token"),
        ("SLACK_CHANNEL", "#deploys"),
        ("SUPERVISOR_SLACK_HOST", "my-app-1"),
        ("SLACK_API_URL", api_url.as_str()),
    ];
    let conf = "/etc/supervisor/supervisord.conf";

    // The first container: app runs, its card is posted.
    let first = container(deb, volume.path());
    let mut sv = SandboxedSupervisord::start(&first, conf, &env, true);
    let logs = |sv: &SandboxedSupervisord| format!("--- container stderr ---\n{}", sv.stderr());
    sv.wait_for_state(&first, "app", "RUNNING", || logs(&sv));
    sv.wait_for_state(&first, "supervisor-slack", "RUNNING", || logs(&sv));
    let status = read(format!("/proc/{}/status", sv.pid));
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1")),
        "supervisord is PID 1 of its namespace:\n{status}"
    );
    let posted = standin
        .wait_for(secs(30), |s| {
            app_thread(s).is_some_and(|t| header(&t).contains("RUNNING"))
        })
        .await;
    assert!(posted, "no RUNNING card for app\n{}", logs(&sv));
    // `docker exec my-app supervisor-slack --config … check`: the container's
    // environment, the image's settings, the volume.
    let check = first
        .command("supervisor-slack")
        .envs(env)
        .args(["--config", SETTINGS, "check"])
        .output()
        .unwrap();
    let said = text(&check);
    assert_eq!(check.status.code(), Some(0), "{said}");
    assert!(said.contains("token works"), "{said}");
    assert!(said.contains("channels: #deploys"), "{said}");
    assert!(said.contains(&format!("state database {STATE_DB} is writable")), "{said}");

    // Slack goes down; app stops; the container stops (SIGTERM to PID 1).
    standin.set_fault(Fault::Status(503));
    sv.ctl(&first, &["stop", "app"]);
    assert!(
        wait_until(secs(10), || app_rows(volume.path())
            .iter()
            .any(|r| r.to == "STOPPED")),
        "STOPPED committed: {:?}",
        app_rows(volume.path())
    );
    sv.stop();
    let first_log = sv.stderr();
    drop(sv);
    drop(first);
    let waiting: Vec<Row> = app_rows(volume.path())
        .into_iter()
        .filter(|r| !r.delivered)
        .collect();
    assert!(
        !waiting.is_empty(),
        "events were waiting for Slack when the container stopped: {:?}",
        app_rows(volume.path())
    );

    // The container's log: supervisord's and the listener's, never the protocol or
    // the token.
    assert!(first_log.contains("entered RUNNING state"), "{first_log}");
    assert!(
        first_log.contains("listening for supervisord events"),
        "{first_log}"
    );
    assert!(!first_log.contains(TOKEN));
    assert!(
        !first_log.contains("RESULT 2"),
        "the protocol is never logged"
    );

    // Slack is back; a new container from the image on the same volume.
    standin.set_fault(Fault::None);
    let second = container(deb, volume.path());
    let sv = SandboxedSupervisord::start(&second, conf, &env, true);
    sv.wait_for_state(&second, "app", "RUNNING", || logs(&sv));
    let delivered = wait_until(secs(60), || {
        let rows = app_rows(volume.path());
        rows.iter().filter(|r| r.to == "RUNNING").count() >= 2 && rows.iter().all(|r| r.delivered)
    });
    assert!(
        delivered,
        "rows {:?}\n{}",
        app_rows(volume.path()),
        logs(&sv)
    );
    let rows = app_rows(volume.path());
    let instances: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r.instance.as_str()).collect();
    assert_eq!(
        instances.len(),
        2,
        "two containers, two supervisord instances: {rows:?}"
    );
    assert!(waiting.iter().all(|w| rows
        .iter()
        .any(|r| r.instance == w.instance && r.serial == w.serial && r.delivered)));
    let in_slack = standin
        .wait_for(secs(30), |s| {
            app_thread(s).is_some_and(|t| thread_serials(&t).len() == app_rows(volume.path()).len())
        })
        .await;
    let thread = app_thread(&standin).unwrap();
    assert!(
        in_slack,
        "every app event in its thread: rows {rows:?}, thread serials {:?}",
        thread_serials(&thread)
    );
    assert_eq!(
        standin
            .channel("#deploys")
            .iter()
            .filter(|t| parent_process(t) == "app")
            .count(),
        1,
        "one thread for app, continued by the new container"
    );
    assert!(header(&thread).contains("my-app-1"), "{}", header(&thread));
    assert!(
        wait_until(secs(10), || app_thread(&standin)
            .is_some_and(|t| header(&t).contains("RUNNING"))),
        "the parent shows app RUNNING again: {}",
        header(&app_thread(&standin).unwrap())
    );
    assert!(
        sv.stdout().contains("app started"),
        "app's stdout in the container's log"
    );
    drop(sv);
    drop(second);
}
