//! Document filters and the chain `ingest` runs them in.
//!
//! A filter is a [`DocFilter`]: it sees a batch of documents and returns one [`Verdict`] per
//! document (keep, drop with a reason, or rewrite). Built-in filters live one per file in
//! this module; a pipeline names them in the stage's `filters:` list, which deserialises into
//! [`FilterSpec`]s:
//!
//! ```yaml
//! filters:
//!   - builtin: gopher-quality
//!     with: { min_doc_words: 20 }
//!   - builtin: dedup-exact
//!   - wasm: plugins/dist/min-words.wasm     # a WASM component (or a plugin crate directory)
//!     with: { min_words: 5 }                 # handed to the plugin as JSON, once
//!     limits: { fuel_per_batch: 100000000 }  # optional sandbox limits
//! ```
//!
//! [`Chain`] runs the filters in order over each batch and counts, per filter, what it kept,
//! dropped (by reason) and rewrote ([`FilterStats`]).
//!
//! To add a built-in: write `<name>.rs` with a `Params` type implementing [`BuiltinParams`]
//! and add one line to the `builtin_filters!` list below. WASM plugins ([`wasm`]) are the
//! other [`FilterSpec`] variant.

pub mod c4;
pub mod dedup_exact;
pub mod dedup_minhash;
pub mod gopher_quality;
pub mod gopher_repetition;
pub mod length;
pub mod regex;
pub mod text;
pub mod wasm;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use hone_engine::digest::Digest;
use hone_engine::stage::{DepCx, StageError};
use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a filter decides for one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Drop the document; the reason is a short category (it is counted, so keep it free of
    /// per-document details).
    Drop(String),
    /// Keep the document with this text instead.
    Rewrite(String),
}

/// Why a filter could not judge a batch.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// Something about one document (its index in the batch given to `filter`).
    #[error("{message}")]
    Document { doc: usize, message: String },
    #[error("{0}")]
    Failed(String),
}

/// A document filter. It sees documents in batches, in corpus order, and may keep state
/// across batches (deduplication does).
pub trait DocFilter: Send {
    /// The name used in metrics and messages.
    fn name(&self) -> &str;
    /// One verdict per document, in order.
    fn filter(&mut self, docs: &[&str]) -> Result<Vec<Verdict>, FilterError>;
}

/// A problem with one field of a filter's params: `(field, message)`.
pub type ParamIssue = (&'static str, String);

/// The typed params of a built-in filter (`with:`). Implementors derive `Deserialize` with
/// `deny_unknown_fields` and give every field a default (except ones a user must choose).
pub trait BuiltinParams: Serialize + DeserializeOwned + Clone + fmt::Debug + Send + Sync {
    /// Checks beyond deserialisation (ranges, combinations).
    fn problems(&self) -> Vec<ParamIssue> {
        Vec::new()
    }
    fn build(&self) -> Box<dyn DocFilter>;
}

/// Lists every built-in filter once: its name in YAML, its variant and its module.
macro_rules! builtin_filters {
    ($($name:literal => $variant:ident($module:ident)),* $(,)?) => {
        /// A built-in filter with its typed params.
        #[derive(Debug, Clone)]
        pub enum Builtin {
            $($variant($module::Params)),*
        }

        /// The names `builtin:` accepts.
        pub const BUILTIN_NAMES: &[&str] = &[$($name),*];

        impl Builtin {
            pub fn name(&self) -> &'static str {
                match self {
                    $(Builtin::$variant(_) => $name),*
                }
            }

            /// The params of the filter `name`: from `with:` (`None` when absent or null).
            fn from_with<'de, D: Deserializer<'de>>(name: &str, with: D) -> Result<Builtin, D::Error> {
                match name {
                    $($name => Ok(Builtin::$variant(params_or_defaults(with)?)),)*
                    other => Err(de::Error::custom(unknown_builtin(other))),
                }
            }

            fn params(&self) -> &dyn ErasedParams {
                match self {
                    $(Builtin::$variant(p) => p),*
                }
            }
        }
    };
}

