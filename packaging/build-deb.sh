#!/bin/bash
# packaging/build-deb.sh -- builds a .deb of a daemon built on waiter:
# DIR/dist/NAME_VERSION-REVISION_amd64.deb, with the binary in /usr/bin, its
# systemd units (and their drop-ins) in /lib/systemd/system, an optional
# config in /etc/NAME/ (a conffile), a man page, copyright and
# changelog.Debian; waiterd's also has /usr/bin/waiterctl, and any other
# daemon's may have its own /usr/libexec/NAME/waiterctl (-waiterctl), which
# the units' ExecReload= runs. See packaging/README.md.
#
#   packaging/build-deb.sh                 waiterd itself (what `make deb` runs)
#   packaging/build-deb.sh -name myd -port 9125 -binary ./myd -source-dir .
#                                          any daemon: a name, a port, a binary
#                                          and its tree
#
# The maintainer scripts are written by debhelper's dh_installsystemd (see
# packaging/debian/rules), so they are Debian's own, with the daemon's own
# snippets (-postinst-extra, -postrm-extra) and the purge of its state. The
# build is reproducible: two builds of the same commit give the same bytes.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
pkg=$top/packaging

die2() { echo "build-deb.sh: $*" >&2; exit 2; }
usage() {
  cat >&2 <<'EOF'
usage: packaging/build-deb.sh [-name NAME -port PORT -binary PATH] [options]
  -name NAME        package, binary and unit name (default waiterd)
  -port PORT        TCP port of NAME.socket (required unless NAME is waiterd)
  -binary PATH      the daemon, already built (waiterd: built from ./cmd/waiterd)
  -source-dir DIR   the daemon's tree (required unless NAME is waiterd, whose
                    tree is this checkout): its last git commit touching DIR
                    dates the package (else its newest file; an exported
                    SOURCE_DATE_EPOCH wins over both), its VERSION file is
                    the default version, and the .deb goes into DIR/dist/
  -units DIR        ready-made units: DIR's *.socket and *.service, and the
                    drop-ins of DIR/UNIT.d/*.conf (default: waiterd's units/,
                    or the ones `waiterd units` writes for NAME, PORT and
                    /usr/bin/NAME, with -waiterctl: and its waiterctl)
  -waiterctl        ship waiterctl, built from this checkout, as
                    /usr/libexec/NAME/waiterctl, for the units' ExecReload=
                    (`waiterd units -waiterctl /usr/libexec/NAME/waiterctl`),
                    so that `systemctl reload NAME` fails when the master
                    refuses the reload (waiterd always ships /usr/bin/waiterctl)
  -config FILE      installed as /etc/NAME/NAME.yaml, a conffile
  -man FILE         the man page, NAME.8 (default: written from a template)
  -summary TEXT     the one-line description (not starting with NAME)
  -description-file FILE
                    the long description: plain text, lines of at most 79
                    characters, no tabs; empty lines separate paragraphs,
                    lines indented by a space are shown as they are
  -postinst-extra FILE
                    shell (sh) run by postinst before debhelper's part, which
                    enables and starts the sockets; "$1" is dpkg's action
  -postrm-extra FILE
                    shell (sh) run by postrm after debhelper's part and
                    before the purge of the state; "$1" is dpkg's action
  -purge-state      make `dpkg --purge` remove /var/lib/NAME (and
                    /var/lib/private/NAME) even if no unit sets
                    StateDirectory=; the directories of the units'
                    StateDirectory=, CacheDirectory= and LogsDirectory= are
                    removed on purge anyway, unless -keep-state
  -keep-state       leave them all on purge
  -maintainer TEXT  "Full Name <address>" (default: $DEBFULLNAME <$DEBEMAIL>)
  -version V        upstream version (default: DIR/VERSION, or 0.1.0)
  -revision R       Debian revision (default 1)
  -license-file F   the license text for the copyright file (default: LICENSE)
  -license-name N   its short name, e.g. MIT (required with a license file)
  -out DIR          where the .deb goes (default: the source dir's dist/)
  -nolint           skip lintian (which otherwise fails the build on a
                    warning or an error)
  -dry-run          stop before dpkg-buildpackage, leaving the package's
                    debian/ in OUT/build/NAME/src/ for a look
EOF
  exit 2
}

name=waiterd port="" binary="" units="" config="" man="" summary="" maintainer=""
version="" revision=1 license_file="" license_name="" out="" lint=1 srcdir=""
description_file="" postinst_extra="" postrm_extra="" purge_state=auto dry_run=0 want_ctl=0
while [ $# -gt 0 ]; do
  case $1 in
    -name) name=$2; shift ;;
    -port) port=$2; shift ;;
    -binary) binary=$2; shift ;;
    -units) units=$2; shift ;;
    -waiterctl) want_ctl=1 ;;
    -config) config=$2; shift ;;
    -man) man=$2; shift ;;
    -summary) summary=$2; shift ;;
    -maintainer) maintainer=$2; shift ;;
    -version) version=$2; shift ;;
    -revision) revision=$2; shift ;;
    -license-file) license_file=$2; shift ;;
    -license-name) license_name=$2; shift ;;
    -out) out=$2; shift ;;
    -source-dir) srcdir=$2; shift ;;
    -description-file) description_file=$2; shift ;;
    -postinst-extra) postinst_extra=$2; shift ;;
    -postrm-extra) postrm_extra=$2; shift ;;
    -purge-state) [ "$purge_state" != no ] || die2 "-purge-state and -keep-state contradict each other"; purge_state=yes ;;
    -keep-state) [ "$purge_state" != yes ] || die2 "-purge-state and -keep-state contradict each other"; purge_state=no ;;
    -nolint) lint=0 ;;
    -dry-run) dry_run=1 ;;
    -h|-help|--help) usage ;;
    *) echo "build-deb.sh: unknown argument $1" >&2; usage ;;
  esac
  shift || usage
done
die() { echo "build-deb.sh: $*" >&2; exit 1; }
# Fixed here, before a file is read: the checks count characters in UTF-8.
export TZ=UTC LC_ALL=C.UTF-8

# check_description FILE: prints FILE as a long description, without
# trailing white space and leading or trailing empty lines, or says what is
# wrong with it (Debian policy 5.6.13 and lintian's checks).
check_description() {
  local f=$1 n=0 line lines=() first=-1 last=-1 i
  LC_ALL=C.UTF-8 grep -qaxv '.*' "$f" && { echo "build-deb.sh: -description-file $f: not UTF-8" >&2; return 1; }
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    line=${line%"${line##*[![:space:]]}"}
    case $line in
      *$'\t'*) echo "build-deb.sh: -description-file $f:$n: a tab (indent with spaces)" >&2; return 1 ;;
      *[[:cntrl:]]*) echo "build-deb.sh: -description-file $f:$n: a control character (a DOS line end?)" >&2; return 1 ;;
    esac
    if [ "${#line}" -gt 79 ]; then
      echo "build-deb.sh: -description-file $f:$n: ${#line} characters, want at most 79 (each line is indented by one)" >&2
      return 1
    fi
    lines+=("$line")
    if [ -n "$line" ]; then
      [ "$first" -ge 0 ] || first=$((${#lines[@]} - 1))
      last=$((${#lines[@]} - 1))
    fi
  done <"$f"
  [ "$first" -ge 0 ] || { echo "build-deb.sh: -description-file $f: empty" >&2; return 1; }
  for ((i = first; i <= last; i++)); do printf '%s\n' "${lines[i]}"; done
}

# check_snippet FILE: FILE must be a shell snippet that sh parses, for a
# maintainer script (whose #DEBHELPER# it must not repeat).
check_snippet() {
  local f=$1
  [ -f "$f" ] || die "$f: no such file"
  sh -n "$f" 2>/dev/null || die "$f: sh cannot parse it: $(sh -n "$f" 2>&1 | head -n 1)"
  ! grep -q '#DEBHELPER#' "$f" || die "$f: has #DEBHELPER#, which build-deb.sh places itself"
  grep -q '[^[:space:]]' "$f" || die "$f: empty"
}

# state_dirs: the directories that postrm removes on purge, one a line,
# sorted: each directory of the services' StateDirectory=, CacheDirectory=
# and LogsDirectory= (in the units and their drop-ins, an empty assignment
# resetting the list as in systemd), under its base and under base/private/
# (where systemd keeps it with DynamicUser=yes), and /var/lib/NAME with
# -purge-state. Nothing with -keep-state.
state_dirs() {
  [ "$purge_state" != no ] || return 0
  local svc f key val tok part base files dirs=() state=0
  local -A list
  # The [Service] lines setting the three keys, as KEY<tab>VALUE.
  local prog='
    FNR == 1 { section = "" }
    /^[ \t]*\[/ { section = $0; gsub(/[][ \t]/, "", section); next }
    section == "Service" && /^[ \t]*(StateDirectory|CacheDirectory|LogsDirectory)[ \t]*=/ {
      key = $0; sub(/^[ \t]*/, "", key); sub(/[ \t]*=.*/, "", key)
      val = $0; sub(/^[^=]*=[ \t]*/, "", val); sub(/[ \t\r]*$/, "", val)
      if (val ~ /\\$/) { print "ERR\t" FILENAME; next }
      print key "\t" val
    }'
  for svc in "$src"/units/*.service; do
    [ -f "$svc" ] || continue
    files=("$svc")
    for f in "$svc.d"/*.conf; do [ -f "$f" ] && files+=("$f"); done
    list=([StateDirectory]="" [CacheDirectory]="" [LogsDirectory]="")
    while IFS=$'\t' read -r key val; do
      [ "$key" != ERR ] || die "$val: a StateDirectory=, CacheDirectory= or LogsDirectory= continued with '\\': write it on one line, so that the purge can read it"
      if [ -z "$val" ]; then list[$key]=""; else list[$key]+=" $val"; fi
    done < <(awk "$prog" "${files[@]}")
    for key in StateDirectory CacheDirectory LogsDirectory; do
      case $key in
        StateDirectory) base=/var/lib ;;
        CacheDirectory) base=/var/cache ;;
        LogsDirectory) base=/var/log ;;
      esac
      for tok in ${list[$key]}; do
        # DIR, or DIR:LINK (a symbolic link to DIR, systemd 250 and later).
        [[ $tok != *:*:* ]] || die "$(basename "$svc"): $key=$tok: want DIR or DIR:LINK"
        for part in ${tok//:/ }; do
          [[ $part =~ ^[A-Za-z0-9_][A-Za-z0-9_.+@/-]*$ && "/$part/" != *//* && "/$part/" != */./* && "/$part/" != */../* ]] ||
            die "$(basename "$svc"): $key=$tok: want relative paths of letters, digits and _ . + @ / - (no specifier, no ..): the purge removes $base/DIR"
          dirs+=("$base/$part" "$base/private/$part")
          [ "$key" != StateDirectory ] || state=1
        done
      done
    done
  done
  [ "$purge_state" != yes ] || [ "$state" = 1 ] || dirs+=("/var/lib/$name" "/var/lib/private/$name")
  [ ${#dirs[@]} -eq 0 ] || printf '%s\n' "${dirs[@]}" | sort -u
}

# snippet FILE WHAT: FILE for a maintainer script, without a #! line, under
# a comment naming it.
snippet() {
  printf '# From build-deb.sh %s %s:\n' "$2" "$(printf %s "${1##*/}" | tr -c 'A-Za-z0-9._+@-' _)"
  sed -e '1{/^#!/d}' "$1"
  [ -z "$(tail -c 1 "$1")" ] || echo
}

