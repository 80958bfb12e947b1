//! Zone transfers and NOTIFY (DESIGN.md §4): who may transfer (source IP,
//! TSIG key), what is transferred (exactly the served records, signed
//! message by message), NOTIFY on changes, and a real BIND secondary that
//! follows srvd through NOTIFY and AXFR.

use crate::common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::{TsigAlgorithm, TsigError};
use hickory_proto::rr::{Name, RData, Record, RecordType, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

const ORIGIN: &str = "puppet.example.test.";
const KEY1: &str = "xfr1.example.test.";
const SECRET1: &str = "yRPr8kRpp4nhc/MCU0Pk0WT4v15pZCrzppCBDmERLoY=";
const KEY2: &str = "xfr2.example.test.";
const SECRET2: &str = "q0Lh0b0Jm1mJ9b7kq0B1c3w2YQ6V1c9l1y8f1k2Zs3E=";
/// Same name as KEY1, another secret.
const WRONG_SECRET: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

const REGISTRY: &str = r#"
[[master]]
host = "pm1.dc1.puppet.example.test"
site = "dc1"
roles = ["puppet", "report"]
addresses = ["127.0.1.11"]
[[master]]
host = "pm2.example.com"
site = "dc1"
weight = 5
[[master]]
host = "pm1.dc2.puppet.example.test"
site = "dc2"
addresses = ["127.0.1.21"]
[[master]]
host = "ca.example.com"
site = "dc2"
roles = ["ca"]
"#;

fn keys() -> String {
    format!(
        "[[tsig_key]]\nname = \"{KEY1}\"\nsecret = \"{SECRET1}\"\n\n[[tsig_key]]\nname = \"{KEY2}\"\nalgorithm = \"hmac-sha512\"\nsecret = \"{SECRET2}\"\n"
    )
}

/// 127.0.0.1 needs KEY1, 127.0.0.3 needs no key; 127.0.0.5 needs KEY2.
fn acl_config() -> String {
    format!(
        "{BASE_CONFIG}\n{}\n[[secondary]]\naddress = \"127.0.0.1:53\"\nkey = \"{KEY1}\"\nnotify = false\n\n\
         [[secondary]]\naddress = \"127.0.0.3\"\nnotify = false\n\n\
         [[secondary]]\naddress = \"127.0.0.5\"\nkey = \"{KEY2}\"\nnotify = false\n",
        keys()
    )
}

fn signer(name: &str, secret: &str, alg: TsigAlgorithm) -> TSigner {
    let key = data_encoding::BASE64.decode(secret.as_bytes()).unwrap();
    TSigner::new(key, alg, Name::from_ascii(name).unwrap(), 300).unwrap()
}

fn key1() -> TSigner {
    signer(KEY1, SECRET1, TsigAlgorithm::HmacSha256)
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The result of one transfer attempt.
#[derive(Debug)]
struct Transfer {
    rcode: ResponseCode,
    /// Answer records of every message, in order.
    records: Vec<Record>,
    messages: usize,
    /// TSIG error of the (first) response, if it carried a TSIG.
    tsig_error: Option<TsigError>,
    /// Every message carried a TSIG that verified (chained).
    all_signed: bool,
}

async fn connect_from(src: IpAddr, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(src, 0)).unwrap();
    s.connect(to).await.unwrap()
}

fn xfr_query(qtype: RecordType) -> Message {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(ORIGIN).unwrap(), qtype));
    m
}

