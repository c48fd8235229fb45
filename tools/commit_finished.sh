#!/usr/bin/env bash
# Stage only finished run folders (those with summary.json) under a results folder,
# plus manifest/report files: unfinished runs (a lane still training) stay out of git.
set -euo pipefail
root="${1:-results/suggest}"
find "$root" -name summary.json -print0 | while IFS= read -r -d '' f; do
  git add -- "$(dirname "$f")"
done
for f in "$root"/*/manifest.json "$root"/*/report.md "$root"/score.md "$root"/score.json; do
  [ -e "$f" ] && git add -- "$f"
done
[ -d "$root/plots" ] && git add -- "$root/plots"
for d in "$root"/*/plots; do [ -d "$d" ] && git add -- "$d"; done
exit 0
