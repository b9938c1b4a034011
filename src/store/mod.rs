//! Persistence. One [`Store`] in front of two engines: SQLite (the embedded default)
//! and PostgreSQL (clusters). Both run the same SQL through sqlx's `Any` driver; the
//! few places where the dialects differ ask [`Backend`]. Everything a workspace owns
//! is reached through [`Scoped`], which adds the workspace filter to every query, so a
//! route cannot forget it.

mod accounts;
mod events;
mod idempotency;
mod imports;
mod inbound;
mod inbox;
mod mail;
mod moves;
mod records;
mod search;
mod workflows;

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::any::{AnyArguments, AnyConnectOptions, AnyPoolOptions};
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor, Row};
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

pub use accounts::{ApiKeyRow, InvitationRefused, InvitationRow, Joiner, MemberRow, NewApiKey, RefreshOutcome, SessionRef, UserRow};
pub use idempotency::{IdempotencyBegin, StoredResponse};
pub use imports::{ImportCounts, ImportJob};
pub use inbound::Inbound;
pub(crate) use inbound::QueuedInbound;
pub use mail::{Mail, MailAccount, MailBatch, Notification, Outgoing, Queued};
pub(crate) use moves::QueuedMove;
pub use records::{DealMove, Page};
pub use search::SearchHit;
pub use workflows::Conversion;

use crate::domain::{Event, FieldErrors, Record};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// How every connection is set up.
    ///
    /// SQLite: WAL lets readers proceed during a write; NORMAL sync is durable in WAL
    /// mode across process crashes; busy_timeout covers other processes (e.g. `shoal
    /// migrate`) holding the file; a savepoint's journal (a batch takes one per write)
    /// lives in memory rather than in a temporary file written page by page.
    ///
    /// PostgreSQL: a node paused or cut off inside a transaction would hold its row
    /// locks (a board's seq, its fence) until it resumes; the database ends such a
    /// transaction instead, so another node can take the board over.
    fn session_setup(self) -> &'static str {
        match self {
            Backend::Sqlite => {
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; \
                 PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;"
            }
            Backend::Postgres => "SET idle_in_transaction_session_timeout = '15s'",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Failures the callers act on; anything else is `Db` and becomes an opaque 5xx.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("the record changed since version {expected}")]
    Conflict { expected: i64, current: Box<Record> },
    #[error("invalid: {0:?}")]
    Invalid(FieldErrors),
    #[error("already exists: {0}")]
    Duplicate(String),
    #[error("in use: {0}")]
    InUse(String),
    #[error("store unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Another node has taken over the topic this write was fenced on.
    #[error("the topic {0} has a newer owner")]
    Fenced(String),
    #[error(transparent)]
    Db(sqlx::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => StoreError::Unavailable(e),
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Duplicate(d.message().to_string()),
            sqlx::Error::Database(d) if d.code().is_some_and(|c| store_is_down(&c)) => StoreError::Unavailable(e),
            _ => StoreError::Db(e),
        }
    }
}

/// Error codes that say the store cannot serve now (rather than that the request is
/// wrong): SQLite's busy, locked, read-only, I/O, full and cannot-open; PostgreSQL's
/// connection, resource, operator-intervention and system error classes.
fn store_is_down(code: &str) -> bool {
    match code.parse::<i64>() {
        Ok(sqlite) => matches!(sqlite & 0xff, 5 | 6 | 8 | 10 | 13 | 14),
        // 55P03: a lock wait ran past its lock_timeout.
        Err(_) => code == "55P03" || ["08", "53", "57", "58"].iter().any(|class| code.starts_with(class)),
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A value bound to a query parameter. Nulls carry their column type because
/// PostgreSQL needs it.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
}

impl From<&str> for Arg {
    fn from(s: &str) -> Self {
        Arg::Text(Some(s.to_string()))
    }
}
impl From<String> for Arg {
    fn from(s: String) -> Self {
        Arg::Text(Some(s))
    }
}
impl From<&String> for Arg {
    fn from(s: &String) -> Self {
        Arg::Text(Some(s.clone()))
    }
}
impl From<i64> for Arg {
    fn from(n: i64) -> Self {
        Arg::Int(Some(n))
    }
}
impl From<Option<String>> for Arg {
    fn from(s: Option<String>) -> Self {
        Arg::Text(s)
    }
}
impl From<&&str> for Arg {
    fn from(s: &&str) -> Self {
        Arg::Text(Some(s.to_string()))
    }
}
impl From<Option<i64>> for Arg {
    fn from(n: Option<i64>) -> Self {
        Arg::Int(n)
    }
}

/// `vec![Arg::from(a), Arg::from(b), …]`.
macro_rules! args {
    ($($v:expr),* $(,)?) => { vec![$($crate::store::Arg::from($v)),*] };
}
pub(crate) use args;

/// `INSERT INTO table (columns) VALUES ($1, …)`, one placeholder per value.
pub(crate) fn insert(table: &str, columns: &str, values: Vec<Arg>) -> Sql {
    let mut sql = Sql::new(format!("INSERT INTO {table} ({columns}) VALUES ("));
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.arg(v);
    }
    sql.push(")");
    sql
}

/// Appends `$a, $b, …)` for the ids.
pub(crate) fn list(sql: &mut Sql, ids: &[&str]) {
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.arg(*id);
    }
    sql.push(")");
}

