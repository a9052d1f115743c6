//! A small fluent helper: a temp workspace with files, and `hone` runs in it.

use std::path::Path;
use std::process::{Command, Output};

pub struct Ws {
    pub dir: tempfile::TempDir,
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn hone_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hone")
}

impl Ws {
    pub fn new() -> Ws {
        Ws { dir: tempfile::tempdir().unwrap() }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, content: &str) -> &Ws {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap()
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        self.wrapped(&[], args)
    }

    /// `hone ARGS` run through `wrapper` (a program and its arguments, such as an emulator),
    /// in this workspace with the same environment as [`Ws::cmd`].
    pub fn wrapped(&self, wrapper: &[&str], args: &[&str]) -> Command {
        let mut c = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(hone_bin());
                c
            }
            None => Command::new(hone_bin()),
        };
        c.args(args)
            .current_dir(self.path())
            .env_remove("HONE_LOG")
            .env_remove("MLFLOW_TRACKING_URI")
            .env_remove("MLFLOW_EXPERIMENT_NAME")
            .env_remove("HONE_REMOTE")
            .env("XDG_CONFIG_HOME", self.path().join(".config"));
        c
    }

    pub fn hone(&self, args: &[&str]) -> Out {
        Out::from(self.cmd(args).output().unwrap())
    }

    /// `hone CMD… PIPELINE --workspace WS -s SET…` for a pipeline of the repository
    /// (`pipelines/…`, relative to it), with each of `sets` (a test's shrinking overrides and
    /// its own) as `-s`.
    pub fn pipeline(&self, cmd: &[&str], pipeline: &str, sets: &[&[&str]]) -> Out {
        let yaml = Path::new(env!("CARGO_MANIFEST_DIR")).join(pipeline);
        let w = self.path().to_str().unwrap().to_string();
        let mut args = cmd.to_vec();
        args.extend([yaml.to_str().unwrap(), "--workspace", &w]);
        for s in sets.iter().copied().flatten() {
            args.extend(["-s", s]);
        }
        self.hone(&args)
    }

    /// `hone show STAGE --json` of such a pipeline: the stage's output path and metrics.
    pub fn show(&self, pipeline: &str, stage: &str, sets: &[&[&str]]) -> serde_json::Value {
        serde_json::from_str(&self.pipeline(&["show", stage, "--json"], pipeline, sets).ok().stdout)
            .expect("show --json prints JSON")
    }

    /// Number of artifacts in the store.
    pub fn objects(&self) -> usize {
        std::fs::read_dir(self.path().join(".hone/objects")).map(|d| d.count()).unwrap_or(0)
    }
}

impl From<Output> for Out {
    fn from(o: Output) -> Out {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Out {
    #[track_caller]
    pub fn ok(self) -> Out {
        assert_eq!(
            self.code, 0,
            "expected success\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn code(self, code: i32) -> Out {
        assert_eq!(
            self.code, code,
            "expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "hone panicked:\n{}", self.stderr);
        self
    }

    #[track_caller]
    pub fn stderr_has(self, s: &str) -> Out {
        assert!(self.stderr.contains(s), "stderr lacks {s:?}:\n{}", self.stderr);
        self
    }

    #[track_caller]
    pub fn stdout_has(self, s: &str) -> Out {
        assert!(self.stdout.contains(s), "stdout lacks {s:?}:\n{}", self.stdout);
        self
    }

    /// Stage ids reported as run (`  ran     ID`) in the human output.
    pub fn ran(&self) -> Vec<String> {
        self.stage_lines("  ran     ")
    }

    pub fn cached(&self) -> Vec<String> {
        self.stage_lines("  cached  ")
    }

    fn stage_lines(&self, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .stderr
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .collect();
        v.sort();
        v
    }

    /// `hone plan --json` as (id, action, reasons).
    pub fn plan(&self) -> Vec<(String, String, Vec<String>)> {
        let v: serde_json::Value =
            serde_json::from_str(&self.stdout).expect("plan --json prints JSON");
        v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_string(),
                    s["action"].as_str().unwrap().to_string(),
                    s["reasons"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| r.as_str().unwrap().to_string())
                        .collect(),
                )
            })
            .collect()
    }
}

/// Sorted ids.
pub fn ids(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Whether a test that needs a system part outside Rust (Chromium, Slurm) can run. When
/// `available` is false it is skipped with a loud note on the terminal (written past the test
/// harness's capture, so `cargo test` shows it) saying how to get the part; with `require`
/// set in the environment (`.ci/run` sets it) it fails instead.
pub fn system_part(part: &str, available: bool, how: &str, require: &str) -> bool {
    if available {
        return true;
    }
    assert!(!env_flag(require), "{part} is not available here, and {require} is set: {how}");
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    let note = format!(
        "\nSKIPPED {test}: {part} is not available here. To run it: {how}. ({require}=1 makes this a failure.)\n"
    );
    // Not eprintln!: the harness captures that and shows it only for failing tests.
    use std::io::Write;
    let _ = std::io::stderr().write_all(note.as_bytes());
    false
}

/// An environment variable set to anything but empty or `0`.
pub fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v != "0" && !v.is_empty())
}
