#!/usr/bin/env bash
# Installs exactly the Debian 12 packages xmppd needs to build, run and test.
# Idempotent; used by both README commands and by .ci/run. Needs root.
set -euo pipefail

packages=(
	# build
	gcc libc6-dev ninja-build pkg-config
	# libraries (DESIGN.md, Dependencies)
	liburing-dev libwolfssl-dev libexpat1-dev libyaml-dev liblmdb-dev libc-ares-dev
	# tests: real clients and tools
	python3 python3-slixmpp python3-pytest libstrophe-dev go-sendxmpp openssl procps dnsmasq-base
)

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# install also upgrades an already-installed package to the archive's
# current version, security updates included.
apt-get install -y -q --no-install-recommends "${packages[@]}"

# expat before 2.5.0-1+deb12u5 lets one client burn seconds of CPU per
# stanza (CVE-2023-52425); refuse to build against it.
have=$(dpkg-query -W -f='${Version}' libexpat1)
if ! dpkg --compare-versions "$have" ge 2.5.0-1+deb12u5; then
	echo "setup: libexpat1 $have is older than 2.5.0-1+deb12u5 (CVE-2023-52425);" \
	     "enable the Debian security archive and run again" >&2
	exit 1
fi
