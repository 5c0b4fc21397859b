package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error is a problem with one key of a config file or one flag: it names
// where (file and line, or the flag), the key, the value and why.
type Error struct {
	File  string // "" for a flag
	Line  int    // 0 when unknown
	Key   string
	Value string
	Err   error
}

func (e *Error) Error() string {
	var where string
	switch {
	case e.File == "" && e.Key != "":
		where = "flag -" + flagName(e.Key)
	case e.Line > 0:
		where = fmt.Sprintf("%s:%d", e.File, e.Line)
	default:
		where = e.File
	}
	if e.Key == "" {
		return fmt.Sprintf("config: %s: %v", where, e.Err)
	}
	if e.File == "" {
		return fmt.Sprintf("config: %s: value %q: %v", where, e.Value, e.Err)
	}
	return fmt.Sprintf("config: %s: key %q: value %q: %v", where, e.Key, e.Value, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrUnknownKey is wrapped when a file or flag names no option.
var ErrUnknownKey = errors.New("unknown key")

// fields maps every yaml key of the targets (following `yaml:",inline"`
// embedding) to the field it sets, so one file can fill Options and a
// program's own settings together.
func fields(targets []any) (map[string]reflect.Value, error) {
	m := map[string]reflect.Value{}
	var walk func(v reflect.Value) error
	walk = func(v reflect.Value) error {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := f.Tag.Get("yaml")
			name, opts, _ := strings.Cut(tag, ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			if opts == "inline" {
				if err := walk(v.Field(i)); err != nil {
					return err
				}
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			if _, dup := m[name]; dup {
				return fmt.Errorf("config: key %q is defined twice among the targets", name)
			}
			m[name] = v.Field(i)
		}
		return nil
	}
	for _, t := range targets {
		v := reflect.ValueOf(t)
		if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
			return nil, fmt.Errorf("config: target %T is not a pointer to a struct", t)
		}
		if err := walk(v.Elem()); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// setNode decodes one value node into a field, with a message a person can
// act on instead of yaml's "cannot unmarshal !!str into int".
func setNode(field reflect.Value, n *yaml.Node) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if field.Kind() == reflect.Slice && n.Kind == yaml.ScalarNode && field.Type().Elem().Kind() == reflect.String {
		// A comma-separated scalar is accepted for a list of strings.
		var out []string
		for _, s := range strings.Split(n.Value, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		field.Set(reflect.ValueOf(out))
		return nil
	}
	if field.Kind() != reflect.Slice && n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want %s, have a %s", typeName(field), kindName(n.Kind))
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return fmt.Errorf("want %s, have nothing", typeName(field))
	}
	tmp := reflect.New(field.Type())
	if err := n.Decode(tmp.Interface()); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return fmt.Errorf("want %s", typeName(field))
		}
		return err
	}
	field.Set(tmp.Elem())
	return nil
}

func typeName(v reflect.Value) string {
	if _, ok := v.Interface().(Duration); ok {
		return "a duration (seconds, or e.g. 500ms)"
	}
	if _, ok := v.Interface().(Size); ok {
		return "a size (bytes, or e.g. 512M)"
	}
	switch v.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list"
	}
	return v.Type().String()
}

// Lines records where each key was set, so that a validation error found
// after loading can still name the file and line.
type Lines map[string]int

// LoadFile reads a YAML mapping of options into the targets (usually one
// *Options, and perhaps a program's own settings struct). Keys that no
// target has, duplicate keys, wrong types, an empty file and a file that is
// not a mapping are all refused with an *Error naming file, line and key.
func LoadFile(path string, targets ...any) (Lines, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Err: err}
	}
	return Load(path, data, targets...)
}

// Load is LoadFile on bytes already read; name is used in messages.
func Load(name string, data []byte, targets ...any) (Lines, error) {
	idx, err := fields(targets)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &Error{File: name, Line: syntaxLine(data, err), Err: fmt.Errorf("not valid YAML: %w", strippedLine(err))}
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, &Error{File: name, Err: errors.New("the file is empty: want a mapping of options (key: value)")}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, &Error{File: name, Line: root.Line, Err: fmt.Errorf("want a mapping of options (key: value), have a %s", kindName(root.Kind))}
	}
	lines := Lines{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		key := k.Value
		if prev, dup := lines[key]; dup {
			return nil, &Error{File: name, Line: k.Line, Key: key, Value: v.Value, Err: fmt.Errorf("duplicate key (first set at line %d)", prev)}
		}
		lines[key] = k.Line
		field, ok := idx[key]
		if !ok {
			return nil, &Error{File: name, Line: k.Line, Key: key, Value: v.Value, Err: fmt.Errorf("%w (known keys: %s)", ErrUnknownKey, knownKeys(idx))}
		}
		if err := setNode(field, v); err != nil {
			return nil, &Error{File: name, Line: v.Line, Key: key, Value: v.Value, Err: err}
		}
	}
	return lines, nil
}

