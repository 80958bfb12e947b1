//! Config, registry and zone file validation: every bad input is rejected
//! with the file, the key and the reason.

use srvd::input::error::InputError;
use std::path::{Path, PathBuf};
use std::process::Command;

use srvd::input::config::{Config, EXAMPLE_CONFIG, EXAMPLE_REGISTRY};
use srvd::input::registry::Registry;
use srvd::zone::publish::Inputs;

fn parse(text: &str) -> Result<Config, InputError> {
    Config::parse(text, Path::new("/etc/srvd/srvd.toml"), Path::new("/etc/srvd"))
}

fn example() -> Config {
    parse(EXAMPLE_CONFIG).unwrap()
}

fn reg(text: &str) -> Result<Registry, InputError> {
    Registry::parse(text, Path::new("/var/lib/srvd/masters.toml"), &example())
}

#[track_caller]
fn assert_err(r: Result<impl std::fmt::Debug, InputError>, file: &str, key: &str, reason: &str) {
    let e = r.expect_err("must be rejected");
    assert_eq!(e.file, file, "{e}");
    assert!(e.key.starts_with(key), "key {:?} should start with {key:?}: {e}", e.key);
    assert!(e.reason.contains(reason), "reason {:?} should contain {reason:?}", e.reason);
}

/// Every table of every example file, with one unknown key added, is rejected
/// and the error names that table and key.
#[test]
fn junk_key_in_every_table_of_every_example_is_rejected() {
    let examples: Vec<(PathBuf, &str, bool)> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/zones"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            let text: &'static str = Box::leak(std::fs::read_to_string(&p).unwrap().into_boxed_str());
            let is_registry = text.contains("[[master]]");
            (p, text, is_registry)
        })
        .collect();
    assert!(examples.len() >= 2, "example configs and registries are found");
    let mut checked = 0;
    for (path, text, is_registry) in examples {
        let doc: toml_edit::DocumentMut = text.parse().unwrap();
        // Collect table paths: plain tables and each entry of arrays of tables.
        let mut tables: Vec<(String, Option<usize>)> = Vec::new();
        for (k, item) in doc.iter() {
            if item.is_table() {
                tables.push((k.to_string(), None));
            } else if let Some(a) = item.as_array_of_tables() {
                for i in 0..a.len() {
                    tables.push((k.to_string(), Some(i)));
                }
            }
        }
        assert!(!tables.is_empty());
        for (name, idx) in tables {
            let mut d = doc.clone();
            let t = match idx {
                None => d[&name].as_table_mut().unwrap(),
                Some(i) => d[&name].as_array_of_tables_mut().unwrap().get_mut(i).unwrap(),
            };
            t.insert("junk_key", toml_edit::value(1));
            let text = d.to_string();
            let err = if is_registry {
                Registry::parse(&text, &path, &example()).map(|_| ()).unwrap_err()
            } else {
                Config::parse(&text, &path, Path::new("/tmp")).map(|_| ()).unwrap_err()
            };
            let want_key = match idx {
                None => format!("{name}.junk_key"),
                Some(i) => format!("{name}[{i}].junk_key"),
            };
            assert!(err.key.starts_with(&want_key), "{}: {err}", path.display());
            assert!(err.reason.contains("unknown field `junk_key`"), "{err}");
            assert_eq!(err.file, path.display().to_string());
            checked += 1;
        }
    }
    assert!(checked >= 10, "checked {checked} tables");
}

#[test]
fn examples_are_valid() {
    let c = example();
    assert_eq!(c.zone.origin.to_string(), "puppet.example.test.");
    assert_eq!(c.server.listen[0].to_string(), "127.0.0.1:5353");
    let r = reg(EXAMPLE_REGISTRY).unwrap();
    assert!(r.masters.len() >= 5);
}

