//! Hostile and malformed packets: the reported crash (a TSIG with long key
//! and algorithm names beside a long question name), the fuzz corpus
//! replayed through the library harness, and thousands of malformed packets
//! against the real daemon over UDP and TCP, after which it must still answer
//! correctly with all its UDP workers.

use crate::common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use srvd::dns::fuzzing;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const O: &str = "puppet.example.test.";

/// A wire-format name of `len` octets (at most 255), labels of at most 63.
fn long_name(len: usize, fill: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut left = len - 1; // the root label
    while left > 0 {
        let l = (left - 1).min(63);
        if l == 0 {
            // One octet left cannot hold a label: widen the previous one.
            break;
        }
        out.push(l as u8);
        out.extend(std::iter::repeat_n(fill, l));
        left -= l + 1;
    }
    out.push(0);
    out
}

/// A query for `qname` (wire format) with a TSIG record named `key`, with
/// algorithm `alg` and an empty MAC: an unknown key, so the BADKEY path.
fn tsig_query(id: u16, qname: &[u8], key: &[u8], alg: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
    p.extend_from_slice(qname);
    p.extend_from_slice(&[0, 33, 0, 1]); // SRV IN
    p.extend_from_slice(key);
    p.extend_from_slice(&[0, 250, 0, 255, 0, 0, 0, 0]); // TSIG ANY TTL 0
    let mut rdata = alg.to_vec();
    rdata.extend_from_slice(&[0, 0, 0x65, 0x00, 0x00, 0x00]); // time
    rdata.extend_from_slice(&300u16.to_be_bytes()); // fudge
    rdata.extend_from_slice(&[0, 0]); // MAC size 0
    rdata.extend_from_slice(&id.to_be_bytes()); // original ID
    rdata.extend_from_slice(&[0, 0, 0, 0]); // error, other len
    p.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    p.extend_from_slice(&rdata);
    p
}

/// The packets of the report: long names (the "always fit" expect) and
/// longer ones (the size arithmetic underflow), in several sizes.
fn reported_crash_packets() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for (q, k, a) in [(255, 100, 100), (255, 200, 200), (255, 255, 255), (200, 150, 150), (100, 255, 255), (30, 255, 255)] {
        v.push(tsig_query(0x4242, &long_name(q, b'q'), &long_name(k, b'k'), &long_name(a, b'a')));
    }
    v
}

#[test]
fn reported_crash_tsig_with_long_names_is_answered() {
    let snap = fuzzing::example_snapshot().unwrap();
    for p in reported_crash_packets() {
        assert!(fuzzing::fuzz_one(&snap, &p) > 0, "the packet is answered");
        // UDP: NOTAUTH (BADKEY), within 512 bytes.
        let reply = srvd::dns::reply(&snap, &p, srvd::dns::Transport::Udp).unwrap();
        let bytes = srvd::dns::encode(&reply);
        assert!(bytes.len() <= 512);
        let m = hickory_proto::op::Message::from_vec(&bytes).unwrap();
        assert_eq!(m.metadata.response_code, hickory_proto::op::ResponseCode::NotAuth);
    }
}

