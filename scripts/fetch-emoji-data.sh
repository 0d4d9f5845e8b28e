#!/usr/bin/env bash
# Fetches the emoji training data with npm into a cache folder outside the source tree:
#   emoji-datasource-google (Noto emoji 64x64 PNGs; images Apache-2.0, package MIT)
#   emojibase-data          (CLDR labels and tags; MIT)
# Usage: scripts/fetch-emoji-data.sh [CACHE_DIR]   (default: ~/.cache/atelier/emoji-npm)
# Prints the folder that holds node_modules/.
set -euo pipefail
dest="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/atelier/emoji-npm}"
mkdir -p "$dest"
cd "$dest"
[ -f package.json ] || echo '{"name":"atelier-emoji-data","private":true}' > package.json
if [ ! -d node_modules/emoji-datasource-google/img/google/64 ] || [ ! -f node_modules/emojibase-data/en/data.json ]; then
  npm install --no-audit --no-fund --silent emoji-datasource-google@16.0.0 emojibase-data@17.0.0 >&2
fi
echo "$dest"
