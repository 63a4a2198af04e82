//! The real ddtrace trace payloads captured in the repository (`testdata/ddtrace-captures`,
//! see `testdata/README.md`): the decoder's, the encoder's and the captures tests' inputs.
//! Test support, hidden from the docs.

use std::path::{Path, PathBuf};

use super::ApiVersion;

/// The captures folder of this source tree.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/ddtrace-captures")
}

/// The API version of a captured trace body from its file name (`…_v0.4_traces.body.bin`,
/// `…_v0.5_traces.body.bin`); `None` for any other file.
pub fn version_of(path: &Path) -> Option<ApiVersion> {
    let name = path.file_name()?.to_str()?;
    if name.ends_with("_v0.4_traces.body.bin") {
        Some(ApiVersion::V04)
    } else if name.ends_with("_v0.5_traces.body.bin") {
        Some(ApiVersion::V05)
    } else {
        None
    }
}

/// Every captured trace body below [`dir`] with its API version, in path order.
pub fn trace_bodies() -> Vec<(PathBuf, ApiVersion)> {
    let mut out = Vec::new();
    let mut stack = vec![dir()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(v) = version_of(&path) {
                out.push((path, v));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
