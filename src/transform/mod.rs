//! Transforms between Kafka topics: fraud scoring of every review version.

pub mod fraud;
pub mod from_text;
pub mod score;

pub use fraud::Fraud;
