package units

import (
	"bytes"
	"fmt"
	"path"
	"sort"
	"strings"
	"unicode/utf8"
)

// A Directive is one setting of the daemon's own for the generated units,
// Key=Value in Section. It is written after the generator's lines of that
// section, so a single-valued setting given here overrides the generator's
// (a list-valued one, such as SystemCallFilter=, adds to it). The value is
// systemd's syntax, copied as it is: '%' starts a specifier, '$' a variable.
type Directive struct {
	// Section is where it goes: "Unit" (the [Unit] of both services),
	// "Service" (the [Service] of both services) or "Socket" (the [Socket]
	// of both sockets).
	Section string
	// Key is the setting's name, e.g. "StateDirectory".
	Key string
	// Value is what it is set to; "" resets a list.
	Value string
}

func (d Directive) String() string { return d.Key + "=" + d.Value }

// Sections of Directive.Section, in the order a unit has them.
var sections = []string{"Unit", "Service", "Socket"}

// owned are the settings that the generator writes and that a daemon on
// waiter depends on: each is refused as a Directive, with what to use
// instead. (A drop-in can still change them: it is the expert's tool.)
var owned = map[string]map[string]string{
	"Unit": {
		"Description": "set by Description (-description)",
	},
	"Service": {
		"Type":            "the master talks to systemd (Type=notify)",
		"NotifyAccess":    "only the master may talk to systemd (NotifyAccess=main)",
		"ExecStart":       "set by Exec and Config (-exec, -config)",
		"ExecReload":      "set by Waiterctl (-waiterctl): waiterctl reload, or else -check and SIGHUP to the master",
		"KillMode":        "a stop is SIGTERM to the master alone (KillMode=mixed), which stops its workers",
		"TimeoutStopSec":  "set by GracefulTimeout (-graceful-timeout)",
		"TimeoutStartSec": "set by StartTimeout (-start-timeout), which bounds a reload too",
		"TimeoutSec":      "it would set TimeoutStartSec= and TimeoutStopSec=, which -start-timeout and -graceful-timeout set",
		"WatchdogSec":     "set by Watchdog (-watchdog)",
	},
	"Socket": {
		"Accept":       "the Accept=yes pair is its own socket (NoAccept, -accept=false)",
		"ListenStream": "set by Port and AcceptPort (-port, -accept-port); a directive would go to both sockets",
	},
}

// DirectoryKeys are the settings whose values are directories that systemd
// creates for the service (under /var/lib, /var/cache, /var/log, /run and
// /etc). Their values are checked as relative paths, here and in drop-ins:
// packaging/build-deb.sh removes the state, cache and logs directories on
// purge and must know exactly which.
var DirectoryKeys = []string{"StateDirectory", "CacheDirectory", "LogsDirectory", "RuntimeDirectory", "ConfigurationDirectory"}

var (
	keyRE = charset{first: "A-Za-z", rest: "A-Za-z0-9-"}
	// A directory of StateDirectory= and the like, relative to its base.
	dirRE = charset{first: "A-Za-z0-9_", rest: "A-Za-z0-9_.+@/-"}
	// A drop-in's file name.
	dropInRE = charset{first: "A-Za-z0-9_", rest: "A-Za-z0-9_.+@-"}
)

// ParseDirective parses "Key=Value" for section (see Directive), as the
// flags of `waiterd units` give it, and checks it as Generate does. The
// error is a *ParamError for "Directives".
func ParseDirective(section, s string) (Directive, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return Directive{}, directiveError(section, s, "want Key=Value")
	}
	d := Directive{Section: section, Key: strings.TrimSpace(k), Value: strings.TrimSpace(v)}
	if err := d.check(); err != nil {
		return Directive{}, err
	}
	return d, nil
}

func directiveError(section, s, reason string) error {
	return &ParamError{Field: "Directives", Value: s, Reason: fmt.Sprintf("[%s]: %s", section, reason)}
}

func (d Directive) check() error {
	bad := func(reason string) error { return directiveError(d.Section, d.String(), reason) }
	known := false
	for _, s := range sections {
		known = known || s == d.Section
	}
	if !known {
		return bad("unknown section: want " + strings.Join(sections, ", "))
	}
	if err := checkKey(d.Key); err != "" {
		return bad(err)
	}
	if why, ok := owned[d.Section][d.Key]; ok {
		return bad("the generator writes " + d.Key + "= (" + why + ")")
	}
	if err := checkValue(d.Value); err != "" {
		return bad(err)
	}
	if d.Section == "Service" {
		if err := checkDirectories(d.Key, d.Value); err != "" {
			return bad(err)
		}
	}
	return nil
}