# Debian's rules for a package name; it is also the unit and binary name.
[[ $name =~ ^[a-z0-9][a-z0-9+.-]+$ ]] || die "-name $name: want lower case letters, digits, + - . (a Debian package name)"
# waiterctl, where the package puts it ("" for none): waiterd's is the
# command on PATH; another daemon's is its own copy, as two packages cannot
# ship one file.
ctl=""
if [ "$name" = waiterd ] && [ -z "$binary" ]; then
  ctl=/usr/bin/waiterctl
elif [ "$want_ctl" = 1 ]; then
  ctl=/usr/libexec/$name/waiterctl
fi
# Checked before anything is built: without it, the units' ExecReload= would
# run a program the package does not have.
if [ -n "$ctl" ] && ! ls "$top"/cmd/waiterctl/*.go >/dev/null 2>&1; then
  die "$top/cmd/waiterctl is missing: the $name package ships waiterctl as $ctl, which its units' ExecReload= runs; build from a checkout that has cmd/waiterctl"
fi
# The daemon's tree: waiter's checkout for waiterd, the user's own for
# anything else (its dates, its version, its dist/).
if [ -z "$srcdir" ]; then
  [ "$name" = waiterd ] ||
    die "-source-dir DIR is required for $name: your daemon's tree, whose last commit (or newest file) dates the package and whose dist/ gets it"
  srcdir=$top
fi
[ -d "$srcdir" ] || die "-source-dir $srcdir: no such directory"
srcdir=$(realpath "$srcdir")
[ -n "$out" ] || out=$srcdir/dist
[ -n "$version" ] || version=$(cat "$srcdir/VERSION" 2>/dev/null || echo 0.1.0)
[[ $version =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || die "-version $version: want an upstream version starting with a digit"
[[ $revision =~ ^[A-Za-z0-9.+~]+$ ]] || die "-revision $revision: want letters, digits, . + ~"
debversion=$version-$revision

for tool in dpkg-buildpackage dh dh_installsystemd; do
  command -v "$tool" >/dev/null || die "$tool is missing: run tests/deps.sh (as root) or install dpkg-dev and debhelper"
done

# The long description and the snippets are checked before anything is
# built, so that a mistake costs no build.
if [ -n "$description_file" ]; then
  [ -f "$description_file" ] || die "-description-file $description_file: no such file"
  long=$(check_description "$description_file") || exit 1
fi
for f in "$postinst_extra" "$postrm_extra"; do
  [ -z "$f" ] || check_snippet "$f"
done

# Absolute and canonical, as find prints the paths it is to leave out.
out=$(realpath -m "$out")
[ -z "$binary" ] || binary=$(realpath -m "$binary")
[ -z "$units" ] || units=$(realpath -m "$units")
# One timestamp for everything, so that two builds of one tree are
# identical: the last commit touching the source dir; outside git, its
# newest file (not its dist/, the .deb's directory, the binary or the units,
# which each build writes again); an exported SOURCE_DATE_EPOCH wins.
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
  [[ $SOURCE_DATE_EPOCH =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH: want seconds since 1970"
  datefrom="SOURCE_DATE_EPOCH from the environment"
else
  gitmsg=""
  if command -v git >/dev/null; then
    if gitmsg=$(git -C "$srcdir" rev-parse --is-inside-work-tree 2>&1); then
      SOURCE_DATE_EPOCH=$(git -C "$srcdir" log -1 --format=%ct -- . 2>/dev/null) || SOURCE_DATE_EPOCH=""
      datefrom="the last commit of $srcdir"
    elif [[ $gitmsg == *"dubious ownership"* ]]; then
      die "git will not read $srcdir, which another user owns (git config --global --add safe.directory $srcdir), or set SOURCE_DATE_EPOCH"
    fi
  fi
  if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(find "$srcdir" \( -path "$srcdir/dist" -o -path "$out" -o -path "$binary" -o -path "$units" -o -name .git \) -prune \
      -o -type f -printf '%T@\n' | sort -n | tail -n 1 | cut -d. -f1)
    [ -n "$SOURCE_DATE_EPOCH" ] || die "$srcdir: no commit and no file to date the package by: set SOURCE_DATE_EPOCH (seconds)"
    datefrom="the newest file of $srcdir (no git commit touches it)"
  fi
fi
export SOURCE_DATE_EPOCH
echo "build-deb.sh: dated $(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ), from $datefrom" >&2
# Whatever the caller's environment says, the bytes must not change with it.
unset DEB_BUILD_OPTIONS DEB_BUILD_PROFILES GOFLAGS
umask 022

# The changelog names the tree's commit, if it is in git.
commit=$(git -C "$srcdir" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
mkdir -p "$out"
# A fixed staging path (nothing in the .deb depends on it, but nothing
# should have the chance to).
stage=$out/build/$name
src=$stage/src
rm -rf "$stage"
mkdir -p "$src/debian" "$src/units"

gobuild() { # gobuild OUTPUT PACKAGE: a static, path-free, stripped binary
  (cd "$top" && CGO_ENABLED=0 go build -trimpath -buildvcs=false \
    -ldflags "-s -w -X main.version=$version" -o "$1" "$2")
}

if [ -n "$ctl" ]; then
  command -v go >/dev/null || die "go is missing (PATH=$PATH): needed to build waiterctl"
  gobuild "$src/waiterctl" ./cmd/waiterctl || die "go build ./cmd/waiterctl failed (in $top)"
fi
if [ "$name" = waiterd ] && [ -z "$binary" ]; then
  command -v go >/dev/null || die "go is missing (PATH=$PATH)"
  gobuild "$src/$name" ./cmd/waiterd
  [ -n "$units" ] || units=$top/units
  [ -n "$config" ] || config=$pkg/waiterd.yaml
  [ -n "$man" ] || man=$pkg/waiterd.8
  [ -n "$summary" ] || summary="waiter's demo daemon, a socket-activated network server"
  [ -n "$description_file" ] || long="waiterd answers each TCP client with \"hello world\", or greets and echoes
lines back. It is the demo daemon of waiter, a Go framework for network
servers run by systemd (the successor of Perl's Net::Waiter): systemd holds
the socket, starts waiterd at the first client and keeps the socket across
reloads and restarts, while waiterd serves clients in preforked or forked
worker processes, reports its STATUS and feeds the watchdog. waiterctl
shows the pool's workers and reloads it over the master's control socket."
else
  [ -n "$binary" ] || die "-binary is required for $name"
  [ -f "$binary" ] || die "-binary $binary: no such file"
  [[ $port =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "-port '$port': want 1 to 65535"
  cp "$binary" "$src/$name"
  chmod 0755 "$src/$name"
  [ -n "$summary" ] || summary="network daemon built on waiter"
  [ -n "$description_file" ] || long="$name is a network server on TCP port $port, built on waiter, a Go
framework for servers run by systemd: systemd holds the socket and starts
$name at the first client."
  if [ -z "$units" ]; then
    # The units come from the same generator a user runs by hand.
    command -v go >/dev/null || die "go is missing: needed to build waiterd's unit generator (or give -units DIR)"
    gobuild "$stage/waiterd" ./cmd/waiterd
    units=$stage/generated-units
    mkdir -p "$units"
    "$stage/waiterd" units -name "$name" -port "$port" -exec "/usr/bin/$name" ${ctl:+-waiterctl "$ctl"} -out "$units" ||
      die "waiterd units -name $name -port $port failed"
  fi
fi
# The ELF header: magic, 64-bit class, and machine x86-64 (0x3e) at byte 18.
hdr=$(od -An -tx1 -N20 "$src/$name" | tr -d ' \n')
[ "${hdr:0:10}" = 7f454c4602 ] && [ "${hdr:36:4}" = 3e00 ] || die "$name: not an x86-64 ELF binary (Architecture: amd64)"

# The units: every socket and service of the directory, and their
# drop-ins, UNIT.d/*.conf.
shopt -s nullglob
unitfiles=("$units"/*.socket "$units"/*.service)
dropindirs=("$units"/*.d)
shopt -u nullglob
[ ${#unitfiles[@]} -gt 0 ] || die "no units in $units (for waiterd they are units/ of the checkout)"
sockets="" services=""
for f in "${unitfiles[@]}"; do
  b=$(basename "$f")
  cp "$f" "$src/units/$b"
  case $b in
    *@*) ;;                       # templates: started per instance by their socket
    *.socket) sockets+=" $b" ;;
    *.service) services+=" $b" ;;
  esac
done
[ -n "$sockets" ] || die "no socket unit in $units: a waiter daemon is socket activated"
echo "units/*.socket units/*.service lib/systemd/system/" >"$src/debian/install"
for d in "${dropindirs[@]}"; do
  u=$(basename "$d" .d)
  [ -f "$units/$u" ] || die "$d: drop-ins for $u, which is no unit of $units"
  [ -d "$d" ] || die "$d: not a directory"
  n=0
  for f in "$d"/* "$d"/.[!.]*; do
    [ -e "$f" ] || continue
    case $(basename "$f") in
      *.conf) [ -f "$f" ] || die "$f: not a file" ;;
      *) die "$f: a drop-in must be a NAME.conf file (systemd reads no other)" ;;
    esac
    mkdir -p "$src/units/$u.d"
    cp "$f" "$src/units/$u.d/"
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || die "$d: no drop-in in it"
  echo "units/$u.d/*.conf lib/systemd/system/$u.d/" >>"$src/debian/install"
done
echo "$name usr/bin/" >>"$src/debian/install"
[ -z "$ctl" ] || echo "waiterctl $(dirname "${ctl#/}")/" >>"$src/debian/install"

# A unit's ExecReload= may run waiterctl only where this package puts it
# (another package's copy may be missing, or another version); and
# /bin/kill, procps', makes the package depend on procps, which minimal
# Debian installs lack.
dropins=()
for d in "${dropindirs[@]}"; do
  for f in "$d"/*.conf; do [ -f "$f" ] && dropins+=("$f"); done
done
reloads=$(sed -n 's/^[[:space:]]*ExecReload[[:space:]]*=[[:space:]]*//p' "${unitfiles[@]}" "${dropins[@]}" | sed 's/^[-@:+!]*//' | awk '{print $1}' | sort -u)
runs_ctl=0
for prog in $reloads; do
  case $prog in
    */waiterctl)
      [ "$prog" = "$ctl" ] ||
        die "the units' ExecReload= runs $prog, which this package does not ship${ctl:+ (it ships $ctl)}: give -waiterctl, and make the units with waiterd units -waiterctl /usr/libexec/$name/waiterctl"
      runs_ctl=1 ;;
  esac