#[test]
fn config_rejections_name_key_and_reason() {
    let f = "/etc/srvd/srvd.toml";
    let base = "[zone]\norigin = \"p.example.com.\"\n";
    let site = "[[site]]\nname = \"dc1\"\n";
    assert_err(parse(site), f, "zone", "missing field `zone`");
    assert_err(parse(base), f, "site", "at least one [[site]]");
    assert_err(parse(&format!("{base}[[site]]\nname = \"dc1\"\nfailover = [\"dc9\"]\n")), f, "site[0].failover[0]", "unknown site \"dc9\"");
    assert_err(parse(&format!("{base}{site}{site}")), f, "site[1].name", "duplicate site");
    assert_err(parse(&format!("{base}[[site]]\nname = \"dc_1\"\n")), f, "site[0].name", "letters, digits");
    assert_err(parse(&format!("{base}[[site]]\nname = \"dc1\"\nfailover = [\"dc1\"]\n")), f, "site[0].failover[0]", "itself");
    assert_err(parse(&format!("[zone]\norigin = \"bad..name\"\n{site}")), f, "zone.origin", "empty label");
    assert_err(parse(&format!("{base}[server]\nlisten = [\"localhost\"]\n{site}")), f, "server.listen[0]", "addr:port");
    assert_err(parse(&format!("{base}[health]\ninterval = \"2 weeks\"\n{site}")), f, "health.interval", "unknown unit");
    assert_err(parse(&format!("{base}[health]\ntimeout = \"0s\"\n{site}")), f, "health.timeout", "more than zero");
    assert_err(parse(&format!("{base}[health]\nfall = 0\n{site}")), f, "health.fall", "1..=100");
    assert_err(parse(&format!("{base}[health]\nca_file = \"/nonexistent/ca.pem\"\n{site}")), f, "health.ca_file", "cannot read");
    assert_err(parse(&format!("{base}[health]\ncert_file = \"/etc/hostname\"\n{site}")), f, "health.key_file", "together");
    assert_err(parse(&format!("{base}[policy]\nall_down = \"panic\"\n{site}")), f, "policy.all_down", "serve-all");
    assert_err(parse(&format!("{base}[policy]\nweights = \"load\"\n{site}")), f, "policy.weights", "\"static\" or \"capacity\"");
    assert_err(parse(&format!("{base}[policy]\nweights_period = \"500ms\"\n{site}")), f, "policy.weights_period", "at least 1s");
    assert_err(parse(&format!("{base}[policy]\nweights_period = \"soon\"\n{site}")), f, "policy.weights_period", "");
    assert_err(
        parse(&format!("{base}[policy]\npriority_step = 40000\n{site}{}{}", site.replace("dc1", "dc2"), site.replace("dc1", "dc3"))),
        f,
        "policy.priority_step",
        "exceeds 65535",
    );
    assert_err(parse(&format!("{base}[policy]\nlocal_priority = -1\n{site}")), f, "policy.local_priority", "");
    assert_err(parse(&format!("{base}[zone.extra]\n{site}")), f, "zone", "unknown field `extra`");
    assert_err(parse(&format!("[zone]\norigin = \"p.example.com.\"\nttl = 100000\n{site}")), f, "zone.ttl", "more than a day");
    let key = "[[tsig_key]]\nname = \"xfr.example.com\"\nsecret = \"yRPr8kRpp4nhc/MCU0Pk0WT4v15pZCrzppCBDmERLoY=\"\n";
    assert!(parse(&format!("{base}{site}{key}[[secondary]]\naddress = \"192.0.2.1\"\nkey = \"xfr.example.com\"\n")).is_ok());
    assert_err(
        parse(&format!("{base}{site}{}", key.replace("hmac", "x").replace("secret =", "algorithm = \"hmac-md5\"\nsecret ="))),
        f,
        "tsig_key[0].algorithm",
        "not one of hmac-sha256",
    );
    assert_err(parse(&format!("{base}{site}{}", key.replace("yRPr", "!!!!"))), f, "tsig_key[0].secret", "not base64");
    assert_err(
        parse(&format!("{base}{site}{}", key.replace("yRPr8kRpp4nhc/MCU0Pk0WT4v15pZCrzppCBDmERLoY=", "c2hvcnQ="))),
        f,
        "tsig_key[0].secret",
        "too short",
    );
    assert_err(parse(&format!("{base}{site}{key}{key}")), f, "tsig_key[1].name", "duplicate key");
    assert_err(parse(&format!("{base}{site}{}", key.replace("xfr.example.com", "bad..name"))), f, "tsig_key[0].name", "empty label");
    assert_err(
        parse(&format!("{base}{site}{key}[[secondary]]\naddress = \"ns2.example.com\"\n")),
        f,
        "secondary[0].address",
        "is not \"ip\" or \"ip:port\"",
    );
    assert_err(
        parse(&format!("{base}{site}{key}[[secondary]]\naddress = \"192.0.2.1\"\nkey = \"other.example.com\"\n")),
        f,
        "secondary[0].key",
        "unknown tsig_key",
    );
    assert_err(
        parse(&format!("{base}{site}[[secondary]]\naddress = \"192.0.2.1\"\n[[secondary]]\naddress = \"192.0.2.1:53\"\n")),
        f,
        "secondary[1].address",
        "listed twice",
    );
    assert_err(parse(&format!("{base}{site}[[secondary]]\naddress = \"192.0.2.1\"\nnotify = \"yes\"\n")), f, "secondary[0].notify", "");
}

