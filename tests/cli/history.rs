//! `hone runs` and `hone diff`: every `hone run` is recorded, with its overrides, each stage's
//! outcome, key, params and metrics; a diff says what moved.

use crate::support::Ws;

/// `make` writes a number read from a file; `double` doubles it; `scale` has a param.
const PIPELINE: &str = r#"
name: hist
seed: 1
vars: { factor: 2 }
stages:
  make:
    uses: command
    with: { cmd: "cat n.txt > $HONE_OUT/n", deps: [n.txt] }
  double:
    uses: command
    inputs: { x: make }
    with: { cmd: "echo $(( $(cat $HONE_IN_x/n) * ${vars.factor} )) > $HONE_OUT/n" }
"#;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[test]
fn every_run_is_recorded_and_a_diff_shows_what_moved() {
    let ws = Ws::new();
    ws.write("pipeline.yaml", PIPELINE).write("n.txt", "3\n");
    ws.hone(&["runs"]).ok().stdout_has("no recorded runs yet");
    ws.hone(&["diff"]).code(4).stderr_has("no recorded runs yet");
    ws.hone(&["run"]).ok();
    ws.hone(&["run", "-s", "vars.factor=5"]).ok();
    ws.write(
        "pipeline.yaml",
        &PIPELINE.replace("* ${vars.factor} ))", "* ${vars.factor} )); exit 7"),
    );
    ws.hone(&["run"]).code(1);

    let lines = json(&ws.hone(&["runs", "--json"]).ok().stdout);
    let lines = lines.as_array().unwrap();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        (lines[0]["outcome"].as_str(), lines[0]["failed"].as_u64()),
        (Some("failed"), Some(1))
    );
    assert_eq!((lines[2]["ran"].as_u64(), lines[1]["cached"].as_u64()), (Some(2), Some(1)));
    let runs = json(&ws.hone(&["runs", "--json", "--full"]).ok().stdout);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 3, "{runs:?}");
    // Newest first.
    assert_eq!(runs[0]["outcome"], "failed");
    assert_eq!(runs[1]["overrides"], serde_json::json!(["vars.factor=5"]));
    assert_eq!(runs[2]["outcome"], "ok");
    assert_eq!(runs[2]["stages"]["double"]["outcome"], "ran");
    assert_eq!(runs[1]["stages"]["make"]["outcome"], "cached");
    assert_eq!(runs[1]["stages"]["make"]["key"], runs[2]["stages"]["make"]["key"]);
    assert_ne!(runs[1]["stages"]["double"]["key"], runs[2]["stages"]["double"]["key"]);
    assert_ne!(runs[0]["file_digest"], runs[1]["file_digest"], "the pipeline file changed");
    assert_eq!(runs[0]["stages"]["double"]["outcome"], "failed", "{}", runs[0]);
    assert_eq!(runs[0]["stages"]["make"]["outcome"], "cached");
    let human = ws.hone(&["runs", "-n", "2"]).ok().stdout;
    assert_eq!(human.lines().count(), 3, "a header and two runs: {human}");
    assert!(human.contains("vars.factor=5"), "{human}");

    // The first two runs: the param and the key of `double` moved, `make` did not.
    let (a, b) = (runs[2]["id"].as_str().unwrap(), runs[1]["id"].as_str().unwrap());
    let d = json(&ws.hone(&["diff", a, b, "--json"]).ok().stdout);
    let params: Vec<&str> =
        d["params"].as_array().unwrap().iter().map(|p| p[1].as_str().unwrap()).collect();
    assert_eq!(params, ["cmd"], "{d}");
    let keys: Vec<&str> =
        d["keys"].as_array().unwrap().iter().map(|k| k[0].as_str().unwrap()).collect();
    assert_eq!(keys, ["double"]);
    assert_eq!(d["run"][0][0], "overrides");
    let text = ws.hone(&["diff", "-3", "-2"]).ok().stdout;
    assert!(
        text.contains("stages whose key changed: double") && text.contains("double.cmd"),
        "{text}"
    );
    // By default the last two runs; a bad id is a usage error that says what to do.
    ws.hone(&["diff"]).ok().stdout_has(&format!("b: {}", runs[0]["id"].as_str().unwrap()));
    ws.hone(&["diff", "19990101"])
        .code(2)
        .stderr_has("no recorded run `19990101`")
        .stderr_has("hone runs");
    ws.hone(&["diff", "-9"]).code(2).stderr_has("there are 3 recorded runs");
}
