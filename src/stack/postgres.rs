//! The local PostgreSQL cluster: initdb once (wal_level=logical, password auth on loopback
//! only), then pg_ctl start/stop. As root, the cluster runs as an unprivileged account,
//! since postgres refuses root; if that account cannot reach the data folder, the cluster
//! lives under /var/lib/reviewflow instead and the data folder records where. With a
//! standby (`standby`), the primary is whichever node the stack's home names: the first
//! cluster until `stack failover` promotes the standby.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

use super::process::{self, Account};
use super::{postgres_builds, standby, write_file, StackConfig};
use crate::error::{Error, Result};

pub(super) const USER: &str = "reviewflow";
pub(super) const DATABASE: &str = "reviewflow";

pub async fn up(cfg: &StackConfig) -> Result<String> {
    let home = cfg.home();
    let account = if process::is_root() {
        Some(process::unprivileged_account().await?)
    } else {
        None
    };
    let root = cluster_root(&home, account.as_ref()).await?;
    write_file(
        &home.join("postgres.location"),
        root.to_string_lossy().as_bytes(),
        0o644,
    )?;
    let promoted = standby::promoted(&home);
    let (data, port) = primary_node(cfg);
    let with_standby = !promoted && (cfg.standby || standby::exists(&root));

    // Before anything else: a running cluster of another version is refused as well.
    postgres_builds::check_data_version(cfg, &data)?;
    let url = match running_url(cfg) {
        Ok(url) => url,
        Err(_) => {
            let bin = postgres_builds::server_bin(cfg, account.as_ref()).await?;
            if !data.join("PG_VERSION").exists() {
                init(cfg, &bin, &root, account.as_ref()).await?;
            }
            if cfg.pg_ssl {
                certificate(&data, account.as_ref()).await?;
            }
            // The synchronous settings only once the standby exists: before it, they would
            // hold up the CREATE DATABASE below.
            let extra = if with_standby && standby::exists(&root) {
                standby::primary_settings(&data)
            } else {
                String::new()
            };
            write_conf(&data, &settings(port, cfg.pg_ssl, &extra), account.as_ref())?;
            let log = if promoted {
                "standby.log"
            } else {
                "postgres.log"
            };
            start(cfg, &bin, &data, port, &root.join(log), account.as_ref()).await?;
            let url = running_url(cfg)?;
            create_database(cfg).await?;
            url
        }
    };
    if promoted && cfg.standby {
        tracing::warn!(
            "this stack failed over: its old primary stays down and no new standby is made; \
             `reviewflow stack down --purge` starts afresh"
        );
    }
    if with_standby {
        let bin = postgres_builds::server_bin(cfg, account.as_ref()).await?;
        standby::up(cfg, &bin, &root, account.as_ref()).await?;
    }
    Ok(url)
}

/// (data folder, port) of the node that is the primary now.
pub(super) fn primary_node(cfg: &StackConfig) -> (PathBuf, u16) {
    let root = location(&cfg.home());
    if standby::promoted(&cfg.home()) {
        (root.join(standby::DIR), standby::port(cfg))
    } else {
        (root.join("data"), cfg.pg_port)
    }
}

/// `pg_ctl start` of one node, waiting until it accepts connections (a standby: until it is
/// consistent); its log's tail in the error.
pub(super) async fn start(
    cfg: &StackConfig,
    bin: &Path,
    data: &Path,
    port: u16,
    log: &Path,
    account: Option<&Account>,
) -> Result<()> {
    if !process::port_free(port) {
        return Err(Error::Stack(format!(
            "port {port} is taken by another program; choose another with REVIEWFLOW_PG_PORT \
             (a standby listens on the next port)"
        )));
    }
    tracing::info!(
        data = %data.display(), port, version = cfg.pg_version,
        "starting PostgreSQL"
    );
    let mut start = pg_tool(bin, "pg_ctl", account);
    start
        .arg("start")
        .arg("-w")
        .args(["-t", "90"])
        .arg("-D")
        .arg(data)
        .arg("-l")
        .arg(log);
    process::run("pg_ctl start", &mut start)
        .await
        .map_err(|e| {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            Error::Stack(format!(
                "{e}\n--- {} ---\n{}",
                log.display(),
                process::tail(&text, 15)
            ))
        })
        .map(drop)
}

