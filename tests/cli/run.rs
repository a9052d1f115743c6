//! `hone run` and `hone plan` on `command` pipelines: caching, reruns, early cutoff, reasons,
//! failures, selection, interruption and concurrency.

use std::time::{Duration, Instant};

use crate::support::{Ws, ids};

/// a and b read workspace files; c reads a; d reads c and b.
const DIAMOND: &str = r#"
name: diamond
seed: 1
stages:
  a:
    uses: command
    with: { cmd: "cat a.txt > $HONE_OUT/a", deps: [a.txt] }
  b:
    uses: command
    with: { cmd: "cat b.txt > $HONE_OUT/b", deps: [b.txt] }
  c:
    uses: command
    inputs: { x: a }
    with: { cmd: "tr a-z A-Z < $HONE_IN_x/a > $HONE_OUT/c" }
  d:
    uses: command
    inputs: { c: c, b: b }
    with: { cmd: "cat $HONE_IN_c/c $HONE_IN_b/b > $HONE_OUT/d" }
"#;

fn diamond() -> Ws {
    let ws = Ws::new();
    ws.write("pipeline.yaml", DIAMOND).write("a.txt", "alpha\n").write("b.txt", "beta\n");
    ws
}

#[test]
fn first_run_runs_everything_and_a_rerun_is_all_cached() {
    let ws = diamond();
    let out = ws.hone(&["run"]).ok();
    assert_eq!(out.ran(), ids(&["a", "b", "c", "d"]));
    assert!(out.stderr.contains("4 ran, 0 cached"), "{}", out.stderr);
    let out = ws.hone(&["run"]).ok();
    assert_eq!(out.cached(), ids(&["a", "b", "c", "d"]));
    assert!(out.ran().is_empty());
    let plan = ws.hone(&["plan", "--json"]).ok().plan();
    assert!(plan.iter().all(|(_, action, _)| action == "cached"), "{plan:?}");
}

