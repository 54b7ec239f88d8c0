//! How secrets stay out of logs and errors: which client settings are secret, and how a
//! connection string or URL is shown without its password. Both the configuration (its
//! Debug output) and the errors (librdkafka quotes the values it refuses) use it.

/// Settings whose values must never reach a log line: sasl.password, ssl.key.password,
/// ssl.key.pem, sasl.oauthbearer.client.secret, ...
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "key.pem",
        "private",
        "jaas",
        "credential",
    ]
    .iter()
    .any(|s| key.contains(s))
}

/// A setting's value as logs show it.
pub fn shown_setting<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret(key) {
        "***"
    } else {
        value
    }
}

/// A connection string as logs and errors show it: the password of a URL
/// (`scheme://user:***@host`) or of a key=value string (`password=***`) hidden.
pub fn redact_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        // The authority ends at the first '/', '?' or '#'; a password may contain '@'.
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let mut shown = match authority.rfind('@') {
            Some(at) => match authority[..at].find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &authority[..colon],
                    &authority[at..]
                ),
                None => format!("{}{authority}", &url[..scheme_end + 3]),
            },
            None => format!("{}{authority}", &url[..scheme_end + 3]),
        };
        // A password may also be a query parameter.
        let tail = &rest[authority_end..];
        match tail.split_once('?') {
            Some((path, query)) => {
                let query: Vec<String> = query
                    .split('&')
                    .map(|p| match p.split_once('=') {
                        Some((k, _)) if is_secret(k) || k == "sslpassword" => format!("{k}=***"),
                        _ => p.to_owned(),
                    })
                    .collect();
                shown.push_str(path);
                shown.push('?');
                shown.push_str(&query.join("&"));
            }
            None => shown.push_str(tail),
        }
        return shown;
    }
    url.split_whitespace()
        .map(|token| match token.split_once('=') {
            Some((k, _)) if is_secret(k) => format!("{k}=***"),
            _ => token.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A URL as logs and errors show it: without its password, and without a trailing slash.
pub fn shown_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Only fails for URLs that cannot have credentials, which this one has.
        let _ = shown.set_password(Some("***"));
    }
    shown.as_str().trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_settings_are_recognised() {
        assert!(is_secret("sasl.password"));
        assert!(is_secret("ssl.key.password"));
        assert!(is_secret("sasl.oauthbearer.client.secret"));
        assert!(!is_secret("security.protocol"));
        assert!(!is_secret("sasl.username"));
    }

    #[test]
    fn connection_strings_lose_their_passwords() {
        for (url, shown) in [
            (
                "postgres://rf:s3cr@t@127.0.0.1:5432/db?sslmode=require",
                "postgres://rf:***@127.0.0.1:5432/db?sslmode=require",
            ),
            ("postgres://h/db", "postgres://h/db"),
            (
                "postgres://u@h/db?password=s3cr",
                "postgres://u@h/db?password=***",
            ),
            ("host=h user=u password=s3cr", "host=h user=u password=***"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }
}
