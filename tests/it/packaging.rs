//! Packaging with the real tools: the systemd unit passes
//! `systemd-analyze verify`, the example config validates and agrees with
//! the unit's writable paths, `make install` honours PREFIX and DESTDIR, and
//! `make deb` (cargo-deb, reusing the debug binaries) builds a package whose
//! contents, conffiles and maintainer scripts are checked with dpkg-deb and
//! lintian. srvctl's completions and man pages come from its clap definitions.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SRVD: &str = env!("CARGO_BIN_EXE_srvd");
const SRVCTL: &str = env!("CARGO_BIN_EXE_srvctl");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `make` from the repository, without the jobserver of an outer make.
fn make(args: &[&str]) -> Output {
    run(Command::new("make").current_dir(root()).arg("-s").args(args).env_remove("MAKEFLAGS").env_remove("MFLAGS").env_remove("MAKELEVEL"))
}

/// Man pages as `man` finds them: DIR/man1, DIR/man8.
fn man_tree(dir: &Path) -> PathBuf {
    let gen_dir = dir.join("gen");
    run(Command::new(SRVCTL).arg("generate").arg("man").arg(&gen_dir));
    let tree = dir.join("man");
    for section in ["1", "8"] {
        let d = tree.join(format!("man{section}"));
        std::fs::create_dir_all(&d).unwrap();
        for e in std::fs::read_dir(&gen_dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == section) {
                std::fs::copy(&p, d.join(p.file_name().unwrap())).unwrap();
            }
        }
    }
    tree
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(root().join("packaging/srvd.service")).unwrap();
    for want in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=srvd",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "StateDirectory=srvd",
        "RuntimeDirectory=srvd",
        "ProtectSystem=strict",
        "ExecStartPre=/usr/bin/srvd --config /etc/srvd/srvd.toml --check-config",
    ] {
        assert!(unit.lines().any(|l| l == want), "unit lacks {want}");
    }
    // verify needs the binaries it names and the man pages of Documentation=.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("srvd.service");
    std::fs::write(&path, unit.replace("/usr/bin/srvd", SRVD)).unwrap();
    let man = man_tree(dir.path());
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&path).env("MANPATH", &man).env("SYSTEMD_LOG_COLOR", "0"));
    let said = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(said.trim().is_empty(), "systemd-analyze verify complained:\n{said}");
    // A broken unit does fail: the test would notice.
    std::fs::write(&path, unit.replace("/usr/bin/srvd", "/nonexistent/srvd")).unwrap();
    let bad = Command::new("systemd-analyze").arg("verify").arg(&path).env("MANPATH", &man).output().unwrap();
    assert!(!bad.status.success(), "verify accepted a missing ExecStart binary");
}

#[test]
fn the_example_config_validates_and_writes_only_where_the_unit_allows() {
    let cfg = root().join("packaging/srvd.toml");
    run(Command::new(SRVD).arg("--config").arg(&cfg).arg("--check-config"));
    // ProtectSystem=strict: srvd may write only StateDirectory and RuntimeDirectory.
    let c = srvd::input::config::Config::load(&cfg).unwrap();
    assert_eq!(c.server.state_dir, Path::new("/var/lib/srvd"));
    assert!(c.server.registry.starts_with("/var/lib/srvd/"), "{:?}", c.server.registry);
    assert!(c.server.control_socket.starts_with("/run/srvd/"), "{:?}", c.server.control_socket);
}

#[test]
fn completions_and_man_pages_come_from_the_clap_definitions() {
    let bash = stdout(&run(Command::new(SRVCTL).args(["generate", "completions", "bash"])));
    assert!(bash.contains("add-master") && bash.contains("complete -F"), "{bash}");
    for shell in ["zsh", "fish"] {
        let s = stdout(&run(Command::new(SRVCTL).args(["generate", "completions", shell])));
        assert!(s.contains("add-master") && s.contains("socket"), "{shell}: {s}");
    }
    let dir = tempfile::tempdir().unwrap();
    let man = man_tree(dir.path());
    // man renders it: the page exists and documents --socket.
    let out = run(Command::new("man").arg("-P").arg("cat").arg("srvctl").env("MANPATH", &man).env("MANWIDTH", "100"));
    let page = stdout(&out);
    assert!(page.contains("--socket") && page.contains("/run/srvd/control.sock") && page.contains("add-master"), "{page}");
    let srvd = stdout(&run(Command::new("man").args(["-P", "cat", "8", "srvd"]).env("MANPATH", &man)));
    assert!(srvd.contains("--log-format"), "{srvd}");
}

