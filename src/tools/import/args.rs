//! The command-line arguments of `reviewflow import`.

use crate::secret::redact_url;

/// `reviewflow import`: which course, from where, in pages of what size.
#[derive(clap::Args, Clone)]
pub struct ImportConfig {
    /// The course whose reviews are imported; it becomes their course_id.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    pub course: i64,

    /// Base URL of an API shaped like Udemy's API 2.0 (reviews are read from
    /// `<url>/courses/<course>/reviews/`); http only, `user:password@` for basic authentication.
    #[arg(long, env = "REVIEWFLOW_IMPORT_URL", hide_env_values = true)]
    pub url: String,

    /// Reviews asked for per page.
    #[arg(
        long,
        env = "REVIEWFLOW_IMPORT_PAGE_SIZE",
        default_value_t = 100,
        value_parser = clap::value_parser!(u64).range(1..=1000)
    )]
    pub page_size: u64,

    /// Tries per page before giving up, when the server throttles (429), fails (5xx) or
    /// cannot be reached; pauses between them grow from 0.5 s to 30 s (or as Retry-After says).
    #[arg(
        long,
        env = "REVIEWFLOW_IMPORT_ATTEMPTS",
        default_value_t = 6,
        value_parser = clap::value_parser!(u32).range(1..=100)
    )]
    pub attempts: u32,
}

impl std::fmt::Debug for ImportConfig {
    /// The URL may carry `user:password@` for basic authentication.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportConfig")
            .field("course", &self.course)
            .field("url", &redact_url(&self.url))
            .field("page_size", &self.page_size)
            .field("attempts", &self.attempts)
            .finish()
    }
}
