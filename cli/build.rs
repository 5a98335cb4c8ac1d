//! Records the git commit the `ovation` binary is built from (`OVATION_GIT_COMMIT`), which
//! `ovation bench` prints in its report. Without git (a source tarball), nothing is set
//! and the report says `commit unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    if let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) {
        // Uncommitted changes are not marked: build.rs does not rerun when a source changes.
        println!("cargo:rustc-env=OVATION_GIT_COMMIT={commit}");
    }
    // Rebuilt when HEAD moves: HEAD itself (a checkout) and the branch it points at (a commit).
    if let Some(p) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={p}");
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(p) = git(&["rev-parse", "--git-path", &branch])
    {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
