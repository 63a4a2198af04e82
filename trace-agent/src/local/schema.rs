//! The database: opening (file in WAL mode, or in memory), the integrity check, the tables.
//!
//! Times are nanoseconds since the Unix epoch (`INTEGER`), ids are the 64-bit ids stored as
//! SQLite's signed integers (bit-for-bit), tags are JSON objects (`TEXT`), sketches are the
//! protobuf `DDSketch` bytes of the stats payload, merged when read. The tag index keys a
//! tag by [`tag_hash`] (one integer), not by its text.
//!
//! Upgrades (at open, in one transaction, logged): version 1 and 2 files get their spans
//! copied into the version 3 `spans` table (a rowid table) and the version 3 tag index built
//! from the stored spans' tags (the old `trace_tags` is dropped); nothing stored is lost.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

/// Version of the schema below, in `PRAGMA user_version` (2: `trace_tags`; 3: `trace_tags`
/// keyed by [`tag_hash`], without `_dd.*` tags; `spans` a rowid table).
pub(crate) const SCHEMA_VERSION: i64 = 3;

/// Longest tag key and value (bytes) kept in `trace_tags`; a search for a longer one checks
/// the spans' tags per trace instead.
pub const MAX_INDEXED_TAG_BYTES: usize = 128;

/// Whether the tag `key:value` has rows in `trace_tags`: key and value at most
/// [`MAX_INDEXED_TAG_BYTES`], and not a tracer's internal `_dd.*` tag (sampling decision,
/// trace id high bits: the same on most traces, never worth a set). A search for any other
/// tag checks the spans' tags per trace.
pub fn tag_indexed(key: &str, value: &str) -> bool {
    key.len() <= MAX_INDEXED_TAG_BYTES && value.len() <= MAX_INDEXED_TAG_BYTES && !key.starts_with("_dd.")
}

