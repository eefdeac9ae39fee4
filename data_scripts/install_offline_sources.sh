#!/usr/bin/env bash
# Install the packages that data_scripts/build_offline_dataset.py builds its dataset from:
#   Debian tuxpaint-stamps-default (GPL-2+) and openclipart-svg (public domain), with apt-get;
#   npm openmoji@17.0.0 (CC BY-SA 4.0), with `npm pack`, untarred into a cache folder.
# Idempotent: what is already there is skipped.
#
#   bash data_scripts/install_offline_sources.sh [OPENMOJI_DIR]   (default offline_data/sources/openmoji)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OPENMOJI_DIR="${1:-$ROOT/offline_data/sources/openmoji}"
OPENMOJI_VERSION="17.0.0"
DEBIAN_PACKAGES=(tuxpaint-stamps-default openclipart-svg)

fail() {
    echo "install_offline_sources.sh: $*" >&2
    exit 1
}

missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "Debian packages already installed: ${DEBIAN_PACKAGES[*]}"
else
    command -v apt-get >/dev/null || fail "apt-get not found: install ${missing[*]} with your system's package manager"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || fail "run as root (or install sudo) to apt-get install ${missing[*]}"
        SUDO="sudo"
    fi
    echo "Installing ${missing[*]} with apt-get"
    $SUDO apt-get update -q || fail "apt-get update failed (is the Debian mirror reachable?)"
    # --no-install-recommends: the stamps alone, without the Tux Paint program and its dependencies.
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || fail "apt-get install ${missing[*]} failed"
fi

if [ -f "$OPENMOJI_DIR/package/data/openmoji.json" ] && [ -d "$OPENMOJI_DIR/package/color/svg" ]; then
    echo "openmoji@$OPENMOJI_VERSION already in $OPENMOJI_DIR"
else
    command -v npm >/dev/null || fail "npm not found: install it (apt-get install npm) to fetch openmoji@$OPENMOJI_VERSION"
    mkdir -p "$OPENMOJI_DIR"
    echo "Fetching openmoji@$OPENMOJI_VERSION with npm pack into $OPENMOJI_DIR"
    tarball="$(cd "$OPENMOJI_DIR" && npm pack --silent "openmoji@$OPENMOJI_VERSION" | tail -n 1)" \
        || fail "npm pack openmoji@$OPENMOJI_VERSION failed (is the npm registry reachable?)"
    tar -xzf "$OPENMOJI_DIR/$tarball" -C "$OPENMOJI_DIR" || fail "could not untar $OPENMOJI_DIR/$tarball"
    rm -f "$OPENMOJI_DIR/$tarball"
    [ -f "$OPENMOJI_DIR/package/data/openmoji.json" ] || fail "$tarball has no package/data/openmoji.json"
fi
echo "Sources ready. Build with: python data_scripts/build_offline_dataset.py --out offline_data"
