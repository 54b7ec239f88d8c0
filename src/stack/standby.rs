//! The local stack's physical standby (`stack up --standby`) and its promotion (`stack
//! failover`): a second node of the same cluster, on the next port, streaming from a physical
//! slot on the primary and synchronous (`synchronous_standby_names`), so a commit the primary
//! acknowledged is on the standby too. On PostgreSQL 17 and later it also synchronizes the
//! primary's failover slots (`sync_replication_slots`), and the primary holds logical
//! decoding back until the standby has the WAL (`synchronized_standby_slots`): cdc's slot can
//! never be ahead of what the standby has. No asynchronous mode is offered: its window of loss
//! (commits acknowledged but not yet streamed) is what a failover test must not have.
//!
//! The base backup uses the low-level API: `pg_backup_start` in one session, a copy of the
//! data folder, `pg_backup_stop`'s label written as `backup_label`. It works alike on 15 to
//! 18 (15 is where the functions got these names), needs no client tool (the npm builds of
//! 16-18 have no pg_basebackup, and Debian's pg_basebackup 15 refuses newer servers), and no
//! tar parsing as the replication protocol's BASE_BACKUP would; the stack owns both folders,
//! so a plain copy is enough.
//!
//! After a failover the stack's home names the promoted node as the primary
//! (`postgres.primary`); the old primary stays down for good (it would be a second primary
//! on a forked timeline), and `stack down --purge` starts afresh.

use std::path::Path;
use std::time::Duration;

use super::postgres::{self, chown, node, settings, start, write_conf, DATABASE, USER};
use super::process::{self, Account};
use super::{postgres_builds, write_file, StackConfig};
use crate::error::{Error, Result};

/// The standby's data folder, beside the primary's `data`.
pub const DIR: &str = "standby";
/// The physical slot on the primary and the standby's application_name.
const NAME: &str = "reviewflow_standby";
/// In the stack's home: which node is the primary, once a failover made it the standby.
const PRIMARY_FILE: &str = "postgres.primary";

/// The standby's port: the one after the primary's.
pub fn port(cfg: &StackConfig) -> u16 {
    cfg.pg_port.saturating_add(1)
}

/// Whether the cluster of `root` has a standby (made by an earlier `up --standby`).
pub fn exists(root: &Path) -> bool {
    root.join(DIR).join("PG_VERSION").exists()
}

/// Whether `stack failover` promoted the standby: it is the primary from then on.
pub fn promoted(home: &Path) -> bool {
    std::fs::read_to_string(home.join(PRIMARY_FILE)).is_ok_and(|s| s.trim() == DIR)
}

/// The URL clients get (`stack env`, and `run` without one) while the stack has a standby
/// that was not promoted: both nodes, libpq style, with `target_session_attrs=read-write`, so
/// that a client started before `stack failover` finds the promoted standby afterwards.
/// `primary_url` is the primary's own, which is returned as it is otherwise.
pub fn following_url(cfg: &StackConfig, root: &Path, primary_url: &str) -> String {
    if !exists(root) || promoted(&cfg.home()) {
        return primary_url.to_string();
    }
    let one = format!("@127.0.0.1:{}/", cfg.pg_port);
    let both = format!("@127.0.0.1:{},127.0.0.1:{}/", cfg.pg_port, port(cfg));
    format!(
        "{}?target_session_attrs=read-write",
        primary_url.replacen(&one, &both, 1)
    )
}

pub(super) fn forget(home: &Path) {
    let _ = std::fs::remove_file(home.join(PRIMARY_FILE));
}

fn major(data: &Path) -> u32 {
    postgres_builds::data_version(data)
        .and_then(|v| v.parse().ok())
        .unwrap_or(15)
}

/// What the primary adds once its standby exists.
pub(super) fn primary_settings(data: &Path) -> String {
    let mut s = format!("synchronous_standby_names = '{NAME}'\n");
    if major(data) >= 17 {
        s.push_str(&format!("synchronized_standby_slots = '{NAME}'\n"));
    }
    s
}

fn standby_settings(cfg: &StackConfig, data: &Path, password: &str) -> String {
    // The slot sync worker connects to a database: primary_conninfo needs its dbname.
    let mut s = format!(
        "primary_conninfo = 'host=127.0.0.1 port={} user={USER} password={password} \
         dbname={DATABASE} application_name={NAME}'\n\
         primary_slot_name = '{NAME}'\n\
         hot_standby = on\n\
         hot_standby_feedback = on\n",
        cfg.pg_port
    );
    if major(data) >= 17 {
        s.push_str("sync_replication_slots = on\n");
    }
    s
}

