//! The local executor: each job on a scoped thread of this process, at most `jobs` at once.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::thread::Scope;

use super::executor::{Cx, Executor, ExecutorKind, Launch, Run, no_settings};
use super::job::{self, JobId, Outcome};
use crate::events::EventSink;
use crate::workspace::Workspace;

/// `kind: local`, the default: no settings, never detached.
pub static KIND: ExecutorKind = ExecutorKind {
    name: "local",
    about: "threads of this process",
    keys: Vec::new,
    settings: no_settings,
    detaches: false,
    open,
    still_running: None,
};

/// A local executor for a run, on threads that end with it.
fn open<'p>(cx: &Cx<'p>, run: Run<'_, 'p>) -> Result<(), String> {
    std::thread::scope(|scope| run(&mut Local::new(scope, cx.ws, cx.sink, cx.cancel, cx.jobs)));
    Ok(())
}

pub struct Local<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    ws: &'env Workspace,
    sink: &'env dyn EventSink,
    cancel: &'env AtomicBool,
    jobs: usize,
    running: usize,
    tx: mpsc::Sender<(usize, Outcome)>,
    rx: mpsc::Receiver<(usize, Outcome)>,
}

impl<'scope, 'env> Local<'scope, 'env> {
    pub fn new(
        scope: &'scope Scope<'scope, 'env>,
        ws: &'env Workspace,
        sink: &'env dyn EventSink,
        cancel: &'env AtomicBool,
        jobs: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        Local { scope, ws, sink, cancel, jobs: jobs.max(1), running: 0, tx, rx }
    }
}

impl<'scope, 'env> Executor<'env> for Local<'scope, 'env> {
    fn capacity(&self) -> usize {
        self.jobs
    }

    fn start(&mut self, l: Launch<'env>) -> Result<JobId, String> {
        let (m, key) =
            l.manifest.ok_or("the local executor starts a stage only once its inputs exist")?;
        let (ws, sink, cancel, tx, kind, params, job, i) =
            (self.ws, self.sink, self.cancel, self.tx.clone(), l.kind, l.params, l.job, l.index);
        self.running += 1;
        self.scope.spawn(move || {
            let outcome = job::execute(ws, kind, params, &job, m, key, sink, cancel);
            let _ = tx.send((i, outcome));
        });
        Ok(format!("thread {i}"))
    }

    fn next(&mut self) -> Option<(usize, Outcome)> {
        if self.running == 0 {
            return None;
        }
        let done = self.rx.recv().expect("a running stage always reports");
        self.running -= 1;
        Some(done)
    }
}
