#!/bin/bash
# Tests of the resource agent ocf:ckpt:checkpoint (ocf/checkpoint).
#
#   ocf_agent_test.sh --shellcheck AGENT       shellcheck -s sh AGENT (exit 77: no shellcheck)
#   ocf_agent_test.sh --metadata-only AGENT    meta-data checks only (no ckptd, no root needed)
#   with_corosync.sh ocf_agent_test.sh AGENT CKPTD CKPTCTL
#                                              everything: meta-data, validate-all, ocf-tester and
#                                              explicit start/stop/monitor cases against a ckptd
#                                              started here (killed by PID at the end)
#
# The agent runs from the source tree through a temporary OCF_ROOT: lib/heartbeat is a symlink to
# the host's resource-agents library, resource.d/ckpt/checkpoint a symlink to AGENT.  Nothing is
# installed on the host.  The integration part refuses to run outside with_corosync.sh (it starts
# ckptd, and the agent keeps its state files in /run/resource-agents, private in that namespace).
#
# Environment: CKPT_OCF_TEST_SHOW_LOGS=1 prints the agent's and ckptd's logs at the end even on
# success (they are printed on failure anyway).  CKPT_OCF_RA_API_RNG  the OCF 1.1 schema ra-api.rng (ClusterLabs OCF-spec,
#   ra/1.1/ra-api.rng); when unset, a few usual locations are tried and the check is skipped
#   (with a message) if none has it.  Exit: 0 pass, 1 failures, 77 cannot run here.
set -uo pipefail

SKIP=77
HOST_OCF_LIB=/usr/lib/ocf/lib/heartbeat
RA_DTD_DIR=/usr/share/resource-agents

failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
pass() { echo "ok:   $*"; }
note() { echo "----  $*"; }

usage() {
  sed -n '2,9p' "$0" >&2
  exit 2
}

# ---- setup shared by all modes --------------------------------------------------------------

[[ $# -ge 1 ]] || usage
mode=full
case "$1" in
  --shellcheck) mode=shellcheck; shift ;;
  --metadata-only) mode=metadata; shift ;;
  -*) usage ;;
