//! The dependency rules of ARCHITECTURE.md that keep the pure leaves pure, checked on the
//! source: which `crate::` modules each file of a module names (comments and doc comments
//! excluded). A new import that breaks a rule fails here instead of in review.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn files(module: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let single = src.join(format!("{module}.rs"));
    if single.exists() {
        return vec![single];
    }
    let mut out = Vec::new();
    let mut stack = vec![src.join(module)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("module directory") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    assert!(!out.is_empty(), "no source for module {module}");
    out
}

/// The roost modules `module` names as `crate::<name>` outside comments.
fn imports(module: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for file in files(module) {
        let text = std::fs::read_to_string(&file).expect("read source");
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    found.insert(name);
                }
            }
        }
    }
    found
}

#[test]
fn pure_leaves_import_only_what_the_codemap_allows() {
    // error_chain is a function in lib.rs, not a module.
    let rules: &[(&str, &[&str])] = &[
        ("addr", &[]),
        ("config", &["addr"]),
        ("net", &["addr"]),
        ("vm", &["addr", "error_chain"]),
        ("dns", &["addr"]),
        ("cloudinit", &[]),
        ("store", &[]),
        ("forward", &["idle", "metrics", "presence"]),
        ("proxy", &["idle", "metrics", "presence"]),
        ("presence", &[]),
        ("metrics", &[]),
        ("tasks", &[]),
        ("tls", &["config", "tasks", "error_chain", "dns"]),
    ];
    for (module, allowed) in rules {
        let extra: Vec<_> = imports(module)
            .into_iter()
            .filter(|m| !allowed.contains(&m.as_str()))
            .collect();
        assert!(
            extra.is_empty(),
            "{module} imports {extra:?}; ARCHITECTURE.md allows only {allowed:?}"
        );
    }
}

#[test]
fn the_check_sees_an_import() {
    // The scanner itself: hosting certainly uses vm and config.
    let h = imports("hosting");
    assert!(h.contains("vm") && h.contains("config"), "{h:?}");
}
