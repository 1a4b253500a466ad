//! Stamps the binary with the commit it was built from and its cargo profile, for `--version`
//! and `/healthz`. The commit comes from `BUILD_GIT_COMMIT` when set
//! (a Docker build, whose context has no `.git`), else from git, else "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

// The variables it sets do not start with WEATHERFLOW_: cargo also sets them when it runs the tests,
// and the configuration refuses WEATHERFLOW_ variables it does not know.
fn main() {
    println!("cargo:rerun-if-env-changed=BUILD_GIT_COMMIT");
    let commit = match std::env::var("BUILD_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().chars().take(12).collect(),
        _ => {
            // Rebuild when HEAD moves: HEAD itself (a checkout) and the branch it points at (a commit).
            for path in ["HEAD", "packed-refs"] {
                if let Some(p) = git(&["rev-parse", "--git-path", path]) {
                    println!("cargo:rerun-if-changed={p}");
                }
            }
            if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
                && let Some(p) = git(&["rev-parse", "--git-path", &branch])
            {
                println!("cargo:rerun-if-changed={p}");
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
        }
    };
    println!("cargo:rustc-env=WF_BUILD_COMMIT={commit}");
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo:rustc-env=WF_BUILD_PROFILE={profile}");
}
