#![no_main]
//! `trace_agent::fuzzing::Target::DecodeJson`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trace_agent::fuzzing::Target::DecodeJson.run(data);
});
