//! The architecture, checked: every arrow between crates and between the engine's
//! modules runs one way.
//!
//! - Crates: `catalog <- connectors <- engine <- cluster <- gateway` (the cluster crate:
//!   Ballista's scheduler and executor, and the engine's cluster client), and
//!   `catalog <- connectors <- nodes <- gateway` (the nodes crate: the Flight SQL client
//!   of domain nodes, which the engine reaches only through the connectors' traits). The catalog knows neither
//!   DataFusion nor any protocol; the engine knows no protocol (no tonic, no
//!   arrow-flight, not even through a dependency); nothing depends on the gateway but
//!   the test and benchmark crates.
//! - The engine's top-level modules stand in the order of [`meshgate_engine::LAYERS`],
//!   from the bottom up: a module may use only modules below it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// The resolved graph of normal (non-dev, non-build) dependencies: package name ->
/// names of the packages it depends on.
fn dependency_graph() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(workspace())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    let names: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            (
                p["id"].as_str().expect("id"),
                p["name"].as_str().expect("name"),
            )
        })
        .collect();
    let mut graph = BTreeMap::new();
    for node in metadata["resolve"]["nodes"].as_array().expect("resolve") {
        let name = names[node["id"].as_str().expect("id")].to_string();
        let deps = node["deps"]
            .as_array()
            .expect("deps")
            .iter()
            .filter(|dep| {
                dep["dep_kinds"]
                    .as_array()
                    .is_some_and(|kinds| kinds.iter().any(|k| k["kind"].is_null()))
            })
            .map(|dep| names[dep["pkg"].as_str().expect("pkg")].to_string())
            .collect();
        graph.insert(name, deps);
    }
    graph
}

/// Every package `root` depends on, directly or not.
fn closure(graph: &BTreeMap<String, BTreeSet<String>>, root: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut next = vec![root.to_string()];
    while let Some(package) = next.pop() {
        for dep in graph.get(&package).into_iter().flatten() {
            if seen.insert(dep.clone()) {
                next.push(dep.clone());
            }
        }
    }
    seen
}

#[test]
fn crates_depend_one_way() {
    let graph = dependency_graph();
    let ours = |package: &str| -> BTreeSet<String> {
        graph[package]
            .iter()
            .filter(|d| d.starts_with("meshgate-"))
            .cloned()
            .collect()
    };
    let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(ours("meshgate-catalog"), set(&[]));
    assert_eq!(ours("meshgate-connectors"), set(&["meshgate-catalog"]));
    assert_eq!(
        ours("meshgate-engine"),
        set(&["meshgate-catalog", "meshgate-connectors"])
    );
    assert_eq!(ours("meshgate-cluster"), set(&["meshgate-engine"]));
    assert_eq!(
        ours("meshgate-nodes"),
        set(&["meshgate-catalog", "meshgate-connectors"])
    );
    assert_eq!(
        ours("meshgate-gateway"),
        set(&[
            "meshgate-catalog",
            "meshgate-connectors",
            "meshgate-nodes",
            "meshgate-engine",
            "meshgate-cluster"
        ])
    );
    for (package, deps) in &graph {
        if deps.contains("meshgate-gateway") {
            panic!("{package} depends on the gateway; only tests and benchmarks may");
        }
    }
}

#[test]
fn the_engine_speaks_no_protocol_and_the_catalog_no_engine() {
    let graph = dependency_graph();
    let engine = closure(&graph, "meshgate-engine");
    // hyper and prost do come in, below object_store's S3 client and delta-rs: clients
    // of storage, not doors.
    for protocol in ["tonic", "arrow-flight", "axum", "tonic-prost"] {
        assert!(
            !engine.contains(protocol),
            "meshgate-engine depends on {protocol}, directly or through a dependency"
        );
    }
    let catalog = closure(&graph, "meshgate-catalog");
    for engine_part in ["datafusion", "arrow", "tonic", "object_store"] {
        assert!(
            !catalog.contains(engine_part),
            "meshgate-catalog depends on {engine_part}: descriptors are plain data"
        );
    }
}