/// Appends the rows as a derived table `v` whose columns are `names`, for an update
/// of many rows in one statement (`UPDATE t SET … FROM <this> WHERE t.id = v.id`).
pub(crate) fn derived_table(sql: &mut Sql, rows: impl Iterator<Item = Vec<Arg>>, names: &[&str]) {
    sql.push("(");
    for (i, row) in rows.enumerate() {
        sql.push(if i == 0 { "SELECT " } else { " UNION ALL SELECT " });
        for (k, (value, name)) in row.into_iter().zip(names).enumerate() {
            if k > 0 {
                sql.push(", ");
            }
            sql.arg(value);
            // The first row names the columns (SQLite cannot name them on the derived
            // table itself).
            if i == 0 {
                sql.push(" AS ").push(name);
            }
        }
    }
    sql.push(") AS v");
}

pub(crate) fn bind<'q>(sql: &'q str, args: &[Arg]) -> Query<'q, Any, AnyArguments<'q>> {
    let mut q = sqlx::query(sql);
    for a in args {
        q = match a {
            Arg::Text(v) => q.bind(v.clone()),
            Arg::Int(v) => q.bind(*v),
        };
    }
    q
}

/// Collects SQL text and its arguments, numbering `$n` placeholders as it goes.
#[derive(Debug, Default)]
pub(crate) struct Sql {
    pub text: String,
    pub args: Vec<Arg>,
}

impl Sql {
    pub fn new(text: impl Into<String>) -> Self {
        Sql {
            text: text.into(),
            args: Vec::new(),
        }
    }
    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }
    /// Appends a placeholder for `arg`.
    pub fn arg(&mut self, arg: impl Into<Arg>) -> &mut Self {
        self.args.push(arg.into());
        self.text.push_str(&format!("${}", self.args.len()));
        self
    }
    pub fn query(&self) -> Query<'_, Any, AnyArguments<'_>> {
        bind(&self.text, &self.args)
    }

    /// The statement for `backend`. On SQLite its numbered placeholders become plain
    /// `?`s: SQLite finds a numbered parameter by walking the statement's list of them,
    /// for each one bound, which costs more than the statement itself when there are
    /// hundreds. The placeholders are in order (each `arg` adds the next), so `?`s bind
    /// the same values; text whose placeholders are not in order is left as it is.
    pub fn on(mut self, backend: Backend) -> Sql {
        if backend == Backend::Sqlite {
            let mut out = String::with_capacity(self.text.len());
            let mut expected = 1;
            let (mut rest, mut in_order) = (self.text.as_str(), true);
            while let Some(at) = rest.find('$') {
                let digits = rest[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
                out.push_str(&rest[..at]);
                if digits == 0 {
                    out.push('$');
                } else {
                    in_order &= rest[at + 1..at + 1 + digits].parse() == Ok(expected);
                    expected += 1;
                    out.push('?');
                }
                rest = &rest[at + 1 + digits..];
            }
            out.push_str(rest);
            if in_order && expected == self.args.len() + 1 {
                self.text = out;
            }
        }
        self
    }

    /// Appends another statement's text and arguments, renumbering its placeholders
    /// to follow this one's.
    pub fn append(&mut self, other: Sql) -> &mut Self {
        let offset = self.args.len();
        let text = other.text.as_str();
        let bytes = text.as_bytes();
        let (mut i, mut copied) = (0, 0);
        while i < bytes.len() {
            if bytes[i] == b'$' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                let end = i + 1 + bytes[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
                let n: usize = text[i + 1..end].parse().unwrap_or(0);
                self.text.push_str(&text[copied..i]);
                self.text.push_str(&format!("${}", n + offset));
                copied = end;
                i = end;
            } else {
                i += 1;
            }
        }
        self.text.push_str(&text[copied..]);
        self.args.extend(other.args);
        self
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Ids are UUIDv7: time-ordered (monotonic within a process), so records created in
/// the same millisecond still list in creation order when the id breaks the tie.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The persister's connection, kept here: the same one batch after batch
    /// (statements prepared, pages cached), so that no batch waits for a pooled
    /// connection to be checked and handed back. SQLite allows one writer at a time
    /// and answers a second one with SQLITE_BUSY, so there every write transaction
    /// takes its turn on it; on PostgreSQL other writes run on pooled connections.
    /// Empty once the store is closed.
    writer: Arc<Mutex<Option<Writer>>>,
    /// Set once the node's topic directory runs; before that, events are only logged.
    publisher: Arc<std::sync::OnceLock<Publisher>>,
    /// When the store last failed to serve (ms since the epoch); older connections are
    /// replaced before use.
    last_failure: Arc<AtomicI64>,
    /// The embedded store's lock file, held shared while the store is open, so that a
    /// restore (which takes it exclusively) cannot replace the file under a server.
    _in_use: Option<Arc<std::fs::File>>,
}

/// The lock file beside the embedded store.
fn lock_file(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("shoal.lock")
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).finish()
    }
}

/// The writer connection, held by one write transaction at a time.
pub(crate) struct Writer {
    conn: AnyConnection,
    backend: Backend,
    options: AnyConnectOptions,
    /// When it was opened (ms since the epoch): one opened before the store last
    /// failed may be stuck in the failure, and is replaced.
    opened: i64,
    /// A transaction was begun and not committed (its holder failed or was dropped):
    /// it is rolled back before the next one begins.
    open: bool,
}

