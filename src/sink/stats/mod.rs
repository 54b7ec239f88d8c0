//! The stats worker: reviews.valid folded into course_stats and course_daily_stats.

pub mod figures;
