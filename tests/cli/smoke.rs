//! The smoke pipeline (`pipelines/smoke.yaml`: the default recipe, tiny) end to end through
//! the `hone` binary: the first run runs every stage (RLHF's sample, rank, reward and ppo
//! included), a second is all cache hits, a new SFT learning rate reruns only `sft` and what
//! reads it, the evaluation compares base, SFT and PPO with a reward column, and `hone report`
//! writes a page that a real headless Chromium loads without errors and that shows the
//! evaluation table, PPO's curves and every model's sample answers.
//!
//! The pipeline runs once per test binary (a shared workspace); each test reads or adds to
//! its store, which is safe in parallel (runs take the workspace lock).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::support::Ws;

fn smoke_yaml() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/smoke.yaml")
}

/// The workspace where the smoke pipeline ran, and the first run's JSON events.
struct Smoke {
    ws: Ws,
    first: Vec<serde_json::Value>,
}

impl Smoke {
    /// `hone ARGS smoke.yaml --workspace WS`
    fn hone(&self, args: &[&str]) -> crate::support::Out {
        let mut all = args.to_vec();
        let (yaml, dir) = (smoke_yaml(), self.ws.path().to_str().unwrap().to_string());
        all.extend([yaml.to_str().unwrap(), "--workspace", &dir]);
        self.ws.hone(&all)
    }
}

fn smoke() -> &'static Smoke {
    static SMOKE: OnceLock<Smoke> = OnceLock::new();
    SMOKE.get_or_init(|| {
        let s = Smoke { ws: Ws::new(), first: Vec::new() };
        let first = events(&s.hone(&["run", "--json"]).ok().stdout);
        Smoke { first, ..s }
    })
}

fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event: {l}: {e}")))
        .collect()
}

/// Ids of the stages with events of this type.
fn stages_with(events: &[serde_json::Value], event: &str) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e["event"] == event)
        .map(|e| e["stage"].as_str().unwrap().to_string())
        .collect()
}

/// The stage ids of the pipeline and its edges (reader, input), from `hone graph`.
fn graph(s: &Smoke) -> (BTreeSet<String>, Vec<(String, String)>) {
    let dot = s.hone(&["graph"]).ok().stdout;
    let mut ids = BTreeSet::new();
    let mut edges = Vec::new();
    for line in dot.lines().map(str::trim) {
        let quoted: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        if line.contains(" -> ") {
            edges.push((quoted[1].to_string(), quoted[0].to_string()));
        } else if line.contains("[label=") {
            ids.insert(quoted[0].to_string());
        }
    }
    (ids, edges)
}

