//! Where stages run: [`Executor`]s take stage jobs ([`job::StageJob`]: serialisable kind,
//! canonical params, seed, inputs, log path) from the scheduler ([`crate::exec`]) and say how
//! each ended. The executors, one file each, are listed in [`KINDS`]:
//! - [`local`]: threads of this process, at most `jobs` at once; a stage starts when its
//!   inputs exist. What [`crate::exec::run`] uses.
//! - [`slurm`]: one `sbatch` job per stage, submitted before its inputs exist with a
//!   dependency on the jobs that make them ([`Executor::defers_inputs`]); each job runs
//!   `hone exec-stage JOB.json`, i.e. [`job::run_job`], which computes the key once its
//!   inputs exist (a reproduced input makes it a cache hit: early cutoff still works).
//!
//! An executor knows stage jobs, not pipelines: this folder stands below [`crate::spec`],
//! which reads the pipeline's `executor:` block with [`parse_block`] against the list.
//!
//! A new executor is one file here: its [`Executor`], and a `pub static KIND:`
//! [`ExecutorKind`] giving its name, its keys in the `executor:` block and their check (a
//! [`Settings`] type), and how to make one for a run; then one line in [`KINDS`]. From then
//! on `executor: { kind: NAME }` and `hone run --executor NAME` pick it, and the CLI runs
//! pipelines with it as with any other.

pub mod executor;
pub mod job;
pub mod local;
pub mod slurm;

use std::fmt;
use std::sync::LazyLock;

use serde::de::{self, Deserialize, Deserializer, EnumAccess, VariantAccess, Visitor};
use serde_json::{Map, Value};

pub use executor::{
    Cx, Executor, ExecutorKind, Launch, Person, Run, Settings, StillRunning, check_settings,
    no_settings,
};
pub use job::{JobId, Outcome};

use crate::resources::Resources;
use crate::stage::CheckError;
use crate::yaml::{DeError, Located, Node, PathSeg};

/// The executors, in the order help texts list them; the first runs when none is named.
pub static KINDS: &[&ExecutorKind] = &[&local::KIND, &slurm::KIND];

/// The executor called `name` (what `--executor` accepts).
pub fn named(name: &str) -> Result<&'static ExecutorKind, String> {
    KINDS.iter().copied().find(|k| k.name == name).ok_or_else(|| {
        let names: Vec<String> = KINDS.iter().map(|k| format!("`{}`", k.name)).collect();
        format!("unknown executor `{name}` (expected {})", or_list(&names))
    })
}

/// `a`, `a or b`, `a, b or c`.
pub fn or_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// The pipeline's `executor:` block: which executor runs the stages (`hone run --executor`
/// overrides it), the default resources of every stage, and the executors' own settings.
///
/// ```yaml
/// executor:
///   kind: slurm          # or local (the default); `hone run --executor` overrides it
///   partition: gpu       # the Slurm executor's own keys: `slurm::SlurmSettings`
///   account: ml-team
///   time: 4h             # the default limit of every stage (a stage's `resources:` win)
///   cpus: 8
///   memory: 32G
///   gres: gpu:1
///   sbatch: ["--qos=high", "--constraint=a100"]
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutorSpec {
    pub kind: &'static ExecutorKind,
    /// Default resources of every stage.
    pub resources: Resources,
    /// Every executor's keys that the block sets, as its [`Settings`] type writes them (all
    /// are read, whichever `kind` says: `--executor` may pick another).
    pub settings: Map<String, Value>,
}

impl Default for ExecutorSpec {
    fn default() -> Self {
        ExecutorSpec { kind: KINDS[0], resources: Resources::default(), settings: Map::new() }
    }
}

