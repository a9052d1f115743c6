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
        let mut c = Command::new(hone_bin());
        c.args(args).current_dir(self.path()).env_remove("HONE_LOG");
        c
    }

    pub fn hone(&self, args: &[&str]) -> Out {
        Out::from(self.cmd(args).output().unwrap())
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
        assert_eq!(self.code, 0, "expected success\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn code(self, code: i32) -> Out {
        assert_eq!(self.code, code, "expected exit {code}\n--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr);
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
        let v: serde_json::Value = serde_json::from_str(&self.stdout).expect("plan --json prints JSON");
        v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_string(),
                    s["action"].as_str().unwrap().to_string(),
                    s["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect(),
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
