//! Reporters: turn engine [`Event`]s into what a person or a program reads.
//!
//! Human: one line per stage as it is resolved (cached / ran / failed, with times, reasons
//! and metrics) and live progress bars with ETA for running stages, on stderr. JSON: one
//! event per line on stdout.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hone_engine::events::{Event, EventSink};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct JsonReporter;

impl EventSink for JsonReporter {
    fn emit(&self, event: Event) {
        if let Ok(line) = serde_json::to_string(&event) {
            println!("{line}");
        }
    }
}

pub struct HumanReporter {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl HumanReporter {
    pub fn new() -> Self {
        HumanReporter {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn line(&self, s: String) {
        if self.multi.is_hidden() {
            eprintln!("{s}");
        } else {
            let _ = self.multi.println(s);
        }
    }

    /// A spinner for a running stage (progress events turn it into a bar).
    fn spinner(&self, stage: String) {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("  {spinner} {prefix} {elapsed} {msg}").unwrap(),
        );
        bar.set_prefix(stage.clone());
        bar.enable_steady_tick(Duration::from_millis(120));
        self.bars.lock().unwrap().insert(stage, bar);
    }

    fn bar(&self, stage: &str) -> Option<ProgressBar> {
        self.bars.lock().unwrap().get(stage).cloned()
    }
}

fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0}ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

fn value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.4}"),
            _ => n.to_string(),
        },
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `{"kept": 3, "reasons": {"short": 2}}` → `kept=3 reasons.short=2`.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&p, v, out);
            }
        }
        v => out.push(format!("{prefix}={}", value(v))),
    }
}

impl EventSink for HumanReporter {
    fn emit(&self, event: Event) {
        match event {
            Event::RunStarted { pipeline, stages } => self.line(format!(
                "hone: running `{pipeline}` ({stages} stage{})",
                if stages == 1 { "" } else { "s" }
            )),
            Event::StageCached { stage, artifact, from: None, .. } => {
                self.line(format!("  cached  {stage}  [{}]", artifact.short()))
            }
            Event::StageCached { stage, artifact, from: Some(remote), .. } => {
                self.line(format!("  fetched {stage}  [{}]  from {remote}", artifact.short()))
            }
            Event::StageStarted { stage, reasons, .. } => {
                self.line(format!("  run     {stage}: {}", reasons.join("; ")));
                self.spinner(stage);
            }
            Event::StageSubmitted { stage, job, reasons, after, .. } => {
                let after = if after.is_empty() {
                    String::new()
                } else {
                    format!(" after {}", after.join(","))
                };
                self.line(format!("  submit  {stage}  job {job}{after}: {}", reasons.join("; ")));
            }
            Event::StageFollowed { stage, job, submission, .. } => {
                self.line(format!("  follow  {stage}  job {job}: already submitted by an earlier run ({}); not submitted again", submission.display()));
            }
            Event::JobState { stage, job, state, reason } => {
                let reason = if reason.is_empty() { String::new() } else { format!(" ({reason})") };
                self.line(format!("  slurm   {stage}  job {job} {state}{reason}"));
                if state == "RUNNING" && self.bar(&stage).is_none() {
                    self.spinner(stage);
                }
            }
            Event::Progress { stage, done, total, message } => {
                if let Some(bar) = self.bar(&stage) {
                    if let Some(t) = total
                        && bar.length() != Some(t)
                    {
                        bar.set_length(t);
                        bar.set_style(
                            ProgressStyle::with_template(
                                "  {prefix} [{bar:30}] {pos}/{len} {elapsed}<{eta} {msg}",
                            )
                            .unwrap()
                            .progress_chars("=> "),
                        );
                    }
                    bar.set_position(done);
                    bar.set_message(message);
                }
            }
            Event::Metric { .. } => {}
            Event::StageFinished { stage, seconds, unchanged, metrics, artifact, .. } => {
                if let Some(bar) = self.bars.lock().unwrap().remove(&stage) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                let note =
                    if unchanged { " (output unchanged: dependents stay cached)" } else { "" };
                self.line(format!(
                    "  ran     {stage}  {}  [{}]{note}",
                    secs(seconds),
                    artifact.short()
                ));
                // Scalars on one line; structured metrics (a filter's counts) one per line.
                let (flat, nested): (Vec<_>, Vec<_>) =
                    metrics.iter().partition(|(_, v)| !v.is_object());
                if !flat.is_empty() {
                    let m: Vec<String> =
                        flat.iter().map(|(k, v)| format!("{k}={}", value(v))).collect();
                    self.line(format!("          {}", m.join("  ")));
                }
                for (k, v) in nested {
                    let mut parts = Vec::new();
                    flatten("", v, &mut parts);
                    self.line(format!("          {k}: {}", parts.join(" ")));
                }
            }
            Event::StageFailed { stage, error, log } => {
                if let Some(bar) = self.bars.lock().unwrap().remove(&stage) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                let mut s = format!("  FAILED  {stage}: {}", error.replace('\n', "\n          "));
                if !log.as_os_str().is_empty() {
                    s.push_str(&format!("\n          log: {}", log.display()));
                }
                self.line(s);
            }
            Event::StageSkipped { stage, because } => {
                self.line(format!("  skipped {stage}: {because}"))
            }
            Event::StageAwaiting { stage, message } => {
                if let Some(bar) = self.bars.lock().unwrap().remove(&stage) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                self.line(format!("  waiting {stage}: {}", message.replace('\n', "\n          ")));
            }
            Event::RunFinished { ran, cached, failed, skipped, awaiting, seconds } => {
                let mut s = format!("hone: {ran} ran, {cached} cached");
                if failed > 0 {
                    s.push_str(&format!(", {failed} failed"));
                }
                if skipped > 0 {
                    s.push_str(&format!(", {skipped} skipped"));
                }
                if awaiting > 0 {
                    s.push_str(&format!(", {awaiting} awaiting input"));
                }
                s.push_str(&format!(" in {}", secs(seconds)));
                self.line(s);
            }
        }
    }
}