/// The key of a tag in `trace_tags`: 64-bit FNV-1a of the key, a 0xff byte (never in UTF-8)
/// and the value, as SQLite's signed integer. Stored on disk: never change it without a new
/// schema version. Two tags with the same hash only widen a search's candidate set: every
/// match is confirmed on the spans' stored tags.
pub fn tag_hash(key: &str, value: &str) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in key.bytes().chain([0xff]).chain(value.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

const DDL: &str = "
CREATE TABLE IF NOT EXISTS traces (
    trace_id       INTEGER PRIMARY KEY,
    trace_id_high  INTEGER NOT NULL DEFAULT 0,
    start          INTEGER NOT NULL,
    end            INTEGER NOT NULL,
    root_rank      INTEGER NOT NULL DEFAULT 0,
    root_service   TEXT,
    root_name      TEXT,
    root_resource  TEXT,
    root_duration  INTEGER,
    env            TEXT NOT NULL DEFAULT '',
    span_count     INTEGER NOT NULL,
    error_count    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS traces_start ON traces(start);
-- Trace search (local/search.rs): erroneous traces only, newest first.
CREATE INDEX IF NOT EXISTS traces_errors ON traces(start) WHERE error_count > 0;
-- A rowid table (version 3): spans are appended in arrival order, the random trace ids only
-- go into the small unique index `spans_ids` (a table keyed by them moved whole rows around).
CREATE TABLE IF NOT EXISTS spans (
    trace_id   INTEGER NOT NULL,
    span_id    INTEGER NOT NULL,
    parent_id  INTEGER NOT NULL,
    service    TEXT NOT NULL,
    name       TEXT NOT NULL,
    resource   TEXT NOT NULL,
    type       TEXT NOT NULL,
    start      INTEGER NOT NULL,
    duration   INTEGER NOT NULL,
    error      INTEGER NOT NULL,
    meta       TEXT NOT NULL,
    metrics    TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS spans_ids ON spans(trace_id, span_id);
CREATE INDEX IF NOT EXISTS spans_resource ON spans(service, resource, start);
CREATE INDEX IF NOT EXISTS spans_start ON spans(start);
-- Tag search (local/search.rs): one row per distinct indexed string tag (tag_indexed) per
-- trace chunk, keyed by tag_hash(key, value), `start` being the chunk's first span start
-- (never before its trace's start); deleted by retention with the spans.
CREATE TABLE IF NOT EXISTS trace_tags (
    tag       INTEGER NOT NULL,
    start     INTEGER NOT NULL,
    trace_id  INTEGER NOT NULL,
    PRIMARY KEY (tag, start, trace_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trace_tags_start ON trace_tags(start);
CREATE TABLE IF NOT EXISTS stats (
    bucket_start     INTEGER NOT NULL,
    bucket_duration  INTEGER NOT NULL,
    env              TEXT NOT NULL,
    version          TEXT NOT NULL,
    service          TEXT NOT NULL,
    name             TEXT NOT NULL,
    resource         TEXT NOT NULL,
    type             TEXT NOT NULL,
    http_status_code INTEGER NOT NULL,
    span_kind        TEXT NOT NULL,
    is_trace_root    INTEGER NOT NULL,
    synthetics       INTEGER NOT NULL,
    hits             INTEGER NOT NULL,
    errors           INTEGER NOT NULL,
    duration         INTEGER NOT NULL,
    top_level_hits   INTEGER NOT NULL,
    ok_summary       BLOB,
    error_summary    BLOB
);
CREATE INDEX IF NOT EXISTS stats_service ON stats(service, bucket_start);
CREATE INDEX IF NOT EXISTS stats_start ON stats(bucket_start);
";

/// Why the database could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory cannot be created or written.
    #[error("local store: cannot use the data directory {path}: {source} (set apm_config.local.data_dir)")]
    DataDir {
        /// Directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not a usable SQLite database.
    #[error(
        "local store: {path} is not a usable database ({detail}); it was left untouched: move it \
         away or delete it to start a new one"
    )]
    Corrupt {
        /// File.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
    /// Another process holds a lock on the database.
    #[error(
        "local store: {path} is locked by another process (another trace-agent with the same \
         apm_config.local.data_dir?): {detail}"
    )]
    Locked {
        /// File.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
    /// Written by a newer agent.
    #[error("local store: {path} has schema version {found}, this agent knows {SCHEMA_VERSION}; use another data_dir")]
    Version {
        /// File.
        path: PathBuf,
        /// `user_version` found.
        found: i64,
    },
    /// The writer thread could not be started.
    #[error("local store: cannot start the writer thread: {0}")]
    Thread(std::io::Error),
    /// Any other SQLite failure.
    #[error("local store: {context}: {source}")]
    Sqlite {
        /// What was being done.
        context: String,
        /// Cause.
        source: rusqlite::Error,
    },
}

impl StoreError {
    /// Wraps a SQLite error met on `path`, classifying corruption and locks.
    pub(crate) fn from_sqlite(path: &Path, context: &str, e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => Self::Corrupt {
                path: path.to_owned(),
                detail: e.to_string(),
            },
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Self::Locked {
                path: path.to_owned(),
                detail: e.to_string(),
            },
            _ => Self::Sqlite {
                context: format!("{context} ({})", path.display()),
                source: e,
            },
        }
    }

    /// A short name for counters and `status`: `corrupt`, `locked`, `data_dir`, `version`, `sqlite`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::DataDir { .. } => "data_dir",
            Self::Corrupt { .. } => "corrupt",
            Self::Locked { .. } => "locked",
            Self::Version { .. } => "version",
            Self::Thread(_) => "thread",
            Self::Sqlite { .. } => "sqlite",
        }
    }
}

/// Whether a SQLite error at run time means the file can no longer be used (switch to memory).
pub(crate) fn is_fatal(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt | ErrorCode::ReadOnly)
    )
}

/// How long a statement waits for another connection's lock before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_millis(500);

