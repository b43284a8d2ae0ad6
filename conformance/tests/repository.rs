//! The repository explains itself: its license is the one Cargo.toml names, it has a
//! changelog an operator can upgrade by, and no file points to documents outside it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

#[test]
fn the_license_file_is_the_apache_license_cargo_toml_names() {
    assert!(
        read("Cargo.toml").contains("license = \"Apache-2.0\""),
        "Cargo.toml's workspace license changed: change LICENSE with it"
    );
    let license = read("LICENSE");
    for needle in [
        "Apache License",
        "Version 2.0, January 2004",
        "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
        "9. Accepting Warranty or Additional Liability.",
        "END OF TERMS AND CONDITIONS",
    ] {
        assert!(license.contains(needle), "LICENSE lacks {needle:?}");
    }
    assert!(license.len() > 10_000, "LICENSE is not the full text");
}

#[test]
fn the_changelog_has_an_unreleased_section_with_upgrade_notes() {
    let changelog = read("CHANGELOG.md");
    let unreleased = changelog
        .split("\n## ")
        .find(|s| s.starts_with("[Unreleased]"))
        .expect("CHANGELOG.md has no ## [Unreleased] section");
    for heading in ["### Added", "### Changed", "### Upgrading"] {
        assert!(unreleased.contains(heading), "[Unreleased] lacks {heading}");
    }
    assert!(read("docs/releasing.md").contains("git tag -a vX.Y.Z"));
}

#[test]
fn no_file_points_outside_the_repository() {
    // The team's shared folder (its design page and notes) is not part of a clone.
    let files = Command::new("git")
        .arg("-C")
        .arg(repo())
        .args(["ls-files", "--cached", "--others", "--exclude-standard"])
        .output()
        .expect("git ls-files");
    let mut offenders = Vec::new();
    for rel in String::from_utf8_lossy(&files.stdout).lines() {
        let Ok(text) = std::fs::read_to_string(repo().join(rel)) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            let points_out = ["../shared", "DESIGN.md", "shared/notes", "notes/datapath"]
                .iter()
                .any(|needle| line.contains(needle));
            if points_out && rel != "conformance/tests/repository.rs" {
                offenders.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "these lines point to documents outside the repository (use ARCHITECTURE.md or \
         docs/):\n{}",
        offenders.join("\n")
    );
}
