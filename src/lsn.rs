//! A position in PostgreSQL's write-ahead log. Commit LSNs order transactions; together with
//! a change's position inside its transaction they identify every change event exactly.

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
    use super::Lsn;

    #[test]
    fn text_form_round_trips() {
        for s in ["0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF"] {
            assert_eq!(s.parse::<Lsn>().unwrap().to_string(), s);
        }
        assert_eq!("1/0".parse::<Lsn>().unwrap(), Lsn(1 << 32));
        assert!("12345".parse::<Lsn>().is_err());
    }
}
