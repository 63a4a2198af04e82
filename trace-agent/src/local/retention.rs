//! Retention: delete data older than the configured age, then the oldest **traces** (their
//! summaries, span blobs and resource page rows) while the database is larger than the configured size, and give the freed
//! pages back to the disk. Stats rows are small and make the service pages: the size cap
//! deletes them only once no span is left. Ages are measured on the data's own timestamps
//! (span start, stats bucket start), the clock the views use; the size cap bounds whatever a
//! skewed tracer clock leaves behind.
//!
//! The writer runs the age pass every `retention_interval` and the size pass after every
//! batch that took the files (database + WAL) past the cap, down to 90 % of it, so the disk
//! never holds more than the cap plus one batch.

use std::time::Duration;

use rusqlite::{Connection, params};

/// What to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Older data is deleted.
    pub max_age: Duration,
    /// The oldest data is deleted while the database uses more.
    pub max_size_bytes: u64,
}

/// What one retention run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RetentionReport {
    /// Spans deleted.
    pub spans: u64,
    /// Trace summaries deleted.
    pub traces: u64,
    /// Stats rows (one group of one bucket) deleted.
    pub stats_rows: u64,
    /// Bytes in use before.
    pub size_before: u64,
    /// Bytes in use after.
    pub size_after: u64,
    /// Size passes (each deleting the oldest tenth of the time range).
    pub size_passes: u32,
}

/// Bytes the database uses (pages in use × page size; free pages excluded).
///
/// # Errors
/// A SQLite error.
pub fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(u64::try_from((pages - free).max(0) * size).unwrap_or(0))
}

fn delete_spans_before(conn: &mut Connection, cutoff: i64, report: &mut RetentionReport) -> rusqlite::Result<u64> {
    let tx = conn.transaction()?;
    let spans: i64 = tx.query_row(
        "SELECT coalesce(sum(span_count), 0) FROM traces WHERE start < ?1",
        params![cutoff],
        |r| r.get(0),
    )?;
    // A trace's chunks go with it (every chunk has its trace's row, whose start is the
    // earliest of its chunks').
    tx.execute(
        "DELETE FROM chunks WHERE trace_id IN (SELECT trace_id FROM traces WHERE start < ?1)",
        params![cutoff],
    )?;
    let traces = tx.execute("DELETE FROM traces WHERE start < ?1", params![cutoff])? as u64;
    tx.execute("DELETE FROM resource_spans WHERE start < ?1", params![cutoff])?;
    tx.commit()?;
    let spans = u64::try_from(spans).unwrap_or(0);
    report.spans += spans;
    report.traces += traces;
    Ok(spans + traces)
}

fn delete_stats_before(conn: &mut Connection, cutoff: i64, report: &mut RetentionReport) -> rusqlite::Result<u64> {
    let stats = conn.execute("DELETE FROM stats WHERE bucket_start < ?1", params![cutoff])? as u64;
    report.stats_rows += stats;
    Ok(stats)
}

/// Time range (oldest, newest) of the traces, in ns.
fn span_range(conn: &Connection) -> rusqlite::Result<Option<(i64, i64)>> {
    conn.query_row("SELECT min(start), max(start) FROM traces", [], |r| {
        Ok(r.get::<_, Option<i64>>(0)?.zip(r.get::<_, Option<i64>>(1)?))
    })
}

/// Time range (oldest, newest) of the stats rows, in ns.
fn stats_range(conn: &Connection) -> rusqlite::Result<Option<(i64, i64)>> {
    conn.query_row("SELECT min(bucket_start), max(bucket_start) FROM stats", [], |r| {
        Ok(r.get::<_, Option<i64>>(0)?.zip(r.get::<_, Option<i64>>(1)?))
    })
}

/// Runs retention at `now_ns` (ns since the Unix epoch): the age pass, then the size pass
/// down to `max_size_bytes`.
///
/// # Errors
/// A SQLite error; what was deleted before it stays deleted.
pub fn retain(conn: &mut Connection, now_ns: i64, policy: RetentionPolicy) -> rusqlite::Result<RetentionReport> {
    let mut report = RetentionReport {
        size_before: used_bytes(conn)?,
        ..RetentionReport::default()
    };
    let max_age = i64::try_from(policy.max_age.as_nanos()).unwrap_or(i64::MAX);
    let cutoff = now_ns.saturating_sub(max_age);
    delete_spans_before(conn, cutoff, &mut report)?;
    delete_stats_before(conn, cutoff, &mut report)?;
    shrink_to(conn, policy.max_size_bytes, &mut report)?;
    release(conn, &report)?;
    report.size_after = used_bytes(conn)?;
    Ok(report)
}

/// The size pass alone, down to `target` bytes in use (the writer's continuous check).
///
/// # Errors
/// A SQLite error; what was deleted before it stays deleted.
pub fn shrink(conn: &mut Connection, target: u64) -> rusqlite::Result<RetentionReport> {
    let mut report = RetentionReport {
        size_before: used_bytes(conn)?,
        ..RetentionReport::default()
    };
    shrink_to(conn, target, &mut report)?;
    release(conn, &report)?;
    report.size_after = used_bytes(conn)?;
    Ok(report)
}

/// Deletes the oldest spans (then, once none is left, the oldest stats rows), a tenth of
/// their time range at a time, while more than `target` bytes are in use.
fn shrink_to(conn: &mut Connection, target: u64, report: &mut RetentionReport) -> rusqlite::Result<()> {
    while used_bytes(conn)? > target {
        report.size_passes += 1;
        let deleted = if let Some((oldest, newest)) = span_range(conn)? {
            // The oldest tenth of what is stored, at least a millisecond, at least one row (a
            // burst of a few seconds must not lose half of itself in one step).
            let step = ((newest - oldest) / 10).max(1_000_000);
            delete_spans_before(conn, oldest.saturating_add(step), report)?
        } else if let Some((oldest, newest)) = stats_range(conn)? {
            let step = ((newest - oldest) / 10).max(1_000_000_000);
            delete_stats_before(conn, oldest.saturating_add(step), report)?
        } else {
            0
        };
        if deleted == 0 {
            break;
        }
    }
    Ok(())
}

/// Gives freed pages back to the file system: incremental vacuum, then a truncating WAL
/// checkpoint (a reader in the way makes it partial, which is fine).
fn release(conn: &mut Connection, report: &RetentionReport) -> rusqlite::Result<()> {
    if report.spans + report.traces + report.stats_rows > 0 {
        // Each step of this pragma frees pages; run it to the end.
        let mut stmt = conn.prepare("PRAGMA incremental_vacuum")?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
        drop(rows);
        drop(stmt);
        checkpoint(conn)?;
    }
    Ok(())
}

/// `PRAGMA wal_checkpoint(TRUNCATE)`: the WAL's pages go to the database file and the WAL
/// file is emptied (partial when a reader holds an old snapshot).
///
/// # Errors
/// A SQLite error.
pub fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
}