/// AXFR from `src` over TCP, signed with `signer` if given; reads messages
/// until the closing SOA (or an error), verifying each TSIG in the chain.
async fn axfr(src: IpAddr, to: SocketAddr, signer: Option<&TSigner>) -> Transfer {
    let mut q = xfr_query(RecordType::AXFR);
    let mut verifier = None;
    if let Some(s) = signer {
        let (sig, v) = s.sign_message(&q, now()).unwrap();
        q.set_signature(sig);
        verifier = v;
    }
    let bytes = q.to_vec().unwrap();
    let mut s = connect_from(src, to).await;
    s.write_all(&(bytes.len() as u16).to_be_bytes()).await.unwrap();
    s.write_all(&bytes).await.unwrap();
    let mut t = Transfer { rcode: ResponseCode::NoError, records: vec![], messages: 0, tsig_error: None, all_signed: signer.is_some() };
    let mut soas = 0;
    loop {
        let mut len = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut len)).await.expect("transfer message in time").unwrap();
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).await.unwrap();
        let m = Message::from_vec(&buf).unwrap();
        assert_eq!(m.metadata.id, 4242);
        t.messages += 1;
        if t.messages == 1 {
            t.tsig_error = m.signature.as_ref().and_then(|s| s.data.error);
        }
        match (&mut verifier, &m.signature) {
            (Some(v), Some(_)) if m.metadata.response_code == ResponseCode::NoError => {
                if v.verify(&buf).is_err() {
                    t.all_signed = false;
                }
            }
            _ => t.all_signed = false,
        }
        t.rcode = m.metadata.response_code;
        if t.rcode != ResponseCode::NoError {
            return t;
        }
        assert!(m.metadata.authoritative, "AA set on transfer messages");
        for r in &m.answers {
            if r.record_type() == RecordType::SOA {
                soas += 1;
            }
        }
        t.records.extend(m.answers.iter().cloned());
        if soas >= 2 {
            return t;
        }
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn transfer_is_allowed_only_from_a_listed_ip_with_its_key() {
    let d = TestDaemon::start_all_up(&acl_config(), REGISTRY).await;
    let to = d.addr;

    // The listed secondary with its key: the zone, every message signed.
    let ok = axfr(ip("127.0.0.1"), to, Some(&key1())).await;
    assert_eq!(ok.rcode, ResponseCode::NoError);
    assert!(ok.all_signed, "every message carries a valid chained TSIG");
    assert!(ok.records.len() > 10);

    // Same IP, no key: REFUSED.
    assert_eq!(axfr(ip("127.0.0.1"), to, None).await.rcode, ResponseCode::Refused);
    // Same IP, another configured key (valid, but not this secondary's): REFUSED.
    let other = signer(KEY2, SECRET2, TsigAlgorithm::HmacSha512);
    let r = axfr(ip("127.0.0.1"), to, Some(&other)).await;
    assert_eq!(r.rcode, ResponseCode::Refused);
    assert_eq!(r.tsig_error, None, "a refusal of a good TSIG is signed, not a TSIG error");
    // ... which is the right key for 127.0.0.5.
    assert_eq!(axfr(ip("127.0.0.5"), to, Some(&other)).await.rcode, ResponseCode::NoError);
    // Key name right, secret wrong: NOTAUTH + BADSIG (RFC 8945 §5.2.2).
    let wrong = signer(KEY1, WRONG_SECRET, TsigAlgorithm::HmacSha256);
    let r = axfr(ip("127.0.0.1"), to, Some(&wrong)).await;
    assert_eq!(r.rcode, ResponseCode::NotAuth);
    assert_eq!(r.tsig_error, Some(TsigError::BadSig));
    // Right secret, wrong algorithm, or a key srvd does not know: NOTAUTH + BADKEY.
    let r = axfr(ip("127.0.0.1"), to, Some(&signer(KEY1, SECRET1, TsigAlgorithm::HmacSha384))).await;
    assert_eq!((r.rcode, r.tsig_error), (ResponseCode::NotAuth, Some(TsigError::BadKey)));
    let r = axfr(ip("127.0.0.1"), to, Some(&signer("nobody.example.test.", SECRET1, TsigAlgorithm::HmacSha256))).await;
    assert_eq!((r.rcode, r.tsig_error), (ResponseCode::NotAuth, Some(TsigError::BadKey)));

    // A keyless secondary: its IP alone is enough.
    let r = axfr(ip("127.0.0.3"), to, None).await;
    assert_eq!(r.rcode, ResponseCode::NoError);
    assert_eq!(r.records, ok.records);
    // Anybody else: REFUSED, signed or not.
    assert_eq!(axfr(ip("127.0.0.4"), to, None).await.rcode, ResponseCode::Refused);
    assert_eq!(axfr(ip("127.0.0.4"), to, Some(&key1())).await.rcode, ResponseCode::Refused);

    // AXFR over UDP is a format error, even for a secondary.
    let m = query_udp(to, &xfr_query(RecordType::AXFR).to_vec().unwrap()).await;
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
}

