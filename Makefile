# srvd — two commands do everything on a fresh machine:
#   make run    start srvd on its embedded example config (127.0.0.1:5353)
#   make test   install what the tests need (Debian packages) and run them all

CARGO ?= cargo
# bind9: a real BIND secondary in tests/xfr.rs (AXFR + NOTIFY).
# chromium, chromium-driver: the status page in a headless browser (tests/status_page.rs).
DEB_PACKAGES := bind9-dnsutils bind9 puppet-agent ruby iproute2 chromium chromium-driver
# dnsperf drives the DNS benchmark; NSD and gdnsd are the references it is compared with.
BENCH_PACKAGES := dnsperf nsd gdnsd

.PHONY: all build run test deps bench-deps bench check-config clean fuzz

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

deps:
	$(call install_missing,$(DEB_PACKAGES))

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

check-config: build
	./target/release/srvd --config zones/example.toml --check-config

clean:
	$(CARGO) clean
