#![no_main]
//! `trace_agent::fuzzing::Target::DecodeV04`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trace_agent::fuzzing::Target::DecodeV04.run(data);
});
