//! `hone exec-stage JOB.json` (hidden): the worker remote executors run. It runs one stage job
//! in this process against the job's workspace and prints the run's events as JSON lines on
//! stdout. Exit 0 when the stage ran or was cached, 1 when it failed or could not run.

use std::path::Path;
use std::sync::atomic::Ordering;

use hone_engine::events::{Event, EventSink};
use hone_engine::exec::job::{StageJob, run_job};
use hone_engine::exec::Outcome;

use crate::commands::{EXIT_FAILED, EXIT_INTERRUPTED, Fatal, on_ctrl_c};
use crate::report::JsonReporter;

pub fn exec_stage(path: &Path) -> Result<u8, Fatal> {
    let cancel = on_ctrl_c();
    let sink = JsonReporter;
    let job = StageJob::read(path);
    let outcome = job.as_ref().map_err(|e| e.to_string()).and_then(|job| {
        run_job(job, &hone_stages::registry(), &sink, &cancel).map_err(|e| e.to_string())
    });
    match outcome {
        Ok(Outcome::Ran { .. } | Outcome::Cached { .. }) => Ok(0),
        Ok(_) if cancel.load(Ordering::SeqCst) => Ok(EXIT_INTERRUPTED),
        Ok(_) => Ok(EXIT_FAILED),
        Err(error) => {
            // Said as an event too, so whoever follows the job sees why.
            let (stage, log) = job.map(|j| (j.stage, j.log)).unwrap_or_default();
            sink.emit(Event::StageFailed { stage, error: error.clone(), log });
            Err(Fatal { message: format!("error: {error}"), code: EXIT_FAILED })
        }
    }
}
