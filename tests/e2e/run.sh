#!/bin/bash
# tests/e2e/run.sh -- waiter's end-to-end suite (`make e2e`, run by `make
# test` and so by CI): boots a real systemd 252 in a systemd-nspawn
# container, installs the .deb that `make deb` built, and checks what a user
# of the package would see. See tests/e2e/README.md.
#
#   KEEP=1 tests/e2e/run.sh   leave the container up afterwards (make e2e-keep)
#   STEPS="1 3" ...           run only these steps (after the install)
#   NOCACHE=1 ...             debootstrap the rootfs again
#
# Needs root. All traffic stays on the container's own loopback (a private
# network namespace), so the suite never meets a waiterd running on the
# host's 127.0.0.1:9123; every loop is bounded in count and time.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
here=$top/tests/e2e
# shellcheck source=tests/e2e/lib.sh
source "$here/lib.sh"

KEEP=${KEEP:-}
STEPS=${STEPS:-}
DIST=${DIST:-$top/dist}
MYD_PORT=9200          # myd.socket; myd-accept.socket is the next port
FDS=waiterd-fds        # step fdstore: waiterd binding its own socket...
FDS_PORT=9300          # ...here, then on the next port
SUITE_T0=$(ts)

[ "$(id -u)" = 0 ] || { echo "tests/e2e/run.sh: run as root (it boots a container)" >&2; exit 1; }
export PATH=$PATH:/usr/local/go/bin

cleanup() {
  local rc=$?
  if [ -n "$KEEP" ] && [ -f "$WORK/nspawn.pid" ]; then
    keep_banner
  else
    halt || true
    rm -rf "$WORK"
  fi
  exit $rc
}

keep_banner() {
  local p; p=$(leader 2>/dev/null || echo "?")
  cat >&2 <<EOF

The container is still up (KEEP=1), with waiterd and myd installed.
  enter:  nsenter -t $p -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin TERM=\$TERM LANG=C.UTF-8 bash -l
  try:    systemctl status waiterd.socket waiterd; waiterctl status; /share/loadclient -c 4 -d 5s; journalctl -u waiterd
  stop:   kill -TERM $(nspawn_pid) && sleep 3 && rm -rf $WORK
EOF
}

# --- host side: tools, packages, the client ------------------------------

"$top/tests/deps.sh" >/dev/null
mkdir -p "$WORK" "$SHARE"
trap cleanup EXIT
trap 'exit 130' INT TERM
reap_stale

version=$(cat "$top/VERSION" 2>/dev/null || echo 0.1.0)
deb=$(ls -t "$DIST"/waiterd_"$version"-*_amd64.deb 2>/dev/null | head -n 1 || true)
if [ -z "$deb" ]; then
  log "no $DIST/waiterd_$version-*_amd64.deb: building it (make deb)"
  "$top/packaging/build-deb.sh" -out "$DIST"
  deb=$(ls -t "$DIST"/waiterd_"$version"-*_amd64.deb | head -n 1)
fi
cp "$deb" "$SHARE/waiterd.deb"
log "waiterd package: $deb"

