//! The `hone` subcommands, each a function from parsed flags to an exit code.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use hone_engine::exec::{self, RunOptions};
use hone_engine::plan::{self, Action, Selection};
use hone_engine::spec::{self, LoadError, Pipeline};

use hone_engine::digest;
use hone_engine::stage::Inputs;
use hone_engine::workspace::Workspace;

use crate::exit::{
    EXIT_AWAITING, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_USAGE, EXIT_WORKSPACE, Fatal,
    on_ctrl_c,
};
use crate::pipeline::{load, pipeline_path};
use crate::report::{HumanReporter, JsonReporter};
use crate::{
    CacheOp, ChatArgs, Cli, Cmd, GenerateArgs, GraphFormat, ModelArgs, PipelineArgs, PluginOp,
    ScoreArgs,
};

pub fn init_tracing() {
    use tracing_subscriber::prelude::*;
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("HONE_LOG").unwrap_or_else(|_| "warn".into());
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(filter);
    tracing_subscriber::registry().with(hone_engine::logging::StageLogLayer).with(stderr).init();
}

pub fn dispatch(cli: Cli) -> Result<u8, Fatal> {
    match cli.command {
        Cmd::Run { p, sel, sweep, mlflow, jobs, no_wait, json, ex, remote } => {
            let sel_ = selection(sel.only, sel.until);
            run(&p, sel_, sel.force, &sweep, mlflow.as_deref(), jobs, no_wait, json, &ex, &remote)
        }
        Cmd::Runs { h, last, json, full } => crate::history::runs(&h, last, json, full),
        Cmd::Diff { a, b, h, json } => crate::history::diff(&h, a.as_deref(), b.as_deref(), json),
        Cmd::Status { p, json } => {
            let (p, ws) = load(&p)?;
            crate::cluster::status(&ws, &p, json)
        }
        Cmd::Plan { p, sel, sweep, json, remote } => {
            let sel_ = selection(sel.only, sel.until);
            plan_cmd(&p, sel_, &sel.force, &sweep, json, remote.as_deref())
        }
        Cmd::Show { id, p, json } => show(&p, &id, json),
        Cmd::Export { id, dest, p } => export(&p, &id, &dest),
        Cmd::Report { p, output } => report(&p, output.as_deref()),
        Cmd::Graph { p, format } => graph(&p, format),
        Cmd::Kinds { kind } => kinds(kind.as_deref()),
        Cmd::Cache { op, workspace } => cache(op, workspace),
        Cmd::Watch { p, jobs } => watch(&p, jobs),
        Cmd::Digest { paths } => digest_cmd(&paths),
        Cmd::Plugin { op } => plugin(op),
        Cmd::Generate(g) => generate(g),
        Cmd::Chat(c) => chat(c),
        Cmd::Score(a) => score(a),
        Cmd::ExecStage { job } => crate::cluster::exec_stage(&job),
        Cmd::Label { id, p } => label(&p, &id),
    }
}

