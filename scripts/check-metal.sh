#!/usr/bin/env bash
# Compile-checks Atelier with the `metal` feature for Apple silicon macOS on this Linux
# machine: `cargo check --target aarch64-apple-darwin --features metal` type-checks every line
# of Atelier (and candle's Metal backend) that only the macOS GPU build compiles, so a change
# that breaks it fails here.
#
# The target's standard library comes from rustup (`rustup target add aarch64-apple-darwin`,
# once). Build scripts that compile C for the target (SQLite, bundled with rusqlite) get a
# stand-in C compiler and archiver writing empty outputs: `cargo check` links nothing and
# runs nothing, so no object code is needed. The real build is `cargo build --release
# --features metal` on a Mac.
#
#   scripts/check-metal.sh        (scripts/test.sh runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-apple-darwin

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  if ! timeout 300 rustup target add "$target" >&2; then
    echo "check-metal: NOT CHECKED: the $target standard library could not be installed" \
      "(rustup target add $target needs the network once)" >&2
    exit 0
  fi
fi

fake=$(mktemp -d -t atelier-fake-cc-XXXXXX)
trap 'rm -rf "$fake"' EXIT
cat >"$fake/cc" <<'SH'
#!/usr/bin/env bash
# A stand-in C compiler for the Apple target: an empty file wherever one is asked for.
out=""
while (($#)); do
  case "$1" in
    -o) out="$2"; shift ;;
    --version) echo "stand-in cc (compile-check only)"; exit 0 ;;
  esac
  shift
done
[[ -n "$out" ]] && : >"$out"
exit 0
SH
cat >"$fake/ar" <<'SH'
#!/usr/bin/env bash
# A stand-in archiver: the archive named is written empty.
for arg in "$@"; do
  case "$arg" in *.a) : >"$arg"; exit 0 ;; esac
done
exit 0
SH
chmod +x "$fake/cc" "$fake/ar"

CC_aarch64_apple_darwin="$fake/cc" CXX_aarch64_apple_darwin="$fake/cc" \
  AR_aarch64_apple_darwin="$fake/ar" \
  cargo check --locked --target "$target" --features metal --lib --bins --quiet
echo "check-metal: the metal feature compiles for $target"
