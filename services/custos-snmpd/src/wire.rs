//! The SNMP wire format: BER messages of v1 (RFC 1157) and v2c (RFC 1901,
//! RFC 3416) decoded into a [`Request`] and a [`Reply`] encoded back, with
//! rasn's typed messages. Nothing here trusts the input: a message is at
//! most [`MAX_MESSAGE`] bytes, rasn bounds its own nesting depth, and a
//! request names at most [`MAX_VARBINDS`] objects.

use rasn::types::{Any, Integer, ObjectIdentifier, OctetString};
use rasn_smi::{v1 as smi1, v2 as smi2};
use rasn_snmp::{v1, v2, v2c};

/// Largest request or response, UDP datagram or TCP message, in bytes.
pub const MAX_MESSAGE: usize = 16 * 1024;
/// Largest answer sent over UDP: what fits in one Ethernet frame (1,500
/// bytes less the IPv4 and UDP headers), so a small spoofed request never
/// turns into a large or fragmented answer (issue 12, item 8). An answer
/// that would be larger is `tooBig`; a GETBULK is cut to fit.
pub const MAX_UDP_ANSWER: usize = 1472;
/// Most variable bindings a request may name (more is answered `tooBig`).
pub const MAX_VARBINDS: usize = 64;
/// Most repetitions a GETBULK is answered with, whatever it asks for.
pub const MAX_REPETITIONS: u32 = 64;

/// error-status values of RFC 1157 and RFC 3416.
pub const NO_ERROR: u32 = 0;
pub const TOO_BIG: u32 = 1;
pub const NO_SUCH_NAME: u32 = 2;
pub const NOT_WRITABLE: u32 = 17;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2c,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Get,
    GetNext,
    GetBulk {
        non_repeaters: u32,
        max_repetitions: u32,
    },
    /// The agent is read-only; a SET is refused with an error.
    Set,
}

/// A decoded request. The community is compared by the caller.
#[derive(Debug, Clone)]
pub struct Request {
    pub version: Version,
    pub community: OctetString,
    pub request_id: i64,
    pub operation: Operation,
    pub names: Vec<ObjectIdentifier>,
}

/// Why a message gets no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not BER, not an SNMP message, or larger than [`MAX_MESSAGE`]
    /// (counted in snmpInASNParseErrs).
    Malformed,
    /// A version other than v1 and v2c (snmpInBadVersions).
    BadVersion,
    /// A PDU an agent does not answer: responses, traps, informs, reports.
    NotARequest,
}

