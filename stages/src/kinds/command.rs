//! `command`: run any shell command as a stage.
//!
//! ```yaml
//! report:
//!   uses: command
//!   inputs: { data: corpus }
//!   with:
//!     cmd: "wc -l $HONE_IN_data/train.jsonl > $HONE_OUT/lines.txt"
//!     deps: [scripts/report.py]      # workspace files whose content enters the key
//!     env: { LC_ALL: C }
//! ```
//!
//! The command runs with `sh -c` in the workspace. It reads input artifacts from
//! `$HONE_IN_<name>` (a directory; several joined with `:` for a list) and writes its outputs
//! into `$HONE_OUT`. `$HONE_SEED`, `$HONE_STAGE` and `$HONE_CHECKPOINT` are set too. Its
//! stdout and stderr go to the stage's log; a non-zero exit fails the stage with the tail of
//! its stderr.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use hone_engine::digest::Digest;
use hone_engine::stage::{ANY, DepCx, Inputs, ParamProblem, Port, RunCx, Stage, StageError};
use serde::{Deserialize, Serialize};

pub struct Command;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The shell command (`sh -c`).
    pub cmd: String,
    /// Workspace paths (files or directories) the command reads; their content is in the key.
    #[serde(default)]
    pub deps: Vec<PathBuf>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Lines of stderr kept for the failure message.
const STDERR_TAIL: usize = 20;

impl Stage for Command {
    type Params = Params;
    const KIND: &'static str = "command";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "run a shell command; inputs in $HONE_IN_<name>, outputs to $HONE_OUT";
    const INPUTS: Inputs = Inputs::Open;
    const OUTPUTS: &'static [Port] = &[Port::required("out", ANY)];

    fn validate(p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if p.cmd.trim().is_empty() {
            problems.push(
                ParamProblem::at(&["cmd"], "`cmd` is empty").help("give the shell command to run"),
            );
        }
        for (i, d) in p.deps.iter().enumerate() {
            if d.is_absolute()
                || d.components().any(|c| matches!(c, std::path::Component::ParentDir))
            {
                problems.push(ParamProblem {
                    path: vec![
                        hone_engine::yaml::PathSeg::Key("deps".into()),
                        hone_engine::yaml::PathSeg::Index(i),
                    ],
                    message: format!("dep `{}` must be a path inside the workspace", d.display()),
                    help: Some("use a relative path without `..`".into()),
                });
            }
        }
        problems
    }

    fn external_deps(p: &Params, cx: &DepCx) -> Result<Vec<(String, Digest)>, StageError> {
        p.deps.iter().map(|d| Ok((format!("dep `{}`", d.display()), cx.hash_path(d)?))).collect()
    }

    fn run(p: &Params, cx: &RunCx) -> Result<(), StageError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(cx.log_path)
            .map_err(StageError::io("cannot open the stage log"))?;
        let mut command = Process::new("sh");
        command
            .arg("-c")
            .arg(&p.cmd)
            .current_dir(cx.workspace)
            .env("HONE_OUT", cx.out_dir)
            .env("HONE_SEED", cx.seed.to_string())
            .env("HONE_STAGE", cx.stage_id)
            .env("HONE_CHECKPOINT", cx.checkpoint_dir)
            .envs(&p.env)
            // Its own process group, so stopping the stage stops everything it started.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(StageError::io("cannot open the stage log"))?)
            .stderr(Stdio::piped());
        for (name, dirs) in cx.inputs {
            command.env(format!("HONE_IN_{name}"), join_paths(dirs));
        }
        let mut child = command.spawn().map_err(StageError::io("cannot start `sh`"))?;

        // Copy stderr into the log, keeping its last lines for the error message.
        let stderr = child.stderr.take().expect("piped");
        // The copy ends when the command closes stderr (normally: when it exits), so waiting on
        // it wakes at once, while the timeout lets a cancelled run kill the command.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut log = log;
            let mut tail: VecDeque<String> = VecDeque::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if tail.len() == STDERR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            let _ = tx.send(tail);
        });
        let tail = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(tail) => break tail,
                Err(_) if cx.is_cancelled() => {
                    // SAFETY: kill(2) with a negative pid signals the process group we created.
                    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                    let _ = child.wait();
                    return Err(StageError::Cancelled);
                }
                Err(_) => {}
            }
        };
        let status = child.wait().map_err(StageError::io("cannot wait for the command"))?;
        if status.success() {
            return Ok(());
        }
        let how = match status.code() {
            Some(c) => format!("exited with status {c}"),
            None => "was killed by a signal".to_string(),
        };
        let mut msg = format!("command {how}: {}", p.cmd);
        if !tail.is_empty() {
            msg.push_str("\n--- last lines of its stderr ---\n");
            msg.push_str(&Vec::from(tail).join("\n"));
        }
        Err(StageError::Failed(msg))
    }
}

fn join_paths(dirs: &[PathBuf]) -> String {
    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":")
}