#[tokio::test]
async fn transferred_records_are_the_served_records() {
    let d = TestDaemon::start_all_up(&acl_config(), REGISTRY).await;
    let t = axfr(ip("127.0.0.1"), d.addr, Some(&key1())).await;
    let snap = d.running.as_ref().unwrap().publisher.snapshot();
    // SOA first and last, the current serial.
    let (first, last) = (t.records.first().unwrap(), t.records.last().unwrap());
    for soa in [first, last] {
        match &soa.data {
            RData::SOA(s) => assert_eq!(s.serial, d.serial()),
            other => panic!("SOA expected, got {other:?}"),
        }
    }
    assert_eq!(t.records[..t.records.len() - 1], snap.all_records()[..]);

    // Every (name, type) of the transfer answers the same records over DNS.
    let body: Vec<&Record> = t.records[1..t.records.len() - 1].iter().collect();
    let rrsets: BTreeSet<(String, RecordType)> = body.iter().map(|r| (r.name.to_string(), r.record_type())).collect();
    assert!(rrsets.iter().any(|(_, t)| *t == RecordType::SRV));
    for (name, rtype) in rrsets {
        let want: BTreeSet<String> =
            body.iter().filter(|r| r.name.to_string() == name && r.record_type() == rtype).map(|r| r.to_string()).collect();
        let got: BTreeSet<String> = d.tcp(&name, rtype).await.answers.iter().map(|r| r.to_string()).collect();
        assert_eq!(got, want, "{name} {rtype}");
    }

    // IXFR from an older serial gets the whole zone the same way (RFC 1995
    // §4 allows it) ...
    let mut older = snap.soa.clone();
    if let RData::SOA(s) = &mut older.data {
        s.serial = s.serial.wrapping_sub(1);
    }
    let mut q = xfr_query(RecordType::IXFR);
    q.add_authority(older);
    let mut s = connect_from(ip("127.0.0.3"), d.addr).await;
    let m = tcp_exchange(&mut s, &q.to_vec().unwrap()).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers, t.records);
    // ... from the current serial, the current SOA alone (RFC 1995 §2, §4) ...
    let mut q = xfr_query(RecordType::IXFR);
    q.add_authority(snap.soa.clone());
    let m = tcp_exchange(&mut s, &q.to_vec().unwrap()).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers, vec![snap.soa.clone()]);
    // ... and over UDP only the SOA, meaning "ask over TCP" (RFC 1995 §2).
    let u = UdpSocket::bind("127.0.0.3:0").await.unwrap();
    u.send_to(&q.to_vec().unwrap(), d.addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), u.recv_from(&mut buf)).await.unwrap().unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers, vec![snap.soa.clone()]);
    // Not a secondary: REFUSED over UDP too.
    let m = query_udp(d.addr, &q.to_vec().unwrap()).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

