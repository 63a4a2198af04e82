//! gRPC status codes, as the client stats group spans by them.

/// The code names, at their numbers.
const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALIDARGUMENT",
    "DEADLINEEXCEEDED",
    "NOTFOUND",
    "ALREADYEXISTS",
    "PERMISSIONDENIED",
    "RESOURCEEXHAUSTED",
    "FAILEDPRECONDITION",
    "ABORTED",
    "OUTOFRANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATALOSS",
    "UNAUTHENTICATED",
];

/// The attributes that carry a span's gRPC status code, in the order they are tried.
pub const KEYS: [&str; 4] = [
    "rpc.grpc.status_code",
    "grpc.code",
    "rpc.grpc.status.code",
    "grpc.status.code",
];

/// The position of `key` in [`KEYS`], if it is one of them.
pub fn key_index(key: &str) -> Option<usize> {
    KEYS.iter().position(|k| *k == key)
}

/// A gRPC status code from a number or a code name (`NOT_FOUND`, `NotFound`,
/// `StatusCode.NOT_FOUND`, any case; `CANCELED` too).
pub fn code_from_str(v: &str) -> Option<u32> {
    let v = v.trim();
    if let Ok(n) = v.parse::<u32>() {
        return Some(n);
    }
    let name = v
        .strip_prefix("StatusCode.")
        .or_else(|| v.strip_prefix("STATUSCODE."))
        .unwrap_or(v);
    let upper: String = name
        .chars()
        .filter(|c| *c != '_')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if upper == "CANCELED" {
        return Some(1);
    }
    NAMES.iter().position(|n| *n == upper).map(|i| i as u32)
}

pub use crate::code_from_f64;

/// A span's gRPC status code: the first of its string attributes that parses
/// ([`code_from_str`], in the caller's key order), else the first numeric one that is a
/// code ([`code_from_f64`]).
pub fn status_code<'a>(
    strings: impl IntoIterator<Item = Option<&'a str>>,
    numbers: impl IntoIterator<Item = Option<f64>>,
) -> Option<u32> {
    strings
        .into_iter()
        .flatten()
        .find_map(code_from_str)
        .or_else(|| numbers.into_iter().flatten().find_map(code_from_f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_order() {
        assert_eq!(key_index("rpc.grpc.status_code"), Some(0));
        assert_eq!(key_index("grpc.status.code"), Some(3));
        assert_eq!(key_index("http.status_code"), None);
    }

    #[test]
    fn numbers_and_names_in_every_spelling() {
        assert_eq!(code_from_str("0"), Some(0));
        assert_eq!(code_from_str(" 14 "), Some(14));
        assert_eq!(code_from_str("CANCELLED"), Some(1));
        assert_eq!(code_from_str("canceled"), Some(1));
        assert_eq!(code_from_str("StatusCode.DEADLINE_EXCEEDED"), Some(4));
        assert_eq!(code_from_str("PermissionDenied"), Some(7));
        assert_eq!(code_from_str("UNAUTHENTICATED"), Some(16));
        assert_eq!(code_from_str("nope"), None);
        assert_eq!(code_from_str("-1"), None);
    }

    #[test]
    fn numeric_codes_are_whole_and_in_range() {
        assert_eq!(code_from_f64(5.0), Some(5));
        assert_eq!(code_from_f64(5.5), None);
        assert_eq!(code_from_f64(-1.0), None);
        assert_eq!(code_from_f64(f64::NAN), None);
        assert_eq!(code_from_f64(1e12), None);
    }

    #[test]
    fn strings_win_over_numbers_first_valid_first() {
        assert_eq!(
            status_code([None, Some("bad"), Some("NOT_FOUND")], [Some(3.0)]),
            Some(5)
        );
        assert_eq!(status_code([Some("bad")], [None, Some(0.5), Some(3.0)]), Some(3));
        assert_eq!(status_code([None], [None]), None);
    }
}
