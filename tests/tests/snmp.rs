//! The SNMP agent of spec §13 end to end: `custos-snmpd` on the key
//! service's data directory, configured through the REST API and the web
//! console, asked by net-snmp's own tools over v1 and v2c, UDP and TCP, on
//! both ports: every object, GETNEXT, walks and bulk walks, the community
//! string, the access list with a wildcard, the disabled state, malformed
//! messages, and the MIB file.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::browser::Browser;
use tests::snmp::*;
use tests::*;

const COMMUNITY: &str = "N0t-Public!";

/// Every object the agent serves, in OID order: (OID, CUSTOS-MIB name).
const OBJECTS: [(&str, &str); 22] = [
    (".1.3.6.1.2.1.1.1.0", ""),
    (".1.3.6.1.2.1.1.2.0", ""),
    (".1.3.6.1.2.1.1.3.0", ""),
    (".1.3.6.1.2.1.1.4.0", ""),
    (".1.3.6.1.2.1.1.5.0", ""),
    (".1.3.6.1.2.1.1.6.0", ""),
    (".1.3.6.1.2.1.1.7.0", ""),
    (".1.3.6.1.2.1.11.1.0", ""),
    (".1.3.6.1.2.1.11.3.0", ""),
    (".1.3.6.1.2.1.11.4.0", ""),
    (".1.3.6.1.2.1.11.5.0", ""),
    (".1.3.6.1.2.1.11.6.0", ""),
    (".1.3.6.1.2.1.11.30.0", ""),
    (".1.3.6.1.2.1.11.31.0", ""),
    (".1.3.6.1.2.1.11.32.0", ""),
    (".1.3.6.1.4.1.21513.1.0", "custosVersion"),
    (".1.3.6.1.4.1.21513.2.0", "custosCaFingerprint"),
    (".1.3.6.1.4.1.21513.3.0", "custosServerTime"),
    (".1.3.6.1.4.1.21513.5.0", "custosLicences"),
    (".1.3.6.1.4.1.21513.6.0", "custosHaNodes"),
    (".1.3.6.1.4.1.21513.7.0", "custosDiskUsage"),
    (".1.3.6.1.4.1.21513.8.0", "custosSystemStats"),
];

const SYS_UP_TIME: &str = ".1.3.6.1.2.1.1.3.0";
const BAD_COMMUNITY_NAMES: &str = ".1.3.6.1.2.1.11.4.0";
const BAD_COMMUNITY_USES: &str = ".1.3.6.1.2.1.11.5.0";
const ASN_PARSE_ERRS: &str = ".1.3.6.1.2.1.11.6.0";
const BAD_VERSIONS: &str = ".1.3.6.1.2.1.11.3.0";

fn udp(port: u16) -> String {
    format!("udp:127.0.0.1:{port}")
}

fn tcp(port: u16) -> String {
    format!("tcp:127.0.0.1:{port}")
}

/// Waits until `f` holds (the agent reads its settings every 200 ms here).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting until {what}");
}

fn put_snmp(api: &Api, body: Value) -> Resp {
    api.call("PUT", "/api/v1/snmp", Some(body))
}

/// Whether a v2c GET of sysUpTime is answered.
fn answers(target: &str, community: &str) -> bool {
    query("snmpget", "2c", community, target, &[SYS_UP_TIME]).ok
}

fn counter(target: &str, oid: &str) -> u64 {
    let out = query("snmpget", "2c", COMMUNITY, target, &[oid]);
    value_of(out.ok(), oid)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no counter {oid} in {}", out.stdout))
}

/// The recommended setup with the agent enabled through the API, and the
/// agent running and answering.
fn enabled_appliance() -> (Appliance, Setup, Snmpd) {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    let v = put_snmp(
        &s.sys,
        json!({"enabled": true, "community": COMMUNITY,
               "sys_contact": "Custos operations <ops@example.com>", "sys_location": "Rack 4, Room 2"}),
    )
    .ok();
    assert_eq!(v["enabled"], true);
    assert_eq!(v["community_is_default"], false);
    assert!(
        v.get("community").is_none(),
        "the community is never returned: {v}"
    );
    let d = app.start_snmpd();
    eventually("the agent answers", || answers(&udp(d.port), COMMUNITY));
    (app, s, d)
}

