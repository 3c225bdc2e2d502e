#!/usr/bin/env bash
# Makes sure `java` is on PATH, for the coco-caption scorer (its PTB tokenizer and METEOR
# are Java programs; the jars ship in pycocoevalcap). Run by `make pipeline`, `make demo`
# and `make test` first. Installs Debian's default-jre-headless with apt-get when run as
# root; otherwise says how to install it (or how to turn the scorer off) and fails.
set -euo pipefail

if command -v java >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-java: java is missing; installing Debian's default-jre-headless package" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null
  if command -v java >/dev/null 2>&1; then
    echo "ensure-java: installed $(java -version 2>&1 | head -n 1)" >&2
    exit 0
  fi
  echo "error: apt-get installed default-jre-headless but java is still not on PATH" >&2
  exit 1
fi

cat >&2 <<MSG
error: java is missing; the coco-caption scorer (PTB tokenizer, METEOR) needs it.
Install Debian's default-jre-headless package, then run make again:
    sudo apt-get update && sudo apt-get install -y default-jre-headless
(Or run without that scorer: gate.coco_caption: false in the profile, or
python -m pipelines.local_runner --set gate.coco_caption=false.)
MSG
exit 1