/// `encode` falls back step by step (TSIG, OPT, question dropped; TC) and
/// never exceeds the limit, whatever it is; a reply without metadata
/// becomes SERVFAIL instead of a panic.
#[test]
fn encode_stays_within_any_limit() {
    use srvd::dns::{self, Transport};
    let snap = fuzzing::example_snapshot().unwrap();
    let mut reqs = reported_crash_packets();
    let mut big = header(0x5151, 0, [1, 0, 0, 1]);
    big.extend(question(&format!("_x-puppet._tcp.dc2.{O}"), 33));
    big.extend(opt(4096, 0, &[], 0));
    reqs.push(big);
    for req in &reqs {
        let full = dns::reply(&snap, req, Transport::Tcp).unwrap();
        for limit in [0, 5, 12, 13, 30, 60, 100, 200, 300, 400, 512, 700, 1232, 4096, 65535, 1 << 20] {
            let mut r = dns::reply(&snap, req, Transport::Tcp).unwrap();
            r.limit = limit;
            let bytes = dns::encode(&r);
            assert!(bytes.len() <= limit.clamp(12, 65535), "limit {limit}: {} bytes", bytes.len());
            let m = Message::from_vec(&bytes).unwrap_or_else(|e| panic!("limit {limit}: {e}"));
            assert_eq!(m.metadata.id.to_be_bytes(), req[..2], "limit {limit}");
            // Only additional records may go without TC (RFC 2181 §9).
            let kept = m.answers.len() == full.answers.len() && m.authorities.len() == full.authority.len();
            assert!(kept || m.metadata.truncation, "limit {limit}: a reply that lost answers has TC");
        }
    }
    let bare = dns::encode(&dns::Reply { limit: 512, ..Default::default() });
    let m = Message::from_vec(&bare).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

/// Every file of the fuzz corpus (fuzz/corpus/request/) goes through the
/// same harness as the fuzzer: no panic, every reply parses, fits, has QR
/// and the request's ID.
#[test]
fn fuzz_corpus_replays_clean() {
    let snap = fuzzing::example_snapshot().unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/request");
    let mut files = 0;
    let mut replies = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fuzzing::fuzz_one(&snap, &bytes)));
        match r {
            Ok(n) => replies += n,
            Err(_) => panic!("corpus file {} fails the harness", path.display()),
        }
        files += 1;
    }
    assert!(files >= 30, "the corpus has its seeds ({files} files)");
    assert!(replies > files, "most corpus files get replies ({replies} for {files} files)");
}

// ---------------------------------------------------------------------
// Packet builders.

fn header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut h = Vec::with_capacity(12);
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&flags.to_be_bytes());
    for c in counts {
        h.extend_from_slice(&c.to_be_bytes());
    }
    h
}

fn wire(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for l in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
    out
}

fn question(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = wire(name);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q
}

/// An OPT record: payload size, version, DO, options (raw), RDLENGTH as given.
fn opt(size: u16, version: u8, options: &[u8], rdlen: u16) -> Vec<u8> {
    let mut o = vec![0, 0, 41];
    o.extend_from_slice(&size.to_be_bytes());
    o.extend_from_slice(&[0, version, 0x80, 0]);
    o.extend_from_slice(&rdlen.to_be_bytes());
    o.extend_from_slice(options);
    o
}

fn soa_rr(serial: u32) -> Vec<u8> {
    let mut rdata = wire(&format!("ns1.{O}"));
    rdata.extend(wire("hostmaster.example.test."));
    for v in [serial, 300, 60, 1_209_600, 30] {
        rdata.extend_from_slice(&v.to_be_bytes());
    }
    let mut r = wire(O);
    r.extend_from_slice(&[0, 6, 0, 1, 0, 0, 0, 30]);
    r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    r.extend(rdata);
    r
}

const NAMES: [&str; 6] = ["_x-puppet._tcp.dc1", "_x-puppet._tcp.dc2", "_x-puppet-ca._tcp", "pm1.dc1", "ns1", "nope"];
const TYPES: [u16; 10] = [33, 1, 28, 6, 2, 16, 255, 252, 251, 257];

/// A valid query (maybe with EDNS) to mutate.
fn valid(rng: &mut StdRng) -> Vec<u8> {
    let name = format!("{}.{O}", NAMES[rng.random_range(0..NAMES.len())]);
    let edns = rng.random_bool(0.5);
    let mut p = header(rng.random(), 0, [1, 0, 0, u16::from(edns)]);
    p.extend(question(&name, TYPES[rng.random_range(0..TYPES.len())]));
    if edns {
        p.extend(opt(rng.random_range(0..5000), 0, &[], 0));
    }
    p
}

/// Kinds of hostile packets; `packet` cycles through them.
const KINDS: usize = 20;