// Locate turns a validation error into an *Error that names the file and the
// line where the key was set; errors it cannot place are returned as they are.
func Locate(err error, file string, lines Lines) error {
	var fe *FieldError
	if err == nil || !errors.As(err, &fe) {
		return err
	}
	line, ok := lines[fe.Key]
	if !ok {
		return err
	}
	return &Error{File: file, Line: line, Key: fe.Key, Value: fe.Value, Err: errors.New(fe.Reason)}
}

func knownKeys(idx map[string]reflect.Value) string {
	keys := make([]string, 0, len(idx))
	for k := range idx {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

// syntaxLine finds the line of a YAML syntax error: the first line at
// which a prefix of the file stops parsing. yaml.v3's own "line N" is its
// 0-based context line for parser errors and can be one early for scanner
// errors (an unclosed [ on line 2 says line 1; a tab on line 3, line 2);
// a config file is small, so the prefixes are cheap. 0: not found.
func syntaxLine(data []byte, err error) int {
	lines := bytes.SplitAfter(data, []byte("\n"))
	var doc yaml.Node
	for n := 1; n <= len(lines); n++ {
		if yaml.Unmarshal(bytes.Join(lines[:n], nil), &doc) != nil {
			return n
		}
	}
	var line int
	if _, e := fmt.Sscanf(err.Error(), "yaml: line %d:", &line); e == nil {
		return line
	}
	return 0
}

// strippedLine drops yaml.v3's own "line N: " from its message, which
// Error's file:line replaces (and which could contradict it).
func strippedLine(err error) error {
	msg := err.Error()
	var line int
	var rest string
	if n, _ := fmt.Sscanf(msg, "yaml: line %d:", &line); n == 1 {
		if i := strings.Index(msg, ": "); i >= 0 {
			if j := strings.Index(msg[i+2:], ": "); j >= 0 {
				rest = msg[i+2+j+2:]
				return errors.New(rest)
			}
		}
	}
	return err
}

func flagName(key string) string { return strings.ReplaceAll(key, "_", "-") }

// Flags registers one flag per key of the targets (px_idle becomes -px-idle)
// on fs. Their values are held apart and written over the targets only by
// Apply, so that flags given on the command line override a config file
// loaded after parsing, whatever the order of the code.
type Flags struct {
	set map[string]string
}

// NewFlags registers the flags. It panics on a target that is not a pointer
// to a struct, which is a programming error.
func NewFlags(fs *flag.FlagSet, targets ...any) *Flags {
	idx, err := fields(targets)
	if err != nil {
		panic(err)
	}
	f := &Flags{set: map[string]string{}}
	for key, field := range idx {
		fs.Var(&flagValue{f: f, key: key, isBool: field.Kind() == reflect.Bool}, flagName(key), "option "+key+" ("+typeName(field)+")")
	}
	return f
}

// Apply writes the flags that were given over targets, which must be of the
// types given to NewFlags (usually fresh copies loaded from a file), checking
// each value as a YAML scalar of the field's type.
// Has reports whether the key was set by a flag: an error about its value
// is then the flag's, not the file's line (see Locate).
func (f *Flags) Has(key string) bool { _, ok := f.set[key]; return ok }

func (f *Flags) Apply(targets ...any) error {
	idx, err := fields(targets)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(f.set))
	for k := range f.set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		val := f.set[key]
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(val), &doc); err != nil || len(doc.Content) == 0 {
			// Not YAML on its own (e.g. "a: b"): take it as a plain string.
			doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.ScalarNode, Tag: "!!str", Value: val}}}
		}
		field, ok := idx[key]
		if !ok {
			return &Error{Key: key, Value: val, Err: ErrUnknownKey}
		}
		if err := setNode(field, doc.Content[0]); err != nil {
			return &Error{Key: key, Value: val, Err: err}
		}
	}
	return nil
}

type flagValue struct {
	f      *Flags
	key    string
	isBool bool
}

func (v *flagValue) String() string {
	if v == nil || v.f == nil {
		return ""
	}
	return v.f.set[v.key]
}

func (v *flagValue) Set(s string) error { v.f.set[v.key] = s; return nil }

func (v *flagValue) IsBoolFlag() bool { return v.isBool }
