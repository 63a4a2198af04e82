//! W3C `baggage`: `key=value` pairs (percent-encoded, with optional `;properties`) that
//! travel with a request independently of the trace and its sampling decision.
//!
//! Limits as Datadog's tracers: at most [`MAX_ITEMS`] items and [`MAX_BYTES`] bytes. An
//! incoming header over the byte limit, or with a malformed member, is ignored as a whole;
//! items past the count limit are dropped. On injection, items that would pass either limit
//! are left out.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::Arc;

use super::{Extractor, Injector};

const HEADER: &str = "baggage";
/// Most items read or written.
pub const MAX_ITEMS: usize = 64;
/// Longest header read or written, in bytes.
pub const MAX_BYTES: usize = 8192;

/// Key/value pairs propagated with the `baggage` style, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baggage {
    items: Vec<(String, String)>,
}

impl Baggage {
    /// Empty baggage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.items.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Sets `key` (replacing an earlier value).
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let (key, value) = (key.into(), value.into());
        match self.items.iter_mut().find(|(k, _)| *k == key) {
            Some(item) => item.1 = value,
            None => self.items.push((key, value)),
        }
    }

    /// The items in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.items.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The baggage current on this thread or task (set by the server middleware or
    /// [`Baggage::enter`]), if any.
    pub fn current() -> Option<Arc<Baggage>> {
        CURRENT.try_with(|c| c.borrow().last().cloned()).ok().flatten()
    }

    /// Makes `baggage` current on this thread until the guard drops (the HTTP client layer
    /// injects the current baggage).
    pub fn enter(baggage: Arc<Baggage>) -> BaggageGuard {
        let pushed = CURRENT.try_with(|c| c.borrow_mut().push(baggage)).is_ok();
        BaggageGuard {
            pushed,
            _not_send: PhantomData,
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Vec<Arc<Baggage>>> = const { RefCell::new(Vec::new()) };
}

/// Guard of [`Baggage::enter`]; not `Send`, it must drop on the thread that entered.
#[must_use = "the baggage is current only while the guard lives"]
#[derive(Debug)]
pub struct BaggageGuard {
    pushed: bool,
    _not_send: PhantomData<*const ()>,
}

impl Drop for BaggageGuard {
    fn drop(&mut self) {
        if self.pushed {
            let _ = CURRENT.try_with(|c| c.borrow_mut().pop());
        }
    }
}

/// W3C `token` characters (keys).
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$&'*+-.^_`|~".contains(&b)
}

/// `baggage-octet` minus `%` (values): printable ASCII except `"`, `,`, `;`, `\` and `%`.
fn is_value_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x24 | 0x26..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(s: &str, keep: fn(u8) -> bool, out: &mut String) {
    use std::fmt::Write;
    for b in s.bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Parses a `baggage` header; `None` when it is malformed or too long.
pub(super) fn parse(header: &str) -> Option<Baggage> {
    if header.len() > MAX_BYTES {
        return None;
    }
    let mut baggage = Baggage::new();
    for member in header.split(',') {
        let member = member.trim();
        if member.is_empty() {
            continue;
        }
        let kv = member.split(';').next().unwrap_or(member);
        let (k, v) = kv.split_once('=')?;
        let (k, v) = (k.trim(), v.trim());
        let key = percent_decode(k)?;
        if key.is_empty() {
            return None;
        }
        if v.bytes().any(|b| b != b'%' && !is_value_octet(b) && b != b' ') {
            return None;
        }
        let value = percent_decode(v)?;
        if baggage.len() < MAX_ITEMS {
            baggage.insert(key, value);
        }
    }
    Some(baggage)
}

pub(super) fn extract(c: &dyn Extractor) -> Option<Baggage> {
    parse(c.get(HEADER)?).filter(|b| !b.is_empty())
}

/// Encodes `baggage` within the limits; `None` when nothing fits.
pub(super) fn encode(baggage: &Baggage) -> Option<String> {
    let mut out = String::new();
    let mut item = String::new();
    for (n, (k, v)) in baggage.iter().enumerate() {
        if n >= MAX_ITEMS {
            break;
        }
        item.clear();
        percent_encode(k, is_token, &mut item);
        item.push('=');
        percent_encode(v, is_value_octet, &mut item);
        let sep = usize::from(!out.is_empty());
        if out.len() + sep + item.len() > MAX_BYTES {
            break;
        }
        if sep == 1 {
            out.push(',');
        }
        out.push_str(&item);
    }
    (!out.is_empty()).then_some(out)
}

pub(super) fn inject(baggage: &Baggage, c: &mut dyn Injector) {
    if let Some(v) = encode(baggage) {
        c.set(HEADER, v);
    }
}
