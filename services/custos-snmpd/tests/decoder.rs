//! A bounded random test of the decoder under `cargo test` (the fuzz
//! target `snmp_decode` in the top-level `fuzz/` runs longer from
//! `cargo xtask test`): the seeds of the fuzzer (requests as net-snmp
//! sends them) decode and are answered, and tens of thousands of mutated
//! and random messages, deep nesting and huge length fields never panic,
//! never produce an answer over the message size, and never make the agent
//! answer what it could not decode.

use custos_snmpd::agent::{self, Values};
use custos_snmpd::mib::{Mib, Object};
use custos_snmpd::wire::{self, MAX_MESSAGE, Operation, Refusal, Value, Version};

const SEEDS: [(&str, &[u8]); 6] = [
    (
        "get-v1",
        include_bytes!("../../../fuzz/seeds/snmp_decode/get-v1.ber"),
    ),
    (
        "get-v2c",
        include_bytes!("../../../fuzz/seeds/snmp_decode/get-v2c.ber"),
    ),
    (
        "getnext-v1",
        include_bytes!("../../../fuzz/seeds/snmp_decode/getnext-v1.ber"),
    ),
    (
        "getnext-v2c",
        include_bytes!("../../../fuzz/seeds/snmp_decode/getnext-v2c.ber"),
    ),
    (
        "getbulk-v2c",
        include_bytes!("../../../fuzz/seeds/snmp_decode/getbulk-v2c.ber"),
    ),
    (
        "set-v2c",
        include_bytes!("../../../fuzz/seeds/snmp_decode/set-v2c.ber"),
    ),
];

struct Big;

impl Values for Big {
    fn value(&self, o: Object) -> Value {
        match o {
            Object::DiskUsage | Object::SystemStats => Value::String(vec![b'x'; 8 * 1024]),
            _ => Value::String(b"value".to_vec()),
        }
    }
}

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Decodes, answers and encodes like the daemon; checks the bounds.
fn exercise(mib: &Mib, bytes: &[u8]) -> Result<(), Refusal> {
    if let Ok(Some(len)) = wire::message_len(bytes) {
        assert!(len <= MAX_MESSAGE);
    }
    let req = wire::decode(bytes)?;
    assert!(bytes.len() <= MAX_MESSAGE);
    for limit in [wire::MAX_UDP_ANSWER, MAX_MESSAGE] {
        let reply = agent::answer(mib, &req, &Big, limit);
        if let Some(out) = wire::encode(&req, &reply, limit) {
            assert!(out.len() <= limit);
            assert_eq!(wire::message_len(&out), Ok(Some(out.len())));
        }
    }
    Ok(())
}

#[test]
fn the_seeds_are_requests_net_snmp_sends() {
    let mib = Mib::new();
    for (name, seed) in SEEDS {
        let req = wire::decode(seed).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(&req.community[..], b"public", "{name}");
        let want = match name {
            "get-v1" | "getnext-v1" => Version::V1,
            _ => Version::V2c,
        };
        assert_eq!(req.version, want, "{name}");
        if name == "getbulk-v2c" {
            assert_eq!(
                req.operation,
                Operation::GetBulk {
                    non_repeaters: 1,
                    max_repetitions: 10
                }
            );
        }
        exercise(&mib, seed).expect(name);
    }
}

#[test]
fn mutated_and_random_messages_are_refused_or_answered_within_bounds() {
    let mib = Mib::new();
    let mut rng = Rng(0x5eed_c057_05a9_e17d);
    let mut decoded = 0;
    for i in 0..40_000 {
        let mut msg = SEEDS[i % SEEDS.len()].1.to_vec();
        match rng.below(6) {
            // Flip bytes.
            0 | 1 => {
                for _ in 0..=rng.below(4) {
                    let at = rng.below(msg.len());
                    msg[at] = rng.next() as u8;
                }
            }
            // Cut it short.
            2 => msg.truncate(rng.below(msg.len())),
            // Insert junk.
            3 => {
                let at = rng.below(msg.len());
                let junk: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
                msg.splice(at..at, junk);
            }
            // A length byte set to something large.
            4 => {
                let at = rng.below(msg.len());
                msg[at] = 0x84;
            }
            // Random bytes altogether.
            _ => msg = (0..rng.below(512)).map(|_| rng.next() as u8).collect(),
        }
        if exercise(&mib, &msg).is_ok() {
            decoded += 1;
        }
    }
    // Some mutations stay valid (values, ids, arcs): those are answered.
    assert!(decoded > 100, "only {decoded} mutations decoded");
}

#[test]
fn deep_nesting_and_huge_lengths_are_refused() {
    let mib = Mib::new();
    // A community of constructed OCTET STRINGs nested far deeper than any
    // real message, with indefinite lengths.
    let mut msg = vec![0x30, 0x80, 0x02, 0x01, 0x01];
    for _ in 0..5_000 {
        msg.extend_from_slice(&[0x24, 0x80]);
    }
    msg.extend_from_slice(&[0x04, 0x00]);
    for _ in 0..5_001 {
        msg.extend_from_slice(&[0x00, 0x00]);
    }
    assert!(exercise(&mib, &msg).is_err());
    // Length fields that claim far more than is there.
    for head in [
        &[0x30, 0x84, 0x7f, 0xff, 0xff, 0xff, 0x02, 0x01, 0x01][..],
        &[0x30, 0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
        &[
            0x30, 0x0b, 0x02, 0x01, 0x01, 0x04, 0x84, 0xff, 0xff, 0xff, 0xf0, 0x00, 0x00,
        ][..],
    ] {
        assert_eq!(exercise(&mib, head).map(|_| ()), Err(Refusal::Malformed));
    }
    // An OID with an arc beyond 32 bits.
    let mut bad_oid = SEEDS[1].1.to_vec();
    let at = bad_oid
        .windows(3)
        .position(|w| w == [0x06, 0x08, 0x2b])
        .expect("the OID of the seed");
    bad_oid.splice(at + 3..at + 4, [0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    assert!(exercise(&mib, &bad_oid).is_err());
}

#[test]
fn a_request_for_very_many_objects_is_answered_too_big() {
    // 64 + 1 names of sysDescr.0 in a v2c GET.
    let vb = [
        0x30, 0x0c, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x02, 0x01, 0x01, 0x01, 0x00, 0x05, 0x00,
    ];
    let mut list = vec![];
    for _ in 0..65 {
        list.extend_from_slice(&vb);
    }
    let ber_len = |n: usize| -> Vec<u8> {
        if n < 0x80 {
            vec![n as u8]
        } else {
            vec![0x82, (n >> 8) as u8, n as u8]
        }
    };
    let mut pdu = vec![0x02, 0x01, 0x07, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x30];
    pdu.extend(ber_len(list.len()));
    pdu.extend(list);
    let mut body = vec![0x02, 0x01, 0x01, 0x04, 0x06];
    body.extend_from_slice(b"public");
    body.push(0xa0);
    body.extend(ber_len(pdu.len()));
    body.extend(pdu);
    let mut msg = vec![0x30];
    msg.extend(ber_len(body.len()));
    msg.extend(body);
    let req = wire::decode(&msg).expect("decodes");
    assert_eq!(req.names.len(), 65);
    let reply = agent::answer(&Mib::new(), &req, &Big, MAX_MESSAGE);
    assert_eq!(reply.error_status, wire::TOO_BIG);
}
