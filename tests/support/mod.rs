//! Helpers shared by the upstream and agent end-to-end tests.

#[allow(dead_code)] // used by the backpressure tests only
pub(crate) mod gated_sink;
pub(crate) mod intake;
pub(crate) mod local_agent;
#[allow(dead_code)] // not every test binary that includes this module starts a runtime
pub(crate) mod runtime;
#[allow(dead_code)] // the stats tests only
pub(crate) mod sketches;
pub(crate) mod test_agent;
