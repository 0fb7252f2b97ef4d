//! The layers of docs/architecture.md, read from the code: every module imports only from layers below it (or
//! from modules before it in the same layer, where src/lib.rs orders them), and the command line stays in the
//! binary.
use std::path::Path;

/// Bottom to top, as src/lib.rs's comment and docs/architecture.md draw them.
const LAYERS: &[&[&str]] = &[
    &["fault"],
    &["atomic"],
    &["data", "quant", "stats", "progress", "lock", "tfevents"],
    &["simd"],
    &["model"],
    &["sample", "train", "export", "tools", "backend"],
    &["tasks"],
    &["agent"],
    &["rollout"],
    &["distil", "serve"],
    &["pipeline"],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn sources(path: &Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            sources(&e.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|x| x == "rs") {
        out.push(path.to_path_buf());
    }
}

#[test]
fn every_module_imports_only_downward_and_the_cli_is_the_binarys() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let declared: Vec<&str> = lib.lines().filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';')).collect();
    let mut listed: Vec<&str> = LAYERS.iter().flat_map(|l| l.iter().copied()).collect();
    let mut sorted = declared.clone();
    sorted.sort();
    listed.sort();
    assert_eq!(sorted, listed, "every library module has a layer, and only those");
    assert!(!lib.contains("mod cli"), "the command line is private to the binary");
    let mut bad = Vec::new();
    for module in &declared {
        let mut files = Vec::new();
        let dir = src.join(module);
        sources(&if dir.is_dir() { dir } else { src.join(format!("{module}.rs")) }, &mut files);
        let mine = rank(module).unwrap();
        for f in files {
            for (n, line) in std::fs::read_to_string(&f).unwrap().lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for (i, _) in line.match_indices("crate::") {
                    let name: String = line[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    match rank(&name) {
                        Some(r) if name != *module && r >= mine => bad.push(format!("{}:{}: {module} imports {name}", f.display(), n + 1)),
                        None if !name.is_empty() => bad.push(format!("{}:{}: {module} names unknown module `{name}`", f.display(), n + 1)),
                        _ => {}
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "imports against the layers:\n{}", bad.join("\n"));
}