esac
[[ $# -ge 1 ]] || usage
AGENT=$(readlink -f "$1")
[[ -f $AGENT ]] || { echo "no agent at $1" >&2; exit 2; }

if [[ $mode == shellcheck ]]; then
  if ! command -v shellcheck >/dev/null; then
    echo "shellcheck is not installed: skipped" >&2
    exit $SKIP
  fi
  shellcheck -s sh "$AGENT" && echo "shellcheck: $AGENT is clean"
  exit
fi

if [[ ! -r $HOST_OCF_LIB/ocf-shellfuncs ]]; then
  echo "resource-agents' $HOST_OCF_LIB/ocf-shellfuncs not found: skipped" >&2
  exit $SKIP
fi
command -v xmllint >/dev/null || { echo "xmllint not found: skipped" >&2; exit $SKIP; }

WORK=$(mktemp -d /tmp/ckpt-ocf-test.XXXXXX)
chmod 0755 "$WORK"  # ocf-tester runs meta-data as nobody through this path
CKPTD_PID=
cleanup() {
  local rc=$?
  if [[ -n $CKPTD_PID ]]; then
    kill -TERM "$CKPTD_PID" 2>/dev/null
    wait "$CKPTD_PID" 2>/dev/null
  fi
  if [[ $rc -ne 0 || $failures -ne 0 || -n ${CKPT_OCF_TEST_SHOW_LOGS:-} ]]; then
    for f in ra.log ckptd.log ckptd.stderr; do
      [[ -s $WORK/$f ]] || continue
      echo "---- $f (last 200 lines) ----" >&2
      tail -n 200 "$WORK/$f" >&2
    done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# The temporary OCF root.
OCF_ROOT_DIR=$WORK/ocf
mkdir -p "$OCF_ROOT_DIR/lib" "$OCF_ROOT_DIR/resource.d/ckpt"
ln -s "$HOST_OCF_LIB" "$OCF_ROOT_DIR/lib/heartbeat"
ln -s "$AGENT" "$OCF_ROOT_DIR/resource.d/ckpt/checkpoint"
chmod -R a+rX "$OCF_ROOT_DIR"
RA=$OCF_ROOT_DIR/resource.d/ckpt/checkpoint

# Agent logs go to a file, so that stderr carries only what the agent prints there itself
# (ocf-exit-reason lines).
export OCF_ROOT=$OCF_ROOT_DIR HA_LOGFACILITY=none HA_LOGFILE=$WORK/ra.log HA_DEBUGLOG=$WORK/ra.log
export HA_debug=1

RA_OUT=$WORK/ra.out
RA_ERR=$WORK/ra.err
# ra WANT ACTION [NAME=VALUE...]: runs the agent with OCF_RESKEY_NAME=VALUE for each pair (and
# only those) and checks its exit code.  WANT may list alternatives: "0|7".
ra() {
  local want=$1 action=$2
  shift 2
  local -a envs=(OCF_RESOURCE_INSTANCE=ckpt-test)
  local kv
  for kv in "$@"; do envs+=("OCF_RESKEY_$kv"); done
  echo "== $action $* ==" >>"$WORK/ra.log"
  local rc=0
  env "${envs[@]}" "$RA" "$action" >"$RA_OUT" 2>"$RA_ERR" || rc=$?
  if [[ "|$want|" == *"|$rc|"* ]]; then
    pass "$action $* -> $rc"
    return 0
  fi
  fail "$action $* -> $rc, expected $want"
  sed 's/^/  stdout: /' "$RA_OUT" >&2
  sed 's/^/  stderr: /' "$RA_ERR" >&2
  return 1
}
# expect_reason TEXT: the last ra call printed an exit reason containing TEXT on stderr.
expect_reason() {
  if grep -q "^ocf-exit-reason:.*$1" "$RA_ERR"; then
    pass "exit reason: $(grep '^ocf-exit-reason:' "$RA_ERR" | tail -n 1)"
  else
    fail "expected an exit reason containing '$1' on stderr, got: $(cat "$RA_ERR")"
  fi
}
# expect_log TEXT: the agent's log (since MARK) contains TEXT.
log_mark() { LOG_MARK=$(wc -l <"$WORK/ra.log" 2>/dev/null || echo 0); }
expect_log() {
  if tail -n +"$((LOG_MARK + 1))" "$WORK/ra.log" | grep -q -- "$1"; then
    pass "log: ...$1..."
  else
    fail "expected '$1' in the agent's log"
  fi
}

# ---- meta-data ------------------------------------------------------------------------------

find_ra_api_rng() {
  local f
  for f in "${CKPT_OCF_RA_API_RNG:-}" /usr/share/resource-agents/ra-api.rng \
    /usr/share/ocf/ra-api.rng /usr/share/pacemaker/ra-api.rng /usr/share/xml/ocf/ra-api.rng; do
    [[ -n $f && -r $f ]] && { echo "$f"; return 0; }
  done
  return 1
}

test_metadata() {
  note "meta-data"
  if [[ -x $AGENT ]]; then pass "agent is executable"; else fail "$AGENT is not executable (mode 0755)"; fi
  local md=$WORK/metadata.xml
  # Without ckptctl anywhere and with a minimal environment, as Pacemaker may call it.
  if env -i PATH=/usr/bin:/bin OCF_ROOT="$OCF_ROOT_DIR" OCF_RESKEY_ckptctl=/nonexistent \
    "$RA" meta-data >"$md" 2>"$RA_ERR"; then
    pass "meta-data without ckptctl -> 0"
  else
    fail "meta-data without ckptctl failed: $(cat "$RA_ERR")"
  fi
  [[ -s $RA_ERR ]] && fail "meta-data wrote to stderr: $(cat "$RA_ERR")"
  if [[ $(id -u) -eq 0 ]] && id nobody >/dev/null 2>&1; then
    if su nobody -s /bin/sh -c "OCF_ROOT='$OCF_ROOT_DIR' '$RA' meta-data" >"$WORK/md-nobody.xml" 2>&1 &&
      cmp -s "$md" "$WORK/md-nobody.xml"; then
      pass "meta-data as nobody"
    else
      fail "meta-data as nobody failed"
    fi
  else
    note "not root: meta-data as an unprivileged user is the run above"
  fi
  if xmllint --noout "$md"; then pass "xmllint --noout"; else fail "meta-data is not well-formed XML"; fi
  # What ocf-tester checks: the OCF 1.0 DTD (also accepts this OCF 1.1 meta-data).
  if [[ -r $RA_DTD_DIR/ra-api-1.dtd ]]; then
    if (cd "$RA_DTD_DIR" && xmllint --noout --valid - <"$md"); then
      pass "valid against ra-api-1.dtd"
    else
      fail "meta-data does not validate against $RA_DTD_DIR/ra-api-1.dtd"
    fi
  else
    note "SKIP: $RA_DTD_DIR/ra-api-1.dtd not found"
  fi
  # resource-agents' own schema (its CI checks agents with it).
  if [[ -r $RA_DTD_DIR/metadata.rng ]]; then
    if (cd "$RA_DTD_DIR" && xmllint --noout --relaxng metadata.rng - <"$md" 2>"$WORK/xmllint.err"); then
      pass "valid against resource-agents' metadata.rng"
    else
      fail "meta-data does not validate against $RA_DTD_DIR/metadata.rng: $(cat "$WORK/xmllint.err")"
    fi
  fi
  # The OCF 1.1 schema, if this machine has it.
  local rng
  if rng=$(find_ra_api_rng); then
    if (cd "$RA_DTD_DIR" 2>/dev/null || cd /; xmllint --noout --relaxng "$rng" - <"$md" 2>"$WORK/xmllint.err"); then
      pass "valid against OCF 1.1 $rng"
    else
      fail "meta-data does not validate against $rng: $(cat "$WORK/xmllint.err")"
    fi
  else
    note "SKIP: OCF 1.1 ra-api.rng not found (set CKPT_OCF_RA_API_RNG to ClusterLabs OCF-spec ra/1.1/ra-api.rng)"
  fi
  # Content rules: OCF 1.1 version, no 1.1-only markup the 1.0 DTD rejects, timeouts in seconds.
  if grep -q '<version>1.1</version>' "$md"; then pass "OCF version 1.1"; else fail "no <version>1.1</version>"; fi
  if grep -Eq 'unique-group|reloadable|reload-agent' "$md"; then
    fail "meta-data uses 1.1-only markup that ocf-tester's DTD rejects"
  fi
  local bad
  bad=$(grep -Eo '(timeout|interval)="[^"]*"' "$md" | grep -Ev '="[0-9]+s"' || true)
  if [[ -z $bad ]]; then pass "timeouts have an s suffix"; else fail "timeouts without s suffix: $bad"; fi
  for p in segment on_missing pull_timeout flush_timeout ckptctl; do
    grep -q "<parameter name=\"$p\"" "$md" || fail "parameter $p missing from meta-data"
  done
  if grep -q 'score-attribute' "$md" && grep -q 'ckpt-&lt;segment&gt;' "$md"; then
    pass "longdesc documents the ckpt-<segment> location rule"
  else
    fail "longdesc lacks the ckpt-<segment> location rule"
  fi
}

test_metadata
if [[ $mode == metadata ]]; then
  [[ $failures -eq 0 ]] && { echo "PASS (meta-data)"; exit 0; }
  echo "$failures failure(s)" >&2
  exit 1
fi

# ---- the rest needs ckptd next to a private corosync ------------------------------------------

[[ $# -eq 3 ]] || usage
CKPTD=$(readlink -f "$2")
CKPTCTL=$(readlink -f "$3")
for prog in "$CKPTD" "$CKPTCTL"; do
  [[ -x $prog ]] || { echo "$prog is not built" >&2; exit 1; }
done
if [[ -z ${CKPT_COROSYNC_DIR:-} ]]; then
  echo "run me under tests/integration/with_corosync.sh (private corosync and /run)" >&2
  exit $SKIP
fi
command -v ocf-tester >/dev/null || { echo "ocf-tester not found: skipped" >&2; exit $SKIP; }
PATH=$(dirname "$CKPTCTL"):$PATH
export PATH
STATE_DIR=/run/resource-agents  # private tmpfs inside with_corosync.sh

start_ckptd() {
  "$CKPTD" -f --state-dir "$WORK/state" --attributes=false --log-file "$WORK/ckptd.log" \
    >>"$WORK/ckptd.stderr" 2>&1 &
  CKPTD_PID=$!
  local _
  for _ in $(seq 1 100); do
    if ckptctl status --json 2>/dev/null | grep -q '"joined":true'; then
      pass "ckptd (pid $CKPTD_PID) joined"
      return 0
    fi
    kill -0 "$CKPTD_PID" 2>/dev/null || break
    sleep 0.1
  done
  fail "ckptd did not start or join within 10 s"
  exit 1
}
stop_ckptd() {
  kill -TERM "$CKPTD_PID"
  wait "$CKPTD_PID" 2>/dev/null
  CKPTD_PID=
}

note "ckptd"
start_ckptd

note "usage, unknown actions"
ra 0 usage
ra 0 help
ra 3 notify segment=x
ra 3 promote segment=x

note "validate-all"
ra 0 validate-all segment=app
ra 0 validate-all segment=A.b_c-9 on_missing=fail pull_timeout=30 flush_timeout=10
ra 0 validate-all segment="$(printf 'a%.0s' $(seq 1 128))"
ra 6 validate-all segment="$(printf 'a%.0s' $(seq 1 129))" && expect_reason "longer than 128"
ra 6 validate-all segment=bad/name && expect_reason "may contain only"
ra 6 validate-all segment="with space" && expect_reason "may contain only"
ra 6 validate-all segment=.hidden && expect_reason "must not start"
ra 6 validate-all segment=-dash && expect_reason "must not start"
ra 6 validate-all && expect_reason "segment parameter is required"
ra 6 validate-all segment=app on_missing=maybe && expect_reason "on_missing"
ra 6 validate-all segment=app pull_timeout=soon && expect_reason "pull_timeout"
ra 6 validate-all segment=app flush_timeout=0 && expect_reason "flush_timeout"
ra 5 validate-all segment=app ckptctl=/nonexistent/ckptctl && expect_reason "not found"
ra 0 validate-all segment=app ckptctl="$CKPTCTL"
ra 0 validate-all segment=app ckptctl=ckptctl

note "ocf-tester"
if ocf-tester -n ocftest -o segment=ocftest "$RA" >"$WORK/ocf-tester.out" 2>&1; then
  pass "ocf-tester: $(tail -n 1 "$WORK/ocf-tester.out")"
else
  fail "ocf-tester failed:"
  sed 's/^/  /' "$WORK/ocf-tester.out" >&2
fi
sed 's/^/  ocf-tester: /' "$WORK/ocf-tester.out"
[[ -e $STATE_DIR/ckpt-checkpoint-ocftest.started ]] && fail "ocf-tester left a state file behind"

note "fresh start (no checkpoint, on_missing=start-empty)"
ra 7 monitor segment=fresh1                    # probe: interval unset
ra 7 monitor segment=fresh1 CRM_meta_interval=0
log_mark
ra 0 start segment=fresh1 CRM_meta_timeout=20000
expect_log "pull fresh1 --timeout 1[56]"       # 80% of 20 s
expect_log "starts fresh"
if [[ -f $STATE_DIR/ckpt-checkpoint-fresh1.started ]]; then
  pass "state file written"
else
  fail "no state file $STATE_DIR/ckpt-checkpoint-fresh1.started"
fi
ra 0 monitor segment=fresh1 CRM_meta_interval=10000
ra 0 monitor segment=fresh1                    # probe of a started resource
ra 0 start segment=fresh1                      # start is idempotent
ra 0 monitor segment=fresh1 CRM_meta_interval=10000
ra 0 stop segment=fresh1 CRM_meta_timeout=20000
[[ -e $STATE_DIR/ckpt-checkpoint-fresh1.started ]] && fail "stop left the state file"
ra 7 monitor segment=fresh1 CRM_meta_interval=10000
ra 7 monitor segment=fresh1
ra 0 stop segment=fresh1                       # stop is idempotent
ra 7 monitor segment=fresh1 CRM_meta_interval=10000

note "fresh start, then the application creates the segment"
ra 0 start segment=fresh3
head -c 4096 /dev/urandom >"$WORK/fresh3.bin"
ckptctl put fresh3 "$WORK/fresh3.bin" --no-sync >/dev/null || fail "ckptctl put fresh3"
ra 0 monitor segment=fresh3 CRM_meta_interval=10000
log_mark
ra 0 stop segment=fresh3 CRM_meta_timeout=60000
expect_log "release fresh3 --timeout 4[78]"    # 80% of 60 s
# One node, replicas=1: the release cannot reach its replica; stop still succeeds and says so.
expect_log "WARNING: fresh3 not released"
ra 7 monitor segment=fresh3 CRM_meta_interval=10000

note "no checkpoint and on_missing=fail"
ra 1 start segment=fresh2 on_missing=fail && expect_reason "no checkpoint of fresh2 exists and on_missing=fail"
[[ -e $STATE_DIR/ckpt-checkpoint-fresh2.started ]] && fail "failed start left a state file"
ra 7 monitor segment=fresh2 CRM_meta_interval=10000
ra 0 stop segment=fresh2

note "start restores an existing checkpoint"
head -c 200000 /dev/urandom >"$WORK/rest1.bin"
ckptctl put rest1 "$WORK/rest1.bin" --no-sync >/dev/null || fail "ckptctl put rest1"
ra 7 monitor segment=rest1                     # owned here, but not started: not running
log_mark
ra 0 start segment=rest1 on_missing=fail CRM_meta_timeout=90000
expect_log "pull rest1 --timeout 7[12]"        # 80% of 90 s
expect_log "restored rest1 version"
ra 0 monitor segment=rest1 CRM_meta_interval=10000
if ckptctl get rest1 "$WORK/rest1.out" >/dev/null && cmp -s "$WORK/rest1.bin" "$WORK/rest1.out"; then
  pass "ckptctl get rest1 returns the bytes that were put"
else
  fail "ckptctl get rest1 differs from what was put"
fi
ra 0 start segment=rest1 on_missing=fail pull_timeout=5    # again: idempotent
ra 0 monitor segment=rest1 CRM_meta_interval=10000
ra 0 stop segment=rest1 flush_timeout=3
ra 7 monitor segment=rest1 CRM_meta_interval=10000
ra 0 stop segment=rest1

note "ckptctl missing"
ra 5 start segment=rest1 ckptctl=/nonexistent/ckptctl && expect_reason "not found"
ra 7 monitor segment=rest1 ckptctl=/nonexistent/ckptctl     # probe: not started here
ra 0 stop segment=rest1 ckptctl=/nonexistent/ckptctl

note "ckptd restarts while the resource runs"
ra 0 start segment=rest1
stop_ckptd
# ckptd comes back 2 s later (the subshell becomes ckptd: CKPTD_PID is its PID).
(
  sleep 2
  exec "$CKPTD" -f --state-dir "$WORK/state" --attributes=false --log-file "$WORK/ckptd.log" \
    >>"$WORK/ckptd.stderr" 2>&1
) &
CKPTD_PID=$!
log_mark
ra 0 monitor segment=rest1 CRM_meta_interval=10000 CRM_meta_timeout=20000
expect_log "ckptd is not reachable yet"

note "ckptd not running"
stop_ckptd
ra 1 monitor segment=rest1 CRM_meta_interval=10000 CRM_meta_timeout=6000 &&
  expect_reason "ckptd is not reachable"
log_mark
ra 1 start segment=down1 pull_timeout=3 && expect_reason "ckptd is not running"
expect_log "retrying for up to 3s"
ra 7 monitor segment=down1                     # probe of a resource not started here
log_mark
ra 0 stop segment=rest1 CRM_meta_timeout=20000 # never fails: warns instead
expect_log "WARNING: rest1 not released: ckptd is not reachable"
ra 7 monitor segment=rest1 CRM_meta_interval=10000
ra 0 stop segment=down1

if [[ $failures -ne 0 ]]; then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "PASS"