builtin_filters! {
    "gopher-quality" => GopherQuality(gopher_quality),
    "gopher-repetition" => GopherRepetition(gopher_repetition),
    "c4" => C4(c4),
    "length" => Length(length),
    "regex" => Regex(regex),
    "dedup-exact" => DedupExact(dedup_exact),
    "dedup-minhash" => DedupMinhash(dedup_minhash),
}

/// [`BuiltinParams`] without its serde supertraits, so a [`Builtin`] can hand out `&dyn`.
trait ErasedParams {
    fn problems(&self) -> Vec<ParamIssue>;
    fn build(&self) -> Box<dyn DocFilter>;
    fn to_json(&self) -> serde_json::Value;
}

impl<P: BuiltinParams> ErasedParams for P {
    fn problems(&self) -> Vec<ParamIssue> {
        BuiltinParams::problems(self)
    }
    fn build(&self) -> Box<dyn DocFilter> {
        BuiltinParams::build(self)
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("filter params serialise to JSON")
    }
}

/// `with:` deserialised, or the defaults when it is absent or null.
fn params_or_defaults<'de, P: BuiltinParams, D: Deserializer<'de>>(with: D) -> Result<P, D::Error> {
    match Option::<P>::deserialize(with)? {
        Some(p) => Ok(p),
        None => defaults().map_err(de::Error::custom),
    }
}

fn defaults<P: DeserializeOwned>() -> Result<P, String> {
    serde_json::from_value(serde_json::Value::Object(Default::default())).map_err(|e| e.to_string())
}

fn unknown_builtin(name: &str) -> String {
    let hint = hone_engine::suggest::did_you_mean(name, BUILTIN_NAMES.iter().copied())
        .map(|h| format!(" ({h})"))
        .unwrap_or_default();
    format!("unknown built-in filter `{name}`{hint}; the built-ins are {}", quoted(BUILTIN_NAMES))
}

fn quoted(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// One item of a stage's `filters:` list.
#[derive(Debug, Clone)]
pub enum FilterSpec {
    /// `{ builtin: NAME, with: {...} }`
    Builtin(Builtin),
    /// `{ wasm: PATH, with: {...}, limits: {...} }`
    Wasm(wasm::WasmSpec),
}

impl FilterSpec {
    /// The filter's name, as metrics and messages show it.
    pub fn name(&self) -> String {
        match self {
            FilterSpec::Builtin(b) => b.name().to_string(),
            FilterSpec::Wasm(w) => w.name(),
        }
    }

    /// Problems with the params, as (path inside the list item, message).
    pub fn problems(&self) -> Vec<(Vec<&'static str>, String)> {
        match self {
            FilterSpec::Builtin(b) => b
                .params()
                .problems()
                .into_iter()
                .map(|(field, m)| (vec!["with", field], m))
                .collect(),
            FilterSpec::Wasm(w) => w.problems(),
        }
    }

    /// What the filter reads from outside the store (it enters the stage key).
    pub fn external_deps(&self, cx: &DepCx) -> Result<Vec<(String, Digest)>, StageError> {
        match self {
            // Built-ins are code: the ingest kind's VERSION covers them.
            FilterSpec::Builtin(_) => Ok(Vec::new()),
            FilterSpec::Wasm(w) => w.external_deps(cx),
        }
    }

    /// A fresh filter (with empty state) ready to run; `workspace` resolves relative paths.
    pub fn build(&self, workspace: &Path) -> Result<Box<dyn DocFilter>, String> {
        match self {
            FilterSpec::Builtin(b) => Ok(b.params().build()),
            FilterSpec::Wasm(w) => w.build(workspace),
        }
    }
}

impl Serialize for FilterSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let FilterSpec::Wasm(w) = self {
            return w.serialize(s);
        }
        let mut m = s.serialize_map(Some(2))?;
        match self {
            FilterSpec::Builtin(b) => {
                m.serialize_entry("builtin", b.name())?;
                m.serialize_entry("with", &b.params().to_json())?;
            }
            FilterSpec::Wasm(_) => unreachable!("serialised above"),
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for FilterSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(SpecVisitor)
    }
}

