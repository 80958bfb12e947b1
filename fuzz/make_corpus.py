#!/usr/bin/env python3
"""Writes the seed corpus of the `request` fuzz target (fuzz/corpus/request/):
ordinary queries of each type, EDNS, TSIG (signed with the example key, so
they age into BADTIME; unknown keys; the reported long-name crash), AXFR/IXFR,
and malformed packets. Run from fuzz/: ./make_corpus.py"""
import base64, hashlib, hmac, os, struct

OUT = "corpus/request"
ORIGIN = "puppet.example.test."
KEY = ("xfr.example.test.", "hmac-sha256.", base64.b64decode("yRPr8kRpp4nhc/MCU0Pk0WT4v15pZCrzppCBDmERLoY="))
T = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33, "OPT": 41,
     "IXFR": 251, "AXFR": 252, "ANY": 255, "CAA": 257, "TSIG": 250}


def name(s):
    if isinstance(s, bytes):  # already wire format
        return s
    out = b""
    for label in s.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def header(id_=0x1234, flags=0, qd=1, an=0, ns=0, ar=0):
    return struct.pack(">HHHHHH", id_, flags, qd, an, ns, ar)


def question(qname, qtype, qclass=1):
    return name(qname) + struct.pack(">HH", T.get(qtype, qtype) if isinstance(qtype, str) else qtype, qclass)


def opt(size=1232, do=False, version=0, options=b""):
    return b"\0" + struct.pack(">HHBBHH", 41, size, 0, version, 0x8000 if do else 0, len(options)) + options


def soa_rr(serial):
    rdata = name("ns1." + ORIGIN) + name("hostmaster.example.test.") + struct.pack(">IIIII", serial, 300, 60, 1209600, 30)
    return name(ORIGIN) + struct.pack(">HHIH", 6, 1, 30, len(rdata)) + rdata


def tsig(msg, key=KEY, when=None, mac=None):
    """Appends a TSIG RR (RFC 8945) to msg (ARCOUNT bumped)."""
    kname, alg, secret = key
    when = 1767225600 if when is None else when  # 2026-01-01, fixed
    t48 = struct.pack(">HI", when >> 32, when & 0xffffffff)
    variables = name(kname.lower() if isinstance(kname, str) else kname) + struct.pack(">HI", 255, 0) + name(alg.lower() if isinstance(alg, str) else alg) + t48 + struct.pack(">HHH", 300, 0, 0)
    if mac is None:
        mac = hmac.new(secret, msg + variables, hashlib.sha256).digest()
    oid = msg[:2]
    rdata = name(alg) + t48 + struct.pack(">HH", 300, len(mac)) + mac + oid + struct.pack(">HH", 0, 0)
    rr = name(kname) + struct.pack(">HHIH", 250, 255, 0, len(rdata)) + rdata
    ar = struct.unpack(">H", msg[10:12])[0] + 1
    return msg[:10] + struct.pack(">H", ar) + msg[12:] + rr


def long_name(length, fill):
    out, left = b"", length - 1
    while left > 1:
        l = min(left - 1, 63)
        out += bytes([l]) + fill * l
        left -= l + 1
    return out + b"\0"


seeds = {}
names = ["_x-puppet._tcp.dc1", "_x-puppet._tcp.dc2", "_x-puppet-ca._tcp.dc3", "_x-puppet._tcp", "pm1.dc1", "ns1", "", "nope", "dc1"]
for i, (n, t) in enumerate([(n, t) for n in names for t in ["SRV", "A", "AAAA", "SOA", "NS", "TXT", "ANY"]]):
    if i % 3 == 0 or t in ("SRV", "ANY"):
        seeds[f"q-{n or 'apex'}-{t}"] = header(ar=0) + question(f"{n}.{ORIGIN}" if n else ORIGIN, t)
seeds["q-outside"] = header() + question("www.example.com.", "A")
seeds["q-chaos"] = header() + question("version.bind.", 16, 3)
seeds["q-mixed-case-rd"] = header(flags=0x0100) + question("_X-Puppet._TCP.Dc2." + ORIGIN, "SRV")
seeds["edns-512"] = header(ar=1) + question("_x-puppet._tcp.dc2." + ORIGIN, "SRV") + opt(512)
seeds["edns-4096-do"] = header(ar=1) + question("_x-puppet._tcp.dc1." + ORIGIN, "SRV") + opt(4096, do=True)
seeds["edns-v1"] = header(ar=1) + question(ORIGIN, "SOA") + opt(version=1)
seeds["edns-cookie"] = header(ar=1) + question(ORIGIN, "SOA") + opt(options=struct.pack(">HH", 10, 8) + b"\1" * 8)
seeds["edns-bad-option-len"] = header(ar=1) + question(ORIGIN, "SOA") + opt(options=struct.pack(">HH", 10, 200) + b"\1" * 8)
def ecs(family, source, addr, scope=0, length=None):
    data = struct.pack(">HBB", family, source, scope) + addr
    return struct.pack(">HH", 8, len(data) if length is None else length) + data


