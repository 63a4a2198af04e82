//! Datadog-compatible trace agent library: everything `main.rs` runs, testable in-process.
