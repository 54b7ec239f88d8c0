//! A row judged from its columns' text, as `replay --from snapshot` and `verify` read it from
//! the table: the text goes through the same Avro value mapping as a change cdc makes of the
//! row, then through the one judging function (`score::judge`), so the table's readers and
//! the fraud worker can only agree.

use crate::avro::envelope::ChangeReaders;
use crate::avro::{Cell, RowSchema};
use crate::change::{Op, Source};
use crate::error::{Error, Result};
use crate::image::ReviewImage;
use crate::lsn::Lsn;
use crate::transform::score::{self, Judgement, Scorer};

/// `"a"::text, "b"::text, ...`: the columns as PostgreSQL prints them (under
/// `db::TEXT_OUTPUT_SETTINGS`), as cdc reads them from the replication stream.
pub fn text_columns<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names
        .into_iter()
        .map(|name| format!("\"{}\"::text", name.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn cells_of<'a>(texts: &[Option<&'a str>]) -> Vec<Cell<'a>> {
    texts
        .iter()
        .map(|t| t.map_or(Cell::Null, |s| Cell::Text(s.as_bytes())))
        .collect()
}

/// The documented oversize marker of a value: "reviewflow.oversize length=<N> sha256=<hex>"
/// over the value's PostgreSQL text.
pub fn oversize_marker(text: &[u8]) -> String {
    let mut hasher = openssl::sha::Sha256::new();
    hasher.update(text);
    format!(
        "reviewflow.oversize length={} sha256={}",
        text.len(),
        crate::avro::digest::hex(&hasher.finish())
    )
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
