#!/usr/bin/env bash
# Fetches the references that `cordon measure snp` is checked against, into OUTDIR (created;
# idempotent: what is there and checks out is kept):
#   - sev-snp-measure 0.0.13 from PyPI (scripts/requirements-snp-measure.txt, hash-pinned wheel),
#     unpacked into OUTDIR/sev-snp-measure/ and run through the wrapper OUTDIR/bin/sev-snp-measure
#     with the system python3 (a pure-Python wheel: no venv, nothing installed into Python);
#   - Debian's OVMF builds, from Debian's archive (deb.debian.org), each .deb checked by SHA-256
#     and unpacked with dpkg-deb:
#       ovmf 2025.02-8+deb13u1 (trixie):        usr/share/ovmf/OVMF.fd (SEV metadata, no hashes table)
#       ovmf-amdsev 2026.08+ds-2 (forky, sid):  usr/share/ovmf/OVMF.amdsev.fd (with the hashes table)
#     A version that has left the pool is fetched from snapshot.debian.org by its SHA-1; if that
#     does not answer either, the suite's current version is taken (checked against the SHA-256 of
#     the suite's index) with a warning: both tools then compare on those bytes. Update the pins
#     below (version, path, SHA-256, SHA-1) when that happens.
# Prints `name=path` lines: sev-snp-measure, ovmf, ovmf-amdsev. Needs python3 (with pip) and
# dpkg-deb; no root, no apt configuration.
set -euo pipefail
if [ "$#" -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
repo="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$1"
out="$(cd "$1" && pwd)"
# One run at a time per OUTDIR (test binaries run it concurrently).
exec 9>"$out/.lock"
flock 9

fail() {
    echo "fetch-snp-measure-refs: $*" >&2
    exit 1
}

# sev-snp-measure: the wheel, unpacked once.
ssm="$out/sev-snp-measure"
if [ ! -f "$ssm/.complete" ]; then
    rm -rf "$ssm" "$ssm.part"
    mkdir -p "$ssm.part/wheel"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --require-hashes -r "$repo/scripts/requirements-snp-measure.txt" -d "$ssm.part/wheel" >&2 \
        || fail "pip could not download the pinned sev-snp-measure wheel from PyPI"
    python3 - "$ssm.part" <<'PY' || fail "could not unpack the sev-snp-measure wheel"
import glob, os, sys, zipfile
dest = sys.argv[1]
(wheel,) = glob.glob(os.path.join(dest, "wheel", "sev_snp_measure-*.whl"))
with zipfile.ZipFile(wheel) as z:
    z.extractall(os.path.join(dest, "lib"))
PY
    touch "$ssm.part/.complete"
    mv "$ssm.part" "$ssm"
fi
mkdir -p "$out/bin"
cat >"$out/bin/sev-snp-measure.part" <<SH
#!/bin/sh
PYTHONPATH="$ssm/lib" exec python3 -m sevsnpmeasure.cli "\$@"
SH
chmod +x "$out/bin/sev-snp-measure.part"
mv "$out/bin/sev-snp-measure.part" "$out/bin/sev-snp-measure"
"$out/bin/sev-snp-measure" --version >/dev/null 2>&1 || fail "the unpacked sev-snp-measure does not run with $(command -v python3)"

# fetch_deb NAME POOL_PATH SHA256 SHA1: OUTDIR/debs/NAME.deb, checked; unpacked into OUTDIR/NAME/.
# From the pool on deb.debian.org, else from snapshot.debian.org by its SHA-1 (which keeps every
# file Debian ever published); the SHA-256 decides either way.
fetch_deb() {
    local name="$1" pool="$2" sha="$3" sha1="$4"
    local deb="$out/debs/$name.deb" tree="$out/$name"
    mkdir -p "$out/debs"
    # A .deb from the fallback below carries its own (checked) version: keep it while the pin is gone.
    if [ -f "$deb" ] && [ ! -f "$deb.fallback" ] && ! echo "$sha  $deb" | sha256sum --check --status; then
        rm -f "$deb"
        rm -rf "$tree"
    fi
    if [ ! -f "$deb" ]; then
        local got=""
        for url in "http://deb.debian.org/debian/$pool" "https://snapshot.debian.org/file/$sha1"; do
            if python3 - "$url" "$deb.part" <<'PY'
import sys, urllib.request
url, dest = sys.argv[1], sys.argv[2]
try:
    with urllib.request.urlopen(url, timeout=120) as r, open(dest, "wb") as f:
        while chunk := r.read(1 << 20):
            f.write(chunk)
except Exception as e:
    print(f"fetch-snp-measure-refs: {url}: {e}", file=sys.stderr)
    sys.exit(1)
PY
            then
                if echo "$sha  $deb.part" | sha256sum --check --status; then
                    mv "$deb.part" "$deb"
                    got=1
                    break
                fi
                echo "fetch-snp-measure-refs: $url does not have SHA-256 $sha" >&2
            fi
            rm -f "$deb.part"
        done
        if [ -z "$got" ] && [ -n "${5:-}" ]; then
            # The pinned version has left the pool (a newer one replaced it) and the snapshot
            # service did not answer: take the suite's current version, checked against the
            # SHA-256 its signed index lists. Both tools still see the same bytes, which is what
            # the comparison needs; say so, so that the pins get updated.
            if python3 - "$5" "$6" "$deb.part" <<'PY'
import lzma, sys, urllib.request, hashlib
package, suite, dest = sys.argv[1:4]
base = "http://deb.debian.org/debian"
index = f"{base}/dists/{suite}/main/binary-amd64/Packages.xz"
try:
    with urllib.request.urlopen(index, timeout=120) as r:
        text = lzma.decompress(r.read()).decode("utf-8", "replace")
    fields = None
    for stanza in text.split("\n\n"):
        f = dict(l.split(": ", 1) for l in stanza.splitlines() if ": " in l and not l.startswith(" "))
        if f.get("Package") == package:
            fields = f
            break
    if fields is None:
        raise RuntimeError(f"{package} is not in {suite}")
    with urllib.request.urlopen(f"{base}/{fields['Filename']}", timeout=120) as r:
        data = r.read()
    if hashlib.sha256(data).hexdigest() != fields["SHA256"]:
        raise RuntimeError(f"{fields['Filename']} does not match the index's SHA-256")
    open(dest, "wb").write(data)
    print(f"fetch-snp-measure-refs: WARNING: the pinned {package} is gone; using {suite}'s current {fields['Version']} (update the pins)", file=sys.stderr)
except Exception as e:
    print(f"fetch-snp-measure-refs: {index}: {e}", file=sys.stderr)
    sys.exit(1)
PY
            then
                mv "$deb.part" "$deb"
                touch "$deb.fallback"
                got=1
            fi
            rm -f "$deb.part"
        fi
        [ -n "$got" ] || fail "could not fetch $pool (SHA-256 $sha) from deb.debian.org, snapshot.debian.org or the suite's current index; update the pins in $0"
    fi
    if [ ! -f "$tree/.complete" ]; then
        rm -rf "$tree" "$tree.part"
        dpkg-deb -x "$deb" "$tree.part" || fail "dpkg-deb could not unpack $deb"
        touch "$tree.part/.complete"
        mv "$tree.part" "$tree"
    fi
}

fetch_deb ovmf-2025.02-8+deb13u1 pool/main/e/edk2/ovmf_2025.02-8+deb13u1_all.deb \
    78e0d54df11fc77406cb7a0bc9a39e5bca6d1cbe06556b91d9a73491c52decdf e22ebb3da0cbf61fb9b0fefa2d7f79d08c878885 \
    ovmf trixie
fetch_deb ovmf-amdsev-2026.08+ds-2 pool/main/e/edk2/ovmf-amdsev_2026.08+ds-2_all.deb \
    92c9b6d15e4eeb371938c3f99080c1a8fc057dfd6bc0509d37f8b615e9edebfb b2d261d63f256e18fb4f69855efe5f54ad45f9cf \
    ovmf-amdsev sid

ovmf="$out/ovmf-2025.02-8+deb13u1/usr/share/ovmf/OVMF.fd"
amdsev="$out/ovmf-amdsev-2026.08+ds-2/usr/share/ovmf/OVMF.amdsev.fd"
[ -f "$ovmf" ] || fail "$ovmf is not in the ovmf package"
[ -f "$amdsev" ] || fail "$amdsev is not in the ovmf-amdsev package"
echo "sev-snp-measure=$out/bin/sev-snp-measure"
echo "ovmf=$ovmf"
echo "ovmf-amdsev=$amdsev"
