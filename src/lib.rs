//! reviewflow: a change-data-capture pipeline that keeps live, exact per-course review
//! statistics. Data flows one way: source (PostgreSQL `reviews`, logical replication) ->
//! Kafka -> transform (fraud) -> Kafka -> sink (course_stats, review_verdicts).
//! The contract between the parts is DESIGN.md in the shared folder.

pub mod api;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod kafka;
pub mod review;
pub mod shutdown;
pub mod stack;
pub mod verify;

pub use error::{Error, Result};
