//! Pipeline files: YAML in, a validated [`Pipeline`] out.
//!
//! Loading goes raw → validated: the file is parsed into a positioned [`Node`] tree, `-s`
//! overrides and `${vars.x}` are applied to it, and then every stage is checked against its
//! kind (params, ports, wiring) and the graph for cycles. Every problem is collected into one
//! [`Diagnostics`] with file:line:col, so a user fixes them all in one pass. A `Pipeline`
//! that exists is valid and topologically ordered.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use petgraph::graph::{DiGraph, NodeIndex};

use crate::diag::{Diagnostic, Diagnostics};
use crate::executors::{self, ExecutorSpec};
use crate::resources::{self, Resources};
use crate::stage::{ANY, CheckError, DynStage, Inputs, Params, Port, Registry};
use crate::suggest::did_you_mean;
use crate::yaml::{self, Located, Node, NodeKind, Origin, PathSeg};

/// A validated pipeline, stages in dependency order.
#[derive(Debug)]
pub struct Pipeline {
    pub name: String,
    pub seed: u64,
    pub file: PathBuf,
    pub stages: Vec<StageSpec>,
    /// The `executor:` block (defaults: the local executor, no resources).
    pub executor: ExecutorSpec,
}

pub struct StageSpec {
    pub id: String,
    pub kind: &'static dyn DynStage,
    pub params: Params,
    /// Input port → the stages wired to it (indices into `Pipeline::stages`).
    pub inputs: BTreeMap<String, Vec<InputRef>>,
    /// The stage's own `resources:` (see [`Pipeline::resources_of`] for what it gets).
    pub resources: Resources,
}

impl std::fmt::Debug for StageSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageSpec").field("id", &self.id).field("kind", &self.kind.kind()).finish()
    }
}

#[derive(Debug, Clone)]
pub struct InputRef {
    pub stage: usize,
    pub port: &'static str,
}

