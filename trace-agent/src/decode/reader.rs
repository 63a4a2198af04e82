//! A lenient msgpack cursor over the request body, reading the way the Go agent does:
//! `nil` is the zero value, any integer width is accepted for any number (floats too), `bin` is
//! accepted for strings, invalid UTF-8 is repaired, and lengths are checked against what is left
//! of the body before anything is allocated.

use rmp::Marker;

use super::DecodeLimits;
use super::error::{ReadError, ReadErrorKind};
use super::str_cache::{self, StrCache};
use crate::span::{RawBytes, Span, Str};

/// Deepest nesting accepted when skipping unknown values.
pub(crate) const MAX_SKIP_DEPTH: u32 = 64;

/// Cursor over a msgpack body; strings are borrowed from it without copying.
#[derive(Debug)]
pub(crate) struct Reader<'b> {
    owner: &'b [u8],
    pos: usize,
    /// What this payload may still allocate (checked before each allocation, from the headers).
    limits: DecodeLimits,
    spans_left: usize,
    bytes_left: usize,
    /// Short strings already validated (payloads whose spans repeat their strings: v0.4, v0.7);
    /// `None`: every string is validated.
    strings: Option<StrCache<'b>>,
}

/// Human name of a marker's type, for error messages.
pub(crate) fn marker_type(m: Marker) -> &'static str {
    match m {
        Marker::Null => "nil",
        Marker::True | Marker::False => "bool",
        Marker::FixPos(_)
        | Marker::FixNeg(_)
        | Marker::U8
        | Marker::U16
        | Marker::U32
        | Marker::U64
        | Marker::I8
        | Marker::I16
        | Marker::I32
        | Marker::I64 => "integer",
        Marker::F32 | Marker::F64 => "float",
        Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => "string",
        Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => "binary",
        Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => "array",
        Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => "map",
        Marker::FixExt1
        | Marker::FixExt2
        | Marker::FixExt4
        | Marker::FixExt8
        | Marker::FixExt16
        | Marker::Ext8
        | Marker::Ext16
        | Marker::Ext32 => "extension",
        Marker::Reserved => "reserved byte 0xc1",
    }
}

/// A number as it appeared on the wire.
#[derive(Debug, Clone, Copy)]
enum Num {
    U(u64),
    I(i64),
    F(f64),
}

impl<'b> Reader<'b> {
    /// A cursor at the start of `owner` that refuses to decode more than `limits` allow.
    pub(crate) fn with_limits(owner: &'b [u8], limits: DecodeLimits) -> Self {
        Self {
            owner,
            pos: 0,
            limits,
            spans_left: limits.max_spans,
            bytes_left: limits.max_decoded_bytes,
            strings: None,
        }
    }

    /// Finds repeated short strings again instead of validating each copy
    /// ([`str_cache`](super::str_cache)); for bodies whose spans carry their own strings.
    pub(crate) fn with_str_cache(mut self) -> Self {
        self.strings = Some(StrCache::default());
        self
    }

    /// Charges `n` items of `each` bytes of decoded memory to the payload's budget.
    ///
    /// # Errors
    /// [`ReadErrorKind::DecodedTooLarge`] when the budget would be exceeded.
    #[inline]
    pub(crate) fn charge(&mut self, n: usize, each: usize) -> Result<(), Box<ReadError>> {
        let cost = n.saturating_mul(each);
        if cost > self.bytes_left {
            return Err(self.err(ReadErrorKind::DecodedTooLarge {
                max: self.limits.max_decoded_bytes,
            }));
        }
        self.bytes_left -= cost;
        Ok(())
    }

