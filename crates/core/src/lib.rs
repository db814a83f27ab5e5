//! Keyplane's domain: resources, rules and services. Knows nothing of HTTP, SQL or any cloud.

pub mod audit;
pub mod authn;
pub mod authz;
pub mod connector;
pub mod distribution;
pub mod error;
pub mod etag;
pub mod guards;
pub mod keystore_types;
pub mod lifecycle;
pub mod model;
pub mod naming;
pub mod operation;
pub mod ports;
pub mod query;
pub mod schedule;
pub mod service;
pub mod validate;

pub use error::{Error, ErrorCode, Result};
