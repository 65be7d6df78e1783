//! Default input files (examples/..., data/...) are the repository's: found in the current
//! directory, else in the repository the binary sits in or was built from, else an error naming the
//! flag that takes the file.

use std::path::{Path, PathBuf};

/// The repository the binary was built from (its manifest directory's parent).
const BUILT_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// `path` as given, unless it is the flag's `default` (repository-relative) and is not in the
/// current directory: then the same file in the repository above the running binary (e.g.
/// `target/release/nodewright`), else in the repository it was built from. When neither has it,
/// the error says where it looked and names `flag`.
pub fn default_file(path: &Path, default: &str, flag: &str) -> Result<PathBuf, String> {
    if path != Path::new(default) || path.exists() {
        return Ok(path.to_path_buf());
    }
    let exe = std::env::current_exe().ok();
    let candidates = exe
        .iter()
        // Up to the repository of target/<profile>/[deps/]<binary>, no further: an installed
        // binary must not pick up whatever examples/ sits in a parent directory.
        .flat_map(|e| e.ancestors().skip(1).take(4))
        .map(Path::to_path_buf)
        .chain(std::iter::once(PathBuf::from(BUILT_IN)));
    find_in(candidates, default).ok_or_else(|| {
        let cwd = std::env::current_dir().map_or_else(|_| ".".into(), |d| d.display().to_string());
        format!(
            "{default} (the default of {flag}) is not in the current directory ({cwd}) nor in the repository \
             the binary came from; run from the repository root or pass {flag} FILE"
        )
    })
}

/// The first of `roots` holding `relative`.
fn find_in(roots: impl IntoIterator<Item = PathBuf>, relative: &str) -> Option<PathBuf> {
    roots.into_iter().map(|root| root.join(relative)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_path_is_kept_and_a_default_is_found_in_the_repository() {
        // Not the default: kept as given, even when missing (reading it says so).
        assert_eq!(
            default_file(Path::new("no/such.yaml"), "examples/nodepools.yaml", "--nodepool"),
            Ok(PathBuf::from("no/such.yaml"))
        );
        // The default, whatever the current directory: found (the test binary is in the
        // repository's target directory, and it was built from the repository).
        let found = default_file(
            Path::new("examples/nodepools.yaml"),
            "examples/nodepools.yaml",
            "--nodepool",
        )
        .expect("found");
        assert!(found.is_file(), "{}", found.display());
        // A default the repository does not hold: the error names the flag.
        let err = default_file(Path::new("examples/nowhere.yaml"), "examples/nowhere.yaml", "--pods").unwrap_err();
        assert!(
            err.contains("pass --pods FILE") && err.contains("examples/nowhere.yaml"),
            "{err}"
        );
    }

    #[test]
    fn roots_are_tried_in_order() {
        let repo = PathBuf::from(BUILT_IN);
        assert_eq!(
            find_in([PathBuf::from("/nonexistent"), repo.clone()], "examples/nodepools.yaml"),
            Some(repo.join("examples/nodepools.yaml"))
        );
        assert_eq!(
            find_in([PathBuf::from("/nonexistent")], "examples/nodepools.yaml"),
            None
        );
    }
}