const SPEC_KEYS: &[&str] = &["builtin", "wasm", "with", "limits"];

struct SpecVisitor;

impl<'de> Visitor<'de> for SpecVisitor {
    type Value = FilterSpec;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a filter as a mapping `{ builtin: NAME, with: {...} }` or `{ wasm: PATH, with: {...} }`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FilterSpec, A::Error> {
        let mut name: Option<&'static str> = None;
        let mut built: Option<Builtin> = None;
        // `with:` written before `builtin:` cannot be typed until the name is known.
        let mut early_with: Option<serde_json::Value> = None;
        let mut wasm: Option<std::path::PathBuf> = None;
        let mut limits: Option<hone_plugin_host::Limits> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "wasm" if wasm.is_none() && name.is_none() => wasm = Some(map.next_value()?),
                "limits" if limits.is_none() => limits = Some(map.next_value()?),
                "wasm" | "limits" => {
                    return Err(de::Error::custom(format!(
                        "`{key}` given twice, or `wasm` with `builtin`"
                    )));
                }
                "builtin" if wasm.is_some() => {
                    return Err(de::Error::custom(
                        "a filter is either `builtin:` or `wasm:`, not both",
                    ));
                }
                "builtin" => {
                    if name.is_some() {
                        return Err(de::Error::duplicate_field("builtin"));
                    }
                    name = Some(map.next_value_seed(BuiltinName)?);
                }
                "with" => {
                    if built.is_some() || early_with.is_some() {
                        return Err(de::Error::duplicate_field("with"));
                    }
                    match name {
                        // Deserialising in place keeps the path (`with.min_words`) in errors.
                        Some(n) => built = Some(map.next_value_seed(WithSeed(n))?),
                        None => early_with = Some(map.next_value()?),
                    }
                }
                other => return Err(de::Error::unknown_field(other, SPEC_KEYS)),
            }
        }
        if let Some(path) = wasm {
            let config = early_with.unwrap_or(serde_json::Value::Object(Default::default()));
            return Ok(FilterSpec::Wasm(wasm::WasmSpec {
                path,
                config,
                limits: limits.unwrap_or_default(),
            }));
        }
        if limits.is_some() {
            return Err(de::Error::custom("`limits` applies to `wasm:` filters only"));
        }
        let Some(name) = name else {
            return Err(de::Error::custom(format!(
                "a filter needs `builtin: NAME` or `wasm: PATH`; the built-ins are {}",
                quoted(BUILTIN_NAMES)
            )));
        };
        let b = match (built, early_with) {
            (Some(b), _) => b,
            (None, Some(with)) => Builtin::from_with(name, with)
                .map_err(|e| de::Error::custom(format!("in `with`: {e}")))?,
            (None, None) => {
                Builtin::from_with(name, serde_json::Value::Null).map_err(de::Error::custom)?
            }
        };
        Ok(FilterSpec::Builtin(b))
    }
}

/// Reads the `builtin:` name, rejecting unknown ones where they are written.
struct BuiltinName;

impl<'de> DeserializeSeed<'de> for BuiltinName {
    type Value = &'static str;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<&'static str, D::Error> {
        let s = String::deserialize(d)?;
        BUILTIN_NAMES
            .iter()
            .copied()
            .find(|n| *n == s)
            .ok_or_else(|| de::Error::custom(unknown_builtin(&s)))
    }
}

struct WithSeed(&'static str);

impl<'de> DeserializeSeed<'de> for WithSeed {
    type Value = Builtin;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Builtin, D::Error> {
        Builtin::from_with(self.0, d)
    }
}

/// What one filter of a chain did (in an `ingest` artifact's `meta.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FilterStats {
    /// The filter's name; `name#2` for the second use of the same name in a chain.
    pub filter: String,
    pub kept: u64,
    pub rewritten: u64,
    pub dropped: u64,
    /// Drop reason → count.
    pub reasons: BTreeMap<String, u64>,
}

