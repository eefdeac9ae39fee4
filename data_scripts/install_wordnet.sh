#!/usr/bin/env bash
# Set up WordNet 3.0 for nltk, offline, plus the ImageNet wnid list, for
# data_scripts/build_imagenet_names.py. Only that build script needs them: captioner itself
# never reads WordNet.
#
#   bash data_scripts/install_wordnet.sh [NLTK_DATA_DIR]   (default nltk_data/ in the repo root)
#
# Sources (Debian packages, fetched with `apt-get download`, unpacked with `dpkg-deb -x`,
# nothing is installed system-wide):
#   wordnet-base, wordnet-sense-index  WordNet 3.0 database files (WordNet 3.0 licence)
#   darknet                            data/imagenet.labels.list: its first 1000 lines,
#                                      sorted, are the ImageNet-1k wnids in torchvision's order
# Writes NLTK_DATA_DIR/corpora/wordnet/ (with LICENSE, the WordNet 3.0 notice, and the
# lexnames file nltk opens, which Debian ships only as a man page) and
# NLTK_DATA_DIR/imagenet.labels.list. Use it with NLTK_DATA=NLTK_DATA_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${1:-$ROOT/nltk_data}"
PACKAGES=(wordnet-base wordnet-sense-index darknet)

fail() {
    echo "install_wordnet.sh: $*" >&2
    exit 1
}

command -v apt-get >/dev/null || fail "apt-get not found: this script needs a Debian-like system"
command -v dpkg-deb >/dev/null || fail "dpkg-deb not found: install the dpkg package"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cd "$WORK"
if ! apt-get download "${PACKAGES[@]}" >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || fail "apt-get download ${PACKAGES[*]} failed; run 'sudo apt-get update' and retry"
    echo "apt-get download failed; running apt-get update and retrying"
    apt-get update -q >/dev/null || fail "apt-get update failed (is the Debian mirror reachable?)"
    apt-get download "${PACKAGES[@]}" >/dev/null \
        || fail "apt-get download ${PACKAGES[*]} failed (are they in your apt sources?)"
fi
for deb in ./*.deb; do
    dpkg-deb -x "$deb" "$WORK/root"
done

SRC="$WORK/root/usr/share"
WORDNET="$TARGET/corpora/wordnet"
mkdir -p "$WORDNET"
cp "$SRC"/wordnet/* "$WORDNET/"

# lexnames: "NN<TAB>name<TAB>category" from the man page's table; the category is the
# syntactic category of the file's words: 1 noun, 2 verb, 3 adjective, 4 adverb.
zcat "$SRC/man/man5/lexnames.5WN.gz" | awk '
    /^[0-9][0-9]\t[a-z]+\.[A-Za-z]+/ {
        split($2, part, ".")
        category = (part[1] == "noun") ? 1 : (part[1] == "verb") ? 2 : (part[1] == "adj") ? 3 : 4
        printf "%s\t%s\t%d\n", $1, $2, category
    }' >"$WORDNET/lexnames"
count="$(wc -l <"$WORDNET/lexnames")"
[ "$count" -eq 45 ] || fail "expected 45 lexicographer files in lexnames.5WN.gz, found $count"

# LICENSE: the "License: WordNet3.0" paragraph of the Debian copyright file, unindented.
awk '
    /^License: WordNet3.0/ { inside = 1; next }
    inside && /^[^ ]/ { inside = 0 }
    inside { sub(/^ /, ""); if ($0 == ".") $0 = ""; print }' \
    "$SRC/doc/wordnet-base/copyright" >"$WORDNET/LICENSE"
grep -q "WordNet 3.0 Copyright 2006 by Princeton University" "$WORDNET/LICENSE" \
    || fail "the WordNet 3.0 licence was not found in wordnet-base's copyright file"

cp "$SRC/darknet/data/imagenet.labels.list" "$TARGET/imagenet.labels.list"
echo "WordNet 3.0 and imagenet.labels.list installed in $TARGET (use NLTK_DATA=$TARGET)"
