//! The architecture's boundaries, checked on every test run rather than kept by
//! review: this crate's tests have the whole workspace in view.
//!
//! - **The allowed crate graph.** `cargo metadata` lists what each workspace crate
//!   depends on; a dependency (normal, dev or build) on a workspace crate that
//!   [`ALLOWED`] does not list fails, and so does a workspace crate the table does not
//!   know. The same table is in ARCHITECTURE.md ("Allowed crate graph"), and the test
//!   fails when the two disagree, so the graph is decided in one place and written in
//!   two.
//! - **No circle of imports between the files of a crate.** Each `crates/*/src/**.rs`
//!   is read as tokens; every path it names inside its crate (`use crate::…`,
//!   `super::…`, `self::…`, a child module's name, in `use` trees and in code) is
//!   mapped to the file that defines that module, and the files that reach each other
//!   are reported, with the paths that tie them. A child using its parent's items
//!   counts (a parent that re-exports a child and a child that imports from its
//!   parent make a circle); declaring a module (`mod x;`) does not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Which workspace crates each workspace crate may depend on: its dependencies, then
/// what its tests may add (dev-dependencies; they may also use the dependencies). No
/// crate may have a workspace crate as a build-dependency. ARCHITECTURE.md's "Allowed
/// crate graph" is this table.
const ALLOWED: &[(&str, &[&str], &[&str])] = &[
    // The ids are leaves: strings with a type, knowing nothing else.
    ("ids", &[], &[]),
    // The CloudStack client knows nothing of ferry; its tests drive it against cloudsim.
    ("cloudstack", &["ids"], &["cloudsim"]),
    // The simulator owns its rules, sharing no code with the client it is checked
    // against; its tests drive it with that client.
    ("cloudsim", &[], &["cloudstack"]),
    // The store knows nothing of CloudStack, volumes or workflows.
    ("store", &["ids"], &[]),
    // The engine keeps runs in the store and knows nothing of CloudStack or volumes.
    ("engine", &["ids", "store"], &[]),
    // The inventory reads CloudStack to check a definition and writes the store.
    ("inventory", &["cloudstack", "ids", "store"], &["cloudsim"]),
    // The volume daemon knows nothing of workflows or runs; its journal is the store.
    ("volumed", &["cloudstack", "ids", "store"], &["cloudsim"]),
    // The readiness gates know nothing of CloudStack, the store or the workflows: the
    // VM's state comes through a trait its caller implements.
    ("readiness", &["ids"], &[]),
    // The workflows compose store, engine and volume daemon.
    (
        "workflows",
        &["cloudstack", "engine", "ids", "store", "volumed"],
        &["cloudsim", "inventory"],
    ),
    // Recovery plans: definitions checked against the store, run tier by tier through
    // the workflows each VM has, each VM's readiness checked by the gates.
    (
        "plans",
        &[
            "cloudstack",
            "engine",
            "ids",
            "inventory",
            "readiness",
            "store",
            "workflows",
        ],
        &["cloudsim"],
    ),
    // The server wires everything; it adds no failover logic of its own.
    (
        "server",
        &[
            "cloudstack",
            "engine",
            "ids",
            "inventory",
            "plans",
            "store",
            "volumed",
            "workflows",
        ],
        &["cloudsim"],
    ),
    // The binary: `serve`, `volumed`, `cloudsim`, `demo`, `bench` and the client.
    (
        "ferry",
        &[
            "cloudsim",
            "cloudstack",
            "ids",
            "server",
            "store",
            "volumed",
            "workflows",
        ],
        &[],
    ),
];

/// Edges that break the graph today, each with what removes it. They are tolerated
/// (and printed); once one is gone the test fails until its line here is deleted, so
/// an exception cannot outlive its reason.
const PENDING: &[(&str, &str, &str)] = &[];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root")
}

/// (crate, dependency, kind) for every dependency of a workspace crate on another.
fn workspace_edges() -> (BTreeSet<String>, Vec<(String, String, String)>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    let members: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().expect("a name").to_string())
        .collect();
    let mut edges = Vec::new();
    for package in packages {
        let name = package["name"].as_str().expect("a name");
        for dependency in package["dependencies"].as_array().expect("dependencies") {
            let on = dependency["name"].as_str().expect("a dependency name");
            if members.contains(on) {
                let kind = dependency["kind"].as_str().unwrap_or("normal");
                edges.push((name.to_string(), on.to_string(), kind.to_string()));
            }
        }
    }
    (members, edges)
}