fn password(cfg: &StackConfig) -> Result<String> {
    let file = cfg.home().join("postgres.password");
    std::fs::read_to_string(&file)
        .map(|p| p.trim().to_owned())
        .map_err(|e| Error::io_path("read", &file, e))
}

/// Makes the standby when it is missing, starts it when it is down, and makes the primary
/// synchronous on it; returns once it streams.
pub(super) async fn up(
    cfg: &StackConfig,
    bin: &Path,
    root: &Path,
    account: Option<&Account>,
) -> Result<()> {
    let data = root.join(DIR);
    let primary = root.join("data");
    let pg = crate::db::connect(&postgres::running_url(cfg)?).await?;
    if node(&data).is_none() {
        if !exists(root) {
            base_backup(&pg, root, account).await?;
        }
        let text = settings(
            port(cfg),
            cfg.pg_ssl,
            &standby_settings(cfg, &data, &password(cfg)?),
        );
        write_conf(&data, &text, account)?;
        start(
            cfg,
            bin,
            &data,
            port(cfg),
            &root.join("standby.log"),
            account,
        )
        .await?;
    }
    let text = settings(cfg.pg_port, cfg.pg_ssl, &primary_settings(&primary));
    write_conf(&primary, &text, account)?;
    pg.batch_execute("SELECT pg_reload_conf()").await?;
    for _ in 0..120 {
        let streaming = pg
            .query_opt(
                "SELECT 1 FROM pg_stat_replication
                 WHERE application_name = $1 AND state = 'streaming' AND sync_state = 'sync'",
                &[&NAME],
            )
            .await?;
        if streaming.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = std::fs::read_to_string(root.join("standby.log")).unwrap_or_default();
    Err(Error::Stack(format!(
        "the standby started but does not stream synchronously from the primary within 60 s \
         (writes on the primary wait for it); its log:\n{}",
        process::tail(&log, 15)
    )))
}

/// A copy of the primary's data folder between `pg_backup_start` and `pg_backup_stop`, made in
/// a folder beside it and renamed into place once complete.
async fn base_backup(
    pg: &tokio_postgres::Client,
    root: &Path,
    account: Option<&Account>,
) -> Result<()> {
    tracing::info!("making the standby: a base backup of the primary");
    // Reserved now, so the WAL from the backup's start on stays until the standby streams it.
    pg.batch_execute(&format!(
        "SELECT pg_create_physical_replication_slot('{NAME}', true)
         WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{NAME}')"
    ))
    .await?;
    let partial = root.join("standby.partial");
    let _ = std::fs::remove_dir_all(&partial);
    pg.batch_execute("SELECT pg_backup_start('reviewflow standby', true)")
        .await?;
    let (from, to) = (root.join("data"), partial.clone());
    tokio::task::spawn_blocking(move || copy_tree(&from, &to, true)).await??;
    let label: String = pg
        .query_one("SELECT labelfile FROM pg_backup_stop(false)", &[])
        .await?
        .get(0);
    write_file(&partial.join("backup_label"), label.as_bytes(), 0o600)?;
    write_file(&partial.join("standby.signal"), b"", 0o600)?;
    if let Some(a) = account {
        chown_tree(&partial, a)?;
    }
    let data = root.join(DIR);
    std::fs::rename(&partial, &data).map_err(|e| Error::io_path("rename", &partial, e))
}

/// Folders whose contents a backup leaves out (the standby makes its own): the WAL streams
/// from the slot, and the primary's replication slots must not reach the standby, where
/// PostgreSQL 17 would refuse to synchronize a slot of the same name.
const EMPTIED: &[&str] = &[
    "pg_wal",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];

fn copy_tree(from: &Path, to: &Path, top: bool) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io_path("create", to, e))?;
    std::fs::set_permissions(to, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| Error::io_path("chmod", to, e))?;
    let entries = std::fs::read_dir(from).map_err(|e| Error::io_path("read", from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io_path("read", from, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if top && matches!(name.as_ref(), "postmaster.pid" | "postmaster.opts") {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        // Files come and go while the primary runs; the WAL replay repairs what changed.
        let kind = match entry.file_type() {
            Ok(kind) => kind,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io_path("read", &src, e)),
        };
        if kind.is_dir() {
            if top && EMPTIED.contains(&name.as_ref()) {
                std::fs::create_dir_all(&dst).map_err(|e| Error::io_path("create", &dst, e))?;
                continue;
            }
            copy_tree(&src, &dst, false)?;
        } else {
            match std::fs::copy(&src, &dst) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io_path("copy", &src, e)),
                Ok(_) => {}
            }
        }
    }
    if top {
        let status = to.join("pg_wal/archive_status");
        std::fs::create_dir_all(&status).map_err(|e| Error::io_path("create", &status, e))?;
    }
    Ok(())
}

