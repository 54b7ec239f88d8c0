//! A position in PostgreSQL's write-ahead log. Commit LSNs order transactions; together with
//! a change's position inside its transaction they identify every change event exactly
//! (`SourcePosition`).

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);
}

/// PostgreSQL's text form: two hex halves, `16/B374D848`.
impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| format!("not an LSN: {s:?}"))?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| format!("not an LSN: {s:?}"))?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| format!("not an LSN: {s:?}"))?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// Where a change stands in the source's history: its transaction's commit LSN (for a
/// snapshot read, the slot's consistent point), then its index inside that transaction (or
/// the row's inside the snapshot). It is unique per change and increases along the stream,
/// so every consumer drops an event at or below the last one it applied; the derived order
/// (commit LSN first) is that rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourcePosition {
    pub lsn: Lsn,
    pub position: i64,
}

impl SourcePosition {
    pub const fn new(lsn: Lsn, position: i64) -> Self {
        SourcePosition { lsn, position }
    }

    /// The last position a change committed before `lsn` can have: a commit LSN is either
    /// below a point or not, so every change of an earlier transaction is at or below it.
    pub const fn last_before(lsn: Lsn) -> Self {
        SourcePosition::new(Lsn(lsn.0.saturating_sub(1)), i64::MAX)
    }
}

impl fmt::Display for SourcePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.lsn, self.position)
    }
}

impl From<tokio_postgres::types::PgLsn> for Lsn {
    fn from(l: tokio_postgres::types::PgLsn) -> Self {
        Lsn(u64::from(l))
    }
}

impl From<Lsn> for tokio_postgres::types::PgLsn {
    fn from(l: Lsn) -> Self {
        tokio_postgres::types::PgLsn::from(l.0)
    }
}

#[cfg(test)]
mod tests {
    use super::{Lsn, SourcePosition};

    #[test]
    fn positions_order_by_commit_then_inside_it() {
        let a = SourcePosition::new(Lsn(10), 5);
        assert!(a < SourcePosition::new(Lsn(10), 6));
        assert!(a < SourcePosition::new(Lsn(11), 0));
        assert!(SourcePosition::last_before(Lsn(11)) > a);
        assert!(SourcePosition::last_before(Lsn(11)) < SourcePosition::new(Lsn(11), 0));
    }

    #[test]
    fn text_form_round_trips() {
        for s in ["0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF"] {
            assert_eq!(s.parse::<Lsn>().unwrap().to_string(), s);
        }
        assert_eq!("1/0".parse::<Lsn>().unwrap(), Lsn(1 << 32));
        assert!("12345".parse::<Lsn>().is_err());
    }
}
