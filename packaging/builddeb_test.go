// Package packaging holds the tests of build-deb.sh: it builds the package
// of a daemon that is not waiterd, from a tree of its own, and reads the
// .deb back with dpkg-deb.
package packaging

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/waiter-go/waiter/units"
)

// commitTime is the user's tree's only commit, which dates the package.
var commitTime = time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)

// need skips the test when the .deb tool chain is missing, except in CI
// (CI=true), where its absence is a broken setup: tests/deps.sh installs it.
func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range append([]string{"dpkg-buildpackage", "dh", "dh_installsystemd", "dpkg-deb", "git", "go"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed and CI=true: run tests/deps.sh (%v)", tool, err)
			}
			t.Skipf("%s is not installed (tests/deps.sh installs it): %v", tool, err)
		}
	}
}

// tree is a user's daemon, kvd, as build-deb.sh gets it: a source tree in
// git, a binary built from it, units made by the generator (with a state
// directory, a cache directory and a drop-in), a config, a long description
// and two maintainer-script snippets.
type tree struct {
	src, binary, units, config, desc, postinst, postrm string
	// ctl is the units' waiterctl ("": they reload with -check and kill).
	ctl string
}

// kvdCtl is where build-deb.sh -waiterctl puts kvd's waiterctl.
const kvdCtl = "/usr/libexec/kvd/waiterctl"

const (
	desc = `kvd keeps keys and their values, and answers each client's GET and PUT.
It is built on waiter: systemd holds its socket and starts it at the first
client.

Its files:
  /var/lib/kvd     the data (StateDirectory=)
  /var/cache/kvd   the index, rebuilt at will`
	postinstSnippet = "#!/bin/sh\n# kvd's own postinst\nif [ \"$1\" = configure ]; then\n\t: kvd-postinst-marker\nfi\n"
	postrmSnippet   = "if [ \"$1\" = purge ]; then\n\t: kvd-postrm-marker\nfi" // no final newline
)

func newTree(t *testing.T) tree { return newTreeCtl(t, "") }

// newTreeCtl is newTree with units that reload with waiterctl at ctl.
func newTreeCtl(t *testing.T, ctl string) tree {
	t.Helper()
	base := t.TempDir()
	tr := tree{
		src:      filepath.Join(base, "kvd"),
		units:    filepath.Join(base, "units"),
		config:   filepath.Join(base, "kvd", "kvd.yaml"),
		desc:     filepath.Join(base, "kvd", "debian-description.txt"),
		postinst: filepath.Join(base, "kvd", "postinst.sh"),
		postrm:   filepath.Join(base, "kvd", "postrm.sh"),
		ctl:      ctl,
	}
	write := func(path, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(tr.src, "go.mod"), "module kvd\n\ngo 1.21\n")
	write(filepath.Join(tr.src, "main.go"), "package main\n\nfunc main() {}\n")
	write(tr.config, "prefork: 2\n")
	write(tr.desc, desc+"\n\n")
	write(tr.postinst, postinstSnippet)
	write(tr.postrm, postrmSnippet)
	run(t, tr.src, nil, "git", "init", "-q")
	run(t, tr.src, nil, "git", "add", ".")
	when := fmt.Sprintf("@%d +0000", commitTime.Unix())
	run(t, tr.src, []string{"GIT_AUTHOR_DATE=" + when, "GIT_COMMITTER_DATE=" + when,
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.org", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.org"},
		"git", "commit", "-q", "-m", "kvd")
	tr.binary = kvdBinary(t)

	p := units.Params{Name: "kvd", Port: 7300, Waiterctl: ctl,
		Directives: []units.Directive{
			{Section: "Service", Key: "StateDirectory", Value: "kvd"},
			{Section: "Service", Key: "CacheDirectory", Value: "kvd"},
		},
		DropIns: []units.DropIn{{Name: "limits.conf", Content: []byte("[Service]\nLimitNOFILE=65536\n")}},
	}
	files, err := units.Generate(p)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		write(filepath.Join(tr.units, name), string(b))
	}
	return tr
}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// kvdBinary returns kvd's binary, a static Go program built once for every
// test (outside every tree: it is the same for all).
func kvdBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "waiter-packaging-"); binErr != nil {
			return
		}
		main := "package main\n\nfunc main() {}\n"
		if binErr = os.WriteFile(filepath.Join(binDir, "go.mod"), []byte("module kvd\n\ngo 1.21\n"), 0o644); binErr != nil {
			return
		}
		if binErr = os.WriteFile(filepath.Join(binDir, "main.go"), []byte(main), 0o644); binErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", "kvd", ".")
		cmd.Dir = binDir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GOTOOLCHAIN=local")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return filepath.Join(binDir, "kvd")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// run runs a command in dir and fails the test if it fails.