// Several threads: the health checker of 250 masters keeps one busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_zone_goes_in_several_signed_messages() {
    let mut reg = String::new();
    for i in 0..250 {
        reg.push_str(&format!(
            "[[master]]\nhost = \"pm{i}.example.com\"\nsite = \"dc{}\"\nroles = [\"puppet\", \"report\", \"fileserver\"]\n",
            1 + i % 3
        ));
    }
    let d = TestDaemon::start_all_up(&acl_config(), &reg).await;
    let t = axfr(ip("127.0.0.1"), d.addr, Some(&key1())).await;
    assert_eq!(t.rcode, ResponseCode::NoError);
    assert!(t.messages > 2, "{} messages", t.messages);
    assert!(t.all_signed, "every message's TSIG verifies in the chain");
    let snap = d.running.as_ref().unwrap().publisher.snapshot();
    assert_eq!(t.records[..t.records.len() - 1], snap.all_records()[..]);

    // dig checks the TSIG chain too.
    let addr = d.addr;
    let out = tokio::task::spawn_blocking(move || dig_axfr(addr, Some((KEY1, SECRET1)))).await.unwrap();
    assert!(out.contains(&format!("XFR size: {} records (messages {}", t.records.len(), t.messages)), "{out}");
}

fn dig_axfr(addr: SocketAddr, key: Option<(&str, &str)>) -> String {
    let mut c = Command::new("dig");
    c.args([&format!("@{}", addr.ip()), "-p", &addr.port().to_string(), ORIGIN, "AXFR", "+time=10", "+tries=1"]);
    if let Some((name, secret)) = key {
        c.args(["-y", &format!("hmac-sha256:{}:{secret}", name.trim_end_matches('.'))]);
    }
    let out = c.output().expect("dig runs (make deps installs bind9-dnsutils)");
    // One space between fields: dig aligns with tabs.
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn dig_transfers_with_the_key_and_fails_without() {
    let d = TestDaemon::start_all_up(&acl_config(), REGISTRY).await;
    let addr = d.addr;
    let (good, none, wrong) = tokio::task::spawn_blocking(move || {
        (dig_axfr(addr, Some((KEY1, SECRET1))), dig_axfr(addr, None), dig_axfr(addr, Some((KEY1, WRONG_SECRET))))
    })
    .await
    .unwrap();
    assert!(good.contains("XFR size:"), "{good}");
    assert!(!good.contains("failed"), "{good}");
    assert!(good.contains("_x-puppet._tcp.dc1.puppet.example.test. 30 IN SRV 10 10 8140 pm1.dc1.puppet.example.test."), "{good}");
    assert!(good.contains(&format!("SOA ns1.puppet.example.test. hostmaster.example.test. {} ", d.serial())), "{good}");
    assert!(none.contains("Transfer failed"), "{none}");
    assert!(wrong.contains("Transfer failed") && wrong.contains("BADSIG"), "{wrong}");
}

/// Receives one NOTIFY on `sock`; checks its form and TSIG; returns it and
/// where it came from.
async fn recv_notify(sock: &UdpSocket, within: Duration) -> Option<(Message, Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 4096];
    let (n, from) = tokio::time::timeout(within, sock.recv_from(&mut buf)).await.ok()?.unwrap();
    let raw = buf[..n].to_vec();
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(m.metadata.op_code, OpCode::Notify);
    assert_eq!(m.metadata.message_type, MessageType::Query);
    assert!(m.metadata.authoritative, "NOTIFY has AA");
    assert_eq!(m.queries.len(), 1);
    assert_eq!(m.queries[0].query_type(), RecordType::SOA);
    assert_eq!(m.queries[0].name().to_string(), ORIGIN);
    let sig = m.signature.as_ref().expect("NOTIFY is signed with the secondary's key");
    assert_eq!(sig.name.to_string(), KEY1);
    let (_, t, _) = key1().verify_message_byte(&raw, None, true).expect("NOTIFY TSIG verifies");
    assert!(t.abs_diff(now()) < 5);
    Some((m, raw, from))
}

fn serial_of(m: &Message) -> u32 {
    match &m.answers.first().expect("NOTIFY carries the SOA").data {
        RData::SOA(s) => s.serial,
        o => panic!("SOA expected: {o:?}"),
    }
}

