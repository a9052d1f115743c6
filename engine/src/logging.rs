//! Routes tracing events emitted inside a running stage to that stage's log file.
//!
//! The executor runs every stage inside a `stage` span carrying a `log` field (the path of
//! this run's log). [`StageLogLayer`] appends each event recorded inside such a span to that
//! file, so a stage's own `tracing::info!` calls and the engine's notes about it end up in
//! one place that `hone show` and failure messages point to.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

#[derive(Default)]
pub struct StageLogLayer;

struct StageLog(Mutex<File>);

#[derive(Default)]
struct Fields {
    log: Option<String>,
    text: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "log" => self.log = Some(format!("{value:?}")),
            "message" => {
                let _ = write!(self.text, "{value:?}");
            }
            name => {
                let _ = write!(self.text, " {name}={value:?}");
            }
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "log" => self.log = Some(value.to_string()),
            "message" => self.text.push_str(value),
            name => {
                let _ = write!(self.text, " {name}={value}");
            }
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for StageLogLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "stage" {
            return;
        }
        let mut f = Fields::default();
        attrs.record(&mut f);
        let Some(path) = f.log else { return };
        if let (Some(span), Ok(file)) =
            (ctx.span(id), OpenOptions::new().create(true).append(true).open(&path))
        {
            span.extensions_mut().insert(StageLog(Mutex::new(file)));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else { return };
        for span in scope {
            if let Some(log) = span.extensions().get::<StageLog>() {
                let mut f = Fields::default();
                event.record(&mut f);
                let line = format!(
                    "[{}] {}: {}\n",
                    event.metadata().level(),
                    event.metadata().target(),
                    f.text
                );
                let _ = log.0.lock().unwrap().write_all(line.as_bytes());
                return;
            }
        }
    }
}