/// One hostile packet of kind `kind % KINDS`.
fn packet(rng: &mut StdRng, kind: usize) -> Vec<u8> {
    let id: u16 = rng.random();
    match kind % KINDS {
        // Truncated header.
        0 => {
            let n = rng.random_range(0..12);
            (0..n).map(|_| rng.random()).collect()
        }
        // A valid query cut short.
        1 => {
            let mut p = valid(rng);
            p.truncate(rng.random_range(12..p.len()));
            p
        }
        // Compression loops: a pointer to itself, two pointing at each other,
        // a pointer past the end, in the question or in the OPT owner.
        2 => {
            let mut p = header(id, 0, [1, 0, 0, 0]);
            match rng.random_range(0..4) {
                0 => p.extend_from_slice(&[0xc0, 12]),
                1 => p.extend_from_slice(&[1, b'a', 0xc0, 16, 1, b'b', 0xc0, 12]),
                2 => p.extend_from_slice(&[0xff, 0xff]),
                _ => p.extend_from_slice(&[3, b'f', b'o', b'o', 0xc0, 12]),
            }
            p.extend_from_slice(&[0, 33, 0, 1]);
            p
        }
        3 => {
            let mut p = header(id, 0, [1, 0, 0, 1]);
            p.extend(question(&format!("ns1.{O}"), 1));
            p.extend_from_slice(&[0xc0, 29]); // OPT owner: a pointer to itself
            p.extend_from_slice(&[0, 41, 4, 0, 0, 0, 0, 0, 0, 0]);
            p
        }
        // Oversize names: more than 255 octets, labels longer than 63
        // (0x40..0xbf are the reserved label types).
        4 => {
            let mut p = header(id, 0, [1, 0, 0, 0]);
            let labels = rng.random_range(4..12);
            for _ in 0..labels {
                p.push(63);
                p.extend(std::iter::repeat_n(b'x', 63));
            }
            p.push(0);
            p.extend_from_slice(&[0, 33, 0, 1]);
            p
        }
        5 => {
            let mut p = header(id, 0, [1, 0, 0, 0]);
            let len = rng.random_range(64..=191u8);
            p.push(len);
            p.extend(std::iter::repeat_n(b'y', usize::from(len)));
            p.push(0);
            p.extend_from_slice(&[0, 1, 0, 1]);
            p
        }
        // Bad counts: QDCOUNT 0, 2, 65535; ANCOUNT/NSCOUNT/ARCOUNT without data.
        6 => {
            let counts =
                [[0, 0, 0, 0], [2, 0, 0, 0], [65535, 0, 0, 0], [1, 3, 0, 0], [1, 0, 65535, 0], [1, 0, 0, 9], [1, 65535, 65535, 65535]];
            let mut p = header(id, 0, counts[rng.random_range(0..counts.len())]);
            p.extend(question(&format!("_x-puppet._tcp.dc1.{O}"), 33));
            p
        }
        // Several OPTs.
        7 => {
            let n = rng.random_range(2..6);
            let mut p = header(id, 0, [1, 0, 0, n]);
            p.extend(question(&format!("_x-puppet._tcp.dc1.{O}"), 33));
            for _ in 0..n {
                p.extend(opt(rng.random(), 0, &[], 0));
            }
            p
        }
        // OPT with junk options, option lengths past the end, RDLENGTH past the end.
        8 => {
            let mut p = header(id, 0, [1, 0, 0, 1]);
            p.extend(question(&format!("_x-puppet._tcp.dc2.{O}"), 33));
            let mut options = Vec::new();
            for _ in 0..rng.random_range(1..6) {
                options.extend_from_slice(&rng.random::<u16>().to_be_bytes());
                let len = rng.random_range(0..40u16);
                options.extend_from_slice(&len.to_be_bytes());
                let actual = if rng.random_bool(0.3) { len / 2 } else { len };
                options.extend((0..actual).map(|_| rng.random::<u8>()));
            }
            let rdlen = match rng.random_range(0..3) {
                0 => options.len() as u16,
                1 => options.len() as u16 + rng.random_range(1..300),
                _ => rng.random(),
            };
            p.extend(opt(1232, 0, &options, rdlen));
            p
        }
        // TSIG not last (an OPT after it).
        9 => {
            let mut p = tsig_query(id, &wire(O), &wire("xfr.example.test."), &wire("hmac-sha256."));
            p[11] = 2;
            p.extend(opt(1232, 0, &[], 0));
            p
        }
        // TSIG with huge names (the reported crash), unknown or known key.
        10 => {
            let q = rng.random_range(20..=255);
            let k = rng.random_range(20..=255);
            let a = rng.random_range(20..=255);
            let key = if rng.random_bool(0.2) { wire("xfr.example.test.") } else { long_name(k, b'k') };
            let mut p = tsig_query(id, &long_name(q, b'q'), &key, &long_name(a, b'a'));
            if rng.random_bool(0.5) {
                // With EDNS too (the OPT before the TSIG).
                let cut = p.len() - tsig_len(&p);
                let tail = p.split_off(cut);
                p[11] = 2;
                p.extend(opt(rng.random(), 0, &[], 0));
                p.extend(tail);
            }
            p
        }
        // Every opcode.
        11 => {
            let op = rng.random_range(0..16u16);
            let mut p = header(id, op << 11, [1, 0, 0, 0]);
            p.extend(question(O, 6));
            p
        }
        // QR=1 (must be dropped), with any other flags.
        12 => {
            let mut p = header(id, 0x8000 | (rng.random::<u16>() & 0x7fff), [1, 0, 0, 0]);
            p.extend(question(&format!("_x-puppet._tcp.dc1.{O}"), 33));
            p
        }
        // EDNS version 1 and up.
        13 => {
            let mut p = header(id, 0, [1, 0, 0, 1]);
            p.extend(question(&format!("_x-puppet._tcp.dc1.{O}"), 33));
            p.extend(opt(1232, rng.random_range(1..=255), &[], 0));
            p
        }
        // Random bytes.
        14 => {
            let n = rng.random_range(0..600);
            (0..n).map(|_| rng.random()).collect()
        }
        // IXFR with any serial, AXFR, over UDP and TCP (127.0.0.1 may transfer).
        15 => {
            let ixfr = rng.random_bool(0.7);
            let mut p = header(id, 0, [1, 0, u16::from(ixfr), 0]);
            p.extend(question(O, if ixfr { 251 } else { 252 }));
            if ixfr {
                p.extend(soa_rr(rng.random()));
            }
            p
        }
        // Mutations of valid queries: flipped bits, overwritten, inserted and
        // deleted bytes.
        _ => {
            let mut p = valid(rng);
            for _ in 0..rng.random_range(1..6) {
                let at = rng.random_range(0..p.len());
                match rng.random_range(0..4) {
                    0 => p[at] ^= 1 << rng.random_range(0..8),
                    1 => p[at] = rng.random(),
                    2 => p.insert(at, rng.random()),
                    _ => {
                        p.remove(at);
                    }
                }
                if p.is_empty() {
                    break;
                }
            }
            p
        }
    }
}

