//! Helpers shared by the upstream tests.

pub(crate) mod intake;
