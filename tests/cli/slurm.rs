//! Pipelines through a real Slurm (`tests/slurm/start.sh` starts a single-node one; `.ci/run`
//! does, and sets `HONE_REQUIRE_SLURM=1` so that there they must run). On a machine where no
//! Slurm answers they are skipped with a loud note saying how to start one, so the README's
//! test command needs no cluster; with `HONE_REQUIRE_SLURM=1` they fail instead.
//! `HONE_SKIP_SLURM=1` skips them anyway.
//!
//! The tests at the end run everywhere, against a stand-in for Slurm's commands ([`FakeSlurm`]).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Out, Ws, env_flag, system_part};

/// Whether to run (see the module doc).
fn slurm() -> bool {
    if env_flag("HONE_SKIP_SLURM") {
        eprintln!("skipped: HONE_SKIP_SLURM is set");
        return false;
    }
    let answers = Command::new("sinfo").arg("-h").output().is_ok_and(|o| o.status.success());
    let how = "`sudo bash tests/slurm/start.sh` installs (Debian's slurm-wlm) and starts a single-node Slurm";
    system_part("Slurm", answers, how, "HONE_REQUIRE_SLURM")
}

/// `hone ARGS` with a fast poll of squeue.
fn hone(ws: &Ws, args: &[&str]) -> Out {
    Out::from(ws.cmd(args).env("HONE_SLURM_POLL_MS", "200").output().unwrap())
}

fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event ({e}): {l}")))
        .collect()
}

fn with<'a>(ev: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    ev.iter().filter(|e| e["event"] == kind).collect()
}