fn selection(only: Vec<String>, until: Option<String>) -> Selection {
    match (only.is_empty(), until) {
        (false, _) => Selection::Only(only),
        (true, Some(u)) => Selection::Until(u),
        (true, None) => Selection::All,
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    args: &PipelineArgs,
    selection: Selection,
    force: Vec<String>,
    sweep: &[String],
    mlflow: Option<&str>,
    jobs: Option<usize>,
    no_wait: bool,
    json: bool,
    ex: &crate::cluster::ExecArgs,
    remote: &crate::RemoteArgs,
) -> Result<u8, Fatal> {
    let (p, ws, variants) = load_maybe_swept(args, &selection, sweep)?;
    let remote_cache = match (&remote.remote, remote.push) {
        (None, false) => None,
        (flag, _) => Some(crate::remote::open(flag.as_deref(), ws.store.root())?),
    };
    let started = crate::history::now_ms();
    let now = hone_engine::lease::now_unix;
    let lock = ws
        .acquire(!no_wait, |holder| {
            eprintln!(
                "hone: another run holds the workspace lock ({}); waiting for it to finish…",
                holder.describe(now())
            )
        })
        .map_err(Fatal::workspace)?;
    let _lock = match lock {
        Ok(lock) => {
            if let Some(who) = lock.took_over() {
                eprintln!("hone: took over the workspace lock of {who}");
            }
            lock
        }
        Err(holder) => {
            return Err(Fatal {
                message: format!(
                    "error: another hone run is using the workspace `{}`: {}\n   = help: wait for it, or run without --no-wait to queue behind it\n   = help: if that run is gone (its host died), its lock expires {} s after its last renewal; or delete `{}`",
                    ws.root().display(),
                    holder.describe(now()),
                    holder.lease_secs,
                    ws.lock_path().display()
                ),
                code: EXIT_WORKSPACE,
            });
        }
    };
    let cancel = on_ctrl_c();
    let mut opts = RunOptions {
        selection,
        force,
        remote: remote_cache,
        push: remote.push,
        ..RunOptions::default()
    };
    if let Some(j) = jobs {
        opts.jobs = j.max(1);
    }
    let summary = if json {
        crate::cluster::run_pipeline(&ws, &p, &opts, ex, &JsonReporter, &cancel)?
    } else {
        crate::cluster::run_pipeline(&ws, &p, &opts, ex, &HumanReporter::new(), &cancel)?
    };
    let outcome = match () {
        _ if cancel.load(Ordering::SeqCst) => "interrupted",
        _ if !summary.failed.is_empty() => "failed",
        _ if !summary.awaiting.is_empty() => "awaiting",
        _ if summary.ok() => "ok",
        _ => "failed",
    };
    match &variants {
        None => crate::history::record_run(&ws, &p, args, started, &summary, outcome, mlflow),
        Some(vs) => {
            let cx = crate::history::RunContext::new(&ws, &p, args, started, &summary, mlflow);
            crate::sweep::record_and_show(&cx, args, vs, outcome)
        }
    }
    if cancel.load(Ordering::SeqCst) {
        return Ok(EXIT_INTERRUPTED);
    }
    if !summary.failed.is_empty() && !json {
        for (stage, _, log) in &summary.failed {
            match log {
                Some(l) => eprintln!("hone: stage `{stage}` failed; its log: {}", l.display()),
                None => eprintln!("hone: stage `{stage}` failed"),
            }
        }
    }
    if summary.failed.is_empty() && !summary.awaiting.is_empty() {
        if !json {
            for (_, message) in &summary.awaiting {
                eprintln!("hone: {message}");
            }
        }
        if let Some(path) = &args.pipeline {
            eprintln!(
                "   = help: give `hone label` the same pipeline: `hone label STAGE {}`",
                path.display()
            );
        }
        return Ok(EXIT_AWAITING);
    }
    if !json {
        print_summaries(
            &p,
            &ws,
            summary.ran.iter().chain(&summary.cached),
            args.pipeline.as_deref(),
        );
    }
    Ok(if summary.ok() { 0 } else { EXIT_FAILED })
}

/// After a run, what the run's stages have to show a person (an evaluation's table, see
/// `Stage::summary`), and the command that writes the whole report.
fn print_summaries<'a>(
    p: &Pipeline,
    ws: &Workspace,
    stages: impl Iterator<Item = &'a String>,
    file: Option<&Path>,
) {
    let mut shown = false;
    for id in stages {
        let Some(spec) = p.index_of(id).map(|i| &p.stages[i]) else { continue };
        let Some(state) = ws.store.state(&p.name, id) else { continue };
        if let Some(text) = spec.kind.summary(&spec.params, &ws.store.object_path(&state.artifact))
        {
            println!("\n{id}: {}", text.trim_end());
            shown = true;
        }
    }
    if shown {
        let file = file.map(|f| format!(" {}", f.display())).unwrap_or_default();
        let page = hone_stages::report::default_path(ws, &p.name);
        println!(
            "\nThe whole report (curves, filters, answers): `hone report{file}` writes {}; open it in a browser.",
            page.display()
        );
    }
}

