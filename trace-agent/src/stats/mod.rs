//! Trace statistics (spec section 6): the agent-side concentrator, the client-stats aggregator
//! for `/v0.6/stats`, and the DDSketch they share.

pub mod sketch;