/// Length of the TSIG record at the end of a packet built by [`tsig_query`]
/// (header, one question, the TSIG).
fn tsig_len(p: &[u8]) -> usize {
    let mut i = 12;
    while p[i] != 0 {
        i += 1 + usize::from(p[i]);
    }
    p.len() - (i + 1 + 4)
}

// ---------------------------------------------------------------------
// The daemon side.

const REGISTRY: &str = r#"
[[master]]
host = "pm1.dc1.puppet.example.test"
site = "dc1"
addresses = ["127.0.1.11"]
[[master]]
host = "pm1.dc2.puppet.example.test"
site = "dc2"
addresses = ["127.0.1.21"]
[[master]]
host = "pm1.dc3.puppet.example.test"
site = "dc3"
addresses = ["127.0.1.31"]
"#;

fn config() -> String {
    let server = "registry = \"{dir}/masters.toml\"";
    let base = BASE_CONFIG.replace(server, &format!("{server}\nmetrics = \"127.0.0.1:0\""));
    // A key (so TSIG checks go past BADKEY) and 127.0.0.1 as a keyless
    // secondary (so hostile AXFR/IXFR reach the transfer path).
    format!(
        "{base}\n[[tsig_key]]\nname = \"xfr.example.test\"\nalgorithm = \"hmac-sha256\"\nsecret = \"yRPr8kRpp4nhc/MCU0Pk0WT4v15pZCrzppCBDmERLoY=\"\n\n\
         [[secondary]]\naddress = \"127.0.0.1:53\"\nnotify = false\n"
    )
}