/// Run, then rerun whenever the pipeline file or a file its stages read changes.
fn watch(args: &PipelineArgs, jobs: Option<usize>) -> Result<u8, Fatal> {
    let path = pipeline_path(&args.pipeline)?;
    let pipeline_file = std::fs::canonicalize(&path).unwrap_or(path.clone());
    let cancel = on_ctrl_c();
    let reporter = HumanReporter::new();
    loop {
        let mut watched = vec![pipeline_file.clone()];
        match load(args) {
            Err(f) => {
                eprintln!("{}\nhone: fix the pipeline file; watching it for changes", f.message)
            }
            Ok((p, ws)) => {
                let lock = ws
                    .lock(true, || eprintln!("hone: waiting for another run to finish…"))
                    .map_err(Fatal::workspace)?;
                let mut opts = RunOptions::default();
                if let Some(j) = jobs {
                    opts.jobs = j.max(1);
                }
                if let Err(e) = exec::run(&ws, &p, &opts, &reporter, &cancel) {
                    eprintln!("error: {e}");
                }
                drop(lock);
                watched.extend(ws.dependency_paths());
            }
        }
        let n = watched.len();
        let ready = || eprintln!("hone: watching {n} path(s) for changes (Ctrl-C to stop)");
        match hone_engine::watch::wait_for_change(
            &watched,
            std::time::Duration::from_millis(300),
            &cancel,
            ready,
        ) {
            Ok(Some(changed)) => {
                let names: Vec<String> = changed.iter().map(|c| c.display().to_string()).collect();
                eprintln!("hone: changed: {}", names.join(", "));
            }
            Ok(None) => return Ok(0),
            Err(e) => return Err(Fatal::workspace(e)),
        }
    }
}

/// Print the digest hone computes for a file or directory.
fn digest_cmd(paths: &[PathBuf]) -> Result<u8, Fatal> {
    for p in paths {
        let d = digest::hash_tree(p)
            .map_err(|e| Fatal::workspace(format!("cannot read `{}`: {e}", p.display())))?;
        println!("{d}  {}", p.display());
    }
    Ok(0)
}

/// The pipeline, or with `--sweep` its variants merged into one graph (and the variants).
fn load_maybe_swept(
    args: &PipelineArgs,
    selection: &Selection,
    sweep: &[String],
) -> Result<(Pipeline, Workspace, Option<Vec<crate::sweep::Variant>>), Fatal> {
    if sweep.is_empty() {
        let (p, ws) = load(args)?;
        return Ok((p, ws, None));
    }
    if !matches!(selection, Selection::All) {
        return Err(Fatal {
            message: "error: `--sweep` runs whole variants: it does not combine with `--only` or `--until`\n   = help: leave out `--only`/`--until`, or sweep with `-s` one variant at a time".into(),
            code: EXIT_USAGE,
        });
    }
    let (s, ws) = crate::sweep::load_sweep(args, sweep)?;
    Ok((s.pipeline, ws, Some(s.variants)))
}

/// Whether `plan --remote` found the stage's key on the remote.
fn fetched(s: &plan::StagePlan) -> bool {
    s.reasons.first().is_some_and(|r| r.starts_with(FETCHED))
}
const FETCHED: &str = "fetched from ";

