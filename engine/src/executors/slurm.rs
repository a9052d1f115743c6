//! The Slurm executor: every stage that must run becomes one `sbatch` job, submitted at once
//! with `--dependency=afterok:` on the jobs making its inputs, so Slurm schedules the DAG.
//!
//! Each job runs `hone exec-stage <stage>.job.json` on whichever node Slurm picks, against
//! the shared workspace: it computes its key once its inputs exist (a hit if an input
//! reproduced its output), commits its outputs atomically and leaves `<stage>.result.json`
//! for its dependents. A submission lives in `.hone/slurm/<id>/`: per stage the job file, the
//! batch script and the events the worker printed (`<stage>.events.jsonl`, its stdout); the
//! stage's log gets the worker's stderr. `submission.json` lists the jobs for `hone status`.
//!
//! [`Slurm`] follows the jobs with `squeue` (every state change is an [`Event::JobState`]),
//! forwards the workers' progress events, and reports how each ended. A failed or cancelled
//! job fails its stage (with the job id and log); Slurm cancels its dependents
//! (`--kill-on-invalid-dep=yes`), which are reported skipped.
//!
//! Where the nodes share no filesystem with the submitting host (`shared_fs: false`), the jobs
//! go through the run's remote cache: the job travels in its batch script, works in a store of
//! its node's, fetches its inputs (the submitting host pushes those it holds) and pushes its
//! result, and leaves its result, events and log on the remote ([`super::job::ViaRemote`]);
//! the submitting host copies them to where a job on a shared filesystem writes them once Slurm
//! says the job ended, and fetches the record.
//!
//! A run while an earlier submission's jobs are still queued or running (`--detach`, or a
//! follower that was stopped) does not submit their stages again: a stage whose earlier job
//! does the same work (same kind, params, seed and inputs, counting an input made by an
//! earlier job as that job's result) is followed ([`Event::StageFollowed`]) and recorded in
//! the new submission, and jobs submitted now depend on it and read its result.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::executor::{Cx, Executor, ExecutorKind, Launch, Person, Run, Settings, check_settings};
use super::job::{JobId, JobInput, JobResult, Outcome, StageJob, ViaRemote};
use crate::digest::ArtifactDigest;
use crate::events::{Event, EventSink};
use crate::files::{StoreError, write_atomic};
use crate::remote::{Fetched, Remote, RemoteError};
use crate::resources::{Resources, slurm_memory, slurm_time};
use crate::stage::ParamProblem;
use crate::workspace::Workspace;
use crate::yaml::PathSeg;

/// `kind: slurm`.
pub static KIND: ExecutorKind = ExecutorKind {
    name: "slurm",
    about: "one sbatch job per stage",
    keys: crate::introspect::field_names::<SlurmSettings>,
    settings: check_settings::<SlurmSettings>,
    detaches: true,
    open,
    still_running: Some(still_running),
};

/// The Slurm executor's keys of the pipeline's `executor:` block (its `time`, `cpus`,
/// `memory` and `gpus` are every executor's: the stages' default resources).
///
/// ```yaml
/// executor:
///   kind: slurm
///   partition: gpu
///   account: ml-team
///   gres: gpu:1
///   sbatch: ["--qos=high", "--constraint=a100"]
///   shared_fs: false     # the nodes do not see the workspace: go through the remote cache
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gres: Option<String>,
    /// Extra `sbatch` flags, passed as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sbatch: Vec<String>,
    /// `false` when the nodes do not see the workspace: the jobs exchange inputs and results
    /// through the run's remote cache instead (module doc). Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_fs: Option<bool>,
}

impl Settings for SlurmSettings {
    fn problems(&self) -> Vec<ParamProblem> {
        let mut out = Vec::new();
        for (i, flag) in self.sbatch.iter().enumerate() {
            if !flag.starts_with('-') {
                out.push(ParamProblem {
                    path: vec![PathSeg::Key("sbatch".into()), PathSeg::Index(i)],
                    message: format!("`{flag}` is not an sbatch flag"),
                    help: Some("write each flag as one item, e.g. `--qos=high`".into()),
                });
            }
        }
        out
    }
}

