# srvd — two commands do everything on a fresh machine:
#   make run    start srvd on its embedded example config (127.0.0.1:5353)
#   make test   install what the tests need (Debian packages) and run them all
# Installing (docs/operations.md):
#   make install [PREFIX=/usr/local] [DESTDIR=...]   binaries, unit, man pages, completions, example config
#   make deb                                         a Debian package in target/debian/ (cargo-deb)

CARGO ?= cargo
# bind9: a real BIND secondary in tests/it/xfr.rs (AXFR + NOTIFY).
# chromium, chromium-driver: the status page in a headless browser (tests/it/status_page.rs).
# unbound: a real resolver sending EDNS Client Subnet (tests/it/client_sites.rs).
# systemd (systemd-analyze verify), lintian, man-db: the packaging tests (tests/it/packaging.rs).
# puppetserver: a real Puppet Server (CA endpoint, jruby-metrics, client certificates) in tests/it/puppetserver.rs.
DEB_PACKAGES := bind9-dnsutils bind9 puppet-agent ruby iproute2 systemd lintian man-db chromium chromium-driver puppetserver unbound
# cargo-deb builds the .deb (`make deb`, tests/it/packaging.rs); pinned so that
# its flags (--no-build --profile dev for the test) do not change under us.
CARGO_DEB_VERSION := 3.8.0
# dnsperf drives the DNS benchmark; NSD and gdnsd are the references it is compared with.
BENCH_PACKAGES := dnsperf nsd gdnsd

.PHONY: all build run test deps bench-deps bench check-config clean fuzz install assets deb cargo-deb build-bins

all: build

build:
	$(CARGO) build --release --bins

run: build
	./target/release/srvd

# Installs the Debian packages of $(1) that are missing.
define install_missing
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
endef

deps: cargo-deb
	$(call install_missing,$(DEB_PACKAGES))

cargo-deb:
	@$(CARGO) deb --version 2>/dev/null | grep -q "$(CARGO_DEB_VERSION)" || \
	  $(CARGO) install cargo-deb --version $(CARGO_DEB_VERSION) --locked

bench-deps:
	$(call install_missing,$(DEB_PACKAGES) $(BENCH_PACKAGES))

test: deps
	$(CARGO) build --bins
	$(CARGO) test --all-targets -- --test-threads=4

bench: build bench-deps
	@set -e; for b in bench/*.sh; do echo "== $$b"; "$$b"; done

# Coverage-guided fuzzing of the request path (not part of `make test`):
# cargo-fuzz needs nightly flags, RUSTC_BOOTSTRAP=1 lets stable build it.
# Starts from the seed corpus fuzz/corpus/request (kept in git, read only
# here); new inputs go to fuzz/corpus-run, crashes to fuzz/artifacts/request.
FUZZ_SECONDS ?= 300
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz
	mkdir -p fuzz/corpus-run
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run request corpus-run corpus/request -- \
	  -max_total_time=$(FUZZ_SECONDS) -max_len=4096

# ---- install and package ---------------------------------------------------
# Both take the binaries of target/$(PROFILE) (release; the tests pass
# PROFILE=debug NO_BUILD=1 to reuse what `cargo build` made).
PROFILE ?= release
BUILT := target/$(PROFILE)
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
DATADIR ?= $(PREFIX)/share
SYSCONFDIR ?= /etc
# systemd reads units from /usr/local/lib/systemd/system too.
UNITDIR ?= $(PREFIX)/lib/systemd/system
# Generated man pages, completions and the unit with this install's paths.
ASSETS ?= target/assets
DEB_OUT ?= target/debian

build-bins:
ifeq ($(NO_BUILD),)
ifeq ($(PROFILE),release)
	$(CARGO) build --release --bins
else
	$(CARGO) build --bins
endif
endif

# srvctl renders the man pages (srvctl(1), srvctl-COMMAND(1), srvd(8)) and
# completions from the same clap definitions the binaries parse.
assets: build-bins
	rm -rf $(ASSETS)
	mkdir -p $(ASSETS)/completions
	$(BUILT)/srvctl generate man $(ASSETS)/man
	$(BUILT)/srvctl generate completions bash > $(ASSETS)/completions/srvctl
	$(BUILT)/srvctl generate completions zsh > $(ASSETS)/completions/_srvctl
	$(BUILT)/srvctl generate completions fish > $(ASSETS)/completions/srvctl.fish
	sed -e 's#/usr/bin/srvd#$(BINDIR)/srvd#g' -e 's#/etc/srvd/#$(SYSCONFDIR)/srvd/#g' packaging/srvd.service > $(ASSETS)/srvd.service

# An existing $(SYSCONFDIR)/srvd/srvd.toml is kept. The unit is installed,
# not enabled; it runs srvd as the user srvd, which you create once with
# `adduser --system --group --home /var/lib/srvd --no-create-home srvd`.
install: assets
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8 \
	  $(DESTDIR)$(DATADIR)/bash-completion/completions $(DESTDIR)$(DATADIR)/zsh/site-functions \
	  $(DESTDIR)$(DATADIR)/fish/vendor_completions.d $(DESTDIR)$(SYSCONFDIR)/srvd
	install -m 755 $(BUILT)/srvd $(BUILT)/srvctl $(DESTDIR)$(BINDIR)/
	install -m 644 $(ASSETS)/srvd.service $(DESTDIR)$(UNITDIR)/srvd.service
	install -m 644 $(ASSETS)/man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 644 $(ASSETS)/man/*.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 644 $(ASSETS)/completions/srvctl $(DESTDIR)$(DATADIR)/bash-completion/completions/srvctl
	install -m 644 $(ASSETS)/completions/_srvctl $(DESTDIR)$(DATADIR)/zsh/site-functions/_srvctl
	install -m 644 $(ASSETS)/completions/srvctl.fish $(DESTDIR)$(DATADIR)/fish/vendor_completions.d/srvctl.fish
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/srvd/srvd.toml ]; then \
	  echo "keeping $(DESTDIR)$(SYSCONFDIR)/srvd/srvd.toml"; \
	else \
	  install -m 640 packaging/srvd.toml $(DESTDIR)$(SYSCONFDIR)/srvd/srvd.toml; \
	fi
	@echo "installed; not enabled. Next: adduser --system --group --home /var/lib/srvd --no-create-home srvd;"
	@echo "  chgrp srvd $(SYSCONFDIR)/srvd/srvd.toml; edit it; systemctl daemon-reload; systemctl enable --now srvd"

# The Debian package ([package.metadata.deb] in Cargo.toml): /usr/bin, the
# unit in /lib/systemd/system (not enabled), /etc/srvd/srvd.toml (conffile).
deb: cargo-deb
	$(MAKE) assets ASSETS=target/assets PROFILE=$(PROFILE) NO_BUILD=$(NO_BUILD) BINDIR=/usr/bin SYSCONFDIR=/etc
ifeq ($(PROFILE),release)
	$(CARGO) deb --no-build --strip -o $(DEB_OUT)/
else
	$(CARGO) deb --no-build --profile dev --strip --fast -o $(DEB_OUT)/
endif

check-config: build
	./target/release/srvd --config zones/example.toml --check-config

clean:
	$(CARGO) clean
