//! Crash points for tests: `REVIEWFLOW_FAILPOINT=cdc.after_produce:3` makes the third pass
//! through that point abort the process on the spot, like a kill -9 there, so exactly-once
//! is shown where a crash hurts most rather than at random.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
static PASSES: AtomicU64 = AtomicU64::new(0);

/// Aborts the process when `name` is the armed point and this is the armed pass.
pub fn hit(name: &str) {
    let armed = ARMED.get_or_init(|| {
        let spec = std::env::var("REVIEWFLOW_FAILPOINT").ok()?;
        let (point, count) = spec.split_once(':').unwrap_or((&spec, "1"));
        Some((point.to_string(), count.parse().unwrap_or(1)))
    });
    if let Some((point, count)) = armed {
        if point == name && PASSES.fetch_add(1, Ordering::SeqCst) + 1 == *count {
            eprintln!("failpoint {name} reached: aborting");
            std::process::abort();
        }
    }
}