impl Pipeline {
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.id == id)
    }

    /// What stage `i` asks a cluster for: its `resources:`, else the `executor:` block's, else
    /// its kind's defaults.
    pub fn resources_of(&self, i: usize) -> Resources {
        let s = &self.stages[i];
        s.resources.or(&self.executor.resources).or(&s.kind.resources(&s.params))
    }

    /// Indices of the stages that `i` reads from.
    pub fn deps_of(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.stages[i].inputs.values().flatten().map(|r| r.stage)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read pipeline file `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(Box<Diagnostics>),
}

const TOP_KEYS: &[&str] = &["name", "seed", "vars", "stages", "executor"];
/// A stage's own keys; a kind may own more ([`crate::stage::Stage::STAGE_KEYS`]).
const STAGE_KEYS: &[&str] = &["uses", "with", "inputs", "resources"];

/// Load and validate a pipeline file, applying `key.path=value` overrides.
pub fn load(path: &Path, registry: &Registry, overrides: &[String]) -> Result<Pipeline, LoadError> {
    let bytes =
        std::fs::read(path).map_err(|source| LoadError::Io { path: path.to_path_buf(), source })?;
    let src = String::from_utf8(bytes).map_err(|e| not_utf8(path, e))?;
    load_str(path, src, registry, overrides)
}

/// A file that is not UTF-8: located at its first bad byte (the source shown with U+FFFD).
fn not_utf8(path: &Path, e: std::string::FromUtf8Error) -> LoadError {
    let valid = e.utf8_error().valid_up_to();
    let bytes = e.into_bytes();
    let before = String::from_utf8_lossy(&bytes[..valid]);
    let lines = crate::diag::source_lines(&before);
    // A break just before the bad byte starts the line it is on.
    let (line, col) = match lines.last() {
        Some(last) if !before.ends_with(['\n', '\r']) => (lines.len(), last.chars().count() + 1),
        _ => (lines.len() + 1, 1),
    };
    let problem = Diagnostic::new(
        format!("the file is not UTF-8 text (byte 0x{:02x})", bytes[valid]),
        Some(&Origin::File { line, col }),
    )
    .help("save the pipeline as UTF-8");
    let src = String::from_utf8_lossy(&bytes).into_owned();
    LoadError::Invalid(Box::new(Diagnostics {
        file: path.to_path_buf(),
        src,
        items: vec![problem],
    }))
}

/// [`load`] from a string (the path is used in messages).
pub fn load_str(
    path: &Path,
    src: String,
    registry: &Registry,
    overrides: &[String],
) -> Result<Pipeline, LoadError> {
    let mut l = Loader { problems: Vec::new() };
    let result = l.load(path, &src, registry, overrides);
    match result {
        Some(p) if l.problems.is_empty() => Ok(p),
        _ => Err(LoadError::Invalid(Box::new(Diagnostics {
            file: path.to_path_buf(),
            src,
            items: l.problems,
        }))),
    }
}

struct Loader {
    problems: Vec<Diagnostic>,
}

/// A reference in `inputs:`: the stage id, its output port (`None`: its first) and where
/// the reference is written.
type SourceRef = (String, Option<String>, Origin);

/// An input port's wiring: the port, the stages wired to it, and where the port is written.
type PortWiring = (String, Vec<SourceRef>, Origin);

/// A stage's resolved inputs: port → the stages wired to it.
type Resolved = BTreeMap<String, Vec<InputRef>>;

/// A stage after its own checks, before the graph checks.
struct Checked {
    id: String,
    key_origin: Origin,
    kind: &'static dyn DynStage,
    params: Option<Params>,
    wiring: Vec<PortWiring>,
    resources: Resources,
}

impl Loader {
    fn err(&mut self, d: Diagnostic) {
        self.problems.push(d);
    }

    fn load(
        &mut self,
        path: &Path,
        src: &str,
        registry: &Registry,
        overrides: &[String],
    ) -> Option<Pipeline> {
        let mut root = match yaml::parse(src) {
            Ok(n) => n,
            Err(e) => {
                let o = Origin::File { line: e.line, col: e.col };
                self.err(Diagnostic::new(format!("invalid YAML: {}", e.message), Some(&o)));
                return None;
            }
        };
        let Some(entries) = root.as_map() else {
            self.err(
                Diagnostic::new(
                    format!("a pipeline file must be a mapping, found {}", root.type_name()),
                    Some(&root.origin),
                )
                .help("start with `name:`, `seed:` and `stages:`"),
            );
            return None;
        };
        self.check_keys(entries, TOP_KEYS, None, "a pipeline");
        for ov in overrides {
            self.apply_override(&mut root, ov);
        }

        let name = match root.get("name") {
            Some(n) => match n.to_value() {
                serde_yaml::Value::String(s) => s,
                _ => {
                    self.err(Diagnostic::new(
                        format!("`name` must be a string, found {}", n.type_name()),
                        Some(&n.origin),
                    ));
                    String::new()
                }
            },
            None => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        let seed = match root.get("seed") {
            None => 0,
            Some(n) => match n.to_value().as_u64() {
                Some(s) => s,
                None => {
                    self.err(
                        Diagnostic::new(
                            format!(
                                "`seed` must be a non-negative integer, found {}",
                                n.type_name()
                            ),
                            Some(&n.origin),
                        )
                        .help("e.g. `seed: 1234`"),
                    );
                    0
                }
            },
        };
        let vars: HashMap<String, Node> = match root.get("vars") {
            None => HashMap::new(),
            Some(v) if v.is_null() => HashMap::new(),
            Some(v) => match v.as_map() {
                Some(entries) => {
                    self.check_duplicates(entries, None, "var");
                    entries
                        .iter()
                        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.clone())))
                        .collect()
                }
                None => {
                    self.err(Diagnostic::new(
                        format!("`vars` must be a mapping, found {}", v.type_name()),
                        Some(&v.origin),
                    ));
                    HashMap::new()
                }
            },
        };

        let Some(stages_node) = root.get_mut("stages") else {
            self.err(
                Diagnostic::new("the pipeline has no `stages:`", Some(&Origin::File { line: 1, col: 1 }))
                    .help("add a `stages:` mapping of stage id → { uses: KIND, with: {...}, inputs: {...} }"),
            );
            return None;
        };
        self.interpolate(stages_node, &vars);
        let stages_node = root.get("stages").expect("present");
        let Some(stage_entries) = stages_node.as_map() else {
            self.err(Diagnostic::new(
                format!(
                    "`stages` must be a mapping of stage id → stage, found {}",
                    stages_node.type_name()
                ),
                Some(&stages_node.origin),
            ));
            return None;
        };
        self.check_duplicates(stage_entries, None, "stage id");

        let mut checked: Vec<Checked> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (k, v) in stage_entries {
            let Some(id) = k.as_str() else {
                self.err(Diagnostic::new("a stage id must be a string", Some(&k.origin)));
                continue;
            };
            if !seen.insert(id.to_string()) {
                continue; // reported as a duplicate
            }
            if id.is_empty()
                || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                self.err(
                    Diagnostic::new(format!("stage id `{id}` may only contain letters, digits, `_` and `-`"), Some(&k.origin))
                        .help("ids are used in `inputs:` as `stage` or `stage.port`, and on the command line"),
                );
                continue;
            }
            if let Some(c) = self.check_stage(id, k, v, registry) {
                checked.push(c);
            }
        }
        let executor = match root.get("executor") {
            None => ExecutorSpec::default(),
            Some(n) => self.located(executors::parse_block(n), None).unwrap_or_default(),
        };
        let stages = self.wire(checked)?;
        Some(Pipeline { name, seed, file: path.to_path_buf(), stages, executor })
    }

    /// The value, or its problems reported (for `resources:` and `executor:`).
    fn located<T>(&mut self, r: Result<T, Vec<Located>>, stage: Option<&str>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(problems) => {
                for (origin, message, help) in problems {
                    let mut d = Diagnostic::new(message, Some(&origin));
                    d.stage = stage.map(str::to_string);
                    d.help = help;
                    self.err(d);
                }
                None
            }
        }
    }

    fn check_keys(
        &mut self,
        entries: &[(Node, Node)],
        allowed: &[&str],
        stage: Option<&str>,
        what: &str,
    ) {
        self.check_duplicates(entries, stage, "key");
        for (k, _) in entries {
            let name = k.as_str().unwrap_or("");
            if !allowed.contains(&name) {
                let mut d =
                    Diagnostic::new(format!("unknown key `{name}` in {what}"), Some(&k.origin));
                d.stage = stage.map(str::to_string);
                d.help =
                    Some(did_you_mean(name, allowed.iter().copied()).unwrap_or_else(|| {
                        format!("the keys of {what} are: {}", allowed.join(", "))
                    }));
                self.err(d);
            }
        }
    }

    fn check_duplicates(&mut self, entries: &[(Node, Node)], stage: Option<&str>, what: &str) {
        let mut first: HashMap<&str, &Origin> = HashMap::new();
        for (k, _) in entries {
            let Some(name) = k.as_str() else { continue };
            if let Some(prev) = first.get(name) {
                let at = match prev {
                    Origin::File { line, col } => format!("line {line}, column {col}"),
                    Origin::Flag(f) => format!("-s {f}"),
                };
                let mut d = Diagnostic::new(format!("duplicate {what} `{name}`"), Some(&k.origin))
                    .note(format!("first defined at {at}"))
                    .help("rename or remove one of them");
                d.stage = stage.map(str::to_string);
                self.err(d);
            } else {
                first.insert(name, &k.origin);
            }
        }
    }

    fn check_nested_duplicates(&mut self, node: &Node, stage: &str) {
        match &node.kind {
            NodeKind::Map(entries) => {
                self.check_duplicates(entries, Some(stage), "key");
                entries.iter().for_each(|(_, v)| self.check_nested_duplicates(v, stage));
            }
            NodeKind::Seq(items) => {
                items.iter().for_each(|v| self.check_nested_duplicates(v, stage))
            }
            NodeKind::Scalar { .. } => {}
        }
    }

    /// `-s stages.train.with.lr=3e-4`: set a value, creating only leaf keys of `with`.
    fn apply_override(&mut self, root: &mut Node, ov: &str) {
        let origin = Origin::Flag(ov.to_string());
        let Some((path, raw)) = ov.split_once('=') else {
            self.err(
                Diagnostic::new(
                    format!("`-s {ov}` is not of the form key.path=value"),
                    Some(&origin),
                )
                .help("e.g. -s stages.train.with.lr=3e-4"),
            );
            return;
        };
        let segs: Vec<&str> = path.split('.').collect();
        if segs.iter().any(|s| s.is_empty()) {
            self.err(
                Diagnostic::new(format!("`{path}` is not a valid key path"), Some(&origin))
                    .help("e.g. -s vars.d_model=192"),
            );
            return;
        }
        let value = serde_yaml::from_str::<serde_yaml::Value>(raw)
            .unwrap_or_else(|_| serde_yaml::Value::String(raw.to_string()));
        let new = Node::from_value(&value, &origin);
        let mut cur = root;
        for (i, seg) in segs.iter().enumerate() {
            let last = i + 1 == segs.len();
            let parent_path = segs[..i].join(".");
            // Only new leaves inside a stage's `with:` may be created (e.g. a param left at its default).
            let may_create = last && i >= 3 && segs[0] == "stages" && segs[2] == "with";
            match &mut cur.kind {
                NodeKind::Map(entries) => {
                    let pos = entries.iter().rposition(|(k, _)| k.as_str() == Some(seg));
                    match (pos, last) {
                        (Some(p), true) => {
                            entries[p].1 = new;
                            return;
                        }
                        (Some(p), false) => cur = &mut entries[p].1,
                        (None, true) if may_create => {
                            entries.push((Node::scalar(*seg, false, origin.clone()), new));
                            return;
                        }
                        // A stage written without `with:` gets one.
                        (None, false) if i == 2 && segs[0] == "stages" && *seg == "with" => {
                            let empty =
                                Node { kind: NodeKind::Map(Vec::new()), origin: origin.clone() };
                            entries.push((Node::scalar(*seg, false, origin.clone()), empty));
                            cur = &mut entries.last_mut().expect("just pushed").1;
                        }
                        (None, _) => {
                            let names: Vec<&str> =
                                entries.iter().filter_map(|(k, _)| k.as_str()).collect();
                            let here = if parent_path.is_empty() {
                                "the pipeline".to_string()
                            } else {
                                format!("`{parent_path}`")
                            };
                            let help = did_you_mean(seg, names.iter().copied())
                                .unwrap_or_else(|| format!("{here} has: {}", names.join(", ")));
                            self.err(
                                Diagnostic::new(
                                    format!("`-s {path}`: there is no `{seg}` in {here}"),
                                    Some(&origin),
                                )
                                .help(help),
                            );
                            return;
                        }
                    }
                }
                NodeKind::Seq(items) => {
                    match seg.parse::<usize>().ok().filter(|&n| n < items.len()) {
                        Some(n) if last => {
                            items[n] = new;
                            return;
                        }
                        Some(n) => cur = &mut items[n],
                        None => {
                            self.err(Diagnostic::new(
                            format!("`-s {path}`: `{parent_path}` is a list of {}; `{seg}` is not an index in it", items.len()),
                            Some(&origin),
                        ));
                            return;
                        }
                    }
                }
                NodeKind::Scalar { .. } => {
                    self.err(Diagnostic::new(
                        format!("`-s {path}`: `{parent_path}` is a single value, not a mapping"),
                        Some(&origin),
                    ));
                    return;
                }
            }
        }
    }

    /// Replace `${vars.x}` in every scalar. A scalar that is exactly one reference takes the
    /// var's value with its type (so `n_embd: ${vars.d}` stays a number).
    fn interpolate(&mut self, node: &mut Node, vars: &HashMap<String, Node>) {
        match &mut node.kind {
            NodeKind::Seq(items) => items.iter_mut().for_each(|n| self.interpolate(n, vars)),
            NodeKind::Map(entries) => {
                entries.iter_mut().for_each(|(_, v)| self.interpolate(v, vars))
            }
            NodeKind::Scalar { text, .. } => {
                if !text.contains("${") {
                    return;
                }
                let text = text.clone();
                let mut out = String::new();
                let mut rest = text.as_str();
                let mut whole: Option<Node> = None;
                while let Some(start) = rest.find("${") {
                    if rest[..start].ends_with('$') {
                        // `$${` is a literal `${`.
                        out.push_str(&rest[..start - 1]);
                        out.push_str("${");
                        rest = &rest[start + 2..];
                        continue;
                    }
                    out.push_str(&rest[..start]);
                    let Some(end) = rest[start..].find('}') else {
                        self.err(
                            Diagnostic::new(
                                format!("unclosed `${{` in `{text}`"),
                                Some(&node.origin),
                            )
                            .help("write `${vars.NAME}`, or `$${` for a literal `${`"),
                        );
                        return;
                    };
                    let reference = rest[start + 2..start + end].trim();
                    let Some(name) = reference.strip_prefix("vars.") else {
                        self.err(
                            Diagnostic::new(
                                format!("unknown reference `${{{reference}}}`"),
                                Some(&node.origin),
                            )
                            .help("only `${vars.NAME}` can be interpolated"),
                        );
                        return;
                    };
                    let Some(var) = vars.get(name) else {
                        let help = did_you_mean(name, vars.keys().map(String::as_str))
                            .unwrap_or_else(|| {
                                "declare it under `vars:` at the top of the file".into()
                            });
                        self.err(
                            Diagnostic::new(format!("unknown var `{name}`"), Some(&node.origin))
                                .help(help),
                        );
                        return;
                    };
                    if start == 0 && end + 1 == rest.len() && out.is_empty() && whole.is_none() {
                        whole = Some(var.clone());
                    } else if let Some(s) = var.as_str() {
                        out.push_str(s);
                    } else {
                        self.err(Diagnostic::new(
                            format!(
                                "var `{name}` is {} and cannot be spliced into a string",
                                var.type_name()
                            ),
                            Some(&node.origin),
                        ));
                        return;
                    }
                    rest = &rest[start + end + 1..];
                }
                match whole {
                    Some(mut v) if rest.is_empty() => {
                        v.origin = node.origin.clone();
                        *node = v;
                    }
                    _ => {
                        out.push_str(rest);
                        node.kind = NodeKind::Scalar { text: out, plain: false };
                    }
                }
            }
        }
    }

    fn check_stage(
        &mut self,
        id: &str,
        key: &Node,
        v: &Node,
        registry: &Registry,
    ) -> Option<Checked> {
        let Some(entries) = v.as_map() else {
            self.err(
                Diagnostic::new(
                    format!("stage `{id}` must be a mapping, found {}", v.type_name()),
                    Some(&v.origin),
                )
                .stage(id)
                .help("e.g. `{ uses: command, with: { cmd: \"...\" } }`"),
            );
            return None;
        };
        let kind = v.get("uses").and_then(Node::as_str).and_then(|k| registry.get(k));
        self.check_stage_keys(id, entries, kind, registry);
        let Some(uses) = v.get("uses") else {
            self.err(
                Diagnostic::new(format!("stage `{id}` has no `uses:`"), Some(&key.origin))
                    .stage(id)
                    .help(kinds_help(registry)),
            );
            return None;
        };
        let Some(kind_name) = uses.as_str() else {
            self.err(
                Diagnostic::new("`uses` must name a stage kind", Some(&uses.origin))
                    .stage(id)
                    .help(kinds_help(registry)),
            );
            return None;
        };
        let Some(kind) = kind else {
            let help = did_you_mean(kind_name, registry.kinds().map(|k| k.kind()))
                .unwrap_or_else(|| kinds_help(registry));
            self.err(
                Diagnostic::new(format!("unknown stage kind `{kind_name}`"), Some(&uses.origin))
                    .stage(id)
                    .help(help),
            );
            return None;
        };

        let params = self.check_params(id, kind, v);
        let wiring = self.check_inputs(id, key, kind, v.get("inputs"));
        let resources = match v.get("resources") {
            None => Resources::default(),
            Some(n) => self.located(resources::parse_resources(n), Some(id)).unwrap_or_default(),
        };
        Some(Checked {
            id: id.to_string(),
            key_origin: key.origin.clone(),
            kind,
            params,
            wiring,
            resources,
        })
    }

    /// A stage's keys: its own, and those its kind owns. A key another kind owns is named as
    /// such (`filters:` on a `command` stage).
    fn check_stage_keys(
        &mut self,
        id: &str,
        entries: &[(Node, Node)],
        kind: Option<&'static dyn DynStage>,
        registry: &Registry,
    ) {
        self.check_duplicates(entries, Some(id), "key");
        let owned = kind.map_or(&[][..], |k| k.stage_keys());
        let allowed: Vec<&str> = STAGE_KEYS.iter().chain(owned).copied().collect();
        for (k, _) in entries {
            let name = k.as_str().unwrap_or("");
            if allowed.contains(&name) {
                continue;
            }
            let owners: Vec<&str> = registry
                .kinds()
                .filter(|o| o.stage_keys().contains(&name))
                .map(|o| o.kind())
                .collect();
            let d = match kind {
                Some(kind) if !owners.is_empty() => Diagnostic::new(
                    format!("stage kind `{}` takes no `{name}`", kind.kind()),
                    Some(&k.origin),
                )
                .help(format!(
                    "`{name}:` belongs to stages of kind {}: remove it from this stage",
                    owners.join(", ")
                )),
                _ => Diagnostic::new(
                    format!("unknown key `{name}` in stage `{id}`"),
                    Some(&k.origin),
                )
                .help(did_you_mean(name, allowed.iter().copied()).unwrap_or_else(|| {
                    format!("the keys of stage `{id}` are: {}", allowed.join(", "))
                })),
            };
            self.err(d.stage(id));
        }
    }

    /// Deserialises `with:` and the keys the kind owns beside it, as one mapping, straight
    /// from the positioned nodes: every problem is placed where it is written.
    fn check_params(&mut self, id: &str, kind: &'static dyn DynStage, v: &Node) -> Option<Params> {
        let with = v.get("with");
        let mut entries: Vec<(Node, Node)> = match with {
            None => Vec::new(),
            Some(w) if w.is_null() => Vec::new(),
            Some(w) => match w.as_map() {
                Some(e) => e.to_vec(),
                None => {
                    self.err(
                        Diagnostic::new(
                            format!("`with` must be a mapping of params, found {}", w.type_name()),
                            Some(&w.origin),
                        )
                        .stage(id),
                    );
                    return None;
                }
            },
        };
        for name in kind.stage_keys() {
            if let Some((k, value)) = v.entry(name) {
                entries.push((k.clone(), value.clone()));
            }
        }
        let params =
            Node { kind: NodeKind::Map(entries), origin: with.unwrap_or(v).origin.clone() };
        self.check_nested_duplicates(&params, id);
        let default_help = || {
            format!(
                "`{}` takes: {} (see `hone kinds {}`)",
                kind.kind(),
                kind.param_names().join(", "),
                kind.kind()
            )
        };
        let problems: Vec<(Origin, Vec<PathSeg>, String, Option<String>)> = match kind
            .check(&params)
        {
            Ok(p) => return Some(p),
            Err(CheckError::Invalid(e)) => {
                // An unknown field: the closest of the fields there are.
                let help = match (e.expected_fields, e.path.last()) {
                    (Some(fields), Some(PathSeg::Key(field))) => {
                        did_you_mean(field, fields.iter().copied())
                    }
                    _ => None,
                };
                vec![(e.origin.unwrap_or_else(|| params.origin.clone()), e.path, e.message, help)]
            }
            Err(CheckError::Problems(ps)) => ps
                .into_iter()
                .map(|p| (params.locate(&p.path).origin.clone(), p.path, p.message, p.help))
                .collect(),
        };
        for (origin, path, message, help) in problems {
            // The full path, so a problem in `filters:` reads `filters[0]`, not `[0]`.
            let where_ = if path.is_empty() {
                String::new()
            } else {
                format!(
                    " (at `{}`)",
                    path.iter().map(|s| s.to_string()).collect::<String>().trim_start_matches('.')
                )
            };
            let mut d = Diagnostic::new(
                format!("invalid params for `{}`: {message}{where_}", kind.kind()),
                Some(&origin),
            )
            .stage(id);
            d.help = Some(help.unwrap_or_else(default_help));
            self.err(d);
        }
        None
    }

    fn check_inputs(
        &mut self,
        id: &str,
        key: &Node,
        kind: &'static dyn DynStage,
        inputs: Option<&Node>,
    ) -> Vec<PortWiring> {
        let mut wiring = Vec::new();
        let entries: &[(Node, Node)] = match inputs {
            None => &[],
            Some(n) if n.is_null() => &[],
            Some(n) => match n.as_map() {
                Some(e) => e,
                None => {
                    self.err(
                        Diagnostic::new(
                            format!(
                                "`inputs` must be a mapping of port → stage, found {}",
                                n.type_name()
                            ),
                            Some(&n.origin),
                        )
                        .stage(id),
                    );
                    return wiring;
                }
            },
        };
        self.check_duplicates(entries, Some(id), "input port");
        for (k, v) in entries {
            let port = k.as_str().unwrap_or("");
            let spec = match kind.inputs() {
                Inputs::Fixed(ports) => match ports.iter().find(|p| p.name == port) {
                    Some(p) => Some(*p),
                    None => {
                        let names: Vec<&str> = ports.iter().map(|p| p.name).collect();
                        let help = did_you_mean(port, names.iter().copied()).unwrap_or_else(|| {
                            if names.is_empty() {
                                format!("`{}` takes no inputs", kind.kind())
                            } else {
                                format!("`{}` has input ports: {}", kind.kind(), names.join(", "))
                            }
                        });
                        self.err(
                            Diagnostic::new(
                                format!("stage kind `{}` has no input port `{port}`", kind.kind()),
                                Some(&k.origin),
                            )
                            .stage(id)
                            .help(help),
                        );
                        continue;
                    }
                },
                Inputs::Open => {
                    if port.is_empty()
                        || port.starts_with(|c: char| c.is_ascii_digit())
                        || !port.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        self.err(Diagnostic::new(format!("input name `{port}` must be an identifier (letters, digits, `_`)"), Some(&k.origin)).stage(id).help("it becomes the environment variable HONE_IN_<name>"));
                        continue;
                    }
                    None
                }
            };
            let refs: Vec<&Node> = match &v.kind {
                NodeKind::Seq(items) => {
                    if let Some(p) = spec.filter(|p| !p.many) {
                        self.err(
                            Diagnostic::new(
                                format!("input `{}` takes one stage, not a list", p.name),
                                Some(&v.origin),
                            )
                            .stage(id),
                        );
                        continue;
                    }
                    items.iter().collect()
                }
                _ => vec![v],
            };
            let mut sources = Vec::new();
            for r in refs {
                let Some(text) = r.as_str().filter(|_| !r.is_null()) else {
                    self.err(Diagnostic::new(format!("input `{port}` must name a stage (`stage` or `stage.port`), found {}", r.type_name()), Some(&r.origin)).stage(id));
                    continue;
                };
                let (stage, out) = match text.split_once('.') {
                    Some((s, p)) => (s.to_string(), Some(p.to_string())),
                    None => (text.to_string(), None),
                };
                sources.push((stage, out, r.origin.clone()));
            }
            wiring.push((port.to_string(), sources, k.origin.clone()));
        }
        if let Inputs::Fixed(ports) = kind.inputs() {
            for p in ports.iter().filter(|p| p.required) {
                if !wiring.iter().any(|(name, _, _)| name == p.name)
                    && !entries.iter().any(|(k, _)| k.as_str() == Some(p.name))
                {
                    let origin = inputs.map(|n| &n.origin).unwrap_or(&key.origin);
                    self.err(
                        Diagnostic::new(
                            format!(
                                "stage kind `{}` needs input `{}` (a {})",
                                kind.kind(),
                                p.name,
                                p.ty
                            ),
                            Some(origin),
                        )
                        .stage(id)
                        .help(format!("add `inputs: {{ {}: <stage id> }}`", p.name)),
                    );
                }
            }
        }
        wiring
    }

    /// Resolve input references, check types, find cycles, order the stages.
    fn wire(&mut self, checked: Vec<Checked>) -> Option<Vec<StageSpec>> {
        let index: HashMap<&str, usize> =
            checked.iter().enumerate().map(|(i, c)| (c.id.as_str(), i)).collect();
        let mut graph: DiGraph<usize, ()> = DiGraph::new();
        let nodes: Vec<NodeIndex> = (0..checked.len()).map(|i| graph.add_node(i)).collect();
        let mut resolved: Vec<Resolved> = vec![BTreeMap::new(); checked.len()];
        for (i, c) in checked.iter().enumerate() {
            for (port, sources, _) in &c.wiring {
                let want = match c.kind.inputs() {
                    Inputs::Fixed(ports) => ports.iter().find(|p| p.name == port).map(|p| p.ty),
                    Inputs::Open => None,
                };
                for (src, out, origin) in sources {
                    let Some(&j) = index.get(src.as_str()) else {
                        let help = did_you_mean(src, checked.iter().map(|c| c.id.as_str()))
                            .unwrap_or_else(|| {
                                format!(
                                    "stages in this pipeline: {}",
                                    checked
                                        .iter()
                                        .map(|c| c.id.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )
                            });
                        self.err(
                            Diagnostic::new(
                                format!("input `{port}` names unknown stage `{src}`"),
                                Some(origin),
                            )
                            .stage(&c.id)
                            .help(help),
                        );
                        continue;
                    };
                    let outs = checked[j].kind.outputs();
                    let given = match out {
                        None => outs.first(),
                        Some(o) => match outs.iter().find(|p| p.name == o) {
                            Some(p) => Some(p),
                            None => {
                                let names: Vec<&str> = outs.iter().map(|p| p.name).collect();
                                let help =
                                    did_you_mean(o, names.iter().copied()).unwrap_or_else(|| {
                                        format!(
                                            "`{src}` ({}) has outputs: {}",
                                            checked[j].kind.kind(),
                                            names.join(", ")
                                        )
                                    });
                                self.err(
                                    Diagnostic::new(
                                        format!("stage `{src}` has no output port `{o}`"),
                                        Some(origin),
                                    )
                                    .stage(&c.id)
                                    .help(help),
                                );
                                continue;
                            }
                        },
                    };
                    let Some(given) = given else {
                        self.err(
                            Diagnostic::new(
                                format!(
                                    "stage `{src}` ({}) has no outputs",
                                    checked[j].kind.kind()
                                ),
                                Some(origin),
                            )
                            .stage(&c.id),
                        );
                        continue;
                    };
                    // The type this stage's params give the port (invalid params: unknown,
                    // and already reported).
                    let given_ty = match &checked[j].params {
                        Some(params) => checked[j].kind.output_type(params, given),
                        None => ANY,
                    };
                    if let Some(want) = want
                        && !want.accepts(given_ty)
                    {
                        let out_ty = |p: &Port| {
                            checked[j]
                                .params
                                .as_ref()
                                .map_or(ANY, |params| checked[j].kind.output_type(params, p))
                        };
                        let alternatives: Vec<String> = outs
                            .iter()
                            .filter(|p| want.accepts(out_ty(p)))
                            .map(|p| format!("`{src}.{}`", p.name))
                            .collect();
                        let narrowing = || {
                            checked[j].params.as_ref().and_then(|params| {
                                checked[j].kind.narrowing_help(params, given, want)
                            })
                        };
                        let help = if alternatives.is_empty() {
                            narrowing().unwrap_or_else(|| {
                                format!("wire a stage that produces a {want} into `{port}`")
                            })
                        } else {
                            format!("use {}", alternatives.join(" or "))
                        };
                        self.err(
                            Diagnostic::new(
                                format!("input `{port}` of `{}` expects a {want}, but `{src}` ({}) gives a {given_ty}", c.id, checked[j].kind.kind()),
                                Some(origin),
                            )
                            .stage(&c.id)
                            .help(help),
                        );
                        continue;
                    }
                    graph.add_edge(nodes[j], nodes[i], ());
                    resolved[i]
                        .entry(port.clone())
                        .or_default()
                        .push(InputRef { stage: j, port: given.name });
                }
            }
        }

        // Cycles: every strongly connected component with more than one stage, or a self-loop.
        for scc in petgraph::algo::tarjan_scc(&graph) {
            let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
            if scc.len() < 2 && !self_loop {
                continue;
            }
            let mut members: Vec<usize> = scc.iter().map(|n| graph[*n]).collect();
            members.sort();
            let names: Vec<&str> = members.iter().map(|&i| checked[i].id.as_str()).collect();
            let mut d = Diagnostic::new(format!("cycle between stages: {}", names.join(" → ")), Some(&checked[members[0]].key_origin))
                .stage(names[0])
                .help("a stage cannot depend, directly or through others, on itself: remove one of these inputs");
            for &i in &members {
                for (port, refs) in &resolved[i] {
                    for r in refs.iter().filter(|r| members.contains(&r.stage)) {
                        d = d.note(format!(
                            "`{}` reads `{}` through input `{port}`",
                            checked[i].id, checked[r.stage].id
                        ));
                    }
                }
            }
            self.err(d);
        }
        if !self.problems.is_empty() {
            return None;
        }

        // Kahn's algorithm, taking ready stages in file order so the order is stable.
        let n = checked.len();
        let mut indegree = vec![0usize; n];
        let mut dependents = vec![Vec::new(); n];
        for (i, ins) in resolved.iter().enumerate() {
            let mut srcs: Vec<usize> = ins.values().flatten().map(|r| r.stage).collect();
            srcs.sort();
            srcs.dedup();
            indegree[i] = srcs.len();
            for s in srcs {
                dependents[s].push(i);
            }
        }
        let mut ready: std::collections::BTreeSet<usize> =
            (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop_first() {
            order.push(i);
            for &d in &dependents[i] {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    ready.insert(d);
                }
            }
        }
        let mut new_index = vec![0; n];
        for (pos, &i) in order.iter().enumerate() {
            new_index[i] = pos;
        }
        let mut slots: Vec<Option<(Checked, Resolved)>> =
            checked.into_iter().zip(resolved).map(Some).collect();
        let stages = order
            .iter()
            .map(|&i| {
                let (c, mut ins) = slots[i].take().expect("each stage once");
                for r in ins.values_mut().flatten() {
                    r.stage = new_index[r.stage];
                }
                StageSpec {
                    id: c.id,
                    kind: c.kind,
                    params: c.params.expect("no problems means params are valid"),
                    inputs: ins,
                    resources: c.resources,
                }
            })
            .collect();
        Some(stages)
    }
}

fn kinds_help(registry: &Registry) -> String {
    format!("stage kinds: {}", registry.kinds().map(|k| k.kind()).collect::<Vec<_>>().join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executors::Settings;
    use crate::executors::slurm::SlurmSettings;
    use crate::stage::{Port, PortType, RunCx, Stage, StageError};

    const TEXT: PortType = PortType::new("text");
    const MODEL: PortType = PortType::new("model");

    #[derive(serde::Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        #[serde(default)]
        n: u32,
    }

    /// A test kind with params `P` that does nothing.
    macro_rules! kind {
        ($name:ident, $kind:literal, $inputs:expr, $outputs:expr) => {
            struct $name;
            impl Stage for $name {
                type Params = P;
                const KIND: &'static str = $kind;
                const VERSION: u32 = 1;
                const ABOUT: &'static str = "";
                const INPUTS: Inputs = $inputs;
                const OUTPUTS: &'static [Port] = $outputs;
                fn run(_: &P, _: &RunCx) -> Result<(), StageError> {
                    Ok(())
                }
            }
        };
    }

    kind!(Source, "source", Inputs::Fixed(&[]), &[Port::required("text", TEXT)]);
    kind!(
        Train,
        "train",
        Inputs::Fixed(&[Port::required("data", TEXT)]),
        &[Port::required("model", MODEL), Port::required("log", TEXT)]
    );
    kind!(Compare, "compare", Inputs::Fixed(&[Port::many("models", MODEL)]), &[]);

    /// A source whose output is narrowed by its params: `chat: true` gives chat text.
    const CHAT: PortType = PortType::narrows("chat", &TEXT);
    struct Typed;
    impl Stage for Typed {
        type Params = TypedP;
        const KIND: &'static str = "typed";
        const VERSION: u32 = 1;
        const ABOUT: &'static str = "";
        const INPUTS: Inputs = Inputs::Fixed(&[]);
        const OUTPUTS: &'static [Port] = &[Port::required("text", TEXT)];
        const STAGE_KEYS: &'static [&'static str] = &["notes"];
        fn output_type(p: &TypedP, port: &Port) -> PortType {
            if p.chat { CHAT } else { port.ty }
        }
        fn run(_: &TypedP, _: &RunCx) -> Result<(), StageError> {
            Ok(())
        }
    }
    #[derive(serde::Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TypedP {
        #[serde(default)]
        chat: bool,
        /// A stage-level key of this kind.
        #[serde(default)]
        notes: Vec<u32>,
    }
    kind!(ChatTrain, "chat-train", Inputs::Fixed(&[Port::required("data", CHAT)]), &[]);

    fn registry() -> Registry {
        Registry::new(vec![&Source, &Train, &Compare, &Typed, &ChatTrain])
    }

    #[test]
    fn params_deserialise_from_their_nodes_and_kinds_own_stage_keys() {
        let p = load_str(
            Path::new("p.yaml"),
            "stages:\n  c: { uses: typed, notes: [1, 2] }\n".into(),
            &registry(),
            &[],
        )
        .unwrap();
        assert_eq!(p.stages[0].params.canonical["notes"], serde_json::json!([1, 2]));
        let e = problems(
            "stages:\n  c: { uses: typed, notes: [1, x] }\n  s:\n    uses: source\n    notes: [1]\n    with: { m: 1 }\n",
        );
        assert!(e.contains("invalid params for `typed`: invalid type: string \"x\", expected u32 (at `notes[1]`)\n  --> p.yaml:2:32"), "{e}");
        assert!(e.contains("stage kind `source` takes no `notes`\n  --> p.yaml:5:5"), "{e}");
        assert!(e.contains("`notes:` belongs to stages of kind typed"), "{e}");
        // An unknown param is placed at its key, with the closest name.
        assert!(e.contains("unknown field `m`, expected `n` (at `m`)\n  --> p.yaml:6:13"), "{e}");
        let e = problems("stages:\n  c: { uses: typed, with: { chatt: true } }\n");
        assert!(e.contains("p.yaml:2:29") && e.contains("did you mean `chat`?"), "{e}");
        assert!(e.contains("1 problem"), "{e}");
    }

    #[test]
    fn params_narrow_output_types() {
        // A narrower type goes where its parent is wanted, not the other way round.
        let ok = "stages:\n  c: { uses: typed, with: { chat: true } }\n  t: { uses: train, inputs: { data: c } }\n  u: { uses: chat-train, inputs: { data: c } }\n";
        assert!(load_str(Path::new("p.yaml"), ok.into(), &registry(), &[]).is_ok());
        let e = problems(
            "stages:\n  c: { uses: typed }\n  u: { uses: chat-train, inputs: { data: c } }\n",
        );
        assert!(
            e.contains("input `data` of `u` expects a chat, but `c` (typed) gives a text"),
            "{e}"
        );
        assert!(e.contains("p.yaml:3:42"), "{e}");
        // Invalid params: their own error only, no type error on top.
        let e = problems(
            "stages:\n  c: { uses: typed, with: { chat: 3 } }\n  u: { uses: chat-train, inputs: { data: c } }\n",
        );
        assert!(e.contains("invalid type") && !e.contains("expects a chat"), "{e}");
        assert!(
            TEXT.accepts(CHAT)
                && !CHAT.accepts(TEXT)
                && CHAT.is_a(TEXT)
                && CHAT.accepts(crate::stage::ANY)
        );
    }

    fn problems(src: &str) -> String {
        match load_str(Path::new("p.yaml"), src.to_string(), &registry(), &[]) {
            Ok(_) => panic!("expected problems in:\n{src}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn port_types_must_match() {
        let e = problems(
            "stages:\n  s: { uses: source }\n  t: { uses: train, inputs: { data: s } }\n  u:\n    uses: train\n    inputs: { data: t }\n",
        );
        assert!(
            e.contains("input `data` of `u` expects a text, but `t` (train) gives a model"),
            "{e}"
        );
        assert!(e.contains("p.yaml:6:21"), "{e}");
        assert!(e.contains("use `t.log`"), "{e}");
    }

    #[test]
    fn named_output_ports_and_lists_wire() {
        let p = load_str(
            Path::new("p.yaml"),
            "stages:\n  s: { uses: source }\n  t: { uses: train, inputs: { data: s } }\n  u: { uses: train, inputs: { data: t.log } }\n  c: { uses: compare, inputs: { models: [t, u] } }\n".into(),
            &registry(),
            &[],
        )
        .unwrap();
        assert_eq!(
            p.stages.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["s", "t", "u", "c"]
        );
        assert_eq!(p.stages[3].inputs["models"].len(), 2);
    }

    #[test]
    fn missing_required_input_and_list_into_single_port() {
        let e = problems(
            "stages:\n  s: { uses: source }\n  t: { uses: train }\n  u: { uses: train, inputs: { data: [s, s] } }\n",
        );
        assert!(e.contains("stage kind `train` needs input `data` (a text)"), "{e}");
        assert!(e.contains("input `data` takes one stage, not a list"), "{e}");
        assert!(e.contains("2 problems"), "{e}");
    }

    #[test]
    fn vars_keep_their_type_when_whole_and_splice_into_strings() {
        let p = load_str(
            Path::new("p.yaml"),
            "vars: { n: 7 }\nstages:\n  s: { uses: source, with: { n: \"${vars.n}\" } }\n".into(),
            &registry(),
            &[],
        )
        .unwrap();
        assert_eq!(p.stages[0].params.canonical["n"], 7);
        let p = load_str(
            Path::new("p.yaml"),
            "vars: { n: 7 }\nstages:\n  s: { uses: source, with: { n: \"${vars.n}\" } }\n".into(),
            &registry(),
            &["vars.n=9".into()],
        )
        .unwrap();
        assert_eq!(p.stages[0].params.canonical["n"], 9);
    }

    #[test]
    fn a_file_that_is_not_utf8_is_located_at_its_first_bad_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        let load_bytes = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            load(&path, &registry(), &[]).unwrap_err().to_string()
        };
        let e = load_bytes(b"stages:\n  s: { uses: so\xffurce }\n");
        assert!(e.contains("error: the file is not UTF-8 text (byte 0xff)\n  --> "), "{e}");
        assert!(e.contains("p.yaml:2:16\n"), "{e}");
        assert!(e.contains("2 |   s: { uses: so\u{fffd}urce }\n  |                ^"), "{e}");
        assert!(load_bytes(b"a: 1\r\n\xc3").contains("p.yaml:2:1\n"));
        assert!(load_bytes(b"\xed\xa0\x80").contains("p.yaml:1:1\n"));
    }

    #[test]
    fn overrides_create_only_param_leaves() {
        let ok = load_str(
            Path::new("p.yaml"),
            "stages:\n  s: { uses: source }\n".into(),
            &registry(),
            &["stages.s.with.n=3".into()],
        );
        assert_eq!(ok.unwrap().stages[0].params.canonical["n"], 3);
        let e = load_str(
            Path::new("p.yaml"),
            "vars: {a: 1}\nstages:\n  s: { uses: source }\n".into(),
            &registry(),
            &["vars.b=3".into()],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("there is no `b` in `vars`"), "{e}");
        assert!(e.contains("command line: -s vars.b=3"), "{e}");
    }

    #[test]
    fn resources_and_executor_block_load_and_fall_back_field_by_field() {
        let src = "executor: { kind: slurm, partition: debug, cpus: 2, memory: 4G, sbatch: [\"--qos=low\"] }\nstages:\n  s: { uses: source, resources: { cpus: 8, time: 2h } }\n  t: { uses: train, inputs: { data: s } }\n";
        let p = load_str(Path::new("p.yaml"), src.into(), &registry(), &[]).unwrap();
        assert_eq!(p.executor.kind.name, "slurm");
        let slurm = SlurmSettings::of(&p.executor.settings).unwrap();
        assert_eq!(slurm.partition.as_deref(), Some("debug"));
        assert_eq!(slurm.sbatch, ["--qos=low"]);
        assert_eq!(p.resources_of(0).describe(), "cpus=8 memory=4G time=2h");
        assert_eq!(p.resources_of(1).describe(), "cpus=2 memory=4G");
        let p = load_str(
            Path::new("p.yaml"),
            "stages:\n  s: { uses: source }\n".into(),
            &registry(),
            &[],
        )
        .unwrap();
        assert_eq!(p.executor, ExecutorSpec::default());
        assert_eq!(p.resources_of(0), Resources::default());
    }

    #[test]
    fn bad_resources_and_executor_blocks_are_located() {
        let e = problems(
            "executor: { kind: pbs, partitoin: x }\nstages:\n  s: { uses: source, resources: { cpus: 0, memory: lots, time: soon } }\n  t: { uses: source, resources: { cpu: 1 } }\n  u: { uses: source, resources: 3 }\n",
        );
        assert!(e.contains("unknown key `partitoin` in `executor`"), "{e}");
        assert!(e.contains("did you mean `partition`?"), "{e}");
        assert!(e.contains("`cpus` must be at least 1"), "{e}");
        assert!(e.contains("`memory: lots` is not a size"), "{e}");
        assert!(e.contains("p.yaml:3:52"), "{e}");
        assert!(e.contains("p.yaml:4:35"), "{e}");
        assert!(e.contains("did you mean `cpus`?"), "{e}");
        assert!(e.contains("`time: soon` is not a duration"), "{e}");
        assert!(e.contains("unknown field `cpu`"), "{e}");
        assert!(e.contains("expected a mapping (cpus, memory, gpus, time), found"), "{e}");
        let e = problems("executor: { kind: pbs }\nstages:\n  s: { uses: source }\n");
        assert!(e.contains("unknown variant `pbs`"), "{e}");
        assert!(e.contains("p.yaml:1:19"), "{e}");
    }
}