/// Samples of `/metrics` whose name starts with `prefix`.
async fn metrics(addr: SocketAddr, prefix: &str) -> Vec<(String, f64)> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: srvd\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await.expect("metrics in time").unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| Some((k.to_string(), v.parse().ok()?))))
        .collect()
}

/// Live UDP workers: the daemon's `srvd_dns_udp_workers` gauge (not the
/// threads named `srvd-udp`: other tests' daemons run in this process too).
async fn udp_workers_now(d: &TestDaemon) -> (usize, &'static str) {
    let samples = metrics(d.metrics_addr(), "srvd_dns_udp_workers").await;
    let (_, v) = samples.first().expect("srvd exports srvd_dns_udp_workers");
    (*v as usize, "gauge srvd_dns_udp_workers")
}

/// Live UDP workers once the count has settled (a thread takes its name
/// when it first runs, and a stopped daemon's workers take up to 200 ms to
/// leave), waiting up to 10 s for the count srvd starts with
/// ([`srvd::dns::server::udp_workers`], one socket each).
async fn udp_workers(d: &TestDaemon) -> (usize, &'static str) {
    let expected = srvd::dns::server::udp_workers();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (n, how) = udp_workers_now(d).await;
        if n == expected || Instant::now() > deadline {
            return (n, how);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Panics counted by the daemon (`srvd_dns_request_panics_total`), when it
/// counts them.
async fn request_panics(d: &TestDaemon) -> Option<f64> {
    let samples = metrics(d.metrics_addr(), "srvd_dns_request_panics_total").await;
    (!samples.is_empty()).then(|| samples.iter().map(|(_, v)| v).sum())
}

/// Checks a reply to a hostile packet: parses, QR set, within the UDP limit.
fn check_any_reply(resp: &[u8], max: usize, ids: &HashSet<u16>, what: &str) {
    assert!(resp.len() <= max, "{what}: reply of {} bytes", resp.len());
    let m = Message::from_vec(resp).unwrap_or_else(|e| panic!("{what}: unparsable reply ({e}): {resp:02x?}"));
    assert_eq!(m.metadata.message_type, hickory_proto::op::MessageType::Response, "{what}: QR");
    assert!(ids.contains(&m.metadata.id), "{what}: reply ID {} was sent", m.metadata.id);
}

const BARRIER_ID: u16 = 0xbeef;

fn barrier() -> Vec<u8> {
    let mut p = header(BARRIER_ID, 0, [1, 0, 0, 0]);
    p.extend(question(O, 6));
    p
}

/// Sends `count` hostile UDP packets in batches, each batch followed by a
/// normal query whose answer shows the batch was read; checks every reply
/// that comes back. Returns (packets sent, replies checked).
async fn hostile_udp(addr: SocketAddr, rng: &mut StdRng, count: usize) -> (usize, usize) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut ids = HashSet::from([BARRIER_ID]);
    let (mut sent, mut replies) = (0, 0);
    let mut buf = vec![0u8; 65535];
    while sent < count {
        for _ in 0..50.min(count - sent) {
            let p = packet(rng, sent);
            if let Some(id) = p.get(..2) {
                ids.insert(u16::from_be_bytes([id[0], id[1]]));
            }
            sock.send_to(&p, addr).await.unwrap();
            sent += 1;
        }
        // The batch is done when the barrier's answer is back (resent if
        // lost: UDP on a loaded machine).
        let mut seen = false;
        for _ in 0..5 {
            sock.send_to(&barrier(), addr).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(3);
            while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline.into(), sock.recv_from(&mut buf)).await {
                check_any_reply(&buf[..n], 1232, &ids, "UDP");
                replies += 1;
                if buf[..2] == BARRIER_ID.to_be_bytes() {
                    seen = true;
                    break;
                }
            }
            if seen {
                break;
            }
        }
        assert!(seen, "srvd answers a normal query after {sent} hostile UDP packets");
    }
    (sent, replies)
}

/// Reads one framed message, `None` on EOF, reset or 10 s of silence.
async fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut len)).await.ok()?.ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf)).await.ok()?.ok()?;
    Some(buf)
}