func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// args are build-deb.sh's arguments for tr (with -waiterctl when its units
// run waiterctl), followed by more.
func (tr tree) args(more ...string) []string {
	a := []string{"-name", "kvd", "-port", "7300", "-binary", tr.binary, "-units", tr.units,
		"-config", tr.config, "-summary", "key-value store of the packaging test",
		"-maintainer", "Test Maintainer <test@example.org>", "-version", "1.2.3",
		"-description-file", tr.desc, "-postinst-extra", tr.postinst, "-postrm-extra", tr.postrm,
		"-source-dir", tr.src}
	if tr.ctl != "" {
		a = append(a, "-waiterctl")
	}
	return append(a, more...)
}

// buildDeb runs build-deb.sh in dir with args, in an environment without
// the variables that would change what it does (SOURCE_DATE_EPOCH, DEB*),
// plus env. It returns its standard error and its error.
func buildDeb(t *testing.T, dir string, env []string, args ...string) (string, error) {
	t.Helper()
	script, err := filepath.Abs("build-deb.sh")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(script, args...)
	cmd.Dir = dir
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "SOURCE_DATE_EPOCH=") && !strings.HasPrefix(e, "DEB") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	err = cmd.Run()
	return stderr.String(), err
}

// dpkgDeb runs dpkg-deb ARGS and returns its standard output.
func dpkgDeb(t *testing.T, args ...string) []byte {
	t.Helper()
	out, err := exec.Command("dpkg-deb", args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("dpkg-deb %v: %v\n%s", args, err, ee.Stderr)
		}
		t.Fatalf("dpkg-deb %v: %v", args, err)
	}
	return out
}

// tarFiles reads a tar archive into its entries' headers and contents.
func tarFiles(t *testing.T, b []byte) (map[string]*tar.Header, map[string][]byte) {
	t.Helper()
	hdrs, data := map[string]*tar.Header{}, map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hdrs, data
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(h.Name, "./")
		hdrs[name] = h
		if data[name], err = io.ReadAll(tr); err != nil {
			t.Fatal(err)
		}
	}
}