impl FilterStats {
    fn drop(&mut self, reason: &str) {
        self.dropped += 1;
        *self.reasons.entry(reason.to_string()).or_default() += 1;
    }
}

/// The fate of one document after the whole chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Keep,
    Rewrite(String),
    Drop,
}

/// A filter that failed, and on which document of the batch given to [`Chain::apply`].
#[derive(Debug, thiserror::Error)]
#[error("filter `{filter}` failed: {message}")]
pub struct ChainError {
    pub filter: String,
    pub doc: Option<usize>,
    pub message: String,
}

/// Drop reason for a rewrite of a record whose text the filter saw as one joined document.
pub const CANNOT_REWRITE: &str = "rewrite of a multi-field record";
/// Drop reason for a rewrite that left nothing.
pub const EMPTY_AFTER_REWRITE: &str = "empty after rewrite";

/// Filters applied in order.
pub struct Chain {
    filters: Vec<Box<dyn DocFilter>>,
    stats: Vec<FilterStats>,
}

impl Chain {
    pub fn new(specs: &[FilterSpec], workspace: &Path) -> Result<Chain, String> {
        let mut filters = Vec::new();
        let mut stats: Vec<FilterStats> = Vec::new();
        for spec in specs {
            let f = spec.build(workspace).map_err(|e| format!("filter `{}`: {e}", spec.name()))?;
            let uses = stats
                .iter()
                .filter(|s| s.filter == f.name() || s.filter.starts_with(&format!("{}#", f.name())))
                .count();
            let label =
                if uses == 0 { f.name().to_string() } else { format!("{}#{}", f.name(), uses + 1) };
            stats.push(FilterStats { filter: label, ..Default::default() });
            filters.push(f);
        }
        Ok(Chain { filters, stats })
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    pub fn stats(&self) -> &[FilterStats] {
        &self.stats
    }

    /// Runs every filter over the documents still alive. `rewritable[i]` says whether a
    /// rewrite of document `i` can be applied; one that cannot drops the document, counted
    /// under [`CANNOT_REWRITE`], rather than letting text the filter wanted changed through.
    pub fn apply(
        &mut self,
        docs: &[&str],
        rewritable: &[bool],
    ) -> Result<Vec<Outcome>, ChainError> {
        debug_assert_eq!(docs.len(), rewritable.len());
        let mut rewritten: Vec<Option<String>> = vec![None; docs.len()];
        let mut alive = vec![true; docs.len()];
        for (f, stats) in self.filters.iter_mut().zip(&mut self.stats) {
            let live: Vec<usize> = (0..docs.len()).filter(|&i| alive[i]).collect();
            if live.is_empty() {
                break;
            }
            let batch: Vec<&str> =
                live.iter().map(|&i| rewritten[i].as_deref().unwrap_or(docs[i])).collect();
            let verdicts = f.filter(&batch).map_err(|e| match e {
                FilterError::Document { doc, message } => ChainError {
                    filter: stats.filter.clone(),
                    doc: live.get(doc).copied(),
                    message,
                },
                FilterError::Failed(message) => {
                    ChainError { filter: stats.filter.clone(), doc: None, message }
                }
            })?;
            if verdicts.len() != batch.len() {
                return Err(ChainError {
                    filter: stats.filter.clone(),
                    doc: None,
                    message: format!(
                        "it returned {} verdicts for {} documents",
                        verdicts.len(),
                        batch.len()
                    ),
                });
            }
            for (&i, v) in live.iter().zip(verdicts) {
                match v {
                    Verdict::Keep => stats.kept += 1,
                    Verdict::Drop(reason) => {
                        alive[i] = false;
                        stats.drop(&reason);
                    }
                    Verdict::Rewrite(_) if !rewritable[i] => {
                        alive[i] = false;
                        stats.drop(CANNOT_REWRITE);
                    }
                    Verdict::Rewrite(t) if t.trim().is_empty() => {
                        alive[i] = false;
                        stats.drop(EMPTY_AFTER_REWRITE);
                    }
                    Verdict::Rewrite(t) => {
                        stats.rewritten += 1;
                        rewritten[i] = Some(t);
                    }
                }
            }
        }
        Ok(alive
            .into_iter()
            .zip(rewritten)
            .map(|(alive, text)| match (alive, text) {
                (false, _) => Outcome::Drop,
                (true, None) => Outcome::Keep,
                (true, Some(t)) => Outcome::Rewrite(t),
            })
            .collect())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Parses a `filters:` list the way the engine hands it over (YAML → serde_yaml::Value).
    pub(crate) fn specs(yaml: &str) -> Result<Vec<FilterSpec>, String> {
        let v: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        serde_path_to_error::deserialize(v).map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    /// Runs one built-in filter over documents, one at a time.
    pub(crate) fn verdicts(yaml: &str, docs: &[&str]) -> Vec<Verdict> {
        let spec = specs(yaml).unwrap().remove(0);
        let mut f = spec.build(Path::new(".")).unwrap();
        docs.iter().map(|d| f.filter(&[d]).unwrap().remove(0)).collect()
    }

    #[test]
    fn specs_parse_with_defaults_and_overrides() {
        let s =
            specs("- builtin: gopher-quality\n- builtin: length\n  with: { min_words: 3 }\n- { with: { max_chars: 9 }, builtin: length }")
                .unwrap();
        assert_eq!(s.len(), 3);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json[0]["builtin"], "gopher-quality");
        assert_eq!(json[0]["with"]["min_doc_words"], 50);
        assert_eq!(json[1]["with"]["min_words"], 3);
        assert_eq!(json[2]["with"]["max_chars"], 9);
    }

    #[test]
    fn spec_errors_say_where() {
        let e = specs("- builtin: gopher-qualty").unwrap_err();
        assert!(e.contains("[0].builtin") && e.contains("did you mean `gopher-quality`"), "{e}");
        let e = specs("- builtin: length\n  with: { min_wrds: 3 }").unwrap_err();
        assert!(e.contains("[0].with") && e.contains("unknown field `min_wrds`"), "{e}");
        let e = specs("- builtin: length\n  wiht: {}").unwrap_err();
        assert!(e.contains("unknown field `wiht`") && e.contains("`with`"), "{e}");
        let e = specs("- with: {}").unwrap_err();
        assert!(e.contains("needs `builtin: NAME`"), "{e}");
        let e = specs("- builtin: regex").unwrap_err();
        assert!(e.contains("missing field `pattern`"), "{e}");
        let e = specs("- builtin: regex\n  with: { pattern: '(' }").unwrap_err();
        assert!(e.contains("[0].with.pattern"), "{e}");
    }

    #[test]
    fn spec_round_trips_through_its_canonical_json() {
        let s = specs("- builtin: dedup-minhash\n  with: { num_buckets: 4 }").unwrap();
        let json = serde_json::to_value(&s).unwrap();
        let again: Vec<FilterSpec> = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&again).unwrap(), json);
    }

