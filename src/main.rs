//! The command line. `listen` is what supervisord runs; the other commands help an
//! operator set it up and see what it will post.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use supervisor_slack::card::{ParentInput, Renderer, ReplyInput};
use supervisor_slack::config::{self, ProcessEnv, Settings};
use supervisor_slack::slack::{self, Outgoing};
use supervisor_slack::supervisord::event::{self, Event};
use supervisor_slack::supervisord::protocol::{EventReader, Read};

#[derive(Parser)]
#[command(
    name = "supervisor-slack",
    version,
    about = "A supervisord event listener that posts every process-state change to Slack as a colour-coded card, one thread per process.",
    after_help = "Settings come from a TOML file (--config, else /etc/supervisor-slack.toml) and the environment:\n  SLACK_TOKEN or SLACK_TOKEN_FILE   the bot token (xoxb-...); never a command-line argument\n  SLACK_CHANNEL                     the channel, e.g. #ops or C0123456789\n  SLACK_API_URL                     default https://slack.com/api\n  SUPERVISOR_SLACK_CONFIG           the settings file, instead of --config\n  SUPERVISOR_SLACK_HOST, SUPERVISOR_SLACK_ENVIRONMENT   the label on every card\n\nExamples:\n  supervisor-slack listen                      # what supervisord runs ([eventlistener:slack])\n  supervisor-slack init                        # a ready [eventlistener:slack] block and settings file\n  supervisor-slack check --post-test           # test the settings and the token, post one card\n  supervisor-slack render --variant reply < events.bin\n  supervisor-slack preview                     # see the cards without Slack: a local stand-in and its page"
)]
struct Cli {
    /// Settings file (TOML).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve supervisord's event-listener protocol on stdin/stdout (run by supervisord).
    #[command(
        after_help = "Example supervisord block (`supervisor-slack init` prints one for this machine):\n  [eventlistener:slack]\n  command=/usr/local/bin/supervisor-slack listen\n  events=PROCESS_STATE,SUPERVISOR_STATE_CHANGE,PROCESS_GROUP\n  buffer_size=1024\n  priority=-100\n  autorestart=true\n  stopwaitsecs=10\n  stdout_logfile=NONE\n  stderr_logfile=/var/log/supervisor/supervisor-slack.log\n  environment=SLACK_TOKEN_FILE=\"/etc/supervisor-slack/token\",SLACK_CHANNEL=\"#ops\""
    )]
    Listen {
        /// The state database (outbox and thread map). Default: $STATE_DIRECTORY/state.db,
        /// /var/lib/supervisor-slack/state.db when writable, else ~/.local/state/supervisor-slack/state.db.
        #[arg(long, value_name = "PATH", env = "SUPERVISOR_SLACK_STATE")]
        state: Option<PathBuf>,
    },
    /// Read raw supervisord events on stdin and print, one JSON object per line, the
    /// chat.postMessage body each PROCESS_STATE event would produce.
    #[command(
        after_help = "Example:\n  supervisor-slack render --host web-1 --variant parent < tests/fixtures/supervisord-4.2.5-events.bin"
    )]
    Render {
        /// Host label to show (default: the settings, else this machine's hostname).
        #[arg(long)]
        host: Option<String>,
        /// Which card to render.
        #[arg(long, value_enum, default_value = "reply")]
        variant: VariantArg,
    },
    /// Print a ready [eventlistener:slack] block for supervisord's configuration and a
    /// commented starter settings file (every key documented).
    #[command(
        after_help = "The block names this binary's real path and, with --config, the settings file.\n\nExamples:\n  supervisor-slack init                                        # both, to read\n  supervisor-slack init --supervisord > /etc/supervisor/conf.d/slack.conf\n  supervisor-slack init --settings > /etc/supervisor-slack.toml\n  supervisor-slack --config /etc/slack.toml init --supervisord"
    )]
    Init {
        /// Print only the supervisord block.
        #[arg(long, conflicts_with = "settings")]
        supervisord: bool,
        /// Print only the starter settings file (TOML).
        #[arg(long)]
        settings: bool,
    },
    /// Check the setup and say how to fix what is wrong: settings, templates, the token
    /// (Slack's auth.test: workspace and bot), the state directory, supervisord's
    /// socket. Exits 1 when anything needs fixing.
    #[command(
        after_help = "Run it as the user supervisord runs the listener as, with the same environment.\n\nExamples:\n  supervisor-slack check\n  SLACK_TOKEN_FILE=/etc/supervisor-slack/token supervisor-slack --config /etc/slack.toml check --post-test\n  sudo -u supervisor SUPERVISOR_SERVER_URL=unix:///var/run/supervisor.sock supervisor-slack check"
    )]
    Check {
        /// Also post one test message to every channel the settings route to.
        #[arg(long)]
        post_test: bool,
        /// The state database to check (as for `listen`).
        #[arg(long, value_name = "PATH", env = "SUPERVISOR_SLACK_STATE")]
        state: Option<PathBuf>,
    },
    /// See the cards without a Slack workspace: serve a local Slack stand-in (its Web
    /// API and a page drawing the channel) on 127.0.0.1 until Ctrl-C or SIGTERM.
    #[command(
        after_help = "The stand-in paces messages as Slack does (one per second per channel), accepts any\nxoxb- token and any channel, and keeps everything in memory: it binds 127.0.0.1 only.\n\nExample:\n  supervisor-slack preview --port 8089\n  # then, in supervisord's [eventlistener:slack] block:\n  environment=SLACK_API_URL=\"http://127.0.0.1:8089/api\",SLACK_TOKEN=\"xoxb-preview\",SLACK_CHANNEL=\"#ops\"\n  # and open http://127.0.0.1:8089/"
    )]
    Preview {
        /// Port on 127.0.0.1 (0: any free port; the address is printed).
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum VariantArg {
    Parent,
    Reply,
}

fn main() {
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Listen { ref state } => listen(cli.config.as_deref(), state.clone()),
        Command::Render { ref host, variant } => {
            render(cli.config.as_deref(), host.clone(), variant)
        }
        Command::Init {
            supervisord,
            settings,
        } => init(cli.config.as_deref(), supervisord, settings),
        Command::Check {
            post_test,
            ref state,
        } => check(cli.config.as_deref(), post_test, state.clone()),
        Command::Preview { port } => preview(port),
    };
    if let Err(e) = result {
        tracing::error!("{e:#}");
        eprintln!("supervisor-slack: {e:#}");
        std::process::exit(2);
    }
}

