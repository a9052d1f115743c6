//! The remote cache through the `hone` binary, on a local directory remote: push from one
//! workspace and a fresh one fetches instead of running; `--push` uploads as stages finish;
//! a corrupt remote object is a miss with a warning (the stage runs); a server that is not
//! there is a clear error for `push` and a warning for `run`; credentials never show.

use crate::support::Ws;

const PIPELINE: &str = "name: remote
stages:
  a:
    uses: command
    with: { cmd: 'head -c 200000 /dev/zero | tr \"\\0\" x > $HONE_OUT/big.txt; echo one > $HONE_OUT/a.txt' }
  b:
    uses: command
    inputs: { a: a }
    with: { cmd: 'cat $HONE_IN_a/a.txt $HONE_IN_a/a.txt > $HONE_OUT/b.txt' }
";

fn ws() -> Ws {
    let ws = Ws::new();
    ws.write("pipeline.yaml", PIPELINE);
    ws
}

fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[test]
fn a_pushed_store_is_fetched_by_a_fresh_workspace_instead_of_run() {
    let remote = tempfile::tempdir().unwrap();
    let url = remote.path().to_str().unwrap();
    let a = ws();
    a.hone(&["run"]).ok();
    a.hone(&["cache", "push", "--remote", url]).ok().stdout_has("pushed 2 records");
    // Nothing new: one listing, nothing sent.
    a.hone(&["cache", "push", "--remote", url]).ok().stdout_has("pushed 0 records");

    let b = ws();
    let plan = b.hone(&["plan", "--remote", url]).ok();
    assert!(plan.stdout.contains("fetch  a"), "{}", plan.stdout);
    assert!(plan.stdout.contains("1 to fetch"), "{}", plan.stdout);
    let run = b.hone(&["run", "--remote", url, "--json"]).ok();
    let ev = events(&run.stdout);
    assert!(ev.iter().all(|e| e["event"] != "stage_started"), "nothing ran: {}", run.stdout);
    let fetched: Vec<_> =
        ev.iter().filter(|e| e["event"] == "stage_cached" && e["from"].is_string()).collect();
    assert_eq!(fetched.len(), 2, "{}", run.stdout);
    assert_eq!(
        a.hone(&["digest", ".hone/objects"]).stdout,
        b.hone(&["digest", ".hone/objects"]).stdout
    );

    // A pull into a third workspace, then a rerun there is all local hits.
    let c = ws();
    c.hone(&["cache", "pull", "--remote", url]).ok().stdout_has("pulled 2 records");
    let run = c.hone(&["run", "--json"]).ok();
    assert!(events(&run.stdout).iter().all(|e| e["event"] != "stage_started"));
}

#[test]
fn a_corrupt_remote_object_is_a_miss_and_the_stage_runs() {
    let remote = tempfile::tempdir().unwrap();
    let url = remote.path().to_str().unwrap();
    let a = ws();
    a.hone(&["run", "--push", "--remote", url]).ok();
    let objects = remote.path().join("hone-v1/objects");
    let tars: Vec<_> = std::fs::read_dir(&objects).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(tars.len(), 2, "--push uploaded both results as they finished");
    for t in &tars {
        let mut bytes = std::fs::read(t).unwrap();
        if let Some(i) = bytes.windows(8).position(|w| w == b"xxxxxxxx") {
            bytes[i] = b'y';
            std::fs::write(t, bytes).unwrap();
        }
    }
    let b = ws();
    let run = b.hone(&["run", "--remote", url]).ok();
    assert!(run.stderr.contains("unusable, so it runs"), "{}", run.stderr);
    assert!(run.stderr.contains("has digest"), "{}", run.stderr);
    assert!(run.stderr.contains("ran     a"), "{}", run.stderr);
    // The store holds only what it computed: its object matches the uncorrupted one.
    assert_eq!(
        a.hone(&["digest", ".hone/objects"]).stdout,
        b.hone(&["digest", ".hone/objects"]).stdout
    );
}

#[test]
fn an_absent_server_is_an_error_for_push_and_a_warning_for_run_and_secrets_never_show() {
    let a = ws();
    a.hone(&["run"]).ok();
    let dead = "http://127.0.0.1:9/cache";
    a.hone(&["cache", "push", "--remote", dead])
        .code(1)
        .stderr_has("remote http://127.0.0.1:9/cache")
        .stderr_has("the local store is unchanged");
    let b = ws();
    let run = b.hone(&["run", "--remote", dead]).ok();
    assert!(
        run.stderr.contains("cannot fetch from the remote cache, so it runs"),
        "{}",
        run.stderr
    );

    let out = a.hone(&["cache", "push", "--remote", "http://me:hunter2@127.0.0.1:9/c"]).code(2);
    assert!(out.stderr.contains("password") && !out.stderr.contains("hunter2"), "{}", out.stderr);
    a.hone(&["cache", "push"]).code(2).stderr_has("no remote cache is set");
}

#[test]
fn the_remote_setting_comes_from_the_flag_the_environment_or_the_workspace() {
    let remote = tempfile::tempdir().unwrap();
    let url = remote.path().to_str().unwrap();
    let a = ws();
    a.hone(&["run"]).ok();
    a.hone(&["cache", "remote", url]).ok().stdout_has("saved in");
    a.hone(&["cache", "remote"]).ok().stdout_has("(from ");
    a.hone(&["cache", "push"]).ok().stdout_has("pushed 2 records");
    let other = tempfile::tempdir().unwrap();
    let out = a.cmd(&["cache", "push"]).env("HONE_REMOTE", other.path()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("pushed 2 records"));
}
