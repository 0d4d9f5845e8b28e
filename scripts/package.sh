#!/usr/bin/env bash
# Builds Atelier's Debian package (with cargo-deb) and a release tarball into target/package/.
#
#   scripts/package.sh                 # release build, then the .deb and the tarball
#   scripts/package.sh --profile dev   # package the test build instead (what CI installs)
#   scripts/package.sh --no-build      # package what is already built for the profile
#
# The man page and the shell completions are made from the built binary's own command-line
# definition (`atelier dev man-page`, `atelier dev completions`).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
case "$profile" in
  dev) dir=debug ;;
  *) dir="$profile" ;;
esac
target_dir="${CARGO_TARGET_DIR:-target}"
bin="$target_dir/$dir/atelier"
out=target/package

if ! cargo deb --version >/dev/null 2>&1; then
  echo "installing cargo-deb" >&2
  cargo install cargo-deb --locked --version 3.8.0
fi
if [ "$build" = 1 ]; then
  cargo build --locked --profile "$profile" --bin atelier
fi
[ -x "$bin" ] || { echo "$bin is not built (drop --no-build)" >&2; exit 1; }

rm -rf "$out/man" "$out/completions" "$out/stage"
mkdir -p "$out/man" "$out/completions"
"$bin" dev man-page --out "$out/man"
gzip -9nf "$out/man/atelier.1"
"$bin" dev completions --out "$out/completions"

version=$("$bin" --version | awk '{print $2}')
if [ "$profile" = dev ]; then
  # CI packages the test build (the suite builds one profile only). cargo-deb makes releases,
  # so it is shown the binary where it looks for one, in a target folder of its own; the
  # package is compressed fast.
  fake="$out/dev-target"
  mkdir -p "$fake/release"
  cp "$bin" "$fake/release/atelier"
  CARGO_TARGET_DIR="$fake" cargo deb --no-build --locked --output "$out/" --fast
  rm -rf "$fake"
else
  cargo deb --no-build --locked --profile "$profile" --output "$out/"
fi
deb="$out/atelier_${version}-1_$(dpkg --print-architecture).deb"
[ -f "$deb" ] || deb=$(ls -t "$out"/atelier_*.deb | head -n 1)

# The tarball has the installed layout under one folder: bin/ finds share/atelier/models.
name="atelier-${version}-$(uname -m)-linux"
stage="$out/stage/$name"
mkdir -p "$stage/bin" "$stage/share/atelier/models" "$stage/share/man/man1" \
  "$stage/share/applications" "$stage/share/metainfo" "$stage/share/icons/hicolor/scalable/apps"
install -m 755 "$bin" "$stage/bin/atelier"
[ "$profile" = dev ] || strip "$stage/bin/atelier"
cp -r assets/models/atelier-mini "$stage/share/atelier/models/"
cp -r assets/models/atelier-mini-scribble "$stage/share/atelier/models/"
cp "$out/man/atelier.1.gz" "$stage/share/man/man1/"
cp packaging/linux/*.desktop "$stage/share/applications/"
cp packaging/linux/*.metainfo.xml "$stage/share/metainfo/"
cp packaging/icons/atelier.svg "$stage/share/icons/hicolor/scalable/apps/io.github.atelierstudio.Atelier.svg"
for size in 64 128 256 512; do
  mkdir -p "$stage/share/icons/hicolor/${size}x${size}/apps"
  cp "packaging/icons/atelier-$size.png" \
    "$stage/share/icons/hicolor/${size}x${size}/apps/io.github.atelierstudio.Atelier.png"
done
cp -r "$out/completions" "$stage/share/completions"
cp LICENSE-MIT LICENSE-APACHE README.md "$stage/"
tar -C "$out/stage" -czf "$out/$name.tar.gz" "$name"
rm -rf "$out/stage"

echo "package: $deb"
echo "tarball: $out/$name.tar.gz"
