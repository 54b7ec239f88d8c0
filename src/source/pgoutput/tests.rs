//! The decoder's tests: messages built the way pgoutput writes them, each decoded whole and
//! cut at every byte (an error, never a panic).

use super::*;

/// Builds wire messages the way pgoutput writes them.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn tag(t: u8) -> Self {
        Msg(vec![t])
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.extend(v.to_be_bytes());
        self
    }
    fn i32(mut self, v: i32) -> Self {
        self.0.extend(v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend(v.to_be_bytes());
        self
    }
    fn i64(mut self, v: i64) -> Self {
        self.0.extend(v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend(v.to_be_bytes());
        self
    }
    fn str(mut self, s: &str) -> Self {
        self.0.extend(s.as_bytes());
        self.0.push(0);
        self
    }
    fn text(self, s: &str) -> Self {
        let mut m = self.u8(b't').i32(s.len() as i32);
        m.0.extend(s.as_bytes());
        m
    }
    fn bytes(&self) -> Bytes {
        Bytes::from(self.0.clone())
    }
}

fn text(s: &str) -> Value {
    Value::Text(Bytes::copy_from_slice(s.as_bytes()))
}

/// Every message kind, with what it must decode to.
fn samples() -> Vec<(Msg, PgOutput)> {
    vec![
        (
            Msg::tag(b'B').u64(0x16_B374_D848).i64(789).u32(731),
            PgOutput::Begin(Begin {
                final_lsn: Lsn(0x16_B374_D848),
                commit_time_micros: 789,
                xid: 731,
            }),
        ),
        (
            Msg::tag(b'C').u8(0).u64(100).u64(148).i64(-5),
            PgOutput::Commit(Commit {
                flags: 0,
                commit_lsn: Lsn(100),
                end_lsn: Lsn(148),
                commit_time_micros: -5,
            }),
        ),
        (
            Msg::tag(b'O').u64(42).str("node_a"),
            PgOutput::Origin {
                commit_lsn: Lsn(42),
                name: "node_a".into(),
            },
        ),
        (
            Msg::tag(b'R')
                .u32(16385)
                .str("public")
                .str("reviews")
                .u8(b'f')
                .u16(2)
                .u8(1)
                .str("id")
                .u32(20)
                .i32(-1)
                .u8(0)
                .str("rating")
                .u32(1700)
                .i32(131_077),
            PgOutput::Relation(Relation {
                id: 16385,
                namespace: "public".into(),
                name: "reviews".into(),
                replica_identity: b'f',
                columns: vec![
                    Column {
                        key: true,
                        name: "id".into(),
                        type_oid: 20,
                        type_modifier: -1,
                    },
                    Column {
                        key: false,
                        name: "rating".into(),
                        type_oid: 1700,
                        type_modifier: 131_077,
                    },
                ],
            }),
        ),
        (
            Msg::tag(b'Y').u32(90_001).str("public").str("mood"),
            PgOutput::Type {
                id: 90_001,
                namespace: "public".into(),
                name: "mood".into(),
            },
        ),
        (
            Msg::tag(b'I')
                .u32(16385)
                .u8(b'N')
                .u16(3)
                .text("7")
                .u8(b'n')
                .text(""),
            PgOutput::Insert {
                relation_id: 16385,
                new: vec![text("7"), Value::Null, text("")],
            },
        ),
        (
            Msg::tag(b'U').u32(16385).u8(b'N').u16(2).text("7").u8(b'u'),
            PgOutput::Update {
                relation_id: 16385,
                old: None,
                key_only: false,
                new: vec![text("7"), Value::UnchangedToast],
            },
        ),
        (
            Msg::tag(b'U')
                .u32(16385)
                .u8(b'O')
                .u16(2)
                .text("7")
                .text("4.5")
                .u8(b'N')
                .u16(2)
                .text("7")
                .text("2.5"),
            PgOutput::Update {
                relation_id: 16385,
                old: Some(vec![text("7"), text("4.5")]),
                key_only: false,
                new: vec![text("7"), text("2.5")],
            },
        ),
        (
            Msg::tag(b'U')
                .u32(16385)
                .u8(b'K')
                .u16(2)
                .text("7")
                .u8(b'n')
                .u8(b'N')
                .u16(2)
                .text("8")
                .text("2.5"),
            PgOutput::Update {
                relation_id: 16385,
                old: Some(vec![text("7"), Value::Null]),
                key_only: true,
                new: vec![text("8"), text("2.5")],
            },
        ),
        (
            Msg::tag(b'D').u32(16385).u8(b'O').u16(1).text("7"),
            PgOutput::Delete {
                relation_id: 16385,
                old: vec![text("7")],
                key_only: false,
            },
        ),
        (
            Msg::tag(b'D').u32(16385).u8(b'K').u16(1).text("7"),
            PgOutput::Delete {
                relation_id: 16385,
                old: vec![text("7")],
                key_only: true,
            },
        ),
        (
            Msg::tag(b'T').i32(2).u8(3).u32(16385).u32(16390),
            PgOutput::Truncate {
                relation_ids: vec![16385, 16390],
                cascade: true,
                restart_identity: true,
            },
        ),
        (
            Msg::tag(b'T').i32(1).u8(0).u32(16385),
            PgOutput::Truncate {
                relation_ids: vec![16385],
                cascade: false,
                restart_identity: false,
            },
        ),
        (
            Msg::tag(b'M')
                .u8(1)
                .u64(77)
                .str("reviewflow")
                .i32(3)
                .u8(b'a')
                .u8(0)
                .u8(b'c'),
            PgOutput::Message {
                transactional: true,
                lsn: Lsn(77),
                prefix: "reviewflow".into(),
                content: Bytes::from_static(b"a\0c"),
            },
        ),
    ]
}

#[test]
fn decodes_every_message_kind() {
    for (msg, expected) in samples() {
        assert_eq!(decode(msg.bytes()).unwrap(), expected);
    }
}

#[test]
fn text_values_are_slices_of_the_input() {
    let input = Msg::tag(b'I').u32(1).u8(b'N').u16(1).text("hello").bytes();
    let PgOutput::Insert { new, .. } = decode(input.clone()).unwrap() else {
        panic!("an insert");
    };
    let [Value::Text(v)] = new.as_slice() else {
        panic!("one text value");
    };
    assert_eq!(v.as_ptr(), input[input.len() - 5..].as_ptr());
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    for (msg, _) in samples() {
        let full = msg.bytes();
        for len in 0..full.len() {
            let err = decode(full.slice(..len)).expect_err("a truncated message");
            assert!(matches!(err, Error::Decode(_)), "{err}");
        }
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    for (msg, _) in samples() {
        let err = decode(msg.u8(0).bytes()).expect_err("a trailing byte");
        assert!(err.to_string().contains("trailing"), "{err}");
    }
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let cases: Vec<(Bytes, &str)> = vec![
        (Bytes::new(), "message tag"),
        (Msg::tag(b'Z').bytes(), "unknown message tag 'Z'"),
        (Msg::tag(0xff).bytes(), "unknown message tag 0xff"),
        (Msg::tag(b'I').u32(1).u8(b'X').bytes(), "expected 'N'"),
        (
            Msg::tag(b'U').u32(1).u8(b'O').u16(0).u8(b'O').bytes(),
            "expected 'K', 'O' or 'N'",
        ),
        (
            Msg::tag(b'D').u32(1).u8(b'N').bytes(),
            "expected 'K' or 'O'",
        ),
        (
            Msg::tag(b'I').u32(1).u8(b'N').u16(1).u8(b'b').bytes(),
            "column kind",
        ),
        (
            Msg::tag(b'I')
                .u32(1)
                .u8(b'N')
                .u16(1)
                .u8(b't')
                .i32(-1)
                .bytes(),
            "negative length",
        ),
        (
            Msg::tag(b'I')
                .u32(1)
                .u8(b'N')
                .u16(1)
                .u8(b't')
                .i32(i32::MAX)
                .bytes(),
            "truncated",
        ),
        (
            Msg::tag(b'T').i32(-3).u8(0).bytes(),
            "negative relation count",
        ),
        (Msg::tag(b'T').i32(i32::MAX).u8(0).bytes(), "truncated"),
        (
            Msg::tag(b'R')
                .u32(1)
                .str("public")
                .str("x")
                .u8(b'f')
                .u16(u16::MAX)
                .bytes(),
            "truncated",
        ),
        (
            Msg(vec![b'Y', 0, 0, 0, 1, 0xc3, 0x28, 0, b'x', 0]).bytes(),
            "not UTF-8",
        ),
        (
            Msg::tag(b'M').u8(0).u64(1).str("p").i32(-1).bytes(),
            "negative length",
        ),
    ];
    for (input, expected) in cases {
        let err = decode(input.clone()).expect_err("garbage");
        assert!(
            matches!(&err, Error::Decode(m) if m.contains(expected)),
            "{input:?}: {err} does not say {expected:?}"
        );
    }
}

#[test]
fn pseudo_random_bytes_never_panic() {
    // xorshift: deterministic, no dependency; prefixing real tags reaches deep branches.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for round in 0..20_000 {
        let len = (round % 64) + 1;
        let mut bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state & 0xff) as u8
            })
            .collect();
        bytes[0] = b"BCORYIUDTMx"[round % 11];
        let _ = decode(Bytes::from(bytes));
    }
}
