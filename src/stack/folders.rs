//! The stack's default folders, after the XDG base directories: its data (`--home`) and
//! the cache of downloaded Kafka jars (`--cache`).

use std::path::PathBuf;

pub fn default_home() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("reviewflow");
    }
    home_dir().join(".local/share/reviewflow")
}

pub fn default_cache() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("reviewflow");
    }
    home_dir().join(".cache/reviewflow")
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}
