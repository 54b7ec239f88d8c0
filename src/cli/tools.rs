//! The operator's tools: `migrate`, `status`, `verify`, `replay` and `import`. Each resolves
//! its connections, does one job and prints what it did.

use std::process::ExitCode;

use crate::config::DbRole;
use crate::db;
use crate::error::Result;
use crate::tools::import::ImportConfig;
use crate::tools::replay::ReplayFrom;
use crate::tools::verify;
use crate::transform::FraudConfig;

use super::{connect, Context};

pub(super) async fn migrate(cx: &Context) -> Result<ExitCode> {
    let deployment = connect::resolve(cx).await?;
    let applied = db::migrate(deployment.url(DbRole::Owner)?).await?;
    println!(
        "migrations applied: {}",
        if applied.is_empty() {
            "none (up to date)".into()
        } else {
            applied.join(", ")
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn status(
    cx: &Context,
    place: &crate::tools::status::Place,
    api_url: &str,
    peek: i32,
) -> Result<ExitCode> {
    let settings = connect::prepare(cx, DbRole::Owner)
        .await?
        .settings(DbRole::Owner)?;
    crate::tools::status::report(&settings, place, api_url, peek).await?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn verify(cx: &Context) -> Result<ExitCode> {
    let deployment = connect::prepare(cx, DbRole::Owner).await?;
    let client = db::connect(deployment.url(DbRole::Owner)?).await?;
    let report = verify::verify(&client).await?;
    for d in &report.differences {
        println!("{d}");
    }
    println!(
        "{} courses, {} reviews and {} deleted reviews checked, {} differences",
        report.courses,
        report.reviews,
        report.gone,
        report.differences.len()
    );
    Ok(if report.differences.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(super) async fn replay(cx: &Context, from: ReplayFrom, fraud: FraudConfig) -> Result<ExitCode> {
    if from == ReplayFrom::Snapshot {
        // A bad model setting fails before anything is touched.
        crate::transform::score::scorer(fraud.scorer, fraud.fraud_threshold)?;
    }
    let settings = connect::prepare(cx, DbRole::Owner)
        .await?
        .settings(DbRole::Owner)?;
    let replay = crate::tools::replay::Replay {
        settings,
        topics: cx.topics.clone(),
        fraud,
        owner: format!("replay@{}", cx.workers.instance()),
    };
    let summary = replay.run(from, &cx.shutdown).await?;
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn import(cx: &Context, import: ImportConfig) -> Result<ExitCode> {
    let deployment = connect::prepare(cx, DbRole::Api).await?;
    let mut client = db::connect(deployment.url(DbRole::Api)?).await?;
    let mut summary = crate::tools::import::Summary::default();
    let outcome =
        crate::tools::import::import(&import, &mut client, &mut summary, &cx.shutdown).await;
    // Partial work is reported too: what was stored stays stored.
    println!("{summary}");
    outcome?;
    Ok(ExitCode::SUCCESS)
}
