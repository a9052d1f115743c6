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
    // A damaged record: the diff that needs it names the file; the listing still works.
    let oldest = runs[2]["id"].as_str().unwrap();
    ws.write(&format!(".hone/history/{oldest}.json"), "{ not json");
    ws.hone(&["diff", oldest, "-1"])
        .code(4)
        .stderr_has(&format!("{oldest}.json` is not a run record"));
    ws.hone(&["runs"]).ok().stdout_has(oldest);
}

/// `--sweep` runs the cross product as variants: what they share runs once, a failing
/// variant stops only its own stages, and each variant is recorded as a run.
#[test]
fn a_sweep_runs_shared_stages_once_and_each_variant_on_its_own() {
    let ws = Ws::new();
    let guarded = PIPELINE.replace("echo $((", "test ${vars.factor} != 0 || exit 3; echo $((");
    ws.write("pipeline.yaml", &guarded).write("n.txt", "3\n");
    let plan = ws.hone(&["plan", "--sweep", "vars.factor=2,0"]).ok().stdout;
    assert!(plan.contains("variant 1: vars.factor=2  (double@1)"), "{plan}");
    assert!(plan.contains("variant 2: vars.factor=0  (double@2)"), "{plan}");
    assert!(plan.contains("2 to run, 0 cached") || plan.contains("3 to run, 0 cached"), "{plan}");

    let out = ws.hone(&["run", "--sweep", "vars.factor=2,0,5", "--json"]).code(1);
    let started: Vec<String> = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "stage_finished")
        .map(|e| e["stage"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(started.iter().filter(|s| *s == "make").count(), 1, "shared: once: {started:?}");
    assert!(started.contains(&"double@1".to_string()) && started.contains(&"double@3".to_string()));
    let runs = json(&ws.hone(&["runs", "--json"]).ok().stdout);
    let outcomes: Vec<(&str, &str)> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["overrides"][0].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        [("vars.factor=5", "ok"), ("vars.factor=0", "failed"), ("vars.factor=2", "ok")]
    );
    // The variants' results are in the store: a plain run with the first variant's value is
    // all cached, and the first and third variants differ in `double` only.
    let out = ws.hone(&["run", "-s", "vars.factor=2"]).ok();
    assert_eq!(out.cached(), ["double", "make"]);
    let d = json(&ws.hone(&["diff", "-4", "-2", "--json"]).ok().stdout);
    let keys: Vec<&str> =
        d["keys"].as_array().unwrap().iter().map(|k| k[0].as_str().unwrap()).collect();
    assert_eq!(keys, ["double"], "{d}");

    // The report's run table: one rendering per column, each header a link to its order.
    let page = ws.hone(&["report"]).ok().stdout;
    let html = std::fs::read_to_string(page.trim()).unwrap();
    let runs = html.split("<section id=\"runs\">").nth(1).expect("a runs section");
    let runs = &runs[..runs.find("</section>").unwrap()];
    let tables: Vec<&str> = runs.split("<div class=\"sorted").skip(1).collect();
    let header = &tables[0][..tables[0].find("</tr>").unwrap()];
    let columns: Vec<&str> = header
        .split("<a href=\"#runs-by-")
        .skip(1)
        .map(|c| &c[c.find("\">").unwrap() + 2..c.find("</a>").unwrap()])
        .collect();
    assert_eq!(tables.len(), columns.len(), "{columns:?}");
    assert_eq!(&columns[..4], ["run", "outcome", "overrides", "double.cmd"], "{columns:?}");
    assert!(header.contains("<a href=\"#runs-by-3\">double.cmd</a>"));
    // Sorted by the overrides column: text order.
    let by = tables[2];
    let (f0, f2, f5) = (
        by.find("vars.factor=0").unwrap(),
        by.find("vars.factor=2").unwrap(),
        by.find("vars.factor=5").unwrap(),
    );
    assert!(f0 < f2 && f2 < f5, "{by}");
    assert!(!html.contains("<script"));

    ws.hone(&["run", "--sweep", "vars.factor"]).code(2).stderr_has("has no `=`");
    ws.hone(&["run", "--sweep", "seed=1,2"]).code(2).stderr_has("one per run");
    ws.hone(&["run", "--sweep", "vars.factor=1,2", "--until", "make"])
        .code(2)
        .stderr_has("does not combine with `--only` or `--until`");
}