done
[ -z "$ctl" ] || [ "$runs_ctl" = 1 ] ||
  echo "build-deb.sh: note: $ctl is shipped, but no ExecReload= of the units runs it (they were made without -waiterctl $ctl)" >&2
depends=""
if grep -Eqs '^[[:space:]]*Exec[A-Za-z]+[[:space:]]*=[[:space:]]*[-@:+!]*(/usr)?/bin/kill([[:space:]]|$)' "${unitfiles[@]}" "${dropins[@]}"; then
  depends="procps, "
fi

if [ -z "$config" ] && grep -qs -- "-config /etc/$name/$name.yaml" "${unitfiles[@]}"; then
  die "the units run $name with -config /etc/$name/$name.yaml: give that file with -config FILE"
fi
if [ -n "$config" ]; then
  [ -f "$config" ] || die "-config $config: no such file"
  cp "$config" "$src/$name.yaml"
  # Files under /etc are conffiles (debhelper compat 13).
  echo "$name.yaml etc/$name/" >>"$src/debian/install"
fi

if [ -n "$man" ]; then
  [ -f "$man" ] || die "-man $man: no such file"
  cp "$man" "$src/$name.8"
else
  sed -e "s|@NAME@|$name|g" -e "s|@UNAME@|${name^^}|g" -e "s|@PORT@|$port|g" \
    -e "s|@SUMMARY@|$summary|g" "$pkg/daemon.8.in" >"$src/$name.8"
