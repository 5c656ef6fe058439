#!/usr/bin/env bash
# Makes loadtest/data/two_phrases_16k.wav: two English phrases spoken by espeak-ng,
# 0.5 s of silence before, 1.0 s between and 0.5 s after, as 16 kHz mono 16-bit PCM WAV.
# The VAD, bridge and call-engine tests read it (speech start/end on real speech), and the load
# tester plays it on every call: it is package data of loadtest (ships in the wheel).
# Needs: espeak-ng, sox (apt-get install -y espeak-ng sox). Output is committed; rerun only
# to change it (espeak-ng versions may differ slightly in timing).
set -euo pipefail
out="${1:-$(dirname "$0")/../loadtest/data/two_phrases_16k.wav}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
espeak-ng -v en-us -s 160 -w "$tmp/a.wav" "Hello, thank you for calling the help desk."
espeak-ng -v en-us -s 160 -w "$tmp/b.wav" "Please tell me how I can help you today."
for f in a b; do
    # -D: no dither, so that the output is the same bytes every run.
    sox -D "$tmp/$f.wav" -r 16000 -c 1 -b 16 -e signed-integer "$tmp/${f}16.wav" silence 1 0.01 0.1%
done
sox -D -n -r 16000 -c 1 -b 16 -e signed-integer "$tmp/half.wav" trim 0 0.5
sox -D -n -r 16000 -c 1 -b 16 -e signed-integer "$tmp/gap.wav" trim 0 1.0
sox -D "$tmp/half.wav" "$tmp/a16.wav" "$tmp/gap.wav" "$tmp/b16.wav" "$tmp/half.wav" "$out"
