//! Deciding what runs, and saying why.
//!
//! A stage's key is computed from its manifest (kind, version, params, seed, input artifact
//! digests, external dependency digests). [`plan`] walks the stages in order: a stage is
//! cached when its key is in the store; otherwise the reasons come from diffing its manifest
//! against the one it last ran with. A stage downstream of one that will run cannot know its
//! key yet: it will run unless the upstream stage reproduces its output (early cutoff).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Serialize;

use crate::digest::{ArtifactDigest, StageKey};
use crate::spec::Pipeline;
use crate::stage::{DepCx, StageError};
use crate::store::KeyManifest;
use crate::workspace::Workspace;

/// Which stages a command applies to.
#[derive(Debug, Clone, Default)]
pub enum Selection {
    #[default]
    All,
    /// Exactly these stages; their inputs must already be in the store.
    Only(Vec<String>),
    /// This stage and everything it depends on.
    Until(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("unknown stage `{id}` in `{flag}`{}", hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    UnknownStage { id: String, flag: &'static str, hint: Option<String> },
}

impl Selection {
    /// The selected stage indices.
    pub fn resolve(&self, p: &Pipeline, force: &[String]) -> Result<Vec<bool>, SelectError> {
        let check = |id: &String, flag: &'static str| {
            p.index_of(id).ok_or_else(|| SelectError::UnknownStage {
                id: id.clone(),
                flag,
                hint: crate::suggest::did_you_mean(id, p.stages.iter().map(|s| s.id.as_str())),
            })
        };
        for f in force {
            check(f, "--force")?;
        }
        let n = p.stages.len();
        Ok(match self {
            Selection::All => vec![true; n],
            Selection::Only(ids) => {
                let mut sel = vec![false; n];
                for id in ids {
                    sel[check(id, "--only")?] = true;
                }
                sel
            }
            Selection::Until(id) => {
                let mut sel = vec![false; n];
                let mut stack = vec![check(id, "--until")?];
                while let Some(i) = stack.pop() {
                    if !sel[i] {
                        sel[i] = true;
                        stack.extend(p.deps_of(i));
                    }
                }
                sel
            }
        })
    }
}

/// Build a stage's manifest from the artifacts of its inputs (`artifact` of each input stage).
pub fn manifest(
    ws: &Workspace,
    p: &Pipeline,
    i: usize,
    artifact: impl Fn(usize) -> Option<ArtifactDigest>,
) -> Result<KeyManifest, StageError> {
    let s = &p.stages[i];
    let hasher = |path: &std::path::Path| ws.hash_path(path);
    let cx = DepCx { workspace: ws.base(), hasher: &hasher };
    let mut deps: BTreeMap<String, crate::digest::Digest> =
        s.kind.external_deps(&s.params, &cx)?.into_iter().collect();
    for (name, value) in s.kind.settings() {
        deps.insert(format!("setting {name}"), crate::digest::Digest::of(value.as_bytes()));
    }
    let inputs = s
        .inputs
        .iter()
        .map(|(port, refs)| {
            (
                port.clone(),
                refs.iter().map(|r| artifact(r.stage).expect("inputs resolved first")).collect(),
            )
        })
        .collect();
    Ok(KeyManifest {
        kind: s.kind.kind().to_string(),
        version: s.kind.version(),
        params: s.params.canonical.clone(),
        seed: p.seed,
        inputs,
        deps,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Cached,
    Run,
    /// Not selected (`--only`/`--until`) and not cached.
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct StagePlan {
    pub id: String,
    pub kind: String,
    pub action: Action,
    pub reasons: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<StageKey>,
}

/// What `hone run` would do now, without running anything.
pub fn plan(
    ws: &Workspace,
    p: &Pipeline,
    sel: &Selection,
    force: &[String],
) -> Result<Vec<StagePlan>, crate::EngineError> {
    let selected = sel.resolve(p, force)?;
    let force: HashSet<&str> = force.iter().map(String::as_str).collect();
    let mut artifacts: Vec<Option<ArtifactDigest>> = vec![None; p.stages.len()];
    let mut out: Vec<StagePlan> = Vec::with_capacity(p.stages.len());
    for (i, s) in p.stages.iter().enumerate() {
        let mut reasons = Vec::new();
        let pending: BTreeSet<&str> = p
            .deps_of(i)
            .filter(|&d| artifacts[d].is_none())
            .map(|d| p.stages[d].id.as_str())
            .collect();
        let mut key = None;
        let action = if !pending.is_empty() {
            for (port, refs) in &s.inputs {
                for r in refs.iter().filter(|r| artifacts[r.stage].is_none()) {
                    let up = &p.stages[r.stage].id;
                    reasons.push(match out[r.stage].action {
                        Action::Skip => format!("input `{port}` needs `{up}`, which is not selected and not cached"),
                        _ => format!("input `{port}` will be rebuilt by `{up}` (stays cached if `{up}` reproduces its output)"),
                    });
                }
            }
            if selected[i] { Action::Run } else { Action::Skip }
        } else {
            let m = match manifest(ws, p, i, |u| artifacts[u]) {
                Ok(m) => m,
                Err(e) => {
                    return Err(crate::EngineError::Deps {
                        stage: s.id.clone(),
                        message: e.to_string(),
                    });
                }
            };
            let k = m.key();
            key = Some(k);
            let hit = ws.store.lookup(&k)?;
            if force.contains(s.id.as_str()) && selected[i] {
                reasons.push("forced (--force)".into());
                Action::Run
            } else if let Some(rec) = hit {
                artifacts[i] = Some(rec.artifact);
                Action::Cached
            } else {
                reasons = why_changed(ws, &p.name, &s.id, &m);
                if selected[i] { Action::Run } else { Action::Skip }
            }
        };
        out.push(StagePlan {
            id: s.id.clone(),
            kind: s.kind.kind().to_string(),
            action,
            reasons,
            key,
        });
    }
    Ok(out)
}

/// Why a stage's manifest no longer matches a cached entry: a diff against its last run.
pub fn why_changed(ws: &Workspace, pipeline: &str, stage: &str, now: &KeyManifest) -> Vec<String> {
    let Some(state) = ws.store.state(pipeline, stage) else { return vec!["never ran".into()] };
    let Some(before) = ws.store.read_record(&state.key).map(|r| r.manifest) else {
        return vec!["its last result is no longer in the store".into()];
    };
    let mut r = Vec::new();
    if before.kind != now.kind {
        r.push(format!("stage kind changed from `{}` to `{}`", before.kind, now.kind));
    } else if before.version != now.version {
        r.push(format!(
            "`{}` changed from version {} to {}",
            now.kind, before.version, now.version
        ));
    }
    diff_json("", &before.params, &now.params, &mut r);
    if before.seed != now.seed {
        r.push(format!("seed changed from {} to {}", before.seed, now.seed));
    }
    let ports: BTreeSet<&String> = before.inputs.keys().chain(now.inputs.keys()).collect();
    for port in ports {
        match (before.inputs.get(port), now.inputs.get(port)) {
            (Some(a), Some(b)) if a != b => {
                r.push(format!("input `{port}` changed ({} → {})", shorts(a), shorts(b)))
            }
            (None, Some(_)) => r.push(format!("input `{port}` was added")),
            (Some(_), None) => r.push(format!("input `{port}` was removed")),
            _ => {}
        }
    }
    diff_deps(&before.deps, &now.deps, &mut r);
    if r.is_empty() {
        r.push("its last result is no longer in the store".into());
    }
    r
}

fn shorts(v: &[ArtifactDigest]) -> String {
    v.iter().map(|d| d.short()).collect::<Vec<_>>().join(", ")
}

fn diff_deps(
    a: &BTreeMap<String, crate::digest::Digest>,
    b: &BTreeMap<String, crate::digest::Digest>,
    r: &mut Vec<String>,
) {
    let labels: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for l in labels {
        match (a.get(l), b.get(l)) {
            (Some(x), Some(y)) if x != y => r.push(format!("{l} changed")),
            (None, Some(_)) => r.push(format!("{l} was added")),
            (Some(_), None) => r.push(format!("{l} was removed")),
            _ => {}
        }
    }
}

fn diff_json(path: &str, a: &serde_json::Value, b: &serde_json::Value, r: &mut Vec<String>) {
    use serde_json::Value as V;
    match (a, b) {
        (V::Object(x), V::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => diff_json(&p, u, v, r),
                    (None, Some(v)) => r.push(format!("param `{p}` was added ({})", brief(v))),
                    (Some(u), None) => {
                        r.push(format!("param `{p}` was removed (was {})", brief(u)))
                    }
                    (None, None) => {}
                }
            }
        }
        _ if a != b => r.push(format!("param `{path}` changed from {} to {}", brief(a), brief(b))),
        _ => {}
    }
}

fn brief(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(57).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::{Inputs, Port, Registry, RunCx, Stage, StageError};
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};

    static SET: AtomicBool = AtomicBool::new(false);

    /// A kind whose output depends on a setting outside the pipeline.
    struct Tuned;
    impl Stage for Tuned {
        type Params = serde_json::Value;
        const KIND: &'static str = "tuned";
        const VERSION: u32 = 1;
        const ABOUT: &'static str = "";
        const INPUTS: Inputs = Inputs::Fixed(&[]);
        const OUTPUTS: &'static [Port] = &[];
        fn settings() -> Vec<(&'static str, String)> {
            if SET.load(Ordering::Relaxed) { vec![("TUNED", "1".into())] } else { Vec::new() }
        }
        fn run(_: &serde_json::Value, _: &RunCx) -> Result<(), StageError> {
            Ok(())
        }
    }

    #[test]
    fn settings_enter_the_key_only_when_set() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let p = crate::spec::load_str(
            Path::new("p.yaml"),
            "stages:\n  t: { uses: tuned }\n".into(),
            &Registry::new(vec![&Tuned]),
            &[],
        )
        .unwrap();
        let plain = manifest(&ws, &p, 0, |_| None).unwrap();
        assert!(plain.deps.is_empty(), "nothing set: the key is as it always was");
        SET.store(true, Ordering::Relaxed);
        let tuned = manifest(&ws, &p, 0, |_| None).unwrap();
        SET.store(false, Ordering::Relaxed);
        assert_ne!(tuned.key(), plain.key());
        assert_eq!(tuned.deps.keys().collect::<Vec<_>>(), ["setting TUNED"]);
    }
}