/// Logs go to stderr, never stdout (stdout is supervisord's protocol channel).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SUPERVISOR_SLACK_LOG")
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,slack_morphism=warn,hyper=warn,rustls=warn")
        });
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(filter)
        .init();
}

fn load_settings(config: Option<&Path>) -> Result<Settings> {
    Ok(config::load(config, &ProcessEnv)?)
}

fn renderer(settings: &Settings) -> Result<Renderer> {
    match &settings.templates_dir {
        Some(dir) => {
            Renderer::from_dir(dir).with_context(|| format!("templates_dir {}", dir.display()))
        }
        None => Ok(Renderer::builtin()),
    }
}

fn listen(config: Option<&Path>, state: Option<PathBuf>) -> Result<()> {
    let settings = load_settings(config)?;
    let renderer = renderer(&settings)?;
    let state_path = state
        .or_else(|| settings.state.clone())
        .unwrap_or_else(|| config::default_state_path(&ProcessEnv));
    supervisor_slack::app::listen(settings, renderer, state_path)
}

fn render(config: Option<&Path>, host: Option<String>, variant: VariantArg) -> Result<()> {
    let settings = load_settings(config)?;
    let renderer = renderer(&settings)?;
    let host = host.unwrap_or_else(|| settings.host.clone());
    let channel = settings
        .channel
        .clone()
        .unwrap_or_else(|| "#channel".to_string());
    let mut reader = EventReader::new(std::io::stdin().lock());
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    loop {
        let raw = match reader.next_event()? {
            Read::Eof => return Ok(()),
            Read::Bad(e) => {
                tracing::error!("skipping bad input: {e}");
                continue;
            }
            Read::Event(raw) => raw,
        };
        let ps = match event::parse(&raw, &host, chrono::Utc::now()) {
            Ok(Event::ProcessState(ps)) => ps,
            Ok(Event::Other(_)) => continue,
            Err(e) => {
                tracing::error!("skipping event: {e}");
                continue;
            }
        };
        let card = match variant {
            VariantArg::Parent => renderer.parent(&ParentInput {
                latest: &ps,
                history: &[ps.from, ps.to],
                since: ps.at,
                environment: settings.environment.as_deref(),
                flapping: false,
            }),
            VariantArg::Reply => renderer.reply(&ReplyInput {
                events: std::slice::from_ref(&ps),
                environment: settings.environment.as_deref(),
                notes: &[],
                context: None,
                mentions: &[],
            }),
        };
        let out_msg = Outgoing {
            channel: channel.clone(),
            card,
            thread_ts: None,
            broadcast: false,
            identity: None,
        };
        let body = serde_json::to_value(slack::post_request(&out_msg))?;
        // `render` is not `listen`: its stdout is the user's, so printing is right here.
        writeln!(out, "{body}")?;
    }
}

/// `init`: prints the supervisord block and/or the starter settings (to stdout: this
/// is the user's terminal, not supervisord's protocol channel).
fn init(config: Option<&Path>, only_supervisord: bool, only_settings: bool) -> Result<()> {
    use supervisor_slack::init;
    let binary = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("finding this program's path")?;
    let mut out = std::io::stdout().lock();
    if !only_settings {
        write!(out, "{}", init::supervisord_block(&binary, config))?;
    }
    if !only_settings && !only_supervisord {
        let path = config.unwrap_or(Path::new(config::DEFAULT_CONFIG_PATH));
        writeln!(
            out,
            "\n; ---- settings file: save as {} ----\n",
            path.display()
        )?;
    }
    if !only_supervisord {
        write!(out, "{}", init::starter_settings())?;
    }
    Ok(())
}

/// `check`: prints the report (stdout: the user's terminal) and exits 1 when it
/// holds a problem. Bad settings are a report too.
fn check(config: Option<&Path>, post_test: bool, state: Option<PathBuf>) -> Result<()> {
    use supervisor_slack::check::{self, Options, Report};
    let report = match config::load_checked(config, &ProcessEnv) {
        Err(e) => Report::from_config_error(&e),
        Ok(loaded) => {
            let opts = Options {
                post_test,
                state,
                settings_file: loaded.file.clone(),
                warnings: loaded.warnings.clone(),
            };
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(check::run(&loaded.settings, &opts))
        }
    };
    print!("{report}");
    std::process::exit(report.exit_code());
}

/// `preview`: the Slack stand-in with Slack's pacing, until Ctrl-C / SIGTERM. Its
/// stdout is the user's terminal: one line with both addresses.
fn preview(port: u16) -> Result<()> {
    use supervisor_slack::preview;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(async {
            let stop = supervisor_slack::shutdown::Shutdown::new();
            stop.on_signals()?;
            preview::run(port, |a| println!("{}", a.announcement()), stop).await
        })
        .with_context(|| format!("serving the preview on 127.0.0.1:{port}"))
}