    /// A filter that drops documents containing "x" and upper-cases the rest.
    struct Shout;
    impl DocFilter for Shout {
        fn name(&self) -> &str {
            "shout"
        }
        fn filter(&mut self, docs: &[&str]) -> Result<Vec<Verdict>, FilterError> {
            Ok(docs
                .iter()
                .map(|d| {
                    if d.contains('x') {
                        Verdict::Drop("has x".into())
                    } else if d.is_empty() {
                        Verdict::Keep
                    } else {
                        Verdict::Rewrite(d.to_uppercase())
                    }
                })
                .collect())
        }
    }

    struct Broken;
    impl DocFilter for Broken {
        fn name(&self) -> &str {
            "broken"
        }
        fn filter(&mut self, docs: &[&str]) -> Result<Vec<Verdict>, FilterError> {
            match docs.iter().position(|d| d.contains('!')) {
                Some(doc) => Err(FilterError::Document { doc, message: "cannot judge `!`".into() }),
                None => Ok(vec![Verdict::Keep]),
            }
        }
    }

    fn chain(filters: Vec<Box<dyn DocFilter>>) -> Chain {
        let stats = filters
            .iter()
            .map(|f| FilterStats { filter: f.name().into(), ..Default::default() })
            .collect();
        Chain { filters, stats }
    }

