//! The architecture in ARCHITECTURE.md, checked against the source so it cannot drift: which
//! top-level module may use which, that the module graph has no cycles, that views know
//! nothing of candle or the engine's internals, that the domain modules know nothing of egui,
//! and a few rules inside modules. It reads `src/` as text (`use crate::…` and `crate::…`
//! paths, `use super::…` inside a module); a violation is reported with its file and line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every top-level module and the ones it may use. Lower layers first.
const ALLOWED: &[(&str, &[&str])] = &[
    ("generation", &[]),
    ("paths", &[]),
    ("fsio", &[]),
    ("imageio", &["fsio"]),
    ("sketch", &["generation"]),
    ("postfx", &[]),
    ("models", &["generation", "paths", "fsio"]),
    ("diffusion", &["generation", "models"]),
    ("engine", &["generation", "diffusion"]),
    (
        "gallery",
        &["generation", "imageio", "paths", "postfx", "fsio"],
    ),
    (
        "train",
        &[
            "generation",
            "diffusion",
            "models",
            "imageio",
            "fsio",
            "sketch",
        ],
    ),
    // The studio's persisted settings: plain data below the views, which edit it in place.
    ("app::state", &["generation", "gallery", "models", "sketch"]),
    (
        "ui",
        // `engine` for `JobId` only (checked below).
        &[
            "generation",
            "engine",
            "gallery",
            "models",
            "postfx",
            "sketch",
            "app::state",
        ],
    ),
    (
        "app",
        &[
            "generation",
            "paths",
            "fsio",
            "imageio",
            "sketch",
            "postfx",
            "models",
            "diffusion",
            "engine",
            "gallery",
            "ui",
            "app::state",
        ],
    ),
];

/// External crates a module of these must not name: the domain knows nothing of the window.
const NO_EGUI: &[&str] = &[
    "generation",
    "paths",
    "fsio",
    "imageio",
    "sketch",
    "postfx",
    "models",
    "diffusion",
    "engine",
    "gallery",
    "train",
];
const EGUI_CRATES: &[&str] = &["egui", "eframe", "egui_wgpu", "egui_kittest"];
const CANDLE_CRATES: &[&str] = &["candle_core", "candle_nn"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading src/") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file under `root` belongs to (`gallery/worker.rs` -> `gallery`; `app::state`
/// counts as a node of its own).
fn module_of(root: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root).ok()?;
    if rel == Path::new("app/state.rs") {
        return Some("app::state".to_owned());
    }
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    (name != "lib" && name != "main" && name != "cli").then_some(name)
}

/// Source lines without comments (doc comments mention modules freely).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
}

/// `(line, module)` for every `crate::module` path in the file.
fn crate_refs(text: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    for (n, line) in code_lines(text) {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let path: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            if !name.is_empty() {
                let node = if path.starts_with("app::state") {
                    "app::state".to_owned()
                } else {
                    name
                };
                out.push((n, node, path));
            }
            rest = after;
        }
    }
    out
}

/// Whether the file names the external crate `name` (as a path or in a `use`).
fn names_crate(text: &str, name: &str) -> Option<usize> {
    code_lines(text)
        .find(|(_, l)| {
            l.contains(&format!("{name}::"))
                && !l.contains(&format!("_{name}::"))
                && !l.contains(&format!("crate::{name}"))
        })
        .map(|(n, _)| n)
}

struct Source {
    file: PathBuf,
    module: String,
    text: String,
}

fn sources() -> Vec<Source> {
    sources_in(&src())
}

fn sources_in(root: &Path) -> Vec<Source> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    files.sort();
    files
        .into_iter()
        .filter_map(|file| {
            let module = module_of(root, &file)?;
            let text = std::fs::read_to_string(&file).expect("reading a source file");
            Some(Source { file, module, text })
        })
        .collect()
}

fn rel(file: &Path) -> String {
    file.strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")))
        .unwrap_or(file)
        .display()
        .to_string()
}

#[test]
fn every_module_uses_only_the_modules_below_it_and_the_graph_has_no_cycle() {
    let violations = layer_violations(&sources());
    assert!(violations.is_empty(), "\n{}", violations.join("\n"));
}

