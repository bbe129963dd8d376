//! The module tree's imports run one way: no top-level module reaches,
//! through `crate::` paths, back to itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level module → the top-level modules its code names by `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&root).unwrap();
        let top = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if top == "main" || top == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let deps = g.entry(top.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if !name.is_empty() && name != top {
                deps.insert(name);
            }
        }
    }
    g
}

/// Depth-first search in `g` for a path from `from` to `to`.
fn reaches(g: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str, seen: &mut BTreeSet<String>) -> bool {
    for next in g.get(from).into_iter().flatten() {
        if next == to || (seen.insert(next.clone()) && reaches(g, next, to, seen)) {
            return true;
        }
    }
    false
}

#[test]
fn module_imports_have_no_circles() {
    let g = graph();
    assert!(g.contains_key("fetch") && g.contains_key("config"), "{g:?}");
    for m in g.keys() {
        assert!(!reaches(&g, m, m, &mut BTreeSet::new()), "`{m}` imports reach back to it: {g:#?}");
    }
    // Config is at the bottom: it names nothing but errors and secrets.
    assert!(g["config"].iter().all(|d| d == "error" || d == "secret"), "config imports {:?}", g["config"]);
}

/// Within a folder, the files' imports run one way too: no file reaches
/// a sibling that reaches back (`super::x` or `crate::folder::x`).
#[test]
fn sibling_files_have_no_import_circles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    // Each file in a folder (not a folder's mod.rs): its folder and name.
    let placed: Vec<(&std::path::PathBuf, String, String)> = files
        .iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(&root).unwrap();
            let parts: Vec<String> =
                rel.iter().map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
            let (name, folder) = parts.split_last()?;
            (!folder.is_empty() && name != "mod").then(|| (f, folder.join("::"), name.clone()))
        })
        .collect();
    let mut siblings: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, folder, name) in &placed {
        siblings.entry(folder.clone()).or_default().insert(name.clone());
    }
    let word = |text: &str, at: usize| -> String {
        text[at..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect()
    };
    // folder → file → the sibling files it names.
    let mut folders: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (f, folder, me) in &placed {
        let known = &siblings[folder];
        let text = std::fs::read_to_string(f).unwrap();
        let mut names = BTreeSet::new();
        for (i, _) in text.match_indices("super::") {
            names.insert(word(&text, i + 7));
        }
        let long = format!("crate::{folder}::");
        for (i, _) in text.match_indices(&long) {
            names.insert(word(&text, i + long.len()));
        }
        let deps: BTreeSet<String> = names.into_iter().filter(|n| known.contains(n) && n != me).collect();
        folders.entry(folder.clone()).or_default().insert(me.clone(), deps);
    }
    assert!(folders.contains_key("ssh") && folders["ssh"].contains_key("backlog"), "{folders:?}");
    for (folder, g) in &folders {
        for m in g.keys() {
            assert!(!reaches(g, m, m, &mut BTreeSet::new()), "{folder}/{m}.rs imports reach back to it: {g:#?}");
        }
    }
}

/// No behaviour depends on the wording of an error: outside tests, no
/// code looks inside an error's text (`why.starts_with("no account")`
/// decided once whether `sshmail tunnel` connected alone). Decisions go
/// by variants and fields.
#[test]
fn no_decision_depends_on_the_wording_of_an_error() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let receivers = ["why", "error", "err", "msg", "reason", "refusal", "e.to_string()", "to_string()"];
    let looks = ["starts_with(", "contains(", "ends_with(", "find(", "strip_prefix("];
    let mut found = Vec::new();
    // The code, without its unit tests (a module's, or a tests.rs file).
    for f in files.into_iter().filter(|f| !f.ends_with("tests.rs")) {
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for (n, line) in code.lines().enumerate() {
            for r in receivers {
                for l in looks {
                    let pattern = format!("{r}.{l}");
                    let at = line.match_indices(&pattern).map(|(i, _)| i);
                    // A whole word: `self.why.contains(` is as bad, `rewhy.` is another name.
                    if at.into_iter().any(|i| i == 0 || !line[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
                    {
                        found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(found.is_empty(), "decisions on an error's wording:\n{}", found.join("\n"));
}