fi
echo "$name.8" >"$src/debian/manpages"
# waiterctl on PATH has its page; a daemon's own copy in /usr/libexec needs none.
if [ "$ctl" = /usr/bin/waiterctl ]; then
  cp "$pkg/waiterctl.1" "$src/waiterctl.1"
  echo "waiterctl.1" >>"$src/debian/manpages"
fi

[ -n "$maintainer" ] || maintainer="${DEBFULLNAME:-waiter maintainers} <${DEBEMAIL:-maintainers@users.noreply.r-seed-560107db.example}>"
year=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
date822=$(date -u -d "@$SOURCE_DATE_EPOCH" -R)

# debian/control: the long description is indented by one space, with "."
# for an empty line. (Through the environment: awk -v would read its
# backslashes as escapes.)
longdesc=$(printf '%s\n' "$long" | sed -e 's/^$/./' -e 's/^/ /')
sed -e "s|@NAME@|$name|g" -e "s|@MAINTAINER@|$maintainer|g" -e "s|@SUMMARY@|$summary|g" -e "s|@DEPENDS@|$depends|g" \
  "$pkg/debian/control.in" | LONG=$longdesc awk '$0 == "@LONG@" { print ENVIRON["LONG"]; next } { print }' >"$src/debian/control"

sed -e "s|@SOCKETS@|${sockets# }|g" -e "s|@SERVICES@|${services# }|g" "$pkg/debian/rules" >"$src/debian/rules"
chmod 0755 "$src/debian/rules"
if [ -n "$services" ]; then
  for script in postinst prerm; do
    sed -e "s|@SERVICES@|${services# }|g" "$pkg/debian/$script" >"$src/debian/$name.$script"
  done