impl Writer {
    async fn open(options: AnyConnectOptions, backend: Backend) -> Result<Writer> {
        let mut conn = AnyConnection::connect_with(&options).await?;
        conn.execute(backend.session_setup()).await?;
        if backend == Backend::Sqlite {
            // Its commits do not copy the log back into the database (with an fsync)
            // every thousand pages: a background task does, off the write path.
            conn.execute("PRAGMA wal_autocheckpoint = 0").await?;
            // The page cache stays at SQLite's 2 MiB: splitting a b-tree page parks a
            // page at the number just past 1 GiB, and every commit after that scans the
            // whole cache to drop it again while the file is smaller than that. With
            // 64 MiB the inbox took a tenth fewer messages a second at 100,000
            // messages, and no more at a million (docs/benchmarks.md).
        }
        Ok(Writer {
            conn,
            backend,
            options,
            opened: now_ms(),
            open: false,
        })
    }

    /// Begins a transaction, first replacing the connection if the store failed since
    /// it was opened and ending what a failed holder left open.
    async fn begin(&mut self, last_failure: i64, savepoint: bool) -> Result<()> {
        if self.opened <= last_failure {
            self.reopen().await?;
        }
        if self.open {
            // Its holder failed or was cancelled. The engine may have ended the
            // transaction already (or it committed just before the cancellation), in
            // which case there is nothing to roll back and the error says only that.
            let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
        }
        // A batch's first savepoint is taken in the same round trip. Marked open first:
        // a begin cancelled on its way is rolled back by the next one.
        let begin = if savepoint { "BEGIN; SAVEPOINT write" } else { "BEGIN" };
        self.open = true;
        if let Err(e) = sqlx::raw_sql(begin).execute(&mut self.conn).await {
            // The connection may be gone (PostgreSQL restarted, an idle connection cut,
            // a transaction somehow still open): nothing has been written on it yet,
            // so a fresh one is tried once.
            tracing::warn!(error = %e, "the writer connection could not begin; reopening it");
            self.reopen().await?;
            self.open = true;
            sqlx::raw_sql(begin).execute(&mut self.conn).await?;
        }
        Ok(())
    }

    async fn reopen(&mut self) -> Result<()> {
        let fresh = Writer::open(self.options.clone(), self.backend).await?;
        let old = std::mem::replace(self, fresh);
        let _ = old.conn.close().await;
        Ok(())
    }
}

/// The connection a write transaction runs on.
pub(crate) enum TxConn {
    /// PostgreSQL, outside the persister: a pooled connection's transaction; such
    /// writers run side by side.
    Pooled(sqlx::Transaction<'static, Any>),
    /// The writer connection, for as long as the transaction lasts.
    Writer(OwnedMappedMutexGuard<Option<Writer>, Writer>),
}

impl TxConn {
    fn backend(&self) -> Backend {
        match self {
            // SQLite's writes all take the writer.
            TxConn::Pooled(_) => Backend::Postgres,
            TxConn::Writer(w) => w.backend,
        }
    }

    /// Runs the script's statements and commits.
    async fn commit(self, script: Script) -> Result<()> {
        match self {
            TxConn::Pooled(mut tx) => {
                for sql in &script.parts {
                    sql.query().execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
            TxConn::Writer(mut w) => {
                let backend = w.backend;
                let mut runs = script.joined(backend);
                if backend == Backend::Sqlite {
                    // On SQLite the commit joins the last execution too: the rows and
                    // the commit cost one round trip.
                    match runs.last_mut() {
                        Some(last) => {
                            last.push("; COMMIT");
                        }
                        None => runs.push(Sql::new("COMMIT")),
                    }
                } else {
                    runs.push(Sql::new("COMMIT"));
                }
                for sql in runs {
                    sql.on(backend).query().execute(&mut w.conn).await?;
                }
                // Left open if a statement failed: rolled back before the next begins.
                w.open = false;
            }
        }
        Ok(())
    }
}

impl std::ops::Deref for TxConn {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self {
            TxConn::Pooled(tx) => tx,
            TxConn::Writer(w) => &w.conn,
        }
    }
}

impl std::ops::DerefMut for TxConn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            TxConn::Pooled(tx) => &mut *tx,
            TxConn::Writer(w) => &mut w.conn,
        }
    }
}

/// Where committed events go: the node's topic directory. Bounded; when it is full an
/// event is dropped here and its topic's subscribers receive it from the event log
/// when the next event reveals the gap.
pub type Publisher = tokio::sync::mpsc::Sender<Event>;

/// A write transaction, holding the SQLite writer slot for its lifetime. The events its
/// writes make are published only once it has committed.
///
/// Rows that nothing reads before the commit (the event log's and the audit log's) are
/// kept here and written at commit as a few multi-row inserts, and each topic's seq is
/// taken from the store once per transaction and counted on here: a batch of writes
/// costs a handful of statements more than its records' own, not several per write.
pub struct WriteTx {
    pub(crate) tx: TxConn,
    /// Events written in this transaction, in seq order per topic.
    pub(crate) events: Vec<Event>,
    /// The event log's rows of `events`, inserted at commit.
    pub(crate) event_rows: Vec<Vec<Arg>>,
    /// Audit entries to insert at commit, as their column values.
    pub(crate) audits: Vec<Vec<Arg>>,
    /// Per topic, the seq counter this transaction holds (its row is locked by it).
    seqs: HashMap<String, SeqCounter>,
    /// What to go back to when the current savepoint is rolled back.
    saved: Option<Saved>,
    /// A savepoint is open (that of the last write, kept).
    savepoint_open: bool,
    /// That savepoint was taken with the transaction and nothing has been written
    /// since: the first write's savepoint is it, at no round trip.
    savepoint_fresh: bool,
    /// A savepoint could not be rolled back: see [`WriteTx::check_usable`].
    broken: bool,
    /// The client's mutation id, recorded on the events.
    pub(crate) cause: Option<String>,
    /// The topic and fencing token the current write holds: its events on that topic
    /// are only written while the token is the topic's current one.
    pub(crate) fence: Option<(String, i64)>,
    publisher: Option<Publisher>,
}