type Graph = BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>;

fn allowed() -> Graph {
    ALLOWED
        .iter()
        .map(|(name, normal, dev)| {
            let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
            (name.to_string(), (set(normal), set(dev)))
        })
        .collect()
}

#[test]
fn crates_depend_only_on_what_the_architecture_allows() {
    let (members, edges) = workspace_edges();
    let allowed = allowed();
    let mut problems = Vec::new();
    let known: BTreeSet<String> = allowed.keys().cloned().collect();
    if known != members {
        problems.push(format!(
            "the table names the crates {known:?} but the workspace has {members:?}: \
             add the new crate to ALLOWED and to ARCHITECTURE.md"
        ));
    }
    let mut pending_seen = BTreeSet::new();
    for (from, to, kind) in &edges {
        let Some((normal, dev)) = allowed.get(from) else {
            continue;
        };
        let ok = match kind.as_str() {
            "normal" => normal.contains(to),
            "dev" => normal.contains(to) || dev.contains(to),
            _ => false,
        };
        if ok {
            continue;
        }
        if let Some((_, _, why)) = PENDING.iter().find(|(f, t, _)| f == from && t == to) {
            eprintln!("tolerated for now: {from} -> {to} ({kind}): {why}");
            pending_seen.insert((from.clone(), to.clone()));
            continue;
        }
        problems.push(format!(
            "{from} depends on {to} ({kind} dependency), which the architecture does not allow"
        ));
    }
    for (from, to, _) in PENDING {
        if !pending_seen.contains(&(from.to_string(), to.to_string())) {
            problems.push(format!(
                "{from} no longer depends on {to}: delete that line from PENDING"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The table of ARCHITECTURE.md's "Allowed crate graph" section: rows of
/// `` | `crate` | `dep`, `dep` | `dev-dep` | ``, `—` for none.
fn documented() -> Graph {
    let text =
        std::fs::read_to_string(workspace_root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Allowed crate graph"))
        .expect("ARCHITECTURE.md has a section `## Allowed crate graph`");
    let names = |cell: &str| -> BTreeSet<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
            assert_eq!(cells.len(), 3, "a row of three cells: {line}");
            let name = names(cells[0]).into_iter().next().expect("a crate name");
            (name, (names(cells[1]), names(cells[2])))
        })
        .collect()
}

#[test]
fn architecture_md_shows_the_allowed_crate_graph() {
    assert_eq!(
        documented(),
        allowed(),
        "ARCHITECTURE.md's \"Allowed crate graph\" and ALLOWED in this test must say the same"
    );
}

// ---- circles of imports ---------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Semi,
    Comma,
    Star,
    Other,
}

/// Rust source as the tokens that matter for paths, lexed by `proc-macro2` (comments
/// and string, character and lifetime literals are not tokens that name a path).
fn tokens(text: &str) -> Vec<Token> {
    let stream: proc_macro2::TokenStream = text.parse().expect("the source lexes as Rust");
    let mut out = Vec::new();
    flatten(stream, &mut out);
    out
}

fn flatten(stream: proc_macro2::TokenStream, out: &mut Vec<Token>) {
    use proc_macro2::{Delimiter, Spacing, TokenTree};
    let mut trees = stream.into_iter().peekable();
    while let Some(tree) = trees.next() {
        match tree {
            TokenTree::Ident(ident) => {
                let name = ident.to_string();
                out.push(Token::Ident(name.trim_start_matches("r#").to_string()));
            }
            TokenTree::Group(group) => {
                let braces = group.delimiter() == Delimiter::Brace;
                out.push(if braces { Token::Open } else { Token::Other });
                flatten(group.stream(), out);
                out.push(if braces { Token::Close } else { Token::Other });
            }
            TokenTree::Punct(p) => out.push(match p.as_char() {
                ':' if p.spacing() == Spacing::Joint
                    && matches!(trees.peek(), Some(TokenTree::Punct(q)) if q.as_char() == ':') =>
                {
                    trees.next();
                    Token::PathSep
                }
                ';' => Token::Semi,
                ',' => Token::Comma,
                '*' => Token::Star,
                _ => Token::Other,
            }),
            TokenTree::Literal(_) => out.push(Token::Other),
        }
    }
}

/// The paths of a `use` tree starting at `i` (after `use`), each with the prefix
/// `prefix`; `i` ends after the tree.
fn use_tree(t: &[Token], i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    while *i < t.len() {
        match &t[*i] {
            Token::PathSep => *i += 1,
            Token::Ident(name) if name != "as" => {
                path.push(name.clone());
                *i += 1;
                if t.get(*i) != Some(&Token::PathSep) {
                    break;
                }
            }
            Token::Open => {
                *i += 1;
                while *i < t.len() && t[*i] != Token::Close {
                    use_tree(t, i, &path, out);
                    if t.get(*i) == Some(&Token::Comma) {
                        *i += 1;
                    }
                }
                *i += 1;
                return;
            }
            Token::Star => {
                *i += 1;
                break;
            }
            _ => break,
        }
    }
    if matches!(t.get(*i), Some(Token::Ident(a)) if a == "as") {
        *i += 2;
    }
    out.push(path);
}

/// One source file of a crate: its module path from its place under `src/`.
struct SourceFile {
    name: String,
    module: Vec<String>,
    tokens: Vec<Token>,
}

/// Walks a file's tokens: `inline` hears of each inline module (`mod x { … }`) with
/// its path, `path` of each path named (the module it is named in, its segments).
fn walk(
    file: &SourceFile,
    mut inline: impl FnMut(Vec<String>),
    mut path: impl FnMut(&[String], Vec<String>),
) {
    let t = &file.tokens;
    let mut modules: Vec<(Vec<String>, usize)> = vec![(file.module.clone(), 0)];
    let mut depth = 0;
    let mut i = 0;
    while i < t.len() {
        let current = modules.last().expect("the file's module").0.clone();
        match &t[i] {
            Token::Open => {
                depth += 1;
                i += 1;
            }
            Token::Close => {
                if modules.len() > 1 && modules.last().is_some_and(|m| m.1 == depth) {
                    modules.pop();
                }
                depth -= 1;
                i += 1;
            }
            Token::Ident(kw) if kw == "mod" => {
                if let (Some(Token::Ident(name)), Some(Token::Open)) = (t.get(i + 1), t.get(i + 2))
                {
                    let mut inner = current.clone();
                    inner.push(name.clone());
                    inline(inner.clone());
                    depth += 1;
                    modules.push((inner, depth));
                    i += 3;
                } else {
                    i += 1;
                }
            }
            Token::Ident(kw) if kw == "use" => {
                i += 1;
                let mut paths = Vec::new();
                while i < t.len() && t[i] != Token::Semi {
                    use_tree(t, &mut i, &[], &mut paths);
                    if i < t.len() && t[i] != Token::Semi {
                        i += 1;
                    }
                }
                for p in paths {
                    path(&current, p);
                }
            }
            Token::Ident(kw)
                if kw == "in"
                    && i >= 2
                    && t[i - 1] == Token::Other
                    && t[i - 2] == Token::Ident("pub".into()) =>
            {
                // `pub(in crate::x)` names a module to widen visibility to, not a use.
                i += 1;
                while matches!(t.get(i), Some(Token::Ident(_) | Token::PathSep)) {
                    i += 1;
                }
            }
            Token::Ident(first)
                if t.get(i + 1) == Some(&Token::PathSep)
                    && (i == 0 || t[i - 1] != Token::PathSep) =>
            {
                let mut segments = vec![first.clone()];
                i += 2;
                while let Some(Token::Ident(next)) = t.get(i) {
                    segments.push(next.clone());
                    i += 1;
                    if t.get(i) == Some(&Token::PathSep) {
                        i += 1;
                    } else {
                        break;
                    }
                }
                path(&current, segments);
            }
            _ => i += 1,
        }
    }
}

/// The module a path named in `current` leads to, absolute, or `None` when it leaves
/// the crate (`std::…`, another crate) or names no module (`Type::method`).
fn resolve(
    current: &[String],
    segments: &[String],
    modules: &BTreeMap<Vec<String>, String>,
) -> Option<Vec<String>> {
    let mut base: Vec<String> = current.to_vec();
    let mut rest = segments;
    match segments.first()?.as_str() {
        "crate" => {
            base.clear();
            rest = &segments[1..];
        }
        "super" => {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        "self" => rest = &segments[1..],
        child => {
            let mut candidate = base.clone();
            candidate.push(child.to_string());
            if !modules.contains_key(&candidate) {
                return None;
            }
        }
    }
    base.extend(rest.iter().filter(|s| *s != "self").cloned());
    Some(base)
}

/// The file that defines the module `path` leads into: the longest prefix of it that
/// is a module.
fn file_of(path: &[String], modules: &BTreeMap<Vec<String>, String>) -> String {
    (0..=path.len())
        .rev()
        .find_map(|n| modules.get(&path[..n]))
        .cloned()
        .expect("the crate root is a module")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The circles of imports between the files of `krate`'s `src/`: each the set of files
/// that reach each other, with the paths that tie them.
fn import_cycles(krate: &str) -> Vec<String> {
    let src = workspace_root().join("crates").join(krate).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    paths.sort();
    let has_lib = src.join("lib.rs").exists();
    let mut files = Vec::new();
    for path in paths {
        let relative = path.strip_prefix(&src).expect("under src");
        let name = relative.to_string_lossy().to_string();
        if has_lib && name == "main.rs" {
            // A binary beside a library is its own crate; it reaches the library by
            // name, not by `crate::`.
            continue;
        }
        let mut module: Vec<String> = relative
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect();
        if matches!(
            module.last().map(String::as_str),
            Some("lib" | "main" | "mod")
        ) {
            module.pop();
        }
        let text = std::fs::read_to_string(&path).expect("readable source");
        files.push(SourceFile {
            name,
            module,
            tokens: tokens(&text),
        });
    }
    let mut modules: BTreeMap<Vec<String>, String> = files
        .iter()
        .map(|f| (f.module.clone(), f.name.clone()))
        .collect();
    for file in &files {
        walk(
            file,
            |inner| {
                modules.entry(inner).or_insert_with(|| file.name.clone());
            },
            |_, _| {},
        );
    }
    // file -> file it uses -> the paths by which it does.
    let mut edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in &files {
        walk(
            file,
            |_| {},
            |current, segments| {
                if let Some(target) = resolve(current, &segments, &modules) {
                    let to = file_of(&target, &modules);
                    if to != file.name {
                        edges
                            .entry(file.name.clone())
                            .or_default()
                            .entry(to)
                            .or_default()
                            .insert(segments.join("::"));
                    }
                }
            },
        );
    }
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(f) = stack.pop() {
            for to in edges.get(&f).into_iter().flat_map(|m| m.keys()) {
                if seen.insert(to.clone()) {
                    stack.push(to.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<String, BTreeSet<String>> = files
        .iter()
        .map(|f| (f.name.clone(), reach(&f.name)))
        .collect();
    let mut circles: BTreeSet<BTreeSet<String>> = BTreeSet::new();
    for (file, reaches) in &reached {
        if reaches.contains(file) {
            let circle: BTreeSet<String> = reaches
                .iter()
                .filter(|other| reached[*other].contains(file))
                .cloned()
                .collect();
            circles.insert(circle);
        }
    }
    circles
        .into_iter()
        .map(|circle| {
            let mut ties = Vec::new();
            for from in &circle {
                for (to, via) in edges.get(from).into_iter().flatten() {
                    if circle.contains(to) {
                        let via: Vec<&str> = via.iter().map(String::as_str).collect();
                        ties.push(format!("    {from} -> {to} ({})", via.join(", ")));
                    }
                }
            }
            format!(
                "{krate}: {}\n{}",
                circle.into_iter().collect::<Vec<_>>().join(", "),
                ties.join("\n")
            )
        })
        .collect()
}

fn assert_no_import_cycles(krate: &str) {
    let cycles = import_cycles(krate);
    assert!(
        cycles.is_empty(),
        "circles of imports between files (move what both sides use to where both can \
         import it without a circle):\n{}",
        cycles.join("\n")
    );
}

macro_rules! no_import_cycles {
    ($($krate:ident),+ $(,)?) => {
        mod no_import_cycles {
            $(#[test]
            fn $krate() {
                super::assert_no_import_cycles(stringify!($krate));
            })+
        }
    };
}

no_import_cycles!(
    ids, cloudstack, cloudsim, store, inventory, volumed, engine, readiness, workflows, plans,
    server, ferry
);

#[test]
fn every_crate_is_checked_for_import_cycles() {
    let checked = [
        "ids",
        "cloudstack",
        "cloudsim",
        "store",
        "inventory",
        "volumed",
        "engine",
        "readiness",
        "workflows",
        "plans",
        "server",
        "ferry",
    ];
    let (members, _) = workspace_edges();
    let checked: BTreeSet<String> = checked.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        checked, members,
        "add the crate to no_import_cycles! and here"
    );
}

#[test]
fn the_scan_finds_a_circle_through_a_parent() {
    let lib = SourceFile {
        name: "lib.rs".into(),
        module: vec![],
        tokens: tokens("mod a; mod b; pub use a::Thing; pub struct Root; // crate::b::X\n"),
    };
    let a = SourceFile {
        name: "a.rs".into(),
        module: vec!["a".into()],
        tokens: tokens(
            "use crate::{Root, b::{self, Other as O}};\n\
             use super::*; use std::fmt; fn f() { let s = \"crate::c::D\"; x::y(); }\n\
             #[cfg(test)] mod tests { use super::Thing; }",
        ),
    };
    let mut modules: BTreeMap<Vec<String>, String> = BTreeMap::new();
    modules.insert(vec![], "lib.rs".into());
    modules.insert(vec!["a".into()], "a.rs".into());
    modules.insert(vec!["b".into()], "b.rs".into());
    modules.insert(vec!["a".into(), "tests".into()], "a.rs".into());
    let mut seen = Vec::new();
    for file in [&lib, &a] {
        walk(
            file,
            |_| {},
            |current, segments| {
                if let Some(target) = resolve(current, &segments, &modules) {
                    seen.push((file.name.clone(), file_of(&target, &modules)));
                }
            },
        );
    }
    let lines: Vec<String> = seen.iter().map(|(f, t)| format!("{f}->{t}")).collect();
    assert_eq!(
        lines,
        [
            "lib.rs->a.rs",
            "a.rs->lib.rs",
            "a.rs->b.rs",
            "a.rs->b.rs",
            "a.rs->lib.rs",
            "a.rs->a.rs"
        ]
    );
}

/// A source file holds one idea: past this many lines it must say at its top why it
/// is one file (a `//! Long on purpose: …` line among its first 40).
const MAX_LINES: usize = 800;

/// The source files (tests aside: `tests.rs` modules) longer than [`MAX_LINES`] that
/// do not say why, with their lengths.
fn long_files_without_a_reason() -> Vec<String> {
    let mut files = Vec::new();
    for krate in std::fs::read_dir(workspace_root().join("crates")).expect("crates/") {
        let src = krate.expect("an entry").path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    files.sort();
    files
        .into_iter()
        .filter(|path| path.file_name().is_some_and(|n| n != "tests.rs"))
        .filter_map(|path| {
            let text = std::fs::read_to_string(&path).expect("a source file");
            let lines = text.lines().count();
            let says_why = text
                .lines()
                .take(40)
                .any(|l| l.trim_start().starts_with("//! Long on purpose:"));
            (lines > MAX_LINES && !says_why).then(|| {
                let shown = path.strip_prefix(workspace_root()).unwrap_or(&path);
                format!("{} has {lines} lines", shown.display())
            })
        })
        .collect()
}

#[test]
fn no_source_file_is_long_without_saying_why() {
    let long = long_files_without_a_reason();
    assert!(
        long.is_empty(),
        "split these along their ideas, or say at the top why each is one file \
         (`//! Long on purpose: …` among its first 40 lines):\n{}",
        long.join("\n")
    );
}
