//! Datadog-compatible trace agent (placeholder until the receiver lands).

fn main() {}