func sha(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// TestBuildDeb packages kvd twice, once with lintian into its tree's dist/
// (the default) and once elsewhere, and reads the first .deb back: the
// drop-in, its own waiterctl (-waiterctl) and the unit that reloads with it,
// the long description, the snippets where they belong, the purge of the
// state, every date the commit's. Both builds give the same bytes.
func TestBuildDeb(t *testing.T) {
	need(t, "lintian")
	t.Parallel()
	tr := newTreeCtl(t, kvdCtl)
	other := filepath.Join(t.TempDir(), "out")
	var wg sync.WaitGroup
	var log1, log2 string
	var err1, err2 error
	wg.Add(2)
	// From another directory than the tree: the default output is the
	// tree's dist/, not the current directory's or waiter's.
	go func() { defer wg.Done(); log1, err1 = buildDeb(t, t.TempDir(), nil, tr.args()...) }()
	go func() { defer wg.Done(); log2, err2 = buildDeb(t, tr.src, nil, tr.args("-nolint", "-out", other)...) }()
	wg.Wait()
	if err1 != nil {
		t.Fatalf("build-deb.sh: %v\n%s", err1, log1)
	}
	if err2 != nil {
		t.Fatalf("build-deb.sh -nolint -out: %v\n%s", err2, log2)
	}
	t.Logf("build-deb.sh (with lintian):\n%s", log1)
	if !strings.Contains(log1, "lintian: no error, no warning") {
		t.Errorf("lintian did not pass:\n%s", log1)
	}
	deb := filepath.Join(tr.src, "dist", "kvd_1.2.3-1_amd64.deb")
	if _, err := os.Stat(deb); err != nil {
		t.Fatalf("not in the source dir's dist/: %v\n%s", err, log1)
	}
	if a, b := sha(t, deb), sha(t, filepath.Join(other, "kvd_1.2.3-1_amd64.deb")); a != b {
		t.Errorf("two builds of one tree differ: sha256 %s and %s", a, b)
	} else {
		t.Logf("both builds: sha256 %s", a)
	}
	if !strings.Contains(log1, "dated 2021-03-04T05:06:07Z, from the last commit of "+tr.src) {
		t.Errorf("build-deb.sh does not say it is dated by the tree's commit:\n%s", log1)
	}

	// The files, and their dates: every one the commit's.
	hdrs, data := tarFiles(t, dpkgDeb(t, "--fsys-tarfile", deb))
	for _, f := range []string{
		"usr/bin/kvd", "usr/libexec/kvd/waiterctl", "etc/kvd/kvd.yaml",
		"lib/systemd/system/kvd.socket", "lib/systemd/system/kvd.service",
		"lib/systemd/system/kvd-accept.socket", "lib/systemd/system/kvd-accept@.service",
		"lib/systemd/system/kvd.service.d/limits.conf", "lib/systemd/system/kvd-accept@.service.d/limits.conf",
		"usr/share/doc/kvd/changelog.Debian.gz", "usr/share/doc/kvd/copyright",
	} {
		if _, ok := hdrs[f]; !ok {
			t.Errorf("no %s in the package", f)
		}
	}
	if have := string(data["lib/systemd/system/kvd.service.d/limits.conf"]); have != "[Service]\nLimitNOFILE=65536\n" {
		t.Errorf("the drop-in: %q", have)
	}
	if h := hdrs["lib/systemd/system/kvd.service.d/limits.conf"]; h != nil && h.Mode&0o777 != 0o644 {
		t.Errorf("the drop-in's mode: %o", h.Mode)
	}
	for _, f := range []string{"usr/bin/kvd", "usr/libexec/kvd/waiterctl"} {
		if h := hdrs[f]; h != nil && (h.Mode&0o7777 != 0o755 || h.Uname != "root" || h.Gname != "root") {
			t.Errorf("%s: mode %o, owner %s:%s; want 755 root:root", f, h.Mode, h.Uname, h.Gname)
		}
	}
	// waiterctl is a static x86-64 ELF, as the daemon is; not on PATH,
	// where only waiterd's package puts one.
	if b := data["usr/libexec/kvd/waiterctl"]; len(b) < 20 || string(b[:4]) != "\x7fELF" || b[18] != 0x3e {
		t.Errorf("usr/libexec/kvd/waiterctl is no x86-64 ELF binary")
	}
	if _, ok := hdrs["usr/bin/waiterctl"]; ok {
		t.Errorf("usr/bin/waiterctl is waiterd's: another package must not ship it")
	}
	svc := data["lib/systemd/system/kvd.service"]
	for _, l := range []string{"ExecReload=" + kvdCtl + " -s /run/kvd/control -timeout 85s reload", "RuntimeDirectory=kvd"} {
		if !bytes.Contains(svc, []byte("\n"+l+"\n")) {
			t.Errorf("kvd.service: no line %q in:\n%s", l, svc)
		}
	}
	// Nothing runs /bin/kill: no procps.
	if dep := strings.TrimSpace(string(dpkgDeb(t, "-f", deb, "Depends"))); strings.Contains(dep, "procps") {
		t.Errorf("Depends: %q: want no procps, ExecReload= runs waiterctl", dep)
	}
	for name, h := range hdrs {
		if !h.ModTime.Equal(commitTime) {
			t.Errorf("%s: dated %s, want the commit's %s", name, h.ModTime.UTC(), commitTime)
		}
	}
	zr, err := gzip.NewReader(bytes.NewReader(data["usr/share/doc/kvd/changelog.Debian.gz"]))
	if err != nil {
		t.Fatal(err)
	}
	changelog, _ := io.ReadAll(zr)
	if want := commitTime.Format(time.RFC1123Z); !strings.Contains(string(changelog), "  "+want+"\n") {
		t.Errorf("changelog: want the date %s in:\n%s", want, changelog)
	}
	if !strings.Contains(string(data["usr/share/doc/kvd/copyright"]), "Copyright: 2021 Test Maintainer") {
		t.Errorf("copyright: want the commit's year:\n%s", data["usr/share/doc/kvd/copyright"])
	}

	// The long description, each line indented, "." for the empty one.
	var want []string
	for _, l := range strings.Split(desc, "\n") {
		if l == "" {
			l = "."
		}
		want = append(want, " "+l)
	}
	field := string(dpkgDeb(t, "-f", deb, "Description"))
	if w := "key-value store of the packaging test\n" + strings.Join(want, "\n") + "\n"; field != w {
		t.Errorf("Description:\nwant:\n%s\nhave:\n%s", w, field)
	}
	if info := string(dpkgDeb(t, "-I", deb)); !strings.Contains(info, "    /var/lib/kvd     the data") {
		t.Errorf("dpkg-deb -I does not show the description's verbatim lines:\n%s", info)
	}

	// The maintainer scripts.
	_, ctrl := tarFiles(t, dpkgDeb(t, "--ctrl-tarfile", deb))
	postinst, postrm := string(ctrl["postinst"]), string(ctrl["postrm"])
	t.Logf("postrm:\n%s", postrm)
	// postinst: the snippet before debhelper's part, which starts the
	// sockets; without its #! line.
	order(t, "postinst", postinst, "set -e\n", "# From build-deb.sh -postinst-extra postinst.sh:\n# kvd's own postinst\n", ": kvd-postinst-marker",
		"# Automatically added by dh_installsystemd", "deb-systemd-invoke start", "deb-systemd-invoke try-restart kvd.service")
	if strings.Count(postinst, "#!") != 1 {
		t.Errorf("postinst: want one #! line:\n%s", postinst)
	}
	// postrm: debhelper's part, the snippet, then the purge.
	order(t, "postrm", postrm, "set -e\n", "# Automatically added by dh_installsystemd", "deb-systemd-helper purge",
		"# From build-deb.sh -postrm-extra postrm.sh:\n", ": kvd-postrm-marker\nfi\n", `if [ "$1" = purge ]; then`,
		"\trm -rf \"${DPKG_ROOT:-}/var/cache/kvd\"\n\trm -rf \"${DPKG_ROOT:-}/var/cache/private/kvd\"\n"+
			"\trm -rf \"${DPKG_ROOT:-}/var/lib/kvd\"\n\trm -rf \"${DPKG_ROOT:-}/var/lib/private/kvd\"\nfi\n")
	if err := exec.Command("sh", "-n", "-c", postrm).Run(); err != nil {
		t.Errorf("postrm: sh -n: %v", err)
	}
}

// order checks that script has each of parts, in this order.
func order(t *testing.T, name, script string, parts ...string) {
	t.Helper()
	at := 0
	for _, p := range parts {
		i := strings.Index(script[at:], p)
		if i < 0 {
			t.Errorf("%s: no %q after byte %d of:\n%s", name, p, at, script)
			return
		}
		at += i + len(p)
	}
}

// dryRun runs build-deb.sh -dry-run and returns the staged debian/ dir.
func dryRun(t *testing.T, dir string, env []string, args ...string) (string, string) {
	t.Helper()
	log, err := buildDeb(t, dir, env, append(args, "-dry-run")...)
	if err != nil {
		t.Fatalf("build-deb.sh -dry-run: %v\n%s", err, log)
	}
	m := regexp.MustCompile(`-dry-run: the package's source is in (\S+)`).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("no source dir in:\n%s", log)
	}
	return filepath.Join(m[1], "debian"), log
}