#[test]
fn the_smoke_pipeline_runs_end_to_end_then_a_rerun_is_all_cache_hits() {
    let s = smoke();
    let (ids, _) = graph(s);
    for id in ["sft", "sample", "rank", "reward", "ppo", "eval"] {
        assert!(ids.contains(id), "the smoke pipeline lacks `{id}`: {ids:?}");
    }
    assert_eq!(stages_with(&s.first, "stage_finished"), ids, "the first run runs every stage");
    assert!(stages_with(&s.first, "stage_failed").is_empty());
    let again = events(&s.hone(&["run", "--json"]).ok().stdout);
    assert_eq!(stages_with(&again, "stage_cached"), ids);
    assert!(stages_with(&again, "stage_started").is_empty(), "nothing runs the second time");
    let done = again.last().unwrap();
    assert_eq!(
        (done["event"].as_str(), done["ran"].as_u64(), done["cached"].as_u64()),
        (Some("run_finished"), Some(0), Some(ids.len() as u64))
    );
    // The evaluation compares the base, the fine-tuned and the PPO model, each with a mean
    // reward under the reward model.
    let out = output(s, "eval");
    let table = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        table.lines().any(|l| l.starts_with("| model |")
            && l.ends_with("| mean reward | KL to reference (nats) |")),
        "{table}"
    );
    for m in ["base", "sft", "ppo"] {
        assert!(table.contains(&format!("| {m} |")), "no row for {m}: {table}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let models = report["models"].as_array().unwrap();
    assert_eq!(
        models.iter().map(|m| m["name"].as_str().unwrap()).collect::<Vec<_>>(),
        ["base", "sft", "ppo"]
    );
    for m in models {
        assert!(m["mean_reward"].as_f64().is_some_and(f64::is_finite), "{m}");
    }
    // A person's run (not --json) ends with that table and the command that writes the report.
    let human = s.hone(&["run"]).ok().stdout;
    let mut lines = human.lines().skip_while(|l| !l.starts_with("eval: "));
    assert_eq!(
        lines.next(),
        Some(format!("eval: {} held-out prompts:", report["prompts"]).as_str()),
        "{human}"
    );
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split("  ")
        .filter(|c| !c.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        ["model", "answer accuracy", "mean reward", "mean length", "KL to reference"],
        "{human}"
    );
    for m in models {
        let row: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
        let percent = format!("{:.1}%", 100.0 * m["accuracy"].as_f64().unwrap());
        let reward = format!("{:.3}", m["mean_reward"].as_f64().unwrap());
        let length = format!("{:.1}", m["mean_length"].as_f64().unwrap());
        let kl = m["kl_to_reference"].as_f64().map_or("-".to_string(), |k| format!("{k:.3}"));
        assert_eq!(row, [m["name"].as_str().unwrap(), &percent, &reward, &length, &kl], "{human}");
    }
    // The KL to the reference (sft): none for the base model (not a chat model), 0 for sft
    // itself, more for the policy PPO moved.
    let kl = |i: usize| models[i]["kl_to_reference"].as_f64();
    assert_eq!((kl(0), kl(1)), (None, Some(0.0)), "{report}");
    assert!(kl(2).is_some_and(|k| k > 0.0), "{report}");
    assert!(
        human.contains("`hone report ") && human.contains(".html; open it in a browser"),
        "{human}"
    );
}

/// The output directory of a stage, from `hone show --json`.
fn output(s: &Smoke, stage: &str) -> PathBuf {
    let shown = s.hone(&["show", stage, "--json"]).ok();
    PathBuf::from(
        serde_json::from_str::<serde_json::Value>(&shown.stdout).unwrap()["output"]
            .as_str()
            .unwrap(),
    )
}

/// PPO trained the SFT model against the reward model: every iteration logged TRL's
/// statistics, and the output is a new chat model.
#[test]
fn ppo_logs_its_statistics_every_iteration_and_writes_a_new_chat_model() {
    let s = smoke();
    let ppo = output(s, "ppo");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(ppo.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let iterations: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l.get("objective/scores").is_some()).collect();
    assert_eq!(
        iterations.len(),
        2,
        "steps 8 / (epochs 2 × 16 rollouts / batch 8) = 2 iterations: {lines:?}"
    );
    for l in &iterations {
        for k in ["objective/scores", "objective/kl", "beta", "objective/entropy", "answer_length"]
        {
            assert!(l[k].as_f64().is_some_and(f64::is_finite), "{k} in {l}");
        }
    }
    assert!(lines.iter().any(|l| l["val_reward"].is_number()), "a held-out evaluation: {lines:?}");
    let read = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert_ne!(read(&ppo), read(&output(s, "sft")), "PPO changed the policy");
    assert!(
        std::fs::read_to_string(ppo.join("tokenizer_config.json"))
            .unwrap()
            .contains("chat_template")
    );
}

#[test]
fn a_new_sft_learning_rate_reruns_only_sft_and_what_reads_it() {
    let s = smoke();
    let (ids, edges) = graph(s);
    // sft and everything downstream of it, from the graph.
    let mut after: BTreeSet<String> = ["sft".to_string()].into();
    while let Some((reader, _)) =
        edges.iter().find(|(r, i)| after.contains(i) && !after.contains(r))
    {
        after.insert(reader.clone());
    }
    assert!(after.contains("eval") && !after.contains("base"), "{after:?}");
    let lr = "stages.sft.with.lr=5e-4";
    let plan = s.hone(&["plan", "--json", "-s", lr]).ok().plan();
    let will_run: BTreeSet<String> =
        plan.iter().filter(|(_, a, _)| a == "run").map(|(id, ..)| id.clone()).collect();
    assert_eq!(will_run, after);
    let sft = plan.iter().find(|(id, ..)| id == "sft").unwrap();
    assert!(
        sft.2.iter().any(|r| r.starts_with("param `lr` changed from 0.001 to 0.0005")),
        "{:?}",
        sft.2
    );

    let run = events(&s.hone(&["run", "--json", "-s", lr]).ok().stdout);
    assert_eq!(stages_with(&run, "stage_started"), after);
    assert_eq!(stages_with(&run, "stage_cached"), ids.difference(&after).cloned().collect());
    let sft = run.iter().find(|e| e["event"] == "stage_finished" && e["stage"] == "sft").unwrap();
    assert_eq!(sft["unchanged"], false, "a new learning rate gives new weights");
}

/// What Chromium made of a page: the DOM after loading, and the console messages (errors in
/// SVG attributes, scripts, ...) it logged.
struct Loaded {
    dom: String,
    console: Vec<String>,
}

/// The Chromium to run: `$HONE_CHROMIUM`, else `chromium` on the PATH.
fn chromium_bin() -> std::ffi::OsString {
    std::env::var_os("HONE_CHROMIUM").unwrap_or_else(|| "chromium".into())
}

/// Whether Chromium runs here; if not, the test is skipped loudly (or fails where
/// `HONE_REQUIRE_CHROMIUM` is set, as in `.ci/run`).
fn have_chromium() -> bool {
    let runs =
        Command::new(chromium_bin()).arg("--version").output().is_ok_and(|o| o.status.success());
    crate::support::system_part(
        "Chromium",
        runs,
        "install Debian's package: `sudo apt-get install -y chromium`",
        "HONE_REQUIRE_CHROMIUM",
    )
}

/// Loads `page` in headless Chromium (Debian's `chromium` package; `.ci/run` installs it)
/// with a fresh profile, nothing fetched from the network.
fn chromium(page: &Path) -> Loaded {
    let profile = tempfile::tempdir().unwrap();
    let mut c = Command::new(chromium_bin());
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(["--enable-logging=stderr", "--dump-dom"]);
    let out = c.arg(format!("file://{}", page.display())).output().unwrap_or_else(|e| {
        panic!("cannot run `chromium` ({e}): install it (Debian: `apt-get install -y chromium`), as .ci/run does")
    });
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(String::from)
        .collect();
    Loaded { dom: String::from_utf8_lossy(&out.stdout).into_owned(), console }
}

/// Loads the page as HTML and, copied to `.xhtml`, with the browser's strict XML parser: the
/// problems found (console messages, XML parse errors).
fn problems(page: &Path) -> (Loaded, Vec<String>) {
    let html = chromium(page);
    let mut found = html.console.clone();
    let xhtml = page.with_extension("xhtml");
    std::fs::copy(page, &xhtml).unwrap();
    let strict = chromium(&xhtml);
    found.extend(strict.console);
    if strict.dom.contains("parsererror") {
        found.push(format!(
            "XML parse error: {}",
            strict
                .dom
                .split("parsererror")
                .nth(1)
                .unwrap_or("")
                .chars()
                .take(300)
                .collect::<String>()
        ));
    }
    (html, found)
}

#[test]
fn the_report_loads_in_chromium_without_errors_and_shows_the_evaluation() {
    let s = smoke();
    // README: `hone report` (prints the page's path; opens nothing).
    let out = s.hone(&["report"]).ok();
    let page = PathBuf::from(out.stdout.trim());
    assert!(page.is_absolute() && page.extension().is_some_and(|e| e == "html"), "{}", out.stdout);
    let html = std::fs::read_to_string(&page).unwrap();

    // The structure: every stage in the graph and the table, curves of both training stages,
    // the filter counts, the evaluation table and sample conversations.
    let (ids, _) = graph(s);
    for id in &ids {
        assert!(html.contains(&format!("<tr id=\"stage-{id}\">")), "no row for {id}");
        assert!(html.contains(&format!("<title>{id} (")), "no graph node for {id}");
    }
    for needle in [
        "<h3 id=\"curves-base\">",
        "<h3 id=\"curves-sft\">",
        "aria-label=\"loss\"",
        "aria-label=\"lr\"",
        "<code>dedup-exact</code>",
        "<table class=\"evaluation\">",
        "<th>answer accuracy</th>",
        "<div class=\"sample\">",
    ] {
        assert!(html.contains(needle), "the report lacks {needle:?}");
    }
    // PPO's curves (reward, KL, β, ...), the reward column, and PPO's answers among the samples.
    let ppo = html.split("<h3 id=\"curves-ppo\">").nth(1).expect("the report has PPO's curves");
    let ppo = &ppo[..ppo.find("<h3 ").unwrap_or(ppo.len())];
    for chart in ["objective/scores", "objective/kl", "beta", "objective/entropy", "reward", "loss"]
    {
        assert!(ppo.contains(&format!("aria-label=\"{chart}\"")), "PPO's curves lack {chart:?}");
    }
    assert!(html.contains("<th>mean reward</th>"), "the evaluation table has no reward column");
    let samples = html.split("<section id=\"samples\">").nth(1).unwrap();
    for m in ["base", "sft", "ppo"] {
        assert!(samples.contains(&format!("<tr><th>{m}</th>")), "no sample answer of {m}");
    }
    // Self-contained: no scripts, links only to its own sections, nothing to fetch.
    assert!(!html.contains("<script") && !html.contains("src="));
    assert!(html.split("url(").skip(1).all(|u| u.starts_with('#')), "a url() leaves the page");
    assert!(html.split("href=\"").skip(1).all(|h| h.starts_with('#')), "a link leaves the page");

    if !have_chromium() {
        return;
    }
    let (loaded, problems) = problems(&page);
    assert!(
        problems.is_empty(),
        "Chromium found problems in {}:\n{}",
        page.display(),
        problems.join("\n")
    );
    let table = loaded
        .dom
        .split("<table class=\"evaluation\">")
        .nth(1)
        .expect("the evaluation table is in the DOM");
    let table = &table[..table.find("</table>").unwrap()];
    assert!(
        table.contains("<td>base</td>")
            && table.contains("<td>sft</td>")
            && table.contains("<td>ppo</td>"),
        "{table}"
    );
    assert_eq!(
        loaded.dom.matches("<svg").count(),
        html.matches("<svg").count(),
        "every SVG made it into the DOM"
    );
    // The runs this workspace recorded, as a table per sortable column.
    let runs = loaded.dom.split("<section id=\"runs\">").nth(1).expect("the runs section");
    assert!(runs.contains("id=\"runs-by-0\"") && runs.contains("<table class=\"runs\">"));
}

#[test]
fn the_chromium_check_catches_a_broken_page() {
    if !have_chromium() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("bad.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\"><body><p>a <b>b</p></b>\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"><polyline points=\"NaN,1 2,3\"/></svg></body></html>\n",
    )
    .unwrap();
    let (_, problems) = problems(&page);
    assert!(problems.iter().any(|p| p.contains("<polyline> attribute points")), "{problems:?}");
    assert!(problems.iter().any(|p| p.starts_with("XML parse error")), "{problems:?}");
}

#[test]
fn a_report_path_that_cannot_be_written_is_a_clear_error() {
    let ws = Ws::new();
    ws.write("pipeline.yaml", "stages:\n  a: { uses: command, with: { cmd: \"true\" } }\n")
        .write("file", "");
    // Before any run: every stage never ran, and that is a page, not an error.
    let page = PathBuf::from(ws.hone(&["report"]).ok().stdout.trim());
    assert!(std::fs::read_to_string(page).unwrap().contains("never ran"));
    ws.hone(&["report", "-o", "file/report.html"])
        .code(4)
        .stderr_has("cannot write the report to `file/report.html`")
        .stderr_has("-o FILE");
}