#[tokio::test]
async fn notify_is_sent_on_change_and_retried_until_acknowledged() {
    let sec = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let config = format!("{BASE_CONFIG}\n{}\n[[secondary]]\naddress = \"{}\"\nkey = \"{KEY1}\"\n", keys(), sec.local_addr().unwrap());
    let d = TestDaemon::start_all_up(&config, REGISTRY).await;
    let serial = d.serial();
    // At start: NOTIFY with the current serial; unanswered, it comes again.
    let (m, _, _) = recv_notify(&sec, Duration::from_secs(3)).await.expect("NOTIFY at start");
    assert_eq!(serial_of(&m), serial);
    let (m, raw, from) = recv_notify(&sec, Duration::from_secs(3)).await.expect("NOTIFY retried");
    assert_eq!(serial_of(&m), serial);
    assert_eq!(from.ip(), ip("127.0.0.1"), "sent from srvd's listen address");
    // Acknowledge (signed, as a secondary does).
    ack(&sec, &m, &raw, from).await;

    // A change: a new NOTIFY with the new serial.
    let running = d.running.as_ref().unwrap();
    let (_, new_serial) = running.publisher.update(|c| {
        c.inputs.registry.masters.iter_mut().find(|m| m.host.to_string() == "pm2.example.com.").unwrap().drained = true;
    });
    assert!(new_serial > serial);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (m, raw, from) = recv_notify(&sec, deadline.saturating_duration_since(Instant::now())).await.expect("NOTIFY after the change");
        if serial_of(&m) == new_serial {
            ack(&sec, &m, &raw, from).await;
            break;
        }
        assert_eq!(serial_of(&m), serial, "only a late retry of the old round may come first");
    }
    // Acknowledged: no more NOTIFY for that serial.
    assert!(recv_notify(&sec, Duration::from_millis(1500)).await.is_none(), "no NOTIFY after the acknowledgement");
}

async fn ack(sec: &UdpSocket, m: &Message, raw: &[u8], to: SocketAddr) {
    let (request_mac, _, _) = key1().verify_message_byte(raw, None, true).unwrap();
    let mut resp = Message::new(m.metadata.id, MessageType::Response, OpCode::Notify);
    resp.metadata.authoritative = true;
    resp.add_query(m.queries[0].clone());
    let tbs_key = key1();
    // Response TSIG: request MAC, response, TSIG variables (RFC 8945 §5.3).
    let stub = hickory_proto::rr::rdata::TSIG::new(TsigAlgorithm::HmacSha256, now(), 300, vec![], m.metadata.id, None, vec![]);
    let body = resp.to_vec().unwrap();
    let tbs = tbs_key.encode_response_tbs(&request_mac, &body, &stub).unwrap();
    let mac = tbs_key.sign(&tbs).unwrap();
    resp.set_signature(Box::new(hickory_proto::rr::rdata::tsig::make_tsig_record(Name::from_ascii(KEY1).unwrap(), stub.set_mac(mac))));
    sec.send_to(&resp.to_vec().unwrap(), to).await.unwrap();
}

// ---------------------------------------------------------------------------
// A real BIND secondary.

