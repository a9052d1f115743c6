//! End-to-end tests of the `hone` binary: every test runs the real CLI in a temp workspace.

mod support;

mod byo_data;
mod cache;
mod chat;
mod errors;
mod executor;
mod from_a_model;
mod history;
mod label;
mod mlflow;
mod model;
mod pipelines;
mod plugins;
mod portable;
mod readme;
mod remote;
mod run;
mod score;
mod slurm;
mod smoke;
mod watch;