else
  sed -i '/dh_installsystemd --no-start/d' "$src/debian/rules"
fi

# The daemon's own postinst: before #DEBHELPER#, whose snippets enable and
# start the sockets, so that what it sets up is there when the first client
# starts the service.
if [ -n "$postinst_extra" ]; then
  [ -f "$src/debian/$name.postinst" ] || printf '#!/bin/sh\nset -e\n\n#DEBHELPER#\n' >"$src/debian/$name.postinst"
  EXTRA=$(snippet "$postinst_extra" -postinst-extra) awk '$0 == "#DEBHELPER#" { print ENVIRON["EXTRA"]; print "" } { print }' \
    "$src/debian/$name.postinst" >"$stage/postinst" && mv "$stage/postinst" "$src/debian/$name.postinst"
fi

# postrm: debhelper's snippets first (they forget the units' enable state on
# purge and reload systemd), then the daemon's own, then the purge of the
# files its services kept, which the daemon's own part may still want to
# see (to archive them, say).
state_dirs >"$stage/purge" || exit 1
if [ -n "$postrm_extra" ] || [ -s "$stage/purge" ]; then
  {
    printf '#!/bin/sh\nset -e\n\n#DEBHELPER#\n'
    [ -z "$postrm_extra" ] || { echo; snippet "$postrm_extra" -postrm-extra; }
    if [ -s "$stage/purge" ]; then
      echo
      echo "# On purge, the files the services kept (their StateDirectory=,"
      echo "# CacheDirectory=, LogsDirectory=; with DynamicUser=yes systemd keeps"
      echo "# them under private/ and links them from outside it)."
      echo 'if [ "$1" = purge ]; then'
      while read -r dir; do printf '\trm -rf "${DPKG_ROOT:-}%s"\n' "$dir"; done <"$stage/purge"
      echo "fi"
    fi
  } >"$src/debian/$name.postrm"