#[test]
fn make_install_honours_prefix_and_destdir_and_keeps_an_edited_config() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("root");
    let assets = dir.path().join("assets");
    let install = |extra: &[&str]| {
        let d = format!("DESTDIR={}", dest.display());
        let a = format!("ASSETS={}", assets.display());
        let mut args = vec!["install", "NO_BUILD=1", "PROFILE=debug", "PREFIX=/opt/srvd", d.as_str(), a.as_str()];
        args.extend_from_slice(extra);
        make(&args)
    };
    install(&[]);
    let p = |rel: &str| dest.join(rel.trim_start_matches('/'));
    for f in [
        "/opt/srvd/bin/srvd",
        "/opt/srvd/bin/srvctl",
        "/opt/srvd/lib/systemd/system/srvd.service",
        "/opt/srvd/share/man/man1/srvctl.1",
        "/opt/srvd/share/man/man1/srvctl-add-master.1",
        "/opt/srvd/share/man/man8/srvd.8",
        "/opt/srvd/share/bash-completion/completions/srvctl",
        "/opt/srvd/share/zsh/site-functions/_srvctl",
        "/opt/srvd/share/fish/vendor_completions.d/srvctl.fish",
        "/etc/srvd/srvd.toml",
    ] {
        assert!(p(f).is_file(), "{f} not installed");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(p("/opt/srvd/bin/srvd")).unwrap().permissions().mode() & 0o777, 0o755);
    let unit = std::fs::read_to_string(p("/opt/srvd/lib/systemd/system/srvd.service")).unwrap();
    assert!(unit.contains("ExecStart=/opt/srvd/bin/srvd --config /etc/srvd/srvd.toml\n"), "{unit}");
    assert!(!unit.contains("/usr/bin/srvd"), "{unit}");
    // Installed srvd runs.
    run(Command::new(p("/opt/srvd/bin/srvd")).arg("--config").arg(root().join("packaging/srvd.toml")).arg("--check-config"));
    // A second install keeps the operator's config.
    std::fs::write(p("/etc/srvd/srvd.toml"), "# edited\n").unwrap();
    install(&[]);
    assert_eq!(std::fs::read_to_string(p("/etc/srvd/srvd.toml")).unwrap(), "# edited\n");
}

#[test]
fn make_deb_builds_a_package_that_installs_everything_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("deb");
    make(&["deb", "NO_BUILD=1", "PROFILE=debug", &format!("DEB_OUT={}", out_dir.display())]);
    let debs: Vec<PathBuf> =
        std::fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "deb")).collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let deb = &debs[0];

    let listing = stdout(&run(Command::new("dpkg-deb").arg("-c").arg(deb)));
    let files: Vec<&str> = listing.lines().filter_map(|l| l.split_whitespace().nth(5)).collect();
    for want in [
        "./usr/bin/srvd",
        "./usr/bin/srvctl",
        "./lib/systemd/system/srvd.service",
        "./etc/srvd/srvd.toml",
        "./usr/share/man/man1/srvctl.1.gz",
        "./usr/share/man/man1/srvctl-add-master.1.gz",
        "./usr/share/man/man8/srvd.8.gz",
        "./usr/share/bash-completion/completions/srvctl",
        "./usr/share/zsh/vendor-completions/_srvctl",
        "./usr/share/fish/vendor_completions.d/srvctl.fish",
        "./usr/share/doc/srvd/copyright",
        "./usr/share/doc/srvd/docs/operations.md",
    ] {
        assert!(files.contains(&want), "{want} not in the package:\n{listing}");
    }
    assert!(!files.iter().any(|f| f.starts_with("./etc/systemd")), "the unit is enabled in the package:\n{listing}");
    let exec = listing.lines().find(|l| l.ends_with("./usr/bin/srvd")).unwrap();
    assert!(exec.starts_with("-rwxr-xr-x 0/0"), "{exec}");

    let ctl = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&ctl));
    let read = |name: &str| std::fs::read_to_string(ctl.join(name)).unwrap_or_default();
    assert_eq!(read("conffiles").trim(), "/etc/srvd/srvd.toml");
    let control = read("control");
    assert!(control.contains("Package: srvd") && control.lines().any(|l| l.starts_with("Depends:") && l.contains("adduser")), "{control}");
    let postinst = read("postinst");
    assert!(postinst.contains("adduser --system --group") && postinst.contains(" srvd"), "postinst creates no user:\n{postinst}");
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        let text = read(script);
        // Comments may tell the operator what to run; the commands may not.
        let text: String = text.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n");
        if text.is_empty() {
            continue;
        }
        run(Command::new("sh").arg("-n").arg(ctl.join(script)));
        for word in ["start", "enable", "restart"] {
            for bad in [format!("systemctl {word}"), format!("deb-systemd-invoke {word}"), format!("deb-systemd-helper {word}")] {
                assert!(!text.contains(&bad), "{script} runs `{bad}`:\n{text}");
            }
        }
    }

    // lintian: no errors (its warnings are printed for the record).
    let lint = Command::new("lintian").arg("--no-tag-display-limit").arg(deb).output().unwrap();
    let said = stdout(&lint);
    eprintln!("lintian:\n{said}");
    let errors: Vec<&str> = said.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    assert!(lint.status.success(), "lintian exited {}: {said}{}", lint.status, String::from_utf8_lossy(&lint.stderr));
}
