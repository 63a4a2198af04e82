//! The database: opening (file in WAL mode, or in memory), the integrity check, the tables.
//!
//! Times are nanoseconds since the Unix epoch (`INTEGER`), ids are the 64-bit ids stored as
//! SQLite's signed integers (bit-for-bit), a trace chunk's spans are one blob
//! ([`super::codec`]), sketches are the protobuf `DDSketch` bytes of the stats payload,
//! merged when read.
//!
//! Upgrades (at open, in one transaction, logged): the traces of a version 1–4 file (spans
//! as rows with JSON tags in 1–3, blobs of the schema 4 layout in 4) are **dropped**, not
//! converted — the log line says how many; its stats rows (the service and resource pages'
//! figures) are kept.
//!
//! Page size: 4 KiB ([`PAGE_SIZE`], SQLite's default). 16 KiB pages were measured: a chunk's
//! blob is a few KiB, and with 4 KiB pages most take a page of their own or spill onto an
//! overflow page (~1.5 bytes of pages per byte of blob against ~1.2); but the size cap's pass
//! (deletes, incremental vacuum, checkpoint) then let the files reach 26-30 MB for a 16 MiB
//! cap under a burst (hostile case 10, bound 24 MB), so they are not used.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

/// Version of the schema below, in `PRAGMA user_version` (2: `trace_tags`; 3: `trace_tags`
/// keyed by a tag hash, `spans` a rowid table; 4: one blob of spans per chunk, no tag index,
/// `resource_spans`; 5: blobs refer to built-in strings and repeat a span's names by
/// reference, [`super::codec`]).
pub(crate) const SCHEMA_VERSION: i64 = 5;

/// Page size of a new database file, in bytes (see the module doc for 16 KiB).
pub(crate) const PAGE_SIZE: i64 = 4 << 10;

/// WAL bytes after which SQLite checkpoints by itself (`wal_autocheckpoint`, set in pages).
const AUTOCHECKPOINT_BYTES: i64 = 32 << 20;

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
    error_count    INTEGER NOT NULL,
    -- The trace's search filter (local/codec.rs Filter), OR-ed over its chunks.
    f0             INTEGER NOT NULL DEFAULT 0,
    f1             INTEGER NOT NULL DEFAULT 0,
    f2             INTEGER NOT NULL DEFAULT 0,
    f3             INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS traces_start ON traces(start);
