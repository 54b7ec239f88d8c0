//! Compatibility levels and the check a new schema must pass before it becomes a subject's
//! next version, with Confluent's meaning of each level. Schema resolution itself is
//! apache-avro's (`SchemaCompatibility::can_read`); this module only decides which pairs to
//! check, in which direction, and says why a pair fails.

use std::fmt;
use std::str::FromStr;

use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::Schema;

/// A subject's compatibility level, as Confluent names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Level {
    None,
    /// The new schema can read data written with the latest version.
    #[default]
    Backward,
    /// The new schema can read data written with every live version.
    BackwardTransitive,
    /// The latest version can read data written with the new schema.
    Forward,
    ForwardTransitive,
    /// Both backward and forward.
    Full,
    FullTransitive,
}

impl Level {
    pub const ALL: [Level; 7] = [
        Level::None,
        Level::Backward,
        Level::BackwardTransitive,
        Level::Forward,
        Level::ForwardTransitive,
        Level::Full,
        Level::FullTransitive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    pub(crate) fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }

    fn backward(self) -> bool {
        matches!(
            self,
            Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive
        )
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = String;

    /// Case-insensitive, as Confluent's server accepts it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                let names: Vec<_> = Level::ALL.iter().map(|l| l.as_str()).collect();
                format!(
                    "invalid compatibility level {s:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// A registered version the candidate is checked against.
pub struct Existing<'a> {
    pub version: u32,
    pub schema: &'a Schema,
}

/// Why `candidate` may not follow `existing` (a subject's live versions, oldest first) under
/// `level`; empty when it may. Non-transitive levels look only at the latest version.
pub fn problems(level: Level, candidate: &Schema, existing: &[Existing<'_>]) -> Vec<String> {
    let against: &[Existing<'_>] = match (level, existing.split_last()) {
        (Level::None, _) | (_, None) => &[],
        (l, Some((latest, _))) if !l.transitive() => std::slice::from_ref(latest),
        _ => existing,
    };
    let mut out = Vec::new();
    for old in against {
        if level.backward() {
            if let Err(why) = reads(old.schema, candidate) {
                out.push(format!(
                    "the new schema cannot read data written with version {}: {why}",
                    old.version
                ));
            }
        }
        if level.forward() {
            if let Err(why) = reads(candidate, old.schema) {
                out.push(format!(
                    "version {} cannot read data written with the new schema: {why}",
                    old.version
                ));
            }
        }
    }
    out
}

/// Whether every datum written with `writer` can be read with `reader`.
///
/// apache-avro calls a pair "partially" compatible when only some data resolves (a writer
/// union branch or enum symbol the reader lacks). Java Avro, and so Confluent, rejects such a
/// pair, because a record using that branch would fail at read time; so do we.
pub fn reads(writer: &Schema, reader: &Schema) -> Result<(), String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => Ok(()),
        Ok(Compatibility::Partial) => Err(
            "only part of the data resolves (a union branch or enum symbol of the writer is \
             missing from the reader)"
                .into(),
        ),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type": "record", "name": "Review", "namespace": "reviewflow",
                "fields": [{fields}]}}"#
        ))
        .expect("test schemas parse")
    }

    const ID: &str = r#"{"name": "id", "type": "long"}"#;
    const COURSE: &str = r#"{"name": "course_id", "type": "long"}"#;

    fn check(level: Level, old: &Schema, new: &Schema) -> Vec<String> {
        problems(
            level,
            new,
            &[Existing {
                version: 1,
                schema: old,
            }],
        )
    }

    #[test]
    fn adding_a_nullable_field_with_default_null_is_backward_compatible() {
        let v1 = review(&format!("{ID}, {COURSE}"));
        let v2 = review(&format!(
            r#"{ID}, {COURSE}, {{"name": "title", "type": ["null", "string"], "default": null}}"#
        ));
        assert_eq!(check(Level::Backward, &v1, &v2), Vec::<String>::new());
        // Old readers ignore the new field, so it is forward and full compatible too.
        assert!(check(Level::Full, &v1, &v2).is_empty());
    }

    #[test]
    fn adding_a_field_without_default_is_not_backward_compatible() {
        let v1 = review(ID);
        let v2 = review(&format!(r#"{ID}, {{"name": "title", "type": "string"}}"#));
        let found = check(Level::Backward, &v1, &v2);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("title"), "{found:?}");
        assert!(check(Level::Forward, &v1, &v2).is_empty());
    }

    #[test]
    fn changing_a_long_field_to_string_is_incompatible() {
        let v1 = review(&format!("{ID}, {COURSE}"));
        let v2 = review(&format!(
            r#"{ID}, {{"name": "course_id", "type": "string"}}"#
        ));
        let found = check(Level::Backward, &v1, &v2);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("course_id"), "{found:?}");
        assert!(found[0].contains("version 1"), "{found:?}");
        assert!(!check(Level::Forward, &v1, &v2).is_empty());
        assert!(check(Level::None, &v1, &v2).is_empty());
    }

    #[test]
    fn removing_a_field_is_backward_but_not_forward_compatible() {
        let v1 = review(&format!("{ID}, {COURSE}"));
        let v2 = review(ID);
        assert!(check(Level::Backward, &v1, &v2).is_empty());
        // The old schema needs course_id and has no default for it.
        assert_eq!(check(Level::Forward, &v1, &v2).len(), 1);
        assert_eq!(check(Level::Full, &v1, &v2).len(), 1);
    }

    #[test]
    fn narrowing_a_union_is_rejected_not_partially_accepted() {
        let v1 = review(r#"{"name": "title", "type": ["null", "string"], "default": null}"#);
        let v2 = review(r#"{"name": "title", "type": "string"}"#);
        assert_eq!(check(Level::Backward, &v1, &v2).len(), 1);
    }

    #[test]
    fn transitive_levels_check_every_version_others_only_the_latest() {
        let v1 = review(&format!("{ID}, {COURSE}"));
        let v2 = review(&format!(
            r#"{ID}, {{"name": "course_id", "type": "string", "default": ""}}"#
        ));
        let v3 = review(&format!(
            r#"{ID}, {{"name": "course_id", "type": "string", "default": "x"}}"#
        ));
        let existing = [
            Existing {
                version: 1,
                schema: &v1,
            },
            Existing {
                version: 2,
                schema: &v2,
            },
        ];
        assert!(problems(Level::Backward, &v3, &existing).is_empty());
        let found = problems(Level::BackwardTransitive, &v3, &existing);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("version 1"), "{found:?}");
    }

    /// The change envelope of a table with these (name, type OID, modifier) columns.
    fn envelope(columns: &[(&str, u32, i32)]) -> Schema {
        let columns = columns.iter().map(|(n, o, m)| (n.to_string(), *o, *m));
        crate::avro::RowSchema::new("public", "reviews", columns)
            .unwrap()
            .envelope()
            .clone()
    }

    #[test]
    fn the_table_changes_cdc_streams_through_are_backward_compatible() {
        let varchar10 = 10 + 4;
        let v1 = envelope(&[
            ("id", 20, -1),
            ("votes", 23, -1),
            ("label", 1043, varchar10),
            ("language", 25, -1),
            ("ratio", 700, -1),
        ]);
        // DROP COLUMN language, votes integer to bigint, label varchar(10) to text, ratio real
        // to double precision.
        let v2 = envelope(&[
            ("id", 20, -1),
            ("votes", 20, -1),
            ("label", 25, -1),
            ("ratio", 701, -1),
        ]);
        assert_eq!(check(Level::Backward, &v1, &v2), Vec::<String>::new());
        // A text become an integer: its string branch reads the texts written before.
        let v3 = envelope(&[
            ("id", 20, -1),
            ("votes", 20, -1),
            ("label", 23, -1),
            ("ratio", 701, -1),
        ]);
        assert_eq!(check(Level::Backward, &v2, &v3), Vec::<String>::new());
        // Avro promotes no int to a string: what was written before could not be read.
        let v4 = envelope(&[("id", 20, -1), ("votes", 25, -1), ("label", 23, -1)]);
        let found = check(Level::Backward, &v3, &v4);
        assert_eq!(found.len(), 1, "{found:?}");
    }

    #[test]
    fn the_string_branch_is_backward_compatible_with_envelopes_registered_before_it() {
        let now = envelope(&[
            ("id", 20, -1),
            ("rating", 1700, (2 << 16 | 1) + 4),
            ("title", 25, -1),
        ]);
        // The row fields as they were registered before: ["null", T], no pg_type.
        let mut json: serde_json::Value =
            serde_json::from_str(&crate::registry::normalised(&now).unwrap()).unwrap();
        let fields = json["fields"][1]["type"][1]["fields"]
            .as_array_mut()
            .unwrap();
        for field in fields {
            let union = field["type"].as_array_mut().unwrap();
            union.truncate(2);
            field.as_object_mut().unwrap().remove("pg_type");
        }
        let before = Schema::parse(&json).unwrap();
        assert_ne!(before.canonical_form(), now.canonical_form());
        assert_eq!(check(Level::Backward, &before, &now), Vec::<String>::new());
    }

    #[test]
    fn the_first_version_is_always_accepted() {
        for level in Level::ALL {
            assert!(problems(level, &review(ID), &[]).is_empty());
        }
    }

    #[test]
    fn levels_parse_as_confluent_spells_them() {
        for level in Level::ALL {
            assert_eq!(level.as_str().parse::<Level>(), Ok(level));
        }
        assert_eq!("backward".parse::<Level>(), Ok(Level::Backward));
        assert!("SIDEWAYS".parse::<Level>().is_err());
        assert_eq!(Level::default(), Level::Backward);
    }
}