fn plan_cmd(
    args: &PipelineArgs,
    selection: Selection,
    force: &[String],
    sweep: &[String],
    json: bool,
    remote: Option<&str>,
) -> Result<u8, Fatal> {
    let (p, ws, variants) = load_maybe_swept(args, &selection, sweep)?;
    let mut stages = plan::plan(&ws, &p, &selection, force)?;
    if let Some(flag) = remote {
        let r = crate::remote::open(Some(flag), ws.store.root())?;
        let keys = r.keys().map_err(Fatal::workspace)?;
        for s in stages.iter_mut().filter(|s| s.action == Action::Run) {
            if s.key.is_some_and(|k| keys.contains(&k)) {
                s.reasons.insert(0, format!("{FETCHED}{} (it holds this key)", r.label()));
            }
        }
    }
    ws.save_stat_cache();
    if json {
        println!("{}", serde_json::json!({ "pipeline": p.name, "stages": stages }));
        return Ok(0);
    }
    let width = stages.iter().map(|s| s.id.len()).max().unwrap_or(0);
    for s in &stages {
        let action = match s.action {
            Action::Cached => "cached",
            Action::Run if fetched(s) => "fetch",
            Action::Run => "run",
            Action::Skip => "skip",
        };
        let why = if s.reasons.is_empty() {
            String::new()
        } else {
            format!("  {}", s.reasons.join("; "))
        };
        println!("{action:<7}{:<width$}  ({}){why}", s.id, s.kind);
    }
    let runs = stages.iter().filter(|s| s.action == Action::Run && !fetched(s)).count();
    let fetches = stages.iter().filter(|s| s.action == Action::Run && fetched(s)).count();
    println!(
        "{runs} to run, {} cached{}",
        stages.iter().filter(|s| s.action == Action::Cached).count(),
        if remote.is_some() { format!(", {fetches} to fetch") } else { String::new() }
    );
    for (k, v) in variants.iter().flatten().enumerate() {
        println!("variant {}: {}  ({})", k + 1, v.overrides.join(" "), v.own.join(", "));
    }
    Ok(0)
}

/// The stage's current key and record, if its inputs are all resolvable.
fn find_stage(p: &Pipeline, id: &str) -> Result<usize, Fatal> {
    p.index_of(id).ok_or_else(|| {
        let hint = hone_engine::suggest::did_you_mean(id, p.stages.iter().map(|s| s.id.as_str()))
            .map(|h| format!("\n   = help: {h}"))
            .unwrap_or_default();
        Fatal {
            message: format!("error: no stage `{id}` in pipeline `{}`{hint}", p.name),
            code: EXIT_WORKSPACE,
        }
    })
}

