//! Least-privilege PostgreSQL roles. Migration V5 creates three NOLOGIN group roles and
//! grants each exactly what its stages do (see docs/security.md):
//!
//! - `reviewflow_cdc`: reads the published tables (`reviews`, `course_stats`) and the
//!   schema registry's tables; its login users also need the REPLICATION attribute, which
//!   PostgreSQL never passes on through membership.
//! - `reviewflow_api`: writes `reviews` and the registry, reads `course_stats` and
//!   `review_verdicts` (the moderation view).
//! - `reviewflow_worker`: writes what the sinks own (`course_stats` and its buckets,
//!   `review_verdicts`, `review_deletions`, `verdicts_state`, `sink_offsets`, `stats_state`),
//!   reads and writes the registry.
//!
//! This module makes login users in those groups (for `reviewflow stack roles` and tests);
//! on a server of one's own, a DBA runs the same `CREATE ROLE ... IN ROLE` statements.

use tokio_postgres::Client;

use super::{quote_ident, quote_literal};
use crate::error::Result;

/// As whom a part connects to PostgreSQL: the owner (migrations and the operator's tools:
/// migrate, verify, replay, status) or one of the least-privilege roles (their groups below).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbRole {
    Owner,
    /// cdc: replication, and reads of the published tables.
    Cdc,
    /// api, import, demo: writes reviews, reads the figures.
    Api,
    /// fraud, verdicts, stats: writes the figures, verdicts and offsets.
    Worker,
}

impl DbRole {
    /// The variable that gives this role's connection string.
    pub fn variable(self) -> &'static str {
        match self {
            DbRole::Owner => "DATABASE_URL",
            DbRole::Cdc => "CDC_DATABASE_URL",
            DbRole::Api => "API_DATABASE_URL",
            DbRole::Worker => "WORKER_DATABASE_URL",
        }
    }
}

impl DbRole {
    /// The NOLOGIN group role migration V5 creates and grants to (None for the owner).
    pub fn group(self) -> Option<&'static str> {
        match self {
            DbRole::Owner => None,
            DbRole::Cdc => Some("reviewflow_cdc"),
            DbRole::Api => Some("reviewflow_api"),
            DbRole::Worker => Some("reviewflow_worker"),
        }
    }
}

/// Creates (or updates) login user `user` with `password` as a member of `role`'s group;
/// a cdc user gets REPLICATION. Needs a superuser (REPLICATION can only be given by one).
pub async fn create_login(admin: &Client, role: DbRole, user: &str, password: &str) -> Result<()> {
    let Some(group) = role.group() else {
        return Err(crate::Error::Config(
            "the owner is not a group role: it owns the tables".into(),
        ));
    };
    let replication = if role == DbRole::Cdc {
        "REPLICATION"
    } else {
        "NOREPLICATION"
    };
    let user_ident = quote_ident(user);
    let exists = admin
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user])
        .await?
        .is_some();
    let verb = if exists { "ALTER" } else { "CREATE" };
    // Utility statements take no parameters; the password is quoted as a literal.
    admin
        .batch_execute(&format!(
            "{verb} ROLE {user_ident} LOGIN {replication} PASSWORD {}; GRANT {} TO {user_ident}",
            quote_literal(password),
            quote_ident(group)
        ))
        .await?;
    Ok(())
}