/// Opens (creating it if needed) the database file at `path` for writing: WAL, incremental
/// auto-vacuum, integrity checked, schema created.
///
/// # Errors
/// [`StoreError::Corrupt`], [`StoreError::Locked`], [`StoreError::Version`] or another SQLite error.
pub(crate) fn open_file(path: &Path) -> Result<Connection, StoreError> {
    let err = |context: &str| {
        let context = context.to_owned();
        move |e| StoreError::from_sqlite(path, &context, e)
    };
    let conn = Connection::open(path).map_err(err("open"))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err("set busy timeout"))?;
    // Only effective before the first table exists; later opens keep what the file has.
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")
        .map_err(err("set auto_vacuum"))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(err("switch to WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), mode, "local store: WAL not available, using {mode}");
    }
    // NORMAL: a commit does not wait for the disk (WAL keeps the file consistent; a power cut
    // loses the last batches at most). A 16 MiB page cache keeps the indexes' hot pages of a
    // write batch in memory; a checkpoint every 8192 pages (32 MiB of WAL) rather than 1000
    // (the writer also checkpoints for the size cap, see writer::enforce_size).
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA cache_size = -16384; PRAGMA wal_autocheckpoint = 8192;")
        .map_err(err("set synchronous"))?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(err("check integrity"))?;
    if check != "ok" {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            detail: format!("integrity check: {check}"),
        });
    }
    create_schema(&conn, path)?;
    Ok(conn)
}

/// Opens a second, read-only connection on the file (WAL lets it read while the writer writes).
///
/// # Errors
/// A SQLite error.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| StoreError::from_sqlite(path, "open reader", e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| StoreError::from_sqlite(path, "set busy timeout", e))?;
    Ok(conn)
}

/// A fresh in-memory database with the schema (the fallback when the file cannot be used).
///
/// # Errors
/// A SQLite error (out of memory).
pub(crate) fn open_memory() -> Result<Connection, StoreError> {
    let path = Path::new(":memory:");
    let conn = Connection::open_in_memory().map_err(|e| StoreError::from_sqlite(path, "open in memory", e))?;
    create_schema(&conn, path)?;
    Ok(conn)
}

fn create_schema(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let err = |context: &'static str| move |e| StoreError::from_sqlite(path, context, e);
    // IMMEDIATE: take the write lock now, so a lock held elsewhere shows up here, at start.
    conn.execute_batch("BEGIN IMMEDIATE;")
        .map_err(err("begin schema transaction"))?;
    let result = (|| {
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err("read schema version"))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::Version {
                path: path.to_owned(),
                found,
            });
        }
        if (1..SCHEMA_VERSION).contains(&found) {
            // Versions 1 and 2 kept spans in a table keyed by (trace_id, span_id), and version
            // 2 keyed `trace_tags` by the tag's text: the spans are copied into the new table,
            // the tag index is rebuilt below.
            conn.execute_batch(
                "DROP TABLE IF EXISTS trace_tags;
                 DROP INDEX IF EXISTS spans_resource;
                 DROP INDEX IF EXISTS spans_start;
                 ALTER TABLE spans RENAME TO spans_before_v3;",
            )
            .map_err(err("set the old tables aside"))?;
        }
        conn.execute_batch(DDL).map_err(err("create tables"))?;
        if (1..SCHEMA_VERSION).contains(&found) {
            tracing::info!(
                path = %path.display(),
                "local store: upgrading the database from schema version {found} to {SCHEMA_VERSION}: \
                 re-indexing the tags of the stored traces"
            );
            conn.execute_batch(
                "INSERT OR REPLACE INTO spans (trace_id, span_id, parent_id, service, name, resource, type, start, \
                   duration, error, meta, metrics) \
                 SELECT trace_id, span_id, parent_id, service, name, resource, type, start, duration, error, meta, \
                   metrics FROM spans_before_v3 ORDER BY start; \
                 DROP TABLE spans_before_v3;",
            )
            .map_err(err("copy the stored spans"))?;
            backfill_tags(conn).map_err(err("index the stored tags"))?;
        }
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))
            .map_err(err("write schema version"))?;
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT;").map_err(err("commit schema")),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK;");
            Err(e)
        }
    }
}

