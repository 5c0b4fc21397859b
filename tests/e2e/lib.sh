# tests/e2e/lib.sh -- boots a real systemd 252 as PID 1 in a systemd-nspawn
# container and runs commands in it. Sourced by run.sh; bash, set -euo pipefail.
#
# What this machine forces (learned the hard way, see the team's
# systemd-container recipe):
# - There is no host systemd, machined or D-Bus: nspawn runs with
#   --register=no --keep-unit, and we enter the container with nsenter on its
#   PID 1, never machinectl or systemd-run -M.
# - cgroup resource limits (MemoryMax=, TasksMax=) are not enforced in here;
#   per-unit process tracking is. No step may depend on resource limits.
# - `journalctl ... | grep -q` under pipefail fails falsely (SIGPIPE): capture
#   output into a variable first, then match it.
# - The container has a private network namespace: its loopback is its own,
#   so its ports never clash with a waiterd another engineer runs on the
#   host's 127.0.0.1:9123, and no packet leaves the machine.

E2E_BASE=${E2E_BASE:-/var/tmp/waiter-e2e}
SUITE=bookworm
# Packages of the container beyond minbase. The cache key is derived from
# this list, so changing it rebuilds the rootfs.
INCLUDE=systemd,systemd-sysv,dbus,procps,iproute2
CACHE=$E2E_BASE/cache/$SUITE-$(echo "$SUITE $INCLUDE" | sha256sum | cut -c1-12).tar.zst
WORK=${WORK:-$E2E_BASE/run-$$}   # this run's scratch: rootfs, share, logs
ROOT=$WORK/rootfs
SHARE=$WORK/share                # read-only at /share in the container
MACHINE=${MACHINE:-waiter-e2e}

ts() { date +%s.%N; }
el() { awk -v a="$1" -v b="$(ts)" 'BEGIN{printf "%.1fs", b-a}'; }
log() { echo "[$(date +%T)] $*" >&2; }

# make_rootfs unpacks the cached rootfs, or debootstraps one (~40 s) and
# caches it when the cache is missing. A lock keeps two runs from writing
# the cache at once.
make_rootfs() {
  mkdir -p "$ROOT" "$SHARE" "$(dirname "$CACHE")"
  local t; t=$(ts)
  exec 9>"$CACHE.lock"
  flock -w 600 9
  if [ -s "$CACHE" ] && [ -z "${NOCACHE:-}" ]; then
    tar -C "$ROOT" --zstd --numeric-owner --xattrs --xattrs-include='*' -xpf "$CACHE"
    log "rootfs from cache $CACHE in $(el "$t")"
  else
    local mirror
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
    if ! timeout 600 debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOT" "$mirror" >"$WORK/debootstrap.log" 2>&1; then
      tail -n 30 "$WORK/debootstrap.log" >&2
      flock -u 9; exec 9>&-
      return 1
    fi
    echo "$MACHINE" >"$ROOT/etc/hostname"
    : >"$ROOT/etc/machine-id"    # nspawn supplies a transient one
    # apt's lists and debs are not needed in the container: keep the cache small.
    rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*_Packages
    log "debootstrap in $(el "$t")"
    t=$(ts)
    tar -C "$ROOT" --zstd --numeric-owner --xattrs --xattrs-include='*' -cpf "$CACHE.tmp" . && mv "$CACHE.tmp" "$CACHE"
    log "cached rootfs ($(du -h "$CACHE" | cut -f1)) at $CACHE in $(el "$t")"
  fi
  flock -u 9; exec 9>&-
}

nspawn_pid() { cat "$WORK/nspawn.pid" 2>/dev/null; }
# leader is the container's PID 1 (systemd), a child of systemd-nspawn.
leader() { pgrep -P "$(nspawn_pid)" -x systemd; }

# in_c runs a command in all the namespaces of the container's PID 1, with a
# clean environment.
in_c() {
  nsenter -t "$(leader)" -a -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb \
    SYSTEMD_PAGER= SYSTEMD_COLORS=0 LANG=C.UTF-8 "$@"
}

boot() {
  local t st="" i
  t=$(ts)
  setsid systemd-nspawn -D "$ROOT" -b -M "$MACHINE" --register=no --keep-unit --private-network \
    --console=read-only --bind-ro="$SHARE":/share >"$WORK/boot.log" 2>&1 </dev/null &
  echo $! >"$WORK/nspawn.pid"
  for i in $(seq 1 300); do leader >/dev/null 2>&1 && break; sleep 0.1; done
  leader >/dev/null 2>&1 || { cat "$WORK/boot.log" >&2; return 1; }
  # is-system-running needs the manager's private socket: retry until it answers.
  for i in $(seq 1 60); do
    st=$(in_c timeout 60 systemctl is-system-running --wait 2>/dev/null) && break
    [ "$st" = degraded ] && break
    sleep 0.5
  done
  log "booted ($st) in $(el "$t")"
  [ "$st" = running ] || { in_c systemctl --failed --no-pager >&2 || true; return 1; }
}

# halt powers the container off cleanly: nspawn forwards SIGTERM to PID 1 as
# SIGRTMIN+3. SIGKILL after 30 s.
halt() {
  local p i t
  p=$(nspawn_pid) || return 0
  [ -n "$p" ] || return 0
  t=$(ts)
  if kill -0 "$p" 2>/dev/null; then
    kill -TERM "$p"
    for i in $(seq 1 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then log "halt timed out: SIGKILL"; kill -KILL "$p"; fi
    log "halted in $(el "$t")"
  fi
  rm -f "$WORK/nspawn.pid"
}

# reap_stale removes the scratch of earlier runs that are gone (killed before
# their cleanup). A run still going (its run.sh alive) or a kept container
# (KEEP=1, its nspawn alive) is left alone.
reap_stale() {
  local d p alive
  echo $$ >"$WORK/owner.pid"
  for d in "$E2E_BASE"/run-*; do
    [ -d "$d" ] && [ "$d" != "$WORK" ] || continue
    alive=""
    for p in $(cat "$d/owner.pid" "$d/nspawn.pid" 2>/dev/null); do
      kill -0 "$p" 2>/dev/null && alive=1
    done
    [ -z "$alive" ] || continue
    log "removing stale $d"
    rm -rf "$d"
  done
}