async fn write_frame(s: &mut TcpStream, p: &[u8]) -> bool {
    let mut f = (p.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(p);
    s.write_all(&f).await.is_ok()
}

/// Sends `count` hostile framed messages over a few long connections (and
/// a new one every 16 messages), each followed by a normal query; checks
/// every reply. A connection srvd closes is replaced. Returns (messages
/// sent, connections opened, replies checked).
async fn hostile_tcp(addr: SocketAddr, rng: &mut StdRng, count: usize) -> (usize, usize, usize) {
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut opened = conns.len();
    let (mut sent, mut replies) = (0, 0);
    while sent < count {
        let p = packet(rng, sent);
        let slot = sent % conns.len();
        if sent % 16 == 15 {
            conns[slot] = TcpStream::connect(addr).await.unwrap();
            opened += 1;
        }
        let mut ids = HashSet::from([BARRIER_ID]);
        if let Some(id) = p.get(..2) {
            ids.insert(u16::from_be_bytes([id[0], id[1]]));
        }
        sent += 1;
        let s = &mut conns[slot];
        let mut seen = write_frame(s, &p).await && write_frame(s, &barrier()).await;
        if seen {
            seen = false;
            while let Some(resp) = read_frame(s).await {
                check_any_reply(&resp, 65535, &ids, "TCP");
                replies += 1;
                let m = Message::from_vec(&resp).unwrap();
                if m.metadata.id == BARRIER_ID && m.queries.first().is_some_and(|q| q.query_type() == RecordType::SOA) {
                    seen = true;
                    break;
                }
            }
        }
        if !seen {
            // srvd (or hickory's framing) closed the connection on that
            // message: a new one must work.
            conns[slot] = TcpStream::connect(addr).await.unwrap();
            opened += 1;
            let m = tcp_exchange(&mut conns[slot], &barrier()).await;
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "after TCP message {sent}");
        }
    }
    (sent, opened, replies)
}

const UDP_PACKETS: usize = 5_000;
const TCP_MESSAGES: usize = 1_200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_packets_leave_srvd_answering_with_all_udp_workers() {
    let _one = ONE_DAEMON.lock().await;
    let t0 = Instant::now();
    let d = TestDaemon::start_all_up(&config(), REGISTRY).await;
    let dc1 = format!("_x-puppet._tcp.dc1.{O}");
    let want = vec![
        (10, 10, 8140, "pm1.dc1.puppet.example.test".to_string()),
        (20, 10, 8140, "pm1.dc2.puppet.example.test".to_string()),
        (30, 10, 8140, "pm1.dc3.puppet.example.test".to_string()),
    ];
    assert_eq!(srv(&d.udp(&dc1, RecordType::SRV).await), want);
    let (workers_before, how) = udp_workers(&d).await;
    assert!(workers_before >= 1, "UDP workers counted by {how}");

    let mut rng = StdRng::seed_from_u64(8);
    let (udp_sent, udp_replies) = hostile_udp(d.addr, &mut rng, UDP_PACKETS).await;
    let (tcp_sent, tcp_conns, tcp_replies) = hostile_tcp(d.addr, &mut rng, TCP_MESSAGES).await;
    eprintln!(
        "hostile: {udp_sent} UDP packets ({udp_replies} replies checked), {tcp_sent} TCP messages over {tcp_conns} connections \
         ({tcp_replies} replies checked), {:?}",
        t0.elapsed()
    );
    assert_eq!(udp_sent, UDP_PACKETS);
    assert_eq!(tcp_sent, TCP_MESSAGES);

    // Correct answers to normal queries, over UDP (plain and EDNS) and TCP.
    assert_eq!(srv(&d.udp(&dc1, RecordType::SRV).await), want);
    assert_eq!(srv(&d.udp_edns(&dc1, RecordType::SRV, 1232).await), want);
    assert_eq!(srv(&d.tcp(&dc1, RecordType::SRV).await), want);
    let m = d.udp(&format!("pm1.dc1.{O}"), RecordType::A).await;
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].data.to_string(), "127.0.1.11");

    // Every UDP worker is alive: as many as before, and 4 x workers
    // concurrent queries are all answered.
    let (workers_after, _) = udp_workers(&d).await;
    assert_eq!(workers_after, workers_before, "live UDP workers ({how})");
    let mut tasks = Vec::new();
    for _ in 0..4 * workers_before {
        let (addr, q) = (d.addr, build_query(&dc1, RecordType::SRV, None));
        tasks.push(tokio::spawn(async move { srv(&query_udp(addr, &q).await) }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), want);
    }
    if let Some(panics) = request_panics(&d).await {
        assert_eq!(panics, 0.0, "no request panicked (srvd_dns_request_panics_total)");
    }
    d.stop().await;
}

