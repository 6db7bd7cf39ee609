//! The crate's layering (ARCHITECTURE.md, "The layers"): a top-level module of `src/` may
//! name only the modules below it, so that no import cycle comes back. The test reads the
//! sources: every `crate::x` path (in `use` items and in code) outside comments and
//! `#[cfg(test)]` items, with names re-exported at the crate root counted as the module
//! they come from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The top-level modules from the bottom up: each may name those before it only.
const LAYERS: &[&str] = &[
    "error",
    "sys",
    "identity",
    "log",
    "codec",
    "ipc",
    "start",
    "connection",
    "sync",
    "value",
    "queue",
    "process",
    "pool",
    "manager",
    "shared_memory",
    "context",
];

/// The one allowed upward reference: the `ndarray` feature's in-place views are `unsafe fn`
/// methods of `RawArray` and `SharedMemory`, and an `unsafe fn` may be declared only in
/// `sys` (`#![deny(unsafe_code)]` elsewhere), so `sys/ndarray.rs` adds them to those types.
const EXCEPTIONS: &[(&str, &str)] = &[
    ("sys/ndarray.rs", "value"),
    ("sys/ndarray.rs", "shared_memory"),
];

/// `text` without comments and without the items under `#[cfg(test)]` (replaced by spaces
/// and newlines, so that line numbers stay).
fn strip(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |s: &str, out: &mut String| {
        out.extend(s.chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
    };
    while i < b.len() {
        if text[i..].starts_with("//") {
            let end = text[i..].find('\n').map_or(b.len(), |n| i + n);
            blank(&text[i..end], &mut out);
            i = end;
        } else if text[i..].starts_with("/*") {
            let end = text[i + 2..].find("*/").map_or(b.len(), |n| i + 2 + n + 2);
            blank(&text[i..end], &mut out);
            i = end;
        } else if text[i..].starts_with("#[cfg(test)]") {
            // The item: up to its `;`, or its balanced `{ ... }`.
            let mut j = i;
            while j < b.len() && b[j] != b'{' && b[j] != b';' {
                j += 1;
            }
            if j < b.len() && b[j] == b'{' {
                let mut depth = 0;
                while j < b.len() {
                    match b[j] {
                        b'{' => depth += 1,
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
            }
            let end = (j + 1).min(b.len());
            blank(&text[i..end], &mut out);
            i = end;
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first segment of each path in `crate::{...}` or `crate::x`, with its byte offset.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(n) = text[from..].find("crate::") {
        let at = from + n;
        from = at + "crate::".len();
        if text[..at].chars().next_back().is_some_and(is_ident) {
            continue; // `my_crate::`, not ours
        }
        let rest = &text[from..];
        if let Some(group) = rest.strip_prefix('{') {
            // A use tree: split its top level at commas.
            let (mut depth, mut start) = (0, 0);
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        found.push((at, first_segment(&group[start..k])));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.push((at, first_segment(&group[start..k])));
                        start = k + 1;
                    }
                    _ => {}
                }
            }
        } else {
            found.push((at, first_segment(rest)));
        }
    }
    found.retain(|(_, s)| !s.is_empty() && s != "self");
    found
}

fn first_segment(path: &str) -> String {
    path.trim_start()
        .chars()
        .take_while(|&c| is_ident(c))
        .collect()
}

/// The names lib.rs re-exports (`pub use module::{A, b}` / `pub use module::A`), each to
/// its module, and the items lib.rs defines itself (to the crate root, above every layer).
fn root_names(lib: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    let lib = strip(lib);
    for stmt in lib.split(';') {
        let stmt = stmt.trim();
        if let Some(path) = stmt.strip_prefix("pub use ") {
            if let Some((module, items)) = path.split_once("::") {
                for item in items
                    .split(|c: char| !is_ident(c))
                    .filter(|s| !s.is_empty())
                {
                    names.insert(item.to_string(), module.trim().to_string());
                }
            }
        }
    }
    for line in lib.lines() {
        if let Some(rest) = line.trim_start().strip_prefix("pub fn ") {
            names.insert(first_segment(rest), "lib.rs".to_string());
        }
    }
    names
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rs_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every reference from one top-level module to another: (file, line, from, to).
fn references() -> Vec<(String, usize, String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let roots = root_names(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    files.sort();
    let mut refs = Vec::new();
    for path in files {
        let rel = path
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel == "lib.rs" {
            continue;
        }
        let from = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        let text = strip(&std::fs::read_to_string(&path).unwrap());
        for (at, name) in crate_paths(&text) {
            let to = if LAYERS.contains(&name.as_str()) {
                name
            } else if let Some(m) = roots.get(&name) {
                m.clone()
            } else {
                continue; // a macro's `$crate::` path to something outside the layers
            };
            if to != from {
                let line = text[..at].matches('\n').count() + 1;
                refs.push((rel.clone(), line, from.clone(), to));
            }
        }
    }
    refs
}

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|&m| m == module)
}

#[test]
fn every_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = strip(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut missing = Vec::new();
    for line in lib.lines() {
        let l = line.trim();
        let Some(decl) = l.strip_suffix(';') else {
            continue;
        };
        let name = decl.rsplit(' ').next().unwrap_or("");
        if decl.split(' ').any(|w| w == "mod") && name != "docs" && rank(name).is_none() {
            missing.push(name.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "modules without a place in LAYERS (tests/layers.rs and ARCHITECTURE.md): {missing:?}"
    );
}

#[test]
fn no_module_names_a_module_above_it() {
    let refs = references();
    // The scan sees the references it must (a scan that finds nothing would pass anything).
    for (from, to) in [("process", "start"), ("ipc", "sys"), ("context", "pool")] {
        assert!(
            refs.iter().any(|(_, _, f, t)| f == from && t == to),
            "the scan did not find `{from}` naming `{to}`"
        );
    }
    let upward: Vec<String> = refs
        .iter()
        .filter(|(file, _, from, to)| {
            let (Some(f), t) = (rank(from), rank(to)) else {
                return false; // `every_module_has_a_layer` reports it
            };
            // The crate root's own items (`init`) are above every layer.
            t.is_none_or(|t| t > f) && !EXCEPTIONS.contains(&(file.as_str(), to.as_str()))
        })
        .map(|(file, line, from, to)| format!("src/{file}:{line}: {from} names {to}"))
        .collect();
    assert!(
        upward.is_empty(),
        "a module names one above it (see ARCHITECTURE.md, \"The layers\"):\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_scanner_reads_use_trees_and_skips_comments_and_tests() {
    let text = strip(
        "use crate::{a::{B, C}, d};\n// crate::e\nlet x = crate::f::g();\n\
         #[cfg(test)]\nmod tests { use crate::h; }\nuse my_crate::i;\n",
    );
    let names: Vec<String> = crate_paths(&text).into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, ["a", "d", "f"]);
}