/// A topic's seq as this transaction sees it: `stored` is in the row, `last` handed out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeqCounter {
    pub stored: i64,
    pub last: i64,
    /// The fencing token the row was checked against (none for an unfenced write).
    pub token: Option<i64>,
}

struct Saved {
    events: usize,
    audits: usize,
    seqs: HashMap<String, SeqCounter>,
}

/// The audit log's columns, in the order its rows' values are given.
pub(crate) const AUDIT_COLUMNS: &str =
    "id, workspace_id, version, created_at, updated_at, actor_id, action, object_type, object_id, changes";

/// Rows per multi-row insert on PostgreSQL: well under its limit on bound parameters.
const ROWS_PER_INSERT: usize = 400;

impl WriteTx {
    /// Writes the kept rows, commits, and then, only then, publishes the events.
    /// Returns them.
    pub async fn commit(mut self) -> Result<Vec<Event>> {
        self.check_usable()?;
        let sqlite = self.tx.backend() == Backend::Sqlite;
        let mut script = Script::new(sqlite);
        if self.savepoint_open && sqlite {
            // The rows below are kept whatever happens: no savepoint needs to cover
            // them (SQLite would journal every page they touch for it).
            script.next().push("RELEASE SAVEPOINT write");
        }
        for (topic, c) in &self.seqs {
            if c.last > c.stored {
                // The row has been locked by this transaction since the seq was taken
                // (and the fence checked), so no other writer can have moved it.
                let sql = script.next();
                sql.push("UPDATE topic_seqs SET seq = ")
                    .arg(c.last)
                    .push(" WHERE topic = ")
                    .arg(topic.as_str());
            }
        }
        let rows = std::mem::take(&mut self.event_rows);
        script.insert_rows(
            "event_log",
            "topic, seq, workspace_id, type, payload, actor, cause, created_at",
            rows,
        );
        let rows = std::mem::take(&mut self.audits);
        script.insert_rows("audit_log", AUDIT_COLUMNS, rows);
        self.tx.commit(script).await?;
        if let Some(p) = &self.publisher {
            for e in &self.events {
                if p.try_send(e.clone()).is_err() {
                    tracing::warn!(topic = %e.topic, seq = e.seq, "event queue full; subscribers will catch up from the log");
                }
            }
        }
        Ok(self.events)
    }

