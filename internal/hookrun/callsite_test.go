package hookrun

import (
	"github.com/waiter-go/waiter/hooks"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Every hook has one call site: each field of Set is called by one Runner
// method, and each Runner method is called from one place in package pool
// (through a field named hk). A reader finds where any hook runs with one
// search, and this test keeps it so.
func TestEachHookHasOneCallSite(t *testing.T) {
	fset := token.NewFileSet()
	parse := func(glob string) []*ast.File {
		paths, _ := filepath.Glob(glob)
		var files []*ast.File
		for _, p := range paths {
			if strings.HasSuffix(p, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, p, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
		if len(files) == 0 {
			t.Fatalf("no files for %s", glob)
		}
		return files
	}

	// Field -> Runner methods that read r.set.Field.
	fieldUsers := map[string]map[string]bool{}
	for _, f := range parse("runner.go") {
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Recv == nil || strings.HasPrefix(fn.Name.Name, "Has") {
				continue
			}
			ast.Inspect(fn, func(n ast.Node) bool {
				if se, ok := n.(*ast.SelectorExpr); ok {
					if inner, ok := se.X.(*ast.SelectorExpr); ok && inner.Sel.Name == "set" {
						if fieldUsers[se.Sel.Name] == nil {
							fieldUsers[se.Sel.Name] = map[string]bool{}
						}
						fieldUsers[se.Sel.Name][fn.Name.Name] = true
					}
				}
				return true
			})
		}
	}
	st := reflect.TypeOf(hooks.Set{})
	for i := 0; i < st.NumField(); i++ {
		name := st.Field(i).Name
		if name == "Log" || name == "LogDebug" {
			continue // called by the logger's hook in pool/log.go, checked below
		}
		if n := len(fieldUsers[name]); n != 1 {
			t.Errorf("Set.%s is called by %d Runner methods, want 1: %v", name, n, fieldUsers[name])
		}
	}

	// Runner method -> call sites in pool.
	calls := map[string][]string{}
	logCalls := 0
	for _, f := range parse("../../pool/*.go") {
		ast.Inspect(f, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.CallExpr:
				se, ok := x.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				var recv string
				switch r := se.X.(type) {
				case *ast.SelectorExpr:
					recv = r.Sel.Name
				case *ast.Ident:
					recv = r.Name
				}
				if recv == "hk" {
					calls[se.Sel.Name] = append(calls[se.Sel.Name], fset.Position(x.Pos()).String())
				}
				if recv == "h" && (se.Sel.Name == "log" || se.Sel.Name == "debug") {
					logCalls++
				}
			}
			return true
		})
	}
	rt := reflect.TypeOf(&Runner{})
	for i := 0; i < rt.NumMethod(); i++ {
		name := rt.Method(i).Name
		if name == "Set" || strings.HasPrefix(name, "Has") {
			continue
		}
		if n := len(calls[name]); n != 1 {
			t.Errorf("Runner.%s is called from %d places in pool, want 1: %v", name, n, calls[name])
		}
	}
	if logCalls != 2 {
		t.Errorf("the Log and LogDebug hooks: want one call each in pool/log.go, have %d calls", logCalls)
	}
}