/// Rewritten on every start so a changed port or TLS setting takes effect.
pub(super) fn write_conf(data: &Path, text: &str, account: Option<&Account>) -> Result<()> {
    let conf = data.join("reviewflow.conf");
    // A standby's holds the password it replicates with.
    write_file(&conf, text.as_bytes(), 0o600)?;
    chown(&conf, account)
}

/// Stops every node of the cluster that runs: the primary and a standby.
pub async fn down(cfg: &StackConfig) -> Result<()> {
    let root = location(&cfg.home());
    let account = if process::is_root() {
        Some(process::unprivileged_account().await?)
    } else {
        None
    };
    for dir in ["data", standby::DIR] {
        let data = root.join(dir);
        if let Some(pid) = node_pid(&data) {
            stop(cfg, &data, pid, account.as_ref()).await;
        }
    }
    Ok(())
}

async fn stop(cfg: &StackConfig, data: &Path, pid: i32, account: Option<&Account>) {
    // The pg_ctl of the version that made the data, whatever version today's flags name.
    let bin = postgres_builds::data_version(data)
        .and_then(|v| v.parse().ok())
        .and_then(|major| postgres_builds::installed_bin(cfg, major));
    let stopped = match bin {
        Some(bin) => {
            let mut stop = pg_tool(&bin, "pg_ctl", account);
            stop.arg("stop")
                .args(["-m", "fast", "-w", "-t", "60"])
                .arg("-D")
                .arg(data);
            process::run("pg_ctl stop", &mut stop).await.map(drop)
        }
        None => Err(Error::Stack(format!(
            "no pg_ctl for the PostgreSQL of {}",
            data.display()
        ))),
    };
    if let Err(e) = stopped {
        tracing::warn!(error = %e, pid, "pg_ctl stop failed; terminating the postmaster");
        process::terminate(pid, Duration::from_secs(30)).await;
    }
}

/// The connection string of the running cluster.
pub fn running_url(cfg: &StackConfig) -> Result<String> {
    let home = cfg.home();
    let (_, port) = running(cfg).ok_or_else(|| {
        Error::Stack(format!(
            "PostgreSQL of {} is not running: run `reviewflow stack up`",
            home.display()
        ))
    })?;
    let password = std::fs::read_to_string(home.join("postgres.password"))
        .map_err(|e| Error::io_path("read", &home.join("postgres.password"), e))?;
    Ok(format!(
        "postgres://{USER}:{}@127.0.0.1:{port}/{DATABASE}",
        password.trim()
    ))
}

/// (postmaster pid, port) when our cluster's postmaster is alive.
pub(super) fn running_pid(cfg: &StackConfig) -> Option<i32> {
    running(cfg).map(|(pid, _)| pid)
}

fn running(cfg: &StackConfig) -> Option<(i32, u16)> {
    let (data, _) = primary_node(cfg);
    node(&data)
}

/// (postmaster pid, port) of the node of `data`, when it is alive.
pub(super) fn node(data: &Path) -> Option<(i32, u16)> {
    let pidfile = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let mut lines = pidfile.lines();
    let pid: i32 = lines.next()?.trim().parse().ok()?;
    let port: u16 = lines.nth(2)?.trim().parse().ok()?;
    let ours = process::cmdline(pid).is_some_and(|c| c.contains("postgres"));
    (ours && process::alive(pid)).then_some((pid, port))
}

fn node_pid(data: &Path) -> Option<i32> {
    node(data).map(|(pid, _)| pid)
}

pub(super) fn location(home: &Path) -> PathBuf {
    std::fs::read_to_string(home.join("postgres.location"))
        .map(|s| PathBuf::from(s.trim()))
        .unwrap_or_else(|_| home.join("postgres"))
}

async fn cluster_root(home: &Path, account: Option<&Account>) -> Result<PathBuf> {
    let inside = home.join("postgres");
    let Some(account) = account else {
        std::fs::create_dir_all(&inside).map_err(|e| Error::io_path("create", &inside, e))?;
        return Ok(inside);
    };
    let root = if process::reachable(home, account).await {
        inside
    } else {
        let name = home.to_string_lossy().trim_matches('/').replace('/', "_");
        let outside = PathBuf::from("/var/lib/reviewflow").join(name);
        tracing::debug!(
            account = %account.name, cluster = %outside.display(),
            "running as root and the data folder is not reachable by the PostgreSQL account; \
             keeping the cluster outside it"
        );
        outside
    };
    std::fs::create_dir_all(&root).map_err(|e| Error::io_path("create", &root, e))?;
    chown(&root, Some(account))?;
    Ok(root)
}