/// Decodes one message.
pub fn decode(bytes: &[u8]) -> Result<Request, Refusal> {
    if bytes.len() > MAX_MESSAGE {
        return Err(Refusal::Malformed);
    }
    // The outer SEQUENCE first: version and community, the PDU left as
    // raw BER until the version says which PDU syntax it has.
    let outer: v2c::Message<Any> = rasn::ber::decode(bytes).map_err(|_| Refusal::Malformed)?;
    let version = match integer(&outer.version) {
        Some(0) => Version::V1,
        Some(1) => Version::V2c,
        _ => return Err(Refusal::BadVersion),
    };
    let pdu = outer.data.as_bytes();
    let (request_id, operation, names) = match version {
        Version::V1 => {
            let (op, p) =
                match rasn::ber::decode::<v1::Pdus>(pdu).map_err(|_| Refusal::Malformed)? {
                    v1::Pdus::GetRequest(v1::GetRequest(p)) => (Operation::Get, p),
                    v1::Pdus::GetNextRequest(v1::GetNextRequest(p)) => (Operation::GetNext, p),
                    v1::Pdus::SetRequest(v1::SetRequest(p)) => (Operation::Set, p),
                    v1::Pdus::GetResponse(_) | v1::Pdus::Trap(_) => {
                        return Err(Refusal::NotARequest);
                    }
                };
            let id = integer(&p.request_id).ok_or(Refusal::Malformed)?;
            let names = p.variable_bindings.into_iter().map(|b| b.name).collect();
            (id, op, names)
        }
        Version::V2c => match rasn::ber::decode::<v2::Pdus>(pdu).map_err(|_| Refusal::Malformed)? {
            v2::Pdus::GetRequest(v2::GetRequest(p)) => (
                p.request_id.into(),
                Operation::Get,
                names(p.variable_bindings),
            ),
            v2::Pdus::GetNextRequest(v2::GetNextRequest(p)) => (
                p.request_id.into(),
                Operation::GetNext,
                names(p.variable_bindings),
            ),
            v2::Pdus::SetRequest(v2::SetRequest(p)) => (
                p.request_id.into(),
                Operation::Set,
                names(p.variable_bindings),
            ),
            v2::Pdus::GetBulkRequest(v2::GetBulkRequest(b)) => (
                b.request_id.into(),
                Operation::GetBulk {
                    non_repeaters: b.non_repeaters,
                    max_repetitions: b.max_repetitions,
                },
                names(b.variable_bindings),
            ),
            v2::Pdus::Response(_)
            | v2::Pdus::InformRequest(_)
            | v2::Pdus::Trap(_)
            | v2::Pdus::Report(_) => return Err(Refusal::NotARequest),
        },
    };
    Ok(Request {
        version,
        community: outer.community,
        request_id,
        operation,
        names,
    })
}

fn integer(i: &Integer) -> Option<i64> {
    i64::try_from(i).ok()
}

fn names(bindings: v2::VarBindList) -> Vec<ObjectIdentifier> {
    bindings.into_iter().map(|b| b.name).collect()
}

/// A value the agent answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    String(Vec<u8>),
    ObjectId(ObjectIdentifier),
    Integer(i64),
    TimeTicks(u32),
    Counter32(u32),
}

/// A variable binding's value in a reply: a value, or one of v2c's
/// exceptions (v1 has none: the agent answers `noSuchName` instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Value(Value),
    /// NULL, as in the bindings a refused request is echoed with.
    Null,
    NoSuchObject,
    NoSuchInstance,
    EndOfMibView,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub name: ObjectIdentifier,
    pub answer: Answer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub error_status: u32,
    /// 1-based index of the binding the error is about, or 0.
    pub error_index: u32,
    pub bindings: Vec<Binding>,
}

fn v2_syntax(v: &Value) -> smi2::ObjectSyntax {
    use smi2::{ApplicationSyntax as A, ObjectSyntax as O, SimpleSyntax as S};
    match v {
        Value::String(s) => O::Simple(S::String(OctetString::from(s.clone()))),
        Value::ObjectId(o) => O::Simple(S::ObjectId(o.clone())),
        Value::Integer(i) => O::Simple(S::Integer(Integer::from(*i))),
        Value::TimeTicks(t) => O::ApplicationWide(A::Ticks(smi1::TimeTicks(*t))),
        Value::Counter32(c) => O::ApplicationWide(A::Counter(smi1::Counter(*c))),
    }
}

fn v1_syntax(a: &Answer) -> smi1::ObjectSyntax {
    use smi1::{ApplicationSyntax as A, ObjectSyntax as O, SimpleSyntax as S};
    match a {
        Answer::Value(Value::String(s)) => O::Simple(S::String(OctetString::from(s.clone()))),
        Answer::Value(Value::ObjectId(o)) => O::Simple(S::Object(o.clone())),
        Answer::Value(Value::Integer(i)) => O::Simple(S::Number(Integer::from(*i))),
        Answer::Value(Value::TimeTicks(t)) => O::ApplicationWide(A::Ticks(smi1::TimeTicks(*t))),
        Answer::Value(Value::Counter32(c)) => O::ApplicationWide(A::Counter(smi1::Counter(*c))),
        // v1 has no exceptions; the agent never puts one in a v1 reply.
        Answer::Null | Answer::NoSuchObject | Answer::NoSuchInstance | Answer::EndOfMibView => {
            O::Simple(S::Empty)
        }
    }
}

