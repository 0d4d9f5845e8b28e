#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs the Debian packages the GPU/UI tests need
# (a software Vulkan driver, Xvfb, the desktop-file and AppStream validators) when they are
# missing, checks formatting and clippy (warnings are errors) and that the `cuda` and `metal`
# features compile (scripts/check-cuda.sh, scripts/check-metal.sh), runs every test in one build
# profile (debug, with optimised dependencies; see Cargo.toml), then packages that build as a
# .deb and installs, uses and removes it.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in mesa-vulkan-drivers libvulkan1 xvfb xauth desktop-file-utils appstream; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# Lint is part of the suite: formatting, then clippy on every target with warnings as errors.
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
# The GPU builds compile: the `cuda` feature type-checked with a stand-in nvcc (no toolkit
# here), and the `metal` feature for Apple silicon macOS (the target's std from rustup).
scripts/check-cuda.sh
scripts/check-metal.sh

# Headless: wgpu finds lavapipe (Vulkan on the CPU); Mesa's device-select layer stays out of the way.
export NODEVICE_SELECT=1
unset DISPLAY WAYLAND_DISPLAY
cargo test --locked "$@"

# The whole suite also builds the Debian package from the test build and installs, uses and
# removes it (a filtered run, with arguments, skips this).
if [ $# -eq 0 ]; then
  scripts/package.sh --profile dev --no-build
  scripts/package-test.sh
fi
