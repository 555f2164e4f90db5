//! Tidy checks that keep the repository honest: every crate root starts with
//! a `//!` doc comment, no source line ends in white space, no stub markers
//! in shipped code, the licence signing key never built in.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name != ".ci" || name == "target" {
            continue;
        }
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn sources() -> Vec<PathBuf> {
    let mut all = vec![];
    files(&root(), &mut all);
    all.retain(|p| {
        matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("rs" | "toml" | "md" | "sql" | "sh")
        ) || p.ends_with(".ci/run")
    });
    all
}

#[test]
fn crate_roots_start_with_a_doc_comment() {
    for p in sources() {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let is_root = (name == "lib.rs" || name == "main.rs")
            && p.parent().is_some_and(|d| d.ends_with("src"))
            || p.parent().is_some_and(|d| d.ends_with("src/bin"));
        if is_root {
            let text = std::fs::read_to_string(&p).expect("read");
            assert!(
                text.starts_with("//!"),
                "{} must start with a //! doc comment",
                p.display()
            );
        }
    }
}

#[test]
fn no_trailing_whitespace_and_a_final_newline() {
    let mut bad = vec![];
    for p in sources() {
        let text = std::fs::read_to_string(&p).expect("read");
        for (i, line) in text.lines().enumerate() {
            if line.ends_with(' ') || line.ends_with('\t') {
                bad.push(format!("{}:{}: trailing white space", p.display(), i + 1));
            }
        }
        if !text.is_empty() && !text.ends_with('\n') {
            bad.push(format!("{}: no final newline", p.display()));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn no_stub_markers_in_shipped_code() {
    let markers = ["todo!(", "unimplemented!(", "TODO: real", "not implemented"];
    let mut bad = vec![];
    for p in sources() {
        let shipped = ["appliance", "services", "xtask"]
            .iter()
            .any(|d| p.starts_with(root().join(d)));
        if !shipped || p.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).expect("read");
        for m in markers {
            if text.contains(m) {
                bad.push(format!("{}: contains {m}", p.display()));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn the_licence_signing_key_is_never_built_in() {
    // xtask and the tests read the development signing key by path at run
    // time; no source may include it in a binary and the image never names it.
    let mut all = vec![];
    files(&root(), &mut all);
    let mut bad = vec![];
    for p in all {
        let rust = p.extension().and_then(|e| e.to_str()) == Some("rs");
        let image = p.starts_with(root().join("image"));
        if !rust && !image {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            let names_key = line.contains("signing.key");
            if names_key && (image || line.contains("include_")) {
                bad.push(format!("{}:{}: {}", p.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
