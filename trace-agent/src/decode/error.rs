//! Decode errors that say what was wrong and where.

use std::fmt;

/// What a low-level read found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadErrorKind {
    /// The body ended in the middle of a value.
    #[error("unexpected end of payload")]
    Eof,
    /// A value of the wrong msgpack/JSON type.
    #[error("expected {expected}, got {got}")]
    Type {
        /// The type the field needs.
        expected: &'static str,
        /// The type found.
        got: &'static str,
    },
    /// A length larger than what is left of the body.
    #[error("length {len} exceeds the {remaining} bytes left in the payload")]
    Length {
        /// Declared length.
        len: usize,
        /// Bytes left.
        remaining: usize,
    },
    /// More nesting than allowed.
    #[error("nesting deeper than {max} levels")]
    TooDeep {
        /// Maximum depth.
        max: u32,
    },
    /// A number that does not fit the field.
    #[error("value {value} does not fit in {target}")]
    Overflow {
        /// The value (as unsigned bits).
        value: u64,
        /// The target type.
        target: &'static str,
    },
    /// A v0.5 string-table index out of range.
    #[error("string index {index} out of range (table has {len} entries)")]
    StringIndex {
        /// The index.
        index: u64,
        /// Table size.
        len: usize,
    },
    /// A fixed-size array of the wrong size (v0.5 spans, the v0.5 envelope).
    #[error("expected an array of {expected} elements, got {got}")]
    ArrayLen {
        /// Expected size.
        expected: usize,
        /// Actual size.
        got: usize,
    },
    /// Bytes after the end of the payload.
    #[error("{0} trailing bytes after the payload")]
    Trailing(usize),
    /// More spans than `apm_config.max_spans_per_payload`.
    #[error("more than {max} spans in one payload (apm_config.max_spans_per_payload)")]
    TooManySpans {
        /// The limit.
        max: usize,
    },
    /// Decoding would take more memory than the payload's budget
    /// (`apm_config.max_decoded_ratio` times the body size).
    #[error(
        "decoding this payload would take more than {max} bytes of memory \
         (apm_config.max_decoded_ratio times the body size)"
    )]
    DecodedTooLarge {
        /// The budget in bytes.
        max: usize,
    },
    /// JSON syntax error.
    #[error("invalid JSON: {0}")]
    Json(String),
}

/// Longest piece of payload text (a field or tag name) quoted in an error message.
pub(crate) const MAX_QUOTED_CHARS: usize = 64;

/// `s` as quoted in an error message: at most [`MAX_QUOTED_CHARS`] characters, control
/// characters escaped (errors reach logs, `status` and HTTP replies).
pub(crate) fn clip(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX_QUOTED_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A low-level error with the byte offset where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    /// What was wrong.
    pub kind: ReadErrorKind,
    /// Byte offset in the body.
    pub offset: usize,
}

impl ReadError {
    /// Attaches a location (`trace 0 span 3: field 'trace_id'`), computed only on error.
    // The reader boxes its errors so that `Result<u64, _>` and friends stay two words wide on
    // the hot path; the box is consumed here.
    #[allow(clippy::boxed_local)]
    pub(crate) fn at(self: Box<Self>, location: impl FnOnce() -> String) -> DecodeError {
        DecodeError {
            location: location(),
            kind: self.kind,
            offset: Some(self.offset),
        }
    }
}

/// A payload that could not be decoded, with the place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Where in the payload (`trace 0 span 3: field 'trace_id'`); empty for the envelope.
    pub location: String,
    /// What was wrong.
    pub kind: ReadErrorKind,
    /// Byte offset in the body, when known.
    pub offset: Option<usize>,
}

impl DecodeError {
    /// Whether the body was cut short (the Go agent answers `unexpected-eof` in that case).
    pub fn is_eof(&self) -> bool {
        self.kind == ReadErrorKind::Eof
    }

    /// Whether a configured limit refused the payload (too many spans, too much memory): the
    /// body may be well-formed, it is too big for this agent's configuration (413).
    pub fn is_limit(&self) -> bool {
        matches!(
            self.kind,
            ReadErrorKind::TooManySpans { .. } | ReadErrorKind::DecodedTooLarge { .. }
        )
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.location.is_empty() {
            write!(f, "{}: ", self.location)?;
        }
        write!(f, "{}", self.kind)?;
        if let Some(offset) = self.offset {
            write!(f, " (at byte {offset})")?;
        }
        Ok(())
    }
}

impl std::error::Error for DecodeError {}
