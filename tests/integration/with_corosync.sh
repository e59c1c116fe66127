#!/bin/bash
# with_corosync.sh CMD [ARG...]: runs CMD next to a private single-node corosync.
#
# Sets up fresh network, mount and PID namespaces (loopback only; private /run, /dev/shm and
# /proc; private directories bind-mounted over /etc/corosync, /var/lib/corosync and
# /var/log/corosync), starts `corosync -f`, waits until `corosync-cpgtool` answers (max 20 s),
# runs CMD inside and exits with its status.  The host's corosync files are never touched.
#
# Environment:
#   CKPT_TEST_NODEID   corosync nodeid of the private node (default 1)
# Exported to CMD:
#   CKPT_COROSYNC_DIR  the node's temp dir (etc/, lib/, log/corosync.log)
#   CKPT_COROSYNC_PID  corosync's PID inside the namespace
# On failure the corosync log is printed on stderr.  Needs root.  Exit 77 when it cannot run.
set -euo pipefail

if [[ $# -eq 0 ]]; then
  echo "usage: $0 CMD [ARG...]" >&2
  exit 2
fi

if [[ "${_CKPT_WITH_COROSYNC_INNER:-}" != 1 ]]; then
  if [[ $EUID -ne 0 ]]; then
    echo "with_corosync.sh: needs root (namespaces, bind mounts)" >&2
    exit 77
  fi
  for tool in unshare ip corosync corosync-cpgtool; do
    if ! command -v "$tool" >/dev/null; then
      echo "with_corosync.sh: $tool not found" >&2
      exit 77
    fi
  done
  dir=$(mktemp -d /tmp/ckpt-corosync.XXXXXX)
  child=
  # shellcheck disable=SC2317  # invoked by the EXIT trap
  cleanup() {
    if [[ -n "$child" ]]; then kill -KILL "$child" 2>/dev/null || true; fi
    rm -rf "$dir"
  }
  trap cleanup EXIT
  trap 'exit 143' TERM INT
  # The forked child is PID 1 of the new PID namespace: when it exits, the kernel kills
  # everything left inside (corosync included).
  _CKPT_WITH_COROSYNC_INNER=1 _CKPT_WITH_COROSYNC_DIR="$dir" \
    unshare --net --mount --pid --fork --propagation private "$0" "$@" &
  child=$!
  rc=0
  wait "$child" || rc=$?
  child=
  exit "$rc"
fi

# ---- inside the namespaces ----
dir=$_CKPT_WITH_COROSYNC_DIR
nodeid=${CKPT_TEST_NODEID:-1}
unset _CKPT_WITH_COROSYNC_INNER _CKPT_WITH_COROSYNC_DIR

ip link set lo up
mount -t proc proc /proc
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm
mkdir -p "$dir"/etc "$dir"/lib "$dir"/log
mount --bind "$dir"/etc /etc/corosync
mount --bind "$dir"/lib /var/lib/corosync
mount --bind "$dir"/log /var/log/corosync

cat >/etc/corosync/corosync.conf <<EOF
totem {
  version: 2
  cluster_name: ckpt-test
  transport: knet
  crypto_cipher: none
  crypto_hash: none
}
nodelist {
  node {
    ring0_addr: 127.0.0.1
    name: n${nodeid}
    nodeid: ${nodeid}
  }
}
quorum {
  provider: corosync_votequorum
}
logging {
  to_stderr: no
  to_syslog: no
  to_logfile: yes
  logfile: /var/log/corosync/corosync.log
  timestamp: on
}
EOF

log=/var/log/corosync/corosync.log
show_log() {
  echo "---- corosync log ($log) ----" >&2
  cat "$log" >&2 2>/dev/null || true
  echo "---- end of corosync log ----" >&2
}

corosync -f >"$dir"/log/corosync.stdout 2>&1 &
cs_pid=$!

ready=0
for _ in $(seq 1 200); do
  if ! kill -0 "$cs_pid" 2>/dev/null; then
    echo "with_corosync.sh: corosync exited during startup" >&2
    cat "$dir"/log/corosync.stdout >&2 || true
    show_log
    exit 1
  fi
  if corosync-cpgtool >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.1
done
if [[ $ready -ne 1 ]]; then
  echo "with_corosync.sh: corosync did not answer within 20 s" >&2
  show_log
  kill -KILL "$cs_pid" 2>/dev/null || true
  exit 1
fi

export CKPT_COROSYNC_DIR=$dir CKPT_COROSYNC_PID=$cs_pid
rc=0
"$@" || rc=$?

if [[ $rc -ne 0 ]]; then
  echo "with_corosync.sh: command exited with status $rc" >&2
  show_log
fi
kill -TERM "$cs_pid" 2>/dev/null || true
for _ in $(seq 1 100); do
  kill -0 "$cs_pid" 2>/dev/null || break
  sleep 0.1
done
kill -KILL "$cs_pid" 2>/dev/null || true
wait "$cs_pid" 2>/dev/null || true
exit "$rc"
