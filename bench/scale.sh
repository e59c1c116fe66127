#!/bin/bash
# Scale check (issue: "1 GiB per segment and 10,000 segments per cluster must work"):
# a 3-node lab, one 1 GiB segment replicated (R=1, synchronous), then 10,000 small segments;
# checks every node's catalog and the replica spread, restarts ckptd on n3 and checks it relearns
# the catalog and reloads its copies from disk.  Usage: bench/scale.sh [BUILD_DIR]  (root; ~6 min)
set -euo pipefail
cd "$(dirname "$0")/.."
B=$(realpath "${1:-build}")/bin
L="tests/lab/lab --name scale -q"
trap '$L down >/dev/null 2>&1 || true' EXIT
$L down >/dev/null 2>&1 || true
$L up 3 --ckptd "$B"
for i in 1 2 3; do $L ckptd start "n$i" --bin "$B" --attributes=false --log-file /var/log/ckpt/ckptd.log; done
$L exec n1 "$B/ckpt_bench" wait --members 3 --timeout 60 >/dev/null
echo "== one 1 GiB segment, R=1, synchronous commit of every byte"
$L exec n1 "$B/ckpt_bench" replicate --size 1073741824 --replicas 1 --repeat 1
echo "== 10,000 segments of 4 KiB, R=1"
$L exec n1 "$B/ckpt_bench" catalog --count 10000 --size 4096 --replicas 1 --prefix s
for i in 1 2 3; do
  echo "n$i: $($L exec "n$i" "$B/ckptctl" status | grep -E 'segments:' | tr -s ' ')"
  $L exec "n$i" "$B/ckptctl" status | grep -q "segments:          10000 in catalog" ||
    { echo "n$i does not list 10000 segments" >&2; exit 1; }
done
$L exec n1 "$B/ckptctl" status | grep -q "under-replicated:  0" || { echo "under-replicated" >&2; exit 1; }
echo "== restart ckptd on n3: reload from disk and relearn the catalog"
$L ckptd stop n3
start=$(date +%s.%N)
$L ckptd start n3 --bin "$B" --attributes=false --log-file /var/log/ckpt/ckptd.log
$L exec n3 "$B/ckpt_bench" wait --segments 10000 --timeout 300
echo "n3 listed 10000 segments $(echo "$(date +%s.%N) - $start" | bc) s after ckptd start"
$L exec n3 "$B/ckptctl" status | grep -E 'segments:|under'
echo "scale check passed"
