//! The spool: a bounded directory where writers put what they accepted but could not deliver
//! (the shutdown deadline passed, the queue overflowed, the destination stayed down through
//! every retry), so it is sent after the next start instead of being lost.
//!
//! One sub-directory per lane (a writer, a signal and a destination: `datadog-traces-<hash of
//! the URL>`, `local`), so a payload goes back only where it was not delivered. One file per
//! payload, written to a temporary name then renamed (a crash never leaves half a record
//! under a final name); file names sort oldest first. The total size of the directory is
//! capped (`apm_config.spool.max_size`); past it a record is refused and the caller counts the
//! data as dropped. Directories are created 0700 and files 0600 (trace data is private).
//!
//! Record format (little endian): `APMSPOOL1`, kind (u8: 0 traces, 1 stats), items (u64),
//! header count (u16), each header as (u16 length, bytes) name then value, body length (u64),
//! body. A file that does not parse is removed and counted (`corrupt`).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Default cap of the spool directory: 256 MiB.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 << 20;

const MAGIC: &[u8] = b"APMSPOOL1";
const SUFFIX: &str = "spool";

/// `apm_config.spool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// `apm_config.spool.dir`; `None`: no spool (undeliverable data is dropped and counted).
    /// Loaded configurations default to `<apm_config.local.data_dir>/spool`.
    pub dir: Option<PathBuf>,
    /// `apm_config.spool.max_size`: bytes the directory may hold (0 turns the spool off).
    pub max_bytes: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: None,
            max_bytes: DEFAULT_SPOOL_MAX_BYTES,
        }
    }
}

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// Trace payloads.
    Traces,
    /// Stats payloads.
    Stats,
}

/// One spooled payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Traces or stats.
    pub kind: RecordKind,
    /// Items inside (trace chunks, stats groups), for the counters.
    pub items: u64,
    /// Headers that go with the body (content type and encoding); never credentials.
    pub headers: Vec<(String, String)>,
    /// The body, as the writer would send or write it.
    pub body: Vec<u8>,
}

impl Record {
    /// Serialized form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 64);
        out.extend_from_slice(MAGIC);
        out.push(match self.kind {
            RecordKind::Traces => 0,
            RecordKind::Stats => 1,
        });
        out.extend_from_slice(&self.items.to_le_bytes());
        let headers: Vec<_> = self
            .headers
            .iter()
            .filter(|(k, v)| k.len() <= usize::from(u16::MAX) && v.len() <= usize::from(u16::MAX))
            .take(usize::from(u16::MAX))
            .collect();
        out.extend_from_slice(&(headers.len() as u16).to_le_bytes());
        for (k, v) in headers {
            for s in [k, v] {
                out.extend_from_slice(&(s.len() as u16).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        out.extend_from_slice(&(self.body.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    /// Parses [`Record::encode`]'s output; `None` when it is not a whole record.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let mut r = Reader(b);
        if r.take(MAGIC.len())? != MAGIC {
            return None;
        }
        let kind = match r.take(1)?.first()? {
            0 => RecordKind::Traces,
            1 => RecordKind::Stats,
            _ => return None,
        };
        let items = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
        let n = u16::from_le_bytes(r.take(2)?.try_into().ok()?);
        let mut headers = Vec::with_capacity(usize::from(n).min(64));
        for _ in 0..n {
            let k = r.string()?;
            let v = r.string()?;
            headers.push((k, v));
        }
        let len = usize::try_from(u64::from_le_bytes(r.take(8)?.try_into().ok()?)).ok()?;
        let body = r.take(len)?.to_vec();
        r.0.is_empty().then_some(Self {
            kind,
            items,
            headers,
            body,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    fn string(&mut self) -> Option<String> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().ok()?);
        String::from_utf8(self.take(usize::from(n))?.to_vec()).ok()
    }
}

/// Why a record was not spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The directory holds `max_size` bytes already.
    #[error("the spool {dir} is full ({max_bytes} bytes, apm_config.spool.max_size)")]
    Full {
        /// The directory.
        dir: PathBuf,
        /// Its cap.
        max_bytes: u64,
    },
    /// A file system error.
    #[error("cannot write to the spool {dir}: {source}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// Cause.
        source: io::Error,
    },
}

/// The spool directory, shared by every lane (one size cap for all).
#[derive(Debug)]
pub struct SpoolDir {
    dir: PathBuf,
    max_bytes: u64,
    used: AtomicU64,
    seq: AtomicU64,
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

fn files_in(dir: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, u64)> = rd
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == SUFFIX))
        .filter_map(|e| Some((e.path(), e.metadata().ok()?.len())))
        .collect();
    out.sort();
    out
}

impl SpoolDir {
    /// Opens (creating it 0700) the spool at `config.dir`; `Ok(None)` when the spool is off.
    /// Leftover temporary files of an interrupted write are removed.
    ///
    /// # Errors
    /// When the directory cannot be created or read.
    pub fn open(config: &SpoolConfig) -> Result<Option<Arc<Self>>, SpoolError> {
        let Some(dir) = config.dir.clone().filter(|_| config.max_bytes > 0) else {
            return Ok(None);
        };
        let io_err = |source| SpoolError::Io {
            dir: dir.clone(),
            source,
        };
        create_private_dir(&dir).map_err(io_err)?;
        let mut used = 0;
        for entry in fs::read_dir(&dir).map_err(io_err)?.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                for f in fs::read_dir(&path).into_iter().flatten().filter_map(Result::ok) {
                    let p = f.path();
                    if p.extension().is_some_and(|x| x == "tmp") {
                        let _ = fs::remove_file(&p);
                    } else if let Ok(m) = f.metadata() {
                        used += m.len();
                    }
                }
            }
        }
        Ok(Some(Arc::new(Self {
            dir,
            max_bytes: config.max_bytes,
            used: AtomicU64::new(used),
            seq: AtomicU64::new(0),
        })))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Bytes the spool holds now.
    pub fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The cap.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Whether the spool is at least 90 % full (a writer relying on it is about to drop).
    pub fn nearly_full(&self) -> bool {
        self.used_bytes().saturating_mul(10) >= self.max_bytes.saturating_mul(9)
    }

