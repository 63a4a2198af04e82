//! Replays the fuzzers' findings (`fuzz/regressions/<target>/*`, each fixed) and the
//! hand-written seeds (`fuzz/seeds/<target>/*`) through the same entry points as the fuzz
//! targets (`trace_agent::fuzzing`), on stable, in the normal test run: a finding that comes
//! back fails here.

use std::path::PathBuf;

use trace_agent::fuzzing::Target;

fn inputs(kind: &str, target: Target) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target.name());
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_regression_input_and_seed_runs_through_its_target() {
    let mut ran = 0;
    for target in Target::ALL {
        for kind in ["regressions", "seeds"] {
            for (path, data) in inputs(kind, target) {
                let run = std::panic::catch_unwind(|| target.run(&data));
                assert!(run.is_ok(), "{} failed on {}", target.name(), path.display());
                ran += 1;
            }
        }
    }
    assert!(
        ran >= Target::ALL.len(),
        "every target has at least a seed ({ran} inputs)"
    );
}