#[test]
fn registry_rejections_name_key_and_reason() {
    let f = "/var/lib/srvd/masters.toml";
    let m = |body: &str| format!("[[master]]\n{body}\n");
    assert_err(reg(&m("host = \"pm1.example.com\"\nsite = \"dc9\"")), f, "master[0].site", "unknown site \"dc9\"");
    assert_err(reg(&m("host = \"pm1.example.com\"")), f, "master[0]", "missing field `site`");
    let dup = format!("{}{}", m("host = \"pm1.example.com\"\nsite = \"dc1\""), m("host = \"PM1.example.com.\"\nsite = \"dc2\""));
    assert_err(reg(&dup), f, "master[1].host", "duplicate master pm1.example.com:8140");
    // Same host on another port is a different master.
    let two_ports =
        format!("{}{}", m("host = \"pm1.example.com\"\nsite = \"dc1\""), m("host = \"pm1.example.com\"\nsite = \"dc1\"\nport = 8141"));
    assert_eq!(reg(&two_ports).unwrap().masters.len(), 2);
    assert_err(reg(&m("host = \"pm9.dc1.puppet.example.test\"\nsite = \"dc1\"")), f, "master[0].addresses", "inside the zone");
    assert_err(
        reg(&m("host = \"pm1.example.com\"\nsite = \"dc1\"\naddresses = [\"10.0.0.300\"]")),
        f,
        "master[0].addresses",
        "not an IP address",
    );
    assert_err(reg(&m("host = \"pm 1.example.com\"\nsite = \"dc1\"")), f, "master[0].host", "letters, digits");
    assert_err(reg(&m("host = \"pm1.example.com\"\nsite = \"dc1\"\nport = 70000")), f, "master[0].port", "1..=65535");
    assert_err(reg(&m("host = \"pm1.example.com\"\nsite = \"dc1\"\nweight = -1")), f, "master[0].weight", "0..=65535");
    assert_err(
        reg(&m("host = \"pm1.example.com\"\nsite = \"dc1\"\nroles = [\"compiler\"]")),
        f,
        "master[0].roles",
        "unknown role \"compiler\"",
    );
    assert_err(reg(&m("host = \"pm1.example.com\"\nsite = \"dc1\"\nroles = []")), f, "master[0].roles", "at least one role");
    assert_err(reg(&m("host = \"pm1.example.com\"\nsite = \"dc1\"\ncheck = \"ping\"")), f, "master[0].check", "unknown check");
    assert_err(reg(&m("host = \"dc1.puppet.example.test\"\nsite = \"dc1\"\naddresses = [\"127.0.0.9\"]")), f, "master[0].host", "site dc1");
}

/// Writes a config + registry + zone file into a temp dir.
fn write_setup(zone: &str, registry: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = "[zone]\norigin = \"puppet.example.test.\"\nfile = \"z.zone\"\nnameservers = [\"ns1\"]\n\
         [server]\nstate_dir = \"state\"\nregistry = \"m.toml\"\ncontrol_socket = \"c.sock\"\n\
         [[site]]\nname = \"dc1\"\n"
        .to_string();
    std::fs::write(dir.path().join("srvd.toml"), cfg).unwrap();
    std::fs::write(dir.path().join("z.zone"), zone).unwrap();
    std::fs::write(dir.path().join("m.toml"), registry).unwrap();
    let p = dir.path().join("srvd.toml");
    (dir, p)
}

