//! Which WAL position the slot may confirm. A transaction's commit end LSN becomes
//! confirmable only once Kafka has acknowledged every event of it and of every earlier
//! transaction; deliveries complete out of order, so this keeps the ordered ledger.

use std::collections::VecDeque;

use crate::contract::lsn::Lsn;

#[derive(Debug)]
struct Pending {
    seq: u64,
    /// Set when the transaction's Commit was read.
    end_lsn: Option<Lsn>,
    outstanding: u64,
}

#[derive(Debug, Default)]
pub struct AckLedger {
    pending: VecDeque<Pending>,
    next_seq: u64,
    confirmed: Lsn,
    failure: Option<String>,
}

impl AckLedger {
    pub fn new(confirmed: Lsn) -> Self {
        AckLedger {
            confirmed,
            ..Default::default()
        }
    }

    /// A transaction starts; its events are produced under the returned sequence number.
    pub fn begin(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push_back(Pending {
            seq,
            end_lsn: None,
            outstanding: 0,
        });
        seq
    }

    pub fn produced(&mut self, seq: u64) {
        if let Some(p) = self.find(seq) {
            p.outstanding += 1;
        }
    }

    pub fn acked(&mut self, seq: u64) {
        if let Some(p) = self.find(seq) {
            p.outstanding = p.outstanding.saturating_sub(1);
        }
        self.advance();
    }

    pub fn failed(&mut self, reason: String) {
        self.failure.get_or_insert(reason);
    }

    pub fn committed(&mut self, seq: u64, end_lsn: Lsn) {
        if let Some(p) = self.find(seq) {
            p.end_lsn = Some(end_lsn);
        }
        self.advance();
    }

    /// With nothing in flight, the server's idle WAL end can be confirmed: that is the
    /// heartbeat that keeps an idle slot from holding WAL.
    pub fn idle_at(&mut self, wal_end: Lsn) {
        if self.pending.is_empty() && self.failure.is_none() && wal_end > self.confirmed {
            self.confirmed = wal_end;
        }
    }

    pub fn confirmed(&self) -> Lsn {
        self.confirmed
    }

    pub fn in_flight(&self) -> u64 {
        self.pending.iter().map(|p| p.outstanding).sum()
    }

    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    fn find(&mut self, seq: u64) -> Option<&mut Pending> {
        let first = self.pending.front()?.seq;
        self.pending
            .get_mut(usize::try_from(seq.checked_sub(first)?).ok()?)
    }

    fn advance(&mut self) {
        if self.failure.is_some() {
            return;
        }
        while let Some(front) = self.pending.front() {
            match front.end_lsn {
                Some(end) if front.outstanding == 0 => {
                    self.confirmed = self.confirmed.max(end);
                    self.pending.pop_front();
                }
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_only_the_acknowledged_prefix() {
        let mut l = AckLedger::new(Lsn(10));
        let a = l.begin();
        l.produced(a);
        l.produced(a);
        l.committed(a, Lsn(20));
        let b = l.begin();
        l.produced(b);
        l.committed(b, Lsn(30));
        l.acked(b);
        assert_eq!(l.confirmed(), Lsn(10), "b is acknowledged but a is not");
        l.acked(a);
        assert_eq!(l.confirmed(), Lsn(10));
        l.acked(a);
        assert_eq!(l.confirmed(), Lsn(30));
        assert_eq!(l.in_flight(), 0);
    }

    #[test]
    fn an_open_transaction_holds_the_position() {
        let mut l = AckLedger::new(Lsn(10));
        let a = l.begin();
        l.produced(a);
        l.acked(a);
        l.idle_at(Lsn(50));
        assert_eq!(l.confirmed(), Lsn(10), "its commit is not read yet");
        l.committed(a, Lsn(40));
        assert_eq!(l.confirmed(), Lsn(40));
        l.idle_at(Lsn(50));
        assert_eq!(l.confirmed(), Lsn(50), "idle: the heartbeat moves the slot");
    }

    #[test]
    fn a_failed_delivery_freezes_the_position() {
        let mut l = AckLedger::new(Lsn(10));
        let a = l.begin();
        l.produced(a);
        l.failed("broker gone".into());
        l.acked(a);
        l.committed(a, Lsn(40));
        l.idle_at(Lsn(90));
        assert_eq!(l.confirmed(), Lsn(10));
        assert_eq!(l.failure(), Some("broker gone"));
    }
}