#[test]
fn editing_a_dep_reruns_exactly_its_dependents() {
    let ws = diamond();
    ws.hone(&["run"]).ok();
    ws.write("a.txt", "alpha two\n");
    let plan = ws.hone(&["plan", "--json"]).ok().plan();
    let actions: Vec<(&str, &str)> =
        plan.iter().map(|(id, a, _)| (id.as_str(), a.as_str())).collect();
    assert_eq!(actions, [("a", "run"), ("b", "cached"), ("c", "run"), ("d", "run")]);
    assert_eq!(plan[0].2, ["dep `a.txt` changed"]);
    let out = ws.hone(&["run"]).ok();
    assert_eq!(out.ran(), ids(&["a", "c", "d"]));
    assert_eq!(out.cached(), ids(&["b"]));
    let d = ws.hone(&["show", "d", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&d.stdout).unwrap();
    let output = v["output"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(format!("{output}/d")).unwrap(), "ALPHA TWO\nbeta\n");
}

#[test]
fn an_upstream_stage_that_reproduces_its_output_stops_the_ripple() {
    let ws = Ws::new();
    ws.write(
        "pipeline.yaml",
        r#"
stages:
  first:
    uses: command
    with: { cmd: "head -c 3 in.txt > $HONE_OUT/x", deps: [in.txt] }
  second:
    uses: command
    inputs: { x: first }
    with: { cmd: "cat $HONE_IN_x/x $HONE_IN_x/x > $HONE_OUT/y" }
"#,
    )
    .write("in.txt", "abcdef");
    ws.hone(&["run"]).ok();
    ws.write("in.txt", "abcXYZ");
    let plan = ws.hone(&["plan", "--json"]).ok().plan();
    assert_eq!(plan[1].1, "run");
    assert!(plan[1].2[0].contains("will be rebuilt by `first`"), "{:?}", plan[1].2);
    let out = ws.hone(&["run"]).ok().stderr_has("output unchanged: dependents stay cached");
    assert_eq!(out.ran(), ids(&["first"]));
    assert_eq!(out.cached(), ids(&["second"]));
}

#[test]
fn plan_says_why_params_inputs_and_forces() {
    let ws = diamond();
    let plan = ws.hone(&["plan", "--json"]).ok().plan();
    assert_eq!(plan[0].2, ["never ran"]);
    ws.hone(&["run"]).ok();
    let out = ws
        .hone(&["plan", "-s", "stages.c.with.cmd=rev < $HONE_IN_x/a > $HONE_OUT/c", "--force", "b"])
        .ok();
    assert!(out.stdout.contains("forced (--force)"), "{}", out.stdout);
    assert!(
        out.stdout.contains(r#"param `cmd` changed from "tr a-z A-Z < $HONE_IN_x/a > $HONE_OUT/c" to "rev < $HONE_IN_x/a > $HONE_OUT/c""#),
        "{}",
        out.stdout
    );
    // Run the changed c; d then sees a changed input.
    ws.hone(&["run", "--until", "c", "-s", "stages.c.with.cmd=rev < $HONE_IN_x/a > $HONE_OUT/c"])
        .ok();
    let plan = ws
        .hone(&["plan", "--json", "-s", "stages.c.with.cmd=rev < $HONE_IN_x/a > $HONE_OUT/c"])
        .ok()
        .plan();
    assert_eq!(plan[3].1, "run");
    assert!(plan[3].2[0].starts_with("input `c` changed ("), "{:?}", plan[3].2);
    let out = ws.hone(&["run", "--force", "b"]).ok();
    assert_eq!(out.ran(), ids(&["b"]));
}

#[test]
fn vars_and_overrides_change_the_key() {
    let ws = Ws::new();
    ws.write(
        "pipeline.yaml",
        "vars: { word: hello }\nstages:\n  s:\n    uses: command\n    with: { cmd: \"echo ${vars.word} > $HONE_OUT/w\" }\n",
    );
    ws.hone(&["run"]).ok();
    let out = ws.hone(&["run", "-s", "vars.word=bye"]).ok();
    assert_eq!(out.ran(), ids(&["s"]));
    let v: serde_json::Value =
        serde_json::from_str(&ws.hone(&["show", "s", "--json", "-s", "vars.word=bye"]).ok().stdout)
            .unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("{}/w", v["output"].as_str().unwrap())).unwrap(),
        "bye\n"
    );
    // Back to the original value: a cache hit, not a rerun.
    assert_eq!(ws.hone(&["run"]).ok().cached(), ids(&["s"]));
}

#[test]
fn a_failing_stage_names_itself_shows_stderr_and_keeps_the_rest_cached() {
    let ws = Ws::new();
    ws.write(
        "pipeline.yaml",
        r#"
stages:
  good:
    uses: command
    with: { cmd: "echo ok > $HONE_OUT/o" }
  bad:
    uses: command
    with: { cmd: "echo some output; echo 'disk on fire' >&2; exit 7" }
  after:
    uses: command
    inputs: { x: bad }
    with: { cmd: "true" }
"#,
    );
    let out = ws.hone(&["run", "-j", "1"]).code(1);
    assert!(out.stderr.contains("FAILED  bad: command exited with status 7"), "{}", out.stderr);
    assert!(out.stderr.contains("disk on fire"), "{}", out.stderr);
    assert!(out.stderr.contains("skipped after: input stage `bad` failed"), "{}", out.stderr);
    let log_line = out
        .stderr
        .lines()
        .find(|l| l.contains("stage `bad` failed; its log: "))
        .expect("names the log");
    let log = log_line.split("its log: ").nth(1).unwrap();
    let text = std::fs::read_to_string(log).unwrap();
    assert!(text.contains("some output") && text.contains("disk on fire"), "{text}");
    assert_eq!(out.ran(), ids(&["good"]));
    let out = ws.hone(&["run"]).code(1);
    assert_eq!(out.cached(), ids(&["good"]));
    // Nothing half-written: only good's output is stored, and staging is empty.
    assert_eq!(ws.objects(), 1);
    assert_eq!(std::fs::read_dir(ws.path().join(".hone/tmp")).unwrap().count(), 0);
}

