//! The executor seam: `hone exec-stage JOB.json`, the worker remote executors run, on its own.

use crate::support::Ws;

const PIPE: &str = r#"
name: pair
seed: 7
stages:
  a: { uses: command, with: { cmd: "cat a.txt > $HONE_OUT/a", deps: [a.txt] } }
  b: { uses: command, inputs: { x: a }, with: { cmd: "tr a-z A-Z < $HONE_IN_x/a > $HONE_OUT/b" } }
"#;

fn job(
    ws: &Ws,
    stage: &str,
    kind: &str,
    params: serde_json::Value,
    inputs: serde_json::Value,
) -> serde_json::Value {
    let root = std::fs::canonicalize(ws.path()).unwrap();
    serde_json::json!({
        "pipeline": "pair", "stage": stage, "kind": kind, "version": 1, "params": params, "seed": 7,
        "inputs": inputs, "workspace": root, "base": root,
        "log": root.join(format!(".hone/logs/{stage}/worker.log")), "results": root.join("results"),
    })
}

fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn exec_stage_runs_one_job_and_its_dependent_reads_the_result_and_run_agrees() {
    let ws = Ws::new();
    ws.write("pipeline.yaml", PIPE).write("a.txt", "alpha\n");
    std::fs::create_dir(ws.path().join("results")).unwrap();
    let a = job(
        &ws,
        "a",
        "command",
        serde_json::json!({"cmd": "cat a.txt > $HONE_OUT/a", "deps": ["a.txt"], "env": {}}),
        serde_json::json!({}),
    );
    ws.write("a.json", &a.to_string());
    let out = ws.hone(&["exec-stage", "a.json"]).ok();
    let ev = events(&out.stdout);
    assert_eq!(
        ev.iter().map(|e| e["event"].as_str().unwrap()).collect::<Vec<_>>(),
        ["stage_started", "stage_finished"],
        "{}",
        out.stdout
    );
    let result: serde_json::Value =
        serde_json::from_str(&ws.read("results/a.result.json")).unwrap();
    assert_eq!(result["artifact"], ev[1]["artifact"]);

    // b reads a's output through the results directory, as a job submitted ahead of it does.
    let b = job(
        &ws,
        "b",
        "command",
        serde_json::json!({"cmd": "tr a-z A-Z < $HONE_IN_x/a > $HONE_OUT/b", "deps": [], "env": {}}),
        serde_json::json!({"x": [{"upstream": "a"}]}),
    );
    ws.write("b.json", &b.to_string());
    let out = ws.hone(&["exec-stage", "b.json"]).ok();
    let artifact = events(&out.stdout).last().unwrap()["artifact"].as_str().unwrap().to_string();
    assert_eq!(
        std::fs::read_to_string(ws.path().join(".hone/objects").join(&artifact).join("b")).unwrap(),
        "ALPHA\n"
    );
    // The same job again: its key is stored, so it is a cache hit.
    let out = ws.hone(&["exec-stage", "b.json"]).ok();
    assert_eq!(events(&out.stdout)[0]["event"], "stage_cached");

    // `hone run` computes the same keys: everything is cached, and `show` finds the worker's log.
    let out = ws.hone(&["run"]).ok();
    assert_eq!(out.cached(), ["a", "b"], "{}", out.stderr);
    ws.hone(&["show", "b"]).ok().stdout_has("worker.log");
}

#[test]
fn exec_stage_reports_a_failing_stage_and_a_bad_job_as_events_and_exit_1() {
    let ws = Ws::new();
    ws.write("pipeline.yaml", PIPE).write("a.txt", "alpha\n");
    let fail = job(
        &ws,
        "a",
        "command",
        serde_json::json!({"cmd": "echo boom >&2; exit 3", "deps": [], "env": {}}),
        serde_json::json!({}),
    );
    ws.write("fail.json", &fail.to_string());
    let out = ws.hone(&["exec-stage", "fail.json"]).code(1);
    let last = events(&out.stdout).pop().unwrap();
    assert_eq!(last["event"], "stage_failed");
    assert!(last["error"].as_str().unwrap().contains("boom"), "{last}");
    assert!(ws.path().join(".hone/logs/a/worker.log").exists());

    let unknown = job(&ws, "a", "comand", serde_json::json!({}), serde_json::json!({}));
    ws.write("unknown.json", &unknown.to_string());
    let out = ws
        .hone(&["exec-stage", "unknown.json"])
        .code(1)
        .stderr_has("this hone has no stage kind `comand`");
    assert_eq!(events(&out.stdout)[0]["event"], "stage_failed");

    let orphan = job(
        &ws,
        "b",
        "command",
        serde_json::json!({"cmd": "true", "deps": [], "env": {}}),
        serde_json::json!({"x": [{"upstream": "a"}]}),
    );
    ws.write("orphan.json", &orphan.to_string());
    ws.hone(&["exec-stage", "orphan.json"]).code(1).stderr_has("input stage `a` left no result at");

    let mut changed = fail.clone();
    changed["params"]["cmd"] = serde_json::json!(3);
    ws.write("params.json", &changed.to_string());
    ws.hone(&["exec-stage", "params.json"])
        .code(1)
        .stderr_has("the job's params for `command` are invalid here");
    ws.write("garbage.json", "{");
    ws.hone(&["exec-stage", "garbage.json"]).code(1).stderr_has("cannot read the job file");
}