// checkRuntime refuses what would break NAME.service's RuntimeDirectory=NAME,
// the control socket's directory, which the generator writes: an empty
// RuntimeDirectory= (it resets the list, and the master would have no
// control socket), and, with the Accept=yes pair, which gets the same
// directives, NAME or a directory under it (an instance ending would
// remove it under the master). Other directories are the daemon's own.
func (d Directive) checkRuntime(name string, noAccept bool) error {
	if d.Section != "Service" || d.Key != "RuntimeDirectory" {
		return nil
	}
	bad := func(reason string) error { return directiveError(d.Section, d.String(), reason) }
	if d.Value == "" {
		return bad("an empty RuntimeDirectory= would drop the generator's RuntimeDirectory=" + name + ", the control socket's directory")
	}
	if noAccept {
		return nil // on NAME.service alone, systemd merges a repeated directory
	}
	for _, f := range strings.Fields(d.Value) {
		dir, _, _ := strings.Cut(f, ":")
		if dir == name || strings.HasPrefix(dir, name+"/") {
			return bad(fmt.Sprintf("%q: NAME.service has RuntimeDirectory=%s already (its control socket), and on the Accept=yes instances, which get this directive too, it would be removed whenever one ends: use another directory, or -accept=false", f, name))
		}
	}
	return nil
}

// checkNoSocket refuses, for a NoSocket service, a [Socket] directive
// (there is no socket unit) and what would set the fd store apart from the
// generator's: FileDescriptorStoreMax= and $FDSTORE must agree, or the
// master hands systemd a socket that it drops, or keeps none.
func (d Directive) checkNoSocket() error {
	bad := func(reason string) error { return directiveError(d.Section, d.String(), reason) }
	switch {
	case d.Section == "Socket":
		return bad("no socket unit to put it in (NoSocket, -no-socket: the daemon binds its own)")
	case d.Section != "Service":
	case d.Key == "FileDescriptorStoreMax":
		return bad(fmt.Sprintf("the generator writes FileDescriptorStoreMax=%d with Environment=FDSTORE=%d for NoSocket (-no-socket): the two must agree", FDStoreMax, FDStoreMax))
	case d.Key == "Environment":
		for _, f := range strings.Fields(d.Value) {
			if strings.HasPrefix(strings.TrimLeft(f, `"'`), "FDSTORE=") {
				return bad(fmt.Sprintf("the generator sets FDSTORE=%d with FileDescriptorStoreMax=%d for NoSocket (-no-socket): the two must agree", FDStoreMax, FDStoreMax))
			}
		}
	}
	return nil
}

// checkKey returns why key is no setting name, or "".
func checkKey(key string) string {
	switch {
	case key == "":
		return "no key before '='"
	case !keyRE.MatchString(key):
		return "want a key of letters and digits, such as StateDirectory"
	}
	return ""
}

// checkValue returns why v cannot be one line's value, or "".
func checkValue(v string) string {
	if !utf8.ValidString(v) {
		return "not UTF-8"
	}
	for _, r := range v {
		if r == '\n' || r == '\r' {
			return "a newline would start another setting: give one directive per flag"
		}
		if (r < ' ' && r != '\t') || r == 0x7f {
			return "a control character"
		}
	}
	if strings.HasSuffix(v, `\`) {
		return `a trailing '\' would continue the line`
	}
	return ""
}

// checkDirectories returns why the value of key (one of DirectoryKeys) is
// not a list of relative directories, or "".
func checkDirectories(key, v string) string {
	is := false
	for _, k := range DirectoryKeys {
		is = is || k == key
	}
	if !is {
		return ""
	}
	for _, f := range strings.Fields(v) {
		// DIR or DIR:SYMLINK (systemd 250 and later).
		parts := strings.Split(f, ":")
		if len(parts) > 2 {
			return fmt.Sprintf("%q: want DIR or DIR:LINK", f)
		}
		for _, p := range parts {
			switch {
			case strings.HasPrefix(p, "/"):
				return fmt.Sprintf("%q: want a path relative to %s='s base (/var/lib for StateDirectory=, ...)", p, key)
			case !dirRE.MatchString(p):
				return fmt.Sprintf("%q: want letters, digits and _ . + @ / - (no specifiers: the package's purge must know the path)", p)
			case path.Clean(p) != p || strings.Contains("/"+p+"/", "/../"):
				return fmt.Sprintf("%q: want a clean path (no //, /./, .. or trailing /)", p)
			}
		}
	}
	return ""
}