/// Audit entries whose text contains `text`, as a System Administrator sees them.
fn audit(api: &Api, text: &str) -> Vec<Value> {
    let q: String = form_query(&[("text", text)]);
    api.get(&format!("/api/v1/audit?{q}")).ok()["entries"]
        .as_array()
        .expect("entries")
        .clone()
}

fn form_query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc: String = v
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={enc}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[test]
fn every_object_over_v1_and_v2c_udp_and_tcp_on_both_ports() {
    let (_app, s, d) = enabled_appliance();
    let info = s.admin.get("/api/v1/system").ok();
    let version = info["version"].as_str().expect("version");
    let fingerprint = info["rsa_ca_fingerprint"].as_str().expect("fingerprint");
    let oids: Vec<&str> = OBJECTS.iter().map(|(o, _)| *o).collect();
    for port in [d.port, d.alt_port] {
        for target in [udp(port), tcp(port)] {
            for v in ["1", "2c"] {
                // Over UDP an answer fits in one datagram: the standard
                // objects and the appliance's are asked for apart.
                let text = if target.starts_with("udp") {
                    let mut t = query("snmpget", v, COMMUNITY, &target, &oids[..15])
                        .ok()
                        .to_owned();
                    t.push_str(query("snmpget", v, COMMUNITY, &target, &oids[15..]).ok());
                    t
                } else {
                    query("snmpget", v, COMMUNITY, &target, &oids)
                        .ok()
                        .to_owned()
                };
                let text = text.as_str();
                let get = |oid: &str| {
                    value_of(text, oid)
                        .unwrap_or_else(|| panic!("{target} v{v}: no {oid} in\n{text}"))
                };
                let at = format!("{target} v{v}");
                assert!(
                    get(".1.3.6.1.2.1.1.1.0")
                        .starts_with(&format!("Custos key manager {version} (Linux ")),
                    "{at}: sysDescr {text}"
                );
                assert_eq!(get(".1.3.6.1.2.1.1.2.0"), ".1.3.6.1.4.1.21513", "{at}");
                assert!(get(SYS_UP_TIME).starts_with('('), "{at}: sysUpTime");
                assert!(
                    text.contains(".1.3.6.1.2.1.1.3.0 = Timeticks: "),
                    "{at}: {text}"
                );
                assert_eq!(
                    get(".1.3.6.1.2.1.1.4.0"),
                    "Custos operations <ops@example.com>",
                    "{at}"
                );
                assert_eq!(get(".1.3.6.1.2.1.1.5.0"), "custos-test", "{at}");
                assert_eq!(get(".1.3.6.1.2.1.1.6.0"), "Rack 4, Room 2", "{at}");
                assert_eq!(get(".1.3.6.1.2.1.1.7.0"), "72", "{at}");
                assert!(
                    get(".1.3.6.1.2.1.11.1.0")
                        .parse::<u64>()
                        .expect("snmpInPkts")
                        > 0,
                    "{at}"
                );
                for counter in [".1.3.6.1.2.1.11.3.0", ".1.3.6.1.2.1.11.31.0"] {
                    assert_eq!(get(counter), "0", "{at}: {counter}");
                }
                assert_eq!(get(".1.3.6.1.2.1.11.30.0"), "2", "{at}: no traps");
                assert_eq!(get(".1.3.6.1.4.1.21513.1.0"), version, "{at}");
                assert_eq!(get(".1.3.6.1.4.1.21513.2.0"), fingerprint, "{at}");
                // 2015-08-18 20:56:53.135 PDT
                let time = get(".1.3.6.1.4.1.21513.3.0");
                let (date, rest) = time.split_once(' ').expect("date and time");
                let (clock, zone) = rest.split_once(' ').expect("time and zone");
                assert!(
                    date.len() == 10
                        && clock.len() == 12
                        && clock.as_bytes()[8] == b'.'
                        && !zone.is_empty(),
                    "{at}: server time {time}"
                );
                let licences = get(".1.3.6.1.4.1.21513.5.0");
                assert!(
                    licences.contains(
                        "Agent Type: Key, Installed: Yes, Max Agents: 100000, Expiry: 2099-12-31"
                    ) && licences.contains("Agent Type: FS, Installed: No")
                        && licences.contains("Key Vault: No; Multi-Domain: Yes; Max Domains: 1000")
                        && licences.contains("Issued To: Custos tests"),
                    "{at}: {licences}"
                );
                assert_eq!(
                    get(".1.3.6.1.4.1.21513.6.0"),
                    "Primary: custos-test; ",
                    "{at}"
                );
                let df = get(".1.3.6.1.4.1.21513.7.0");
                assert!(
                    df.starts_with("Filesystem")
                        && df.contains("1M-blocks")
                        && df.contains("Mounted on"),
                    "{at}: {df}"
                );
                assert!(
                    df.lines().any(|l| l.ends_with(" /") && l.contains('%')),
                    "{at}: the root file system in {df}"
                );
                let vm = get(".1.3.6.1.4.1.21513.8.0");
                assert!(
                    vm.starts_with("procs -----------memory----------")
                        && vm.contains(" r  b   swpd   free   buff  cache   si   so    bi    bo   in   cs us sy id wa st"),
                    "{at}: {vm}"
                );
                assert_eq!(vm.lines().count(), 3, "{at}: {vm}");
            }
        }
    }

    // GETNEXT skips to the next object (.4.0 does not exist).
    for v in ["1", "2c"] {
        let out = query(
            "snmpgetnext",
            v,
            COMMUNITY,
            &udp(d.port),
            &[".1.3.6.1.4.1.21513.3.0", ".1.3.6.1.2.1.1.7.0"],
        );
        let text = out.ok();
        assert!(
            text.contains(".1.3.6.1.4.1.21513.5.0 = STRING: "),
            "v{v}: {text}"
        );
        assert!(
            text.contains(".1.3.6.1.2.1.11.1.0 = Counter32: "),
            "v{v}: {text}"
        );
    }

    // Walks over the whole tree see every object once, in order.
    let walked = |out: &Output| -> Vec<String> {
        out.ok()
            .lines()
            .filter(|l| l.starts_with('.') && l.contains(" = "))
            .filter(|l| !l.contains("No more variables"))
            .map(|l| l.split(" = ").next().unwrap_or_default().to_owned())
            .collect()
    };
    for (tool, v) in [
        ("snmpwalk", "1"),
        ("snmpwalk", "2c"),
        ("snmpbulkwalk", "2c"),
    ] {
        for target in [udp(d.port), tcp(d.alt_port)] {
            let out = query(tool, v, COMMUNITY, &target, &[".1"]);
            assert_eq!(walked(&out), oids, "{tool} v{v} {target}:\n{}", out.stdout);
        }
    }
    // A bulk walk with few repetitions per request still sees everything.
    let out = net_snmp(
        "snmpbulkwalk",
        &[
            "-v2c",
            "-c",
            COMMUNITY,
            "-On",
            "-Cr3",
            &udp(d.port),
            ".1.3.6.1.4.1.21513",
        ],
    );
    assert_eq!(walked(&out), &oids[15..], "{}", out.stdout);

    // A missing instance: v2c names the exception, v1 answers noSuchName.
    let out = query(
        "snmpget",
        "2c",
        COMMUNITY,
        &udp(d.port),
        &[".1.3.6.1.4.1.21513.4.0"],
    );
    assert!(out.ok().contains("No Such Object"), "{}", out.stdout);
    let out = query(
        "snmpget",
        "1",
        COMMUNITY,
        &udp(d.port),
        &[".1.3.6.1.4.1.21513.4.0"],
    );
    assert!(
        out.stderr.contains("noSuchName") || out.stdout.contains("noSuchName"),
        "{out:?}"
    );
    // Everything is read-only.
    let out = net_snmp(
        "snmpset",
        &[
            "-v2c",
            "-c",
            COMMUNITY,
            &udp(d.port),
            ".1.3.6.1.2.1.1.4.0",
            "s",
            "someone",
        ],
    );
    assert!(!out.ok && out.stderr.contains("notWritable"), "{out:?}");
}