    /// Charges `n` spans (count and memory) to the payload's budget.
    ///
    /// # Errors
    /// [`ReadErrorKind::TooManySpans`] or [`ReadErrorKind::DecodedTooLarge`].
    #[inline]
    pub(crate) fn charge_spans(&mut self, n: usize) -> Result<(), Box<ReadError>> {
        if n > self.spans_left {
            return Err(self.err(ReadErrorKind::TooManySpans {
                max: self.limits.max_spans,
            }));
        }
        self.spans_left -= n;
        self.charge(n, std::mem::size_of::<Span<'_>>())
    }

    /// Byte offset of the cursor.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.owner.len().saturating_sub(self.pos)
    }

    #[cold]
    fn err(&self, kind: ReadErrorKind) -> Box<ReadError> {
        Box::new(ReadError { kind, offset: self.pos })
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'b [u8], Box<ReadError>> {
        let owner: &'b [u8] = self.owner;
        let end = self.pos.checked_add(n).filter(|&e| e <= owner.len());
        match end.and_then(|e| owner.get(self.pos..e)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(self.err(ReadErrorKind::Eof)),
        }
    }

    #[inline]
    fn u8(&mut self) -> Result<u8, Box<ReadError>> {
        match self.owner.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.err(ReadErrorKind::Eof)),
        }
    }

    #[inline]
    fn be<const N: usize>(&mut self) -> Result<[u8; N], Box<ReadError>> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// The next marker, without consuming it.
    pub(crate) fn peek_marker(&self) -> Result<Marker, Box<ReadError>> {
        self.owner
            .get(self.pos)
            .map(|&b| Marker::from_u8(b))
            .ok_or_else(|| self.err(ReadErrorKind::Eof))
    }

    #[inline]
    fn marker(&mut self) -> Result<Marker, Box<ReadError>> {
        self.u8().map(Marker::from_u8)
    }

    #[cold]
    fn type_err(&self, at: usize, expected: &'static str, got: Marker) -> Box<ReadError> {
        Box::new(ReadError {
            kind: ReadErrorKind::Type {
                expected,
                got: marker_type(got),
            },
            offset: at,
        })
    }

    /// Checks that `len` entries of at least `min_entry` bytes each can fit in what is left.
    #[inline]
    fn check_len(&self, at: usize, len: usize, min_entry: usize) -> Result<usize, Box<ReadError>> {
        let remaining = self.remaining();
        if len.saturating_mul(min_entry) > remaining {
            return Err(Box::new(ReadError {
                kind: ReadErrorKind::Length { len, remaining },
                offset: at,
            }));
        }
        Ok(len)
    }

    /// An array header; `nil` reads as an empty array.
    #[inline]
    pub(crate) fn array_len(&mut self) -> Result<usize, Box<ReadError>> {
        let at = self.pos;
        let len = match self.marker()? {
            Marker::FixArray(n) => usize::from(n),
            Marker::Array16 => usize::from(u16::from_be_bytes(self.be()?)),
            Marker::Array32 => u32::from_be_bytes(self.be()?) as usize,
            Marker::Null => 0,
            m => return Err(self.type_err(at, "array", m)),
        };
        self.check_len(at, len, 1)
    }

    /// A map header; `nil` reads as an empty map.
    #[inline]
    pub(crate) fn map_len(&mut self) -> Result<usize, Box<ReadError>> {
        let at = self.pos;
        let len = match self.marker()? {
            Marker::FixMap(n) => usize::from(n),
            Marker::Map16 => usize::from(u16::from_be_bytes(self.be()?)),
            Marker::Map32 => u32::from_be_bytes(self.be()?) as usize,
            Marker::Null => 0,
            m => return Err(self.type_err(at, "map", m)),
        };
        self.check_len(at, len, 2)
    }

    /// Length of a `str`/`bin` value whose marker was already read, or `None` for another type.
    #[inline]
    fn str_len(&mut self, m: Marker) -> Result<Option<usize>, Box<ReadError>> {
        Ok(Some(match m {
            Marker::FixStr(n) => usize::from(n),
            Marker::Str8 | Marker::Bin8 => usize::from(self.u8()?),
            Marker::Str16 | Marker::Bin16 => usize::from(u16::from_be_bytes(self.be()?)),
            Marker::Str32 | Marker::Bin32 => u32::from_be_bytes(self.be()?) as usize,
            Marker::Null => 0,
            _ => return Ok(None),
        }))
    }

    /// The bytes of a complete fixstr (< 32 bytes) at the cursor and the offset after it, without
    /// moving the cursor; `None` for anything else.
    #[inline(always)]
    fn fixstr(&self) -> Option<(&'b [u8], usize)> {
        let b = *self.owner.get(self.pos)?;
        if b & 0xe0 != 0xa0 {
            return None;
        }
        let start = self.pos + 1;
        let end = start + usize::from(b & 0x1f);
        let owner: &'b [u8] = self.owner;
        owner.get(start..end).map(|raw| (raw, end))
    }

    /// A string (`str`, `bin` or `nil`), sliced from the body; invalid UTF-8 is repaired.
    #[inline(always)]
    pub(crate) fn str(&mut self) -> Result<Str<'b>, Box<ReadError>> {
        // Fast path: a fixstr (< 32 bytes) that is complete and valid UTF-8.
        if let Some((raw, end)) = self.fixstr() {
            let valid = match &mut self.strings {
                Some(cache) if raw.len() <= str_cache::MAX_LEN => cache.get(raw),
                _ => super::utf8::str_of(raw),
            };
            if let Some(s) = valid {
                self.pos = end;
                return Ok(Str::borrowed(s));
            }
        }
        self.str_slow()
    }

    #[cold]
    fn str_slow(&mut self) -> Result<Str<'b>, Box<ReadError>> {
        let at = self.pos;
        let m = self.marker()?;
        let Some(len) = self.str_len(m)? else {
            return Err(self.type_err(at, "string", m));
        };
        if len == 0 {
            return Ok(Str::new());
        }
        self.check_len(at, len, 1)?;
        let start = self.pos;
        self.pos += len;
        let raw: &'b [u8] = self.owner.get(start..start + len).unwrap_or_default();
        let valid = match &mut self.strings {
            Some(cache) if len <= str_cache::MAX_LEN => cache.get(raw).ok_or(()),
            _ => super::utf8::str_of(raw).ok_or(()),
        };
        Ok(match valid {
            Ok(s) => Str::borrowed(s),
            Err(_) => {
                // Repairing can triple the length (each bad byte becomes U+FFFD).
                self.charge(len, 3)?;
                Str::from(String::from_utf8_lossy(raw).into_owned())
            }
        })
    }

    #[inline]
    fn num(&mut self, expected: &'static str) -> Result<Num, Box<ReadError>> {
        let at = self.pos;
        Ok(match self.marker()? {
            Marker::FixPos(n) => Num::U(u64::from(n)),
            Marker::FixNeg(n) => Num::I(i64::from(n)),
            Marker::U8 => Num::U(u64::from(self.u8()?)),
            Marker::U16 => Num::U(u64::from(u16::from_be_bytes(self.be()?))),
            Marker::U32 => Num::U(u64::from(u32::from_be_bytes(self.be()?))),
            Marker::U64 => Num::U(u64::from_be_bytes(self.be()?)),
            Marker::I8 => Num::I(i64::from(i8::from_be_bytes(self.be()?))),
            Marker::I16 => Num::I(i64::from(i16::from_be_bytes(self.be()?))),
            Marker::I32 => Num::I(i64::from(i32::from_be_bytes(self.be()?))),
            Marker::I64 => Num::I(i64::from_be_bytes(self.be()?)),
            Marker::F32 => Num::F(f64::from(f32::from_be_bytes(self.be()?))),
            Marker::F64 => Num::F(f64::from_be_bytes(self.be()?)),
            Marker::Null => Num::U(0),
            Marker::True => Num::U(1),
            Marker::False => Num::U(0),
            m => return Err(self.type_err(at, expected, m)),
        })
    }

    /// Fast path for the common unsigned encodings (fixint, uint8/16/32/64); `None` leaves the
    /// cursor unchanged for the general path.
    #[inline]
    fn uint_fast(&mut self) -> Option<u64> {
        let b = *self.owner.get(self.pos)?;
        let (len, value) = match b {
            0x00..=0x7f => (1, u64::from(b)),
            0xcc => (2, u64::from(*self.owner.get(self.pos + 1)?)),
            0xcd => (
                3,
                u64::from(u16::from_be_bytes(
                    self.owner.get(self.pos + 1..self.pos + 3)?.try_into().ok()?,
                )),
            ),
            0xce => (
                5,
                u64::from(u32::from_be_bytes(
                    self.owner.get(self.pos + 1..self.pos + 5)?.try_into().ok()?,
                )),
            ),
            0xcf => (
                9,
                u64::from_be_bytes(self.owner.get(self.pos + 1..self.pos + 9)?.try_into().ok()?),
            ),
            _ => return None,
        };
        self.pos += len;
        Some(value)
    }

    /// An unsigned 64-bit integer; negative integers are reinterpreted, floats truncated.
    #[inline]
    pub(crate) fn u64(&mut self) -> Result<u64, Box<ReadError>> {
        if let Some(u) = self.uint_fast() {
            return Ok(u);
        }
        Ok(match self.num("integer")? {
            Num::U(u) => u,
            Num::I(i) => i as u64,
            Num::F(f) => f as u64,
        })
    }

    /// A signed 64-bit integer; an unsigned value above `i64::MAX` is an error.
    #[inline]
    pub(crate) fn i64(&mut self) -> Result<i64, Box<ReadError>> {
        let at = self.pos;
        // Fast path: int64 (how some tracers send `start` and `duration`).
        if self.owner.get(at) == Some(&0xd3)
            && let Some(raw) = self.owner.get(at + 1..at + 9)
            && let Ok(bytes) = <[u8; 8]>::try_from(raw)
        {
            self.pos = at + 9;
            return Ok(i64::from_be_bytes(bytes));
        }
        if let Some(u) = self.uint_fast() {
            if let Ok(i) = i64::try_from(u) {
                return Ok(i);
            }
            self.pos = at;
        }
        Ok(match self.num("integer")? {
            Num::U(u) => i64::try_from(u).map_err(|_| {
                Box::new(ReadError {
                    kind: ReadErrorKind::Overflow {
                        value: u,
                        target: "int64",
                    },
                    offset: at,
                })
            })?,
            Num::I(i) => i,
            Num::F(f) => f as i64,
        })
    }

    /// A signed 32-bit integer (out-of-range values are an error).
    pub(crate) fn i32(&mut self) -> Result<i32, Box<ReadError>> {
        let at = self.pos;
        let v = match self.num("integer")? {
            Num::U(u) => i64::try_from(u).unwrap_or(i64::MAX),
            Num::I(i) => i,
            Num::F(f) => f as i64,
        };
        i32::try_from(v).map_err(|_| {
            Box::new(ReadError {
                kind: ReadErrorKind::Overflow {
                    value: v as u64,
                    target: "int32",
                },
                offset: at,
            })
        })
    }

    /// A float; integers of any width are converted.
    #[inline]
    pub(crate) fn f64(&mut self) -> Result<f64, Box<ReadError>> {
        // Fast path: tracers send metrics as float64.
        if self.owner.get(self.pos) == Some(&0xcb)
            && let Some(raw) = self.owner.get(self.pos + 1..self.pos + 9)
            && let Ok(bytes) = <[u8; 8]>::try_from(raw)
        {
            self.pos += 9;
            return Ok(f64::from_be_bytes(bytes));
        }
        Ok(match self.num("number")? {
            Num::U(u) => u as f64,
            Num::I(i) => i as f64,
            Num::F(f) => f,
        })
    }

    /// A boolean; `nil` is false and integers are compared with 0.
    pub(crate) fn bool(&mut self) -> Result<bool, Box<ReadError>> {
        Ok(match self.num("bool")? {
            Num::U(u) => u != 0,
            Num::I(i) => i != 0,
            Num::F(f) => f != 0.0,
        })
    }

    /// Skips one value of any type (bounded nesting).
    pub(crate) fn skip(&mut self) -> Result<(), Box<ReadError>> {
        self.skip_depth(0)
    }

    fn skip_depth(&mut self, depth: u32) -> Result<(), Box<ReadError>> {
        if depth >= MAX_SKIP_DEPTH {
            return Err(self.err(ReadErrorKind::TooDeep { max: MAX_SKIP_DEPTH }));
        }
        let at = self.pos;
        let m = self.peek_marker()?;
        let skip_n = |r: &mut Self, n: usize| r.take(n).map(|_| ());
        match m {
            Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
                for _ in 0..self.array_len()? {
                    self.skip_depth(depth + 1)?;
                }
            }
            Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => {
                for _ in 0..self.map_len()? {
                    self.skip_depth(depth + 1)?;
                    self.skip_depth(depth + 1)?;
                }
            }
            Marker::FixStr(_)
            | Marker::Str8
            | Marker::Str16
            | Marker::Str32
            | Marker::Bin8
            | Marker::Bin16
            | Marker::Bin32 => {
                self.pos += 1;
                let len = self.str_len(m)?.unwrap_or(0);
                skip_n(self, len)?;
            }
            Marker::FixExt1 => skip_n(self, 3)?,
            Marker::FixExt2 => skip_n(self, 4)?,
            Marker::FixExt4 => skip_n(self, 6)?,
            Marker::FixExt8 => skip_n(self, 10)?,
            Marker::FixExt16 => skip_n(self, 18)?,
            Marker::Ext8 | Marker::Ext16 | Marker::Ext32 => {
                self.pos += 1;
                let len = match m {
                    Marker::Ext8 => usize::from(self.u8()?),
                    Marker::Ext16 => usize::from(u16::from_be_bytes(self.be()?)),
                    _ => u32::from_be_bytes(self.be()?) as usize,
                };
                skip_n(self, len + 1)?;
            }
            Marker::Reserved => return Err(self.type_err(at, "a msgpack value", m)),
            _ => {
                self.num("number")?;
            }
        }
        Ok(())
    }

    /// Skips one value and returns its raw encoding (borrowed from the body, no copy).
    pub(crate) fn raw_value(&mut self) -> Result<RawBytes<'b>, Box<ReadError>> {
        let start = self.pos;
        self.skip()?;
        let owner: &'b [u8] = self.owner;
        Ok(RawBytes::Borrowed(owner.get(start..self.pos).unwrap_or_default()))
    }

    /// A map key (`str`, `bin` or `nil`) as borrowed bytes, for matching field names.
    #[inline]
    pub(crate) fn key(&mut self) -> Result<&'b [u8], Box<ReadError>> {
        // Fast path: a complete fixstr (field names are short).
        if let Some((raw, end)) = self.fixstr() {
            self.pos = end;
            return Ok(raw);
        }
        let at = self.pos;
        let m = self.marker()?;
        let Some(len) = self.str_len(m)? else {
            return Err(self.type_err(at, "string", m));
        };
        self.take(len)
    }

    /// A `bin` or `str` value as raw bytes (for `meta_struct`).
    pub(crate) fn bytes(&mut self) -> Result<RawBytes<'b>, Box<ReadError>> {
        let at = self.pos;
        let m = self.marker()?;
        let Some(len) = self.str_len(m)? else {
            return Err(self.type_err(at, "binary", m));
        };
        self.check_len(at, len, 1)?;
        self.take(len).map(RawBytes::Borrowed)
    }
}
