//! What the CLI generates about itself from its clap definitions: the bash completion script, loaded
//! by a real bash, and the man pages, rendered by a real `man` (groff). Neither needs the services.

use std::collections::BTreeSet;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_weatherflow");

fn weatherflow(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("running weatherflow");
    assert!(
        out.status.success(),
        "weatherflow {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The subcommands `weatherflow --help` lists.
fn subcommands() -> BTreeSet<String> {
    let help = String::from_utf8(weatherflow(&["--help"]).stdout).unwrap();
    let commands = help
        .split("Commands:")
        .nth(1)
        .and_then(|rest| rest.split("Options:").next())
        .expect("a Commands section");
    let names: BTreeSet<String> = commands
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 15, "{names:?}");
    names
}

#[test]
fn bash_completes_every_subcommand_and_their_flags() {
    let script = String::from_utf8(weatherflow(&["completions", "bash"]).stdout).unwrap();
    // Load it into bash, then ask its completion function what follows `weatherflow ` and
    // `weatherflow run fetch --`, as bash does on <Tab>.
    let probe = r#"
        source /dev/stdin
        complete -p weatherflow >/dev/null || exit 3
        complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMPREPLY=();
          _weatherflow weatherflow "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"; printf '%s\n' "${COMPREPLY[@]}"; }
        complete_words weatherflow ''
        echo ---
        complete_words weatherflow run fetch --
    "#;
    let mut child = Command::new("bash")
        .args(["--norc", "-c", probe])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("bash");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (top, fetch) = text.split_once("---").expect("two answers");
    let offered: BTreeSet<String> = top.split_whitespace().map(str::to_owned).collect();
    for sub in subcommands() {
        assert!(
            offered.contains(&sub),
            "bash does not complete `{sub}`: {offered:?}"
        );
    }
    for flag in [
        "--location",
        "--source",
        "--backfill-hours",
        "--allow-simulated-beside-real",
    ] {
        assert!(
            fetch.split_whitespace().any(|w| w == flag),
            "no {flag} after `run fetch`: {fetch}"
        );
    }
}

#[test]
fn man_pages_cover_every_subcommand_and_render() {
    let dir = std::env::temp_dir().join(format!("weatherflow-man-{}", std::process::id()));
    weatherflow(&["man", "--dir", dir.to_str().unwrap()]);
    for sub in subcommands() {
        let page = dir.join(format!("weatherflow-{sub}.1"));
        assert!(page.exists(), "no page for {sub}");
    }
    // `man -l` renders with groff; its warnings (-ww) would show on stderr.
    let page = dir.join("weatherflow-run-fetch.1");
    let out = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(&page)
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .output()
        .expect("man (Debian's man-db and groff)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).trim().is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("weatherflow-run-fetch - Fetch current weather"),
        "{text}"
    );
    assert!(text.contains("--backfill-hours"), "{text}");
    // Without --dir, the main page goes to standard output.
    let main = String::from_utf8(weatherflow(&["man"]).stdout).unwrap();
    assert!(
        main.starts_with(".ie") || main.contains(".TH weatherflow 1"),
        "{main}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