fn stages(ev: &[serde_json::Value], kind: &str) -> BTreeSet<String> {
    with(ev, kind).iter().map(|e| e["stage"].as_str().unwrap().to_string()).collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The job id each stage was submitted as.
fn job_of(ev: &[serde_json::Value], stage: &str) -> String {
    with(ev, "stage_submitted")
        .iter()
        .find(|e| e["stage"] == stage)
        .unwrap_or_else(|| panic!("`{stage}` was not submitted"))["job"]
        .as_str()
        .unwrap()
        .to_string()
}

fn scontrol(job: &str) -> String {
    let o = Command::new("scontrol").args(["show", "job", "-o", job]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Objects in a store: what two runs of one pipeline must share exactly.
fn objects(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join(".hone/objects"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// `src` fans out to `left` and `right`, which `join` reads; `src` takes a moment so the
/// others are seen waiting on it.
const FAN: &str = r#"
name: fan
seed: 3
stages:
  src: { uses: command, with: { cmd: "sleep 2; cat words.txt > $HONE_OUT/w", deps: [words.txt] } }
  left: { uses: command, inputs: { w: src }, with: { cmd: "head -n 2 $HONE_IN_w/w > $HONE_OUT/l" } }
  right: { uses: command, inputs: { w: src }, with: { cmd: "tail -n 2 $HONE_IN_w/w | tr a-z A-Z > $HONE_OUT/r" } }
  join: { uses: command, inputs: { l: left, r: right }, with: { cmd: "cat $HONE_IN_l/l $HONE_IN_r/r > $HONE_OUT/j" } }
"#;

#[test]
fn fan_out_and_join_run_as_dependent_jobs_and_store_the_same_bytes_as_a_local_run() {
    if !slurm() {
        return;
    }
    let ws = Ws::new();
    ws.write("pipeline.yaml", FAN).write("words.txt", "alpha\nbeta\ngamma\ndelta\n");
    let out = hone(&ws, &["run", "--executor", "slurm", "--detach", "--json"]).ok();
    let ev = events(&out.stdout);
    assert_eq!(stages(&ev, "stage_submitted"), set(&["src", "left", "right", "join"]));
    let (src, left, right, join) =
        (job_of(&ev, "src"), job_of(&ev, "left"), job_of(&ev, "right"), job_of(&ev, "join"));
    // Slurm holds the DAG: each job waits on the jobs making its inputs.
    let deps = |job: &str| {
        scontrol(job)
            .split_whitespace()
            .find(|f| f.starts_with("Dependency="))
            .unwrap_or("")
            .to_string()
    };
    assert!(deps(&left).contains(&format!("afterok:{src}")), "{}", scontrol(&left));
    assert!(deps(&right).contains(&format!("afterok:{src}")), "{}", scontrol(&right));
    let dj = deps(&join);
    assert!(dj.contains(&format!("afterok:{left}")) && dj.contains(&right), "{}", scontrol(&join));
    assert!(scontrol(&join).contains("JobState=PENDING"), "{}", scontrol(&join));

    // `hone status` follows the detached jobs to the end.
    let t0 = Instant::now();
    loop {
        let st: serde_json::Value =
            serde_json::from_str(&hone(&ws, &["status", "--json"]).ok().stdout).unwrap();
        let states: Vec<&str> =
            st["jobs"].as_array().unwrap().iter().map(|j| j["state"].as_str().unwrap()).collect();
        if states.iter().all(|s| *s == "COMPLETED") {
            break;
        }
        assert!(!states.iter().any(|s| matches!(*s, "FAILED" | "CANCELLED")), "{st}");
        assert!(t0.elapsed() < Duration::from_secs(120), "jobs did not finish: {st}");
        std::thread::sleep(Duration::from_millis(300));
    }
    hone(&ws, &["status"]).ok().stdout_has("COMPLETED").stdout_has(&format!("job {join}"));

    // A rerun submits nothing: everything is in the store.
    let out = hone(&ws, &["run", "--executor", "slurm", "--json"]).ok();
    let ev = events(&out.stdout);
    assert!(with(&ev, "stage_submitted").is_empty(), "{}", out.stdout);
    assert_eq!(stages(&ev, "stage_cached"), set(&["src", "left", "right", "join"]));
    assert_eq!(ws.hone(&["run"]).ok().cached(), ["join", "left", "right", "src"]);

    // The same pipeline run locally elsewhere stores exactly the same objects.
    let local = Ws::new();
    local.write("pipeline.yaml", FAN).write("words.txt", "alpha\nbeta\ngamma\ndelta\n");
    local.hone(&["run"]).ok();
    assert_eq!(objects(ws.path()), objects(local.path()));
    assert_eq!(objects(ws.path()).len(), 4);
}

/// The nodes share no filesystem with the submitting host (`shared_fs: false`): each job
/// works in a store of its node's (`HONE_NODE_DIR`), fetches its inputs from the remote cache
/// and pushes its result there, and the submitting host takes the results, events and logs
/// from the remote. (One machine plays both parts: the node's store is another directory.)
#[test]
fn without_a_shared_filesystem_the_jobs_exchange_inputs_and_results_through_the_remote_cache() {
    if !slurm() {
        return;
    }
    let words = "alpha\nbeta\ngamma\ndelta\n";
    let fan = FAN.replace("seed: 3\n", "seed: 3\nexecutor: { kind: slurm, shared_fs: false }\n");
    let ws = Ws::new();
    ws.write("pipeline.yaml", &fan).write("words.txt", words);

    // Without a remote cache there is nothing to go through: said before anything is submitted.
    let out = hone(&ws, &["run"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    let out = out.stderr_has("`shared_fs: false` needs a remote cache").stderr_has("--remote URL");
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(!ws.path().join(".hone/slurm").exists(), "nothing was submitted");

    let remote = tempfile::tempdir().unwrap();
    let url = remote.path().to_str().unwrap();
    let run = |node: &Path, sets: &[&str]| {
        let mut args = vec!["run", "--remote", url, "--json"];
        for s in sets {
            args.extend(["-s", s]);
        }
        Out::from(
            ws.cmd(&args)
                .env("HONE_SLURM_POLL_MS", "200")
                .env("HONE_NODE_DIR", node)
                .output()
                .unwrap(),
        )
    };
    let node = tempfile::tempdir().unwrap();
    let ev = events(&run(node.path(), &[]).ok().stdout);
    let all = set(&["src", "left", "right", "join"]);
    assert_eq!(stages(&ev, "stage_submitted"), all);
    assert_eq!(stages(&ev, "stage_finished"), all);
    // The jobs worked in the node's store; their records and objects reached the workspace's
    // store through the remote; the same bytes as a local run.
    assert_eq!(objects(node.path()), objects(ws.path()));
    assert_eq!(std::fs::read_dir(remote.path().join("hone-v1/keys")).unwrap().count(), 4);
    let local = Ws::new();
    local.write("pipeline.yaml", FAN).write("words.txt", words);
    local.hone(&["run"]).ok();
    assert_eq!(objects(ws.path()), objects(local.path()));
    assert_eq!(ws.hone(&["run", "--executor", "local"]).ok().cached().len(), 4);

    // A changed `join` on a node that has nothing: its inputs, made by the earlier run and
    // held in the workspace's store, reach it through the remote.
    let fresh = tempfile::tempdir().unwrap();
    let swap = "stages.join.with.cmd=cat $HONE_IN_r/r $HONE_IN_l/l > $HONE_OUT/j";
    let ev = events(&run(fresh.path(), &[swap]).ok().stdout);
    assert_eq!(stages(&ev, "stage_submitted"), set(&["join"]));
    assert_eq!(stages(&ev, "stage_finished"), set(&["join"]));
    assert_eq!(objects(fresh.path()).len(), 3, "left, right and the new join");
    let j: serde_json::Value =
        serde_json::from_str(&ws.hone(&["show", "join", "--json", "-s", swap]).ok().stdout)
            .unwrap();
    let out = std::fs::read_to_string(Path::new(j["output"].as_str().unwrap()).join("j")).unwrap();
    assert_eq!(out, "GAMMA\nDELTA\nalpha\nbeta\n");

    // A failing job: its error and its log come back through the remote.
    let broken = "stages.join.with.cmd=echo broken-on-the-node >&2; exit 3";
    let out = run(fresh.path(), &[broken]).code(1);
    let ev = events(&out.stdout);
    let failed = with(&ev, "stage_failed");
    assert_eq!(failed.len(), 1, "{}", out.stdout);
    let error = failed[0]["error"].as_str().unwrap();
    assert!(error.contains("broken-on-the-node") && error.contains("Slurm job"), "{error}");
    let log = failed[0]["log"].as_str().unwrap();
    assert!(std::fs::read_to_string(log).unwrap().contains("broken-on-the-node"), "log {log}");

    // A worker that cannot start (no hone at that path on the node) leaves nothing on the
    // remote: the error says where on the node its stderr is.
    let again = "stages.join.with.cmd=echo again > $HONE_OUT/j";
    let out = Out::from(
        ws.cmd(&["run", "--remote", url, "--json", "-s", again])
            .env("HONE_SLURM_POLL_MS", "200")
            .env("HONE_NODE_DIR", fresh.path())
            .env("HONE_SLURM_BIN", "/nonexistent/hone")
            .output()
            .unwrap(),
    )
    .code(1);
    let ev = events(&out.stdout);
    let failed = with(&ev, "stage_failed");
    assert_eq!(failed.len(), 1, "{}", out.stdout);
    let error = failed[0]["error"].as_str().unwrap();
    let stderr = format!("/tmp/hone-slurm-{}.err", job_of(&ev, "join"));
    assert!(error.contains(&stderr), "{error}");
    let said = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(said.contains("/nonexistent/hone"), "{stderr}: {said}");
}

const FAILING: &str = r#"
name: failing
seed: 1
vars: { code: 3 }
stages:
  a: { uses: command, with: { cmd: "echo a > $HONE_OUT/a" } }
  b: { uses: command, inputs: { a: a }, with: { cmd: "echo broken >&2; exit ${vars.code}" } }
  c: { uses: command, inputs: { b: b }, with: { cmd: "cat $HONE_IN_b/* > $HONE_OUT/c" } }
  d: { uses: command, inputs: { a: a }, with: { cmd: "cat $HONE_IN_a/a > $HONE_OUT/d" } }
"#;

#[test]
fn a_failing_job_fails_its_stage_with_job_and_log_slurm_cancels_dependents_and_a_rerun_submits_only_what_is_missing()
 {
    if !slurm() {
        return;
    }
    let ws = Ws::new();
    ws.write("pipeline.yaml", FAILING);
    let out = hone(&ws, &["run", "--executor", "slurm", "--json"]).code(1);
    let ev = events(&out.stdout);
    let b = job_of(&ev, "b");
    let failed = with(&ev, "stage_failed");
    assert_eq!(failed.len(), 1, "{}", out.stdout);
    assert_eq!(failed[0]["stage"], "b");
    let error = failed[0]["error"].as_str().unwrap();
    assert!(error.contains("broken") && error.contains(&format!("Slurm job {b}")), "{error}");
    let log = failed[0]["log"].as_str().unwrap();
    assert!(std::fs::read_to_string(log).unwrap().contains("broken"), "log {log}");
    let skipped = with(&ev, "stage_skipped");
    assert_eq!(skipped.len(), 1, "{}", out.stdout);
    assert_eq!(skipped[0]["stage"], "c");
    assert!(
        skipped[0]["because"]
            .as_str()
            .unwrap()
            .contains("input stage `b` failed; Slurm cancelled job"),
        "{}",
        skipped[0]
    );
    assert!(scontrol(&job_of(&ev, "c")).contains("DependencyNeverSatisfied"));
    assert_eq!(stages(&ev, "stage_finished"), set(&["a", "d"]));

    // Fixed: only b and c are submitted; a and d stay cached.
    let out = hone(
        &ws,
        &[
            "run",
            "--executor",
            "slurm",
            "--json",
            "-s",
            "stages.b.with.cmd=echo fixed > $HONE_OUT/b",
        ],
    )
    .ok();
    let ev = events(&out.stdout);
    assert_eq!(stages(&ev, "stage_submitted"), set(&["b", "c"]));
    assert_eq!(stages(&ev, "stage_cached"), set(&["a", "d"]));
    assert_eq!(stages(&ev, "stage_finished"), set(&["b", "c"]));
}

#[test]
fn a_cancelled_job_fails_its_stage_and_skips_its_dependents() {
    if !slurm() {
        return;
    }
    let ws = Ws::new();
    ws.write(
        "pipeline.yaml",
        "name: slow\nstages:\n  slow: { uses: command, with: { cmd: \"sleep 60; echo > $HONE_OUT/x\" } }\n  after: { uses: command, inputs: { s: slow }, with: { cmd: \"cp -r $HONE_IN_s $HONE_OUT/y\" } }\n",
    );
    let mut child = ws
        .cmd(&["run", "--executor", "slurm", "--json"])
        .env("HONE_SLURM_POLL_MS", "200")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    // Once `slow` runs, someone cancels its job.
    for line in lines.by_ref() {
        let e: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        seen.push(e.clone());
        if e["event"] == "job_state" && e["stage"] == "slow" && e["state"] == "RUNNING" {
            let st = Command::new("scancel").arg(e["job"].as_str().unwrap()).status().unwrap();
            assert!(st.success());
            break;
        }
    }
    seen.extend(lines.map(|l| serde_json::from_str(&l.unwrap()).unwrap()));
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(1));
    let slow = job_of(&seen, "slow");
    let failed = with(&seen, "stage_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["error"], format!("Slurm job {slow} was cancelled"));
    assert!(failed[0]["log"].as_str().unwrap().contains(".hone/logs/slow/"));
    assert_eq!(stages(&seen, "stage_skipped"), set(&["after"]));
    assert!(ws.objects() == 0);
}

#[test]
fn the_smoke_training_pipeline_runs_through_slurm_to_the_same_artifacts() {
    if !slurm() {
        return;
    }
    let yaml = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/smoke.yaml");
    let (onslurm, local) = (Ws::new(), Ws::new());
    let run = |ws: &Ws, extra: &[&str]| {
        let mut args = vec![
            "run",
            yaml.to_str().unwrap(),
            "--workspace",
            ws.path().to_str().unwrap(),
            "--json",
        ];
        args.extend(extra);
        events(&hone(ws, &args).ok().stdout)
    };
    let ev = run(&onslurm, &["--executor", "slurm"]);
    let all = stages(&ev, "stage_submitted");
    assert!(all.len() >= 7 && all.contains("sft") && all.contains("eval"), "{all:?}");
    assert_eq!(stages(&ev, "stage_finished"), all);
    run(&local, &[]);
    assert_eq!(objects(onslurm.path()), objects(local.path()));
    let again = run(&onslurm, &["--executor", "slurm"]);
    assert!(with(&again, "stage_submitted").is_empty());
}

/// The stage each event of `kind` names, with its job.
fn jobs_of(ev: &[serde_json::Value], kind: &str) -> std::collections::BTreeMap<String, String> {
    with(ev, kind)
        .iter()
        .map(|e| (e["stage"].as_str().unwrap().to_string(), e["job"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn a_rerun_during_a_detached_submission_follows_its_jobs_instead_of_submitting_them_again() {
    if !slurm() {
        return;
    }
    let ws = Ws::new();
    ws.write(
        "pipeline.yaml",
        &FAN.replace("name: fan", "name: again").replace("sleep 2", "sleep 5"),
    )
    .write("words.txt", "alpha\nbeta\ngamma\ndelta\n");
    let first =
        events(&hone(&ws, &["run", "--executor", "slurm", "--detach", "--json"]).ok().stdout);
    let submitted = jobs_of(&first, "stage_submitted");
    assert_eq!(submitted.len(), 4);

    // A local run meanwhile computes again what it starts: it says so (here `src`, changed to
    // fail at once, so that it stores nothing).
    let local = ws
        .hone(&["run", "--executor", "local", "--only", "src", "-s", "stages.src.with.cmd=exit 3"])
        .code(1);
    assert!(
        local.stderr.contains("Slurm jobs of an earlier submission are still computing")
            && local.stderr.contains(&format!("`src` (job {})", submitted["src"])),
        "{}",
        local.stderr
    );

    // While `src` still sleeps and the others wait on it, a rerun follows the same four jobs.
    let out = hone(&ws, &["run", "--executor", "slurm", "--json"]).ok();
    let ev = events(&out.stdout);
    assert!(with(&ev, "stage_submitted").is_empty(), "{}", out.stdout);
    assert_eq!(jobs_of(&ev, "stage_followed"), submitted);
    assert_eq!(stages(&ev, "stage_finished"), set(&["src", "left", "right", "join"]));
    assert_eq!(ws.objects(), 4);
    let st: serde_json::Value =
        serde_json::from_str(&hone(&ws, &["status", "--json"]).ok().stdout).unwrap();
    let listed: Vec<&str> =
        st["jobs"].as_array().unwrap().iter().map(|j| j["job"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), 4, "{st}");
    assert!(
        listed.iter().all(|j| submitted.values().any(|s| s == j)),
        "the newest submission lists the followed jobs: {st}"
    );
    // The stage's log is the followed job's (this run's log path links to it).
    let shown: serde_json::Value =
        serde_json::from_str(&ws.hone(&["show", "join", "--json"]).ok().stdout).unwrap();
    let log = std::fs::read_to_string(shown["log"].as_str().unwrap()).unwrap();
    assert!(log.contains("hone: stage `join`"), "{log}");

    // New words: all four rerun, detached. A rerun with `join` changed follows src, left and
    // right, and submits join anew after their jobs, reading their results.
    ws.write("words.txt", "one\ntwo\nthree\nfour\n");
    let second = jobs_of(
        &events(&hone(&ws, &["run", "--executor", "slurm", "--detach", "--json"]).ok().stdout),
        "stage_submitted",
    );
    let out = hone(
        &ws,
        &[
            "run",
            "--executor",
            "slurm",
            "--json",
            "-s",
            "stages.join.with.cmd=cat $HONE_IN_r/r $HONE_IN_l/l > $HONE_OUT/j",
        ],
    )
    .ok();
    let ev = events(&out.stdout);
    let followed = jobs_of(&ev, "stage_followed");
    assert_eq!(followed.keys().collect::<Vec<_>>(), ["left", "right", "src"], "{}", out.stdout);
    assert!(followed.iter().all(|(s, j)| second[s] == *j));
    let join = with(&ev, "stage_submitted");
    assert_eq!(join.len(), 1, "{}", out.stdout);
    assert_eq!(join[0]["stage"], "join");
    let after: BTreeSet<&str> =
        join[0]["after"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(after, [second["left"].as_str(), second["right"].as_str()].into_iter().collect());
    assert!(
        join[0]["reasons"].to_string().contains(&format!(
            "Slurm job {} of an earlier submission computes it with other params or inputs",
            second["join"]
        )),
        "{}",
        join[0]
    );
    assert_eq!(stages(&ev, "stage_finished"), set(&["src", "left", "right", "join"]));
    let shown: serde_json::Value = serde_json::from_str(
        &ws.hone(&[
            "show",
            "join",
            "--json",
            "-s",
            "stages.join.with.cmd=cat $HONE_IN_r/r $HONE_IN_l/l > $HONE_OUT/j",
        ])
        .ok()
        .stdout,
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(Path::new(shown["output"].as_str().unwrap()).join("j")).unwrap(),
        "THREE\nFOUR\none\ntwo\n"
    );
}

/// Stand-ins for `sbatch`, `squeue` and `scancel` in a directory put first on `PATH`: `sbatch`
/// numbers its jobs from 101 and runs none, `squeue` answers each job asked with `state`
/// (`STATE|REASON`; nothing when empty: Slurm forgot them), `scancel` does nothing. Each
/// appends its command line to `calls`.
struct FakeSlurm {
    dir: tempfile::TempDir,
}

impl FakeSlurm {
    fn new(state: &str) -> FakeSlurm {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let log = "echo \"$(basename \"$0\") $*\" >> \"$(dirname \"$0\")/calls\"";
        let scripts = [
            (
                "sbatch",
                format!(
                    "{log}\nn=$(( $(cat \"$(dirname \"$0\")/next\") + 1 ))\necho $n > \"$(dirname \"$0\")/next\"\necho $n\n"
                ),
            ),
            (
                "squeue",
                format!(
                    "{log}\nfor a; do ids=$a; done\nstate=$(cat \"$(dirname \"$0\")/state\")\nif [ -n \"$state\" ]; then for id in $(echo \"$ids\" | tr , ' '); do echo \"$id|$state\"; done; fi\n"
                ),
            ),
            ("scancel", log.to_string()),
        ];
        for (name, body) in scripts {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(dir.path().join("next"), "100").unwrap();
        std::fs::write(dir.path().join("calls"), "").unwrap();
        let fake = FakeSlurm { dir };
        fake.set_state(state);
        fake
    }

    fn set_state(&self, state: &str) {
        std::fs::write(self.dir.path().join("state"), state).unwrap();
    }

    /// The commands run so far, one a line.
    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("calls")).unwrap()
    }

    /// `hone ARGS` in `ws` with the stand-ins first on `PATH`, polling every 10 ms.
    fn hone(&self, ws: &Ws, args: &[&str]) -> Out {
        let path =
            format!("{}:{}", self.dir.path().display(), std::env::var("PATH").unwrap_or_default());
        Out::from(ws.cmd(args).env("PATH", path).env("HONE_SLURM_POLL_MS", "10").output().unwrap())
    }
}

/// A run that hands nothing to an executor (a no-op) neither asks Slurm about earlier jobs nor
/// leaves a submission record; a local run that starts a stage asks, and names those jobs.
#[test]
fn runs_that_start_nothing_ask_slurm_nothing_and_leave_no_submission() {
    let fake = FakeSlurm::new("RUNNING|None");
    let ws = Ws::new();
    ws.write(
        "pipeline.yaml",
        "name: two\nstages:\n  slow: { uses: command, with: { cmd: \"echo s > $HONE_OUT/s\" } }\n  quick: { uses: command, with: { cmd: \"echo q > $HONE_OUT/q\" } }\n",
    );
    fake.hone(&ws, &["run", "--executor", "slurm", "--detach", "--only", "slow"])
        .ok()
        .stderr_has("left running as Slurm jobs 101");
    let submissions = || std::fs::read_dir(ws.path().join(".hone/slurm")).unwrap().count();
    assert_eq!(submissions(), 1);
    // Slurm's `None` reason is no reason.
    let st: serde_json::Value =
        serde_json::from_str(&fake.hone(&ws, &["status", "--json"]).ok().stdout).unwrap();
    assert_eq!(
        (&st["jobs"][0]["job"], &st["jobs"][0]["state"], &st["jobs"][0]["reason"]),
        (&"101".into(), &"RUNNING".into(), &"".into()),
        "{st}"
    );
    fake.hone(&ws, &["status"]).ok().stdout_has("  RUNNING    slow                 job 101\n");

    let out = fake.hone(&ws, &["run", "--only", "quick"]).ok();
    assert_eq!(out.ran(), ["quick"]);
    assert!(
        out.stderr
            .contains("Slurm jobs of an earlier submission are still computing `slow` (job 101)"),
        "{}",
        out.stderr
    );

    let asked = fake.calls();
    assert_eq!(
        asked.lines().filter(|l| l.starts_with("squeue")).count(),
        3,
        "two for `status`, one for the run: {asked}"
    );
    let out = fake.hone(&ws, &["run", "--only", "quick"]).ok();
    assert_eq!(out.cached(), ["quick"]);
    assert!(!out.stderr.contains("Slurm jobs"), "{}", out.stderr);
    let out = fake.hone(&ws, &["run", "--executor", "slurm", "--only", "quick"]).ok();
    assert_eq!(out.cached(), ["quick"]);
    assert_eq!(fake.calls(), asked, "no-op runs ask Slurm nothing");
    assert_eq!(submissions(), 1, "and leave no submission");
}
