//! The operator's tools, beside the pipeline rather than in it: rebuilding the derived
//! tables (`replay`), checking them against the from-scratch truth (`verify`), showing the
//! slot's and every worker's position and lag (`status`), and importing reviews from an API
//! shaped like Udemy's (`import`).

pub mod import;
pub mod replay;
pub mod status;
pub mod verify;
