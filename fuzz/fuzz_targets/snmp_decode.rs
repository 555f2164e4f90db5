//! Any bytes as an SNMP message (UDP datagram or TCP stream): decoding
//! never panics, a decoded request is answered within the message size,
//! and the answer decodes again.

#![no_main]

use custos_snmpd::agent::{self, Values};
use custos_snmpd::mib::{Mib, Object};
use custos_snmpd::wire::{self, MAX_MESSAGE, Value};
use libfuzzer_sys::fuzz_target;

/// Values as large as the agent serves, so size limits are exercised.
struct Big;

impl Values for Big {
    fn value(&self, o: Object) -> Value {
        match o {
            Object::SysUpTime => Value::TimeTicks(u32::MAX),
            Object::InPkts => Value::Counter32(7),
            Object::SysServices => Value::Integer(72),
            Object::DiskUsage | Object::SystemStats => Value::String(vec![b'x'; 8 * 1024]),
            _ => Value::String(b"value".to_vec()),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The TCP framing: a length prefix that is in range or refused.
    if let Ok(Some(len)) = wire::message_len(data) {
        assert!(len <= MAX_MESSAGE);
    }
    let Ok(req) = wire::decode(data) else { return };
    let mib = Mib::new();
    for limit in [wire::MAX_UDP_ANSWER, MAX_MESSAGE] {
        let reply = agent::answer(&mib, &req, &Big, limit);
        if let Some(bytes) = wire::encode(&req, &reply, limit) {
            assert!(bytes.len() <= limit);
            assert!(wire::message_len(&bytes).is_ok_and(|l| l == Some(bytes.len())));
        }
    }
});