fn load(zone: &str, registry: &str) -> Result<Inputs, InputError> {
    let (_d, p) = write_setup(zone, registry);
    Inputs::load(Config::load(&p)?)
}

#[test]
fn zone_file_errors_name_the_line() {
    let ok =
        "; static\n$TTL 60\nns1 IN A 127.0.0.1\n@ IN TXT \"hello; not a comment\"\nmulti IN TXT ( \"a\"\n  \"b\" )\n     IN A 127.0.0.2\n";
    let i = load(ok, "").unwrap();
    assert_eq!(i.statics.len(), 4);
    assert_eq!(i.statics.iter().map(|s| s.line).collect::<Vec<_>>(), vec![3, 4, 5, 7]);
    assert_eq!(i.statics[3].record.name.to_string(), "multi.puppet.example.test.");

    let cases = [
        ("ns1 IN A 127.0.0.1\n@ IN SOA ns1 h 1 2 3 4 5\n", ("zone.file", 2), "SOA comes from [zone]"),
        ("\n\n@ IN NS ns2.example.com.\n", ("zone.file", 3), "apex NS"),
        ("_x-puppet._tcp.dc1 IN SRV 0 0 8140 x.example.com.\n", ("zone.file", 1), "name srvd publishes"),
        ("_x-puppet-ca._tcp IN TXT \"x\"\n", ("zone.file", 1), "name srvd publishes"),
        ("ns1 IN A 127.0.0.1\nbad IN A not-an-ip\n", ("zone.file", 2), ""),
        ("www.example.com. IN A 127.0.0.1\n", ("zone.file", 1), "outside the zone"),
        ("$INCLUDE other.zone\n", ("zone.file", 1), "not supported"),
    ];
    for (zone, (key, line), reason) in cases {
        let e = load(zone, "").map(|_| ()).unwrap_err();
        assert!(e.file.ends_with("z.zone"), "{e}");
        assert_eq!((e.key.as_str(), e.line), (key, Some(line)), "{zone:?}: {e}");
        assert!(e.to_string().contains(&format!("zone.file (line {line}): ")), "{e}");
        assert!(e.reason.contains(reason), "{zone:?}: {e}");
    }
}

#[test]
fn in_zone_master_also_in_zone_file_is_rejected() {
    let e = load("pm1 IN A 127.0.0.5\n", "[[master]]\nhost = \"pm1.puppet.example.test\"\nsite = \"dc1\"\naddresses = [\"127.0.0.5\"]\n")
        .map(|_| ())
        .unwrap_err();
    assert!(e.file.ends_with("m.toml"), "{e}");
    assert_eq!(e.key, "master[0].host");
    assert!(e.reason.contains("zone file (line 1)"), "{e}");
}

#[test]
fn check_config_exit_codes_and_one_line_errors() {
    let bin = env!("CARGO_BIN_EXE_srvd");
    let (dir, p) = write_setup("ns1 IN A 127.0.0.1\n", "[[master]]\nhost = \"pm1.example.com\"\nsite = \"dc1\"\n");
    let out = Command::new(bin).arg("--config").arg(&p).arg("--check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    std::fs::write(dir.path().join("m.toml"), "[[master]]\nhost = \"pm1.example.com\"\nsite = \"dc7\"\n").unwrap();
    let out = Command::new(bin).arg("--config").arg(&p).arg("--check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("m.toml: master[0].site: unknown site \"dc7\""), "{err}");

    // Refuses to start (not just --check-config) on the same error.
    let out = Command::new(bin).arg("--config").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown site \"dc7\""));

    let out = Command::new(bin).args(["--config", "/nonexistent/srvd.toml", "--check-config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/srvd.toml: -: cannot read"));
}

