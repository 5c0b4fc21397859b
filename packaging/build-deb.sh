#!/bin/bash
# packaging/build-deb.sh -- builds a .deb of a daemon built on waiter:
# dist/NAME_VERSION-REVISION_amd64.deb, with the binary in /usr/bin, its
# systemd units in /lib/systemd/system, an optional config in /etc/NAME/ (a
# conffile), a man page, copyright and changelog.Debian. See
# packaging/README.md.
#
#   packaging/build-deb.sh                 waiterd itself (what `make deb` runs)
#   packaging/build-deb.sh -name myd -port 9125 -binary ./myd
#                                          any daemon: a name, a port, a binary
#
# The maintainer scripts are written by debhelper's dh_installsystemd (see
# packaging/debian/rules), so they are Debian's own. The build is
# reproducible: two builds of the same commit give the same bytes.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
pkg=$top/packaging

usage() {
  cat >&2 <<'EOF'
usage: packaging/build-deb.sh [-name NAME -port PORT -binary PATH] [options]
  -name NAME        package, binary and unit name (default waiterd)
  -port PORT        TCP port of NAME.socket (required unless NAME is waiterd)
  -binary PATH      the daemon, already built (waiterd: built from ./cmd/waiterd)
  -units DIR        ready-made units (default: waiterd's units/, or the ones
                    `waiterd units` writes for NAME, PORT and /usr/bin/NAME)
  -config FILE      installed as /etc/NAME/NAME.yaml, a conffile
  -man FILE         the man page, NAME.8 (default: written from a template)
  -summary TEXT     the one-line description (not starting with NAME)
  -maintainer TEXT  "Full Name <address>" (default: $DEBFULLNAME <$DEBEMAIL>)
  -version V        upstream version (default: the VERSION file, or 0.1.0)
  -revision R       Debian revision (default 1)
  -license-file F   the license text for the copyright file (default: LICENSE)
  -license-name N   its short name, e.g. MIT (required with a license file)
  -out DIR          where the .deb goes (default: dist/)
  -nolint           skip lintian (which otherwise fails the build on a
                    warning or an error)
EOF
  exit 2
}

name=waiterd port="" binary="" units="" config="" man="" summary="" maintainer=""
version="" revision=1 license_file="" license_name="" out=$top/dist lint=1
while [ $# -gt 0 ]; do
  case $1 in
    -name) name=$2; shift ;;
    -port) port=$2; shift ;;
    -binary) binary=$2; shift ;;
    -units) units=$2; shift ;;
    -config) config=$2; shift ;;
    -man) man=$2; shift ;;
    -summary) summary=$2; shift ;;
    -maintainer) maintainer=$2; shift ;;
    -version) version=$2; shift ;;
    -revision) revision=$2; shift ;;
    -license-file) license_file=$2; shift ;;
    -license-name) license_name=$2; shift ;;
    -out) out=$2; shift ;;
    -nolint) lint=0 ;;
    -h|-help|--help) usage ;;
    *) echo "build-deb.sh: unknown argument $1" >&2; usage ;;
  esac
  shift || usage
done
die() { echo "build-deb.sh: $*" >&2; exit 1; }
abspath() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }

# Debian's rules for a package name; it is also the unit and binary name.
[[ $name =~ ^[a-z0-9][a-z0-9+.-]+$ ]] || die "-name $name: want lower case letters, digits, + - . (a Debian package name)"
[ -n "$version" ] || version=$(cat "$top/VERSION" 2>/dev/null || echo 0.1.0)
[[ $version =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || die "-version $version: want an upstream version starting with a digit"
[[ $revision =~ ^[A-Za-z0-9.+~]+$ ]] || die "-revision $revision: want letters, digits, . + ~"
debversion=$version-$revision

for tool in dpkg-buildpackage dh dh_installsystemd; do
  command -v "$tool" >/dev/null || die "$tool is missing: run tests/deps.sh (as root) or install dpkg-dev and debhelper"
done

# One timestamp for everything: the commit's, so that two builds of one
# commit are identical. Outside git, or to pin it, set SOURCE_DATE_EPOCH.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$top" log -1 --format=%ct 2>/dev/null) ||
    die "not in a git checkout: set SOURCE_DATE_EPOCH (seconds) for a reproducible build"
fi
export SOURCE_DATE_EPOCH
export TZ=UTC LC_ALL=C.UTF-8
# Whatever the caller's environment says, the bytes must not change with it.
unset DEB_BUILD_OPTIONS DEB_BUILD_PROFILES GOFLAGS
umask 022

commit=$(git -C "$top" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
out=$(abspath "$out")
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

if [ "$name" = waiterd ] && [ -z "$binary" ]; then
  command -v go >/dev/null || die "go is missing (PATH=$PATH)"
  gobuild "$src/$name" ./cmd/waiterd
  [ -n "$units" ] || units=$top/units
  [ -n "$config" ] || config=$pkg/waiterd.yaml
  [ -n "$man" ] || man=$pkg/waiterd.8
  [ -n "$summary" ] || summary="waiter's demo daemon, a socket-activated network server"
  long="waiterd answers each TCP client with \"hello world\", or greets and echoes
lines back. It is the demo daemon of waiter, a Go framework for network
servers run by systemd (the successor of Perl's Net::Waiter): systemd holds
the socket, starts waiterd at the first client and keeps the socket across
reloads and restarts, while waiterd serves clients in preforked or forked
worker processes, reports its STATUS and feeds the watchdog."
else
  [ -n "$binary" ] || die "-binary is required for $name"
  [ -f "$binary" ] || die "-binary $binary: no such file"
  [[ $port =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "-port '$port': want 1 to 65535"
  cp "$binary" "$src/$name"
  chmod 0755 "$src/$name"
  [ -n "$summary" ] || summary="network daemon built on waiter"
  long="$name is a network server on TCP port $port, built on waiter, a Go
framework for servers run by systemd: systemd holds the socket and starts
$name at the first client."
  if [ -z "$units" ]; then
    # The units come from the same generator a user runs by hand.
    command -v go >/dev/null || die "go is missing: needed to build waiterd's unit generator (or give -units DIR)"
    gobuild "$stage/waiterd" ./cmd/waiterd
    units=$stage/generated-units
    mkdir -p "$units"
    "$stage/waiterd" units -name "$name" -port "$port" -exec "/usr/bin/$name" -out "$units" ||
      die "waiterd units -name $name -port $port failed"
  fi
fi
# The ELF header: magic, 64-bit class, and machine x86-64 (0x3e) at byte 18.
hdr=$(od -An -tx1 -N20 "$src/$name" | tr -d ' \n')
[ "${hdr:0:10}" = 7f454c4602 ] && [ "${hdr:36:4}" = 3e00 ] || die "$name: not an x86-64 ELF binary (Architecture: amd64)"

# The units: every socket and service of the directory.
shopt -s nullglob
unitfiles=("$units"/*.socket "$units"/*.service)
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
echo "units/* lib/systemd/system/" >"$src/debian/install"
echo "$name usr/bin/" >>"$src/debian/install"

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

[ -n "$maintainer" ] || maintainer="${DEBFULLNAME:-waiter maintainers} <${DEBEMAIL:-maintainers@users.noreply.r-seed-560107db.example}>"
year=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
date822=$(date -u -d "@$SOURCE_DATE_EPOCH" -R)

# debian/control: the long description is indented by one space, with "."
# for an empty line.
longdesc=$(printf '%s\n' "$long" | sed -e 's/^$/./' -e 's/^/ /')
sed -e "s|@NAME@|$name|g" -e "s|@MAINTAINER@|$maintainer|g" -e "s|@SUMMARY@|$summary|g" \
  "$pkg/debian/control.in" | awk -v long="$longdesc" '$0 == "@LONG@" { print long; next } { print }' >"$src/debian/control"

sed -e "s|@SOCKETS@|${sockets# }|g" -e "s|@SERVICES@|${services# }|g" "$pkg/debian/rules" >"$src/debian/rules"
chmod 0755 "$src/debian/rules"
if [ -n "$services" ]; then
  for script in postinst prerm; do
    sed -e "s|@SERVICES@|${services# }|g" "$pkg/debian/$script" >"$src/debian/$name.$script"
  done
else
  sed -i '/dh_installsystemd --no-start/d' "$src/debian/rules"
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
  "$pkg/debian/copyright.in" | awk -v t="$license_text" '$0 == "@LICENSE_TEXT@" { print t; next } { print }' >"$src/debian/copyright"

entry="Release $version."
[ "$name" = waiterd ] && [ "$commit" != unknown ] && entry="Release $version, built from commit $commit."
cat >"$src/debian/changelog" <<EOF
$name ($debversion) unstable; urgency=medium

  * $entry

 -- $maintainer  $date822
EOF

for f in "$pkg/debian/$name.lintian-overrides" "$pkg/debian/lintian-overrides"; do
  if [ -f "$f" ]; then sed "s|@NAME@|$name|g" "$f" >"$src/debian/$name.lintian-overrides"; break; fi
done
mkdir -p "$src/debian/source"
echo "3.0 (quilt)" >"$src/debian/source/format"

# Ownership, permissions and timestamps are set by dh_fixperms, dpkg-deb
# --root-owner-group (Rules-Requires-Root: no) and SOURCE_DATE_EPOCH.
touch -d "@$SOURCE_DATE_EPOCH" "$src/$name"
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