t=$(ts)
# jsonq reads waiterctl's JSON on the host: the container has no jq or python3.
(cd "$top" && CGO_ENABLED=0 go build -trimpath -o "$SHARE/loadclient" ./tests/e2e/loadclient &&
  CGO_ENABLED=0 go build -trimpath -o "$WORK/jsonq" ./tests/e2e/jsonq &&
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$WORK/myd" ./tests/e2e/myd)
# myd is packaged with the same machinery a user runs: a name, a port, a
# binary and its source tree (which dates the package); -waiterctl ships its
# own /usr/libexec/myd/waiterctl, which its ExecReload= runs.
"$top/packaging/build-deb.sh" -name myd -port "$MYD_PORT" -binary "$WORK/myd" -source-dir "$here/myd" -waiterctl \
  -config "$here/myd/myd.yaml" ${MYD_UNITS:+-units "$MYD_UNITS"} -summary "second waiter daemon of the end-to-end suite" -out "$WORK/myd-deb" 2>"$WORK/myd-deb.log" ||
  { cat "$WORK/myd-deb.log" >&2; exit 1; }
cp "$WORK"/myd-deb/myd_*_amd64.deb "$SHARE/myd.deb"
log "built loadclient, jsonq, myd and myd's package (lintian clean) in $(el "$t")"

# --- the container ------------------------------------------------------

# Reproducible: the same tree, copied elsewhere and built again with an empty
# Go build cache (so the compiler really runs again), gives the same bytes as
# `make deb`. Skipped with REPRO=0.
repro() {
  local a b c name
  [ "${REPRO:-1}" != 0 ] || { log "reproducibility check skipped (REPRO=0)"; return 0; }
  log "reproducibility: building the package again from a copy, with an empty Go cache"
  name=$(basename "$deb")
  mkdir -p "$WORK/src"
  tar -C "$top" --exclude=./dist -cf - . | tar -C "$WORK/src" -xf -
  GOCACHE=$WORK/gocache "$WORK/src/packaging/build-deb.sh" -nolint -out "$WORK/repro" 2>"$WORK/repro.log" ||
    { cat "$WORK/repro.log" >&2; echo "FAIL: the second build failed" >&2; return 1; }
  rm -rf "$WORK/gocache" "$WORK/src"
  a=$(sha256sum <"$deb" | cut -d' ' -f1)
  b=$(sha256sum <"$WORK/repro/$name" | cut -d' ' -f1)
  echo "    sha256 $a  $deb" >&2
  echo "    sha256 $b  the same, rebuilt from a copy with an empty Go cache" >&2
  [ "$a" != "$b" ] || return 0
  # A dist/ left from an older tree (run.sh run without make deb) differs
  # too: build this tree once more, as make deb does, to tell the two apart.
  "$top/packaging/build-deb.sh" -nolint -out "$WORK/repro-again" 2>>"$WORK/repro.log" ||
    { cat "$WORK/repro.log" >&2; echo "FAIL: the third build failed" >&2; return 1; }
  c=$(sha256sum <"$WORK/repro-again/$name" | cut -d' ' -f1)
  echo "    sha256 $c  the same, built again in place" >&2
  if [ "$b" = "$c" ]; then
    echo "    (so $deb is of an older tree: run make deb; the container tests it all the same)" >&2
    return 0
  fi
  echo "FAIL: two builds of one tree differ" >&2
  return 1
}
repro_ok=1
t=$(ts)
repro || repro_ok=0
repro_t=$(el "$t")

make_rootfs
boot

c() { in_c timeout 120 "$@"; }

# journal_dump is what a failed step prints: the units' states and journals.
journal_dump() {
  echo "----- systemctl status -----"
  c systemctl status --no-pager --lines=0 waiterd.socket waiterd.service waiterd-accept.socket myd.socket myd.service "$FDS.service" 2>&1 || true
  echo "----- journalctl (waiterd, myd units; last 150) -----"
  c journalctl --no-pager -o short-precise -n 150 -u waiterd.socket -u waiterd.service \
    -u 'waiterd-accept*' -u myd.socket -u myd.service -u 'myd-accept*' -u "$FDS.service" 2>&1 || true
  echo "----- journalctl -p warning (last 30) -----"
  c journalctl --no-pager -o short-precise -n 30 -p warning 2>&1 || true
  c journalctl --no-pager -o short-precise >"$E2E_BASE/failed-journal.txt" 2>&1 || true
  echo "----- the container's whole journal: $E2E_BASE/failed-journal.txt -----"
}

fail() { echo "FAIL: $*" >&2; journal_dump >&2; exit 1; }
note() { printf '%s\n' "$*" | sed 's/^ */    /' >&2; }

# expect WHAT HAVE WANT
expect() { [ "$2" = "$3" ] || fail "$1: have '$2', want '$3'"; note "$1: $2"; }

# wait_for SECONDS WHAT CMD...: polls CMD every 0.2 s until it succeeds.
wait_for() {
  local secs=$1 what=$2 i
  shift 2
  for i in $(seq 1 $((secs * 5))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  fail "$what: not within ${secs}s"
}

prop() { c systemctl show -p "$2" --value "$1"; }
is_active() { [ "$(prop "$1" ActiveState)" = active ]; }
# reply PORT [lport]: one client's whole reply.
reply() {
  local lp=()
  [ -z "${2:-}" ] || lp=(-lport "$2")
  # Its summary goes to stderr only when it failed, to explain the reply.
  c /share/loadclient -addr "127.0.0.1:$1" -c 1 -n 1 -want "${WANT:-hello world\n}" -print "${lp[@]}" \
    2>"$WORK/reply.err" || cat "$WORK/reply.err" >&2
}
has_status() { [ -n "$(prop waiterd.service StatusText)" ]; }
has_error_since() { [ -n "$(journal_since "$1" -u waiterd.service -p err..err)" ]; }
mainpid_changed() { local p; p=$(prop "$1" MainPID); [ "$p" != 0 ] && [ "$p" != "$2" ]; }
no_active_units() { [ -z "$(c systemctl list-units --no-legend --state=active "$1")" ]; }
listening() { local out; out=$(c ss -Htln "sport = :$1"); [ -n "$out" ]; }
not_listening() { ! listening "$1"; }
journal_since() { c journalctl --no-pager -o cat --since "@$1" "${@:2}"; }
now() { date +%s; }

# load_start NAME PORT CLIENTS SECONDS: the steady load, inside the
# container, in the background; load_wait NAME checks it saw no failure.
load_start() {
  in_c timeout $(($4 + 30)) /share/loadclient -addr "127.0.0.1:$2" -c "$3" -d "$4s" -pause 5ms \
    >"$WORK/load-$1.log" 2>&1 &
  echo $! >"$WORK/load-$1.pid"
}
load_wait() {
  local rc=0
  wait "$(cat "$WORK/load-$1.pid")" || rc=$?
  note "$(grep 'loadclient:' "$WORK/load-$1.log" | head -n 12)"
  [ "$rc" = 0 ] || fail "load during $1: some connection failed (loadclient exit $rc)"
}

# The control socket and waiterctl, as the package installs them.
CTL=/usr/bin/waiterctl
CTL_SOCK=/run/waiterd/control
# ctl_status [WAITERCTL -s SOCKET]: the master's status as waiterctl -json
# prints it, into $WORK/status.json; non-zero (the reason in
# $WORK/status.err) unless waiterctl succeeded and it is one JSON value.
# ctl_json is the same, failing the step. st PATH... reads it
# (tests/e2e/jsonq: a missing field is an error).
ctl_status() {
  [ $# -gt 0 ] || set -- "$CTL" -s "$CTL_SOCK"
  : >"$WORK/status.json"
  c "$@" -json status >"$WORK/status.json" 2>"$WORK/status.err" || return 1
  "$WORK/jsonq" <"$WORK/status.json" 2>"$WORK/status.err"
}
ctl_json() {
  [ $# -gt 0 ] || set -- "$CTL" -s "$CTL_SOCK"
  ctl_status "$@" || fail "$* -json status: $(cat "$WORK/status.err"): $(head -c 400 "$WORK/status.json")"
}
st() { "$WORK/jsonq" "$@" <"$WORK/status.json"; }
# unit_pids UNIT: the processes of UNIT's cgroup, sorted.
unit_pids() {
  local cg
  cg=$(prop "$1" ControlGroup)
  c sh -c "cat /sys/fs/cgroup/unified$cg/cgroup.procs 2>/dev/null || cat /sys/fs/cgroup$cg/cgroup.procs 2>/dev/null || cat /sys/fs/cgroup/systemd$cg/cgroup.procs" | sort -n
}
# workers_match: waiterctl lists exactly the processes of waiterd.service
# but the master, all of generation $GEN (if set), $COUNT (if set) of them.
workers_match() {
  local main have want gens
  ctl_status || return 1
  main=$(prop waiterd.service MainPID)
  have=$(st workers.*.pid | tr ' ' '\n' | sort -n | tr '\n' ' ')
  want=$(unit_pids waiterd.service | grep -vx "$main" | tr '\n' ' ')
  [ "$have" = "$want" ] || return 1
  [ -z "${COUNT:-}" ] || [ "$(st workers.#)" = "$COUNT" ] || return 1
  gens=$(st workers.*.generation | tr ' ' '\n' | sort -u)
  [ -z "${GEN:-}" ] || [ "$gens" = "$GEN" ] || return 1
}
# serving: waiterd.service active (a client starts it, if need be).
serving() {
  is_active waiterd.service || reply 9123 >/dev/null
  wait_for 10 "waiterd.service active" is_active waiterd.service
  wait_for 10 "the control socket $CTL_SOCK" c test -S "$CTL_SOCK"
}

snapshot() { # every file and every user, for step 6's purge check
  c find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \
    -o -path /var/tmp -o -path /var/log -o -path /var/lib/dpkg -o -path /var/cache \
    -o -path /share -o -path /var/lib/systemd/timers -o -path /var/lib/systemd/random-seed \
    -o -path /var/lib/systemd/catalog \) -prune -o -print | sort
  c cat /etc/passwd /etc/group /etc/shadow /etc/gshadow
}

# --- the steps ------------------------------------------------------------

# The examples' steps (kvd, kvd-queued, tlsecho, httpd).
# shellcheck source=tests/e2e/examples.sh
source "$here/examples.sh"

results=() passed=0 failed=0
if [ "${REPRO:-1}" = 0 ]; then
  results+=("SKIP  repro: REPRO=0")
elif [ "$repro_ok" = 1 ]; then
  results+=("PASS  repro: two builds of the package are identical ($repro_t)"); passed=$((passed + 1))
else
  results+=("FAIL  repro: two builds of the package are identical ($repro_t)"); failed=$((failed + 1))
fi
run_step() {
  local id=$1 title=$2 fn=$3 t rc=0
  if [ -n "$STEPS" ] && [ "$id" != install ] && [[ " $STEPS " != *" $id "* ]]; then return 0; fi
  log "step $id: $title"
  t=$(ts)
  set +e
  (set -e; "$fn")
  rc=$?
  set -e
  if [ $rc = 0 ]; then
    results+=("PASS  $id: $title ($(el "$t"))"); passed=$((passed + 1))
  else
    results+=("FAIL  $id: $title ($(el "$t"))"); failed=$((failed + 1))
  fi
  return 0
}

step_install() {
  snapshot >"$WORK/before.txt"
  c dpkg -i /share/waiterd.deb /share/myd.deb >"$WORK/dpkg-install.log" 2>&1 ||
    { cat "$WORK/dpkg-install.log" >&2; fail "dpkg -i"; }
  for u in waiterd.socket waiterd-accept.socket myd.socket myd-accept.socket; do
    expect "$u enabled" "$(c systemctl is-enabled "$u" || true)" enabled
    expect "$u active" "$(prop "$u" ActiveState)" active
  done
  # The services are socket activated: not enabled (so not started at boot
  # either), the first client starts them.
  for u in waiterd.service myd.service; do
    expect "$u enabled" "$(c systemctl is-enabled "$u" || true)" disabled
  done
  expect "/etc/waiterd/waiterd.yaml is a conffile" "$(c dpkg-query -W -f='${Conffiles}' waiterd | awk '{print $1}')" /etc/waiterd/waiterd.yaml
  c man -w waiterd >/dev/null 2>&1 || c test -f /usr/share/man/man8/waiterd.8.gz || fail "no man page"
  c test -f /usr/share/doc/waiterd/copyright || fail "no copyright file"
  c test -f /usr/share/doc/waiterd/changelog.Debian.gz || fail "no changelog.Debian.gz"
  expect "waiterctl and myd's own" "$(c stat -c '%a %U' "$CTL" /usr/libexec/myd/waiterctl | tr '\n' ' ')" "755 root 755 root "
  c man -w waiterctl >/dev/null 2>&1 || c test -f /usr/share/man/man1/waiterctl.1.gz || fail "no waiterctl man page"
  expect "waiterd's reload" "$(c sed -n 's/^ExecReload=//p' /lib/systemd/system/waiterd.service)" "$CTL -s $CTL_SOCK -timeout 85s reload"
}

step_1() {
  listening 9123 || fail "nothing listens on 9123 after install"
  expect "waiterd.service before the first client" "$(prop waiterd.service ActiveState)" inactive
  expect "first client's reply" "$(reply 9123)" "hello world"
  wait_for 10 "waiterd.service active after the first client" is_active waiterd.service
  note "waiterd.service active, MainPID $(prop waiterd.service MainPID)"
}

step_2() {
  local st out prios t
  t=$(now)
  wait_for 5 "a STATUS= from waiterd" has_status
  st=$(prop waiterd.service StatusText)
  [ -n "$st" ] || fail "StatusText is empty: waiterd sent no STATUS="
  out=$(c systemctl status --no-pager waiterd.service 2>&1 || true)
  note "$(printf '%s\n' "$out" | grep -E 'Active:|Status:' | sed 's/^ *//')"
  [[ $out == *"Status: \"$st\""* ]] || fail "systemctl status shows no Status: line ($st)"
  [[ $st == *workers* ]] || fail "STATUS '$st' does not count workers"
  # Info lines: the journal has waiterd's own, as native entries at priority 6.
  out=$(c journalctl --no-pager -o cat -u waiterd.service -p info..info SYSLOG_IDENTIFIER=waiterd)
  [[ $out == *"waiter: serving"* ]] || fail "no 'waiter: serving' line at priority info (6)"
  # An error line: a reload with a bad value in the config must fail
  # (ExecReload= is waiterctl reload, which fails when the master refuses),
  # be logged at priority err (3) naming the key, and leave the service
  # running as it was.
  c cp /etc/waiterd/waiterd.yaml /run/waiterd.yaml.orig
  c sh -c 'echo "spares: 999" >>/etc/waiterd/waiterd.yaml'
  local pid; pid=$(prop waiterd.service MainPID)
  if c systemctl reload waiterd.service; then
    fail "systemctl reload of a broken file succeeded"
  fi
  note "systemctl reload of the broken file: failed, as it should"
  out=$(c systemctl status --no-pager -n 20 waiterd.service 2>&1 || true)
  [[ $out == *"spares"* ]] || fail "systemctl status does not show why the reload failed"
  c cp /run/waiterd.yaml.orig /etc/waiterd/waiterd.yaml
  c systemctl reload waiterd.service || fail "systemctl reload of the good file failed"
  wait_for 10 "an error line after a bad reload" has_error_since "$t"
  out=$(c journalctl --no-pager -o cat -u waiterd.service -p err..err --since "@$t")
  note "priority err: $(printf '%s\n' "$out" | head -n 1)"
  [[ $out == *"spares"* ]] || fail "the error line does not name the bad key spares"
  prios=$(c journalctl --no-pager -u waiterd.service --since "@$t" -o verbose --output-fields=PRIORITY,MESSAGE | grep -c 'PRIORITY=3' || true)
  [ "$prios" -ge 1 ] || fail "no PRIORITY=3 field"
  expect "MainPID after the refused reload" "$(prop waiterd.service MainPID)" "$pid"
  wait_for 10 "waiterd.service active after the refused reload" is_active waiterd.service
  expect "reply after the refused reload" "$(reply 9123)" "hello world"
}

# step_ctl: waiterctl on the installed service's control socket shows the
# pool as the master and systemd see it, as text and as JSON; a user other
# than root and the service's own cannot even connect.
step_ctl() {
  local pid out rc=0 p uid
  serving
  pid=$(prop waiterd.service MainPID)
  # Mode 0600, owned by the service's dynamic user (by uid: the container
  # may have no nss-systemd to name it).
  uid=$(c ps -o uid= -p "$pid" | tr -d ' ')
  [ -n "$uid" ] && [ "$uid" != 0 ] || fail "the master (pid $pid) runs as uid '$uid', want a dynamic user's"
  expect "the control socket's mode and owner" "$(c stat -c '%a %u' "$CTL_SOCK")" "600 $uid"
  # The text, with waiterctl's default socket.
  out=$(c "$CTL" status) || fail "waiterctl status failed: $out"
  note "$(printf '%s\n' "$out" | head -n 4)"
  [[ $out == *"pid $pid, prefork mode"* ]] || fail "waiterctl status does not show the master (pid $pid) in prefork mode"
  [[ $out == *":9123 "* ]] || fail "waiterctl status does not show the listener on port 9123"
  # The JSON: every worker of the unit's cgroup, and only those; prefork 8
  # (packaging/waiterd.yaml), all of them there at rest.
  COUNT=8 GEN="" wait_for 30 "waiterctl's workers are the unit's processes but the master" workers_match
  expect "JSON mode, pid, prefork" "$(st mode pid prefork | tr '\n' ' ')" "prefork $pid 8 "
  [[ " $(st listeners.*.addr) " == *":9123 "* ]] || fail "no listener on port 9123 in the JSON: $(st listeners.*.addr)"
  note "JSON: $(st workers.#) workers ($(st workers.*.pid)), listeners $(st listeners.*.addr), generation $(st serving) serving"
  for p in $(st workers.*.pid); do
    [[ $out == *$'\n'"  $p "* ]] || fail "waiterctl status does not list worker $p"
  done
  # Anyone else is refused.
  out=$(c runuser -u nobody -- "$CTL" -s "$CTL_SOCK" status 2>&1) || rc=$?
  [ "$rc" != 0 ] || fail "waiterctl status as nobody succeeded: $out"
  [[ $out == *"permission denied"* ]] || fail "waiterctl status as nobody: exit $rc, but not 'permission denied': $out"
  note "as nobody: exit $rc, $out"
  expect "MainPID after waiterctl" "$(prop waiterd.service MainPID)" "$pid"
  expect "reply after waiterctl" "$(reply 9123)" "hello world"
}

# step_ctl_reload: with ExecReload= running waiterctl, `systemctl reload`
# says how the reload went. A bad value in the unit's config file fails it,
# with the reason in the journal, the old generation serving on; the file
# fixed (prefork 4), it returns 0 only once the new generation serves.
step_ctl_reload() {
  local conf pid g0 g1 t rc=0 out i
  serving
  conf=$(prop waiterd.service ExecStart | sed -n 's/.*-config \([^ ;]*\).*/\1/p' | head -n 1)
  [ -n "$conf" ] || fail "no -config in waiterd.service's ExecStart: $(prop waiterd.service ExecStart)"
  note "the unit's config: $conf"
  c cp "$conf" /run/waiterd-e2e.yaml.orig
  pid=$(prop waiterd.service MainPID)
  ctl_json
  g0=$(st serving)
  t=$(now)
  sleep 1 # the journal's --since has a resolution of a second
  c sed -i 's/^prefork:.*/prefork: lots/' "$conf"
  c systemctl reload waiterd.service 2>"$WORK/reload.err" || rc=$?
  [ "$rc" != 0 ] || fail "systemctl reload with prefork: lots exited 0"
  note "systemctl reload with prefork: lots: exit $rc ($(head -n 1 "$WORK/reload.err"))"
  # waiterctl's one line, in the unit's journal, says why.
  for i in $(seq 1 50); do
    out=$(journal_since "$t" -u waiterd.service | grep '^waiterctl: ' || true)
    [[ $out == *prefork*lots* ]] && break
    sleep 0.2
  done
  [[ $out == *prefork*lots* ]] || fail "no waiterctl line naming prefork: lots in the journal: '$out'"
  note "journal: $out"
  out=$(journal_since "$t" -u waiterd.service -p err..err)
  [[ $out == *prefork* ]] || fail "the master logged no error naming prefork: '$out'"
  out=$(c systemctl status --no-pager -n 20 waiterd.service 2>&1 || true)
  [[ $out == *"waiterctl: "*prefork* ]] || fail "systemctl status does not show why the reload failed"
  # Still active, the same master, the old generation serving.
  expect "waiterd.service after the refused reload" "$(prop waiterd.service ActiveState)" active
  expect "MainPID after the refused reload" "$(prop waiterd.service MainPID)" "$pid"
  ctl_json
  expect "generation serving after the refused reload" "$(st serving)" "$g0"
  expect "the last reload" "$(st last_reload.result)" refused
  expect "prefork after the refused reload" "$(st prefork)" 8
  expect "reply after the refused reload" "$(reply 9123)" "hello world"

  # Fixed, and changed: prefork 4. Right after systemctl reload returns,
  # the new generation serves (no waiting here).
  c cp /run/waiterd-e2e.yaml.orig "$conf"
  c sed -i 's/^prefork:.*/prefork: 4/' "$conf"
  c systemctl reload waiterd.service 2>"$WORK/reload.err" || fail "systemctl reload with prefork: 4 failed: $(cat "$WORK/reload.err")"
  expect "waiterd.service right after the reload" "$(prop waiterd.service ActiveState)" active
  ctl_json
  g1=$(st serving)
  [ "$g1" -gt "$g0" ] 2>/dev/null || fail "generation $g1 serving after the reload, want one newer than $g0"
  expect "the newest generation is the one serving" "$(st generation)" "$g1"
  expect "the last reload" "$(st last_reload.result) $(st last_reload.generation)" "ok $g1"
  expect "prefork after the reload" "$(st prefork)" 4
  expect "reply after the reload" "$(reply 9123)" "hello world"
  expect "MainPID after the reload (a reload is no restart)" "$(prop waiterd.service MainPID)" "$pid"
  # The old generation retires (graceful_timeout 20 s at most).
  COUNT=4 GEN=$g1 wait_for 30 "4 workers, all of generation $g1, the unit's only processes but the master" workers_match
  note "generation $g0 -> $g1: $(st workers.#) workers ($(st workers.*.pid))"
  # Back as it was, for the steps after.
  c cp /run/waiterd-e2e.yaml.orig "$conf"
  c systemctl reload waiterd.service || fail "systemctl reload of the original file failed"
  ctl_json
  expect "prefork after reloading the original file" "$(st prefork)" 8
}

# A restart with a broken configuration fails, and must not fail the socket:
# a client that connects meanwhile waits in the queue, and once the file is
# fixed it is served, with no systemctl reset-failed.
queued_served() { [[ $(c cat /run/queued.out 2>/dev/null) == *"hello world"* ]]; }
step_broken_restart() {
  local out st
  c cp /etc/waiterd/waiterd.yaml /run/waiterd.yaml.orig
  c sh -c 'echo "prefork: lots" >>/etc/waiterd/waiterd.yaml'
  if c systemctl restart waiterd.service; then
    fail "systemctl restart with a broken file succeeded"
  fi
  note "restart with the broken file: failed, as it should"
  # A client while the file is broken: queued by the socket, retriggering
  # starts that fail; it must still be served once the file is fixed.
  c sh -c 'timeout 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/9123; cat <&3" >/run/queued.out 2>&1 &'
  sleep 4
  st=$(prop waiterd.socket ActiveState)
  expect "waiterd.socket while the file is broken and a client waits" "$st" "active"
  c cp /run/waiterd.yaml.orig /etc/waiterd/waiterd.yaml
  wait_for 15 "the queued client served after the fix" queued_served
  note "queued client's reply: $(c cat /run/queued.out)"
  expect "waiterd.socket after the fix" "$(prop waiterd.socket ActiveState)" "active"
  expect "waiterd.service after the fix" "$(prop waiterd.service ActiveState)" "active"
  expect "reply after the fix, with no reset-failed" "$(reply 9123)" "hello world"
}

step_3() {
  local pid t out n
  pid=$(prop waiterd.service MainPID)
  t=$(now)
  load_start reload 9123 8 9
  sleep 1.5
  for i in 1 2 3; do
    c systemctl reload waiterd.service || fail "systemctl reload ($i) failed"
    sleep 2
  done
  load_wait reload
  out=$(journal_since "$t" -u waiterd.service)
  n=$(printf '%s\n' "$out" | grep -c 'reloading' || true)
  [ "$n" -ge 3 ] || fail "waiterd logged $n reloads, want 3"
  note "reloads logged: $n"
  expect "MainPID after reloads (a reload is no restart)" "$(prop waiterd.service MainPID)" "$pid"
}

step_4() {
  local pid pid2 sock
  sock=$(prop waiterd.socket ActiveEnterTimestampMonotonic)
  load_start restart 9123 8 10
  sleep 1.5
  for i in 1 2; do
    pid=$(prop waiterd.service MainPID)
    c systemctl restart waiterd.service || fail "systemctl restart ($i) failed"
    pid2=$(prop waiterd.service MainPID)
    [ "$pid2" != "$pid" ] && [ "$pid2" != 0 ] || fail "MainPID $pid -> $pid2: not restarted"
    note "restart $i: MainPID $pid -> $pid2"
    sleep 3
  done
  load_wait restart
  expect "waiterd.socket never restarted" "$(prop waiterd.socket ActiveEnterTimestampMonotonic)" "$sock"
}

step_5() {
  local dropin=/etc/systemd/system/waiterd.service.d/e2e-wedge.conf exec wd pid pid2 n0 t out secs
  wd=$(prop waiterd.service WatchdogUSec)
  note "WatchdogUSec=$wd"
  # WatchdogUSec reads like 10s, 1min 30s or 500ms; whole seconds, rounded up.
  secs=$(printf '%s\n' "$wd" | awk '{ t = 0; for (i = 1; i <= NF; i++) { v = $i + 0
    if ($i ~ /ms$/) t += v / 1000; else if ($i ~ /min$/) t += v * 60; else if ($i ~ /s$/) t += v }
    print int(t + 0.999) }')
  [ "$secs" -gt 0 ] 2>/dev/null || fail "waiterd.service has no WatchdogSec= (WatchdogUSec=$wd)"
  # The fault switch as a flag, added to the unit's own ExecStart by a drop-in.
  exec=$(c sed -n 's/^ExecStart=//p' /lib/systemd/system/waiterd.service | head -n 1)
  c mkdir -p "$(dirname "$dropin")"
  c sh -c "printf '[Service]\nExecStart=\nExecStart=%s -fault-wedge-on-usr2\n' '$exec' >$dropin"
  c systemctl daemon-reload
  c systemctl restart waiterd.service || fail "restart with the wedge drop-in"
  wait_for 10 "waiterd.service active with the wedge drop-in" is_active waiterd.service
  pid=$(prop waiterd.service MainPID)
  n0=$(prop waiterd.service NRestarts)
  # First, a healthy master keeps the watchdog fed: alive after 1.5 periods.
  sleep $((secs + secs / 2 + 1))
  expect "MainPID after 1.5 watchdog periods (watchdog fed)" "$(prop waiterd.service MainPID)" "$pid"
  t=$(now)
  c systemctl kill -s USR2 --kill-who=main waiterd.service
  # The watchdog fires within one period; then SIGABRT, the stop, RestartSec.
  wait_for $((secs * 2 + 30)) "a restart after the wedge" mainpid_changed waiterd.service "$pid"
  wait_for 15 "waiterd.service active again after the watchdog" is_active waiterd.service
  pid2=$(prop waiterd.service MainPID)
  note "MainPID $pid -> $pid2 after $(($(now) - t))s"
  expect "NRestarts" "$(prop waiterd.service NRestarts)" $((n0 + 1))
  out=$(journal_since "$t" -u waiterd.service)
  [[ $out == *"wedging"* ]] || fail "waiterd did not log that it wedged"
  [[ $out == *"Watchdog timeout"* ]] || fail "the journal does not say 'Watchdog timeout'"
  note "$(printf '%s\n' "$out" | grep -E 'Watchdog timeout|Scheduled restart|wedging' | head -n 3)"
  expect "reply after the watchdog restart" "$(reply 9123)" "hello world"
  c rm -f "$dropin"
  c systemctl daemon-reload
  c systemctl restart waiterd.service || fail "restart without the drop-in"
}

step_7() {
  local t out r1 r2
  t=$(now)
  r1=$(reply 9124 40124) r2=$(reply 9124 40125)
  expect "Accept=yes reply (client port 40124)" "$r1" "hello world"
  expect "Accept=yes reply (client port 40125)" "$r2" "hello world"
  # systemd names each instance after the connection: ...-127.0.0.1:PORT.
  out=$(journal_since "$t" -u 'waiterd-accept@*')
  for p in 40124 40125; do
    local inst
    inst=$(printf '%s\n' "$out" | grep -o "waiterd-accept@[^ ]*127\.0\.0\.1:$p\.service" | head -n 1)
    [ -n "$inst" ] || fail "no waiterd-accept@ instance for the client on port $p"
    note "instance: $inst"
  done
  wait_for 10 "the instances end with their clients" no_active_units 'waiterd-accept@*'
}

step_myd() {
  local ctl=/usr/libexec/myd/waiterctl
  expect "myd.service before its first client" "$(prop myd.service ActiveState)" inactive
  expect "myd's reply on $MYD_PORT" "$(WANT='myd\n' reply $MYD_PORT)" myd
  wait_for 10 "myd.service active after its first client" is_active myd.service
  # Its own waiterctl (build-deb.sh -waiterctl), on its own control socket.
  expect "myd's reload" "$(c sed -n 's/^ExecReload=//p' /lib/systemd/system/myd.service)" "$ctl -s /run/myd/control -timeout 85s reload"
  wait_for 10 "myd's control socket" c test -S /run/myd/control
  ctl_json "$ctl" -s /run/myd/control
  expect "myd's mode and pid (its waiterctl)" "$(st mode pid | tr '\n' ' ')" "prefork $(prop myd.service MainPID) "
  c systemctl reload myd.service || fail "systemctl reload myd failed"
  ctl_json "$ctl" -s /run/myd/control
  expect "myd's last reload" "$(st last_reload.result)" ok
  expect "myd's reply on $((MYD_PORT + 1)) (Accept=yes)" "$(WANT='myd\n' reply $((MYD_PORT + 1)))" myd
  expect "waiterd still on 9123" "$(reply 9123)" "hello world"
}

step_upgrade() {
  local pid sock
  wait_for 10 "waiterd.service active before the upgrade" is_active waiterd.service
  pid=$(prop waiterd.service MainPID)
  sock=$(prop waiterd.socket ActiveEnterTimestampMonotonic)
  load_start upgrade 9123 4 8
  sleep 1.5
  c dpkg -i /share/waiterd.deb >"$WORK/dpkg-upgrade.log" 2>&1 || { cat "$WORK/dpkg-upgrade.log" >&2; fail "dpkg -i (upgrade)"; }
  load_wait upgrade
  wait_for 10 "waiterd.service active after the upgrade" is_active waiterd.service
  [ "$(prop waiterd.service MainPID)" != "$pid" ] || fail "the upgrade did not restart waiterd.service (MainPID $pid)"
  note "MainPID $pid -> $(prop waiterd.service MainPID)"
  expect "waiterd.socket kept across the upgrade" "$(prop waiterd.socket ActiveEnterTimestampMonotonic)" "$sock"
  expect "waiterd.socket still enabled" "$(c systemctl is-enabled waiterd.socket || true)" enabled
}

# fd_store_lines UNIT: the fd store of UNIT as systemd sees it, the lines
# of `systemd-analyze dump` (252 takes no unit pattern: the whole dump, cut
# to UNIT's part); fd_store UNIT: its "MAX CURRENT".
fd_store_lines() {
  c systemd-analyze dump >"$WORK/dump.txt" || return 1
  awk -v u="-> Unit $1:" '$0 == u { on = 1; next } /^-> Unit / { on = 0 }
    on && /File Descriptor Store/ { sub(/^[ \t]+/, ""); print }' "$WORK/dump.txt"
}
fd_store() { fd_store_lines "$1" | awk '/Store Max:/ { m = $NF } /Store Current:/ { n = $NF } END { print m, n }'; }
# master_said PID TEXT: the journal of $FDS.service has TEXT from process PID.
master_said() { local out; out=$(c journalctl --no-pager -o cat -u "$FDS.service" _PID="$1"); [[ $out == *"$2"* ]]; }
fds_active() { is_active "$FDS.service"; }
# fds_units PORT [-check]: the generator in the container (the package's
# waiterd) writes $FDS.service for waiterd binding 127.0.0.1:PORT itself;
# -check checks it with the container's own systemd-analyze (252).
fds_units() {
  c /usr/bin/waiterd units -name "$FDS" -port "$1" -no-socket -exec /usr/bin/waiterd -config /etc/waiterd/waiterd.yaml \
    -description "waiterd binding its own socket" -graceful-timeout 20s -waiterctl "$CTL" \
    -out /etc/systemd/system "${@:2}" >"$WORK/fds-units.log" 2>&1 || { cat "$WORK/fds-units.log" >&2; fail "waiterd units -no-socket -port $1"; }
  c systemctl daemon-reload
}

# step_fdstore: a service that binds its own socket (no .socket unit), as
# `waiterd units -no-socket` writes it, keeps the socket in systemd's fd
# store: two restarts and a crash (Restart=) under steady load refuse no
# client, each new master serves the stored socket, systemd holds one fd
# throughout; a changed port drops the stored socket; a stop closes the
# store, and nothing listens.
step_fdstore() {
  local unit=/etc/systemd/system/$FDS.service t pid pid2 pid0 out i n
  fds_units "$FDS_PORT" -check
  note "$(grep -E 'exposure|verify' "$WORK/fds-units.log")"
  expect "$FDS.service's ExecStart" "$(c sed -n 's/^ExecStart=//p' "$unit")" \
    "/usr/bin/waiterd -config /etc/waiterd/waiterd.yaml -listen 127.0.0.1:$FDS_PORT"
  expect "$FDS.service's fd store and \$FDSTORE" "$(c grep -E '^(FileDescriptorStoreMax|Environment)=' "$unit" | tr '\n' ' ')" \
    "FileDescriptorStoreMax=4 Environment=FDSTORE=4 "
  c test ! -e "/etc/systemd/system/$FDS.socket" || fail "a $FDS.socket was written"
  if listening "$FDS_PORT"; then fail "something listens on $FDS_PORT before $FDS.service starts"; fi
  c systemctl start "$FDS.service" || fail "systemctl start $FDS.service"
  pid0=$(prop "$FDS.service" MainPID)
  wait_for 10 "the first master ($pid0) kept its socket in the fd store" master_said "$pid0" "kept in systemd's fd store"
  note "master $pid0: $(c journalctl --no-pager -o cat -u "$FDS.service" _PID="$pid0" | grep -E 'fd store' | head -n 1)"
  expect "reply on $FDS_PORT" "$(reply "$FDS_PORT")" "hello world"
  note "$(fd_store_lines "$FDS.service")"
  expect "the fd store (max, current) while it runs" "$(fd_store "$FDS.service")" "4 1"
  note "systemctl show: $(c systemctl show -p FileDescriptorStoreMax -p NFileDescriptorStore "$FDS.service" | tr '\n' ' ')"
  # PID 1 holds the listening socket itself, beside the master and workers.
  out=$(c ss -Htlnp "sport = :$FDS_PORT")
  [[ $out == *'"systemd",pid=1,'* ]] || fail "systemd does not hold the socket on $FDS_PORT: $out"
  note "ss -tlnp: $(printf '%s\n' "$out" | grep -o '"systemd",pid=1,fd=[0-9]*')"

  t=$(now)
  load_start fdstore "$FDS_PORT" 8 18
  sleep 1.5
  pid=$pid0
  for i in 1 2; do
    c systemctl restart "$FDS.service" || fail "systemctl restart $FDS.service ($i) failed"
    pid2=$(prop "$FDS.service" MainPID)
    [ "$pid2" != "$pid" ] && [ "$pid2" != 0 ] || fail "MainPID $pid -> $pid2: not restarted"
    wait_for 10 "master $((i + 1)) ($pid2) serving the socket from the fd store" master_said "$pid2" "from systemd's fd store"
    if master_said "$pid2" "kept in systemd's fd store"; then fail "master $((i + 1)) ($pid2) bound a socket of its own"; fi
    note "restart $i: MainPID $pid -> $pid2: $(c journalctl --no-pager -o cat -u "$FDS.service" _PID="$pid2" | grep -E 'fd store' | head -n 1)"
    expect "the fd store after restart $i" "$(fd_store "$FDS.service")" "4 1"
    pid=$pid2
    sleep 3
  done
  # A crash (SIGKILL to the master): Restart=on-failure starts the next
  # master after RestartSec=, and the store is kept across that restart too.
  n=$(prop "$FDS.service" NRestarts)
  c systemctl kill -s KILL --kill-who=main "$FDS.service"
  wait_for 20 "a master after the crash" mainpid_changed "$FDS.service" "$pid"
  pid2=$(prop "$FDS.service" MainPID)
  wait_for 10 "master $pid2 (after the crash) serving the socket from the fd store" master_said "$pid2" "from systemd's fd store"
  expect "NRestarts after the crash" "$(prop "$FDS.service" NRestarts)" $((n + 1))
  note "crash: MainPID $pid -> $pid2, restarted by systemd, the stored socket served"
  pid=$pid2
  wait_for 15 "$FDS.service active after the crash" fds_active
  # A reload (waiterctl) in the same load: the socket is not touched.
  c systemctl reload "$FDS.service" || fail "systemctl reload $FDS.service failed"
  load_wait fdstore
  out=$(grep 'loadclient:' "$WORK/load-fdstore.log" | head -n 1)
  [[ $out == *" refused=0 "* ]] || fail "connections refused during the restarts: $out"
  n=$(journal_since "$t" -u "$FDS.service" | grep -c "from systemd's fd store" || true)
  expect "masters that served the stored socket (two restarts, a crash)" "$n" 3
  expect "$FDS.service's MainPID after the reload" "$(prop "$FDS.service" MainPID)" "$pid"

  # The port changed: the next master drops the stored socket
  # (FDSTOREREMOVE=1), binds the new one and stores it; the old port closes.
  fds_units $((FDS_PORT + 1))
  c systemctl restart "$FDS.service" || fail "systemctl restart $FDS.service on port $((FDS_PORT + 1))"
  pid2=$(prop "$FDS.service" MainPID)
  wait_for 10 "master $pid2 storing its new socket" master_said "$pid2" "kept in systemd's fd store"
  master_said "$pid2" "not serving" || fail "master $pid2 did not say it dropped the stored socket"
  note "port $((FDS_PORT + 1)): $(c journalctl --no-pager -o cat -u "$FDS.service" _PID="$pid2" | grep -E 'fd store' | tr '\n' ' ')"
  expect "the fd store on the new port" "$(fd_store "$FDS.service")" "4 1"
  expect "reply on $((FDS_PORT + 1))" "$(reply $((FDS_PORT + 1)))" "hello world"
  wait_for 5 "nothing listening on $FDS_PORT once its socket left the store" not_listening "$FDS_PORT"

  # A stop closes the store: nothing listens, a client is refused.
  c systemctl stop "$FDS.service"
  expect "$FDS.service after stop" "$(prop "$FDS.service" ActiveState) $(prop "$FDS.service" Result)" "inactive success"
  if listening $((FDS_PORT + 1)); then fail "$((FDS_PORT + 1)) still listens after the stop"; fi
  out=$(c /share/loadclient -addr "127.0.0.1:$((FDS_PORT + 1))" -c 1 -n 1 2>&1 || true)
  [[ $out == *" refused=1 "* ]] || fail "a client after the stop was not refused: $out"
  note "after the stop: $(printf '%s\n' "$out" | head -n 1)"
  expect "NFileDescriptorStore after the stop" "$(prop "$FDS.service" NFileDescriptorStore)" 0
  # systemd may unload the inactive unit, which nothing refers to: then the
  # dump has no part for it.
  case "$(fd_store "$FDS.service")" in
    "4 0") note "systemd-analyze dump: File Descriptor Store Current: 0" ;;
    " ") note "systemd-analyze dump: no $FDS.service (unloaded once inactive)" ;;
    *) fail "the fd store after the stop: $(fd_store_lines "$FDS.service" | tr '\n' ' ')" ;;
  esac
  # And the next start binds afresh: nothing was kept.
  c systemctl start "$FDS.service" || fail "systemctl start $FDS.service after the stop"
  pid=$(prop "$FDS.service" MainPID)
  wait_for 10 "master $pid binding a socket of its own after the stop" master_said "$pid" "kept in systemd's fd store"
  if master_said "$pid" "from systemd's fd store"; then fail "master $pid served a stored socket after a stop"; fi
  note "a start after the stop: master $pid bound its socket afresh"
  c systemctl stop "$FDS.service"
  c rm -f "$unit"
  c systemctl daemon-reload
}