-- Trace search (local/search.rs): erroneous traces only, newest first.
CREATE INDEX IF NOT EXISTS traces_errors ON traces(start) WHERE error_count > 0;
-- One row per stored trace chunk: its spans in one blob (local/codec.rs), appended in
-- arrival order; the trace page, the search and the service map read a trace's blobs by id.
CREATE TABLE IF NOT EXISTS chunks (
    trace_id  INTEGER NOT NULL,
    spans     BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_trace ON chunks(trace_id);
-- The resource page's list of traces (local/query): the spans stats are computed for (top
-- level in their chunk, measured, or of a client/server/producer/consumer kind), one B-tree
-- keyed by what the page asks for; deleted by retention by `start` (a scan).
CREATE TABLE IF NOT EXISTS resource_spans (
    service        TEXT NOT NULL,
    resource       TEXT NOT NULL,
    name           TEXT NOT NULL,
    start          INTEGER NOT NULL,
    trace_id       INTEGER NOT NULL,
    span_id        INTEGER NOT NULL,
    duration       INTEGER NOT NULL,
    error          INTEGER NOT NULL,
    error_type     TEXT,
    error_message  TEXT,
    PRIMARY KEY (service, resource, name, start, trace_id, span_id)
) WITHOUT ROWID;
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
    conn.execute_batch(&format!(
        "PRAGMA page_size = {PAGE_SIZE}; PRAGMA auto_vacuum = INCREMENTAL;"
    ))
    .map_err(err("set auto_vacuum"))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(err("switch to WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), mode, "local store: WAL not available, using {mode}");
    }
    // NORMAL: a commit does not wait for the disk (WAL keeps the file consistent; a power cut
    // loses the last batches at most). A 32 MiB page cache keeps the indexes' hot pages of a
    // write batch in memory (at 16 MiB, reading back evicted pages of the random-keyed
    // `traces` table was a tenth of the writer's time at saturation); a checkpoint every
    // 32 MiB of WAL rather than 1000 pages (the writer also checkpoints for the size cap,
    // see writer::enforce_size).
    let page: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(err("read page_size"))?;
    let autocheckpoint = AUTOCHECKPOINT_BYTES / page.max(512);
    conn.execute_batch(&format!(
        "PRAGMA synchronous = NORMAL; PRAGMA cache_size = -32768; PRAGMA wal_autocheckpoint = {autocheckpoint};"
    ))
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
            // Versions 1 to 3 kept one row per span with JSON tags, 4 blobs of another
            // layout: not converted (a copy would take as long as the data took to arrive);
            // the stats rows stay.
            let traces: i64 = conn
                .query_row("SELECT count(*) FROM traces", [], |r| r.get(0))
                .unwrap_or(0);
            tracing::warn!(
                path = %path.display(),
                "local store: the database has schema version {found}, this agent writes {SCHEMA_VERSION}: \
                 its {traces} stored traces are dropped (their spans are not converted); stats are kept"
            );
            conn.execute_batch(
                "DROP TABLE IF EXISTS trace_tags;
                 DROP TABLE IF EXISTS spans;
                 DROP TABLE IF EXISTS chunks;
                 DROP TABLE IF EXISTS resource_spans;
                 DROP TABLE IF EXISTS traces;",
            )
            .map_err(err("drop the old trace tables"))?;
        }
        conn.execute_batch(DDL).map_err(err("create tables"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 4 file: one trace (a blob of the schema 4 layout), its listed span, one
    /// stats row.
    fn version_4_database() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        let stats = &DDL[DDL.find("CREATE TABLE IF NOT EXISTS stats").unwrap()..];
        conn.execute_batch(&format!(
            "CREATE TABLE traces (trace_id INTEGER PRIMARY KEY, trace_id_high INTEGER NOT NULL DEFAULT 0, \
               start INTEGER NOT NULL, end INTEGER NOT NULL, root_rank INTEGER NOT NULL DEFAULT 0, \
               root_service TEXT, root_name TEXT, root_resource TEXT, root_duration INTEGER, \
               env TEXT NOT NULL DEFAULT '', span_count INTEGER NOT NULL, error_count INTEGER NOT NULL, \
               f0 INTEGER NOT NULL DEFAULT 0, f1 INTEGER NOT NULL DEFAULT 0, f2 INTEGER NOT NULL DEFAULT 0, \
               f3 INTEGER NOT NULL DEFAULT 0);
             CREATE INDEX traces_start ON traces(start);
             CREATE TABLE chunks (trace_id INTEGER NOT NULL, spans BLOB NOT NULL);
             CREATE INDEX chunks_trace ON chunks(trace_id);
             CREATE TABLE resource_spans (service TEXT NOT NULL, resource TEXT NOT NULL, name TEXT NOT NULL, \
               start INTEGER NOT NULL, trace_id INTEGER NOT NULL, span_id INTEGER NOT NULL, \
               duration INTEGER NOT NULL, error INTEGER NOT NULL, error_type TEXT, error_message TEXT, \
               PRIMARY KEY (service, resource, name, start, trace_id, span_id)) WITHOUT ROWID;
             INSERT INTO traces (trace_id, start, end, span_count, error_count) VALUES (7, 100, 200, 1, 0);
             INSERT INTO chunks VALUES (7, x'01000000000000000000000000000000c801c801000a736870016e017203776562000000');
             INSERT INTO resource_spans VALUES ('s', 'r', 'n', 100, 7, 1, 100, 0, NULL, NULL);
             {stats}
             INSERT INTO stats (bucket_start, bucket_duration, env, version, service, name, resource, type, \
               http_status_code, span_kind, is_trace_root, synthetics, hits, errors, duration, top_level_hits) \
               VALUES (0, 10, 'e', 'v', 's', 'n', 'r', 'web', 200, '', 0, 0, 3, 0, 30, 3);
             PRAGMA user_version = 4;"
        ))
        .unwrap();
        conn
    }

    /// A version `version` file: one trace of two spans (as rows) and one stats row (version
    /// 4: [`version_4_database`]).
    fn old_database(version: i64) -> Connection {
        if version == 4 {
            return version_4_database();
        }
        let conn = Connection::open_in_memory().unwrap();
        let tags = if version == 3 {
            "CREATE TABLE trace_tags (tag INTEGER NOT NULL, start INTEGER NOT NULL, trace_id INTEGER NOT NULL, \
             PRIMARY KEY (tag, start, trace_id)) WITHOUT ROWID; INSERT INTO trace_tags VALUES (1, 100, 7);"
        } else {
            ""
        };
        let stats = &DDL[DDL.find("CREATE TABLE IF NOT EXISTS stats").unwrap()..];
        conn.execute_batch(&format!(
            "CREATE TABLE traces (trace_id INTEGER PRIMARY KEY, start INTEGER NOT NULL, end INTEGER NOT NULL, \
               span_count INTEGER NOT NULL, error_count INTEGER NOT NULL);
             CREATE TABLE spans (trace_id INTEGER NOT NULL, span_id INTEGER NOT NULL, parent_id INTEGER NOT NULL, \
               service TEXT NOT NULL, name TEXT NOT NULL, resource TEXT NOT NULL, type TEXT NOT NULL, \
               start INTEGER NOT NULL, duration INTEGER NOT NULL, error INTEGER NOT NULL, meta TEXT NOT NULL, \
               metrics TEXT NOT NULL);
             CREATE INDEX spans_start ON spans(start);
             INSERT INTO traces VALUES (7, 100, 200, 2, 0);
             INSERT INTO spans VALUES (7, 1, 0, 's', 'n', 'r', 'web', 100, 100, 0, '{{}}', '{{}}');
             INSERT INTO spans VALUES (7, 2, 1, 's', 'n', 'r', 'web', 150, 10, 0, '{{}}', '{{}}');
             {tags}
             {stats}
             INSERT INTO stats (bucket_start, bucket_duration, env, version, service, name, resource, type, \
               http_status_code, span_kind, is_trace_root, synthetics, hits, errors, duration, top_level_hits) \
               VALUES (0, 10, 'e', 'v', 's', 'n', 'r', 'web', 200, '', 0, 0, 3, 0, 30, 3);
             PRAGMA user_version = {version};"
        ))
        .unwrap();
        conn
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn version_1_to_4_databases_lose_their_traces_and_keep_their_stats() {
        for version in 1..SCHEMA_VERSION {
            let conn = old_database(version);
            create_schema(&conn, Path::new(":memory:")).unwrap();
            assert_eq!(count(&conn, "PRAGMA user_version"), SCHEMA_VERSION);
            assert_eq!(count(&conn, "SELECT count(*) FROM traces"), 0, "from {version}");
            assert_eq!(count(&conn, "SELECT count(*) FROM chunks"), 0);
            assert_eq!(count(&conn, "SELECT count(*) FROM resource_spans"), 0, "from {version}");
            assert_eq!(count(&conn, "SELECT sum(hits) FROM stats"), 3, "from {version}");
            assert_eq!(
                count(
                    &conn,
                    "SELECT count(*) FROM sqlite_master WHERE name IN ('spans', 'trace_tags', 'spans_start')"
                ),
                0
            );
            // The new tables work: a trace row with every column.
            conn.execute_batch(
                "INSERT INTO traces (trace_id, start, end, span_count, error_count) VALUES (8, 1, 2, 1, 0);
                 INSERT INTO chunks (trace_id, spans) VALUES (8, x'');",
            )
            .unwrap();
        }
        // A current file is left as it is.
        let conn = open_memory().unwrap();
        conn.execute_batch(
            "INSERT INTO traces (trace_id, start, end, span_count, error_count) VALUES (8, 1, 2, 1, 0);",
        )
        .unwrap();
        create_schema(&conn, Path::new(":memory:")).unwrap();
        assert_eq!(count(&conn, "SELECT count(*) FROM traces"), 1);
    }
}