fn show(args: &PipelineArgs, id: &str, json: bool) -> Result<u8, Fatal> {
    let (p, ws) = load(args)?;
    let i = find_stage(&p, id)?;
    let plans = plan::plan(&ws, &p, &Selection::Until(id.to_string()), &[])?;
    let sp = &plans[i];
    let record = sp.key.and_then(|k| ws.store.lookup(&k).ok().flatten());
    let state = ws.store.state(&p.name, id);
    let output = record.as_ref().map(|r| ws.store.object_path(&r.artifact));
    let files: Vec<String> = output.as_ref().map(|o| list_files(o)).unwrap_or_default();
    let log = state.as_ref().and_then(|s| s.log.clone());
    if json {
        let v = serde_json::json!({
            "id": id,
            "kind": sp.kind,
            "state": if record.is_some() { "cached" } else { "will run" },
            "reasons": sp.reasons,
            "key": sp.key,
            "artifact": record.as_ref().map(|r| r.artifact),
            "output": output,
            "files": files,
            "metrics": record.as_ref().map(|r| &r.metrics),
            "seconds": record.as_ref().map(|r| r.seconds),
            "log": log,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap());
        return Ok(0);
    }
    println!("stage:    {id} ({})", sp.kind);
    match &record {
        Some(r) => println!("state:    cached (ran in {:.2}s)", r.seconds),
        None => println!("state:    will run: {}", sp.reasons.join("; ")),
    }
    if let Some(k) = sp.key {
        println!("key:      {k}");
    }
    if let (Some(r), Some(o)) = (&record, &output) {
        println!("artifact: {}", r.artifact);
        println!("output:   {}", o.display());
        for f in &files {
            println!("          {f}");
        }
        if !r.metrics.is_empty() {
            println!("metrics:");
            for (k, v) in &r.metrics {
                println!("          {k} = {v}");
            }
        }
    }
    if let Some(l) = log {
        println!("log:      {}", l.display());
    }
    Ok(0)
}

fn list_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(d).into_iter().flatten().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                out.push(format!(
                    "{} ({})",
                    p.strip_prefix(base).unwrap_or(&p).display(),
                    human_bytes(size)
                ));
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// The record of a stage's up-to-date output, or an error saying how to produce it.
fn current_output(
    p: &Pipeline,
    ws: &Workspace,
    id: &str,
) -> Result<hone_engine::store::Record, Fatal> {
    find_stage(p, id)?;
    let plans = plan::plan(ws, p, &Selection::Until(id.to_string()), &[])?;
    let sp = plans.iter().find(|s| s.id == id).expect("stage is in its own plan");
    sp.key.and_then(|k| ws.store.lookup(&k).ok().flatten()).ok_or_else(|| Fatal {
        message: format!("error: stage `{id}` has no up-to-date output ({})\n   = help: run `hone run --until {id}` first", sp.reasons.join("; ")),
        code: EXIT_WORKSPACE,
    })
}

/// `hone report`: the page is rendered by `hone_stages::report`; this prints where it went.
fn report(args: &PipelineArgs, output: Option<&Path>) -> Result<u8, Fatal> {
    let (p, ws) = load(args)?;
    let path = hone_stages::report::write(&ws, &p, output).map_err(Fatal::workspace)?;
    ws.save_stat_cache();
    println!("{}", path.display());
    Ok(0)
}

fn export(args: &PipelineArgs, id: &str, dest: &Path) -> Result<u8, Fatal> {
    let (p, ws) = load(args)?;
    let record = current_output(&p, &ws, id)?;
    if dest.exists() && std::fs::read_dir(dest).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(Fatal {
            message: format!("error: `{}` exists and is not an empty directory", dest.display()),
            code: EXIT_WORKSPACE,
        });
    }
    copy_tree(&ws.store.object_path(&record.artifact), dest)
        .map_err(|e| Fatal::workspace(format!("cannot copy to `{}`: {e}", dest.display())))?;
    eprintln!("hone: exported `{id}` [{}] to {}", record.artifact.short(), dest.display());
    Ok(0)
}

fn copy_tree(src: &Path, dest: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dest)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let to = dest.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &to)?;
        } else {
            std::fs::copy(e.path(), &to)?;
            let mut perm = std::fs::metadata(&to)?.permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            std::fs::set_permissions(&to, perm)?;
        }
    }
    Ok(())
}

fn graph(args: &PipelineArgs, format: GraphFormat) -> Result<u8, Fatal> {
    let path = pipeline_path(&args.pipeline)?;
    let p = spec::load(&path, &hone_stages::registry(), &args.set).map_err(|e| match e {
        LoadError::Invalid(d) => Fatal { message: d.to_string(), code: EXIT_INVALID },
        e => Fatal { message: format!("error: {e}"), code: EXIT_INVALID },
    })?;
    let edges = p.stages.iter().flat_map(|s| {
        s.inputs
            .iter()
            .flat_map(move |(port, refs)| refs.iter().map(move |r| (r.stage, port, &s.id)))
    });
    match format {
        GraphFormat::Dot => {
            println!("digraph {:?} {{\n  rankdir=LR;\n  node [shape=box];", p.name);
            for s in &p.stages {
                println!("  {:?} [label=\"{}\\n({})\"];", s.id, s.id, s.kind.kind());
            }
            for (from, port, to) in edges {
                println!("  {:?} -> {:?} [label={:?}];", p.stages[from].id, to, port);
            }
            println!("}}");
        }
        GraphFormat::Mermaid => {
            println!("graph LR");
            for s in &p.stages {
                println!("  {}[\"{} ({})\"]", mermaid_id(&s.id), s.id, s.kind.kind());
            }
            for (from, port, to) in edges {
                println!("  {} -->|{}| {}", mermaid_id(&p.stages[from].id), port, mermaid_id(to));
            }
        }
    }
    Ok(0)
}

