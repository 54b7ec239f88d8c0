//! Transforms between Kafka topics: fraud scoring of every review version.

pub mod args;
pub mod fraud;
pub mod from_text;
pub mod score;

pub use args::FraudConfig;
pub use fraud::Fraud;
