//! The crates' modules stand in layers: no file's imports lead back to it. The graph is read from the sources (each
//! file's `use` trees and `crate::`/`super::` paths, test modules left out, inline or in a file of their own) and
//! every strongly connected set of more than one file is a cycle, named with the files in it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every source file of the library, by module path (`frontend::pool::node`); the crate root and binaries are not
/// modules anyone imports.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("a source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "bin") {
                    dirs.push(path);
                }
                continue;
            }
            let Ok(relative) = path.strip_prefix(src) else {
                continue;
            };
            let text = relative.to_string_lossy().replace('\\', "/");
            let Some(stem) = text.strip_suffix(".rs") else {
                continue;
            };
            if stem == "lib" || stem == "main" {
                continue;
            }
            let module = stem.strip_suffix("/mod").unwrap_or(stem).replace('/', "::");
            found.insert(module, path);
        }
    }
    found
}

/// The code of a file without its test module and comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("a readable source file");
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a `use` tree names: `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else {
        return vec![tree.to_owned()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut parts, mut current, mut depth) = (Vec::new(), String::new(), 0);
    for c in inner.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(p))
        .map(|p| format!("{prefix}{p}"))
        .collect()
}

/// Every `crate::…` or `super::…` path in `code`, from `use` trees and from paths written inline.
fn paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for statement in code.split(';') {
        let compact: String = statement.chars().filter(|c| !c.is_whitespace()).collect();
        for start in ["use", "pubuse", "pub(crate)use", "pub(super)use"] {
            if let Some(tree) = compact.strip_prefix(start) {
                if tree.starts_with("crate::") || tree.starts_with("super::") {
                    found.extend(expand(tree));
                }
            }
        }
    }
    let is_path = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    for head in ["crate::", "super::"] {
        for (at, _) in code.match_indices(head) {
            if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let end = code[at..]
                .find(|c| !is_path(c))
                .map_or(code.len(), |e| at + e);
            found.push(code[at..end].trim_end_matches(':').to_owned());
        }
    }
    found
}

/// The modules `module` (in `path`) imports, among `known`.
fn imports(module: &str, path: &Path, known: &BTreeMap<String, PathBuf>) -> BTreeSet<String> {
    let parent = |m: &str| {
        m.rsplit_once("::")
            .map_or(String::new(), |(p, _)| p.to_owned())
    };
    let mut deps = BTreeSet::new();
    for full in paths(&code(path)) {
        let mut parts: Vec<&str> = full.split("::").collect();
        let mut base: Vec<String> = Vec::new();
        if parts[0] == "crate" {
            parts.remove(0);
        } else {
            // `super` of `a/b/c.rs` (module `a::b::c`) and of `a/b/mod.rs` (module `a::b`) alike is the parent module.
            let mut at = parent(module);
            parts.remove(0);
            while parts.first() == Some(&"super") {
                at = parent(&at);
                parts.remove(0);
            }
            base = at
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
        }
        let candidate: Vec<String> = base
            .into_iter()
            .chain(parts.iter().map(|s| s.to_string()))
            .collect();
        for k in (1..=candidate.len()).rev() {
            let name = candidate[..k].join("::");
            if known.contains_key(&name) {
                if name != module && !module.starts_with(&format!("{name}::")) {
                    deps.insert(name);
                }
                break;
            }
        }
    }
    deps
}

/// The strongly connected sets of more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in &s.graph[v] {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut set = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                set.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if set.len() > 1 {
                set.sort();
                s.found.push(set);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

/// The files declared under `#[cfg(test)]` (`#[cfg(test)] pub(crate) mod fixtures;`): test code in a file of its
/// own, left out as an inline test module is.
fn test_only(src: &Path, known: &BTreeMap<String, PathBuf>) -> BTreeSet<String> {
    let roots = ["lib.rs", "main.rs"]
        .into_iter()
        .map(|root| (String::new(), src.join(root)))
        .filter(|(_, path)| path.exists());
    let files = known.iter().map(|(m, p)| (m.clone(), p.clone()));
    let mut found = BTreeSet::new();
    for (module, path) in roots.chain(files) {
        let text = std::fs::read_to_string(&path).expect("a readable source file");
        for (at, attribute) in text.match_indices("#[cfg(test)]") {
            let rest = text[at + attribute.len()..].trim_start();
            let rest = ["pub(crate) ", "pub(super) ", "pub "]
                .iter()
                .find_map(|v| rest.strip_prefix(v))
                .unwrap_or(rest);
            let Some(rest) = rest.strip_prefix("mod ") else {
                continue;
            };
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if rest[name.len()..].trim_start().starts_with(';') {
                found.insert(if module.is_empty() {
                    name
                } else {
                    format!("{module}::{name}")
                });
            }
        }
    }
    found
}

fn graph_of(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut known = modules(src);
    for module in test_only(src, &known) {
        known.remove(&module);
    }
    known
        .iter()
        .map(|(module, path)| (module.clone(), imports(module, path, &known)))
        .collect()
}

#[test]
fn no_module_of_the_pool_imports_its_way_back_to_itself() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nodes/src");
    let graph = graph_of(&src);
    assert!(graph.len() > 50, "the sources were read: {}", graph.len());
    // The graph is read at all: the pooled Front End's wiring imports the pool, the pool never the server.
    assert!(graph["frontend::pooled"].contains("frontend::pool"));
    assert!(graph["frontend::pool::peer_calls"].contains("frontend::pool::node"));
    assert!(graph["frontend::dispatch"].contains("frontend::server"));
    assert!(!graph["frontend::pool::node"].contains("frontend::server"));
    let found = cycles(&graph);
    assert!(found.is_empty(), "import cycles: {found:?}");
}

#[test]
fn no_module_of_the_harness_imports_its_way_back_to_itself() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../harness/src");
    let graph = graph_of(&src);
    assert!(graph.len() > 40, "the sources were read: {}", graph.len());
    // The graph is read at all: the runner imports the scenario, the scenario never the runner; a user's session
    // imports the state every part of the user shares (a `super::` path); the history's writer imports its records.
    assert!(graph["runner"].contains("scenario"));
    assert!(!graph["scenario"].contains("runner"));
    assert!(graph["workload::user::session"].contains("workload::user::state"));
    assert!(graph["history::recorder"].contains("history::record"));
    assert!(
        !graph.contains_key("checker::fixtures"),
        "a test module in a file of its own is left out"
    );
    let found = cycles(&graph);
    assert!(found.is_empty(), "import cycles: {found:?}");
}

#[test]
fn a_cycle_is_found_where_there_is_one() {
    let dir = std::env::temp_dir().join(format!("module-graph-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("role")).unwrap();
    std::fs::write(
        dir.join("role/mod.rs"),
        "pub mod server;\npub mod handler;\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("role/server.rs"),
        "use super::handler::handle;\npub struct Server;\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("role/handler.rs"),
        "use crate::role::{server::Server, other};\npub fn handle(_: &Server) {}\n#[cfg(test)]\nmod tests { use super::super::store; }\n",
    )
    .unwrap();
    std::fs::write(dir.join("role/store.rs"), "pub struct Store;\n").unwrap();
    let graph = graph_of(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        cycles(&graph),
        vec![vec!["role::handler".to_owned(), "role::server".to_owned()]]
    );
    assert!(
        !graph["role::handler"].contains("role::store"),
        "test modules are left out"
    );
}