fn mermaid_id(id: &str) -> String {
    format!("s_{}", id.replace('-', "_"))
}

fn kinds(only: Option<&str>) -> Result<u8, Fatal> {
    let registry = hone_stages::registry();
    let mut found = false;
    for k in registry.kinds().filter(|k| only.is_none_or(|o| o == k.kind())) {
        found = true;
        println!("{} (v{}): {}", k.kind(), k.version(), k.about());
        match k.inputs() {
            Inputs::Fixed([]) => println!("  inputs:  none"),
            Inputs::Fixed(ports) => {
                let s: Vec<String> = ports
                    .iter()
                    .map(|p| {
                        format!(
                            "{}: {}{}{}",
                            p.name,
                            p.ty,
                            if p.many { " (list)" } else { "" },
                            if p.required { "" } else { " (optional)" }
                        )
                    })
                    .collect();
                println!("  inputs:  {}", s.join(", "));
            }
            Inputs::Open => println!("  inputs:  any names, any type"),
        }
        println!("  params:  {}", k.param_names().join(", "));
        let outs: Vec<String> =
            k.outputs().iter().map(|p| format!("{}: {}", p.name, p.ty)).collect();
        println!("  outputs: {}", outs.join(", "));
    }
    if !found {
        let hint = only
            .and_then(|o| hone_engine::suggest::did_you_mean(o, registry.kinds().map(|k| k.kind())))
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        return Err(Fatal {
            message: format!("error: unknown stage kind `{}`{hint}", only.unwrap_or("")),
            code: EXIT_WORKSPACE,
        });
    }
    Ok(0)
}

fn cache(op: CacheOp, workspace: Option<PathBuf>) -> Result<u8, Fatal> {
    let root = workspace.unwrap_or_else(|| ".".into());
    // A pull may fill an empty workspace; the other operations need a store.
    if !root.join(".hone").is_dir() && !matches!(op, CacheOp::Pull { .. }) {
        return Err(Fatal::workspace(format!(
            "no hone store in `{}` (no `.hone/` directory)\n   = help: pass --workspace DIR, the directory of your pipeline file",
            root.display()
        )));
    }
    let ws = Workspace::open(&root)?;
    let store = &ws.store;
    match op {
        CacheOp::Ls => {
            let live = store.live();
            for r in store.records() {
                let size = hone_engine::files::dir_size(&store.object_path(&r.artifact));
                let present = store.object_path(&r.artifact).is_dir();
                let mark = if !present {
                    "missing"
                } else if live.contains(&r.artifact) {
                    "current"
                } else {
                    "old"
                };
                println!(
                    "{}  {:<20} {:<8} {:>10}  {:.2}s  [{}]",
                    r.key.short(),
                    r.stage,
                    mark,
                    human_bytes(size),
                    r.seconds,
                    r.artifact.short()
                );
            }
            Ok(0)
        }
        CacheOp::Gc { dry_run } => {
            let _lock = ws
                .lock(true, || eprintln!("hone: waiting for the running pipeline to finish…"))
                .map_err(Fatal::workspace)?;
            let r = store.gc(dry_run)?;
            let verb = if dry_run { "would remove" } else { "removed" };
            println!(
                "{verb} {} object(s) ({}) and {} record(s)",
                r.objects,
                human_bytes(r.bytes),
                r.records
            );
            Ok(0)
        }
        CacheOp::Verify => {
            let _lock = ws
                .lock(true, || eprintln!("hone: waiting for the running pipeline to finish…"))
                .map_err(Fatal::workspace)?;
            let r = store.verify()?;
            for c in &r.corrupt {
                let stages = if c.stages.is_empty() {
                    "no stage".to_string()
                } else {
                    c.stages.iter().map(|s| format!("stage `{s}`")).collect::<Vec<_>>().join(", ")
                };
                println!(
                    "corrupt: {} ({stages}), moved to {}; it will be recomputed on the next run",
                    c.artifact.short(),
                    c.quarantined.display()
                );
            }
            println!(
                "verified {} object(s): {} ok, {} corrupt",
                r.checked,
                r.checked - r.corrupt.len(),
                r.corrupt.len()
            );
            Ok(if r.corrupt.is_empty() { 0 } else { EXIT_FAILED })
        }
        CacheOp::Push { stages, remote } => crate::remote::push(&ws, remote.as_deref(), &stages),
        CacheOp::Pull { stages, remote } => {
            let _lock = ws
                .lock(true, || eprintln!("hone: waiting for the running pipeline to finish…"))
                .map_err(Fatal::workspace)?;
            crate::remote::pull(&ws, remote.as_deref(), &stages)
        }
        CacheOp::Remote { url, user } => crate::remote::set_or_show(&ws, url.as_deref(), user),
    }
}

