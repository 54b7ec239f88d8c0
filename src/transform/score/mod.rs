//! Fraud scorers: pure functions of a review row and a model version.