fn v2_binding(b: &Binding) -> v2::VarBind {
    v2::VarBind {
        name: b.name.clone(),
        value: match &b.answer {
            Answer::Value(v) => v2::VarBindValue::Value(v2_syntax(v)),
            Answer::Null => v2::VarBindValue::Unspecified,
            Answer::NoSuchObject => v2::VarBindValue::NoSuchObject,
            Answer::NoSuchInstance => v2::VarBindValue::NoSuchInstance,
            Answer::EndOfMibView => v2::VarBindValue::EndOfMibView,
        },
    }
}

/// The encoded size of one binding in a reply (the same in v1 and v2c for
/// the values this agent serves), for keeping replies within their limit.
pub fn binding_len(b: &Binding) -> usize {
    rasn::ber::encode(&v2_binding(b)).map_or(MAX_MESSAGE, |e| e.len())
}

/// Bytes the bindings of a reply to `req` may take in a message of at most
/// `limit` bytes: the message less its header (sequence, version,
/// community, PDU tag, three integers, list).
pub fn bindings_budget(req: &Request, limit: usize) -> usize {
    limit.saturating_sub(req.community.len() + 48)
}

/// Encodes the reply to `req`: a v1 GetResponse or a v2c Response with the
/// request's id and community; None when it is larger than `limit` bytes
/// (at most [`MAX_MESSAGE`]).
pub fn encode(req: &Request, reply: &Reply, limit: usize) -> Option<Vec<u8>> {
    let out = match req.version {
        Version::V1 => {
            let pdu = v1::Pdu {
                request_id: Integer::from(req.request_id),
                error_status: Integer::from(i64::from(reply.error_status)),
                error_index: Integer::from(i64::from(reply.error_index)),
                variable_bindings: reply
                    .bindings
                    .iter()
                    .map(|b| v1::VarBind {
                        name: b.name.clone(),
                        value: v1_syntax(&b.answer),
                    })
                    .collect(),
            };
            rasn::ber::encode(&v1::Message {
                version: Integer::from(0),
                community: req.community.clone(),
                data: v1::Pdus::GetResponse(v1::GetResponse(pdu)),
            })
        }
        Version::V2c => {
            let pdu = v2::Pdu {
                request_id: i32::try_from(req.request_id).ok()?,
                error_status: reply.error_status,
                error_index: reply.error_index,
                variable_bindings: reply.bindings.iter().map(v2_binding).collect(),
            };
            rasn::ber::encode(&v2c::Message {
                version: Integer::from(1),
                community: req.community.clone(),
                data: v2::Pdus::Response(v2::Response(pdu)),
            })
        }
    };
    out.ok().filter(|b| b.len() <= limit.min(MAX_MESSAGE))
}

