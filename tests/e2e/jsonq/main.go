// Command jsonq is the end-to-end suite's JSON reader: the container has
// neither jq nor python3, and the host is only sure to have Go. It reads
// one JSON value on standard input (anything more, or less, is an error)
// and prints the value at each path given, one line each:
//
//	jsonq mode workers.# workers.*.pid listeners.0.addr <status.json
//
// A path is keys and array indexes joined by dots; "#" is an array's (or
// object's) length, "*" every element of an array, printed space
// separated. Strings print bare, everything else as JSON. A path that is
// not there is an error (exit 1), so a renamed field fails the step that
// reads it rather than reading as empty. With no path it only checks that
// the input parses.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

func main() {
	out, err := run(os.Stdin, os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "jsonq: %v\n", err)
		os.Exit(1)
	}
	os.Stdout.WriteString(out)
}

func run(in io.Reader, paths []string) (string, error) {
	dec := json.NewDecoder(in)
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", fmt.Errorf("not JSON: %w", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return "", errors.New("more than one JSON value")
	}
	var b strings.Builder
	for _, p := range paths {
		vals, err := walk(v, strings.Split(p, "."), "")
		if err != nil {
			return "", fmt.Errorf("%s: %w", p, err)
		}
		for i, x := range vals {
			if i > 0 {
				b.WriteByte(' ')
			}
			s, err := text(x)
			if err != nil {
				return "", fmt.Errorf("%s: %w", p, err)
			}
			b.WriteString(s)
		}
		b.WriteByte('\n')
	}
	return b.String(), nil
}

// walk returns the values at path under v; at is where v is, for errors.
func walk(v any, path []string, at string) ([]any, error) {
	if len(path) == 0 {
		return []any{v}, nil
	}
	k, rest := path[0], path[1:]
	where := at
	if where == "" {
		where = "the top"
	}
	next := func(k string) string { return strings.TrimPrefix(at+"."+k, ".") }
	switch x := v.(type) {
	case map[string]any:
		if k == "#" && len(rest) == 0 {
			return []any{json.Number(strconv.Itoa(len(x)))}, nil
		}
		e, ok := x[k]
		if !ok {
			return nil, fmt.Errorf("no key %q in %s", k, where)
		}
		return walk(e, rest, next(k))
	case []any:
		switch {
		case k == "#" && len(rest) == 0:
			return []any{json.Number(strconv.Itoa(len(x)))}, nil
		case k == "*":
			var all []any
			for i, e := range x {
				vals, err := walk(e, rest, next(strconv.Itoa(i)))
				if err != nil {
					return nil, err
				}
				all = append(all, vals...)
			}
			return all, nil
		}
		i, err := strconv.Atoi(k)
		if err != nil || i < 0 || i >= len(x) {
			return nil, fmt.Errorf("%s has %d elements: want an index below that, # or *, not %q", where, len(x), k)
		}
		return walk(x[i], rest, next(k))
	}
	return nil, fmt.Errorf("%s is no object or array", where)
}

func text(v any) (string, error) {
	if s, ok := v.(string); ok {
		return s, nil
	}
	b, err := json.Marshal(v)
	return string(bytes.TrimSpace(b)), err
}
