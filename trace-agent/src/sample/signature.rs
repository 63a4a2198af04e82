//! Signatures: the FNV-1a-32 hashes that group chunks for the rate engine (spec 5.3, 5.4) and
//! the rare sampler (5.5), computed exactly like `pkg/trace/sampler/signature.go`.

use crate::span::Span;

/// A signature: chunks with the same one share a sampling rate.
pub type Signature = u64;

const OFFSET32: u32 = 2_166_136_261;
const PRIME32: u32 = 16_777_619;

/// An FNV-1a 32-bit hasher (no allocation, no trait objects).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv32a(u32);

impl Default for Fnv32a {
    fn default() -> Self {
        Self(OFFSET32)
    }
}

impl Fnv32a {
    pub(crate) fn write(&mut self, data: &[u8]) {
        let mut h = self.0;
        for &b in data {
            h ^= u32::from(b);
            h = h.wrapping_mul(PRIME32);
        }
        self.0 = h;
    }

    pub(crate) fn write_byte(&mut self, b: u8) {
        self.0 = (self.0 ^ u32::from(b)).wrapping_mul(PRIME32);
    }

    pub(crate) fn sum(self) -> u32 {
        self.0
    }
}

/// FNV-1a 32 of `a + "," + b`: the priority sampler's `(service, env)` signature (and, with
/// the arguments swapped, the rare sampler's shard key).
pub fn service_signature(a: &str, b: &str) -> Signature {
    let mut h = Fnv32a::default();
    h.write(a.as_bytes());
    h.write_byte(b',');
    h.write(b.as_bytes());
    Signature::from(h.sum())
}

/// Hash of one span: `env, service, name, error (one byte), [resource,] http.status_code,
/// error.type` (the optional meta only when present).
pub fn span_hash(span: &Span<'_>, env: &str, with_resource: bool) -> u32 {
    let mut h = Fnv32a::default();
    h.write(env.as_bytes());
    h.write(span.service.as_bytes());
    h.write(span.name.as_bytes());
    // Go writes `byte(span.Error)`: the low byte of the int32.
    h.write_byte(span.error as u8);
    if with_resource {
        h.write(span.resource.as_bytes());
    }
    if let Some(code) = span.meta("http.status_code") {
        h.write(code.as_bytes());
    }
    if let Some(typ) = span.meta("error.type") {
        h.write(typ.as_bytes());
    }
    h.sum()
}

/// The score samplers' chunk signature: the root's hash (with resource) XOR every distinct
/// per-span hash (without resource). `scratch` is reused between calls to avoid allocating.
pub fn chunk_signature(spans: &[Span<'_>], root: &Span<'_>, env: &str, scratch: &mut Vec<u32>) -> Signature {
    let root_hash = span_hash(root, env, true);
    scratch.clear();
    scratch.extend(spans.iter().map(|s| span_hash(s, env, false)));
    scratch.sort_unstable();
    scratch.dedup();
    let sig = scratch.iter().fold(root_hash, |acc, h| acc ^ h);
    Signature::from(sig)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::{Span, Str};

    fn span(service: &'static str, name: &'static str, resource: &'static str, error: i32) -> Span<'static> {
        Span {
            service: Str::from(service),
            name: Str::from(name),
            resource: Str::from(resource),
            error,
            ..Span::default()
        }
    }

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // Vectors from the FNV reference (draft-eastlake-fnv): "" and "a", "foobar".
        let h = |s: &str| {
            let mut f = Fnv32a::default();
            f.write(s.as_bytes());
            f.sum()
        };
        assert_eq!(h(""), 0x811c_9dc5);
        assert_eq!(h("a"), 0xe40c_292c);
        assert_eq!(h("foobar"), 0xbf9c_f968);
    }

    #[test]
    fn service_signature_hashes_service_comma_env() {
        let mut f = Fnv32a::default();
        f.write(b"web,prod");
        assert_eq!(service_signature("web", "prod"), Signature::from(f.sum()));
        assert_ne!(service_signature("web", "prod"), service_signature("web,", "prod"));
    }

    #[test]
    fn chunk_signature_ignores_span_order_and_duplicates() {
        let root = span("web", "http.request", "GET /", 0);
        let db = span("db", "query", "SELECT 1", 0);
        let db2 = span("db", "query", "SELECT 2", 0);
        let mut scratch = Vec::new();
        let a = chunk_signature(&[root.clone(), db.clone()], &root, "prod", &mut scratch);
        let b = chunk_signature(&[db.clone(), root.clone(), db2], &root, "prod", &mut scratch);
        assert_eq!(a, b, "non-root resources and duplicates do not matter");
        let mut err_root = root.clone();
        err_root.error = 1;
        let c = chunk_signature(&[err_root.clone(), db.clone()], &err_root, "prod", &mut scratch);
        assert_ne!(a, c, "the error flag matters");
        let mut typed = err_root.clone();
        typed.meta.push((Str::from("error.type"), Str::from("Timeout")));
        let d = chunk_signature(&[typed.clone(), db], &typed, "prod", &mut scratch);
        assert_ne!(c, d, "error.type matters");
        assert_ne!(
            a,
            chunk_signature(std::slice::from_ref(&root), &root, "staging", &mut scratch)
        );
    }
}
