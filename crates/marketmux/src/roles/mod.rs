//! One module per role: each wires the crates a role needs and runs them.

pub mod alerts;
pub mod bridge;
pub mod dev;
pub mod gateway;
pub mod ingest;
