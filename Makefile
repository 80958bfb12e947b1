# srvd — two commands do everything on a fresh machine:
#   make run    start srvd on its embedded example config (127.0.0.1:5353)
#   make test   install what the tests need (Debian packages) and run them all

CARGO ?= cargo
# bind9: a real BIND secondary in tests/xfr.rs (AXFR + NOTIFY).
DEB_PACKAGES := bind9-dnsutils bind9 puppet-agent ruby iproute2
# dnsperf drives the DNS benchmark; NSD and gdnsd are the references it is compared with.
BENCH_PACKAGES := dnsperf nsd gdnsd

.PHONY: all build run test deps bench-deps bench check-config clean

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

check-config: build
	./target/release/srvd --config zones/example.toml --check-config

clean:
	$(CARGO) clean
