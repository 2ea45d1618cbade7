//! The one connection a host keeps to the fleet's PostgreSQL: made in the background
//! (a listener starts, and answers supervisord, whether the database is up or not),
//! made again after it drops, its schema brought up to date on every (re)connect, and
//! driven by hand so that notifications (`LISTEN`) arrive beside the queries. Every
//! query is bounded in time; none waits for the database to come back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{broadcast, watch};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Row, Statement};

use super::schema;
use crate::secret::Secret;
use crate::store::StoreError;

/// The channel every host listens on; the payload says what for.
pub const CHANNEL: &str = "supervisor_slack";

/// The longest one statement may take before it counts as failed.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A notification: its payload (the channel is always [`CHANNEL`]).
pub type Notice = String;

/// The connection, as the store's statements use it.
pub struct Pg {
    secret: Secret,
    /// The password in the URL, redacted from every message too.
    password: Option<Secret>,
    config: Config,
    live: RwLock<Option<Live>>,
    up: watch::Sender<bool>,
    /// The connection was up once.
    ever_up: std::sync::atomic::AtomicBool,
    notices: broadcast::Sender<Notice>,
}

#[derive(Clone)]
struct Live {
    client: Arc<Client>,
    statements: Arc<Mutex<HashMap<&'static str, Statement>>>,
}

impl Pg {
    /// Reads the connection string (nothing is connected yet: see [`Pg::keep`]).
    pub fn new(url: &Secret) -> Result<Arc<Pg>, StoreError> {
        let mut config: Config = url.expose().parse().map_err(|_| StoreError::Fleet {
            message: "fleet_url is not a PostgreSQL connection string; write postgresql://USER:PASSWORD@HOST:5432/DATABASE".into(),
        })?;
        config.connect_timeout(CONNECT_TIMEOUT);
        if config.get_application_name().is_none() {
            config.application_name("supervisor-slack");
        }
        let password = config
            .get_password()
            .map(|p| Secret::new(String::from_utf8_lossy(p).into_owned()));
        Ok(Arc::new(Pg {
            secret: url.clone(),
            password,
            config,
            live: RwLock::new(None),
            up: watch::channel(false).0,
            ever_up: std::sync::atomic::AtomicBool::new(false),
            notices: broadcast::channel(256).0,
        }))
    }

