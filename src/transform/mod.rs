//! Transforms between Kafka topics: fraud scoring of every review version.

pub mod score;