#[test]
fn only_runs_the_named_stages_and_needs_their_inputs_cached() {
    let ws = diamond();
    let out = ws.hone(&["run", "--only", "c"]).code(1);
    assert!(
        out.stderr.contains("input stage `a` is not selected and has no cached output"),
        "{}",
        out.stderr
    );
    ws.hone(&["run", "--only", "a"]).ok();
    let out = ws.hone(&["run", "--only", "c"]).ok();
    assert_eq!(out.ran(), ids(&["c"]));
    ws.hone(&["run", "--only", "nope"]).code(4).stderr_has("unknown stage `nope` in `--only`");
}

#[test]
fn until_runs_a_stage_and_its_ancestors() {
    let ws = diamond();
    let out = ws.hone(&["run", "--until", "c"]).ok();
    assert_eq!(out.ran(), ids(&["a", "c"]));
}

#[test]
fn ready_stages_run_in_parallel() {
    let ws = Ws::new();
    let mut yaml = String::from("stages:\n");
    for i in 0..4 {
        yaml.push_str(&format!("  s{i}:\n    uses: command\n    with: {{ cmd: \"sleep 0.6; echo {i} > $HONE_OUT/x\" }}\n"));
    }
    ws.write("pipeline.yaml", &yaml);
    let t = Instant::now();
    ws.hone(&["run", "-j", "4"]).ok();
    // Serially this is 2.4 s; in parallel about 0.6 s.
    assert!(t.elapsed() < Duration::from_millis(2000), "took {:?}", t.elapsed());
}