struct Named {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Named {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on 127.0.0.1 for both UDP and TCP (for BIND's config).
fn free_port() -> u16 {
    for _ in 0..50 {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

fn start_named(port: u16, primary: SocketAddr) -> Named {
    let named = ["/usr/sbin/named", "/usr/bin/named"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("named is installed (make deps installs bind9)");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let conf = format!(
        r#"options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
controls {{ }};
key "{KEY1}" {{
    algorithm hmac-sha256;
    secret "{SECRET1}";
}};
zone "{ORIGIN}" {{
    type secondary;
    file "{d}/secondary.db";
    primaries {{ {} port {} key "{KEY1}"; }};
}};
"#,
        primary.ip(),
        primary.port()
    );
    let conf_path = dir.path().join("named.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let log = std::fs::File::create(dir.path().join("named.log")).unwrap();
    let child = Command::new(named)
        .args(["-g", "-4", "-n", "1", "-c"])
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("named starts");
    Named { child, dir, addr: SocketAddr::new(ip("127.0.0.1"), port) }
}

/// Sorted text of the answer records (BIND may rotate the order).
fn answer_set(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.to_string()).collect();
    v.sort();
    v
}

async fn soa_serial(addr: SocketAddr) -> Option<u32> {
    let r = raw_udp_within(addr, &build_query(ORIGIN, RecordType::SOA, None), Duration::from_millis(300)).await?;
    let m = Message::from_vec(&r).ok()?;
    match &m.answers.first()?.data {
        RData::SOA(s) => Some(s.serial),
        _ => None,
    }
}

/// Polls until BIND serves `serial` (no fixed sleeps).
async fn wait_for_serial(named: &Named, serial: u32, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if soa_serial(named.addr).await == Some(serial) {
            return;
        }
        assert!(Instant::now() < deadline, "BIND did not reach serial {serial}; its log:\n{}", named.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn assert_same_srv_answers(srvd: SocketAddr, named: &Named) {
    for site in ["dc1.", "dc2.", "dc3.", ""] {
        for svc in ["_x-puppet", "_x-puppet-ca", "_x-puppet-report", "_x-puppet-fileserver"] {
            let name = format!("{svc}._tcp.{site}{ORIGIN}");
            let a = query_udp(srvd, &build_query(&name, RecordType::SRV, Some(1232))).await;
            let b = query_udp(named.addr, &build_query(&name, RecordType::SRV, Some(1232))).await;
            // Names without SRV records are NODATA on both (srvd gives them a
            // TXT placeholder, so the name travels with the transfer).
            assert_eq!(b.metadata.response_code, a.metadata.response_code, "{name}");
            assert!(b.metadata.authoritative, "BIND answers authoritatively for {name}");
            assert_eq!(answer_set(&b), answer_set(&a), "{name}");
        }
    }
}

#[tokio::test]
async fn bind_secondary_transfers_and_follows_notify() {
    let port = free_port();
    let config = format!("{BASE_CONFIG}\n{}\n[[secondary]]\naddress = \"127.0.0.1:{port}\"\nkey = \"{KEY1}\"\n", keys());
    let d = TestDaemon::start_all_up(&config, REGISTRY).await;
    let named = start_named(port, d.addr);

    // (1) It transfers the zone and answers exactly like srvd.
    wait_for_serial(&named, d.serial(), Duration::from_secs(8)).await;
    assert_same_srv_answers(d.addr, &named).await;
    let before = query_udp(named.addr, &build_query(&format!("_x-puppet._tcp.dc1.{ORIGIN}"), RecordType::SRV, None)).await;
    assert!(srv(&before).iter().any(|s| s.3 == "pm2.example.com"));

    // (2) A change: NOTIFY, re-transfer, the new answer, within seconds.
    let (_, serial) = d.running.as_ref().unwrap().publisher.update(|c| {
        c.inputs.registry.masters.iter_mut().find(|m| m.host.to_string() == "pm2.example.com.").unwrap().drained = true;
    });
    let started = Instant::now();
    wait_for_serial(&named, serial, Duration::from_secs(5)).await;
    let after = query_udp(named.addr, &build_query(&format!("_x-puppet._tcp.dc1.{ORIGIN}"), RecordType::SRV, None)).await;
    assert!(!srv(&after).iter().any(|s| s.3 == "pm2.example.com"), "drained master gone from BIND's answer");
    assert_same_srv_answers(d.addr, &named).await;
    let log = named.log();
    assert!(log.contains("notify from 127.0.0.1"), "BIND got srvd's NOTIFY:\n{log}");
    assert!(log.contains("Transfer status: success"), "{log}");
    eprintln!("BIND caught up in {:?}", started.elapsed());
}
