//! Counting the traces and spans of a Datadog trace payload in the sink, without decoding
//! it: the v0.4 body is an array of traces, each an array of spans (maps); the v0.5 body is
//! `[string table, traces]`, each trace an array of spans (12-element arrays). Every value
//! is skipped by its MessagePack header, so the sink's cost stays linear in the body and
//! small next to the tracer's own encoding.

/// Which trace endpoint a payload was sent to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Version {
    V04,
    V05,
}

/// Traces and spans in a payload; `None` when the body is not a well-formed payload of
/// that version (truncated, wrong types, trailing bytes).
pub(crate) fn count(body: &[u8], version: Version) -> Option<(u64, u64)> {
    let mut r = Reader { buf: body, pos: 0 };
    if version == Version::V05 {
        if r.array_len()? != 2 {
            return None;
        }
        r.skip()?; // the string table
    }
    let traces = r.array_len()?;
    let mut spans = 0u64;
    for _ in 0..traces {
        let n = r.array_len()?;
        for _ in 0..n {
            match version {
                Version::V04 if !r.peek_is_map()? => return None,
                Version::V05 if r.peek_array_len()? != 12 => return None,
                _ => {}
            }
            r.skip()?;
        }
        spans += n as u64;
    }
    (r.pos == body.len()).then_some((traces as u64, spans))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn be(&mut self, n: usize) -> Option<usize> {
        let bytes = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b)))
    }

    fn advance(&mut self, n: usize) -> Option<()> {
        let end = self.pos.checked_add(n)?;
        (end <= self.buf.len()).then(|| self.pos = end)
    }

    fn array_len(&mut self) -> Option<usize> {
        match self.byte()? {
            b @ 0x90..=0x9f => Some(usize::from(b & 0x0f)),
            0xdc => self.be(2),
            0xdd => self.be(4),
            _ => None,
        }
    }

    fn peek_is_map(&self) -> Option<bool> {
        let b = *self.buf.get(self.pos)?;
        Some(matches!(b, 0x80..=0x8f | 0xde | 0xdf))
    }

    fn peek_array_len(&self) -> Option<usize> {
        Reader {
            buf: self.buf,
            pos: self.pos,
        }
        .array_len()
    }

    /// Skips one value (and everything it contains). Nesting is walked with a counter of
    /// values still to skip, not recursion: a hostile depth cannot overflow the stack. The
    /// one-byte values and short strings (most of a payload) take the loop's first branch.
    fn skip(&mut self) -> Option<()> {
        let buf = self.buf;
        let mut pos = self.pos;
        let mut pending: usize = 1;
        while pending > 0 {
            pending -= 1;
            let b = *buf.get(pos)?;
            pos += 1;
            match b {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => continue,
                // May point past the end: the next read, or the final check, fails then.
                0xa0..=0xbf => {
                    pos += usize::from(b & 0x1f);
                    continue;
                }
                _ => {}
            }
            self.pos = pos;
            let (data, values) = match b {
                0x80..=0x8f => (0, 2 * usize::from(b & 0x0f)),
                0x90..=0x9f => (0, usize::from(b & 0x0f)),
                0xcc | 0xd0 => (1, 0),
                0xcd | 0xd1 | 0xd4 => (2, 0),
                0xd5 => (3, 0),
                0xca | 0xce | 0xd2 => (4, 0),
                0xd6 => (5, 0),
                0xcb | 0xcf | 0xd3 => (8, 0),
                0xd7 => (9, 0),
                0xd8 => (17, 0),
                0xc4 | 0xd9 => (self.be(1)?, 0),
                0xc5 | 0xda => (self.be(2)?, 0),
                0xc6 | 0xdb => (self.be(4)?, 0),
                0xc7 => (self.be(1)? + 1, 0),
                0xc8 => (self.be(2)? + 1, 0),
                0xc9 => (self.be(4)? + 1, 0),
                0xdc => (0, self.be(2)?),
                0xdd => (0, self.be(4)?),
                0xde => (0, 2 * self.be(2)?),
                0xdf => (0, self.be(4)?.checked_mul(2)?),
                _ => return None, // 0xc1, never used
            };
            self.advance(data)?;
            pos = self.pos;
            // Every pending value takes at least one byte: more than the rest of the body
            // is malformed (and would only spin).
            pending = pending.checked_add(values)?;
            if pending > buf.len().saturating_sub(pos) {
                return None;
            }
        }
        (pos <= buf.len()).then(|| self.pos = pos)
    }
}

/// Checks the counter against payloads `rmpv` encodes (run at the start of every mode, so a
/// broken counter cannot pass for lost spans).
pub(crate) fn self_check() {
    use rmpv::Value;
    let s = |v: &str| Value::from(v);
    let span04 = |id: u64| {
        Value::Map(vec![
            (s("service"), s("bench")),
            (s("name"), s("http.request")),
            (s("span_id"), Value::from(id)),
            (s("start"), Value::from(1_700_000_000_000_000_000i64)),
            (
                s("meta"),
                Value::Map(vec![(s("http.method"), s("GET")), (s("k"), s(&"x".repeat(300)))]),
            ),
            (
                s("metrics"),
                Value::Map(vec![(s("_sampling_priority_v1"), Value::from(1.0))]),
            ),
        ])
    };
    let v04 = Value::Array(vec![
        Value::Array((1..=4).map(span04).collect()),
        Value::Array(vec![span04(9)]),
        Value::Array((10..30).map(span04).collect()),
    ]);
    let span05 = |id: u64| {
        let mut f: Vec<Value> = vec![Value::from(0u32); 12];
        f[4] = Value::from(id);
        f[9] = Value::Map(vec![(Value::from(1u32), Value::from(2u32))]);
        f[10] = Value::Map(vec![(Value::from(3u32), Value::from(0.5))]);
        Value::Array(f)
    };
    let v05 = Value::Array(vec![
        Value::Array(vec![s(""), s("bench"), s("GET"), s("_dd.rate")]),
        Value::Array(vec![
            Value::Array((1..=17).map(span05).collect()),
            Value::Array(vec![span05(1)]),
        ]),
    ]);
    let enc = |v: &Value| {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).expect("encode into a Vec");
        out
    };
    let (b04, b05) = (enc(&v04), enc(&v05));
    assert_eq!(count(&b04, Version::V04), Some((3, 25)), "v0.4 counter");
    assert_eq!(count(&b05, Version::V05), Some((2, 18)), "v0.5 counter");
    assert_eq!(count(&b04, Version::V05), None, "a v0.4 body is not v0.5");
    assert_eq!(count(&b05, Version::V04), None, "a v0.5 body is not v0.4");
    assert_eq!(count(&b04[..b04.len() - 1], Version::V04), None, "truncated");
    let mut trailing = b04.clone();
    trailing.push(0xc0);
    assert_eq!(count(&trailing, Version::V04), None, "trailing bytes");
    assert_eq!(count(&[0x90], Version::V04), Some((0, 0)), "an empty payload");
    let short_str = [0x91, 0x91, 0x81, 0xa1, b'k', 0xa5, b'a', b'b'];
    assert_eq!(count(&short_str, Version::V04), None, "a string past the end");
    assert_eq!(count(&short_str[..5], Version::V04), None, "a map without its value");
    assert_eq!(
        count(&[0x91, 0xdd, 0xff, 0xff, 0xff, 0xff], Version::V04),
        None,
        "a huge length"
    );
}