#[test]
fn the_mib_file_parses_and_names_every_enterprise_object() {
    let dir = mib_dir();
    let dir = format!("+{}", dir.display());
    for (oid, name) in OBJECTS.iter().filter(|(_, n)| !n.is_empty()) {
        let out = net_snmp("snmptranslate", &["-M", &dir, "-m", "CUSTOS-MIB", oid]);
        assert_eq!(out.ok().trim(), format!("CUSTOS-MIB::{name}.0"), "{out:?}");
        let back = net_snmp(
            "snmptranslate",
            &[
                "-M",
                &dir,
                "-m",
                "CUSTOS-MIB",
                "-On",
                &format!("CUSTOS-MIB::{name}.0"),
            ],
        );
        assert_eq!(back.ok().trim(), *oid);
        // Read-only OCTET STRINGs.
        let detail = net_snmp(
            "snmptranslate",
            &[
                "-M",
                &dir,
                "-m",
                "CUSTOS-MIB",
                "-Td",
                &format!("CUSTOS-MIB::{name}"),
            ],
        );
        let d = detail.ok();
        assert!(
            d.contains("SYNTAX\tOCTET STRING") && d.contains("MAX-ACCESS\tread-only"),
            "{d}"
        );
    }
    let root = net_snmp(
        "snmptranslate",
        &["-M", &dir, "-m", "CUSTOS-MIB", ".1.3.6.1.4.1.21513"],
    );
    assert_eq!(root.ok().trim(), "CUSTOS-MIB::custos");
}

