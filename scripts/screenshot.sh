#!/usr/bin/env bash
# Takes docs/screenshot.png of the studio window under a virtual X server.
#
# Builds nothing: point it at a built binary (default target/release/atelier, or $ATELIER_BIN).
# Needs xvfb-run (package xvfb) and import (package imagemagick), optionally xdotool (to park
# the pointer); on a machine without a GPU also mesa-vulkan-drivers and libvulkan1 (lavapipe),
# or set WGPU_BACKEND=gl.
#
# Environment:
#   ATELIER_BIN          binary to run (default: target/release/atelier)
#   ATELIER_SHOT         output file (default: docs/screenshot.png)
#   ATELIER_SHOT_WAIT    seconds to wait for the window before the shot (default: 8)
#   ATELIER_SHOT_ARGS    extra arguments for the binary, e.g. "--model-dir /path/to/models"
#   ATELIER_SHOT_PROMPT  if set (needs xdotool): type this prompt, press Ctrl+Enter and wait
#                        ATELIER_SHOT_GEN_WAIT seconds (default 10) before the shot
set -euo pipefail

cd "$(dirname "$0")/.."

bin="${ATELIER_BIN:-target/release/atelier}"
out="${ATELIER_SHOT:-docs/screenshot.png}"
wait_secs="${ATELIER_SHOT_WAIT:-8}"

missing=()
for tool in xvfb-run import; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "screenshot.sh: missing tool(s): ${missing[*]}" >&2
    echo "  install them with: sudo apt-get install xvfb imagemagick" >&2
    echo "  (no GPU? also: mesa-vulkan-drivers libvulkan1)" >&2
    exit 1
fi
if [[ ! -x "$bin" ]]; then
    echo "screenshot.sh: no executable at $bin" >&2
    echo "  build it first (cargo build --release) or set ATELIER_BIN" >&2
    exit 1
fi

home="$(mktemp -d -t atelier-shot-XXXXXX)"
trap 'rm -rf "$home"' EXIT
mkdir -p "$(dirname "$out")"

# Everything runs inside one xvfb-run session: start the studio, wait, grab the root window,
# stop the studio. Mesa's device-select layer is kept out of the way on GPU-less machines.
# (SHOT_* names: xvfb-run itself uses and exports variables such as ARGS.)
ATELIER_HOME="$home" NODEVICE_SELECT=1 SHOT_BIN="$bin" SHOT_OUT="$out" SHOT_WAIT="$wait_secs" \
SHOT_EXTRA_ARGS="${ATELIER_SHOT_ARGS:-}" SHOT_PROMPT="${ATELIER_SHOT_PROMPT:-}" \
SHOT_GEN_WAIT="${ATELIER_SHOT_GEN_WAIT:-10}" \
xvfb-run -a -s '-screen 0 1280x800x24' bash -c '
    # shellcheck disable=SC2086
    "$SHOT_BIN" $SHOT_EXTRA_ARGS >"$ATELIER_HOME/studio.log" 2>&1 &
    pid=$!
    sleep "$SHOT_WAIT"
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "screenshot.sh: the studio exited early; its output:" >&2
        cat "$ATELIER_HOME/studio.log" >&2
        exit 1
    fi
    # Optionally type a prompt into the prompt box (top left) and generate.
    if [ -n "$SHOT_PROMPT" ] && command -v xdotool >/dev/null 2>&1; then
        win=$(xdotool search --name Atelier | head -1)
        xdotool windowfocus --sync "$win"
        xdotool mousemove --window "$win" 170 190 click 1
        sleep 0.5
        xdotool type --delay 20 "$SHOT_PROMPT"
        xdotool key ctrl+Return
        sleep "$SHOT_GEN_WAIT"
    fi
    # Park the pointer in a corner so no hover effect or tooltip shows (if xdotool is there).
    if command -v xdotool >/dev/null 2>&1; then
        xdotool mousemove 1279 799 2>/dev/null
        sleep 1
    fi
    import -window root "$SHOT_OUT"
    status=$?
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    exit $status
'
echo "wrote $out"