/// A Slurm executor for a run. The jobs run the `hone` binary `HONE_SLURM_BIN` names, else
/// this one (it must be reachable at that path on the nodes); `squeue` is asked every
/// `HONE_SLURM_POLL_MS` milliseconds (default 1000).
fn open<'p>(cx: &Cx<'p>, run: Run<'_, 'p>) -> Result<(), String> {
    let hone = match std::env::var_os("HONE_SLURM_BIN") {
        Some(b) => PathBuf::from(b),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find the hone binary to submit: {e}"))?,
    };
    let poll_ms =
        std::env::var("HONE_SLURM_POLL_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let settings = SlurmSettings::of(cx.settings)?;
    let remote = match settings.shared_fs {
        Some(false) => Some(cx.remote.clone().ok_or_else(|| {
            "the Slurm executor's `shared_fs: false` needs a remote cache for the jobs to \
             exchange inputs and results through\n   = help: give `--remote URL`, set \
             HONE_REMOTE, or `hone cache remote URL` (docs/team.md)"
                .to_string()
        })?),
        _ => None,
    };
    let opts = SlurmOptions {
        settings,
        hone,
        poll: Duration::from_millis(poll_ms),
        detach: cx.detach,
        remote,
    };
    let mut slurm = Slurm::new(cx.ws, cx.pipeline, opts, cx.sink, cx.cancel, cx.person);
    if run(&mut slurm) && !slurm.left.is_empty() {
        cx.person.tell(&format!(
            "hone: {} stage(s) left running as Slurm jobs {}; `hone status` follows them",
            slurm.left.len(),
            slurm.left.join(",")
        ));
    }
    Ok(())
}

/// Ctrl-C during a run: cancel the jobs in flight? Asked of a person at a terminal; without
/// one, they are cancelled.
fn ask_to_cancel(person: &dyn Person, n: usize) -> bool {
    let question =
        format!("hone: {n} Slurm job(s) are queued or running. Cancel them (scancel)? [Y/n] ");
    match person.confirm(&question) {
        None => {
            person.tell(&format!("hone: cancelling {n} Slurm job(s)"));
            true
        }
        Some(true) => true,
        Some(false) => {
            person.tell("hone: leaving them running; `hone status` follows them");
            false
        }
    }
}

/// A run with another executor while jobs of an earlier submission are still queued or
/// running computes their stages again: say so (Slurm is asked only when a submission has
/// such jobs).
fn still_running(ws: &Workspace, pipeline: &str, run_by: &str) -> Option<String> {
    let jobs = in_flight(ws, pipeline).ok()?;
    if jobs.is_empty() {
        return None;
    }
    let list: Vec<String> =
        jobs.values().map(|j| format!("`{}` (job {})", j.stage, j.job)).collect();
    Some(format!(
        "Slurm jobs of an earlier submission are still computing {}; this {run_by} run computes what it needs of them again\n   = help: `hone run --executor slurm` follows those jobs instead of running them again; `hone status` shows them",
        list.join(", ")
    ))
}

/// How to submit and follow.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// Partition, account, gres and extra flags (from the `executor:` block).
    pub settings: SlurmSettings,
    /// The `hone` binary the jobs run (it must be reachable at this path on the nodes).
    pub hone: PathBuf,
    /// How often `squeue` is asked.
    pub poll: Duration,
    /// Return once everything is submitted (`hone run --detach`).
    pub detach: bool,
    /// The remote cache the jobs go through when the nodes share no filesystem
    /// (`shared_fs: false`).
    pub remote: Option<std::sync::Arc<crate::remote::Remote>>,
}

/// One submission's record, for `hone status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Submission {
    pub pipeline: String,
    pub created_unix: u64,
    pub jobs: Vec<SubmittedJob>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmittedJob {
    pub stage: String,
    pub job: String,
    pub log: PathBuf,
    pub events: PathBuf,
    pub result: PathBuf,
    pub after: Vec<String>,
}

impl SubmittedJob {
    /// The job file it runs, beside its result in the submission that submitted it.
    fn job_file(&self) -> PathBuf {
        self.result.with_file_name(format!("{}.job.json", self.stage))
    }
}

/// Slurm's view of a job: `(state, reason)`, from `squeue -t all`.
pub type JobStates = BTreeMap<String, (String, String)>;

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("cannot run `{cmd}`: {source} (is Slurm installed here? see docs/slurm.md)")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("`{cmd}` failed: {stderr}")]
    Failed { cmd: String, stderr: String },
    #[error("cannot write `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(
        "its input {artifact} is in the store without a record to push to the remote cache, so a node cannot fetch it; `hone cache verify` checks the store, and a run with `--executor local` makes the input again"
    )]
    Unpushable { artifact: String },
}

/// Where, on its node, Slurm writes the stderr of a job that goes through the remote cache
/// (`job`: its id, or sbatch's `%j`): the only trace of a worker that could not start.
fn node_stderr(job: &str) -> String {
    format!("/tmp/hone-slurm-{job}.err")
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> SlurmError + '_ {
    move |source| SlurmError::Io { path: path.to_path_buf(), source }
}

fn run_cmd(cmd: &str, args: &[String]) -> Result<String, SlurmError> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|source| SlurmError::Spawn { cmd: cmd.into(), source })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(SlurmError::Failed { cmd: format!("{cmd} {}", args.join(" ")), stderr });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The state and reason of each of `jobs` that Slurm still knows (`squeue -t all`); the
/// reason is empty where Slurm has none (its `None`).
pub fn job_states(jobs: &[String]) -> Result<JobStates, SlurmError> {
    let mut out = JobStates::new();
    for chunk in jobs.chunks(500) {
        let args = [
            "-h".to_string(),
            "-t".into(),
            "all".into(),
            "-o".into(),
            "%i|%T|%r".into(),
            "-j".into(),
            chunk.join(","),
        ];
        for line in run_cmd("squeue", &args)?.lines() {
            let mut f = line.trim().splitn(3, '|');
            if let (Some(id), Some(state), reason) = (f.next(), f.next(), f.next()) {
                out.insert(
                    id.to_string(),
                    (state.to_string(), reason.filter(|r| *r != "None").unwrap_or("").to_string()),
                );
            }
        }
    }
    Ok(out)
}