    /// Runs the script's statements now, in as few round trips as the engine allows.
    async fn run_script(&mut self, script: Script) -> Result<()> {
        let backend = self.tx.backend();
        for sql in script.joined(backend) {
            sql.on(backend).query().execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Records `cause` on the events this transaction makes.
    pub fn caused_by(&mut self, cause: Option<String>) {
        self.cause = cause;
    }

    /// Fences the next writes on `fence`'s topic with its token (or lifts the fence).
    pub fn fenced_by(&mut self, fence: Option<(String, i64)>) {
        self.fence = fence;
    }

    pub fn events_len(&self) -> usize {
        self.events.len()
    }

    /// Marks a point the transaction can roll back to without ending. The savepoint of
    /// a write ended with [`WriteTx::keep`] is released in the same round trip.
    pub async fn savepoint(&mut self) -> Result<()> {
        self.check_usable()?;
        if self.savepoint_fresh {
            self.savepoint_fresh = false;
        } else if self.savepoint_open {
            sqlx::raw_sql("RELEASE SAVEPOINT write; SAVEPOINT write")
                .execute(&mut *self.tx)
                .await?;
        } else {
            sqlx::query("SAVEPOINT write").execute(&mut *self.tx).await?;
        }
        self.savepoint_open = true;
        self.saved = Some(Saved {
            events: self.events.len(),
            audits: self.audits.len(),
            seqs: self.seqs.clone(),
        });
        Ok(())
    }

    pub async fn release_savepoint(&mut self) -> Result<()> {
        sqlx::query("RELEASE SAVEPOINT write").execute(&mut *self.tx).await?;
        self.savepoint_open = false;
        self.savepoint_fresh = false;
        self.saved = None;
        Ok(())
    }

    /// Keeps the writes since the savepoint. The savepoint itself is released by the
    /// next one, or ends with the transaction: a batch's writes cost one round trip to
    /// the store fewer each. (Savepoints are not left nested: on PostgreSQL each open
    /// one is a subtransaction, and hundreds of them nested made batches slower.)
    pub fn keep(&mut self) {
        self.saved = None;
    }

    /// Undoes the writes since the savepoint, with the rows and seqs they kept here.
    pub async fn rollback_to_savepoint(&mut self) -> Result<()> {
        if let Some(saved) = self.saved.take() {
            self.events.truncate(saved.events);
            self.event_rows.truncate(saved.events);
            self.audits.truncate(saved.audits);
            self.seqs = saved.seqs;
        }
        self.savepoint_open = false;
        self.savepoint_fresh = false;
        if let Err(e) = sqlx::raw_sql("ROLLBACK TO SAVEPOINT write; RELEASE SAVEPOINT write")
            .execute(&mut *self.tx)
            .await
        {
            // What the failed write did may still be in the transaction: nothing more
            // is written in it and it does not commit.
            self.broken = true;
            return Err(e.into());
        }
        Ok(())
    }

    /// A failed write could not be undone: the transaction takes no more writes and
    /// does not commit.
    fn check_usable(&self) -> Result<()> {
        if self.broken {
            return Err(StoreError::Unavailable(sqlx::Error::Protocol(
                "a failed write could not be rolled back; its transaction was abandoned".into(),
            )));
        }
        Ok(())
    }

    /// The seq counter this transaction holds for `topic`, if it took one.
    pub(crate) fn seq_counter(&mut self, topic: &str) -> Option<&mut SeqCounter> {
        self.seqs.get_mut(topic)
    }

    pub(crate) fn hold_seq_counter(&mut self, topic: &str, c: SeqCounter) {
        self.seqs.insert(topic.to_string(), c);
    }
}

/// Statements to run in order at the end of a transaction.
struct Script {
    parts: Vec<Sql>,
    rows_per_insert: usize,
}

impl Script {
    fn new(sqlite: bool) -> Script {
        // SQLite looks a numbered parameter up by walking the statement's list of them,
        // so its statements stay short; they are joined into one execution anyway.
        let rows_per_insert = if sqlite { 32 } else { ROWS_PER_INSERT };
        Script {
            parts: Vec::new(),
            rows_per_insert,
        }
    }

    /// A new statement.
    fn next(&mut self) -> &mut Sql {
        self.parts.push(Sql::default());
        let n = self.parts.len() - 1;
        &mut self.parts[n]
    }

    /// Inserts `rows` into `table`, several to a statement.
    fn insert_rows(&mut self, table: &str, columns: &str, rows: Vec<Vec<Arg>>) {
        self.upsert_rows(table, columns, rows, "");
    }

    /// Inserts `rows` into `table`, several to a statement, each statement ending
    /// with `on_conflict`.
    fn upsert_rows(&mut self, table: &str, columns: &str, rows: Vec<Vec<Arg>>, on_conflict: &str) {
        let per_statement = self.rows_per_insert;
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let sql = self.next();
            sql.push(&format!("INSERT INTO {table} ({columns}) VALUES "));
            for (n, row) in rows.by_ref().take(per_statement).enumerate() {
                sql.push(if n == 0 { "(" } else { ", (" });
                for (i, v) in row.into_iter().enumerate() {
                    if i > 0 {
                        sql.push(", ");
                    }
                    sql.arg(v);
                }
                sql.push(")");
            }
            sql.push(on_conflict);
        }
    }

    /// The statements joined into as few executions as the engines' limits on bound
    /// parameters allow, each one round trip: on SQLite one after another, on
    /// PostgreSQL (which runs one statement per execution) as the parts of a `WITH`.
    fn joined(self, backend: Backend) -> Vec<Sql> {
        let mut groups: Vec<Vec<Sql>> = Vec::new();
        let mut params = 0;
        for part in self.parts {
            match groups.last_mut() {
                Some(g) if params + part.args.len() <= PARAMS_PER_EXECUTION => {
                    params += part.args.len();
                    g.push(part);
                }
                _ => {
                    params = part.args.len();
                    groups.push(vec![part]);
                }
            }
        }
        groups
            .into_iter()
            .map(|group| {
                if group.len() == 1 {
                    return group.into_iter().next().unwrap_or_default();
                }
                let mut sql = Sql::default();
                for (i, part) in group.into_iter().enumerate() {
                    match backend {
                        Backend::Sqlite => {
                            if i > 0 {
                                sql.push("; ");
                            }
                            sql.append(part);
                        }
                        Backend::Postgres => {
                            sql.push(if i == 0 { "WITH " } else { ", " });
                            sql.push(&format!("s{i} AS (")).append(part);
                            sql.push(")");
                        }
                    }
                }
                if backend == Backend::Postgres {
                    sql.push(" SELECT 1");
                }
                sql
            })
            .collect()
    }
}

/// Bound parameters per joined execution, under SQLite's limit of 32,766 and
/// PostgreSQL's of 65,535.
const PARAMS_PER_EXECUTION: usize = 20_000;

/// Pages (4 KiB) the SQLite log may hold before it is started again: 64 MiB.
const LOG_PAGES_KEPT: i64 = 16_384;

/// How often SQLite's log is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Copies SQLite's write-ahead log back into the database, as far as readers allow,
/// until the store closes: the writer connection leaves this to here, so that no
/// commit waits for it. Between two runs the log grows by what a quarter second of
/// writes adds; past `LOG_PAGES_KEPT` it is started again.
async fn checkpoints(pool: AnyPool, writer: Arc<Mutex<Option<Writer>>>) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let passive = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&pool).await;
        // The log's length in pages, all of them copied back by now or not.
        let log = match passive {
            Ok(row) => row.try_get::<i64, _>(1).unwrap_or_default(),
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "a checkpoint of the SQLite log failed; the next one retries");
                continue;
            }
        };
        if log > LOG_PAGES_KEPT {
            // Under steady writes a passive checkpoint never finds the log wholly
            // copied with no write between, so the log is never started again and
            // grows without end (26 GB for a million inbox messages). This one runs
            // on the writer's own connection between two of its transactions (from
            // another connection it would make the writer's next statement fail as
            // busy), holding the next write back while it copies what is left, so
            // that the next write starts the log again from its beginning. (Emptying
            // the file as well made each write after it grow the file again: board
            // commands fell by a tenth.)
            let mut slot = writer.lock().await;
            let Some(w) = slot.as_mut() else { return };
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(RESTART)").execute(&mut w.conn).await {
                tracing::warn!(error = %e, log_pages = log, "could not empty the SQLite log; the next check retries");
            }
        }
    }
}

