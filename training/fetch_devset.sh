#!/bin/sh
# Rebuild the development set (training/devset/*) from Debian bookworm packages and programs run
# here.  Every model choice (architecture, size, vocabulary, steps) is made on this set; the
# held-out set (fetch_heldout.sh) is measured once at the end.
#
#   sh training/fetch_devset.sh                      # -> training/devset/
#   DEVSET_DIR=/tmp/d sh training/fetch_devset.sh    # -> any other folder
#
# Packages are only downloaded (apt-get download) and unpacked (dpkg-deb -x) under DEVSET_DEBS
# (default .cache/devset-debs); nothing is installed.  None of them is in the training corpus
# (training/packages.txt, build_corpus.py) or the held-out set; training/devset.py checks that,
# and that no 256-byte piece of a dev file occurs in training/data/corpus.txt when it exists.
# Three files are made by running programs here (PostgreSQL 15's server log of a fixed SQL
# session; git's packet trace of clones/fetches/pushes; git's trace2 log), with times, pids and
# durations rewritten to fixed values so the bytes do not depend on the machine or the clock;
# they depend on the installed postgres and git versions (SOURCES.txt names them).
# Files are 48 KiB (49152 bytes) slices.  Writes the files and SOURCES.txt (class, package
# version, source, sha256).  Exit status 0 = every file has its pinned sha256; 2 = written, but
# some differ.  Needs apt-get, dpkg-deb, python3 (stdlib), postgres 15 (/usr/lib/postgresql/15)
# and git.
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${DEVSET_DIR:-$REPO/training/devset}
DEBS=${DEVSET_DEBS:-$REPO/.cache/devset-debs}
PY=${PYTHON:-python3}

command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || {
  echo "fetch_devset.sh: needs apt-get and dpkg-deb (Debian/Ubuntu)" >&2; exit 1; }

# package=pinned version (Debian bookworm main)
PKGS="debian-history=2.28 dict-devil=1.0-13.1 exim4-config=4.96-15+deb12u11
golang-golang-x-net-dev=1:0.7.0+dfsg-1 manpages-ru=4.18.1-1 node-mime=3.0.0+dfsg+~cs3.97.1-1
python3-markdown=3.4.1-2+deb12u1 python3-sklearn=1.2.1+dfsg-1 r-doc-html=4.2.2.20221110-2
ruby-rack=2.2.22-0+deb12u2 sgt-puzzles=20230122.806ae71-2 unbound=1.17.1-2+deb12u4"

mkdir -p "$OUT" "$DEBS"
. "$REPO/scripts/fetch-deb.sh"
VERSIONS=""
for spec in $PKGS; do
  pkg=${spec%%=*}
  deb=$(fetch_deb "$DEBS" "$pkg" "${spec#*=}")
  VERSIONS="$VERSIONS $pkg=$(dpkg-deb -f "$deb" Version)"
done
exec "$PY" "$REPO/training/devset.py" "$DEBS" "$OUT" $VERSIONS