/// Two Slurm jobs finishing the same key (a rerun racing an earlier submission, a job
/// requeued while its first run ends): workers run the same job at once and all commit.
/// Same bytes share one object; different bytes (a stage that is not deterministic) leave
/// every object whole and the key naming one of them; `cache verify` finds nothing wrong and a
/// run finds the key cached.
#[test]
fn workers_finishing_the_same_key_at_once_never_corrupt_the_store() {
    for (cmd, objects) in
        [("sleep 1; echo same > $HONE_OUT/x", 1), ("sleep 1; echo $$ > $HONE_OUT/x", 4)]
    {
        let ws = Ws::new();
        ws.write("pipeline.yaml", &format!("name: pair\nseed: 7\nstages:\n  t: {{ uses: command, with: {{ cmd: \"{cmd}\" }} }}\n"));
        std::fs::create_dir(ws.path().join("results")).unwrap();
        let t = job(
            &ws,
            "t",
            "command",
            serde_json::json!({"cmd": cmd, "deps": [], "env": {}}),
            serde_json::json!({}),
        );
        ws.write("t.json", &t.to_string());
        let workers: Vec<_> = (0..4)
            .map(|_| {
                ws.cmd(&["exec-stage", "t.json"])
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut artifacts = std::collections::BTreeSet::new();
        for w in workers {
            let out = crate::support::Out::from(w.wait_with_output().unwrap()).ok();
            let last = events(&out.stdout).pop().unwrap();
            assert!(
                last["event"] == "stage_finished" || last["event"] == "stage_cached",
                "{}",
                out.stdout
            );
            artifacts.insert(last["artifact"].as_str().unwrap().to_string());
        }
        assert_eq!(ws.objects(), objects, "{cmd}");
        assert_eq!(artifacts.len(), objects, "{cmd}");
        ws.hone(&["cache", "verify"]).ok().stdout_has(&format!("{objects} ok, 0 corrupt"));
        assert_eq!(std::fs::read_dir(ws.path().join(".hone/tmp")).unwrap().count(), 0);
        let out = ws.hone(&["run"]).ok();
        assert_eq!(out.cached(), ["t"], "{}", out.stderr);
        let shown: serde_json::Value =
            serde_json::from_str(&ws.hone(&["show", "t", "--json"]).ok().stdout).unwrap();
        let stored = shown["output"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
        assert!(artifacts.contains(&stored), "the key names one of the committed objects");
    }
}

/// A job running on another host (simulated by `HONE_HOSTNAME`) keeps its staging directory
/// through a `hone run` here, which cleans only dead or expired staging; the job then commits.
#[test]
fn a_live_job_on_another_host_keeps_its_staging_through_a_run_here() {
    let ws = Ws::new();
    let slow = "touch started; sleep 3; echo slow > $HONE_OUT/s";
    ws.write(
        "pipeline.yaml",
        &format!("name: pair\nseed: 7\nstages:\n  quick: {{ uses: command, with: {{ cmd: \"echo q > $HONE_OUT/q\" }} }}\n  slow: {{ uses: command, with: {{ cmd: \"{slow}\" }} }}\n"),
    );
    std::fs::create_dir(ws.path().join("results")).unwrap();
    ws.write(
        "slow.json",
        &job(
            &ws,
            "slow",
            "command",
            serde_json::json!({"cmd": slow, "deps": [], "env": {}}),
            serde_json::json!({}),
        )
        .to_string(),
    );
    let worker = ws
        .cmd(&["exec-stage", "slow.json"])
        .env("HONE_HOSTNAME", "node-b")
        .env("SLURM_JOB_ID", "4242")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !ws.path().join("started").exists() {
        assert!(t.elapsed() < std::time::Duration::from_secs(20), "the job never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let tmp = ws.path().join(".hone/tmp");
    let live: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(live.len(), 1);
    let owner: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(live[0].join("owner.json")).unwrap())
            .unwrap();
    assert_eq!(
        (owner["host"].as_str(), owner["job"].as_str(), owner["pid"].as_u64()),
        (Some("node-b"), Some("4242"), Some(worker.id() as u64))
    );
    // The staging of a job on node-b that died long ago (no renewal for hours) goes.
    let dead = tmp.join("dead-job");
    std::fs::create_dir_all(dead.join("out")).unwrap();
    let stale = serde_json::json!({"host": "node-b", "pid": 1, "started_unix": 1, "renewed_unix": 1, "lease_secs": 60, "token": "t"});
    std::fs::write(dead.join("owner.json"), stale.to_string()).unwrap();

    let out = ws.hone(&["run", "--only", "quick"]).ok();
    assert_eq!(out.ran(), ["quick"]);
    assert!(live[0].join("out").is_dir(), "the live job's staging survived");
    assert!(!dead.exists(), "the dead job's staging was cleaned");

    let out = crate::support::Out::from(worker.wait_with_output().unwrap()).ok();
    assert_eq!(events(&out.stdout).last().unwrap()["event"], "stage_finished", "{}", out.stdout);
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    assert_eq!(ws.hone(&["run"]).ok().cached(), ["quick", "slow"]);
}
