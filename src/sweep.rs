//! `hone run --sweep KEY=V1,V2 [--sweep ...]`: the cross product of the values as variants of
//! one pipeline, merged into one stage graph. A stage that is the same in every respect in
//! several variants (kind, params, and the same stages upstream) is one stage of the graph:
//! it runs once, keeps its own id when every variant shares it, and feeds each variant. A
//! stage that differs runs as `id@K`, K the first variant it belongs to. The variants then run
//! side by side as the scheduler allows, and a failing variant stops only its own stages.

use std::collections::BTreeMap;

use hone_engine::spec::{InputRef, Pipeline, StageSpec};
use hone_engine::store::Outcome;
use hone_engine::workspace::Workspace;

use crate::PipelineArgs;
use crate::exit::{EXIT_USAGE, Fatal};
use crate::history::RunContext;
use crate::pipeline::load;

/// One combination of swept values.
pub struct Variant {
    /// `KEY=VALUE` per `--sweep`, in order.
    pub overrides: Vec<String>,
    /// The pipeline's stage id → the id it runs as in the merged graph.
    pub ids: BTreeMap<String, String>,
    /// The ids of the stages it does not share with every variant (`id@K`), sorted.
    pub own: Vec<String>,
}

/// The variants' merged graph.
pub struct Sweep {
    pub pipeline: Pipeline,
    pub variants: Vec<Variant>,
}

fn usage(message: String) -> Fatal {
    Fatal { message: format!("error: {message}"), code: EXIT_USAGE }
}

/// The cross product of `--sweep KEY=V1,V2,...` flags: each variant's `KEY=VALUE` overrides.
pub fn combinations(sweeps: &[String]) -> Result<Vec<Vec<String>>, Fatal> {
    let mut out = vec![Vec::new()];
    for s in sweeps {
        let (key, values) = s.split_once('=').ok_or_else(|| {
            usage(format!(
                "`--sweep {s}` has no `=`\n   = help: `--sweep stages.ppo.with.lr=1e-5,3e-5`"
            ))
        })?;
        let values: Vec<&str> = values.split(',').map(str::trim).collect();
        if key.trim().is_empty() || values.iter().any(|v| v.is_empty()) {
            return Err(usage(format!(
                "`--sweep {s}`: give a key and values separated by commas\n   = help: `--sweep stages.ppo.with.lr=1e-5,3e-5`"
            )));
        }
        if key.trim() == "seed" {
            return Err(usage(
                "`--sweep seed=…`: the seed is the pipeline's, one per run\n   = help: run the pipeline once per seed: `hone run -s seed=7 --workspace runs/seed7`".into(),
            ));
        }
        out = out
            .into_iter()
            .flat_map(|o| {
                values.iter().map(move |v| {
                    let mut o = o.clone();
                    o.push(format!("{}={v}", key.trim()));
                    o
                })
            })
            .collect();
    }
    Ok(out)
}

/// What makes a stage the same stage in two variants: its kind and version, its params, and
/// the same of every stage upstream (by port).
fn signatures(p: &Pipeline) -> Vec<String> {
    fn sig(p: &Pipeline, i: usize, memo: &mut Vec<Option<String>>) -> String {
        if let Some(s) = &memo[i] {
            return s.clone();
        }
        let s = &p.stages[i];
        let mut h = blake3::Hasher::new();
        h.update(s.kind.kind().as_bytes());
        h.update(&s.kind.version().to_le_bytes());
        h.update(s.params.canonical.to_string().as_bytes());
        for (port, refs) in &s.inputs {
            h.update(port.as_bytes());
            for r in refs {
                h.update(sig(p, r.stage, memo).as_bytes());
                h.update(r.port.as_bytes());
            }
        }
        let out = h.finalize().to_hex().to_string();
        memo[i] = Some(out.clone());
        out
    }
    let mut memo = vec![None; p.stages.len()];
    (0..p.stages.len()).map(|i| sig(p, i, &mut memo)).collect()
}

/// Loads the pipeline once per combination of `sweeps` (after `args.set`) and merges them.
pub fn load_sweep(args: &PipelineArgs, sweeps: &[String]) -> Result<(Sweep, Workspace), Fatal> {
    let combos = combinations(sweeps)?;
    let loaded = combos
        .iter()
        .map(|combo| {
            let set = args.set.iter().chain(combo).cloned().collect();
            load(&PipelineArgs { set, ..args.clone() })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let sigs: Vec<Vec<String>> = loaded.iter().map(|(p, _)| signatures(p)).collect();
    // How many variants have each signature.
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for v in &sigs {
        for s in v.iter().collect::<std::collections::BTreeSet<_>>() {
            *count.entry(s.as_str()).or_default() += 1;
        }
    }
    let n = combos.len();
    let mut merged: Vec<StageSpec> = Vec::new();
    let mut index_of: BTreeMap<&str, usize> = BTreeMap::new();
    // Per variant: its stage ids and where each sits in the merged graph.
    let mut placed: Vec<Vec<(String, usize)>> = Vec::with_capacity(n);
    let mut base = None;
    for (k, (p, ws)) in loaded.into_iter().enumerate() {
        // A new signature takes the next place, in stage order, so the stages pushed below
        // land exactly there.
        let at: Vec<usize> = sigs[k]
            .iter()
            .map(|sig| {
                let next = index_of.len();
                *index_of.entry(sig.as_str()).or_insert(next)
            })
            .collect();
        let Pipeline { name, seed, file, stages, executor } = p;
        placed.push(stages.iter().map(|s| s.id.clone()).zip(at.iter().copied()).collect());
        for (i, mut s) in stages.into_iter().enumerate() {
            if at[i] < merged.len() {
                continue; // an earlier variant's stage
            }
            if count[sigs[k][i].as_str()] < n {
                s.id = format!("{}@{}", s.id, k + 1);
            }
            for refs in s.inputs.values_mut() {
                for r in refs.iter_mut() {
                    *r = InputRef { stage: at[r.stage], port: r.port };
                }
            }
            merged.push(s);
        }
        base.get_or_insert((Pipeline { name, seed, file, stages: Vec::new(), executor }, ws));
    }
    let (mut pipeline, ws) = base.expect("at least one variant");
    let variants = combos
        .into_iter()
        .zip(placed)
        .map(|(overrides, ids)| {
            let name = |m: usize| merged[m].id.clone();
            let mut own: Vec<String> =
                ids.iter().filter(|(id, m)| name(*m) != *id).map(|(_, m)| name(*m)).collect();
            own.sort();
            Variant { overrides, ids: ids.into_iter().map(|(id, m)| (id, name(m))).collect(), own }
        })
        .collect();
    pipeline.stages = merged;
    Ok((Sweep { pipeline, variants }, ws))
}

/// Records each variant as a run of its own (id suffix `.K`) and prints how each ended.
pub fn record_and_show(cx: &RunContext, args: &PipelineArgs, variants: &[Variant], outcome: &str) {
    eprintln!("hone: {} variants", variants.len());
    for (k, v) in variants.iter().enumerate() {
        let failed = v.ids.values().any(|m| {
            cx.outcome_of(m).is_some_and(|o| matches!(o, Outcome::Failed | Outcome::Skipped))
        });
        let own = match () {
            _ if failed => "failed",
            _ if outcome == "interrupted" => outcome,
            _ => "ok",
        };
        let over: Vec<String> = args.set.iter().chain(&v.overrides).cloned().collect();
        cx.record(&over, v.ids.iter(), &format!(".{}", k + 1), own);
        eprintln!("  variant {} {own:<6} {}  ({})", k + 1, v.overrides.join(" "), v.own.join(", "));
    }
}