fn chown_tree(dir: &Path, account: &Account) -> Result<()> {
    chown(dir, Some(account))?;
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io_path("read", dir, e))? {
        let path = entry.map_err(|e| Error::io_path("read", dir, e))?.path();
        if path.is_dir() {
            chown_tree(&path, account)?;
        } else {
            chown(&path, Some(account))?;
        }
    }
    Ok(())
}

/// The standby, for `stack status`: where it listens while it streams.
pub fn status(cfg: &StackConfig) -> Option<Result<String>> {
    let root = postgres::location(&cfg.home());
    if !exists(&root) || promoted(&cfg.home()) {
        return None;
    }
    Some(
        node(&root.join(DIR))
            .map(|(_, port)| format!("127.0.0.1:{port} (synchronous, streaming from the primary)"))
            .ok_or_else(|| Error::Stack("the standby is not running".into())),
    )
}

/// Kills the primary with SIGKILL, as a crash of its machine would, and promotes the standby
/// (`pg_promote`, which needs no client tool); from then on the stack's home names the
/// standby as the primary. Returns the new primary's URL.
pub async fn failover(cfg: &StackConfig) -> Result<String> {
    let home = cfg.home();
    if promoted(&home) {
        return Err(Error::Stack(
            "this stack failed over already: its primary is the promoted standby and it has \
             no standby left; `reviewflow stack down --purge` then `stack up --standby` \
             starts afresh"
                .into(),
        ));
    }
    let root = postgres::location(&home);
    let Some((_, standby_port)) = node(&root.join(DIR)) else {
        return Err(Error::Stack(
            "no standby is running: start the stack with `reviewflow stack up --standby`".into(),
        ));
    };
    if let Some((pid, _)) = node(&root.join("data")) {
        tracing::warn!(pid, "killing the primary with SIGKILL");
        // SAFETY: a plain signal to this stack's postmaster.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        for _ in 0..600 {
            if !process::alive(pid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let url = format!(
        "postgres://{USER}:{}@127.0.0.1:{standby_port}/{DATABASE}",
        password(cfg)?
    );
    let pg = crate::db::connect(&url).await?;
    let promoted: bool = pg
        .query_one("SELECT pg_promote(true, 60)", &[])
        .await?
        .get(0);
    if !promoted {
        return Err(Error::Stack(format!(
            "the standby was not promoted within 60 s; see {}",
            root.join("standby.log").display()
        )));
    }
    write_file(&home.join(PRIMARY_FILE), DIR.as_bytes(), 0o644)?;
    tracing::warn!(port = standby_port, "the standby is the primary now");
    postgres::running_url(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_get_both_nodes_until_the_standby_is_promoted() {
        let home = std::env::temp_dir().join(format!("rf-following-{}", std::process::id()));
        let root = home.join("postgres");
        let cfg = StackConfig {
            home_dir: Some(home.clone()),
            pg_port: 54329,
            ..StackConfig::default()
        };
        let primary = "postgres://u:p@127.0.0.1:54329/reviewflow";
        assert_eq!(
            following_url(&cfg, &root, primary),
            primary,
            "no standby yet"
        );
        std::fs::create_dir_all(root.join(DIR)).unwrap();
        std::fs::write(root.join(DIR).join("PG_VERSION"), "17\n").unwrap();
        assert_eq!(
            following_url(&cfg, &root, primary),
            "postgres://u:p@127.0.0.1:54329,127.0.0.1:54330/reviewflow?target_session_attrs=read-write"
        );
        std::fs::write(home.join(PRIMARY_FILE), DIR).unwrap();
        let promoted = "postgres://u:p@127.0.0.1:54330/reviewflow";
        assert_eq!(
            following_url(&cfg, &root, promoted),
            promoted,
            "after the failover"
        );
        std::fs::remove_dir_all(&home).unwrap();
    }
}