    /// The lane named `name` (a sub-directory; only `[A-Za-z0-9_-]` are kept from `name`).
    pub fn lane(self: &Arc<Self>, name: &str) -> SpoolLane {
        let clean: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(100)
            .collect();
        SpoolLane {
            dir: Arc::clone(self),
            path: self.dir.join(clean),
        }
    }
}

/// One lane of the spool (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct SpoolLane {
    dir: Arc<SpoolDir>,
    path: PathBuf,
}

impl SpoolLane {
    /// The lane's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The spool it belongs to.
    pub fn spool(&self) -> &Arc<SpoolDir> {
        &self.dir
    }

    /// Writes `record` (blocking file I/O: call it off the async workers).
    ///
    /// # Errors
    /// [`SpoolError::Full`] past the cap, [`SpoolError::Io`] on a file system error.
    pub fn put(&self, record: &Record) -> Result<(), SpoolError> {
        let bytes = record.encode();
        let n = bytes.len() as u64;
        let d = &self.dir;
        let reserved = d
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u.saturating_add(n) <= d.max_bytes).then(|| u + n)
            })
            .is_ok();
        if !reserved {
            return Err(SpoolError::Full {
                dir: d.dir.clone(),
                max_bytes: d.max_bytes,
            });
        }
        let written = self.write_file(&bytes);
        if let Err(source) = written {
            d.used.fetch_sub(n, Ordering::AcqRel);
            return Err(SpoolError::Io {
                dir: self.path.clone(),
                source,
            });
        }
        Ok(())
    }

    fn write_file(&self, bytes: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        create_private_dir(&self.path)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let seq = self.dir.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("{now:024}-{:010}-{seq:012}", std::process::id());
        let tmp = self.path.join(format!("{name}.tmp"));
        let fin = self.path.join(format!("{name}.{SUFFIX}"));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        drop(f);
        fs::rename(&tmp, &fin).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
    }

    /// The spooled files of this lane, oldest first, with their sizes.
    pub fn files(&self) -> Vec<(PathBuf, u64)> {
        files_in(&self.path)
    }

    /// Reads and removes the oldest record; `Ok(None)` when the lane is empty. A file that
    /// does not parse is removed and reported as `Err(path)` (the caller counts it).
    pub fn take_oldest(&self) -> Result<Option<Record>, PathBuf> {
        let Some((path, size)) = self.files().into_iter().next() else {
            return Ok(None);
        };
        let parsed = fs::read(&path).ok().and_then(|b| Record::decode(&b));
        if fs::remove_file(&path).is_ok() {
            self.dir
                .used
                .fetch_sub(size.min(self.dir.used_bytes()), Ordering::AcqRel);
        }
        parsed.map(Some).ok_or(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> Record {
        Record {
            kind: RecordKind::Stats,
            items: 7,
            headers: vec![("content-encoding".into(), "gzip".into())],
            body: vec![0xAB; n],
        }
    }

    #[test]
    fn records_round_trip_and_truncated_ones_do_not_parse() {
        let r = record(100);
        let b = r.encode();
        assert_eq!(Record::decode(&b), Some(r));
        for cut in [0, 5, 10, 20, b.len() - 1] {
            assert_eq!(Record::decode(&b[..cut]), None, "cut at {cut}");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(Record::decode(&longer), None);
    }

    #[test]
    fn the_cap_refuses_records_and_taking_frees_room_oldest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let one = record(1000).encode().len() as u64;
        let spool = SpoolDir::open(&SpoolConfig {
            dir: Some(tmp.path().join("spool")),
            max_bytes: one * 2 + one / 2,
        })
        .unwrap()
        .unwrap();
        let lane = spool.lane("datadog-traces-x/../y");
        assert!(lane.path().starts_with(spool.path()));
        let mut a = record(1000);
        a.items = 1;
        let mut b = record(1000);
        b.items = 2;
        lane.put(&a).unwrap();
        lane.put(&b).unwrap();
        assert!(matches!(lane.put(&record(1000)), Err(SpoolError::Full { .. })));
        assert_eq!(spool.used_bytes(), one * 2);
        assert_eq!(lane.take_oldest().unwrap().unwrap().items, 1);
        assert_eq!(spool.used_bytes(), one);
        lane.put(&record(1000)).unwrap();
        assert_eq!(lane.take_oldest().unwrap().unwrap().items, 2);

        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(spool.path()), 0o700);
        assert_eq!(mode(&lane.files()[0].0), 0o600);

        // Reopening counts what is there.
        drop(lane);
        let again = SpoolDir::open(&SpoolConfig {
            dir: Some(tmp.path().join("spool")),
            max_bytes: 1 << 20,
        })
        .unwrap()
        .unwrap();
        assert_eq!(again.used_bytes(), one);
    }

    #[test]
    fn a_corrupt_file_is_removed_and_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = SpoolDir::open(&SpoolConfig {
            dir: Some(tmp.path().to_owned()),
            max_bytes: 1 << 20,
        })
        .unwrap()
        .unwrap();
        let lane = spool.lane("l");
        lane.put(&record(10)).unwrap();
        let (path, _) = lane.files()[0].clone();
        fs::write(&path, b"APMSPOOL1 garbage").unwrap();
        assert_eq!(lane.take_oldest(), Err(path));
        assert_eq!(lane.take_oldest(), Ok(None));
    }
}
