//! reviewflow: a change-data-capture pipeline that keeps live, exact per-course review
//! statistics. Data flows one way: source (PostgreSQL `reviews`, logical replication) ->
//! Kafka -> transform (fraud) -> Kafka -> sink (course_stats, review_verdicts).
//! The contract between the parts is DESIGN.md in the shared folder.

pub mod api;
pub mod avro;
pub mod bench;
pub mod change;
pub mod cli;
pub mod config;
pub mod db;
pub mod demo;
pub mod error;
pub mod failpoint;
pub mod health;
pub mod image;
pub mod import;
pub mod kafka;
pub mod lsn;
pub mod metrics;
pub mod registry;
pub mod replay;
pub mod retry;
pub mod review;
pub mod secret;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod stack;
pub mod status;
pub mod transform;
pub mod verify;

pub use error::{Error, Result};
