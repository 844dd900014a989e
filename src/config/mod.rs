//! Configuration: raw serde structs (`raw`) → validated model (`model`).
//!
//! Loading reads `gateway.yaml`, every `*.yaml` in the API definitions folder, `users.yaml` and
//! `policies.yaml`, interpolates `${VAR}`, and validates everything, collecting every problem with its
//! file and field path instead of stopping at the first.
//!
//! May import: nothing of the crate. Every other layer reads the model; the model reads no one.

pub(crate) mod accounts;
pub(crate) mod api;
pub(crate) mod check;
mod duration;
pub(crate) mod error;
mod gateway;
mod interpolate;
mod load;
mod model;
pub mod raw;
#[cfg(test)]
mod testutil;

pub use duration::{parse_duration, parse_duration_or_off};
pub use error::{ConfigErrors, ConfigProblem};
pub use gateway::SAMPLE_ADMIN_SECRET;
pub use model::*;