    /// Where the database is, for logs: `HOST:PORT/DATABASE` as user `USER`, never
    /// the password.
    pub fn address(&self) -> String {
        let host = self
            .config
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".into());
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{host}:{port}/{} as {}",
            self.config.get_dbname().unwrap_or("(default database)"),
            self.config.get_user().unwrap_or("(default user)")
        )
    }

    /// Removes the connection string and its password from `text`.
    pub fn redact(&self, text: &str) -> String {
        let text = self.secret.redact(text);
        match &self.password {
            Some(p) => p.redact(&text),
            None => text,
        }
    }

    /// Whether the connection is up now.
    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Whether the connection was ever up since this process started.
    pub fn was_up(&self) -> bool {
        self.ever_up.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Completes when the connection is up (at once if it is).
    pub async fn until_up(&self) {
        let mut rx = self.up.subscribe();
        let _ = rx.wait_for(|up| *up).await;
    }

    /// Every notification from now on.
    pub fn notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    /// Keeps the connection for the life of the process: connects, brings the schema
    /// up to date, listens, and connects again whenever it drops. Logs an outage once
    /// and the return once.
    pub async fn keep(self: Arc<Self>) {
        let mut wait = Duration::from_millis(500);
        let mut said_down = false;
        loop {
            match self.connect_once().await {
                Ok(done) => {
                    wait = Duration::from_millis(500);
                    tracing::info!(fleet_db = %self.address(), "connected to the fleet database");
                    said_down = false;
                    let _ = done.await;
                    *self.live.write().unwrap() = None;
                    self.up.send_replace(false);
                    tracing::warn!(fleet_db = %self.address(), "lost the fleet database; connecting again (delivery waits, events wait in the outbox, supervisord is answered as ever)");
                }
                Err(e) => {
                    if !said_down {
                        said_down = true;
                        tracing::warn!(fleet_db = %self.address(), "cannot reach the fleet database: {e}; trying again in the background (supervisord is answered as ever; events wait in the outbox)");
                    } else {
                        tracing::debug!("the fleet database is still out of reach: {e}");
                    }
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(10));
        }
    }

    /// One connection, up to date and listening; completes its receiver when the
    /// connection ends.
    async fn connect_once(&self) -> Result<tokio::sync::oneshot::Receiver<()>, StoreError> {
        let (client, mut connection) = match tokio::time::timeout(CONNECT_TIMEOUT * 2, self.config.connect(NoTls)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(self.error(&e)),
            Err(_) => {
                return Err(StoreError::Fleet {
                    message: format!("no answer from {} within {}s", self.address(), (CONNECT_TIMEOUT * 2).as_secs()),
                })
            }
        };
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let notices = self.notices.clone();
        let secret = (self.secret.clone(), self.password.clone());
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(n)) => {
                        let _ = notices.send(n.payload().to_string());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let text = secret.0.redact(&e.to_string());
                        let text = secret.1.as_ref().map_or(text.clone(), |p| p.redact(&text));
                        tracing::debug!("the fleet database connection ended: {text}");
                        break;
                    }
                }
            }
            let _ = done_tx.send(());
        });
        schema::migrate(&client).await.map_err(|e| self.error_or(e))?;
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(|e| self.error(&e))?;
        *self.live.write().unwrap() = Some(Live {
            client: Arc::new(client),
            statements: Arc::default(),
        });
        self.ever_up.store(true, std::sync::atomic::Ordering::SeqCst);
        self.up.send_replace(true);
        Ok(done_rx)
    }

    fn live(&self) -> Result<Live, StoreError> {
        self.live.read().unwrap().clone().ok_or_else(|| StoreError::Fleet {
            message: format!("the fleet database ({}) is out of reach", self.address()),
        })
    }

    /// Runs `sql` (prepared once per connection) with `params`; bounded in time.
    pub async fn query(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let live = self.live()?;
        let run = async {
            let statement = self.statement(&live, sql).await?;
            live.client.query(&statement, params).await
        };
        match tokio::time::timeout(QUERY_TIMEOUT, run).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => Err(self.error(&e)),
            Err(_) => Err(StoreError::Fleet {
                message: format!("the fleet database did not answer within {}s", QUERY_TIMEOUT.as_secs()),
            }),
        }
    }

    /// [`Pg::query`], for statements that return at most one row.
    pub async fn query_opt(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    async fn statement(&self, live: &Live, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = live.statements.lock().unwrap().get(sql) {
            return Ok(s.clone());
        }
        let s = live.client.prepare(sql).await?;
        live.statements.lock().unwrap().insert(sql, s.clone());
        Ok(s)
    }

    /// A driver error as the operator should read it: what happened and the fix,
    /// never the password.
    pub fn error(&self, e: &tokio_postgres::Error) -> StoreError {
        StoreError::Fleet {
            message: self.redact(&describe(e, &self.config)),
        }
    }

    fn error_or(&self, e: StoreError) -> StoreError {
        match e {
            StoreError::Fleet { message } => StoreError::Fleet {
                message: self.redact(&message),
            },
            other => other,
        }
    }
}

/// What went wrong with the fleet database, with the fix.
pub fn describe(e: &tokio_postgres::Error, config: &Config) -> String {
    let db = config.get_dbname().unwrap_or("(default)");
    let user = config.get_user().unwrap_or("(default)");
    if let Some(code) = e.code() {
        let fix = if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            format!("the login was refused for role {user}: check the user and password in fleet_url, and that pg_hba.conf lets this host in")
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            format!("database {db} does not exist: create it first (CREATE DATABASE {db} OWNER {user};)")
        } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            format!("role {user} may not create the listener's tables: GRANT CREATE ON DATABASE {db} TO {user}; (or make it the database's owner)")
        } else if *code == SqlState::TOO_MANY_CONNECTIONS {
            "the server has no connection left (max_connections): each host keeps one; raise max_connections".into()
        } else {
            String::new()
        };
        let said = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| e.to_string());
        return if fix.is_empty() {
            format!("the fleet database refused: {said} ({})", code.code())
        } else {
            format!("{fix} (the server said: {said})")
        };
    }
    let text = e.to_string();
    let source = std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_default();
    if source.contains("refused") || text.contains("refused") {
        return "nothing answers at the fleet database's address: is PostgreSQL running, and does listen_addresses let this host connect?".into();
    }
    if source.is_empty() {
        format!("the fleet database: {text}")
    } else {
        format!("the fleet database: {text}: {source}")
    }
}
