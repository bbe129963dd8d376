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

#[test]
fn module_imports_have_no_circles() {
    let g = graph();
    assert!(g.contains_key("fetch") && g.contains_key("config"), "{g:?}");
    // Depth-first search for a path back to the start.
    fn reaches(g: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str, seen: &mut BTreeSet<String>) -> bool {
        for next in g.get(from).into_iter().flatten() {
            if next == to || (seen.insert(next.clone()) && reaches(g, next, to, seen)) {
                return true;
            }
        }
        false
    }
    for m in g.keys() {
        assert!(!reaches(&g, m, m, &mut BTreeSet::new()), "`{m}` imports reach back to it: {g:#?}");
    }
    // Config is at the bottom: it names nothing but errors and secrets.
    assert!(g["config"].iter().all(|d| d == "error" || d == "secret"), "config imports {:?}", g["config"]);
}
