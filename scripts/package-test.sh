#!/usr/bin/env bash
# Installs the Debian package scripts/package.sh made, uses it the way a user would, and
# removes it again:
# - installs it (dpkg -i as root; otherwise it is unpacked into a temporary root);
# - runs the installed `atelier generate` on the installed Atelier Mini with no network
#   (in a network namespace of its own where the system allows one), and checks the model was
#   found where the package put it, not in this source tree;
# - validates the desktop entry and the AppStream metainfo, checks the man page, the
#   completions and the icons;
# - purges the package and checks that none of its files is left.
set -euo pipefail
cd "$(dirname "$0")/.."

deb=$(ls -t target/package/atelier_*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || { echo "no package in target/package (run scripts/package.sh)" >&2; exit 1; }
fail() { echo "package test: $*" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
installed_with_dpkg=0
if [ "$(id -u)" -eq 0 ] && command -v dpkg >/dev/null; then
  if dpkg -s atelier >/dev/null 2>&1; then
    fail "a package named atelier is already installed here; not touching it"
  fi
  dpkg -i "$deb" >/dev/null
  installed_with_dpkg=1
  root=""
else
  dpkg-deb -x "$deb" "$work/root"
  root="$work/root"
fi
bin="$root/usr/bin/atelier"
[ -x "$bin" ] || fail "$bin is not installed"

"$bin" --version | grep -q "^atelier [0-9]" || fail "--version: $("$bin" --version)"

# The shipped model is found where the package put it.
home="$work/home"
mkdir -p "$home"
models=$(ATELIER_HOME="$home" HF_HOME="$home/hf" "$bin" models 2>/dev/null)
echo "$models" | grep -q "	embedded	$root/usr/bin/../share/atelier/models/atelier-mini$" \
  || fail "the installed model was not found in the package's place:
$models"

# Generate offline: a network namespace without interfaces when possible.
offline=()
if unshare -n true 2>/dev/null; then
  offline=(unshare -n)
fi
ATELIER_HOME="$home" HF_HOME="$home/hf" "${offline[@]}" "$bin" generate \
  --prompt "cat face, animal, pet, animals & nature" --steps 2 --seed 1 \
  --out "$work/cat.png" --no-gallery 2>"$work/generate.log" \
  || { cat "$work/generate.log" >&2; fail "the installed atelier could not generate"; }
[ -s "$work/cat.png" ] || fail "no picture written"
# Sketch to picture with the shipped ControlNet, found beside the model (offline too).
ATELIER_HOME="$home" HF_HOME="$home/hf" "${offline[@]}" "$bin" generate \
  --prompt "cat face, animal, pet, animals & nature" --steps 2 --seed 1 \
  --controlnet auto --control-image "$work/cat.png" --control-preprocessor canny \
  --out "$work/cat-sketched.png" --no-gallery 2>"$work/generate.log" \
  || { cat "$work/generate.log" >&2; fail "the installed atelier could not steer by a sketch"; }
[ -s "$work/cat-sketched.png" ] || fail "no sketched picture written"
echo "generated $work/cat.png with the installed package ${offline:+(no network)}"

desktop-file-validate "$root"/usr/share/applications/io.github.atelierstudio.Atelier.desktop
appstreamcli validate --no-net "$root"/usr/share/metainfo/io.github.atelierstudio.Atelier.metainfo.xml >/dev/null \
  || appstreamcli validate --no-net "$root"/usr/share/metainfo/io.github.atelierstudio.Atelier.metainfo.xml
zcat "$root/usr/share/man/man1/atelier.1.gz" | grep -q '^\.TH atelier' || fail "the man page is not a man page"
grep -q "atelier" "$root/usr/share/bash-completion/completions/atelier" || fail "no bash completions"
for size in 64x64 128x128 256x256 512x512; do
  [ -s "$root/usr/share/icons/hicolor/$size/apps/io.github.atelierstudio.Atelier.png" ] || fail "no $size icon"
done
[ -s "$root/usr/share/doc/atelier/copyright" ] || fail "no copyright file"

if [ "$installed_with_dpkg" = 1 ]; then
  dpkg -L atelier | while read -r f; do [ -f "$f" ] && echo "$f"; done > "$work/files"
  dpkg --purge atelier >/dev/null
  left=$(while read -r f; do [ -e "$f" ] && echo "$f"; done < "$work/files" || true)
  [ -z "$left" ] || fail "files left after removal: $left"
  [ ! -e /usr/share/atelier ] || fail "/usr/share/atelier is left after removal"
  dpkg -s atelier >/dev/null 2>&1 && fail "the package is still registered"
  echo "installed, used and removed $(basename "$deb") ($(wc -l < "$work/files") files, none left)"
else
  echo "unpacked and used $(basename "$deb") (not root: dpkg -i skipped)"
fi
