#!/usr/bin/env bash
# The main job, offline: set up, crawl the bundled example folder with the bundled starter model, then
# search it four ways: text -> image, image -> text, zero-shot classification and image -> image.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1
VS=".venv/bin/vecsearch"
HOME_DIR="indexes"
EXAMPLES="examples/openclipart"

echo "== crawl $EXAMPLES (300 public-domain clip-art pictures with captions) with the starter model"
"$VS" --home "$HOME_DIR" index "$EXAMPLES" --name demo --model starter -q
"$VS" --home "$HOME_DIR" info demo
"$VS" --home "$HOME_DIR" check demo
echo
echo "== text -> image: \"a tree\""
"$VS" --home "$HOME_DIR" search demo "a tree" -k 5
echo
echo "== refine the prompt: \"a flag\" +red (query arithmetic)"
"$VS" --home "$HOME_DIR" search demo "a flag" +red -k 3
echo
PICTURE="$EXAMPLES/food/fruit/apple_bw.png"
echo "== image -> text: describe $PICTURE"
"$VS" --home "$HOME_DIR" describe demo "$PICTURE" -k 3
echo
echo "== zero-shot classification of $PICTURE"
"$VS" classify "$PICTURE" --index "$HOME_DIR/demo" -l "food,animal,vehicle,flag,computer icon,tool"
echo
echo "== image -> image: pictures like $PICTURE"
"$VS" --home "$HOME_DIR" search demo "$PICTURE" -k 4
echo
echo "The starter model knows clip art, icons and simple drawings. For photos, use a real CLIP model:"
echo "  $VS index ~/Pictures --name photos --model ViT-B-32 --pretrained laion2b_s34b_b79k"