#[test]
fn the_layer_check_catches_an_upward_use_and_a_cycle() {
    // A made-up tree: the pipelines reaching up into the engine, which uses them.
    let dir = tempfile::tempdir().unwrap();
    for (file, text) in [
        ("diffusion/mod.rs", "use crate::engine::Engine;\n"),
        ("engine/mod.rs", "use crate::diffusion::Generator;\n"),
        (
            "ui/mod.rs",
            "fn f() { crate::engine::Engine::spawn(None); }\n",
        ),
    ] {
        let path = dir.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let found = layer_violations(&sources_in(dir.path())).join("\n");
    assert!(
        found.contains("`diffusion` uses crate::engine::Engine"),
        "{found}"
    );
    assert!(found.contains("a cycle between modules"), "{found}");
    assert!(found.contains("engine::JobId only"), "{found}");
}

fn layer_violations(sources: &[Source]) -> Vec<String> {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut violations = Vec::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in sources {
        let Some(may) = allowed.get(s.module.as_str()) else {
            violations.push(format!(
                "{}: module `{}` is not in the architecture table (tests/architecture.rs)",
                rel(&s.file),
                s.module
            ));
            continue;
        };
        for (line, used, path) in crate_refs(&s.text) {
            if used == s.module {
                continue;
            }
            graph
                .entry(s.module.clone())
                .or_default()
                .insert(used.clone());
            if !may.contains(&used.as_str()) {
                violations.push(format!(
                    "{}:{line}: `{}` uses crate::{path}, which it may not",
                    rel(&s.file),
                    s.module
                ));
            }
            // Only the job id of the engine.
            if s.module == "ui" && used == "engine" && path != "engine::JobId" {
                violations.push(format!(
                    "{}:{line}: the views may use engine::JobId only, not crate::{path}",
                    rel(&s.file)
                ));
            }
        }
    }
    // No cycles: walk the graph depth first.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(at) = stack.iter().position(|n| n == node) {
            cycles.push(format!("{} -> {node}", stack[at..].join(" -> ")));
            return;
        }
        if !done.insert(node.to_owned()) {
            return;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, stack, done, cycles);
        }
        stack.pop();
    }
    let mut cycles = Vec::new();
    for node in graph.keys() {
        visit(
            node,
            &graph,
            &mut Vec::new(),
            &mut BTreeSet::new(),
            &mut cycles,
        );
    }
    cycles.sort();
    cycles.dedup();
    for c in cycles {
        violations.push(format!("a cycle between modules: {c}"));
    }
    violations
}

#[test]
fn views_know_nothing_of_candle_and_the_domain_nothing_of_egui() {
    let mut violations = Vec::new();
    for s in sources() {
        if s.module == "ui" {
            for krate in CANDLE_CRATES {
                if let Some(line) = names_crate(&s.text, krate) {
                    violations.push(format!("{}:{line}: a view names {krate}", rel(&s.file)));
                }
            }
        }
        if NO_EGUI.contains(&s.module.as_str()) {
            for krate in EGUI_CRATES {
                if let Some(line) = names_crate(&s.text, krate) {
                    violations.push(format!(
                        "{}:{line}: `{}` names {krate}; the domain knows nothing of the window",
                        rel(&s.file),
                        s.module
                    ));
                }
            }
        }
    }
    assert!(violations.is_empty(), "\n{}", violations.join("\n"));
}

#[test]
fn rules_inside_modules_hold() {
    let mut violations = Vec::new();
    let read = |rel_path: &str| std::fs::read_to_string(src().join(rel_path)).expect(rel_path);
    // The stack is data: the CPU reference applies it, never the other way round.
    let stack = read("postfx/stack.rs");
    if let Some((n, _)) = code_lines(&stack).find(|(_, l)| l.contains("cpu::")) {
        violations.push(format!(
            "src/postfx/stack.rs:{n}: the stack imports the CPU reference"
        ));
    }
    // The judge has its own errors; evaluation uses the judge, not the other way round.
    let judge = read("train/judge.rs");
    if let Some((n, _)) = code_lines(&judge).find(|(_, l)| l.contains("eval::")) {
        violations.push(format!(
            "src/train/judge.rs:{n}: the judge imports the evaluation"
        ));
    }
    // Only the bounded loader decodes pictures; only fsio renames files into place.
    for s in sources() {
        let name = rel(&s.file);
        for (n, line) in code_lines(&s.text) {
            if name != "src/imageio.rs" && line.contains("ImageReader::new") {
                violations.push(format!(
                    "{name}:{n}: decodes without imageio's limits (ImageReader::new)"
                ));
            }
            let moves_files = name == "src/gallery/mod.rs"; // trash, restore, damaged files
            if name != "src/fsio.rs" && !moves_files && line.contains("fs::rename(") {
                violations.push(format!(
                    "{name}:{n}: renames a file into place outside fsio (use fsio::write_file)"
                ));
            }
        }
    }
    assert!(violations.is_empty(), "\n{}", violations.join("\n"));
}

#[test]
fn the_architecture_table_matches_the_modules_lib_rs_declares() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_owned())
        .collect();
    let table: BTreeSet<String> = ALLOWED
        .iter()
        .filter(|(m, _)| !m.contains("::"))
        .map(|(m, _)| (*m).to_owned())
        .collect();
    assert_eq!(
        declared, table,
        "lib.rs and tests/architecture.rs list other modules"
    );
}