/// The top-level module of the engine that `path` (under `engine/src`) belongs to.
fn module_of(path: &Path, src: &Path) -> Option<String> {
    let relative = path.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_string())
}

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// The top-level modules `text` reaches through `crate::name` paths, outside comments.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                used.insert(name);
            }
            rest = after;
        }
    }
    used
}

/// `(module, module it uses)` for every use against [`meshgate_engine::LAYERS`].
fn upward_arrows(src: &Path, layers: &[&str]) -> Vec<(String, String, PathBuf)> {
    let rank: BTreeMap<&str, usize> = layers.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let Some(module) = module_of(&file, src) else {
            continue;
        };
        let Some(&own) = rank.get(module.as_str()) else {
            wrong.push((module.clone(), "<not in LAYERS>".into(), file));
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("readable source");
        for used in crate_paths(&text) {
            match rank.get(used.as_str()) {
                Some(&theirs) if theirs < own || used == module => {}
                // A crate-level item (`crate::Error`, `crate::LAYERS`) is not a module.
                None if used.chars().next().is_some_and(char::is_uppercase) => {}
                _ => wrong.push((module.clone(), used, file.clone())),
            }
        }
    }
    wrong
}

#[test]
fn engine_modules_use_only_the_layers_below() {
    let src = workspace().join("engine/src");
    let layers = meshgate_engine::LAYERS;
    let mut declared = BTreeSet::new();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in &files {
        declared.extend(module_of(file, &src));
    }
    let listed: BTreeSet<String> = layers.iter().map(|m| m.to_string()).collect();
    assert_eq!(
        declared, listed,
        "every top-level module of the engine is in LAYERS"
    );
    let wrong = upward_arrows(&src, layers);
    assert!(
        wrong.is_empty(),
        "arrows that run the wrong way (module -> module it uses, in file):\n{}",
        wrong
            .iter()
            .map(|(from, to, file)| format!("  {from} -> {to} ({})", file.display()))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn a_reversed_arrow_is_caught() {
    // The check itself, on a module tree where `error` (the bottom) uses `engine`.
    let dir = tempfile::tempdir().expect("temporary directory");
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "pub mod error;\npub mod engine;\n").unwrap();
    std::fs::write(src.join("error.rs"), "use crate::engine::Engine;\n").unwrap();
    std::fs::create_dir(src.join("engine")).unwrap();
    std::fs::write(src.join("engine/mod.rs"), "use crate::error::Error;\n").unwrap();
    let wrong = upward_arrows(src, &["error", "engine"]);
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert_eq!(
        (wrong[0].0.as_str(), wrong[0].1.as_str()),
        ("error", "engine")
    );
}

#[test]
fn the_portal_is_a_door_over_the_engine_alone() {
    // It shares the HTTP door's plumbing (listener, query start) and nothing of the
    // Flight SQL service or the other doors.
    let src = workspace().join("gateway/src/portal");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(!files.is_empty(), "the portal has sources");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable source");
        let squeezed: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        for forbidden in [
            "tonic",
            "arrow_flight",
            "crate::service",
            "crate::{service",
            "crate::pg_door",
            "crate::{pg_door",
            "super::super",
        ] {
            assert!(
                !squeezed.contains(forbidden),
                "{} names {forbidden}",
                file.display()
            );
        }
    }
}

#[test]
fn portal_templates_escape_everything_but_charts() {
    // `|safe` skips escaping: only the charts module's SVG (numbers and escaped text)
    // may be written so; everything else a template shows is escaped.
    let dir = workspace().join("gateway/templates/portal");
    for entry in std::fs::read_dir(&dir).expect("the portal's templates") {
        let path = entry.expect("a template").path();
        if path.extension().is_none_or(|e| e != "html") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable template");
        let squeezed: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let unescaped = squeezed.matches("|safe").count()
            + squeezed.matches("filtersafe").count()
            + squeezed.matches("escape=").count()
            + squeezed.matches("autoescape").count();
        let charts = squeezed.matches("{{chart.svg|safe}}").count();
        assert_eq!(
            unescaped,
            charts,
            "{}: output written unescaped outside the charts",
            path.display()
        );
    }
}