#[test]
fn a_run_killed_mid_stage_leaves_no_half_artifact_and_reruns_correctly() {
    let ws = Ws::new();
    ws.write(
        "pipeline.yaml",
        r#"
stages:
  quick:
    uses: command
    with: { cmd: "echo q > $HONE_OUT/q" }
  slow:
    uses: command
    inputs: { q: quick }
    with: { cmd: "echo partial > $HONE_OUT/part; touch started; sleep 30; echo done > $HONE_OUT/part" }
"#,
    );
    let mut child = ws.cmd(&["run"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    let t = Instant::now();
    while !ws.path().join("started").exists() {
        assert!(t.elapsed() < Duration::from_secs(20), "stage never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL hone mid-stage (its stage's shell lives on as an orphan, as after a crash).
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(ws.objects(), 1, "only the finished stage is stored");
    std::fs::remove_file(ws.path().join("started")).unwrap();
    ws.write("pipeline.yaml", &ws.read("pipeline.yaml").replace("sleep 30", "sleep 0"));
    let out = ws.hone(&["run"]).ok();
    assert_eq!(out.cached(), ids(&["quick"]));
    assert_eq!(out.ran(), ids(&["slow"]));
    assert_eq!(
        std::fs::read_dir(ws.path().join(".hone/tmp")).unwrap().count(),
        0,
        "staging of the killed run was cleaned"
    );
    let v: serde_json::Value =
        serde_json::from_str(&ws.hone(&["show", "slow", "--json"]).ok().stdout).unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("{}/part", v["output"].as_str().unwrap())).unwrap(),
        "done\n"
    );
}

#[test]
fn concurrent_runs_on_one_workspace_queue_and_do_the_work_once() {
    let ws = Ws::new();
    ws.write(
        "pipeline.yaml",
        "stages:\n  s:\n    uses: command\n    with: { cmd: \"sleep 1; date +%s%N > $HONE_OUT/t\" }\n",
    );
    let first = ws.cmd(&["run"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let busy = ws.hone(&["run", "--no-wait"]).code(4);
    assert!(busy.stderr.contains("another hone run is using the workspace"), "{}", busy.stderr);
    // It names the holder, and how to break a lock whose host died.
    assert!(
        busy.stderr.contains(&format!("pid {} on host ", first.id()))
            && busy.stderr.contains("lease renewed"),
        "{}",
        busy.stderr
    );
    assert!(
        busy.stderr.contains("its lock expires 60 s after its last renewal; or delete `"),
        "{}",
        busy.stderr
    );
    let second = ws.cmd(&["run"]).output().unwrap();
    let first = first.wait_with_output().unwrap();
    let (first, second): (crate::support::Out, crate::support::Out) = (first.into(), second.into());
    let first = first.ok();
    let second = second.ok();
    assert_eq!(first.ran(), ids(&["s"]));
    assert!(second.stderr.contains("waiting for it to finish"), "{}", second.stderr);
    assert_eq!(second.cached(), ids(&["s"]));
    assert_eq!(ws.objects(), 1);
}

#[test]
fn json_events_are_one_object_per_line() {
    let ws = diamond();
    let out = ws.hone(&["run", "--json"]).ok();
    let events: Vec<serde_json::Value> =
        out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.first().unwrap()["event"], "run_started");
    assert_eq!(events.last().unwrap()["event"], "run_finished");
    assert_eq!(events.last().unwrap()["ran"], 4);
    assert_eq!(events.iter().filter(|e| e["event"] == "stage_finished").count(), 4);
}

#[test]
fn show_export_graph_and_kinds() {
    let ws = diamond();
    ws.hone(&["show", "c"]).ok().stdout_has("state:    will run: input `x` will be rebuilt by `a`");
    ws.hone(&["export", "d", "out"]).code(4).stderr_has("run `hone run --until d` first");
    ws.hone(&["run"]).ok();
    let show = ws.hone(&["show", "d"]).ok();
    assert!(
        show.stdout.contains("state:    cached") && show.stdout.contains("log:      "),
        "{}",
        show.stdout
    );
    ws.hone(&["export", "d", "out"]).ok();
    assert_eq!(ws.read("out/d"), "ALPHA\nbeta\n");
    ws.hone(&["export", "d", "out"]).code(4).stderr_has("is not an empty directory");
    ws.hone(&["show", "dd"]).code(4).stderr_has("did you mean `d`?");
    let dot = ws.hone(&["graph"]).ok().stdout;
    assert!(
        dot.starts_with("digraph \"diamond\"") && dot.contains("\"c\" -> \"d\" [label=\"c\"]"),
        "{dot}"
    );
    let mermaid = ws.hone(&["graph", "--format", "mermaid"]).ok().stdout;
    assert!(mermaid.contains("s_a -->|x| s_c"), "{mermaid}");
    ws.hone(&["kinds", "command"]).ok().stdout_has("params:  cmd, deps, env");
}

#[test]
fn outputs_are_stored_by_rename_not_copy() {
    let ws = Ws::new();
    // The stage notes the inode of the file it wrote (outside its outputs).
    ws.write("pipeline.yaml", "stages:\n  s:\n    uses: command\n    with: { cmd: \"echo x > $HONE_OUT/f; stat -c %i $HONE_OUT/f > ino.txt\" }\n");
    ws.hone(&["run"]).ok();
    let v: serde_json::Value =
        serde_json::from_str(&ws.hone(&["show", "s", "--json"]).ok().stdout).unwrap();
    let stored = std::path::PathBuf::from(v["output"].as_str().unwrap()).join("f");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(ws.read("ino.txt").trim(), std::fs::metadata(stored).unwrap().ino().to_string());
}

#[test]
fn digest_prints_the_tree_digest() {
    let ws = Ws::new();
    ws.write("d/x", "1").write("e/x", "1");
    let a = ws.hone(&["digest", "d"]).ok().stdout;
    let b = ws.hone(&["digest", "e"]).ok().stdout;
    assert_eq!(a.split_whitespace().next(), b.split_whitespace().next());
    ws.hone(&["digest", "nope"]).code(4).stderr_has("cannot read `nope`");
}

#[test]
fn ctrl_c_stops_a_running_stage_and_exits_130() {
    let ws = Ws::new();
    ws.write(
        "pipeline.yaml",
        "stages:\n  slow:\n    uses: command\n    with: { cmd: \"touch started; sleep 30; echo x > $HONE_OUT/x\" }\n",
    );
    let child = ws.cmd(&["run"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let t = Instant::now();
    while !ws.path().join("started").exists() {
        assert!(t.elapsed() < Duration::from_secs(20), "stage never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped = Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-s", "INT", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out: crate::support::Out = child.wait_with_output().unwrap().into();
    assert!(stopped.elapsed() < Duration::from_secs(5), "took {:?} to stop", stopped.elapsed());
    let out = out.code(130);
    assert!(out.stderr.contains("hone: stopping"), "{}", out.stderr);
    assert!(out.stderr.contains("FAILED  slow: stopped before it finished"), "{}", out.stderr);
    assert_eq!(ws.objects(), 0);
    // The stage's own children were stopped too: nothing writes into the workspace later.
    let ps = std::process::Command::new("pgrep").args(["-f", "sleep 30; echo x"]).output().unwrap();
    assert!(ps.stdout.is_empty(), "the stage's shell is still running");
}

#[test]
fn a_malformed_record_fails_ingest_with_file_and_line() {
    let ws = Ws::new();
    ws.write(
        "data.jsonl",
        "{\"text\": \"one fine line of text\"}\n{\"text\": oops}\n{\"txt\": \"x\"}\n",
    );
    ws.write(
        "pipeline.yaml",
        "stages:\n  c:\n    uses: ingest\n    with: { source: data.jsonl }\n",
    );
    let out = ws.hone(&["run"]).code(1);
    assert!(out.stderr.contains("data.jsonl:2:"), "{}", out.stderr);
    let out = ws.hone(&["run", "-s", "stages.c.with.on_error=skip"]).ok();
    assert!(out.stderr.contains("skipped=2"), "{}", out.stderr);
}

/// A run on another host (simulated by `HONE_HOSTNAME`) holds the lock by its lease: named
/// while it renews, taken over once it stops renewing (its host froze or lost the network),
/// and its staging, whose lease expired too, is cleaned.
#[test]
fn a_lock_whose_lease_expired_is_taken_over_and_a_live_one_is_named() {
    let ws = Ws::new();
    ws.write(
        "pipeline.yaml",
        "stages:\n  quick: { uses: command, with: { cmd: \"echo q > $HONE_OUT/q\" } }\n  slow: { uses: command, with: { cmd: \"touch started; sleep 30; echo > $HONE_OUT/s\" } }\n",
    );
    let mut a = ws
        .cmd(&["run"])
        .env("HONE_HOSTNAME", "node-a")
        .env("HONE_LEASE_SECS", "2")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !ws.path().join("started").exists() {
        assert!(t.elapsed() < Duration::from_secs(20), "stage never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Past its lease, but renewed: still held.
    std::thread::sleep(Duration::from_millis(2500));
    let busy = ws.hone(&["run", "--no-wait"]).code(4);
    assert!(busy.stderr.contains(&format!("pid {} on host node-a", a.id())), "{}", busy.stderr);
    assert!(busy.stderr.contains("expires 2 s after its last renewal"), "{}", busy.stderr);
    let lock: serde_json::Value = serde_json::from_str(&ws.read(".hone/lock")).unwrap();
    assert_eq!((lock["host"].as_str(), lock["lease_secs"].as_u64()), (Some("node-a"), Some(2)));
    assert_eq!(
        std::fs::read_dir(ws.path().join(".hone/tmp")).unwrap().count(),
        1,
        "its staging stays"
    );

    // node-a stops renewing: the lock is taken over once the lease runs out.
    let stop = |sig: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([sig, &a.id().to_string()])
                .status()
                .unwrap()
                .success()
        )
    };
    stop("-STOP");
    let t = Instant::now();
    let out = ws.hone(&["run", "--only", "quick"]).ok();
    assert!(t.elapsed() < Duration::from_secs(15), "took {:?}", t.elapsed());
    assert!(out.stderr.contains("waiting for it to finish"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("took over the workspace lock of pid {} on host node-a", a.id()))
            && out.stderr.contains("its lease expired"),
        "{}",
        out.stderr
    );
    assert_eq!(out.cached(), ids(&["quick"]));
    assert_eq!(
        std::fs::read_dir(ws.path().join(".hone/tmp")).unwrap().count(),
        0,
        "the expired staging was cleaned"
    );
    assert!(!ws.path().join(".hone/lock").exists(), "released");
    stop("-KILL");
    a.wait().unwrap();
}