func changelogDate(t *testing.T, debian string) time.Time {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(debian, "changelog"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ -- .*>  (.*)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no date in changelog:\n%s", b)
	}
	d, err := time.Parse(time.RFC1123Z, string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestDates: where the package's date comes from, without git, with git,
// and from the environment; and that the .deb's own directory, the binary
// and the units in the tree do not move it.
func TestDates(t *testing.T) {
	need(t)
	t.Parallel()
	tr := newTree(t)
	// git: the commit's, whatever the files' times.
	debian, _ := dryRun(t, t.TempDir(), nil, tr.args()...)
	if d := changelogDate(t, debian); !d.Equal(commitTime) {
		t.Errorf("git: dated %s, want the commit's %s", d, commitTime)
	}
	if !strings.HasPrefix(debian, filepath.Join(tr.src, "dist")+"/") {
		t.Errorf("staged in %s, want the source dir's dist/", debian)
	}
	// The environment wins.
	debian, log := dryRun(t, tr.src, []string{"SOURCE_DATE_EPOCH=1000000000"}, tr.args()...)
	if d := changelogDate(t, debian); d.Unix() != 1000000000 {
		t.Errorf("SOURCE_DATE_EPOCH=1000000000: dated %s", d)
	}
	if !strings.Contains(log, "from SOURCE_DATE_EPOCH from the environment") {
		t.Errorf("does not say the date is the environment's:\n%s", log)
	}

	// No git: the newest file, which the package's dist/, the binary and
	// the units do not count as (each build writes them again).
	if err := os.RemoveAll(filepath.Join(tr.src, ".git")); err != nil {
		t.Fatal(err)
	}
	newest := time.Date(2022, 6, 7, 8, 9, 10, 0, time.UTC)
	for i, f := range []string{"main.go", "go.mod", "kvd.yaml", "postinst.sh", "postrm.sh", "debian-description.txt"} {
		when := newest.Add(-time.Duration(i) * time.Hour)
		if err := os.Chtimes(filepath.Join(tr.src, f), when, when); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	inTree := tr
	inTree.binary = filepath.Join(tr.src, "kvd")
	inTree.units = filepath.Join(tr.src, "units")
	run(t, tr.src, nil, "cp", "-a", tr.binary, inTree.binary)
	run(t, tr.src, nil, "cp", "-r", tr.units, inTree.units)
	for _, p := range []string{inTree.binary, filepath.Join(inTree.units, "kvd.service")} {
		if err := os.Chtimes(p, now, now); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 2; i++ { // the second time, dist/ has the first's files
		debian, log := dryRun(t, tr.src, nil, inTree.args()...)
		if d := changelogDate(t, debian); !d.Equal(newest) {
			t.Errorf("build %d without git: dated %s, want the newest file's %s\n%s", i+1, d, newest, log)
		}
		if !strings.Contains(log, "from the newest file of "+tr.src) {
			t.Errorf("does not say the date is the newest file's:\n%s", log)
		}
	}
}

// TestPurge: which directories postrm removes on purge.
func TestPurge(t *testing.T) {
	need(t)
	t.Parallel()
	tr := newTree(t)
	postrm := func(t *testing.T, unitDir string, more ...string) string {
		t.Helper()
		a := tr.args(more...)
		for i := range a {
			if a[i] == tr.units {
				a[i] = unitDir
			}
		}
		debian, _ := dryRun(t, tr.src, nil, a...)
		b, err := os.ReadFile(filepath.Join(debian, "kvd.postrm"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	gen := func(t *testing.T, p units.Params) string {
		t.Helper()
		dir := t.TempDir()
		files, err := units.Generate(p)
		if err != nil {
			t.Fatal(err)
		}
		for name, b := range files {
			if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	rms := func(s string) []string {
		return regexp.MustCompile(`(?m)^\trm -rf "\$\{DPKG_ROOT:-\}(\S+)"$`).FindAllString(s, -1)
	}
	plain := gen(t, units.Params{Name: "kvd", Port: 7300})
	if s := postrm(t, plain); len(rms(s)) != 0 {
		t.Errorf("no state directory: want no purge, have:\n%s", s)
	}
	if s := postrm(t, plain, "-purge-state"); fmt.Sprint(rms(s)) != fmt.Sprint([]string{
		"\trm -rf \"${DPKG_ROOT:-}/var/lib/kvd\"", "\trm -rf \"${DPKG_ROOT:-}/var/lib/private/kvd\""}) {
		t.Errorf("-purge-state: want /var/lib/kvd and /var/lib/private/kvd, have:\n%s", s)
	}
	// A drop-in's LogsDirectory=, a DIR:LINK, a subdirectory; a reset.
	dir := gen(t, units.Params{Name: "kvd", Port: 7300, NoAccept: true,
		Directives: []units.Directive{{Section: "Service", Key: "StateDirectory", Value: "kvd kvd-db:kvd-data"}, {Section: "Service", Key: "CacheDirectory", Value: "gone"}},
		DropIns:    []units.DropIn{{Name: "x.conf", Content: []byte("[Service]\nCacheDirectory=\nLogsDirectory=kvd/audit\n")}},
	})
	s := postrm(t, dir)
	var got []string
	for _, l := range rms(s) {
		got = append(got, strings.TrimSuffix(strings.TrimPrefix(l, "\trm -rf \"${DPKG_ROOT:-}"), "\""))
	}
	if want := "[/var/lib/kvd /var/lib/kvd-data /var/lib/kvd-db /var/lib/private/kvd /var/lib/private/kvd-data /var/lib/private/kvd-db /var/log/kvd/audit /var/log/private/kvd/audit]"; fmt.Sprint(got) != want {
		t.Errorf("want %s, have %v in:\n%s", want, got, s)
	}
	if s := postrm(t, dir, "-keep-state"); len(rms(s)) != 0 || !strings.Contains(s, "kvd-postrm-marker") {
		t.Errorf("-keep-state: want no purge and the snippet, have:\n%s", s)
	}
}

// TestRefused: what build-deb.sh refuses, before it builds anything.
func TestRefused(t *testing.T) {
	need(t)
	t.Parallel()
	tr := newTree(t)
	tmp := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(tmp, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	with := func(flag, value string) []string {
		a := tr.args()
		for i := range a {
			if a[i] == flag {
				a[i+1] = value
			}
		}
		return a
	}
	// A units dir that differs from kvd's in one file.
	units := func(name, rel, content string) string {
		dir := filepath.Join(tmp, name)
		run(t, tmp, nil, "cp", "-r", tr.units, dir)
		if content == "" {
			return dir
		}
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	noSource := tr.args()[:len(tr.args())-2]
	for _, c := range []struct {
		name string
		args []string
		say  string
	}{
		{"no source dir", noSource, "-source-dir DIR is required for kvd"},
		{"source dir missing", with("-source-dir", "/nonexistent"), "-source-dir /nonexistent: no such directory"},
		{"description with a tab", with("-description-file", file("tab.txt", "a\tb\n")), "tab.txt:1: a tab"},
		{"description line too long", with("-description-file", file("long.txt", "ok\n"+strings.Repeat("x", 80)+"\n")), "long.txt:2: 80 characters"},
		{"empty description", with("-description-file", file("empty.txt", "\n\n")), "empty.txt: empty"},
		{"control character in description", with("-description-file", file("esc.txt", "a\x1b[1mb\n")), "esc.txt:1: a control character"},
		{"snippet sh cannot parse", with("-postinst-extra", file("bad.sh", "if then\n")), "bad.sh: sh cannot parse it"},
		{"snippet with #DEBHELPER#", with("-postrm-extra", file("dh.sh", "#DEBHELPER#\n")), "has #DEBHELPER#"},
		{"purge and keep", tr.args("-purge-state", "-keep-state"), "contradict"},
		{"absolute state directory", with("-units", units("abs", "kvd.service.d/x.conf", "[Service]\nStateDirectory=/etc\n")),
			"StateDirectory=/etc: want relative paths"},
		{"state directory ..", with("-units", units("dotdot", "kvd.service.d/x.conf", "[Service]\nStateDirectory=kvd/../..\n")),
			"StateDirectory=kvd/../..: want relative paths"},
		{"continued state directory", with("-units", units("cont", "kvd.service.d/x.conf", "[Service]\nStateDirectory=a \\\n b\n")),
			"continued with"},
		{"drop-ins of no unit", with("-units", units("stray", "other.service.d/x.conf", "[Service]\nLimitNOFILE=1\n")),
			"drop-ins for other.service, which is no unit"},
		{"drop-in not .conf", with("-units", units("notconf", "kvd.service.d/x.txt", "[Service]\nLimitNOFILE=1\n")),
			"x.txt: a drop-in must be a NAME.conf file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			log, err := buildDeb(t, tr.src, nil, append(c.args, "-dry-run")...)
			if err == nil {
				t.Fatalf("want a failure, have none:\n%s", log)
			}
			if !strings.Contains(log, c.say) {
				t.Errorf("want %q in:\n%s", c.say, log)
			}
		})
	}
}

// readStaged reads a file of the package's staged source (dryRun's debian/
// dir and its parent).
func readStaged(t *testing.T, debian, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(debian, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBuildDebWaiterctl: what -waiterctl ships and what it refuses, and the procps
// dependency, which only units that run /bin/kill need.
func TestBuildDebWaiterctl(t *testing.T) {
	need(t)
	t.Parallel()
	tr := newTree(t)
	ctlTree := newTreeCtl(t, kvdCtl)

	// No waiterctl: ExecReload= is -check and /bin/kill, so procps.
	debian, log := dryRun(t, tr.src, nil, tr.args()...)
	if c := readStaged(t, debian, "control"); !strings.Contains(c, "\nDepends: procps, ${misc:Depends}") {
		t.Errorf("kill -HUP units: want Depends: procps, in:\n%s", c)
	}
	if in := readStaged(t, debian, "install"); strings.Contains(in, "waiterctl") {
		t.Errorf("no -waiterctl: debian/install has waiterctl:\n%s", in)
	}
	if strings.Contains(log, "note:") {
		t.Errorf("no -waiterctl: a note:\n%s", log)
	}

	// -waiterctl without -units: the generated units reload with it.
	a := ctlTree.args()
	for i := range a {
		if a[i] == "-units" {
			a = append(a[:i:i], a[i+2:]...)
			break
		}
	}
	debian, _ = dryRun(t, ctlTree.src, nil, a...)
	svc := readStaged(t, debian, "../units/kvd.service")
	if want := "\nExecReload=" + kvdCtl + " -s /run/kvd/control -timeout 85s reload\n"; !strings.Contains(svc, want) {
		t.Errorf("-waiterctl, generated units: no %q in:\n%s", want, svc)
	}
	if in := readStaged(t, debian, "install"); !strings.Contains(in, "\nwaiterctl usr/libexec/kvd/\n") {
		t.Errorf("-waiterctl: want waiterctl usr/libexec/kvd/ in debian/install:\n%s", in)
	}
	if c := readStaged(t, debian, "control"); !strings.Contains(c, "\nDepends: ${misc:Depends}") {
		t.Errorf("-waiterctl: want no procps in:\n%s", c)
	}
	if o := readStaged(t, debian, "kvd.lintian-overrides"); !strings.Contains(o, "\nkvd: statically-linked-binary [usr/libexec/kvd/waiterctl]\n") {
		t.Errorf("-waiterctl: no override for the static waiterctl in:\n%s", o)
	}
	if m := readStaged(t, debian, "manpages"); m != "kvd.8\n" {
		t.Errorf("-waiterctl: manpages %q: want kvd.8 alone (waiterctl is not on PATH)", m)
	}

	// Shipped, but the units reload without it: said, not refused.
	_, log = dryRun(t, tr.src, nil, tr.args("-waiterctl")...)
	if !strings.Contains(log, "note: "+kvdCtl+" is shipped, but no ExecReload= of the units runs it") {
		t.Errorf("-waiterctl with kill -HUP units: no note in:\n%s", log)
	}

	// Units that run a waiterctl the package does not have.
	other := filepath.Join(t.TempDir(), "units")
	files, err := units.Generate(units.Params{Name: "kvd", Port: 7300, Waiterctl: "/usr/bin/waiterctl"})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(other, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(other, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		args []string
		say  string
	}{
		{"no -waiterctl", func() []string { u := ctlTree; u.ctl = ""; return u.args() }(),
			"the units' ExecReload= runs " + kvdCtl + ", which this package does not ship: give -waiterctl"},
		// /usr/bin/waiterctl is waiterd's package's.
		{"waiterd's", func() []string { u := ctlTree; u.units = other; return u.args() }(),
			"runs /usr/bin/waiterctl, which this package does not ship (it ships " + kvdCtl + ")"},
	} {
		t.Run(c.name, func(t *testing.T) {
			log, err := buildDeb(t, tr.src, nil, append(c.args, "-dry-run")...)
			if err == nil {
				t.Fatalf("want a failure, have none:\n%s", log)
			}
			if !strings.Contains(log, c.say) {
				t.Errorf("want %q in:\n%s", c.say, log)
			}
		})
	}
}

// TestBuildDebNoWaiterctlSource: from a checkout without cmd/waiterctl, waiterd's
// package, and another with -waiterctl, are refused at once, saying why;
// another daemon's without it builds as before.
func TestBuildDebNoWaiterctlSource(t *testing.T) {
	need(t)
	t.Parallel()
	tr := newTree(t)
	top := filepath.Join(t.TempDir(), "waiter")
	if err := os.MkdirAll(top, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, ".", nil, "cp", "-r", ".", filepath.Join(top, "packaging"))
	script := filepath.Join(top, "packaging", "build-deb.sh")
	out := filepath.Join(t.TempDir(), "out")
	for _, c := range []struct {
		name string
		args []string
		say  string // "" for success
	}{
		{"waiterd", []string{"-out", out}, top + "/cmd/waiterctl is missing: the waiterd package ships waiterctl as /usr/bin/waiterctl"},
		{"kvd -waiterctl", tr.args("-waiterctl", "-out", out), top + "/cmd/waiterctl is missing: the kvd package ships waiterctl as " + kvdCtl},
		{"kvd", tr.args("-out", out), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(script, append(c.args, "-dry-run")...)
			cmd.Dir = tr.src
			b, err := cmd.CombinedOutput()
			if c.say == "" {
				if err != nil {
					t.Errorf("want success, have %v:\n%s", err, b)
				}
				return
			}
			if err == nil || !strings.Contains(string(b), c.say) {
				t.Errorf("want a failure saying %q, have %v:\n%s", c.say, err, b)
			}
			if strings.Contains(string(b), "dated") {
				t.Errorf("it went on before refusing:\n%s", b)
			}
		})
	}
}

// TestBuildDebWaiterd builds waiterd's own package, as `make deb` does (into
// another directory), and reads it back: both binaries, static and 0755,
// waiterctl's man page, the units exactly as units/ has them, reloading
// with /usr/bin/waiterctl, and no procps.
func TestBuildDebWaiterd(t *testing.T) {
	need(t, "lintian")
	t.Parallel()
	out := t.TempDir()
	log, err := buildDeb(t, t.TempDir(), nil, "-out", out)
	if err != nil {
		t.Fatalf("build-deb.sh: %v\n%s", err, log)
	}
	if !strings.Contains(log, "lintian: no error, no warning") {
		t.Errorf("lintian did not pass:\n%s", log)
	}
	debs, _ := filepath.Glob(filepath.Join(out, "waiterd_*_amd64.deb"))
	if len(debs) != 1 {
		t.Fatalf("want one waiterd_*_amd64.deb in %s, have %v\n%s", out, debs, log)
	}
	deb := debs[0]
	hdrs, data := tarFiles(t, dpkgDeb(t, "--fsys-tarfile", deb))
	var files []string
	for name, h := range hdrs {
		if h.Typeflag != tar.TypeDir {
			files = append(files, name)
		}
	}
	sort.Strings(files)
	want := []string{
		"etc/waiterd/waiterd.yaml",
		"lib/systemd/system/waiterd-accept.socket", "lib/systemd/system/waiterd-accept@.service",
		"lib/systemd/system/waiterd.service", "lib/systemd/system/waiterd.socket",
		"usr/bin/waiterctl", "usr/bin/waiterd",
		"usr/share/doc/waiterd/changelog.Debian.gz", "usr/share/doc/waiterd/copyright",
		"usr/share/lintian/overrides/waiterd",
		"usr/share/man/man1/waiterctl.1.gz", "usr/share/man/man8/waiterd.8.gz",
	}
	if fmt.Sprint(files) != fmt.Sprint(want) {
		t.Errorf("files:\nwant %v\nhave %v", want, files)
	}
	for _, f := range files {
		h := hdrs[f]
		mode := int64(0o644)
		if strings.HasPrefix(f, "usr/bin/") {
			mode = 0o755
		}
		if h.Mode&0o7777 != mode || h.Uname != "root" || h.Gname != "root" {
			t.Errorf("%s: mode %o, owner %s:%s; want %o root:root", f, h.Mode&0o7777, h.Uname, h.Gname, mode)
		}
	}
	for _, f := range []string{"usr/bin/waiterd", "usr/bin/waiterctl"} {
		if b := data[f]; len(b) < 20 || string(b[:4]) != "\x7fELF" || b[18] != 0x3e {
			t.Errorf("%s is no x86-64 ELF binary", f)
		}
	}
	for _, name := range units.FileNames("waiterd") {
		shipped, err := os.ReadFile(filepath.Join("..", "units", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data["lib/systemd/system/"+name], shipped) {
			t.Errorf("lib/systemd/system/%s differs from units/%s", name, name)
		}
	}
	svc := string(data["lib/systemd/system/waiterd.service"])
	for _, l := range []string{"ExecReload=/usr/bin/waiterctl -s /run/waiterd/control -timeout 85s reload", "RuntimeDirectory=waiterd"} {
		if !strings.Contains(svc, "\n"+l+"\n") {
			t.Errorf("waiterd.service: no line %q", l)
		}
	}
	if strings.Contains(svc, "/bin/kill") {
		t.Errorf("waiterd.service still runs /bin/kill:\n%s", svc)
	}
	if dep := strings.TrimSpace(string(dpkgDeb(t, "-f", deb, "Depends"))); strings.Contains(dep, "procps") {
		t.Errorf("Depends: %q: want no procps", dep)
	}
	zr, err := gzip.NewReader(bytes.NewReader(data["usr/share/man/man1/waiterctl.1.gz"]))
	if err != nil {
		t.Fatal(err)
	}
	man, _ := io.ReadAll(zr)
	if !strings.Contains(string(man), ".TH WAITERCTL 1") {
		t.Errorf("waiterctl.1: not waiterctl's page:\n%.200s", man)
	}
	zr, err = gzip.NewReader(bytes.NewReader(data["usr/share/man/man8/waiterd.8.gz"]))
	if err != nil {
		t.Fatal(err)
	}
	man, _ = io.ReadAll(zr)
	for _, w := range []string{"/run/waiterd/control", ".BR waiterctl (1)"} {
		if !strings.Contains(string(man), w) {
			t.Errorf("waiterd.8 does not mention %q", w)
		}
	}
}
