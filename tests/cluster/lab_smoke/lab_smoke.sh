#!/usr/bin/env bash
# Smoke test of the lab harness: up 3 --pacemaker, partition n3 (at the switch, then at its own
# eth0) and heal it, crash n2 and start it again, spawn/kill, down; then check that no namespace,
# process, mount or state of the lab remains.
set -euo pipefail

LAB_BIN=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../lab" && pwd)/lab
NAME=${LAB_SMOKE_NAME:-smoke}
STATE=/var/tmp/ckpt-lab/$NAME

lab() { "$LAB_BIN" --name "$NAME" "$@"; }
say() { printf '[%5.1fs] %s\n' "$(bc_elapsed)" "$*"; }
bc_elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# wait_for TIMEOUT DESCRIPTION CMD...: polls CMD every 0.5 s until it succeeds.
wait_for() {
  local timeout=$1 what=$2 start=$SECONDS; shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS - start < timeout)) || fail "$what: not within ${timeout}s"
    sleep 0.5
  done
  say "ok: $what ($((SECONDS - start)) s)"
}

members_are() { [[ $(lab members "$1") == "$2" ]]; }
pcmk_online_are() { [[ $(lab members "$1" --pacemaker) == "$2" ]]; }
# (output captured first: with pipefail, `grep -q` closing the pipe early would fail crm_mon)
crm_mon_shows() { local out; out=$(lab exec "$1" crm_mon -1) && [[ $out == *"$2"* ]]; }
inquorate() { local rc=0; lab exec "$1" corosync-quorumtool -s >/dev/null || rc=$?; ((rc == 2)); }
leftovers() {
  ip netns list | grep "^ckpt-$NAME-" >/dev/null && { echo "namespaces: $(ip netns list | grep "^ckpt-$NAME-")"; return 0; }
  pgrep -f "_node-init $NAME " >/dev/null && { echo "processes: $(pgrep -af "_node-init $NAME ")"; return 0; }
  grep -qF "$STATE" /proc/self/mountinfo && { echo "mounts: $(grep -F "$STATE" /proc/self/mountinfo)"; return 0; }
  [[ -e $STATE ]] && { echo "state: $STATE"; return 0; }
  return 1
}

if [[ $(id -u) != 0 ]]; then echo "SKIP: needs root"; exit 77; fi
for tool in corosync pacemakerd crm_mon unshare nsenter; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed"; exit 77; }
done

T0=$(date +%s.%N)
on_exit() {
  local rc=$?
  if ((rc != 0)); then
    echo "--- lab status at failure" >&2
    lab status >&2 || true
    for n in 1 2 3; do lab logs "n$n" -n 15 >&2 || true; done
  fi
  lab down >/dev/null 2>&1 || true
}
trap on_exit EXIT

# A leftover of an aborted earlier run would make `up` refuse.
lab down

say "lab up 3 --pacemaker --totem seqno_unchanged_const=3"
t=$SECONDS
lab up 3 --pacemaker --totem seqno_unchanged_const=3
up_secs=$((SECONDS - t))
say "ok: up took ${up_secs} s"
crm_mon_shows n1 "Online: [ n1 n2 n3 ]" || fail "crm_mon on n1 does not show 3 nodes online"
[[ $(lab exec n1 crm_attribute --quiet --type crm_config --name stonith-enabled --query) == false ]] ||
  fail "stonith-enabled is not false"
[[ $(lab exec n2 hostname) == n2 ]] || fail "hostname in n2 is not n2"
rc=0; lab exec n3 sh -c 'exit 42' || rc=$?
((rc == 42)) || fail "lab exec did not return the command's exit code (got $rc)"
say "ok: crm_mon on n1 shows n1 n2 n3 online"
[[ $(lab exec n2 corosync-cmapctl -g runtime.config.totem.seqno_unchanged_const) == *"= 3" ]] ||
  fail "corosync on n2 does not run with --totem seqno_unchanged_const=3"
say "ok: --totem reached corosync's runtime configuration"

say "cut n3"
lab cut n3
wait_for 60 "n1 sees corosync members n1 n2" members_are n1 "n1 n2"
wait_for 60 "n3 sees only itself and is inquorate" inquorate n3
wait_for 60 "crm_mon on n1 shows n1 n2 online" pcmk_online_are n1 "n1 n2"
crm_mon_shows n1 "OFFLINE: [ n3 ]" || fail "crm_mon on n1 does not show n3 offline"
members_are n3 "n3" || fail "n3 does not see itself alone"

say "heal n3"
lab heal n3
wait_for 60 "n1 sees corosync members n1 n2 n3 again" members_are n1 "n1 n2 n3"
wait_for 60 "crm_mon on n1 shows n1 n2 n3 online again" crm_mon_shows n1 "Online: [ n1 n2 n3 ]"

say "cut n3 from its own side (eth0 down)"
lab cut n3 --node-side
wait_for 60 "n1 sees corosync members n1 n2" members_are n1 "n1 n2"
wait_for 60 "n3 sees only itself and is inquorate" inquorate n3
lab heal n3
wait_for 60 "n1 sees corosync members n1 n2 n3 again" members_are n1 "n1 n2 n3"
wait_for 60 "crm_mon on n1 shows n1 n2 n3 online again" crm_mon_shows n1 "Online: [ n1 n2 n3 ]"

say "crash n2"
n2_init=$(cat "$STATE/n2/init.pid")
lab crash n2
! kill -0 "$n2_init" 2>/dev/null || fail "n2's init (pid $n2_init) survived the crash"
rc=0; lab exec n2 true 2>/dev/null || rc=$?
((rc != 0)) || fail "lab exec n2 worked on a crashed node"
wait_for 60 "n1 sees corosync members n1 n3" members_are n1 "n1 n3"
wait_for 60 "crm_mon on n1 shows n1 n3 online" pcmk_online_are n1 "n1 n3"

say "start n2"
t=$SECONDS
lab start n2
start_secs=$((SECONDS - t))
wait_for 60 "crm_mon on n1 shows n1 n2 n3 online after the restart" crm_mon_shows n1 "Online: [ n1 n2 n3 ]"
[[ $(cat "$STATE/n2/init.pid") != "$n2_init" ]] || fail "n2 kept its old init pid"

say "spawn and kill a process in n1"
lab spawn n1 sleeper sleep 3171
lab pid n1 sleeper >/dev/null || fail "spawned process is not running"
lab kill n1 sleeper
! lab pid n1 sleeper 2>/dev/null || fail "spawned process survived lab kill"
lab spawn n1 sleeper2 sleep 3171          # left running on purpose: down must end it

say "down"
t=$SECONDS
lab down
down_secs=$((SECONDS - t))
for ((i = 0; i < 20; i++)); do
  what=$(leftovers) || break
  sleep 0.5
done
! what=$(leftovers) || fail "left behind after down: $what"
pgrep -f 'sleep 3171' >/dev/null && fail "a spawned process survived down: $(pgrep -af 'sleep 3171')"
lab down >/dev/null || fail "a second down failed"
say "ok: nothing of lab '$NAME' remains"

trap - EXIT
echo "TIMING up_3_pacemaker=${up_secs}s start_n2=${start_secs}s down=${down_secs}s total=$(bc_elapsed)s"
echo "lab_smoke: 1 passed, 0 failed"