fi

# copyright: the license is the project's to choose. Until a LICENSE file
# exists, say so plainly rather than invent one.
if [ -z "$license_file" ] && [ -f "$top/LICENSE" ] && [ "$name" = waiterd ]; then
  license_file=$top/LICENSE
fi
if [ -n "$license_file" ]; then
  [ -n "$license_name" ] || die "-license-file needs -license-name (a short name such as MIT or Apache-2.0)"
  license_text=$(sed -e 's/^[[:space:]]*$/./' -e 's/^/ /' "$license_file")
else
  license_name=${license_name:-unspecified}
  license_text=" The authors have not chosen a license yet; until they do, all rights
 are reserved."
fi
sed -e "s|@NAME@|$name|g" -e "s|@COPYRIGHT@|$year ${maintainer%% <*}|g" -e "s|@LICENSE_NAME@|$license_name|g" \
  "$pkg/debian/copyright.in" | T=$license_text awk '$0 == "@LICENSE_TEXT@" { print ENVIRON["T"]; next } { print }' >"$src/debian/copyright"

entry="Release $version."
[ "$commit" = unknown ] || entry="Release $version, built from commit $commit."
cat >"$src/debian/changelog" <<EOF
$name ($debversion) unstable; urgency=medium

  * $entry

 -- $maintainer  $date822