step_6() {
  local cg pids p left out
  wait_for 10 "waiterd.service active before the stop" is_active waiterd.service
  cg=$(prop waiterd.service ControlGroup)
  pids=$(c sh -c "cat /sys/fs/cgroup/unified$cg/cgroup.procs 2>/dev/null || cat /sys/fs/cgroup$cg/cgroup.procs 2>/dev/null || cat /sys/fs/cgroup/systemd$cg/cgroup.procs")
  [ "$(printf '%s\n' "$pids" | wc -w)" -ge 2 ] || fail "want a master and workers in $cg, have: $pids"
  note "$(printf '%s\n' "$pids" | wc -w) processes in $cg before the stop"
  c systemctl stop waiterd.socket waiterd-accept.socket waiterd.service myd.socket myd-accept.socket myd.service
  expect "waiterd.service after stop" "$(prop waiterd.service ActiveState)" inactive
  expect "waiterd.service stop result (no SIGKILL needed)" "$(prop waiterd.service Result)" success
  left=""
  for p in $pids; do
    if c test -d "/proc/$p"; then left+=" $p"; fi
  done
  [ -z "$left" ] || fail "processes of waiterd.service left after stop:$left"
  out=$(c journalctl --no-pager -o cat -u waiterd.service)
  [[ $out != *"timed out. Killing"* ]] || fail "systemd had to kill waiterd at some stop"
  # The runtime directories go with their services (RuntimeDirectoryPreserve=no):
  # no control socket is left behind.
  for p in /run/waiterd /run/myd; do
    if c test -e "$p"; then fail "$p left after the stop"; fi
  done
  c dpkg --purge waiterd myd >"$WORK/dpkg-purge.log" 2>&1 || { cat "$WORK/dpkg-purge.log" >&2; fail "dpkg --purge"; }
  c systemctl daemon-reload
  snapshot >"$WORK/after.txt"
  if ! diff -u "$WORK/before.txt" "$WORK/after.txt" >"$WORK/purge.diff"; then
    cat "$WORK/purge.diff" >&2
    fail "dpkg --purge left files or users behind (diff above: - before install, + after purge)"
  fi
  # (list-unit-files exits 1 when it lists nothing.)
  out=$(c systemctl list-unit-files --no-legend 'waiterd*' 'myd*' || true)
  [ -z "$out" ] || fail "unit files left: $out"
  note "no file, user or unit left after purge"
}

