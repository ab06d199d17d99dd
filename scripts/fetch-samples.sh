#!/usr/bin/env bash
# Evaluation samples that this project did not write, cut from Debian packages.
#
# The packages are only downloaded (apt-get download) and unpacked with dpkg-deb -x
# under .cache/debs/; nothing is installed.  Each sample is a deterministic slice of one
# file: it starts at a fixed line (a marker) and ends at the first line boundary at or
# after 64 KiB, so it is 65536..~66000 bytes.  .cache/samples/SOURCES.txt records
# package, exact version, path and byte range of every sample.
#
# Also written: mixed-1MiB.bin, 1 MiB made of 16 blocks of 64 KiB in the pattern
# text, random, random, random (x4): 256 KiB of text cycled from the samples and
# 768 KiB of pseudo-random bytes (Python random.Random(42).randbytes).
#
# Idempotent: when SOURCES.txt exists and the sample set (this script's recipe) is
# unchanged, it exits at once.  Usage: scripts/fetch-samples.sh [--force]
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEBS="$REPO/.cache/debs"
OUT="$REPO/.cache/samples"
PY="${PYTHON:-python3}"

# sample name | package | preferred version | path in package | start marker (regex of the first line; empty = file start)
# Versions are pinned so the samples do not drift; if the archive no longer has the
# pinned version the current candidate is used and SOURCES.txt says which.
SPECS=(
  "prose.txt|debian-faq|11.1|/usr/share/doc/debian/FAQ/debian-faq.en.txt.gz|^Chapter\W+1\.\W+Definitions and overview"
  "code.py|libpython3.11-stdlib|3.11.2-6+deb12u7|/usr/lib/python3.11/tarfile.py|"
  "page.html|debian-reference-en|2.100|/usr/share/debian-reference/ch02.en.html|"
  "data.json|iso-codes|4.15.0-1|/usr/share/iso-codes/json/iso_3166-2.json|"
)
RECIPE="v1 $(printf '%s;' "${SPECS[@]}")"

if [ "${1:-}" != "--force" ] && [ -f "$OUT/SOURCES.txt" ] && [ -f "$OUT/mixed-1MiB.bin" ] && \
   [ "$(cat "$OUT/.recipe" 2>/dev/null)" = "$RECIPE" ]; then
  echo "    samples up to date in ${OUT#$REPO/}"
  exit 0
fi

command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || {
  echo "fetch-samples.sh: needs apt-get and dpkg-deb (Debian/Ubuntu)" >&2; exit 1; }

mkdir -p "$DEBS" "$OUT"
. "$REPO/scripts/fetch-deb.sh"

LINES=()
for spec in "${SPECS[@]}"; do
  IFS='|' read -r name pkg ver path marker <<<"$spec"
  deb="$(fetch_deb "$DEBS" "$pkg" "$ver")"
  version="$(dpkg-deb -f "$deb" Version)"
  LINES+=("$name|$pkg|$version|$path|$marker")
  echo "    $name <- $pkg $version $path"
done

# Cut the samples, build mixed-1MiB.bin and SOURCES.txt (Python for exact byte handling).
"$PY" - "$DEBS" "$OUT" "${LINES[@]}" <<'EOF'
import gzip, os, random, re, sys

debs, out, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
MIN = 64 * 1024          # every sample is at least this long ...
MAX = 80 * 1024          # ... and cut at the first newline after MIN, which must come before MAX

sources = ["# LLMPack evaluation samples: slices of files from Debian packages (not installed, only",
           "# unpacked). Byte ranges are [start, end) in the file as shipped (after gunzip for .gz).",
           "# sample\tpackage\tversion\tpath\tbytes"]
texts = []
for spec in specs:
    name, pkg, version, path, marker = spec.split("|", 4)
    raw = open(os.path.join(debs, pkg) + path, "rb").read()
    if path.endswith(".gz"):
        raw = gzip.decompress(raw)
    start = 0
    if marker:
        m = re.search(marker.encode(), raw, re.M)
        if not m:
            sys.exit(f"{name}: marker {marker!r} not found in {path}")
        start = m.start()
    nl = raw.find(b"\n", start + MIN - 1)   # newline at index >= start+MIN-1 -> length >= MIN
    if nl < 0 or nl + 1 - start > MAX:
        sys.exit(f"{name}: no line boundary between 64 and 80 KiB in {path}")
    end = nl + 1
    data = raw[start:end]
    with open(os.path.join(out, name + ".part"), "wb") as f:
        f.write(data)
    os.replace(os.path.join(out, name + ".part"), os.path.join(out, name))
    texts.append(data)
    sources.append(f"{name}\t{pkg}\t{version}\t{path}{' (gunzipped)' if path.endswith('.gz') else ''}\t{start}-{end} ({len(data)} bytes)")

# mixed-1MiB.bin: blocks T R R R  x4; text blocks are consecutive 64 KiB pieces of the
# concatenated samples (cycled), random blocks come from one seeded stream.
BLOCK = 64 * 1024
pool = b"".join(texts)
rng = random.Random(42)
blocks, t = [], 0
for i in range(16):
    if i % 4 == 0:
        off = (t * BLOCK) % len(pool)
        blocks.append((pool + pool)[off:off + BLOCK]); t += 1
    else:
        blocks.append(rng.randbytes(BLOCK))
mixed = b"".join(blocks)
assert len(mixed) == 1 << 20
with open(os.path.join(out, "mixed-1MiB.bin.part"), "wb") as f:
    f.write(mixed)
os.replace(os.path.join(out, "mixed-1MiB.bin.part"), os.path.join(out, "mixed-1MiB.bin"))
sources.append("mixed-1MiB.bin\t-\t-\tgenerated\t16 blocks of 65536 bytes: T R R R x4; "
               "T = consecutive 64 KiB of prose.txt+code.py+page.html+data.json (cycled), "
               "R = random.Random(42).randbytes(65536) in sequence (Python)")
with open(os.path.join(out, "SOURCES.txt"), "w") as f:
    f.write("\n".join(sources) + "\n")
EOF
printf '%s' "$RECIPE" > "$OUT/.recipe"
ls -l "$OUT" | awk 'NR>1 {printf "    %-16s %8d bytes\n", $9, $5}'