EOF

for f in "$pkg/debian/$name.lintian-overrides" "$pkg/debian/lintian-overrides"; do
  if [ -f "$f" ]; then sed "s|@NAME@|$name|g" "$f" >"$src/debian/$name.lintian-overrides"; break; fi
done
if [ -n "$ctl" ]; then
  {
    echo "# waiterctl is built static too: it runs in the service's sandbox"
    echo "# (ExecReload=), where a static binary needs nothing but itself."
    echo "$name: statically-linked-binary [${ctl#/}]"
  } >>"$src/debian/$name.lintian-overrides"
fi
mkdir -p "$src/debian/source"
echo "3.0 (quilt)" >"$src/debian/source/format"

# Ownership, permissions and timestamps are set by dh_fixperms, dpkg-deb
# --root-owner-group (Rules-Requires-Root: no) and SOURCE_DATE_EPOCH.
touch -d "@$SOURCE_DATE_EPOCH" "$src/$name"
[ -z "$ctl" ] || touch -d "@$SOURCE_DATE_EPOCH" "$src/waiterctl"
if [ "$dry_run" = 1 ]; then
  echo "build-deb.sh: -dry-run: the package's source is in $src (debian/ and all)" >&2
  exit 0
fi
(cd "$src" && dpkg-buildpackage -b -us -uc >"$stage/build.log" 2>&1) || {
  tail -n 40 "$stage/build.log" >&2
  die "dpkg-buildpackage failed (the whole log: $stage/build.log)"
}
deb=${name}_${debversion}_amd64.deb
[ -f "$stage/$deb" ] || die "dpkg-buildpackage made no $deb (log: $stage/build.log)"
mv "$stage/$deb" "$out/$deb"
echo "build-deb.sh: $out/$deb ($(sha256sum "$out/$deb" | cut -c1-16)...)" >&2

if [ "$lint" = 1 ]; then
  command -v lintian >/dev/null || die "lintian is missing: run tests/deps.sh or use -nolint"
  # --fail-on makes an error or a warning fail the build; every override
  # in packaging/debian/lintian-overrides carries its reason.
  # (As root, lintian says so on every run: that line is dropped.)
  lrc=0
  lintian --fail-on error,warning --display-info "$out/$deb" >"$stage/lintian.log" 2>&1 || lrc=$?
  grep -v 'running with root privileges is not recommended' "$stage/lintian.log" >&2 || true
  [ "$lrc" = 0 ] || die "lintian: errors or warnings in $deb (exit $lrc)"
  echo "build-deb.sh: lintian: no error, no warning" >&2
fi