# EDNS Client Subnet (RFC 7871): well-formed ones for the site-less names,
# and each malformation that must get FORMERR (never a panic).
POOL = "_x-puppet._tcp." + ORIGIN
seeds["ecs-v4-24"] = header(ar=1) + question(POOL, "SRV") + opt(options=ecs(1, 24, bytes([127, 0, 1])))
seeds["ecs-v6-48"] = header(ar=1) + question("_x-puppet-ca._tcp." + ORIGIN, "SRV") + opt(options=ecs(2, 48, bytes.fromhex("20010db80001")))
seeds["ecs-source-0"] = header(ar=1) + question(POOL, "SRV") + opt(options=ecs(1, 0, b""))
seeds["ecs-bad-family"] = header(ar=1) + question(POOL, "SRV") + opt(options=ecs(3, 24, bytes([10, 1, 2])))
seeds["ecs-prefix-33"] = header(ar=1) + question(POOL, "SRV") + opt(options=ecs(1, 33, bytes([10, 1, 2, 3, 4])))
seeds["ecs-prefix-129"] = header(ar=1) + question(POOL, "SRV") + opt(options=ecs(2, 129, bytes(17)))
seeds["ecs-addr-too-long"] = header(ar=1) + question(POOL, "SRV") + opt(options=ecs(1, 16, bytes([10, 1, 0, 0])))
seeds["ecs-addr-too-short"] = header(ar=1) + question(POOL, "SRV") + opt(options=ecs(1, 24, bytes([10, 1])))
seeds["ecs-host-bits"] = header(ar=1) + question(POOL, "SRV") + opt(options=ecs(1, 22, bytes([10, 1, 7])))
seeds["ecs-truncated"] = header(ar=1) + question(POOL, "SRV") + opt(options=ecs(1, 24, bytes([10, 1, 7]), length=40))
seeds["ecs-empty"] = header(ar=1) + question(POOL, "SRV") + opt(options=struct.pack(">HH", 8, 0))
seeds["ecs-twice"] = header(ar=1) + question(POOL, "SRV") + opt(options=ecs(1, 24, bytes([10, 1, 7])) * 2)
seeds["ecs-and-cookie"] = header(ar=1) + question(POOL, "TXT") + opt(options=ecs(1, 24, bytes([10, 1, 7])) + struct.pack(">HH", 10, 8) + b"\1" * 8)
seeds["edns-two-opts"] = header(ar=2) + question(ORIGIN, "SOA") + opt() + opt(do=True)
seeds["edns-any"] = header(ar=1) + question(ORIGIN, "ANY") + opt(4096)
seeds["axfr"] = header() + question(ORIGIN, "AXFR")
seeds["axfr-tsig"] = tsig(header() + question(ORIGIN, "AXFR"))
seeds["ixfr-current"] = header(ns=1) + question(ORIGIN, "IXFR") + soa_rr(0xFFFFFFF0)
seeds["ixfr-old"] = header(ns=1) + question(ORIGIN, "IXFR") + soa_rr(1)
seeds["ixfr-tsig"] = tsig(header(ns=1) + question(ORIGIN, "IXFR") + soa_rr(1))
seeds["soa-tsig"] = tsig(header() + question(ORIGIN, "SOA"))
seeds["soa-tsig-edns"] = tsig(header(ar=1) + question(ORIGIN, "SOA") + opt(do=True))
seeds["tsig-badsig"] = tsig(header() + question(ORIGIN, "SOA"), mac=b"\0" * 32)
seeds["tsig-unknown-key"] = tsig(header() + question(ORIGIN, "SOA"), key=("nokey.", "hmac-sha256.", b"x" * 32))
seeds["tsig-unknown-alg"] = tsig(header() + question(ORIGIN, "SOA"), key=("xfr.example.test.", "hmac-foo.", b"x" * 32), mac=b"")
seeds["tsig-not-last"] = (lambda m: m[:10] + struct.pack(">H", 2) + m[12:] + opt())(tsig(header() + question(ORIGIN, "SOA")))
# The reported crash: long question, key and algorithm names (BADKEY path).
for q, k in [(255, 100), (255, 255), (100, 255)]:
    seeds[f"crash-tsig-long-names-{q}-{k}"] = tsig(header() + long_name(q, b"q") + struct.pack(">HH", 33, 1),
                                                   key=(long_name(k, b"k"), long_name(k, b"a"), b""), mac=b"")
seeds["notify"] = header(flags=0x2400) + question(ORIGIN, "SOA")
seeds["update"] = header(flags=0x2800) + question(ORIGIN, "SOA")
seeds["opcode-15"] = header(flags=0x7800) + question(ORIGIN, "SOA")
seeds["qr-set"] = header(flags=0x8000) + question(ORIGIN, "SOA")
seeds["qdcount-0"] = header(qd=0)
seeds["qdcount-2"] = header(qd=2) + question(ORIGIN, "SOA") + question(ORIGIN, "NS")
seeds["qdcount-65535"] = header(qd=65535) + question(ORIGIN, "SOA")
seeds["ancount-no-data"] = header(an=5) + question(ORIGIN, "SOA")
seeds["short-header"] = header()[:7]
seeds["pointer-loop"] = header() + b"\xc0\x0c" + struct.pack(">HH", 1, 1)
seeds["pointer-pair"] = header() + b"\x01a\xc0\x12\x01b\xc0\x0c" + struct.pack(">HH", 1, 1)
seeds["label-64"] = header() + b"\x40" + b"x" * 64 + b"\0" + struct.pack(">HH", 1, 1)

# Fixed times keep the corpus stable: signed seeds are signed at a fixed
# instant (they exercise BADTIME after it, the MAC check before).
for k, v in seeds.items():
    with open(os.path.join(OUT, k), "wb") as f:
        f.write(v)
print(len(seeds), "seeds,", sum(map(len, seeds.values())), "bytes")