impl Store {
    /// Opens the store named by `database_url`, or a SQLite file in `data_dir`.
    pub async fn connect(
        database_url: Option<&str>,
        data_dir: &Path,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let mut in_use = None;
        let (url, backend) = match database_url {
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => (u.to_string(), Backend::Postgres),
            Some(u) if u.starts_with("sqlite:") => (u.to_string(), Backend::Sqlite),
            Some(_) => anyhow::bail!("database_url must start with postgres:// or sqlite:"),
            None => {
                std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
                let lock = std::fs::File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(lock_file(data_dir))
                    .with_context(|| format!("cannot open the lock file in {}", data_dir.display()))?;
                lock.try_lock_shared().map_err(|_| {
                    anyhow::anyhow!(
                        "a restore is replacing the store in {}; start again when it is done",
                        data_dir.display()
                    )
                })?;
                in_use = Some(Arc::new(lock));
                (
                    format!("sqlite://{}?mode=rwc", data_dir.join("shoal.db").display()),
                    Backend::Sqlite,
                )
            }
        };
        let mut options = AnyConnectOptions::from_str(&url).context("invalid database_url")?;
        options = sqlx::ConnectOptions::log_statements(options, tracing::log::LevelFilter::Trace);
        let mut pool = AnyPoolOptions::new().acquire_timeout(acquire_timeout);
        // A connection that comes back still inside a transaction (its rollback failed,
        // as it can when the disk fails under it) would keep an old snapshot: close it
        // rather than hand it out again.
        pool = pool.after_release(|conn, _| Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) }));
        // Connections opened before the store last failed may be stuck in the failure
        // (SQLite opens a file it could not write as read-only for good): replace them,
        // so that service resumes by itself once the store does.
        let last_failure = Arc::new(AtomicI64::new(0));
        let failure = last_failure.clone();
        pool = pool.before_acquire(move |_, meta| {
            let opened = now_ms() - i64::try_from(meta.age.as_millis()).unwrap_or(i64::MAX);
            let fresh = opened > failure.load(Ordering::Relaxed);
            Box::pin(async move { Ok(fresh) })
        });
        if backend == Backend::Sqlite {
            // A connection to a local file has no peer to lose; pinging it before every
            // use only adds a round trip to its worker thread to every statement.
            pool = pool.test_before_acquire(false);
            pool = pool.after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(Backend::Sqlite.session_setup()).await?;
                    Ok(())
                })
            });
        }
        if backend == Backend::Postgres {
            pool = pool.after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(Backend::Postgres.session_setup()).await?;
                    Ok(())
                })
            });
        }
        let pool = pool
            .max_connections(max_connections.max(2))
            .connect_with(options.clone())
            .await
            .with_context(|| format!("cannot connect to the {} store", backend.name()))?;
        let writer = Arc::new(Mutex::new(Some(Writer::open(options, backend).await?)));
        if backend == Backend::Sqlite {
            tokio::spawn(checkpoints(pool.clone(), writer.clone()));
        }
        Ok(Store {
            pool,
            backend,
            writer,
            publisher: Arc::new(std::sync::OnceLock::new()),
            last_failure,
            _in_use: in_use,
        })
    }

    /// Writes a consistent copy of the embedded store to `target` while it serves:
    /// SQLite's `VACUUM INTO` reads one snapshot, so the copy holds every write
    /// committed before it began and none half-done. `target` must not exist.
    pub async fn backup_to(&self, target: &Path) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.backend == Backend::Sqlite,
            "shoal backup copies the embedded SQLite store; back up PostgreSQL with pg_dump (docs/operations.md)"
        );
        anyhow::ensure!(!target.exists(), "{} exists already: name a new file", target.display());
        let path = target.to_str().context("the backup's path is not UTF-8")?;
        sqlx::query("VACUUM INTO ?")
            .bind(path)
            .execute(&self.pool)
            .await
            .with_context(|| format!("cannot write the backup to {}", target.display()))?;
        Ok(())
    }

    /// Records that the store failed to serve, so pooled connections are renewed.
    pub fn note_failure(&self) {
        self.last_failure.store(now_ms(), Ordering::Relaxed);
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Puts a backup made by [`Store::backup_to`] in place of the embedded store in
    /// `data_dir`, which no server may have open (checked through the lock file). The
    /// backup is checked first; the store it replaces is kept beside it, renamed.
    /// Returns the name the replaced store was kept under, if there was one.
    pub async fn restore(data_dir: &Path, backup: &Path) -> anyhow::Result<Option<std::path::PathBuf>> {
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=ro", backup.to_str().context("the backup's path is not UTF-8")?);
        let mut conn = sqlx::AnyConnection::connect(&url)
            .await
            .with_context(|| format!("cannot open {} as a SQLite store", backup.display()))?;
        let check: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&mut conn).await?;
        anyhow::ensure!(check == "ok", "{} is damaged: {check}", backup.display());
        let migrations: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(&mut conn)
            .await
            .with_context(|| format!("{} is not a Shoal store", backup.display()))?;
        anyhow::ensure!(migrations > 0, "{} is not a Shoal store", backup.display());
        conn.close().await?;

        std::fs::create_dir_all(data_dir)?;
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_file(data_dir))?;
        lock.try_lock()
            .map_err(|_| anyhow::anyhow!("a server has the store in {} open: stop it first", data_dir.display()))?;
        let db = data_dir.join("shoal.db");
        let incoming = data_dir.join("shoal.db.restoring");
        std::fs::copy(backup, &incoming).with_context(|| format!("cannot copy {}", backup.display()))?;
        std::fs::File::open(&incoming)?.sync_all()?;
        let kept = if db.exists() {
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
            let kept = data_dir.join(format!("shoal.db.replaced-{stamp}"));
            std::fs::rename(&db, &kept)?;
            // The replaced store's log goes with it: left beside the new file, SQLite
            // would apply it to the wrong database.
            for ext in ["-wal", "-shm"] {
                let side = data_dir.join(format!("shoal.db{ext}"));
                if side.exists() {
                    std::fs::rename(&side, data_dir.join(format!("shoal.db.replaced-{stamp}{ext}")))?;
                }
            }
            Some(kept)
        } else {
            None
        };
        std::fs::rename(&incoming, &db)?;
        std::fs::File::open(data_dir)?.sync_all()?;
        drop(lock);
        Ok(kept)
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        let result = match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await,
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&self.pool).await,
        };
        result.context("applying migrations failed")
    }

    /// Is the store answering? Used by `/readyz`.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        if let Some(w) = self.writer.lock().await.take() {
            let _ = w.conn.close().await;
        }
        self.pool.close().await;
    }

    pub async fn write(&self) -> Result<WriteTx> {
        self.begin_write(false).await
    }

    /// A write transaction for the persister, whose first call is
    /// [`WriteTx::savepoint`]: on SQLite that savepoint is taken with the transaction.
    pub async fn write_batch(&self) -> Result<WriteTx> {
        self.begin_write(true).await
    }

    async fn begin_write(&self, batch: bool) -> Result<WriteTx> {
        let tx = if batch || self.backend == Backend::Sqlite {
            let slot = self.writer.clone().lock_owned().await;
            let mut w = OwnedMutexGuard::try_map(slot, Option::as_mut).map_err(|_| StoreError::Unavailable(sqlx::Error::PoolClosed))?;
            w.begin(self.last_failure.load(Ordering::Relaxed), batch)
                .await
                .inspect_err(|_| self.note_failure())?;
            TxConn::Writer(w)
        } else {
            TxConn::Pooled(self.pool.begin().await.inspect_err(|_| self.note_failure())?)
        };
        let fresh_savepoint = batch;
        Ok(WriteTx {
            tx,
            events: Vec::new(),
            event_rows: Vec::new(),
            audits: Vec::new(),
            seqs: HashMap::new(),
            saved: None,
            savepoint_open: fresh_savepoint,
            savepoint_fresh: fresh_savepoint,
            broken: false,
            cause: None,
            fence: None,
            publisher: self.publisher.get().cloned(),
        })
    }

    /// Sends every committed event to `publisher` from now on.
    pub fn publish_to(&self, publisher: Publisher) {
        let _ = self.publisher.set(publisher);
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A server-wide secret, generated once and shared by every node using this store.
    pub async fn server_secret(&self, key: &str) -> Result<String> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let fresh: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut w = self.write().await?;
        bind(
            "INSERT INTO server_settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[key.into(), fresh.into()],
        )
        .execute(&mut *w.tx)
        .await?;
        let value: String = sqlx::query_scalar::<Any, String>("SELECT value FROM server_settings WHERE key = $1")
            .bind(key)
            .fetch_one(&mut *w.tx)
            .await?;
        w.commit().await?;
        Ok(value)
    }

    /// Everything that belongs to one workspace is reached through this.
    pub fn scoped<'a>(&'a self, workspace_id: &'a str) -> Scoped<'a> {
        Scoped {
            store: self,
            ws: workspace_id,
        }
    }
}