#[test]
fn in_zone_nameserver_without_glue_is_reported() {
    let with_glue = load("ns1 IN A 127.0.0.1\n", "").unwrap();
    assert!(srvd::zone::publish::lame_nameservers(&with_glue.config, &with_glue.statics, &with_glue.registry).is_empty());
    let without = load("www IN A 127.0.0.1\n", "").unwrap();
    let lame = srvd::zone::publish::lame_nameservers(&without.config, &without.statics, &without.registry);
    assert_eq!(lame.iter().map(|n| n.to_string()).collect::<Vec<_>>(), vec!["ns1.puppet.example.test."]);
}

/// `[[site]] networks`, `[server] ecs_trusted`, `[policy] client_site_default`
/// and the secondaries rule (docs/configuration.md, "Sites by client network").
#[test]
fn client_network_keys_are_checked() {
    let f = "/etc/srvd/srvd.toml";
    let base = "[zone]\norigin = \"p.example.com.\"\n";
    let s1 = "[[site]]\nname = \"dc1\"\nnetworks = [\"10.1.0.0/16\", \"2001:db8:1::/48\"]\n";
    let s2 = "[[site]]\nname = \"dc2\"\nnetworks = [\"10.2.0.0/16\", \"10.1.5.0/24\"]\n";
    let c =
        parse(&format!("{base}[server]\necs_trusted = [\"127.0.0.1/32\", \"::1/128\"]\n[policy]\nclient_site_default = \"DC2\"\n{s1}{s2}"))
            .unwrap();
    assert_eq!(c.sites[0].networks.iter().map(|n| n.to_string()).collect::<Vec<_>>(), ["10.1.0.0/16", "2001:db8:1::/48"]);
    assert_eq!(c.server.ecs_trusted.len(), 2);
    assert_eq!(c.policy.client_site_default.as_deref(), Some("dc2"));
    assert!(c.warnings().is_empty());

    let one = |nets: &str| format!("{base}[[site]]\nname = \"dc1\"\nnetworks = [{nets}]\n");
    assert_err(parse(&one("\"10.1.2.3/16\"")), f, "site[0].networks[0]", "host bits set past /16 (did you mean 10.1.0.0/16?)");
    assert_err(parse(&one("\"10.1.0.0/33\"")), f, "site[0].networks[0]", "prefix length \"33\" is not a number from 0 to 32");
    assert_err(parse(&one("\"2001:db8::/129\"")), f, "site[0].networks[0]", "0 to 128");
    assert_err(parse(&one("\"10.1.0.0\"")), f, "site[0].networks[0]", "is not \"address/prefix-length\"");
    assert_err(parse(&one("\"dc1.example.com/8\"")), f, "site[0].networks[0]", "not an IPv4 or IPv6 address");
    assert_err(parse(&one("\"10.1.0.0/16\", \"10.1.0.0/16\"")), f, "site[0].networks[1]", "listed twice");
    // The same prefix in two sites: both named.
    assert_err(
        parse(&format!("{base}{s1}[[site]]\nname = \"dc2\"\nnetworks = [\"10.3.0.0/16\", \"2001:db8:1::/48\"]\n")),
        f,
        "site[1].networks[1]",
        "2001:db8:1::/48 is claimed by both site \"dc1\" and site \"dc2\"",
    );
    assert_err(parse(&format!("{base}[server]\necs_trusted = [\"127.0.0.1/8\"]\n{s1}")), f, "server.ecs_trusted[0]", "host bits");
    assert_err(parse(&format!("{base}[policy]\nclient_site_default = \"dc9\"\n{s1}")), f, "policy.client_site_default", "unknown site");
    assert_err(
        parse(&format!("{base}[policy]\nclient_site_default = \"dc1\"\n[[site]]\nname = \"dc1\"\n")),
        f,
        "policy.client_site_default",
        "needs [[site]] networks",
    );
    // Secondaries answer without networks: refused unless acknowledged, then a warning.
    let sec = "[[secondary]]\naddress = \"192.0.2.1\"\n";
    assert_err(parse(&format!("{base}{s1}{sec}")), f, "site[0].networks", "allow_secondaries_with_networks");
    let c = parse(&format!("{base}[server]\nallow_secondaries_with_networks = true\n{s1}{sec}")).unwrap();
    let w = c.warnings();
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("secondaries answer the site-less names with the site-less pool"), "{w:?}");
}
