//! One test per scenario file (libtest-mimic), so each runs, filters and fails by its file name.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use libtest_mimic::{Arguments, Failed, Trial};

/// Runs every `*.yaml` in `dir` as its own test named after the file; `at_least` guards against a
/// directory that went missing or empty.
pub fn run_scenario_files(dir: &Path, at_least: usize, run: fn(&Path) -> Result<(), String>) -> ExitCode {
    let args = Arguments::from_args();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect(),
        Err(e) => {
            eprintln!("{}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    files.sort();
    let mut trials: Vec<Trial> = files
        .into_iter()
        .map(|f| {
            let name = f.file_stem().unwrap_or_default().to_string_lossy().into_owned();
            Trial::test(name, move || run(&f).map_err(Failed::from))
        })
        .collect();
    let found = trials.len();
    trials.push(Trial::test("scenario_count", move || {
        if found >= at_least {
            Ok(())
        } else {
            Err(format!("expected at least {at_least} scenarios in the directory, found {found}").into())
        }
    }));
    libtest_mimic::run(&args, trials).exit_code()
}
