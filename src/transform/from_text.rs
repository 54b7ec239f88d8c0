//! A row judged from its columns' text, as `replay --from snapshot` and `verify` read it from
//! the table: the text goes through the same Avro value mapping as a change cdc makes of the
//! row, then through the one judging function (`score::judge`), so the table's readers and
//! the fraud worker can only agree.

use crate::avro::envelope::ChangeReaders;
use crate::avro::{oversize_marker, Cell, RowSchema};
use crate::contract::change::{Op, Source};
use crate::contract::image::ReviewImage;
use crate::contract::lsn::Lsn;
use crate::db::quote_ident;
use crate::error::{Error, Result};
use crate::transform::score::{self, Judgement, Scorer};

/// `"a"::text, "b"::text, ...`: the columns as PostgreSQL prints them (under
/// `db::TEXT_OUTPUT_SETTINGS`), as cdc reads them from the replication stream.
pub fn text_columns<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names
        .into_iter()
        .map(|name| format!("{}::text", quote_ident(name)))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn cells_of<'a>(texts: &[Option<&'a str>]) -> Vec<Cell<'a>> {
    texts
        .iter()
        .map(|t| t.map_or(Cell::Null, |s| Cell::Text(s.as_bytes())))
        .collect()
}

/// Judges rows of one version of the table's columns.
pub struct TextJudge {
    pub schema: RowSchema,
    readers: ChangeReaders,
    source: Source,
}

impl TextJudge {
    pub fn new(schema: RowSchema) -> Self {
        TextJudge {
            schema,
            readers: ChangeReaders::default(),
            source: Source {
                schema: String::new(),
                table: String::new(),
                lsn: Lsn::ZERO,
                position: 0,
                txid: None,
                commit_time: chrono::DateTime::default(),
                snapshot: true,
            },
        }
    }

    /// The image the fraud worker reads of a change of this row, and the verdict on it.
    /// `oversize` names columns the judged change carried as their oversize marker: the
    /// marker stands in for the text, as it did in the change.
    pub fn judge(
        &mut self,
        cells: &[Cell],
        oversize: &[usize],
        scorer: &dyn Scorer,
    ) -> Result<(ReviewImage, Judgement)> {
        let markers: Vec<(usize, String)> = oversize
            .iter()
            .filter_map(|&i| match cells.get(i) {
                Some(Cell::Text(t)) => Some((i, oversize_marker(t))),
                _ => None,
            })
            .collect();
        let mut carried = cells.to_vec();
        for (i, marker) in &markers {
            carried[*i] = Cell::Text(marker.as_bytes());
        }
        let body = self
            .schema
            .encode(Op::Read, None, Some(&carried), &self.source)?;
        // One schema, so one reader id: the reader is built once.
        let image = self
            .readers
            .read(0, self.schema.envelope(), &body)?
            .after
            .ok_or_else(|| Error::Decode("a row read without an after image".into()))?;
        let judgement = score::judge(scorer, &image);
        Ok((image, judgement))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::score::scorer_for_model;

    fn judge() -> TextJudge {
        let columns = [
            ("id", 20, -1),
            ("course_id", 20, -1),
            ("user_id", 20, -1),
            ("rating", 1700, (2 << 16 | 1) + 4),
            ("title", 25, -1),
            ("content", 25, -1),
            ("created_at", 1184, -1),
            ("updated_at", 1184, -1),
        ]
        .map(|(n, o, m)| (n.to_string(), o, m));
        TextJudge::new(RowSchema::new("public", "reviews", columns).unwrap())
    }

    #[test]
    fn the_marker_is_what_the_model_judges_in_place_of_an_oversize_column() {
        assert_eq!(
            oversize_marker(b"abc"),
            "reviewflow.oversize length=3 sha256=\
             ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let t = "2026-11-25 04:40:17.993809+00";
        let texts = [
            Some("7"),
            Some("42"),
            None,
            Some("4.5"),
            None,
            Some("see http://spam.example.com"),
            Some(t),
            Some(t),
        ];
        let cells = cells_of(&texts);
        let model = scorer_for_model("heuristic-v1@0.5").unwrap();
        let mut judge = judge();
        let (image, whole) = judge.judge(&cells, &[], model.as_ref()).unwrap();
        assert_eq!(image.content.as_deref(), texts[5]);
        assert!(whole.fraud, "{whole:?}");
        let (image, marked) = judge.judge(&cells, &[5], model.as_ref()).unwrap();
        assert_eq!(
            image.content,
            Some(oversize_marker(b"see http://spam.example.com"))
        );
        assert!(
            !marked.reasons.contains(&"link".to_string()),
            "the link is not in the marker: {marked:?}"
        );
        assert_eq!(
            marked,
            model.judge(&image.countable().unwrap()),
            "the marker is judged as any text would be"
        );
        assert_eq!(
            judge.schema.digest(&cells),
            crate::avro::digest::image_digest(texts.iter().map(|t| t.map(str::as_bytes))),
            "the digest is of the text, markers or not"
        );
    }
}
