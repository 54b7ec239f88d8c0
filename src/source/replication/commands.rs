//! The commands of a replication session before it streams: simple queries (SQL or
//! replication commands such as `slot::create`'s, rows as text), and START_REPLICATION, which
//! turns the session into a [`ReplicationStream`].

use postgres_protocol::message::backend::{DataRowBody, Message};
use postgres_protocol::message::frontend;
use tokio_postgres::fallible_iterator::FallibleIterator;

use super::wire::{log_notice, Backend, ServerError};
use super::{ReplicationConnection, ReplicationStream};
use crate::contract::lsn::Lsn;
use crate::db::{quote_ident, quote_literal};
use crate::error::{Error, Result};

impl ReplicationConnection {
    /// Runs `sql` with the simple-query protocol: SQL, or a replication command such as
    /// `IDENTIFY_SYSTEM`. Returns the rows of the last result set, every column as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        self.wire.send(|b| frontend::query(sql, b)).await?;
        let mut rows = Vec::new();
        // The connection stays usable only if we read up to ReadyForQuery, so failures are
        // kept until then.
        let mut failure: Option<String> = None;
        loop {
            let message = match self.wire.recv("running a query").await? {
                Backend::Message(m) => m,
                Backend::CopyBothResponse => {
                    // START_REPLICATION sent here: end the stream so the session stays usable
                    // for queries (PostgreSQL 15 will not stream a second time on it).
                    self.wire
                        .send(|b| {
                            frontend::copy_done(b);
                            Ok(())
                        })
                        .await?;
                    failure.get_or_insert_with(|| "streaming is started with start()".into());
                    continue;
                }
            };
            match message {
                Message::RowDescription(_) => rows.clear(),
                Message::DataRow(body) => match text_row(&body) {
                    Ok(row) => rows.push(row),
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                },
                Message::ErrorResponse(body) => {
                    failure.get_or_insert(ServerError::parse(&body).to_string());
                }
                Message::CopyInResponse(_) => {
                    self.wire
                        .send(|b| frontend::copy_fail("simple_query sends no COPY data", b))
                        .await?;
                    failure.get_or_insert_with(|| "COPY is not supported here".into());
                }
                Message::CopyOutResponse(_) => {
                    failure.get_or_insert_with(|| "COPY is not supported here".into());
                }
                Message::ReadyForQuery(_) => break,
                Message::NoticeResponse(body) => log_notice(&body),
                Message::CommandComplete(_)
                | Message::EmptyQueryResponse
                | Message::ParameterStatus(_)
                | Message::CopyData(_)
                | Message::CopyDone => {}
                other => {
                    return Err(self
                        .wire
                        .unexpected("running a query", &Backend::Message(other)))
                }
            }
        }
        match failure {
            None => Ok(rows),
            Some(e) => Err(Error::Replication(format!("{}: {e}", statement(sql)))),
        }
    }

    /// Streams `slot` from `from` (`Lsn::ZERO`: from the slot's confirmed position), with
    /// the tables of `publication` (an exact name, not case-folded).
    pub async fn start(
        mut self,
        slot: &str,
        from: Lsn,
        publication: &str,
    ) -> Result<ReplicationStream> {
        validate_slot_name(slot)?;
        // publication_names is a comma-separated identifier list inside a literal.
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {from} (proto_version '1', publication_names {})",
            quote_ident(slot),
            quote_literal(&quote_ident(publication))
        );
        self.wire.send(|b| frontend::query(&sql, b)).await?;
        loop {
            match self.wire.recv("starting replication").await? {
                Backend::CopyBothResponse => break,
                Backend::Message(Message::ErrorResponse(body)) => {
                    return Err(Error::Replication(format!(
                        "{}: {}",
                        statement(&sql),
                        ServerError::parse(&body)
                    )))
                }
                Backend::Message(Message::NoticeResponse(body)) => log_notice(&body),
                Backend::Message(Message::ParameterStatus(_)) => {}
                other => return Err(self.wire.unexpected("starting replication", &other)),
            }
        }
        tracing::info!(slot, %from, publication, endpoint = %self.wire.endpoint, "replication started");
        Ok(ReplicationStream {
            wire: self.wire,
            slot: slot.to_owned(),
            ended: false,
        })
    }
}

fn text_row(body: &DataRowBody) -> std::result::Result<Vec<Option<String>>, String> {
    let buffer = body.buffer();
    let mut ranges = body.ranges();
    let mut row = Vec::new();
    while let Some(range) = ranges
        .next()
        .map_err(|e| format!("malformed DataRow: {e}"))?
    {
        let value = match range {
            None => None,
            Some(range) => {
                let bytes = buffer
                    .get(range)
                    .ok_or_else(|| "malformed DataRow: column out of bounds".to_owned())?;
                let text = std::str::from_utf8(bytes)
                    .map_err(|e| format!("a column value is not UTF-8: {e}"))?;
                Some(text.to_owned())
            }
        };
        row.push(value);
    }
    Ok(row)
}

/// PostgreSQL's rule for slot names; checked here so a bad name fails before any I/O.
pub(in crate::source) fn validate_slot_name(slot: &str) -> Result<()> {
    let valid_chars = slot
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if slot.is_empty() || slot.len() > 63 || !valid_chars {
        return Err(Error::Config(format!(
            "replication slot name {slot:?}: use 1 to 63 lower-case letters, digits and underscores"
        )));
    }
    Ok(())
}

/// A statement shortened for error messages.
fn statement(sql: &str) -> String {
    match sql.char_indices().nth(120) {
        Some((cut, _)) => format!("{}...", &sql[..cut]),
        None => sql.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_and_checked() {
        assert!(validate_slot_name("reviewflow_1").is_ok());
        for bad in ["", "Upper", "a-b", "x\"y", &"a".repeat(64)] {
            assert!(validate_slot_name(bad).is_err(), "{bad}");
        }
    }
}