/// The length of the BER message at the start of `head` (tag and length
/// octets included), once enough of it is there: `Ok(None)` means "read
/// more", `Err` a stream that is not SNMP or a message over
/// [`MAX_MESSAGE`]. Used to cut SNMP over TCP (RFC 3430) into messages.
pub fn message_len(head: &[u8]) -> Result<Option<usize>, Refusal> {
    let Some(&tag) = head.first() else {
        return Ok(None);
    };
    if tag != 0x30 {
        return Err(Refusal::Malformed);
    }
    let Some(&first) = head.get(1) else {
        return Ok(None);
    };
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        // Long form with 1 to 4 length octets; the indefinite form (0x80)
        // is not used by SNMP and is refused.
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err(Refusal::Malformed);
        }
        let Some(octets) = head.get(2..2 + n) else {
            return Ok(None);
        };
        let len = octets
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let total = header + len;
    if total > MAX_MESSAGE {
        return Err(Refusal::Malformed);
    }
    Ok(Some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `snmpget -v2c -c public 127.0.0.1 1.3.6.1.2.1.1.1.0` as net-snmp sends it.
    pub const GET_V2C: &[u8] = &[
        0x30, 0x29, 0x02, 0x01, 0x01, 0x04, 0x06, b'p', b'u', b'b', b'l', b'i', b'c', 0xa0, 0x1c,
        0x02, 0x04, 0x1f, 0x2e, 0x3d, 0x4c, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x30, 0x0e, 0x30,
        0x0c, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x02, 0x01, 0x01, 0x01, 0x00, 0x05, 0x00,
    ];

    fn oid(arcs: &[u32]) -> ObjectIdentifier {
        ObjectIdentifier::new(arcs.to_vec()).expect("oid")
    }

    #[test]
    fn decodes_a_v2c_get_and_encodes_its_reply() {
        let req = decode(GET_V2C).expect("decodes");
        assert_eq!(req.version, Version::V2c);
        assert_eq!(&req.community[..], b"public");
        assert_eq!(req.request_id, 0x1f2e3d4c);
        assert_eq!(req.operation, Operation::Get);
        assert_eq!(req.names, [oid(&[1, 3, 6, 1, 2, 1, 1, 1, 0])]);
        let reply = Reply {
            error_status: NO_ERROR,
            error_index: 0,
            bindings: vec![Binding {
                name: req.names[0].clone(),
                answer: Answer::Value(Value::String(b"Custos".to_vec())),
            }],
        };
        let bytes = encode(&req, &reply, MAX_MESSAGE).expect("encodes");
        let back: v2c::Message<v2::Pdus> = rasn::ber::decode(&bytes).expect("decodes back");
        let v2::Pdus::Response(v2::Response(p)) = back.data else {
            panic!("not a response");
        };
        assert_eq!(p.request_id, 0x1f2e3d4c);
        assert_eq!(p.variable_bindings.len(), 1);
        assert_eq!(message_len(&bytes), Ok(Some(bytes.len())));
    }

    #[test]
    fn v1_and_bad_versions() {
        let mut v1 = GET_V2C.to_vec();
        v1[4] = 0x00;
        let req = decode(&v1).expect("v1 decodes");
        assert_eq!(req.version, Version::V1);
        let reply = Reply {
            error_status: NO_SUCH_NAME,
            error_index: 1,
            bindings: vec![Binding {
                name: req.names[0].clone(),
                answer: Answer::Null,
            }],
        };
        let bytes = encode(&req, &reply, MAX_MESSAGE).expect("encodes");
        let back: v1::Message<v1::Pdus> = rasn::ber::decode(&bytes).expect("decodes back");
        assert!(matches!(back.data, v1::Pdus::GetResponse(_)));
        let mut v3 = GET_V2C.to_vec();
        v3[4] = 0x03;
        assert_eq!(decode(&v3).map(|_| ()), Err(Refusal::BadVersion));
    }

    #[test]
    fn truncated_and_oversized_input_is_malformed() {
        for n in 0..GET_V2C.len() {
            assert!(decode(&GET_V2C[..n]).is_err(), "{n} bytes");
        }
        assert_eq!(
            decode(&vec![0x30; MAX_MESSAGE + 1]).map(|_| ()),
            Err(Refusal::Malformed)
        );
        assert_eq!(message_len(&[0x30]), Ok(None));
        assert_eq!(message_len(&[0x30, 0x82, 0x01]), Ok(None));
        assert_eq!(message_len(&[0x30, 0x82, 0x01, 0x00]), Ok(Some(260)));
        assert_eq!(message_len(&[0x30, 0x80]), Err(Refusal::Malformed));
        assert_eq!(
            message_len(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            Err(Refusal::Malformed)
        );
        assert_eq!(message_len(&[0x04, 0x00]), Err(Refusal::Malformed));
    }
}
