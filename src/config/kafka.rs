//! Kafka client settings: the librdkafka properties file, the `KAFKA_*` variables and the
//! `--kafka-option`s, merged in that order into the settings every client gets.

use crate::error::{Error, Result};
use crate::secret::shown_setting;

/// One Kafka client setting; its value is hidden from Debug output when it is secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSetting {
    pub key: String,
    pub value: String,
}

impl std::fmt::Debug for ClientSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.key, shown_setting(&self.key, &self.value))
    }
}

/// Parses KEY=VALUE without echoing a bad value: clap's own error would print it, and it may
/// be a password.
#[derive(Clone)]
pub(super) struct ClientSettingParser;

impl clap::builder::TypedValueParser for ClientSettingParser {
    type Value = ClientSetting;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> std::result::Result<ClientSetting, clap::Error> {
        let parsed = value
            .to_str()
            .and_then(|v| v.split_once('='))
            .and_then(|(k, v)| {
                let key = k.trim();
                (!key.is_empty() && !key.contains(char::is_whitespace)).then(|| ClientSetting {
                    key: key.to_owned(),
                    value: v.to_owned(),
                })
            });
        parsed.ok_or_else(|| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                "invalid --kafka-option: write it as KEY=VALUE, such as \
                 --kafka-option security.protocol=SASL_SSL\n",
            )
            .with_cmd(cmd)
        })
    }
}

#[derive(Clone)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    /// librdkafka settings: the properties file, then `KAFKA_*` variables, then
    /// `--kafka-option`s (a later one of the same key wins).
    pub client: Vec<(String, String)>,
}

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let client: Vec<String> = self
            .client
            .iter()
            .map(|(k, v)| format!("{k}={}", shown_setting(k, v)))
            .collect();
        f.debug_struct("KafkaSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("client", &client)
            .finish()
    }
}

impl KafkaSettings {
    /// The value of a client setting, as the clients will see it.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.client
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A librdkafka properties file: `key=value` lines; blank lines and `#` or `!` comments
/// are skipped. Errors name the line, never its value.
pub fn read_properties(path: &std::path::Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io_path("read the Kafka properties file", path, e))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| {
            Error::Config(format!(
                "{} line {}: expected key=value",
                path.display(),
                n + 1
            ))
        })?;
        out.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(out)
}

/// Variables of Kafka's own shell scripts and JVM, which are not client settings.
const NOT_CLIENT_SETTINGS: &[&str] = &[
    "BOOTSTRAP_SERVERS", // has its own flag
    "HOME",
    "OPTS",
    "HEAP_OPTS",
    "JVM_PERFORMANCE_OPTS",
    "LOG4J_OPTS",
    "JMX_OPTS",
    "GC_LOG_OPTS",
    "DEBUG",
    "VERSION",
    "CLUSTER_ID",
    "NODE_ID",
];

/// `KAFKA_SASL_PASSWORD=x` becomes `sasl.password=x`.
pub fn kafka_client_settings(
    vars: impl Iterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut out: Vec<_> = vars
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("KAFKA_")?;
            (!name.is_empty() && !NOT_CLIENT_SETTINGS.contains(&name))
                .then(|| (name.to_ascii_lowercase().replace('_', "."), v))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_variables_become_client_settings() {
        let vars = [
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_BOOTSTRAP_SERVERS", "b:9092"),
            ("KAFKA_SASL_PASSWORD", "pw"),
            ("KAFKA_HEAP_OPTS", "-Xmx1g"),
            ("DATABASE_URL", "postgres://x"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let got = kafka_client_settings(vars.into_iter());
        assert_eq!(
            got,
            vec![
                ("sasl.password".to_string(), "pw".to_string()),
                ("security.protocol".to_string(), "SASL_SSL".to_string()),
            ]
        );
    }
}
