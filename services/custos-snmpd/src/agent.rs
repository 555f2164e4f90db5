//! The read-only agent: GET, GETNEXT and GETBULK over the [`Mib`] with the
//! error semantics of each version (v1: `noSuchName` with its index; v2c:
//! per-binding exceptions), answers kept within the size the transport
//! allows (UDP: [`wire::MAX_UDP_ANSWER`], TCP: [`wire::MAX_MESSAGE`]), and a
//! SET refused. Values come from a [`Values`] source, so the agent itself
//! does no I/O.

use rasn::types::ObjectIdentifier;

use crate::mib::{Lookup, Mib, Object};
use crate::wire::{
    self, Answer, Binding, MAX_REPETITIONS, MAX_VARBINDS, NO_ERROR, NO_SUCH_NAME, NOT_WRITABLE,
    Operation, Reply, Request, TOO_BIG, Value, Version,
};

/// Where the values come from (the daemon: the store, the kernel, counters).
pub trait Values {
    fn value(&self, object: Object) -> Value;
}

/// A reply that failed as a whole: the request's names echoed with NULL.
fn refused(req: &Request, status: u32, index: usize) -> Reply {
    Reply {
        error_status: status,
        error_index: u32::try_from(index).unwrap_or(u32::MAX),
        bindings: req
            .names
            .iter()
            .map(|n| Binding {
                name: n.clone(),
                answer: Answer::Null,
            })
            .collect(),
    }
}

/// RFC 3416 §4.2.1: a reply that would be too large is replaced by one with
/// `tooBig` and no bindings (v1: the request's bindings, RFC 1157 §4.1.2).
pub fn too_big(req: &Request) -> Reply {
    match req.version {
        Version::V1 => refused(req, TOO_BIG, 0),
        Version::V2c => Reply {
            error_status: TOO_BIG,
            error_index: 0,
            bindings: vec![],
        },
    }
}

/// Collects bindings while they fit in the message.
struct Collector {
    bindings: Vec<Binding>,
    room: usize,
}

impl Collector {
    fn new(req: &Request, limit: usize) -> Collector {
        Collector {
            bindings: Vec::new(),
            room: wire::bindings_budget(req, limit),
        }
    }

    /// Adds a binding; false when it does not fit.
    fn push(&mut self, name: ObjectIdentifier, answer: Answer) -> bool {
        let b = Binding { name, answer };
        let len = wire::binding_len(&b);
        if len > self.room {
            return false;
        }
        self.room -= len;
        self.bindings.push(b);
        true
    }

    fn reply(self) -> Reply {
        Reply {
            error_status: NO_ERROR,
            error_index: 0,
            bindings: self.bindings,
        }
    }
}

/// The next object after `name` with its value, or None at the end of the MIB.
fn next(
    mib: &Mib,
    name: &ObjectIdentifier,
    values: &dyn Values,
) -> Option<(ObjectIdentifier, Answer)> {
    mib.next(name)
        .map(|(oid, o)| (oid, Answer::Value(values.value(o))))
}

