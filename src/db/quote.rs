//! Quoting names and values into SQL text, for the statements that cannot take parameters
//! (utility statements such as CREATE ROLE, the replication protocol's commands, column lists
//! built from the catalogue). One rule, so a name with a quote or a capital is handled the
//! same way wherever it is spliced in.

/// `name` as a PostgreSQL identifier: always quoted, so case and any character survive, with
/// inner double quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as an SQL string literal, with inner single quotes doubled. No backslash escapes:
/// the replication grammar knows none, and ordinary sessions run with
/// standard_conforming_strings on (PostgreSQL's default since 9.1).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `name` as an operator would type it in a suggested statement: bare when PostgreSQL would
/// read it unchanged (lower case, digits, underscores, not starting with a digit), so hints
/// stay readable; quoted as [`quote_ident`] otherwise.
pub fn readable_ident(name: &str) -> String {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        name.to_string()
    } else {
        quote_ident(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled() {
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(quote_literal(&quote_ident("it's")), r#"'"it''s"'"#);
    }

    #[test]
    fn readable_names_stay_bare_and_others_are_quoted() {
        assert_eq!(readable_ident("reviewflow_pub2"), "reviewflow_pub2");
        assert_eq!(readable_ident("Pub"), "\"Pub\"");
        assert_eq!(readable_ident("2pub"), "\"2pub\"");
    }
}