/// Cancel jobs (`scancel`).
pub fn cancel_jobs(jobs: &[String]) -> Result<(), SlurmError> {
    if jobs.is_empty() {
        return Ok(());
    }
    run_cmd("scancel", jobs).map(|_| ())
}

/// The `sbatch` flags for one stage: identity, files, dependencies, then where and with what.
pub fn sbatch_args(
    settings: &SlurmSettings,
    name: &str,
    events: &Path,
    log: &Path,
    dir: &Path,
    r: &Resources,
    after: &[String],
) -> Vec<String> {
    let mut a = vec![
        "--parsable".to_string(),
        format!("--job-name={name}"),
        format!("--output={}", events.display()),
        format!("--error={}", log.display()),
        "--open-mode=append".into(),
        format!("--chdir={}", dir.display()),
        "--kill-on-invalid-dep=yes".into(),
    ];
    if !after.is_empty() {
        a.push(format!("--dependency=afterok:{}", after.join(":")));
    }
    if let Some(p) = &settings.partition {
        a.push(format!("--partition={p}"));
    }
    if let Some(acct) = &settings.account {
        a.push(format!("--account={acct}"));
    }
    if let Some(g) = &settings.gres {
        a.push(format!("--gres={g}"));
    }
    if let Some(c) = r.cpus {
        a.push(format!("--cpus-per-task={c}"));
    }
    if let Some(m) = r.memory.as_deref().and_then(slurm_memory) {
        a.push(format!("--mem={m}"));
    }
    if let Some(g) = r.gpus {
        a.push(format!("--gpus={g}"));
    }
    if let Some(t) = r.time.as_deref().and_then(slurm_time) {
        a.push(format!("--time={t}"));
    }
    a.extend(settings.sbatch.iter().cloned());
    a
}

/// Slurm states after which a job never runs again.
fn terminal(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED"
            | "FAILED"
            | "CANCELLED"
            | "TIMEOUT"
            | "OUT_OF_MEMORY"
            | "NODE_FAIL"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "PREEMPTED"
            | "SPECIAL_EXIT"
            | "REVOKED"
    )
}

struct Tracked {
    index: usize,
    stage: String,
    job: String,
    log: PathBuf,
    events: PathBuf,
    /// Where its result appears (in an earlier submission's directory for a followed job).
    result: PathBuf,
    /// Bytes of the events file read so far.
    offset: u64,
    state: String,
    /// The worker's last `stage_finished`, `stage_cached` or `stage_failed` event.
    last: Option<Event>,
    /// Input stages made by other jobs (named when Slurm cancels this one).
    after_stages: Vec<String>,
    /// Polls since Slurm stopped knowing the job, or since it completed without a result.
    unknown_polls: u32,
}

pub struct Slurm<'a> {
    ws: &'a Workspace,
    opts: SlurmOptions,
    sink: &'a dyn EventSink,
    cancel: &'a AtomicBool,
    /// Asked once on Ctrl-C whether to cancel the jobs in flight or leave them running.
    person: &'a dyn Person,
    dir: PathBuf,
    submission: Submission,
    jobs: Vec<Tracked>,
    done: VecDeque<(usize, Outcome)>,
    /// Ctrl-C was answered: `Some(true)` cancel, `Some(false)` leave running.
    stopping: Option<bool>,
    /// Jobs of earlier submissions still in flight, by stage (asked of Slurm at the first start).
    earlier: Option<BTreeMap<String, SubmittedJob>>,
    /// The jobs left running on the cluster, in the order they were reported.
    left: Vec<JobId>,
    /// Without a shared filesystem: a record of each artifact in the store, read at the first
    /// job with an input from the store (the key its job fetches it by).
    records: Option<BTreeMap<ArtifactDigest, crate::store::Record>>,
}