fn plugin(op: PluginOp) -> Result<u8, Fatal> {
    match op {
        PluginOp::New { name, dir } => {
            let path = hone_plugin_host::scaffold::create(&dir, &name).map_err(Fatal::workspace)?;
            let lib = name.replace('-', "_");
            println!("created plugin crate `{}`", path.display());
            println!(
                "  build:  cd {} && cargo build --release --target wasm32-wasip2",
                path.display()
            );
            println!("  output: {}/target/wasm32-wasip2/release/{lib}.wasm", path.display());
            println!(
                "  use:    filters: [{{ wasm: {}, with: {{ max_chars: 20000 }} }}]",
                path.display()
            );
            Ok(0)
        }
    }
}

/// `hone generate`: stream a sample from a model directory or a stage's cached output.
fn generate(g: GenerateArgs) -> Result<u8, Fatal> {
    use hone_stages::model::sample::generate_text;
    use std::io::Write;
    let dir = model_dir(&g.src)?;
    let over = g.sampling.overrides();
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", g.prompt);
    let started = std::time::Instant::now();
    let done = generate_text(&dir, &g.prompt, &over, g.sampling.seed, |text| {
        let _ = write!(out, "{text}");
        let _ = out.flush();
    })
    .map_err(|e| {
        // Invalid sampling flags (or prompt) are a usage error, as for `hone chat`.
        let code = if matches!(e, hone_stages::model::ModelError::Invalid(_)) {
            EXIT_USAGE
        } else {
            EXIT_FAILED
        };
        Fatal { message: format!("error: {e}"), code }
    })?;
    let _ = writeln!(out);
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "hone: {} new tokens after {} prompt tokens in {secs:.2}s ({:.1} tokens/s)",
        done.new_tokens,
        done.prompt_tokens,
        done.new_tokens as f64 / secs.max(1e-9)
    );
    Ok(0)
}

/// `hone score`: the raw reward of an answer and σ(r), the probability-like score in (0, 1).
fn score(a: ScoreArgs) -> Result<u8, Fatal> {
    use hone_stages::rl::reward_model::{ScoreError, Scorer, sigmoid};
    let dir = model_dir(&a.src)?;
    let scorer = Scorer::load(&dir)
        .map_err(|e| Fatal { message: format!("error: {e}"), code: EXIT_FAILED })?;
    let reward = scorer.score(&a.prompt, &a.answer).map_err(|e| {
        let code = if matches!(e, ScoreError::Model(_)) { EXIT_FAILED } else { EXIT_USAGE };
        Fatal { message: format!("error: {e}"), code }
    })?;
    if a.json {
        println!("{}", serde_json::json!({ "reward": reward, "score": sigmoid(reward) }));
    } else {
        println!("reward {reward:.4}  σ(r) {:.4}", sigmoid(reward));
    }
    Ok(0)
}