/// Answers one request with a reply that encodes within `limit` bytes
/// (the transport's: [`wire::MAX_UDP_ANSWER`] or [`wire::MAX_MESSAGE`]).
/// The caller has checked the source and community.
pub fn answer(mib: &Mib, req: &Request, values: &dyn Values, limit: usize) -> Reply {
    if req.names.len() > MAX_VARBINDS {
        return too_big(req);
    }
    let mut out = Collector::new(req, limit);
    match req.operation {
        Operation::Set => {
            // Everything is read-only: v1 says noSuchName, v2c notWritable.
            let status = match req.version {
                Version::V1 => NO_SUCH_NAME,
                Version::V2c => NOT_WRITABLE,
            };
            return refused(req, status, usize::from(!req.names.is_empty()));
        }
        Operation::Get => {
            for (i, name) in req.names.iter().enumerate() {
                let answer = match (mib.get(name), req.version) {
                    (Lookup::Found(o), _) => Answer::Value(values.value(o)),
                    (_, Version::V1) => return refused(req, NO_SUCH_NAME, i + 1),
                    (Lookup::NoSuchInstance, Version::V2c) => Answer::NoSuchInstance,
                    (Lookup::NoSuchObject, Version::V2c) => Answer::NoSuchObject,
                };
                if !out.push(name.clone(), answer) {
                    return too_big(req);
                }
            }
        }
        Operation::GetNext => {
            for (i, name) in req.names.iter().enumerate() {
                let (oid, answer) = match (next(mib, name, values), req.version) {
                    (Some(found), _) => found,
                    (None, Version::V1) => return refused(req, NO_SUCH_NAME, i + 1),
                    (None, Version::V2c) => (name.clone(), Answer::EndOfMibView),
                };
                if !out.push(oid, answer) {
                    return too_big(req);
                }
            }
        }
        Operation::GetBulk {
            non_repeaters,
            max_repetitions,
        } => {
            // RFC 3416 §4.2.3: the first N names get one GETNEXT each, the
            // other R up to M repetitions; a reply that would be too large
            // carries fewer repetitions instead.
            let n = usize::try_from(non_repeaters)
                .unwrap_or(usize::MAX)
                .min(req.names.len());
            let m = max_repetitions.min(MAX_REPETITIONS);
            for name in &req.names[..n] {
                let (oid, answer) =
                    next(mib, name, values).unwrap_or((name.clone(), Answer::EndOfMibView));
                if !out.push(oid, answer) {
                    return too_big(req);
                }
            }
            let mut cursors: Vec<ObjectIdentifier> = req.names[n..].to_vec();
            'repetitions: for _ in 0..m {
                if cursors.is_empty() {
                    break;
                }
                let mut all_done = true;
                for cursor in cursors.iter_mut() {
                    let (oid, answer) = match next(mib, cursor, values) {
                        Some(found) => {
                            all_done = false;
                            found
                        }
                        None => (cursor.clone(), Answer::EndOfMibView),
                    };
                    *cursor = oid.clone();
                    if !out.push(oid, answer) {
                        break 'repetitions;
                    }
                }
                if all_done {
                    break;
                }
            }
        }
    }
    out.reply()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MAX_MESSAGE;
    use rasn::types::OctetString;

    /// Each value is its object's name, or many bytes for the big ones.
    struct Fixed {
        big: usize,
    }

    impl Values for Fixed {
        fn value(&self, o: Object) -> Value {
            match o {
                Object::SysUpTime => Value::TimeTicks(42),
                Object::DiskUsage | Object::SystemStats => Value::String(vec![b'x'; self.big]),
                other => Value::String(format!("{other:?}").into_bytes()),
            }
        }
    }

    fn oid(dotted: &str) -> ObjectIdentifier {
        ObjectIdentifier::new(crate::mib::parse_oid(dotted).expect("dotted")).expect("oid")
    }

    fn req(version: Version, operation: Operation, names: &[&str]) -> Request {
        Request {
            version,
            community: OctetString::from_static(b"public"),
            request_id: 7,
            operation,
            names: names.iter().map(|n| oid(n)).collect(),
        }
    }

    #[test]
    fn get_in_both_versions() {
        let mib = Mib::new();
        let v = Fixed { big: 10 };
        let names = ["1.3.6.1.2.1.1.5.0", "1.3.6.1.2.1.1.5", "1.3.6.1.9"];
        let r = answer(
            &mib,
            &req(Version::V2c, Operation::Get, &names),
            &v,
            MAX_MESSAGE,
        );
        assert_eq!(r.error_status, NO_ERROR);
        assert_eq!(
            r.bindings[0].answer,
            Answer::Value(Value::String(b"SysName".to_vec()))
        );
        assert_eq!(r.bindings[1].answer, Answer::NoSuchInstance);
        assert_eq!(r.bindings[2].answer, Answer::NoSuchObject);
        let r = answer(
            &mib,
            &req(Version::V1, Operation::Get, &names),
            &v,
            MAX_MESSAGE,
        );
        assert_eq!((r.error_status, r.error_index), (NO_SUCH_NAME, 2));
        assert!(r.bindings.iter().all(|b| b.answer == Answer::Null));
    }

    #[test]
    fn getnext_walks_to_the_end() {
        let mib = Mib::new();
        let v = Fixed { big: 10 };
        let mut cursor = "1.3".to_owned();
        let mut seen = 0;
        loop {
            let r = answer(
                &mib,
                &req(Version::V2c, Operation::GetNext, &[&cursor]),
                &v,
                MAX_MESSAGE,
            );
            let b = &r.bindings[0];
            if b.answer == Answer::EndOfMibView {
                break;
            }
            cursor = b
                .name
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(".");
            seen += 1;
        }
        assert_eq!(seen, mib.len());
        let r = answer(
            &mib,
            &req(Version::V1, Operation::GetNext, &[&cursor]),
            &v,
            MAX_MESSAGE,
        );
        assert_eq!((r.error_status, r.error_index), (NO_SUCH_NAME, 1));
    }

    #[test]
    fn getbulk_repeats_stops_at_the_end_and_caps_repetitions() {
        let mib = Mib::new();
        let v = Fixed { big: 10 };
        let bulk = |n, m| Operation::GetBulk {
            non_repeaters: n,
            max_repetitions: m,
        };
        let r = answer(
            &mib,
            &req(
                Version::V2c,
                bulk(1, 3),
                &["1.3.6.1.2.1.1.1.0", "1.3.6.1.4.1.21513.5.0"],
            ),
            &v,
            MAX_MESSAGE,
        );
        let names: Vec<String> = r
            .bindings
            .iter()
            .map(|b| {
                b.name
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(".")
            })
            .collect();
        assert_eq!(
            names,
            [
                "1.3.6.1.2.1.1.2.0",
                "1.3.6.1.4.1.21513.6.0",
                "1.3.6.1.4.1.21513.7.0",
                "1.3.6.1.4.1.21513.8.0"
            ]
        );
        // Every repeater at the end: the repetitions stop.
        let r = answer(
            &mib,
            &req(Version::V2c, bulk(0, u32::MAX), &["1.3.6.1.4.1.21513.8.0"]),
            &v,
            MAX_MESSAGE,
        );
        assert_eq!(r.bindings.len(), 1);
        assert_eq!(r.bindings[0].answer, Answer::EndOfMibView);
        // A huge max-repetitions over the whole MIB is capped.
        let names: Vec<&str> = vec!["1.3"; MAX_VARBINDS];
        let r = answer(
            &mib,
            &req(Version::V2c, bulk(0, u32::MAX), &names),
            &v,
            MAX_MESSAGE,
        );
        assert!(r.bindings.len() <= MAX_VARBINDS * MAX_REPETITIONS as usize);
        assert!(r.bindings.len() >= MAX_VARBINDS);
        assert!(
            crate::wire::encode(&req(Version::V2c, bulk(0, 1), &["1.3"]), &r, MAX_MESSAGE)
                .is_some()
        );
    }

    #[test]
    fn replies_stay_within_the_message_size() {
        let mib = Mib::new();
        let v = Fixed { big: 6000 };
        let names = [
            "1.3.6.1.4.1.21513.7.0",
            "1.3.6.1.4.1.21513.8.0",
            "1.3.6.1.4.1.21513.7.0",
        ];
        let r = answer(
            &mib,
            &req(Version::V2c, Operation::Get, &names),
            &v,
            MAX_MESSAGE,
        );
        assert_eq!((r.error_status, r.bindings.len()), (TOO_BIG, 0));
        let bulk = Operation::GetBulk {
            non_repeaters: 0,
            max_repetitions: 10,
        };
        let request = req(
            Version::V2c,
            bulk,
            &["1.3.6.1.4.1.21513.6.0", "1.3.6.1.4.1.21513.6.0"],
        );
        let r = answer(&mib, &request, &v, MAX_MESSAGE);
        assert_eq!(r.error_status, NO_ERROR);
        assert!(
            !r.bindings.is_empty() && r.bindings.len() < 4,
            "{}",
            r.bindings.len()
        );
        let bytes = crate::wire::encode(&request, &r, MAX_MESSAGE).expect("fits");
        assert!(bytes.len() <= MAX_MESSAGE);
        let too_many = vec!["1.3.6.1.2.1.1.1.0"; MAX_VARBINDS + 1];
        let r = answer(
            &mib,
            &req(Version::V2c, Operation::Get, &too_many),
            &v,
            MAX_MESSAGE,
        );
        assert_eq!(r.error_status, TOO_BIG);
    }

    #[test]
    fn set_is_refused() {
        let mib = Mib::new();
        let v = Fixed { big: 1 };
        let r = answer(
            &mib,
            &req(Version::V2c, Operation::Set, &["1.3.6.1.2.1.1.4.0"]),
            &v,
            MAX_MESSAGE,
        );
        assert_eq!((r.error_status, r.error_index), (NOT_WRITABLE, 1));
        let r = answer(
            &mib,
            &req(Version::V1, Operation::Set, &["1.3.6.1.2.1.1.4.0"]),
            &v,
            MAX_MESSAGE,
        );
        assert_eq!((r.error_status, r.error_index), (NO_SUCH_NAME, 1));
    }

    #[test]
    fn udp_answers_stay_within_one_datagram() {
        use crate::wire::MAX_UDP_ANSWER;
        let mib = Mib::new();
        let v = Fixed { big: 600 };
        // A GET whose answer is larger than a datagram: tooBig over UDP
        // (v2c without bindings, v1 echoing the request), answered over TCP.
        let names = [
            "1.3.6.1.4.1.21513.7.0",
            "1.3.6.1.4.1.21513.8.0",
            "1.3.6.1.4.1.21513.7.0",
        ];
        for version in [Version::V1, Version::V2c] {
            let request = req(version, Operation::Get, &names);
            let r = answer(&mib, &request, &v, MAX_UDP_ANSWER);
            assert_eq!(r.error_status, TOO_BIG, "{version:?}");
            let bytes = crate::wire::encode(&request, &r, MAX_UDP_ANSWER).expect("tooBig fits");
            assert!(bytes.len() <= MAX_UDP_ANSWER);
            let r = answer(&mib, &request, &v, MAX_MESSAGE);
            assert_eq!((r.error_status, r.bindings.len()), (NO_ERROR, 3));
            assert!(crate::wire::encode(&request, &r, MAX_UDP_ANSWER).is_none());
        }
        // A GETBULK asking for everything many times is cut to one datagram.
        let bulk = Operation::GetBulk {
            non_repeaters: 0,
            max_repetitions: u32::MAX,
        };
        let request = req(Version::V2c, bulk, &["1.3"; 8]);
        let r = answer(&mib, &request, &Fixed { big: 10 }, MAX_UDP_ANSWER);
        assert_eq!(r.error_status, NO_ERROR);
        assert!(r.bindings.len() >= 8, "{}", r.bindings.len());
        let bytes = crate::wire::encode(&request, &r, MAX_UDP_ANSWER).expect("fits");
        assert!(bytes.len() <= MAX_UDP_ANSWER, "{}", bytes.len());
        let whole = answer(&mib, &request, &Fixed { big: 10 }, MAX_MESSAGE);
        assert!(whole.bindings.len() > r.bindings.len());
    }
}
