//! nearby's pipeline engine. It knows nothing about astronomy: it loads YAML pipelines, validates
//! them into a plan, runs them on a tokio scheduler and checkpoints every finished task in sled.
//!
//! Data flows through three levels (see docs/ARCHITECTURE.md):
//! [`model`] (what the author wrote) -> [`plan`] (validated, sealed DAG of task templates) ->
//! [`sched`] (task instances expanded over data units, run by executors in [`exec`]).

pub mod binary;
pub mod cache;
pub mod diag;
pub mod events;
pub mod exec;
pub mod model;
pub mod ops;
pub mod plan;
pub mod sched;
pub mod store;
pub mod task;
pub mod template;