/// Fills `trace_tags` from the stored spans' tags (an upgrade), with their trace's start.
fn backfill_tags(conn: &Connection) -> rusqlite::Result<()> {
    let mut read =
        conn.prepare("SELECT t.trace_id, t.start, s.meta FROM traces t JOIN spans s ON s.trace_id = t.trace_id")?;
    let mut insert = conn.prepare("INSERT OR IGNORE INTO trace_tags (tag, start, trace_id) VALUES (?1, ?2, ?3)")?;
    let mut rows = read.query([])?;
    while let Some(r) = rows.next()? {
        let (trace_id, start, meta): (i64, i64, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let Ok(meta) = serde_json::from_str::<std::collections::HashMap<String, serde_json::Value>>(&meta) else {
            continue;
        };
        for (k, v) in &meta {
            if let serde_json::Value::String(v) = v
                && tag_indexed(k, v)
            {
                insert.execute(rusqlite::params![tag_hash(k, v), start, trace_id])?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version `version` file holding one trace of two spans (no tag index).
    fn old_database(version: i64) -> Connection {
        let conn = open_memory().unwrap();
        let long = "x".repeat(MAX_INDEXED_TAG_BYTES + 1);
        let meta = serde_json::json!({"user.id": "u1", "env": "prod", "sql": long, "_dd.p.dm": "-0"}).to_string();
        let old_tags = if version == 2 {
            "CREATE TABLE trace_tags (key TEXT NOT NULL, value TEXT NOT NULL, start INTEGER NOT NULL, \
             trace_id INTEGER NOT NULL, PRIMARY KEY (key, value, start, trace_id)) WITHOUT ROWID;"
        } else {
            ""
        };
        conn.execute_batch(&format!(
            "DROP TABLE spans;
             CREATE TABLE spans (trace_id INTEGER NOT NULL, span_id INTEGER NOT NULL, parent_id INTEGER NOT NULL, \
               service TEXT NOT NULL, name TEXT NOT NULL, resource TEXT NOT NULL, type TEXT NOT NULL, \
               start INTEGER NOT NULL, duration INTEGER NOT NULL, error INTEGER NOT NULL, meta TEXT NOT NULL, \
               metrics TEXT NOT NULL, PRIMARY KEY (trace_id, span_id)) WITHOUT ROWID;
             CREATE INDEX spans_resource ON spans(service, resource, start);
             CREATE INDEX spans_start ON spans(start);
             INSERT INTO traces (trace_id, start, end, span_count, error_count) VALUES (7, 100, 200, 2, 0);
             INSERT INTO spans VALUES (7, 1, 0, 's', 'n', 'r', 'web', 100, 100, 0, '{meta}', '{{}}');
             INSERT INTO spans VALUES (7, 2, 1, 's', 'n', 'r', 'web', 150, 10, 0, '{{\"user.id\":\"u1\"}}', '{{}}');
             DROP TABLE trace_tags;
             {old_tags}
             PRAGMA user_version = {version};"
        ))
        .unwrap();
        conn
    }

    #[test]
    fn version_1_and_2_databases_get_the_tags_of_their_stored_traces_indexed() {
        for version in [1, 2] {
            let conn = old_database(version);
            create_schema(&conn, Path::new(":memory:")).unwrap();
            let mut rows: Vec<(i64, i64, i64)> = conn
                .prepare("SELECT tag, start, trace_id FROM trace_tags")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            rows.sort_unstable();
            let mut want = vec![(tag_hash("env", "prod"), 100, 7), (tag_hash("user.id", "u1"), 100, 7)];
            want.sort_unstable();
            assert_eq!(rows, want, "from version {version}");
            let spans: Vec<(i64, String)> = conn
                .prepare("SELECT span_id, name FROM spans WHERE trace_id = 7 ORDER BY start")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert_eq!(
                spans,
                [(1, "n".to_owned()), (2, "n".to_owned())],
                "from version {version}"
            );
            let indexes: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'spans' \
                     AND name IN ('spans_ids', 'spans_resource', 'spans_start')",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(indexes, 3);
            let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
            assert_eq!(version, SCHEMA_VERSION);
        }
    }

    #[test]
    fn tag_hashes_are_stable_and_tell_key_from_value() {
        // Stored on disk: a changed function would make every stored tag unsearchable.
        assert_eq!(tag_hash("", ""), 0xaf64_724c_8602_eb6e_u64 as i64);
        assert_ne!(tag_hash("ab", "c"), tag_hash("a", "bc"));
        assert!(tag_indexed("user.id", "u1"));
        assert!(!tag_indexed("_dd.p.dm", "-0"));
        assert!(!tag_indexed("sql", &"x".repeat(MAX_INDEXED_TAG_BYTES + 1)));
    }
}