/// `hone label`: rank the candidates of a human-labelled `rank` stage in the terminal.
fn label(args: &PipelineArgs, id: &str) -> Result<u8, Fatal> {
    use hone_stages::labels::{Labels, SessionEnd, session};
    let (p, ws) = load(args)?;
    let i = find_stage(&p, id)?;
    let s = &p.stages[i];
    let labels_rel = hone_stages::kinds::rank::human_labels(s.kind.kind(), &s.params.canonical)
        .map_err(|e| Fatal {
            message: format!("error: cannot label stage `{id}`: {e}"),
            code: EXIT_WORKSPACE,
        })?;
    let Some(up) = s.inputs.get("candidates").and_then(|refs| refs.first()) else {
        return Err(Fatal {
            message: format!(
                "error: stage `{id}` has no `candidates` input to rank\n   = help: wire it to a `sample` stage: `inputs: {{ candidates: sample }}`"
            ),
            code: EXIT_INVALID,
        });
    };
    let up_id = p.stages[up.stage].id.clone();
    let record = current_output(&p, &ws, &up_id)?;
    let cands = hone_stages::data::candidates::read_dir(&ws.store.object_path(&record.artifact))
        .map_err(Fatal::workspace)?;
    let path = ws.base().join(&labels_rel);
    let mut labels = Labels::load(&path).map_err(Fatal::workspace)?;
    let mut out = std::io::stdout().lock();
    let end = session(&cands, &mut labels, &mut std::io::stdin().lock(), &mut out)
        .map_err(|e| Fatal { message: format!("error: {e}"), code: EXIT_FAILED })?;
    if let SessionEnd::Complete = end {
        let again = args.pipeline.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default();
        eprintln!("hone: every prompt of `{id}` is answered: `hone run{again}` goes on");
    }
    Ok(0)
}

/// A model directory given as is, or a stage's up-to-date output.
fn model_dir(src: &ModelArgs) -> Result<PathBuf, Fatal> {
    match (&src.model, &src.stage) {
        (Some(dir), _) => Ok(dir.clone()),
        (None, Some(id)) => {
            let args = PipelineArgs {
                pipeline: src.pipeline.clone(),
                set: src.set.clone(),
                workspace: src.workspace.clone(),
            };
            let (p, ws) = load(&args)?;
            let record = current_output(&p, &ws, id)?;
            Ok(ws.store.object_path(&record.artifact))
        }
        (None, None) => unreachable!("clap requires a model or --stage"),
    }
}

/// `hone chat`: an interactive chat, or one reply to `--prompt` on stdout.
fn chat(c: ChatArgs) -> Result<u8, Fatal> {
    use hone_stages::data::formats::{Message, Role};
    use hone_stages::model::chat::{ChatModel, repl};
    use std::io::Write;
    let dir = model_dir(&c.src)?;
    let failed = |e: hone_stages::model::ModelError| Fatal {
        message: format!("error: {e}"),
        code: EXIT_FAILED,
    };
    let m = ChatModel::load(&dir).map_err(failed)?;
    if !m.is_chat {
        return Err(Fatal {
            message: format!(
                "error: `{}` is not a chat model: its tokenizer_config.json has no `chat_template`\n   = help: chat with the output of an `sft` stage (e.g. `hone chat --stage sft`); `hone generate` continues text with a base model",
                dir.display()
            ),
            code: EXIT_FAILED,
        });
    }
    let o = m
        .options_with(c.sampling.seed, &c.sampling.overrides())
        .map_err(|e| Fatal { message: format!("error: {e}"), code: EXIT_USAGE })?;
    let mut out = std::io::stdout().lock();
    match c.prompt {
        Some(prompt) => {
            let mut messages: Vec<Message> =
                c.system.into_iter().map(|s| Message { role: Role::System, content: s }).collect();
            messages.push(Message { role: Role::User, content: prompt });
            m.reply(&messages, &o, |t| {
                let _ = write!(out, "{t}");
                let _ = out.flush();
            })
            .map_err(failed)?;
            let _ = writeln!(out);
        }
        None => repl(&m, &o, c.system, std::io::stdin().lock(), &mut out).map_err(failed)?,
    }
    Ok(0)
}
