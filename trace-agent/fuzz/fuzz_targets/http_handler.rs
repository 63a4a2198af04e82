#![no_main]
//! `trace_agent::fuzzing::Target::HttpHandler`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trace_agent::fuzzing::Target::HttpHandler.run(data);
});