// ---------------------------------------------------------------------
// DNS details of issue 8, against the real daemon.

fn dig(addr: SocketAddr, args: &[&str]) -> String {
    let out = std::process::Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["+norecurse", "+time=5", "+tries=2"])
        .args(args)
        .output()
        .expect("dig is installed (make test installs bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn dig_async(addr: SocketAddr, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || dig(addr, &args.iter().map(String::as_str).collect::<Vec<_>>())).await.unwrap()
}

/// Records of dig's answer section; for a transfer (printed without
/// sections), every line that is not a comment.
fn answer_lines(out: &str) -> Vec<&str> {
    match out.find(";; ANSWER SECTION:") {
        Some(start) => out[start..].lines().skip(1).take_while(|l| !l.trim().is_empty()).collect(),
        None => out.lines().filter(|l| !l.starts_with(';') && !l.trim().is_empty()).collect(),
    }
}

/// The daemon tests of this file run one at a time: each floods its daemon
/// with packets and dig runs.
static ONE_DAEMON: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn do_bit_any_notauth_opt_and_ixfr_at_current_serial() {
    let _one = ONE_DAEMON.lock().await;
    let d = TestDaemon::start_all_up(&config(), REGISTRY).await;
    let addr = d.addr;
    let dc1 = format!("_x-puppet._tcp.dc1.{O}");

    // RFC 3225: DO is copied into the reply, on the fast path (SRV) and
    // the general path (NXDOMAIN); not set when the query had none.
    for name in [dc1.as_str(), "nope.puppet.example.test."] {
        let out = dig_async(addr, &["+dnssec", name, "SRV"]).await;
        assert!(out.contains("; EDNS: version: 0, flags: do;"), "{out}");
        let out = dig_async(addr, &[name, "SRV"]).await;
        assert!(out.contains("; EDNS: version: 0, flags:;"), "{out}");
    }

    // RFC 8482: ANY over UDP gets one RRset; over TCP every RRset.
    let out = dig_async(addr, &["+notcp", O, "ANY"]).await;
    let udp = answer_lines(&out);
    assert!(out.contains("status: NOERROR") && !out.contains("Truncated"), "{out}");
    assert_eq!(udp.len(), 1, "only the SOA: {out}");
    assert!(udp[0].contains("SOA"), "{out}");
    let out = dig_async(addr, &["+tcp", O, "ANY"]).await;
    let tcp = answer_lines(&out);
    assert!(tcp.iter().any(|l| l.contains("SOA")) && tcp.iter().any(|l| l.contains("\tNS\t")), "SOA and NS: {out}");
    let out = dig_async(addr, &["+notcp", &format!("pm1.dc1.{O}"), "ANY"]).await;
    assert_eq!(answer_lines(&out).len(), 1, "{out}");

    // NOTAUTH (BADKEY, BADSIG) keeps the OPT of the request.
    for key in ["nokey.example.test.", "xfr.example.test."] {
        let mut p = tsig_query(0x7777, &wire(O), &wire(key), &wire("hmac-sha256."));
        let tail = p.split_off(p.len() - tsig_len(&p));
        p[11] = 2;
        p.extend(opt(1232, 0, &[], 0));
        p.extend(tail);
        let m = Message::from_vec(&raw_udp(addr, &p).await.expect("a reply")).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NotAuth, "{key}");
        assert!(m.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok), "{key}: OPT with DO kept");
        assert!(m.signature.is_some(), "{key}: the TSIG error record");
    }

    // IXFR at the current serial (or newer): the SOA alone, over TCP and
    // UDP; from an older serial the whole zone (127.0.0.1 may transfer).
    let serial = d.serial();
    for s in [serial, serial.wrapping_add(5)] {
        let ixfr = format!("IXFR={s}");
        for transport in ["+tcp", "+notcp"] {
            let out = dig_async(addr, &[transport, O, &ixfr]).await;
            let lines = answer_lines(&out);
            assert_eq!(lines.len(), 1, "{ixfr} {transport}: {out}");
            assert!(lines[0].contains(&format!("SOA\tns1.{O} hostmaster.example.test. {serial} ")), "{out}");
        }
    }
    let out = dig_async(addr, &[O, &format!("IXFR={}", serial.wrapping_sub(1))]).await;
    let lines = answer_lines(&out);
    assert!(lines.len() > 5 && lines.iter().any(|l| l.contains(" SRV\t")), "full zone: {out}");
    assert!(lines.first().unwrap().contains("SOA") && lines.last().unwrap().contains("SOA"), "{out}");
    d.stop().await;
}

