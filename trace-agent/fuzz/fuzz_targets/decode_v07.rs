#![no_main]
//! `trace_agent::fuzzing::Target::DecodeV07`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trace_agent::fuzzing::Target::DecodeV07.run(data);
});
