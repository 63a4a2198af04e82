//! Shared harness for the workspace's end-to-end tests, benchmarks and examples:
//! free loopback ports, child processes that are always reaped, and readiness probes.