async fn init(cfg: &StackConfig, bin: &Path, root: &Path, account: Option<&Account>) -> Result<()> {
    let home = cfg.home();
    let password = random_hex(18)?;
    write_file(&home.join("postgres.password"), password.as_bytes(), 0o600)?;
    let pwfile = root.join("initdb.pw");
    write_file(&pwfile, password.as_bytes(), 0o600)?;
    chown(&pwfile, account)?;
    tracing::info!(cluster = %root.display(), "creating the PostgreSQL cluster (initdb)");
    let mut initdb = pg_tool(bin, "initdb", account);
    initdb
        .arg("-D")
        .arg(root.join("data"))
        .args([
            "-U",
            USER,
            "-E",
            "UTF8",
            "--no-locale",
            "--auth=scram-sha-256",
        ])
        .arg(format!("--pwfile={}", pwfile.display()));
    let result = process::run("initdb", &mut initdb).await;
    let _ = std::fs::remove_file(&pwfile);
    result?;
    let conf = root.join("data/postgresql.conf");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&conf)
        .map_err(|e| Error::io_path("open", &conf, e))?;
    writeln!(f, "\ninclude_if_exists = 'reviewflow.conf'")
        .map_err(|e| Error::io_path("write", &conf, e))?;
    Ok(())
}

/// The self-signed certificate the cluster serves with `--pg-ssl`: also the root
/// certificate clients verify it with (`sslrootcert`).
pub fn certificate_path(cfg: &StackConfig) -> PathBuf {
    location(&cfg.home()).join("data/server.crt")
}

/// The cluster's certificate, made once; PostgreSQL refuses a key others can read.
async fn certificate(data: &Path, account: Option<&Account>) -> Result<()> {
    let (crt, key) = (data.join("server.crt"), data.join("server.key"));
    if crt.exists() && key.exists() {
        return Ok(());
    }
    super::self_signed(&crt, &key).await?;
    chown(&key, account)?;
    chown(&crt, account)
}

/// The settings every node starts with, then `extra` (a primary's synchronous standby, a
/// standby's upstream).
pub(super) fn settings(port: u16, ssl: bool, extra: &str) -> String {
    let ssl = if ssl {
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
    } else {
        "ssl = off\n"
    };
    format!(
        "# written by `reviewflow stack up`\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = ''\n\
         wal_level = logical\n\
         max_wal_senders = 32\n\
         max_replication_slots = 32\n\
         max_slot_wal_keep_size = 16GB\n\
         timezone = 'UTC'\n\
         log_timezone = 'UTC'\n\
         {ssl}{extra}"
    )
}

pub(super) async fn create_database(cfg: &StackConfig) -> Result<()> {
    let url = running_url(cfg)?;
    let admin_url = format!(
        "{}/postgres",
        url.rsplit_once('/').map(|(a, _)| a).unwrap_or(&url)
    );
    let (client, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await?;
    let conn = tokio::spawn(conn);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&DATABASE])
        .await?;
    if exists.is_none() {
        client
            .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
            .await?;
    }
    drop(client);
    let _ = conn.await;
    Ok(())
}

pub(super) fn pg_tool(bin: &Path, tool: &str, account: Option<&Account>) -> Command {
    let mut cmd = Command::new(bin.join(tool));
    if let Some(a) = account {
        cmd.uid(a.uid).gid(a.gid).current_dir("/");
    }
    cmd.env("LC_ALL", "C").env_remove("PGDATA");
    cmd
}

pub(super) fn chown(path: &Path, account: Option<&Account>) -> Result<()> {
    match account {
        Some(a) => std::os::unix::fs::chown(path, Some(a.uid), Some(a.gid))
            .map_err(|e| Error::io_path("chown", path, e)),
        None => Ok(()),
    }
}

pub(super) fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| Error::io("read /dev/urandom", e))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