run_step install "install: the sockets are enabled and started" step_install
if [[ ${results[-1]} == PASS* ]]; then
  run_step 1 "socket activation: inactive until the first client, hello world, then active" step_1
  run_step 2 "systemctl status shows STATUS; the journal has waiterd's lines with their priorities" step_2
  run_step ctl "waiterctl on /run/waiterd/control: the pool (prefork, its workers, the listener), as text and JSON; nobody is refused" step_ctl
  run_step ctl-reload "systemctl reload (waiterctl): a bad file fails it, the old generation serving; fixed, it returns once the new one serves" step_ctl_reload
  run_step broken "a restart with a broken file fails; a client queued meanwhile is served once it is fixed, no reset-failed" step_broken_restart
  run_step 3 "systemctl reload under steady load fails no connection" step_3
  run_step 4 "systemctl restart under steady load refuses no connection" step_4
  run_step 5 "a wedged master is killed by the watchdog and restarted" step_5
  run_step 7 "the Accept=yes units serve each client in its own instance" step_7
  run_step myd "myd, packaged with the same machinery, serves on its port" step_myd
  run_step upgrade "upgrade (dpkg -i again) restarts waiterd cleanly under load" step_upgrade
  run_step fdstore "a service binding its own socket (waiterd units -no-socket) keeps it in systemd's fd store: two restarts and a crash under load refuse no client; a stop closes it" step_fdstore
  run_step 6 "stop leaves no process behind; purge leaves no file or user" step_6
  run_step kvd "examples/kvd packaged with StateDirectory=kvd: serves, reloads (good, bad), a broken restart then fixed, purge removes its state" step_kvd
  run_step kvd-queued "examples/kvd broken with a client waiting on the socket: served once the file is fixed" step_kvd_queued
  run_step tlsecho "examples/tlsecho with client certificates: serves alice, refuses mallory, reloads, a broken restart then fixed, purge" step_tlsecho
  run_step httpd "examples/httpd: serves (and Accept=yes), reloads, a broken restart then fixed, purge" step_httpd
fi
if [ -n "$KEEP" ]; then
  c dpkg -i /share/waiterd.deb /share/myd.deb >/dev/null 2>&1 || true
fi

echo >&2
printf '%s\n' "${results[@]}" >&2
log "suite took $(el "$SUITE_T0")"
echo "e2e: $passed passed, $failed failed"
[ "$failed" = 0 ]
