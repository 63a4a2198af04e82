//! The `X-Span-Ledger` header: parsing, bounded and linear (format in the tracer's
//! `tracer/src/ledger.rs` and the README).

use super::{
    MAX_ENCODED_NAME, MAX_HEADER_LEN, MAX_REPORT_SERVICES, MAX_REPORT_STATUSES, MAX_RUNTIME_ID, TRACER_OVERFLOW,
};

/// Counters of one service in a tracer's report (header order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TracerCounts {
    /// Finished spans handed to the tracer's export pipeline.
    pub finished: u64,
    /// In payloads the agent answered 2xx (before this one).
    pub acked: u64,
    /// In the payload carrying the report.
    pub in_flight: u64,
    /// Dropped: the tracer's queue was full.
    pub queue_full: u64,
    /// Dropped: finished after the tracer shut down.
    pub shutdown: u64,
    /// Dropped by the tracer after sampling rejected them (client-side stats).
    pub client_p0: u64,
    /// Lost with a payload the tracer could not build.
    pub encode_error: u64,
    /// Dropped: no reply from the agent after the retries.
    pub agent_unreachable: u64,
    /// Refused by the agent with a non-2xx status.
    pub agent_refused: u64,
}

impl TracerCounts {
    fn from_fields(f: &[u64; 9]) -> Self {
        let [
            finished,
            acked,
            in_flight,
            queue_full,
            shutdown,
            client_p0,
            encode_error,
            agent_unreachable,
            agent_refused,
        ] = *f;
        Self {
            finished,
            acked,
            in_flight,
            queue_full,
            shutdown,
            client_p0,
            encode_error,
            agent_unreachable,
            agent_refused,
        }
    }

    pub(super) fn add(&mut self, o: &Self) {
        self.finished = self.finished.saturating_add(o.finished);
        self.acked = self.acked.saturating_add(o.acked);
        self.in_flight = self.in_flight.saturating_add(o.in_flight);
        self.queue_full = self.queue_full.saturating_add(o.queue_full);
        self.shutdown = self.shutdown.saturating_add(o.shutdown);
        self.client_p0 = self.client_p0.saturating_add(o.client_p0);
        self.encode_error = self.encode_error.saturating_add(o.encode_error);
        self.agent_unreachable = self.agent_unreachable.saturating_add(o.agent_unreachable);
        self.agent_refused = self.agent_refused.saturating_add(o.agent_refused);
    }
}

/// One parsed report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The tracer's runtime id.
    pub runtime_id: String,
    /// Report number (retries repeat it).
    pub seq: u64,
    /// Runtime-wide spans created, finished, refused at start (trace too large).
    pub totals: [u64; 3],
    /// Per service, by the name as the tracer sent it (decoded; `*` is the tracer's overflow).
    pub services: Vec<(String, TracerCounts)>,
    /// Spans refused by the agent, per status.
    pub refused_by_status: Vec<(u16, u64)>,
}

/// Why a header was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Longer than [`MAX_HEADER_LEN`].
    #[error("longer than {MAX_HEADER_LEN} bytes")]
    TooLong,
    /// Not `v1`.
    #[error("unsupported version")]
    Version,
    /// No `rid=`.
    #[error("no runtime id")]
    NoRuntimeId,
    /// More entries than allowed.
    #[error("too many entries")]
    TooMany,
    /// A token that does not parse.
    #[error("bad token at byte {0}")]
    Bad(usize),
}

/// Parses a header value (see the module docs). Linear in its length, bounded.
///
/// # Errors
/// [`HeaderError`] naming the problem; the caller counts it and ignores the header.
pub fn parse_header(value: &[u8]) -> Result<Report, HeaderError> {
    if value.len() > MAX_HEADER_LEN {
        return Err(HeaderError::TooLong);
    }
    let text = std::str::from_utf8(value).map_err(|e| HeaderError::Bad(e.valid_up_to()))?;
    let mut tokens = text.split(' ').filter(|t| !t.is_empty());
    if tokens.next() != Some("v1") {
        return Err(HeaderError::Version);
    }
    let mut r = Report::default();
    for token in tokens {
        let at = token.as_ptr() as usize - text.as_ptr() as usize;
        let bad = || HeaderError::Bad(at);
        let (key, val) = token.split_once('=').ok_or_else(bad)?;
        match key {
            "rid" => {
                if val.is_empty() || val.len() > MAX_RUNTIME_ID {
                    return Err(bad());
                }
                val.clone_into(&mut r.runtime_id);
            }
            "seq" => r.seq = val.parse().map_err(|_| bad())?,
            "g" => {
                let mut it = val.split(',');
                for slot in &mut r.totals {
                    *slot = it.next().unwrap_or("0").parse().map_err(|_| bad())?;
                }
            }
            "s" => {
                if r.services.len() >= MAX_REPORT_SERVICES {
                    return Err(HeaderError::TooMany);
                }
                let (name, counts) = val.rsplit_once(':').ok_or_else(bad)?;
                if name.len() > MAX_ENCODED_NAME {
                    return Err(bad());
                }
                let name = if name == "*" {
                    TRACER_OVERFLOW.to_owned()
                } else {
                    percent_decode(name).ok_or_else(bad)?
                };
                let mut fields = [0u64; 9];
                let mut it = counts.split(',');
                for slot in &mut fields {
                    match it.next() {
                        Some(v) => *slot = v.parse().map_err(|_| bad())?,
                        None => break,
                    }
                }
                r.services.push((name, TracerCounts::from_fields(&fields)));
            }
            "r" => {
                if r.refused_by_status.len() >= MAX_REPORT_STATUSES {
                    return Err(HeaderError::TooMany);
                }
                let (s, n) = val.split_once(':').ok_or_else(bad)?;
                r.refused_by_status
                    .push((s.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?));
            }
            _ => {} // a later version's field
        }
    }
    if r.runtime_id.is_empty() {
        return Err(HeaderError::NoRuntimeId);
    }
    Ok(r)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}
