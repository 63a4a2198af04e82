#![no_main]
//! `trace_agent::fuzzing::Target::Obfuscate`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    trace_agent::fuzzing::Target::Obfuscate.run(data);
});