/// The store seen from inside one workspace.
#[derive(Clone, Copy)]
pub struct Scoped<'a> {
    store: &'a Store,
    ws: &'a str,
}

impl<'a> Scoped<'a> {
    pub fn workspace_id(&self) -> &'a str {
        self.ws
    }

    pub(crate) async fn begin(&self) -> Result<WriteTx> {
        self.store.write().await
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::Store;

    /// A fresh embedded store in a folder of its own, with one workspace.
    pub async fn fresh_store(name: &str) -> (Store, std::path::PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("shoal-{name}-{}", uuid::Uuid::new_v4().simple()));
        let store = Store::connect(None, &dir, 2, std::time::Duration::from_secs(5)).await.unwrap();
        store.migrate().await.unwrap();
        let email = format!("a@{name}.test");
        let (ws, _) = store.create_workspace("W", &email, "A", "not-a-hash").await.unwrap();
        (store, dir, ws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(table: &str, values: &[i64]) -> Sql {
        let mut sql = Sql::new(format!("UPDATE {table} SET a = "));
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                sql.push(", b = ");
            }
            sql.arg(*v);
        }
        sql
    }

    #[test]
    fn joined_statements_keep_each_value_on_its_own_placeholder() {
        let mut script = Script::new(true);
        *script.next() = statement("t1", &[1, 2]);
        *script.next() = statement("t2", &[3]);
        let sqlite = script.joined(Backend::Sqlite);
        assert_eq!(sqlite.len(), 1);
        assert_eq!(sqlite[0].text, "UPDATE t1 SET a = $1, b = $2; UPDATE t2 SET a = $3");
        let mut script = Script::new(false);
        *script.next() = statement("t1", &[1, 2]);
        *script.next() = statement("t2", &[3]);
        let pg = script.joined(Backend::Postgres);
        assert_eq!(
            pg[0].text,
            "WITH s0 AS (UPDATE t1 SET a = $1, b = $2), s1 AS (UPDATE t2 SET a = $3) SELECT 1"
        );
        let values: Vec<i64> = pg[0].args.iter().map(|a| if let Arg::Int(Some(n)) = a { *n } else { 0 }).collect();
        assert_eq!(values, [1, 2, 3]);
    }

    #[test]
    fn a_script_past_the_parameter_limit_is_split() {
        let mut script = Script::new(true);
        let many: Vec<i64> = (0..PARAMS_PER_EXECUTION as i64 / 2 + 1).collect();
        *script.next() = statement("t1", &many);
        *script.next() = statement("t2", &many);
        assert_eq!(script.joined(Backend::Sqlite).len(), 2);
    }

    #[test]
    fn sqlite_statements_bind_in_order_through_plain_placeholders() {
        let mut sql = statement("t", &[1, 2, 3]);
        sql.push(" WHERE x = '$'");
        assert_eq!(sql.on(Backend::Sqlite).text, "UPDATE t SET a = ?, b = ?, b = ? WHERE x = '$'");
        assert_eq!(statement("t", &[1]).on(Backend::Postgres).text, "UPDATE t SET a = $1");
        // Placeholders out of order keep their numbers.
        let mut odd = Sql::new("SELECT $2, $1");
        odd.args = vec![Arg::from(1i64), Arg::from(2i64)];
        assert_eq!(odd.on(Backend::Sqlite).text, "SELECT $2, $1");
    }

    /// A store on `backend` migrated up to, not including, the migration named `migration`.
    async fn migrated_before(backend: Backend, migration: &str) -> (Store, Box<dyn FnOnce() + Send>) {
        let name = format!("shoal_ties_{}", uuid::Uuid::new_v4().simple());
        let dir = std::env::temp_dir().join(&name);
        let (url, cleanup): (Option<String>, Box<dyn FnOnce() + Send>) = match backend {
            Backend::Sqlite => {
                let d = dir.clone();
                (None, Box::new(move || drop(std::fs::remove_dir_all(d))))
            }
            Backend::Postgres => {
                let admin =
                    std::env::var("SHOAL_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
                let mut c = sqlx::PgConnection::connect(&admin).await.expect("PostgreSQL for the store's tests");
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut c).await.unwrap();
                let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or_default();
                let url = format!("{base}/{name}");
                let drop_it = move || {
                    let _ = std::thread::spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                        rt.block_on(async {
                            let mut c = sqlx::PgConnection::connect(&admin).await.ok()?;
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut c)
                                .await
                                .ok()
                        })
                    })
                    .join();
                };
                (Some(url), Box::new(drop_it))
            }
        };
        let store = Store::connect(url.as_deref(), &dir, 2, Duration::from_secs(5)).await.unwrap();
        let mut m = match backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("migrations/postgres"),
        };
        let stop = m
            .migrations
            .iter()
            .position(|x| x.description.replace(' ', "_") == migration)
            .expect("the migration exists");
        m.migrations = std::borrow::Cow::Owned(m.migrations[..stop].to_vec());
        m.run(store.pool()).await.unwrap();
        (store, cleanup)
    }

    #[tokio::test]
    async fn cards_that_tie_in_a_column_get_keys_of_their_own_in_their_place_when_keys_become_unique() {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let (store, cleanup) = migrated_before(backend, "unique_ranks").await;
            sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ('w', 'W', 0)")
                .execute(store.pool())
                .await
                .unwrap();
            // Three cards tied at V between U and W, and a V in another column.
            for (id, stage, rank) in [
                ("d1", "s1", "U"),
                ("d4", "s1", "V"),
                ("d2", "s1", "V"),
                ("d3", "s1", "V"),
                ("d5", "s1", "W"),
                ("d6", "s2", "V"),
            ] {
                let sql = format!(
                    "INSERT INTO deals (id, workspace_id, version, created_at, updated_at, title, pipeline_id, stage_id, rank) \
                     VALUES ('{id}', 'w', 1, 0, 0, 't', 'p', '{stage}', '{rank}')"
                );
                sqlx::query(&sql).execute(store.pool()).await.unwrap();
            }

            store.migrate().await.unwrap();

            let rows: Vec<(String, String, String)> = sqlx::query_as("SELECT id, stage_id, rank FROM deals")
                .fetch_all(store.pool())
                .await
                .unwrap();
            let mut s1: Vec<&(String, String, String)> = rows.iter().filter(|r| r.1 == "s1").collect();
            // Byte order, the order the store sorts keys in.
            s1.sort_by(|a, b| a.2.as_bytes().cmp(b.2.as_bytes()));
            let order: Vec<&str> = s1.iter().map(|r| r.0.as_str()).collect();
            assert_eq!(
                order,
                ["d1", "d2", "d3", "d4", "d5"],
                "{backend:?}: tied cards keep their order by id, between U and W"
            );
            assert!(s1.iter().all(|r| crate::domain::rank::is_valid(&r.2)), "{s1:?}");
            assert!(rows.iter().any(|r| r.0 == "d6" && r.2 == "V"), "another column's key is left alone");
            // From now on the store refuses a tie.
            let tie = sqlx::query("UPDATE deals SET rank = 'U' WHERE id = 'd5'")
                .execute(store.pool())
                .await;
            assert!(tie.is_err(), "{backend:?}");
            store.close().await;
            cleanup();
        }
    }
}
