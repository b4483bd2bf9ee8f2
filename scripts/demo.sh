#!/usr/bin/env bash
# The main job, offline: set up, crawl the bundled example folder, and search it.
#
# Until a CLIP-style model is on this machine (download one with --model ViT-B-32, or use a local
# checkpoint), the demo uses the text model that ships with the install (all-MiniLM-L6-v2) and
# searches the pictures by their captions: text -> text, fully offline.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1
VS=".venv/bin/vecsearch"
HOME_DIR="indexes"

echo "== crawl examples/demo into the index 'demo' (captions, text model, offline)"
"$VS" --home "$HOME_DIR" index examples/demo --name demo --model st:all-MiniLM-L6-v2 -q
"$VS" --home "$HOME_DIR" info demo
echo
echo "== search: something you can eat"
"$VS" --home "$HOME_DIR" search demo "something you can eat" -k 5
echo
echo "== refine the prompt: a vehicle +sky (query arithmetic)"
"$VS" --home "$HOME_DIR" search demo "a vehicle" +sky -k 3
echo
echo "== search: pets, paths only (for pipes)"
"$VS" --home "$HOME_DIR" search demo "a pet animal" -k 3 --paths
echo
echo "Image search (text -> image, image -> image, describe, classify) needs a CLIP model, e.g.:"
echo "  $VS index examples/demo --name demo-clip --model ViT-B-32 --pretrained laion2b_s34b_b79k"