/// EDNS Client Subnet from the corpus: each malformed option (bad family,
/// prefix beyond the address, address bytes not what the prefix needs,
/// bits past the prefix, cut short, empty, twice) gets FORMERR (RFC 7871
/// §7.1.2) on every path; a well-formed one is echoed with its address.
/// Random ECS bytes never panic.
#[test]
fn ecs_options_malformed_get_formerr_and_well_formed_are_echoed() {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    use srvd::dns::{self, Transport};
    let snap = fuzzing::example_snapshot().unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/request");
    let read = |n: &str| std::fs::read(dir.join(n)).unwrap();
    for bad in [
        "ecs-bad-family",
        "ecs-prefix-33",
        "ecs-prefix-129",
        "ecs-addr-too-long",
        "ecs-addr-too-short",
        "ecs-host-bits",
        "ecs-empty",
        "ecs-twice",
    ] {
        for src in [None, Some(fuzzing::KEYED_SECONDARY), Some(fuzzing::DC1_CLIENT)] {
            for transport in [Transport::Udp, Transport::Tcp] {
                let a = dns::answer(&snap, &read(bad), transport, src).unwrap();
                let m = Message::from_vec(&a.bytes).unwrap();
                assert_eq!(m.metadata.response_code, ResponseCode::FormErr, "{bad} from {src:?} {transport:?}");
            }
        }
    }
    // From the trusted resolver, 127.0.1.0/24 is dc1's: dc1's master first, scope 24.
    let a = dns::answer(&snap, &read("ecs-v4-24"), Transport::Udp, Some(fuzzing::KEYED_SECONDARY)).unwrap();
    let m = Message::from_vec(&a.bytes).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let Some(EdnsOption::Subnet(s)) = m.edns.as_ref().and_then(|e| e.option(EdnsCode::Subnet)) else { panic!("ECS echoed: {m:?}") };
    assert_eq!((s.addr().to_string().as_str(), s.source_prefix(), s.scope_prefix()), ("127.0.1.0", 24, 24));
    assert!(srv(&m)[0].3.ends_with(".dc1.puppet.example.test"), "{:?}", srv(&m));
    // The same option from an untrusted source: ignored (scope 0), decided by the source.
    let a = dns::answer(&snap, &read("ecs-v4-24"), Transport::Udp, Some("127.0.0.9".parse().unwrap())).unwrap();
    let m = Message::from_vec(&a.bytes).unwrap();
    let Some(EdnsOption::Subnet(s)) = m.edns.as_ref().and_then(|e| e.option(EdnsCode::Subnet)) else { panic!("ECS echoed") };
    assert_eq!(s.scope_prefix(), 0);
    assert!(srv(&m).iter().all(|r| r.0 == 10), "the pool, every site at one priority: {:?}", srv(&m));
    // Random option bytes: answered or dropped, never a panic.
    let mut rng = StdRng::seed_from_u64(12);
    let base = read("ecs-v4-24");
    let opt_at = base.len() - 11 - 4 - 7;
    for _ in 0..3000 {
        let mut p = base[..opt_at + 9].to_vec();
        let n = rng.random_range(0..24usize);
        let opt: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        p.extend_from_slice(&((opt.len() + 4) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 8]);
        p.extend_from_slice(&(opt.len() as u16).to_be_bytes());
        p.extend_from_slice(&opt);
        fuzzing::fuzz_one(&snap, &p);
    }
}