impl<'a> Slurm<'a> {
    /// A new submission in `.hone/slurm/`, whose directory is made when it submits or
    /// follows its first job (a run that hands Slurm nothing leaves no record).
    pub fn new(
        ws: &'a Workspace,
        pipeline: &str,
        opts: SlurmOptions,
        sink: &'a dyn EventSink,
        cancel: &'a AtomicBool,
        person: &'a dyn Person,
    ) -> Slurm<'a> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let id = format!("{}-{:03}-{}", now.as_secs(), now.subsec_millis(), std::process::id());
        let dir = submissions_dir(ws).join(id);
        let submission = Submission {
            pipeline: pipeline.to_string(),
            created_unix: now.as_secs(),
            jobs: Vec::new(),
        };
        Slurm {
            ws,
            opts,
            sink,
            cancel,
            person,
            dir,
            submission,
            jobs: Vec::new(),
            done: VecDeque::new(),
            stopping: None,
            earlier: None,
            left: Vec::new(),
            records: None,
        }
    }

    fn submit(&mut self, l: Launch<'_>) -> Result<JobId, SlurmError> {
        let mut job = l.job;
        job.results = Some(self.dir.clone());
        let stage = job.stage.clone();
        if let Some(remote) = self.opts.remote.clone() {
            job.remote = Some(self.via_remote(&remote, &job)?);
        }
        let job_file = self.dir.join(format!("{stage}.job.json"));
        let json = serde_json::to_vec_pretty(&job).expect("job serialises");
        write_atomic(&job_file, &json)?;
        let script = self.dir.join(format!("{stage}.sh"));
        let hone = sh_quote(&self.opts.hone);
        let body = if job.remote.is_some() {
            // The node cannot read the job file: the script (which sbatch copies) carries it.
            format!(
                "#!/bin/sh\n# hone stage `{stage}` of `{}`, through the remote cache\n\
                 job=$(mktemp)\ncat > \"$job\" <<'HONE_JOB_END'\n{}\nHONE_JOB_END\n\
                 {hone} exec-stage \"$job\"\nrc=$?\nrm -f \"$job\"\nexit $rc\n",
                job.pipeline,
                String::from_utf8_lossy(&json)
            )
        } else {
            format!(
                "#!/bin/sh\n# hone stage `{stage}` of `{}`\nexec {hone} exec-stage {}\n",
                job.pipeline,
                sh_quote(&job_file)
            )
        };
        std::fs::write(&script, body).map_err(io_at(&script))?;
        if let Some(d) = job.log.parent() {
            std::fs::create_dir_all(d).map_err(io_at(d))?;
        }
        let events = self.dir.join(format!("{stage}.events.jsonl"));
        let name = format!("hone:{}:{stage}", job.pipeline);
        // Without a shared filesystem the worker leaves its events and log on the remote;
        // Slurm's files are the node's (its stderr, should the worker not start at all).
        let (slurm_out, slurm_err) = if job.remote.is_some() {
            (PathBuf::from("/dev/null"), PathBuf::from(node_stderr("%j")))
        } else {
            (events.clone(), job.log.clone())
        };
        let mut args = sbatch_args(
            &self.opts.settings,
            &name,
            &slurm_out,
            &slurm_err,
            &job.base,
            &job.resources,
            &l.after,
        );
        args.push(script.display().to_string());
        let out = run_cmd("sbatch", &args)?;
        // `--parsable` prints `jobid` or `jobid;cluster`.
        let id = out.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SlurmError::Failed {
                cmd: "sbatch".into(),
                stderr: format!("unexpected output {out:?}"),
            });
        }
        self.sink.emit(Event::StageSubmitted {
            stage: stage.clone(),
            job: id.clone(),
            log: job.log.clone(),
            reasons: l.reasons,
            after: l.after.clone(),
        });
        let result = super::job::result_path(&self.dir, &stage);
        self.track(
            l.index,
            SubmittedJob { stage, job: id.clone(), log: job.log, events, result, after: l.after },
        )?;
        Ok(id)
    }

    /// Record a job in this submission and follow it.
    fn track(&mut self, index: usize, j: SubmittedJob) -> Result<(), SlurmError> {
        let after_stages: Vec<String> = self
            .jobs
            .iter()
            .filter(|t| j.after.contains(&t.job))
            .map(|t| t.stage.clone())
            .collect();
        self.jobs.push(Tracked {
            index,
            stage: j.stage.clone(),
            job: j.job.clone(),
            log: j.log.clone(),
            events: j.events.clone(),
            result: j.result.clone(),
            offset: 0,
            state: String::new(),
            last: None,
            after_stages,
            unknown_polls: 0,
        });
        self.submission.jobs.push(j);
        let path = self.dir.join("submission.json");
        Ok(write_atomic(
            &path,
            &serde_json::to_vec_pretty(&self.submission).expect("submission serialises"),
        )?)
    }

    /// The submission's name: its directory's, and its exchange area's on the remote.
    fn name(&self) -> String {
        self.dir.file_name().unwrap_or_default().to_string_lossy().into_owned()
    }

    /// How a job goes through the remote cache: the records of its inputs from the store
    /// pushed (objects the remote lacks uploaded), and their keys for the job to fetch.
    fn via_remote(&mut self, remote: &Remote, job: &StageJob) -> Result<ViaRemote, SlurmError> {
        let mut fetch = Vec::new();
        for input in job.inputs.values().flatten() {
            let JobInput::Artifact(a) = input else { continue };
            let records = self.records.get_or_insert_with(|| {
                self.ws.store.records().into_iter().map(|r| (r.artifact, r)).collect()
            });
            let rec =
                records.get(a).ok_or_else(|| SlurmError::Unpushable { artifact: a.short() })?;
            remote.push(&self.ws.store, rec, &crate::remote::Quiet)?;
            fetch.push(rec.key);
        }
        Ok(ViaRemote { url: remote.url().to_string(), submission: self.name(), fetch })
    }

    /// What an ended job that went through the remote cache left there: its events, log
    /// and result, copied to where a job on a shared filesystem writes them.
    fn collect(&self, k: usize, remote: &Remote) {
        let t = &self.jobs[k];
        let submission = self.name();
        for (name, path) in [
            (ViaRemote::events_name(&t.stage), &t.events),
            (ViaRemote::log_name(&t.stage), &t.log),
            (ViaRemote::result_name(&t.stage), &t.result),
        ] {
            match remote.get_run_file(&submission, &name) {
                Ok(Some(body)) => {
                    if let Err(e) = write_atomic(path, &body) {
                        tracing::warn!("cannot keep `{}`: {e}", path.display());
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("following the Slurm jobs: {e}"),
            }
        }
    }

    /// The job of an earlier submission still in flight for this stage, if it does the same work.
    /// `Err(job)` names an earlier job of this stage that does other work.
    fn earlier_job(&mut self, l: &Launch<'_>) -> Option<Result<SubmittedJob, String>> {
        if self.earlier.is_none() {
            let found = in_flight(self.ws, &self.submission.pipeline).unwrap_or_else(|e| {
                tracing::warn!("cannot look for jobs of earlier submissions still running: {e}");
                BTreeMap::new()
            });
            self.earlier = Some(found);
        }
        let earlier = self.earlier.as_ref()?.get(&l.job.stage)?.clone();
        let same = !l.job.force
            && StageJob::read(&earlier.job_file()).is_ok_and(|old| self.same_work(&l.job, &old));
        Some(if same { Ok(earlier) } else { Err(earlier.job) })
    }

    /// Whether two jobs compute the same thing: same stage, kind, params, seed and workspace,
    /// and the same inputs, where an input still being made is the result file it will be
    /// read from (this run's producer for `new`, its own submission's for `old`).
    fn same_work(&self, new: &StageJob, old: &StageJob) -> bool {
        let same = (
            &new.pipeline,
            &new.stage,
            &new.kind,
            new.version,
            &new.params,
            new.seed,
            &new.workspace,
            &new.base,
        ) == (
            &old.pipeline,
            &old.stage,
            &old.kind,
            old.version,
            &old.params,
            old.seed,
            &old.workspace,
            &old.base,
        );
        if !same || new.inputs.len() != old.inputs.len() {
            return false;
        }
        let mine = |s: &str| self.jobs.iter().find(|t| t.stage == s).map(|t| t.result.clone());
        new.inputs.iter().all(|(port, ins)| {
            let Some(olds) = old.inputs.get(port) else { return false };
            ins.len() == olds.len()
                && ins.iter().zip(olds).all(|(a, b)| {
                    let a = match a {
                        JobInput::Artifact(x) => Settled::Artifact(*x),
                        JobInput::Upstream(s) => match mine(s) {
                            Some(p) => Settled::of(&p),
                            None => return false,
                        },
                    };
                    let b = match (b, &old.results) {
                        (JobInput::Artifact(x), _) => Settled::Artifact(*x),
                        (JobInput::Upstream(s), Some(dir)) => {
                            Settled::of(&super::job::result_path(dir, s))
                        }
                        (JobInput::Upstream(_), None) => return false,
                    };
                    a == b
                })
        })
    }

    /// Follow an earlier submission's job instead of submitting `l`: it joins this submission
    /// (its result and log linked from where this run's jobs and state look for them).
    fn follow(&mut self, l: &Launch<'_>, j: SubmittedJob) -> Result<JobId, SlurmError> {
        let link = super::job::result_path(&self.dir, &j.stage);
        std::os::unix::fs::symlink(&j.result, &link).map_err(io_at(&link))?;
        if let Some(d) = l.job.log.parent() {
            std::fs::create_dir_all(d).map_err(io_at(d))?;
        }
        std::os::unix::fs::symlink(&j.log, &l.job.log).map_err(io_at(&l.job.log))?;
        let submission = j.result.parent().map(Path::to_path_buf).unwrap_or_default();
        self.sink.emit(Event::StageFollowed {
            stage: j.stage.clone(),
            job: j.job.clone(),
            submission,
            log: j.log.clone(),
        });
        let id = j.job.clone();
        // Its inputs' jobs are this run's producers of them (followed too, or it would not be).
        self.track(l.index, SubmittedJob { after: l.after.clone(), ..j })?;
        Ok(id)
    }

    /// New complete lines of a job's events file: progress is passed on, the end kept.
    fn read_events(&mut self, k: usize) {
        let t = &mut self.jobs[k];
        let Ok(mut f) = std::fs::File::open(&t.events) else { return };
        if f.seek(SeekFrom::Start(t.offset)).is_err() {
            return;
        }
        let mut buf = String::new();
        if f.read_to_string(&mut buf).is_err() {
            return;
        }
        let Some(end) = buf.rfind('\n') else { return };
        t.offset += end as u64 + 1;
        for line in buf[..end].lines() {
            let Ok(ev) = serde_json::from_str::<Event>(line) else { continue };
            match ev {
                Event::Progress { .. } | Event::Metric { .. } => self.sink.emit(ev),
                Event::StageFinished { .. }
                | Event::StageCached { .. }
                | Event::StageFailed { .. } => t.last = Some(ev),
                _ => {}
            }
        }
    }

    /// How a job that Slurm says ended in `state` went.
    fn outcome(&self, t: &Tracked, state: &str, reason: &str) -> Option<Outcome> {
        let log = Some(t.log.clone());
        let lookup = |key| {
            let here = self.ws.store.lookup(&key).ok().flatten();
            here.or_else(|| {
                // A job that went through the remote cache left its result there.
                let remote = self.opts.remote.as_ref()?;
                match remote.fetch(&self.ws.store, &key, &crate::remote::Quiet) {
                    Ok(Fetched::Hit(r)) => Some(*r),
                    Ok(Fetched::Absent) => None,
                    Ok(Fetched::Unusable(why)) => {
                        tracing::warn!("stage `{}`: its result on the remote: {why}", t.stage);
                        None
                    }
                    Err(e) => {
                        tracing::warn!("stage `{}`: fetching its result: {e}", t.stage);
                        None
                    }
                }
            })
        };
        match (&t.last, state) {
            (Some(Event::StageFinished { key, seconds, .. }), _) => {
                lookup(*key).map(|record| Outcome::Ran { record, seconds: *seconds })
            }
            (Some(Event::StageCached { key, .. }), _) => {
                lookup(*key).map(|record| Outcome::Cached { record })
            }
            (_, "CANCELLED") if reason.contains("Dependency") => Some(Outcome::Skipped {
                because: format!(
                    "input stage {} failed; Slurm cancelled job {}",
                    list(&t.after_stages),
                    t.job
                ),
            }),
            (_, "CANCELLED") if self.stopping == Some(true) => Some(Outcome::Skipped {
                because: format!("the run was stopped (Slurm job {} cancelled)", t.job),
            }),
            (_, "CANCELLED") => {
                Some(Outcome::Failed { error: format!("Slurm job {} was cancelled", t.job), log })
            }
            (Some(Event::StageFailed { error, .. }), _) => {
                Some(Outcome::Failed { error: format!("{error} (Slurm job {})", t.job), log })
            }
            (_, "COMPLETED") => None, // its last events may not be visible yet
            (_, "TIMEOUT") => Some(Outcome::Failed {
                error: format!(
                    "Slurm job {} hit its time limit; raise `time:` in `resources:`",
                    t.job
                ),
                log,
            }),
            (_, "OUT_OF_MEMORY") => Some(Outcome::Failed {
                error: format!(
                    "Slurm job {} ran out of memory; raise `memory:` in `resources:`",
                    t.job
                ),
                log,
            }),
            (_, s) => Some(Outcome::Failed {
                error: format!(
                    "Slurm job {} ended {s}{}{}",
                    t.job,
                    if reason.is_empty() { String::new() } else { format!(" ({reason})") },
                    // Through the remote, a worker that could not start left nothing there.
                    if self.opts.remote.is_some() {
                        format!(
                            "; it left no events on the remote cache: its stderr is on its node, \
                             in {}",
                            node_stderr(&t.job)
                        )
                    } else {
                        String::new()
                    }
                ),
                log,
            }),
        }
    }

    /// One look at every job in flight; moves the ended ones to `done`.
    fn poll(&mut self) -> Result<(), SlurmError> {
        let ids: Vec<String> = self.jobs.iter().map(|t| t.job.clone()).collect();
        let states = job_states(&ids)?;
        let mut k = 0;
        let mut never: Vec<String> = Vec::new();
        while k < self.jobs.len() {
            self.read_events(k);
            let t = &self.jobs[k];
            let (state, reason) = match states.get(&t.job) {
                Some((s, r)) => (s.clone(), r.clone()),
                None => ("UNKNOWN".to_string(), String::new()),
            };
            if state != t.state {
                self.sink.emit(Event::JobState {
                    stage: t.stage.clone(),
                    job: t.job.clone(),
                    state: state.clone(),
                    reason: reason.clone(),
                });
                self.jobs[k].state = state.clone();
            }
            if let Some(remote) = self.opts.remote.clone()
                && (terminal(&state) || state == "UNKNOWN")
            {
                self.collect(k, &remote);
                self.read_events(k);
            }
            let t = &self.jobs[k];
            // Without `--kill-on-invalid-dep` support a job may wait forever on a failed input.
            if state == "PENDING" && reason == "DependencyNeverSatisfied" {
                never.push(t.job.clone());
            }
            let ended = if terminal(&state) {
                match self.outcome(t, &state, &reason) {
                    Some(o) => Some(o),
                    None if t.unknown_polls >= 10 => Some(Outcome::Failed {
                        error: format!(
                            "Slurm job {} completed but its stage left no result",
                            t.job
                        ),
                        log: Some(t.log.clone()),
                    }),
                    None => {
                        self.jobs[k].unknown_polls += 1;
                        None
                    }
                }
            } else if state == "UNKNOWN" {
                // Slurm forgot it (MinJobAge passed): its events say how it ended, if anything.
                match self.outcome(t, "UNKNOWN", "") {
                    Some(o @ (Outcome::Ran { .. } | Outcome::Cached { .. })) => Some(o),
                    _ if t.unknown_polls >= 10 => Some(Outcome::Failed {
                        error: format!("Slurm no longer knows job {} and it left no result", t.job),
                        log: Some(t.log.clone()),
                    }),
                    _ => {
                        self.jobs[k].unknown_polls += 1;
                        None
                    }
                }
            } else {
                None
            };
            match ended {
                Some(o) => {
                    let t = self.jobs.remove(k);
                    self.done.push_back((t.index, o));
                }
                None => k += 1,
            }
        }
        cancel_jobs(&never)
    }

    /// Ctrl-C: ask once whether to cancel the jobs in flight.
    fn interrupted(&mut self) -> Result<(), SlurmError> {
        if self.stopping.is_some() || !self.cancel.load(Ordering::Relaxed) {
            return Ok(());
        }
        let cancel = ask_to_cancel(self.person, self.jobs.len());
        self.stopping = Some(cancel);
        if cancel {
            cancel_jobs(&self.jobs.iter().map(|t| t.job.clone()).collect::<Vec<_>>())?;
        }
        Ok(())
    }

    /// Every job in flight, reported as left running on the cluster.
    fn leave(&mut self) {
        for t in self.jobs.drain(..) {
            let because = format!("left running as Slurm job {} (`hone status` follows it)", t.job);
            self.left.push(t.job.clone());
            self.done.push_back((t.index, Outcome::Submitted { job: t.job, because }));
        }
    }
}

impl<'a, 'p> Executor<'p> for Slurm<'a> {
    fn capacity(&self) -> usize {
        usize::MAX
    }

    fn defers_inputs(&self) -> bool {
        true
    }

    fn start(&mut self, mut launch: Launch<'p>) -> Result<JobId, String> {
        let stage = launch.job.stage.clone();
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot submit `{stage}` to Slurm: {}", io_at(&self.dir)(e)))?;
        match self.earlier_job(&launch) {
            Some(Ok(j)) => {
                return self
                    .follow(&launch, j)
                    .map_err(|e| format!("cannot follow the earlier job of `{stage}`: {e}"));
            }
            Some(Err(job)) => launch.reasons.push(format!(
                "Slurm job {job} of an earlier submission computes it with other params or inputs"
            )),
            None => {}
        }
        self.submit(launch).map_err(|e| format!("cannot submit `{stage}` to Slurm: {e}"))
    }

    fn next(&mut self) -> Option<(usize, Outcome)> {
        let mut last_poll: Option<Instant> = None;
        loop {
            if let Some(d) = self.done.pop_front() {
                return Some(d);
            }
            if self.jobs.is_empty() {
                return None;
            }
            if let Err(e) = self.interrupted() {
                tracing::warn!("{e}");
            }
            if self.opts.detach || self.stopping == Some(false) {
                self.leave();
                continue;
            }
            if last_poll.is_none_or(|t| t.elapsed() >= self.opts.poll) {
                last_poll = Some(Instant::now());
                if let Err(e) = self.poll() {
                    // squeue can fail for a moment (slurmctld busy): say so and try again.
                    tracing::warn!("following the Slurm jobs: {e}");
                }
                continue;
            }
            std::thread::sleep(Duration::from_millis(50).min(self.opts.poll));
        }
    }
}

/// An input of a job, as far as it is known: an artifact, or the result file it will be read from.
#[derive(PartialEq)]
enum Settled {
    Artifact(ArtifactDigest),
    Pending(PathBuf),
}

impl Settled {
    fn of(result: &Path) -> Settled {
        // A followed job's result in a later submission is a link to where it appears.
        let real = match std::fs::read_link(result) {
            Ok(t) if t.is_absolute() => t,
            Ok(t) => result.with_file_name(t),
            Err(_) => result.to_path_buf(),
        };
        match std::fs::read(&real).ok().and_then(|b| serde_json::from_slice::<JobResult>(&b).ok()) {
            Some(r) => Settled::Artifact(r.artifact),
            None => Settled::Pending(real),
        }
    }
}

/// The jobs of earlier submissions of `pipeline` that Slurm still has queued or running and
/// that left no result yet, by stage (the newest one where several are). Asks Slurm only
/// when there are such jobs.
pub fn in_flight(
    ws: &Workspace,
    pipeline: &str,
) -> Result<BTreeMap<String, SubmittedJob>, SlurmError> {
    let open: Vec<SubmittedJob> = submissions(ws)
        .into_iter()
        .filter(|(_, s)| s.pipeline == pipeline)
        .flat_map(|(_, s)| s.jobs)
        .filter(|j| !j.result.exists())
        .collect();
    if open.is_empty() {
        return Ok(BTreeMap::new());
    }
    let ids: Vec<String> = open.iter().map(|j| j.job.clone()).collect();
    let states = job_states(&ids)?;
    Ok(open
        .into_iter()
        .filter(|j| states.get(&j.job).is_some_and(|(s, _)| !terminal(s)))
        .map(|j| (j.stage.clone(), j))
        .collect())
}

/// Where submissions are kept.
pub fn submissions_dir(ws: &Workspace) -> PathBuf {
    ws.store.root().join("slurm")
}

/// The submissions in a workspace, newest last.
pub fn submissions(ws: &Workspace) -> Vec<(PathBuf, Submission)> {
    let mut out: Vec<(PathBuf, Submission)> = std::fs::read_dir(submissions_dir(ws))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let s: Submission =
                serde_json::from_slice(&std::fs::read(e.path().join("submission.json")).ok()?)
                    .ok()?;
            Some((e.path(), s))
        })
        .collect();
    out.sort_by(|a, b| (a.1.created_unix, &a.0).cmp(&(b.1.created_unix, &b.0)));
    out
}