// A DropIn is a file of the daemon's own for NAME.service.d/ (and, with the
// Accept=yes pair, NAME-accept@.service.d/): systemd reads it after the
// unit, so it adds to the generated settings or overrides them. It is
// copied as it is.
type DropIn struct {
	// Name is the file's name: letters, digits and _ . + @ -, ending in
	// ".conf" (systemd reads no other drop-in), e.g. "limits.conf".
	Name string
	// Content is the file: [Unit], [Service] or [Install] section lines,
	// Key=Value lines (a trailing '\' continues one), comments (# or ;)
	// and empty lines.
	Content []byte
}

// dropInSections are the sections a service's drop-in may have.
var dropInSections = []string{"Unit", "Service", "Install"}

// ParseDropIn checks a drop-in as Generate does; the error is a *ParamError
// for "DropIns".
func ParseDropIn(name string, content []byte) (DropIn, error) {
	d := DropIn{Name: name, Content: content}
	if err := d.check(); err != nil {
		return DropIn{}, err
	}
	return d, nil
}

func (d DropIn) check() error {
	bad := func(reason string) error {
		return &ParamError{Field: "DropIns", Value: d.Name, Reason: reason}
	}
	switch {
	case !strings.HasSuffix(d.Name, ".conf") || len(d.Name) == len(".conf"):
		return bad("want a file name ending in .conf: systemd reads no other drop-in")
	case len(d.Name) > 255:
		return bad("a file name of at most 255 bytes")
	case !dropInRE.MatchString(d.Name):
		return bad("want a file name of letters, digits and _ . + @ -, not starting with '.' or '-'")
	case !utf8.Valid(d.Content):
		return bad("not UTF-8")
	case bytes.IndexByte(d.Content, 0) >= 0:
		return bad("a NUL byte: not a text file")
	}
	section := ""
	lines := strings.Split(strings.TrimSuffix(string(d.Content), "\n"), "\n")
	settings := 0
	for i := 0; i < len(lines); i++ {
		n := i + 1
		l := strings.TrimSpace(strings.TrimSuffix(lines[i], "\r"))
		switch {
		case l == "" || l[0] == '#' || l[0] == ';':
			continue
		case l[0] == '[':
			if !strings.HasSuffix(l, "]") {
				return bad(fmt.Sprintf("line %d: %q: want [Section]", n, l))
			}
			section = l[1 : len(l)-1]
			known := strings.HasPrefix(section, "X-")
			for _, s := range dropInSections {
				known = known || s == section
			}
			if !known {
				return bad(fmt.Sprintf("line %d: [%s]: want a section of a service: %s (or X-...)", n, section, strings.Join(dropInSections, ", ")))
			}
			continue
		}
		if section == "" {
			return bad(fmt.Sprintf("line %d: %q before any [Section]", n, l))
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return bad(fmt.Sprintf("line %d: %q: want Key=Value", n, l))
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if err := checkKey(k); err != "" {
			return bad(fmt.Sprintf("line %d: %q: %s", n, l, err))
		}
		// A trailing '\' joins the next line to the value.
		for strings.HasSuffix(v, `\`) {
			if i+1 == len(lines) {
				return bad(fmt.Sprintf("line %d: a trailing '\\' continues into no line", n))
			}
			i++
			v = strings.TrimSuffix(v, `\`) + " " + strings.TrimSpace(strings.TrimSuffix(lines[i], "\r"))
		}
		for _, r := range v {
			if (r < ' ' && r != '\t') || r == 0x7f {
				return bad(fmt.Sprintf("line %d: a control character", n))
			}
		}
		if section == "Service" {
			if err := checkDirectories(k, v); err != "" {
				return bad(fmt.Sprintf("line %d: %s", n, err))
			}
		}
		settings++
	}
	if settings == 0 {
		return bad("no Key=Value setting")
	}
	return nil
}

// extra writes the directives of section as lines, under a comment that
// says where they come from; "" when there are none.
func extra(ds []Directive, section, flag string) string {
	var b strings.Builder
	for _, d := range ds {
		if d.Section == section {
			if b.Len() == 0 {
				fmt.Fprintf(&b, "# This daemon's own settings (waiterd units -%s-directive).\n", flag)
			}
			b.WriteString(d.String() + "\n")
		}
	}
	return b.String()
}

// dropInNames returns the drop-ins' names, sorted as systemd reads them.
func dropInNames(ds []DropIn) []string {
	var names []string
	for _, d := range ds {
		names = append(names, d.Name)
	}
	sort.Strings(names)
	return names
}
