#![no_main]
//! `trace_agent::fuzzing::Target::DecodeStats`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trace_agent::fuzzing::Target::DecodeStats.run(data);
});