#[test]
fn net_snmp_prints_the_names_of_the_mib() {
    let (_app, _s, d) = enabled_appliance();
    let dir = format!("+{}", mib_dir().display());
    let out = net_snmp(
        "snmpget",
        &[
            "-v2c",
            "-c",
            COMMUNITY,
            "-M",
            &dir,
            "-m",
            "CUSTOS-MIB",
            &udp(d.port),
            "CUSTOS-MIB::custosVersion.0",
            "CUSTOS-MIB::custosHaNodes.0",
        ],
    );
    let text = out.ok();
    assert!(
        text.contains("CUSTOS-MIB::custosVersion.0 = STRING: "),
        "{text}"
    );
    assert!(
        text.contains("CUSTOS-MIB::custosHaNodes.0 = STRING: \"Primary: custos-test; \""),
        "{text}"
    );
}

#[test]
fn a_wrong_community_gets_no_answer_and_is_counted_and_logged() {
    let (_app, s, d) = enabled_appliance();
    let before = counter(&udp(d.port), BAD_COMMUNITY_NAMES);
    for (target, v) in [
        (udp(d.port), "2c"),
        (tcp(d.alt_port), "1"),
        (udp(d.alt_port), "1"),
    ] {
        let out = query("snmpget", v, "Wr0ng-Guess", &target, &[SYS_UP_TIME]);
        assert!(out.timed_out(), "{target} v{v}: {out:?}");
    }
    // The default community no longer works once it was changed.
    assert!(!answers(&udp(d.port), "public"));
    assert_eq!(counter(&udp(d.port), BAD_COMMUNITY_NAMES), before + 4);
    // Logged once for the address within the minute, never with the guess.
    eventually("the refusal is in the audit log", || {
        !audit(&s.sys, "refused an SNMP request").is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    let entries = audit(&s.sys, "refused an SNMP request");
    assert_eq!(
        entries.len(),
        1,
        "rate-limited to one entry a minute: {entries:?}"
    );
    let e = &entries[0];
    assert_eq!(e["source"], "127.0.0.1");
    assert_eq!(e["severity"], "WARN");
    assert_eq!(e["via"], "snmp");
    let what = e["what"].as_str().expect("what");
    assert!(what.contains("wrong community string"), "{what}");
    let all = s.sys.get("/api/v1/audit?limit=1000").ok().to_string();
    assert!(
        !all.contains("Wr0ng-Guess") && !all.contains(COMMUNITY),
        "a community in the log"
    );
}

#[test]
fn the_access_list_allows_and_denies_with_a_wildcard() {
    let (_app, s, d) = enabled_appliance();
    // Refused entries name the field and change nothing.
    for (bad, rule) in [
        ("monitor.example.com", "host names are not accepted"),
        ("10.*.2.3", "only the fourth octet may be '*'"),
        ("10.1.2", "four octets"),
        ("10.1.2.300", "from 0 to 255"),
        ("fe80::1", "only IPv4 addresses"),
    ] {
        let v = put_snmp(&s.sys, json!({"acl": ["10.1.2.*", bad]})).expect(400);
        assert_eq!(v["field"], "acl", "{v}");
        assert!(
            v["message"].as_str().expect("message").contains(rule),
            "{bad}: {v}"
        );
    }
    assert_eq!(s.sys.get("/api/v1/snmp").ok()["acl"], json!([]));

    let target = udp(d.port);
    // Another network only: 127.0.0.1 gets no answer, on UDP and TCP.
    put_snmp(&s.sys, json!({"acl": ["10.1.2.*"]})).ok();
    eventually("127.0.0.1 is refused", || {
        query("snmpget", "2c", COMMUNITY, &target, &[SYS_UP_TIME]).timed_out()
    });
    assert!(query("snmpget", "2c", COMMUNITY, &tcp(d.alt_port), &[SYS_UP_TIME]).unanswered());
    // The wildcard of 127.0.0.* lets it in.
    put_snmp(&s.sys, json!({"acl": ["10.1.2.*", "127.0.0.*"]})).ok();
    eventually("127.0.0.* is allowed", || answers(&target, COMMUNITY));
    assert!(answers(&tcp(d.alt_port), COMMUNITY));
    let refused = counter(&target, BAD_COMMUNITY_USES);
    assert!(refused >= 2, "snmpInBadCommunityUses {refused}");
    // One address only: 127.0.0.2 is answered, 127.0.0.1 is not (net-snmp
    // sends from 127.0.0.2 over UDP only; its TCP ignores --clientaddr).
    put_snmp(&s.sys, json!({"acl": ["127.0.0.2"]})).ok();
    let from = |addr: &str, target: &str| {
        net_snmp(
            "snmpget",
            &[
                &format!("--clientaddr={addr}"),
                "-v2c",
                "-c",
                COMMUNITY,
                "-On",
                target,
                SYS_UP_TIME,
            ],
        )
    };
    eventually("only 127.0.0.2 is answered", || {
        from("127.0.0.1", &target).timed_out()
    });
    from("127.0.0.2", &target).ok();
    assert!(from("127.0.0.1", &tcp(d.port)).unanswered());
    // Logged: the refusals from outside the list, and each entry added.
    eventually("the refusal is in the audit log", || {
        audit(&s.sys, "not in the access control list").len() == 1
    });
    assert!(!audit(&s.sys, "added access list entry 127.0.0.*").is_empty());
    // An empty list lets any address ask again.
    put_snmp(&s.sys, json!({"acl": []})).ok();
    eventually("any address is answered", || answers(&target, COMMUNITY));
}

#[test]
fn a_disabled_agent_answers_nothing_and_closes_its_ports() {
    let app = Appliance::start();
    let admin = app.api().login_changing("admin", "admin123", ADMIN_PW);
    let v = admin.get("/api/v1/snmp").ok();
    assert_eq!(
        v,
        json!({"enabled": false, "community_is_default": true, "acl": [], "sys_contact": "", "sys_location": ""})
    );
    let mut d = app.start_snmpd();
    let closed = |port: u16| {
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_err()
    };
    assert!(query("snmpget", "2c", "public", &udp(d.port), &[SYS_UP_TIME]).timed_out());
    assert!(
        closed(d.port) && closed(d.alt_port),
        "TCP ports open while disabled"
    );
    // Never enabled with the default community `public` (§13 starts with
    // it): refused naming the field, nothing changed.
    let before = admin.get("/api/v1/snmp").ok();
    for body in [
        json!({"enabled": true}),
        json!({"enabled": true, "community": "public", "sys_location": "Rack 1"}),
    ] {
        let e = put_snmp(&admin, body).expect(400);
        assert_eq!(e["field"], "community", "{e}");
        assert!(
            e["message"]
                .as_str()
                .expect("message")
                .contains("must be changed from the default 'public'"),
            "{e}"
        );
        assert_eq!(admin.get("/api/v1/snmp").ok(), before);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(closed(d.port) && closed(d.alt_port), "opened with public");
    // With a community of its own it answers, and only to that one.
    put_snmp(&admin, json!({"enabled": true, "community": COMMUNITY})).ok();
    eventually("the agent answers", || answers(&udp(d.alt_port), COMMUNITY));
    assert!(answers(&tcp(d.port), COMMUNITY));
    assert!(!answers(&udp(d.port), "public"));
    // Going back to `public` while enabled is refused as well.
    let e = put_snmp(&admin, json!({"community": "public"})).expect(400);
    assert_eq!(e["field"], "community", "{e}");
    assert!(answers(&udp(d.port), COMMUNITY));
    put_snmp(&admin, json!({"enabled": false})).ok();
    eventually("the ports close", || closed(d.port) && closed(d.alt_port));
    assert!(query("snmpget", "2c", COMMUNITY, &udp(d.port), &[SYS_UP_TIME]).timed_out());
    // SIGTERM stops it cleanly.
    let status = d.stop().expect("custos-snmpd stops on SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn malformed_messages_are_dropped_and_good_requests_still_answered() {
    let (_app, _s, d) = enabled_appliance();
    let target = udp(d.port);
    let parse_errs = counter(&target, ASN_PARSE_ERRS);
    let bad_versions = counter(&target, BAD_VERSIONS);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("udp");
    sock.connect(("127.0.0.1", d.port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    // A real request (v2c GET sysUpTime.0) to mutate.
    let good = v2c_get_sys_up_time(COMMUNITY);
    sock.send(&good).expect("send");
    let mut buf = [0u8; 65536];
    assert!(
        sock.recv(&mut buf).is_ok(),
        "the hand-made request is answered"
    );

    let mut malformed: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x30],
        vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
        vec![0x30, 0x80, 0x02, 0x01, 0x01],
        vec![0xff; 1400],
        vec![0x30; 60_000],
        good[..good.len() / 2].to_vec(),
    ];
    // Nested far deeper than any message.
    let mut deep = vec![0x30, 0x80, 0x02, 0x01, 0x01];
    for _ in 0..4000 {
        deep.extend_from_slice(&[0x24, 0x80]);
    }
    malformed.push(deep);
    // Pseudo-random bytes, and the good request with bytes changed.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..300 {
        let mut m = if i % 2 == 0 {
            good.clone()
        } else {
            (0..(rnd() % 200) as usize).map(|_| rnd() as u8).collect()
        };
        if i % 2 == 0 {
            let at = (rnd() as usize) % m.len();
            m[at] = 0x84;
        }
        malformed.push(m);
    }
    for m in &malformed {
        sock.send(m).expect("send");
    }
    // Version 3: counted, not answered.
    let mut v3 = good.clone();
    v3[4] = 0x03;
    sock.send(&v3).expect("send");
    // TCP: junk and an absurd length get the connection closed.
    for junk in [
        &[0x04u8, 0x01, 0x00][..],
        &[0x30, 0x84, 0x40, 0x00, 0x00, 0x00],
    ] {
        let mut c = TcpStream::connect(("127.0.0.1", d.alt_port)).expect("tcp");
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        c.write_all(junk).expect("write");
        let mut b = [0u8; 16];
        assert!(matches!(c.read(&mut b), Ok(0)), "the connection is closed");
    }
    // Still answering, UDP and TCP, and every bad message was counted.
    for target in [udp(d.port), tcp(d.alt_port), udp(d.alt_port)] {
        let out = query("snmpget", "2c", COMMUNITY, &target, &[SYS_UP_TIME]);
        assert!(out.ok().contains("Timeticks"), "{target}");
    }
    assert!(
        counter(&target, ASN_PARSE_ERRS) >= parse_errs + 10,
        "snmpInASNParseErrs"
    );
    // (Some mutated messages carry other versions too.)
    assert!(
        counter(&target, BAD_VERSIONS) > bad_versions,
        "snmpInBadVersions"
    );
    // A request for more objects than an answer may hold is answered
    // tooBig, not dropped.
    let many: Vec<&str> = vec![".1.3.6.1.2.1.1.1.0"; 65];
    let out = query("snmpget", "2c", COMMUNITY, &target, &many);
    assert!(
        out.stderr.contains("tooBig") || out.stdout.contains("tooBig"),
        "{out:?}"
    );
}

/// System → SNMP in the console: the three tabs, a refused entry shown
/// next to its field, and a change the agent answers with.
#[test]
fn the_console_page_configures_the_agent() {
    let app = Appliance::start();
    let s = recommended_setup(&app);
    s.admin
        .post(
            "/api/v1/administrators",
            json!({"login": "sysro", "password": "Tmp!Passw0rd", "user_type": "system", "read_only": true}),
        )
        .expect(201);
    let d = app.start_snmpd();
    let mut b = Browser::start(app.url("web"), "snmp");
    b.open("/login");
    b.fill("login", "SystemAdministrator");
    b.fill("password", SYS_PW);
    b.press("Log In");
    b.open("/system/preferences");
    b.follow("SNMP");
    assert_eq!(b.path(), "/system/snmp", "{}", b.body());
    assert_eq!(
        b.texts("nav.tabs a, nav.tabs span"),
        ["Configuration", "Access Control List", "MIB"]
    );
    assert!(b.body().contains("disabled"), "{}", b.body());
    b.screenshot("configuration");
    // A community with a space is refused next to its field.
    b.click("#enabled");
    b.fill("community", "has space");
    b.fill("sys_location", "Rack 9");
    b.press("Apply");
    let e = b.text("#community-error").unwrap_or_default();
    assert!(e.contains("without spaces"), "{}", b.body());
    b.fill("community", "Web-C0mmunity");
    b.press("Apply");
    assert!(b.body().contains("SNMP settings saved"), "{}", b.body());
    // Back to the default community while enabled: refused next to its field.
    b.fill("community", "public");
    b.press("Apply");
    let e = b.text("#community-error").unwrap_or_default();
    assert!(e.contains("default 'public'"), "{}", b.body());
    b.open("/system/snmp");
    eventually("the agent answers with the console's settings", || {
        let out = query(
            "snmpget",
            "2c",
            "Web-C0mmunity",
            &udp(d.port),
            &[".1.3.6.1.2.1.1.6.0"],
        );
        out.ok && value_of(&out.stdout, ".1.3.6.1.2.1.1.6.0").as_deref() == Some("Rack 9")
    });

    b.follow("Access Control List");
    b.fill("acl", "monitor.example.com");
    b.press("Add");
    let e = b.text("#acl-error").unwrap_or_default();
    assert!(e.contains("host names are not accepted"), "{}", b.body());
    b.fill("acl", "10.1.2.*");
    b.press("Add");
    assert!(b.body().contains("10.1.2.* added"), "{}", b.body());
    assert!(
        b.texts("table.list td code")
            .contains(&"10.1.2.*".to_owned())
    );
    b.screenshot("acl");
    eventually("the agent applies the list", || {
        query(
            "snmpget",
            "2c",
            "Web-C0mmunity",
            &udp(d.port),
            &[SYS_UP_TIME],
        )
        .timed_out()
    });
    b.click("input[name=entry][value='10.1.2.*']");
    b.press("Delete");
    assert!(b.body().contains("Deleted 10.1.2.*"), "{}", b.body());
    eventually("the agent answers again", || {
        answers(&udp(d.port), "Web-C0mmunity")
    });

    b.follow("MIB");
    let body = b.body();
    for oid in [
        "1.3.6.1.4.1.21513.1.0",
        "1.3.6.1.4.1.21513.7.0",
        "1.3.6.1.2.1.1.4.0",
    ] {
        assert!(body.contains(oid), "{oid} on the MIB tab");
    }
    assert!(body.contains("CUSTOS-MIB::custosDiskUsage.0"), "{body}");
    b.screenshot("mib");
    assert_eq!(
        b.attr("a[download]", "href").as_deref(),
        Some("/system/snmp/CUSTOS-MIB.txt")
    );

    // A read-only System Administrator sees the settings, changes nothing.
    b.press("Log Out");
    let mut ro = Browser::start(app.url("web"), "snmp-readonly");
    ro.open("/login");
    ro.fill("login", "sysro");
    ro.fill("password", "Tmp!Passw0rd");
    ro.press("Log In");
    ro.fill("old", "Tmp!Passw0rd");
    ro.fill("new", "Matrix!Pw1");
    ro.fill("confirm", "Matrix!Pw1");
    ro.press("Change Password");
    ro.open("/system/snmp");
    assert!(ro.has("fieldset[disabled]"), "{}", ro.body());
    assert!(!ro.body().contains(">Apply<"), "{}", ro.body());
    ro.open("/system/snmp/acl");
    assert!(!ro.has("#acl"), "no Add form for a read-only administrator");
    ro.screenshot("read-only");
}

/// A v2c GET of sysUpTime.0 as net-snmp sends it, made by hand.
fn v2c_get_sys_up_time(community: &str) -> Vec<u8> {
    let mut m = vec![0x30, 0x00, 0x02, 0x01, 0x01, 0x04, community.len() as u8];
    m.extend_from_slice(community.as_bytes());
    m.extend_from_slice(&[
        0xa0, 0x1c, 0x02, 0x04, 0x12, 0x34, 0x56, 0x78, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x30,
        0x0e, 0x30, 0x0c, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x02, 0x01, 0x01, 0x03, 0x00, 0x05, 0x00,
    ]);
    m[1] = (m.len() - 2) as u8;
    m
}

/// The sizes of the packets a net-snmp tool run with `-d` received.
fn received_sizes(out: &Output) -> Vec<usize> {
    format!("{}\n{}", out.stdout, out.stderr)
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("Received ")?;
            let (n, tail) = rest.split_once(' ')?;
            tail.starts_with("byte packet").then(|| n.parse().ok())?
        })
        .collect()
}

/// Issue 12, item 8: a small UDP request never gets more than one
/// datagram back. A GETBULK asking for the whole MIB 64 times is cut to
/// fit; a GET whose answer cannot fit is tooBig (v1 and v2c), and the
/// same requests over TCP are answered whole.
#[test]
fn udp_answers_fit_in_one_datagram() {
    let (_app, _s, d) = enabled_appliance();
    let bulk = |target: &str| {
        net_snmp(
            "snmpbulkget",
            &[
                "-d", "-v2c", "-c", COMMUNITY, "-On", "-Cn0", "-Cr64", target, ".1", ".1", ".1",
                ".1",
            ],
        )
    };
    let out = bulk(&udp(d.port));
    let text = out.ok();
    assert!(text.contains(".1.3.6.1.2.1.1.1.0 = STRING: "), "{text}");
    let sizes = received_sizes(&out);
    assert_eq!(sizes.len(), 1, "{out:?}");
    assert!(sizes[0] <= 1472, "a UDP answer of {} bytes", sizes[0]);
    let out = bulk(&tcp(d.port));
    let whole = out.ok();
    assert!(whole.lines().count() > text.lines().count());
    assert!(received_sizes(&out).iter().sum::<usize>() > 1472, "{out:?}");

    let mut big = vec![];
    for _ in 0..3 {
        big.extend([
            ".1.3.6.1.4.1.21513.5.0",
            ".1.3.6.1.4.1.21513.7.0",
            ".1.3.6.1.4.1.21513.8.0",
        ]);
    }
    for v in ["1", "2c"] {
        let out = query("snmpget", v, COMMUNITY, &udp(d.alt_port), &big);
        assert!(
            !out.ok && format!("{}{}", out.stdout, out.stderr).contains("tooBig"),
            "v{v}: {out:?}"
        );
        let out = query("snmpget", v, COMMUNITY, &tcp(d.alt_port), &big);
        assert_eq!(out.ok().matches("Filesystem").count(), 3, "v{v}");
    }
}

/// Issue 12, item 8: answers over UDP are rate-limited per source address,
/// so a flood (spoofed or not) from one address is mostly unanswered while
/// another address is still served; the drops are logged once.
#[test]
fn a_udp_flood_from_one_address_is_rate_limited() {
    let (_app, s, d) = enabled_appliance();
    let request = v2c_get_sys_up_time(COMMUNITY);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("udp");
    sock.connect(("127.0.0.1", d.port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_millis(150)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    let (batches, batch) = (10, 40);
    let mut answered = 0;
    for _ in 0..batches {
        for _ in 0..batch {
            sock.send(&request).expect("send");
        }
        // Every answer of the batch, or a pause without one.
        let mut got = 0;
        while got < batch && sock.recv(&mut buf).is_ok() {
            got += 1;
        }
        answered += got;
    }
    assert!(answered > 0, "nothing answered");
    assert!(
        answered < batches * batch * 3 / 4,
        "{answered} of {} answered",
        batches * batch
    );
    // Another address (127.0.0.2 is loopback too) is served at once.
    let other = UdpSocket::bind("127.0.0.2:0").expect("udp on 127.0.0.2");
    other.connect(("127.0.0.1", d.port)).expect("connect");
    other
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    other.send(&request).expect("send");
    assert!(other.recv(&mut buf).is_ok(), "127.0.0.2 is not answered");
    // Logged once for the flooding address, without the community.
    eventually("the drops are in the audit log", || {
        !audit(&s.sys, "rate limit").is_empty()
    });
    let entries = audit(&s.sys, "rate limit");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["source"], "127.0.0.1");
    assert!(!entries[0].to_string().contains(COMMUNITY));
}