    #[test]
    fn chain_applies_verdicts_and_counts() {
        let mut c = chain(vec![Box::new(Shout)]);
        let out = c.apply(&["ab", "xy", "cd", "ef"], &[true, true, false, true]).unwrap();
        assert_eq!(
            out,
            vec![
                Outcome::Rewrite("AB".into()),
                Outcome::Drop,
                Outcome::Drop,
                Outcome::Rewrite("EF".into())
            ]
        );
        let s = &c.stats()[0];
        assert_eq!((s.kept, s.rewritten, s.dropped), (0, 2, 2));
        assert_eq!(s.reasons.get("has x"), Some(&1));
        assert_eq!(s.reasons.get(CANNOT_REWRITE), Some(&1));
    }

    #[test]
    fn chain_reports_the_failing_document_and_checks_counts() {
        let mut c = chain(vec![Box::new(Shout), Box::new(Broken)]);
        // "x" is dropped first, so "!" is document 1 for `broken` but document 2 of the batch.
        let e = c.apply(&["a", "x", "!"], &[true; 3]).unwrap_err();
        assert_eq!((e.filter.as_str(), e.doc), ("broken", Some(2)));
        let mut c = chain(vec![Box::new(Broken)]);
        let e = c.apply(&["a", "b"], &[true; 2]).unwrap_err();
        assert!(e.message.contains("1 verdicts for 2 documents"), "{e}");
    }

    #[test]
    fn repeated_filters_get_distinct_labels() {
        let s = specs("- builtin: length\n  with: { min_words: 1 }\n- builtin: length\n  with: { max_words: 9 }\n- builtin: c4").unwrap();
        let c = Chain::new(&s, Path::new(".")).unwrap();
        let labels: Vec<&str> = c.stats().iter().map(|s| s.filter.as_str()).collect();
        assert_eq!(labels, vec!["length", "length#2", "c4"]);
    }

    #[test]
    fn verdicts_do_not_depend_on_the_thread_count() {
        let yaml = "- builtin: gopher-quality\n  with: { min_doc_words: 5 }\n- builtin: gopher-repetition\n  with: { top_n_grams: [] }\n- builtin: c4\n  with: { min_num_sentences: 1 }\n- builtin: dedup-exact\n- builtin: dedup-minhash";
        let docs: Vec<String> = (0..300)
            .map(|i| match i % 4 {
                0 => format!(
                    "The cat number {} sat with the dog and that was fine.\nNo end here",
                    i / 8
                ),
                1 => "The dog and the cat sat with me.\n".repeat(i % 7 + 2),
                2 => format!("Of the apples {i} to be fair half were red and some were green."),
                _ => format!("Short {i}."),
            })
            .collect();
        let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut chain = Chain::new(&specs(yaml).unwrap(), Path::new(".")).unwrap();
            let out = pool.install(|| {
                refs.chunks(64)
                    .flat_map(|b| chain.apply(b, &vec![true; b.len()]).unwrap())
                    .collect::<Vec<_>>()
            });
            (out, chain.stats().to_vec())
        };
        let (one, stats) = run(1);
        assert_eq!(run(4), (one.clone(), stats.clone()));
        // Every kind of outcome and every filter took part.
        assert!(one.contains(&Outcome::Drop) && one.contains(&Outcome::Keep), "{stats:?}");
        assert!(one.iter().any(|o| matches!(o, Outcome::Rewrite(_))), "{stats:?}");
        assert!(stats.iter().all(|s| s.dropped > 0 || s.rewritten > 0), "{stats:?}");
    }
}