fn list(stages: &[String]) -> String {
    if stages.is_empty() {
        return "(another job)".into();
    }
    stages.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
}

fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbatch_flags_carry_dependencies_placement_and_resources() {
        let settings = SlurmSettings {
            partition: Some("gpu".into()),
            account: Some("ml".into()),
            gres: Some("gpu:a100:1".into()),
            sbatch: vec!["--qos=high".into()],
            shared_fs: None,
        };
        let r = Resources {
            cpus: Some(4),
            memory: Some("16g".into()),
            gpus: Some(1),
            time: Some("2h".into()),
        };
        let a = sbatch_args(
            &settings,
            "hone:p:s",
            Path::new("/w/e.jsonl"),
            Path::new("/w/s.log"),
            Path::new("/w"),
            &r,
            &["12".into(), "13".into()],
        );
        for want in [
            "--parsable",
            "--job-name=hone:p:s",
            "--output=/w/e.jsonl",
            "--error=/w/s.log",
            "--kill-on-invalid-dep=yes",
            "--dependency=afterok:12:13",
            "--partition=gpu",
            "--account=ml",
            "--gres=gpu:a100:1",
            "--cpus-per-task=4",
            "--mem=16G",
            "--gpus=1",
            "--time=0-02:00:00",
        ] {
            assert!(a.contains(&want.to_string()), "{want} not in {a:?}");
        }
        assert_eq!(a.last().map(String::as_str), Some("--qos=high"));
        let none = sbatch_args(
            &SlurmSettings::default(),
            "n",
            Path::new("e"),
            Path::new("l"),
            Path::new("."),
            &Resources::default(),
            &[],
        );
        assert!(
            !none.iter().any(|f| f.starts_with("--dependency")
                || f.starts_with("--mem")
                || f.starts_with("--partition")),
            "{none:?}"
        );
    }

    /// An input the store holds without a record cannot go to the nodes: the submission says
    /// which, and how to mend the store, before anything reaches Slurm.
    #[test]
    fn an_input_without_a_record_is_refused_before_submission() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let remote = Remote::open(dir.path().join("remote").to_str().unwrap()).unwrap();
        let opts = SlurmOptions {
            settings: SlurmSettings::default(),
            hone: PathBuf::from("hone"),
            poll: Duration::from_millis(100),
            detach: false,
            remote: None,
        };
        let (sink, cancel) = (|_: Event| {}, AtomicBool::new(false));
        struct Nobody;
        impl Person for Nobody {
            fn confirm(&self, _: &str) -> Option<bool> {
                None
            }
            fn tell(&self, _: &str) {}
        }
        let mut slurm = Slurm::new(&ws, "p", opts, &sink, &cancel, &Nobody);
        let artifact: ArtifactDigest = "ab".repeat(32).parse().unwrap();
        let job = StageJob {
            pipeline: "p".into(),
            stage: "s".into(),
            kind: "command".into(),
            version: 1,
            params: serde_json::json!({}),
            seed: 0,
            inputs: [("x".to_string(), vec![JobInput::Artifact(artifact)])].into(),
            force: false,
            workspace: dir.path().to_path_buf(),
            base: dir.path().to_path_buf(),
            log: dir.path().join("s.log"),
            resources: Resources::default(),
            results: None,
            remote: None,
        };
        let e = slurm.via_remote(&remote, &job).unwrap_err();
        assert!(matches!(&e, SlurmError::Unpushable { artifact: a } if *a == artifact.short()));
        let said = e.to_string();
        assert!(said.contains(&artifact.short()) && said.contains("hone cache verify"), "{said}");
    }

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(sh_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }
}
