//! `hone run --sweep KEY=V1,V2 [--sweep ...]`: the cross product of the values as variants of
//! one pipeline, merged into one stage graph. A stage that is the same in every respect in
//! several variants (kind, params, and the same stages upstream) is one stage of the graph:
//! it runs once, keeps its own id when every variant shares it, and feeds each variant. A
//! stage that differs runs as `id@K`, K the first variant it belongs to. The variants then run
//! side by side as the scheduler allows, and a failing variant stops only its own stages.

use std::collections::BTreeMap;

use hone_engine::spec::{InputRef, Pipeline, StageSpec};
use hone_engine::workspace::Workspace;

use crate::PipelineArgs;
use crate::exit::{EXIT_USAGE, Fatal};
use crate::pipeline::load;

/// One combination of swept values.
pub struct Variant {
    /// `KEY=VALUE` per `--sweep`, in order.
    pub overrides: Vec<String>,
    /// The pipeline's stage id → the id it runs as in the merged graph.
    pub ids: BTreeMap<String, String>,
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
    let mut loaded = Vec::with_capacity(combos.len());
    for combo in &combos {
        let a =
            PipelineArgs { set: args.set.iter().chain(combo).cloned().collect(), ..args.clone() };
        loaded.push(load(&a)?);
    }
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
    let mut index_of: BTreeMap<String, usize> = BTreeMap::new();
    let mut variants = Vec::with_capacity(n);
    let mut first: Option<(Pipeline, Workspace)> = None;
    for (k, ((p, ws), combo)) in loaded.into_iter().zip(&combos).enumerate() {
        // Where each of this variant's stages sits in the merged graph.
        let mut at = vec![usize::MAX; p.stages.len()];
        let mut new = Vec::new();
        for (i, sig) in sigs[k].iter().enumerate() {
            match index_of.get(sig) {
                Some(&m) => at[i] = m,
                None => {
                    at[i] = merged.len() + new.len();
                    index_of.insert(sig.clone(), at[i]);
                    new.push(i);
                }
            }
        }
        // The variant's stage ids → merged indices (named once every stage has its name).
        let ids = p.stages.iter().zip(&at).map(|(s, &m)| (s.id.clone(), m.to_string())).collect();
        variants.push(Variant { overrides: combo.clone(), ids });
        let mut stages: Vec<Option<StageSpec>> = Vec::new();
        let Pipeline { name, seed, file, stages: owned, executor } = p;
        stages.extend(owned.into_iter().map(Some));
        for i in new {
            let mut s = stages[i].take().expect("each stage is taken once");
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
        if first.is_none() {
            first = Some((Pipeline { name, seed, file, stages: Vec::new(), executor }, ws));
        }
    }
    let (mut pipeline, ws) = first.expect("at least one variant");
    pipeline.stages = merged;
    // The variants' ids, now that the merged stages have their final names.
    let sig_names: BTreeMap<usize, String> =
        pipeline.stages.iter().enumerate().map(|(i, s)| (i, s.id.clone())).collect();
    for v in &mut variants {
        for merged_id in v.ids.values_mut() {
            let i: usize = merged_id.parse().expect("an index");
            *merged_id = sig_names[&i].clone();
        }
    }
    Ok((Sweep { pipeline, variants }, ws))
}

/// Records each variant as a run of its own (id suffix `.K`) and prints how each ended.
#[allow(clippy::too_many_arguments)]
pub fn record_and_show(
    ws: &Workspace,
    p: &Pipeline,
    args: &PipelineArgs,
    variants: &[Variant],
    started_ms: u64,
    summary: &hone_engine::exec::RunSummary,
    outcome: &str,
    mlflow: Option<&str>,
) {
    let failed: Vec<&String> =
        summary.failed.iter().map(|f| &f.0).chain(&summary.skipped).collect();
    eprintln!("hone: {} variants", variants.len());
    for (k, v) in variants.iter().enumerate() {
        let bad = v.ids.values().any(|m| failed.contains(&m));
        let own = if bad {
            "failed"
        } else if outcome == "interrupted" {
            outcome
        } else {
            "ok"
        };
        let over: Vec<String> = args.set.iter().chain(&v.overrides).cloned().collect();
        crate::history::record_variant(
            ws,
            p,
            args,
            &over,
            &v.ids,
            &format!(".{}", k + 1),
            started_ms,
            summary,
            own,
            mlflow,
        );
        let stages: Vec<&str> =
            v.ids.values().filter(|m| m.contains('@')).map(String::as_str).collect();
        eprintln!(
            "  variant {} {own:<6} {}  ({})",
            k + 1,
            v.overrides.join(" "),
            stages.join(", ")
        );
    }
}
