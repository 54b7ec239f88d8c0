//! The developer's tools: `demo` (load that makes the figures move) and `bench`.

use std::process::ExitCode;

use crate::config::DbRole;
use crate::db;
use crate::dev::demo::DemoConfig;
use crate::error::Result;

use super::{connect, Context};

pub(super) async fn demo(cx: &Context, demo: DemoConfig) -> Result<ExitCode> {
    let deployment = connect::prepare(cx, DbRole::Api).await?;
    let mut client = db::connect(deployment.url(DbRole::Api)?).await?;
    let wrote = crate::dev::demo::run(&demo, &mut client, &cx.shutdown).await?;
    println!(
        "demo wrote {} changes: {} inserts, {} edits, {} deletes ({} spammy)",
        wrote.total(),
        wrote.inserts,
        wrote.edits,
        wrote.deletes,
        wrote.spam
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "bench")]
pub(super) async fn bench(cx: &Context, bench: crate::dev::bench::BenchConfig) -> Result<ExitCode> {
    // The bench creates databases and slots: the owner's connection.
    let settings = connect::resolve(cx).await?.settings(DbRole::Owner)?;
    let command = std::iter::once("reviewflow".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    crate::dev::bench::Bench {
        settings,
        stack: cx.stack.clone(),
        config: bench,
        topics: cx.topics.clone(),
    }
    .execute(command, cx.shutdown.clone())
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// A build without the `bench` feature has no benchmark: say which build has it.
#[cfg(not(feature = "bench"))]
pub(super) fn no_bench() -> Result<ExitCode> {
    Err(crate::Error::Config(
        "this reviewflow is built without the benchmark: run it with \
         `cargo run --release --features bench -- bench ...`"
            .into(),
    ))
}