/// Every key of the `executor:` block: `kind`, each executor's, the resources'.
fn block_keys() -> Vec<&'static str> {
    let mut keys = vec!["kind"];
    for k in KINDS {
        for key in (k.keys)() {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    keys.extend(crate::introspect::field_names::<Resources>());
    keys
}

/// Read and check the pipeline's `executor:` block, problems located in `node`: unknown keys;
/// else the first value of a wrong type; else every problem of the values, the resources'
/// first.
pub(crate) fn parse_block(node: &Node) -> Result<ExecutorSpec, Vec<Located>> {
    let keys = block_keys();
    // The executors' settings and the resources sit side by side, so unknown keys are
    // checked here, against all of them.
    if let Some(entries) = node.as_map() {
        let unknown: Vec<_> = entries
            .iter()
            .filter_map(|(k, _)| {
                let name = k.as_str().unwrap_or("");
                (!keys.contains(&name)).then(|| {
                    let help = crate::suggest::did_you_mean(name, keys.iter().copied())
                        .unwrap_or_else(|| {
                            format!("the keys of `executor` are: {}", keys.join(", "))
                        });
                    (k.origin.clone(), format!("unknown key `{name}` in `executor`"), Some(help))
                })
            })
            .collect();
        if !unknown.is_empty() {
            return Err(unknown);
        }
    }
    let list = keys.join(", ");
    let block = crate::yaml::block(node, &list)?;
    let invalid = |e| crate::yaml::invalid(e, &block, &list);
    // `kind` and the executors' settings are read apart, but what is wrong with their types is
    // reported as one pass of serde would: the first entry of the block it rejects.
    let mut rejected: Option<DeError> = None;
    let mut reject = |e: DeError| {
        if rejected.as_ref().is_none_or(|r| entry_index(&block, &e) < entry_index(&block, r)) {
            rejected = Some(e);
        }
    };
    let kind = match crate::yaml::from_node::<Kind>(&block) {
        Ok(k) => k.kind.0,
        Err(e) => {
            reject(e);
            KINDS[0]
        }
    };
    let mut settings = Map::new();
    let mut problems = Vec::new();
    for k in KINDS {
        match (k.settings)(&block) {
            Ok(s) => settings.extend(s),
            Err(CheckError::Invalid(e)) => reject(e),
            Err(CheckError::Problems(ps)) => {
                problems.extend(ps.into_iter().map(|p| (p.path, p.message, p.help)))
            }
        }
    }
    if let Some(e) = rejected {
        return Err(invalid(e));
    }
    // The resources come last, as they do flattened beside the other keys.
    let resources = crate::yaml::from_node::<Defaults>(&block).map_err(invalid)?.resources;
    let mut all = crate::yaml::located(&block, resources.problems());
    all.extend(crate::yaml::located(&block, problems));
    if all.is_empty() { Ok(ExecutorSpec { kind, resources, settings }) } else { Err(all) }
}

/// The index in `block` of the entry an error is about (0 for the block itself).
fn entry_index(block: &Node, e: &DeError) -> usize {
    let Some(PathSeg::Key(key)) = e.path.first() else { return 0 };
    let entries = block.as_map().unwrap_or_default();
    entries.iter().position(|(k, _)| k.as_str() == Some(key.as_str())).unwrap_or(0)
}

/// The block's `kind`, the other keys ignored.
#[derive(serde::Deserialize)]
struct Kind {
    #[serde(default)]
    kind: Named,
}

/// The block's resources, flattened among the other keys.
#[derive(serde::Deserialize)]
struct Defaults {
    #[serde(flatten)]
    resources: Resources,
}

/// An executor named in `kind:`, read as serde reads an enum with a unit variant per executor
/// (`kind: slurm` or `kind: { slurm: }`), with serde's messages.
struct Named(&'static ExecutorKind);

impl Default for Named {
    fn default() -> Self {
        Named(KINDS[0])
    }
}

/// The executors' names, as serde's enum messages list them.
fn names() -> &'static [&'static str] {
    static NAMES: LazyLock<Vec<&'static str>> =
        LazyLock::new(|| KINDS.iter().map(|k| k.name).collect());
    &NAMES
}

impl<'de> Deserialize<'de> for Named {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Named, D::Error> {
        d.deserialize_enum("ExecutorKind", names(), NamedVisitor)
    }
}

struct NamedVisitor;

impl<'de> Visitor<'de> for NamedVisitor {
    type Value = Named;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("enum ExecutorKind")
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Named, A::Error> {
        let (kind, variant) = data.variant::<Variant>()?;
        variant.unit_variant()?;
        Ok(Named(kind.0))
    }
}

/// The variant of [`Named`]: an executor's name, or its index in [`KINDS`].
struct Variant(&'static ExecutorKind);

impl<'de> Deserialize<'de> for Variant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Variant, D::Error> {
        d.deserialize_identifier(VariantVisitor)
    }
}

struct VariantVisitor;

impl<'de> Visitor<'de> for VariantVisitor {
    type Value = Variant;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("variant identifier")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Variant, E> {
        KINDS
            .iter()
            .copied()
            .find(|k| k.name == v)
            .map(Variant)
            .ok_or_else(|| E::unknown_variant(v, names()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Variant, E> {
        let kind = usize::try_from(v).ok().and_then(|i| KINDS.get(i)).copied();
        kind.map(Variant).ok_or_else(|| {
            let expected = format!("variant index 0 <= i < {}", KINDS.len());
            E::invalid_value(de::Unexpected::Unsigned(v), &expected.as_str())
        })
    }
}
