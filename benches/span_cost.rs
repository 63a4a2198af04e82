//! Per-span cost on the application thread (filled in with the tracer core).
fn main() {}
