#!/usr/bin/env bash
# Anonymize a real example: the 720p talking-head clip from ../shared/fixtures when it is there,
# else the 6-face group photo that ships inside the insightface wheel. Outputs go to ./out/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p out
clip=../shared/fixtures/videos/talking_720p.mp4
if [ -f "$clip" ]; then
  .venv/bin/styleface anonymize "$clip" --output-dir out --overwrite --export-tracks out/talking_720p.tracks.json --json
else
  photo=$(.venv/bin/python -c "import insightface, os; print(os.path.join(os.path.dirname(insightface.__file__), 'data', 'images', 't1.jpg'))")
  .venv/bin/styleface anonymize "$photo" -o out/t1_anonymized.jpg --overwrite --json
fi
