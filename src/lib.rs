//! reviewflow: a change-data-capture pipeline that keeps live, exact per-course review
//! statistics. The contract between the parts is DESIGN.md in the shared folder; this is the
//! map of the code, in the order the data flows.
//!
//! ```text
//!  reviews (PostgreSQL) ─> source ─> reviews.changes ─> transform ─> reviews.valid/.verdicts ─> sink ─> course_stats, review_verdicts ─> api
//! ```
//!
//! 1. [`contract`]: what the stages say to each other, owned by none of them: a change
//!    (`ChangeEvent`, its `SourcePosition`), a review's image and the rules that make it
//!    count, a verdict, the NOTIFY payload.
//! 2. [`source`]: the CDC reader. Snapshot and logical replication (pgoutput) of `reviews`
//!    into `reviews.changes`.
//! 3. [`transform`]: the fraud worker. Judges every review version, exactly once (Kafka
//!    transactions), into `reviews.valid`, `reviews.fraud` and `reviews.verdicts`.
//! 4. [`sink`]: the PostgreSQL sinks, one loop (`sink::Destination`) for both: the figures
//!    (`course_stats`, the 90-day window) and the verdicts.
//! 5. [`api`]: writes reviews, serves the figures, the course page and the schema registry.
//!
//! After the flow, the operator's tools ([`tools`]: replay, verify, status, import) and the
//! developer's ([`dev`]: demo, and bench with the `bench` feature). Beneath everything, the
//! plumbing the stages share: Avro ([`avro`]), the schema registry client and store
//! ([`registry`]), Kafka ([`kafka`]), PostgreSQL ([`db`]), the local stack ([`stack`]),
//! configuration ([`config`]), and the process's own: [`error`], [`retry`], [`shutdown`],
//! [`failpoint`], [`metrics`], [`secret`]. [`cli`] puts it together as one binary.
//!
//! No module imports one later in the flow: a stage reads the contract and the plumbing,
//! never the stage after it.

pub mod contract;

// reviews -> reviews.changes
pub mod source;
// reviews.changes -> reviews.valid, reviews.fraud, reviews.verdicts
pub mod transform;
// reviews.valid, reviews.verdicts -> course_stats, review_verdicts
pub mod sink;
// course_stats -> the website
pub mod api;

// Beside the flow.
pub mod dev;
pub mod tools;

// Beneath it.
pub mod avro;
pub mod config;
pub mod db;
pub mod kafka;
pub mod registry;
pub mod stack;

pub mod error;
pub mod failpoint;
pub mod health;
pub mod instance;
pub mod metrics;
pub mod retry;
pub mod secret;
pub mod shutdown;

pub mod cli;

pub use error::{Error, Result};
