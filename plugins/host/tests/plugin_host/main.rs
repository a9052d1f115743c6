//! Tests of the plugin host against real components: the example plugins, the hostile ones
//! in `tests/hostile/`, the code cache, the scaffold and the shipped `plugins/dist/` files.
//! The guest workspace (`plugins/`) is built once per run for wasm32-wasip2.

mod cache;
mod common;
mod dist;
mod examples;
mod hostile;
mod scaffold;
