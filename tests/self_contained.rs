//! The repository documents itself: no tracked file may point at notes outside it (the design
//! and research folders the project started from are not part of a public clone).

use std::path::Path;
use std::process::Command;

#[test]
fn no_file_points_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output()
        .expect("git ls-files (the test reads the tracked files)");
    assert!(
        out.status.success(),
        "git ls-files: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<String> = out
        .stdout
        .split(|&b| b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    assert!(files.len() > 100, "only {} tracked files?", files.len());
    // Built at run time so this file does not match itself.
    let shared = ["..", "/shared"].concat();
    let research = ["research", "/"].concat();
    let mut hits = Vec::new();
    for f in &files {
        let Ok(text) = std::fs::read(root.join(f)) else {
            continue; // deleted in the work tree, not yet committed
        };
        let text = String::from_utf8_lossy(&text);
        for (n, line) in text.lines().enumerate() {
            let research_file = line.match_indices(&research).any(|(i, _)| {
                // `research/<name>.md` (a file of the notes), not any word ending in research.
                let before = line[..i].chars().last();
                let after = &line[i + research.len()..];
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    && after
                        .split(|c: char| !(c.is_alphanumeric() || "-_.".contains(c)))
                        .next()
                        .is_some_and(|name| name.ends_with(".md"))
            });
            if line.contains(&shared) || research_file {
                hits.push(format!("{f}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "tracked files point outside the repository:\n{}",
        hits.join("\n")
    );
}
