package activation

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestNewBacklog(t *testing.T) {
	for _, tc := range []struct {
		name             string
		asked, somaxconn int
		used             int
	}{
		// 0 asks for the most the kernel grants.
		{"zero", 0, 4096, 4096},
		// Negative, which listen(2) itself reads as "the most" too.
		{"negative", -1, 4096, 4096},
		{"within", 16, 4096, 16},
		{"at the limit", 4096, 4096, 4096},
		// The kernel would cut it silently: Used says so.
		{"above", 5096, 4096, 4096},
		// An admin's somaxconn of 0 still wins over what was asked.
		{"somaxconn zero", 16, 0, 0},
	} {
		b := newBacklog(tc.asked, tc.somaxconn)
		want := Backlog{Asked: tc.asked, Somaxconn: tc.somaxconn, Used: tc.used}
		if b != want {
			t.Errorf("%s: want %+v, have %+v", tc.name, want, b)
		}
	}
}

func TestParseSomaxconn(t *testing.T) {
	for _, tc := range []struct {
		text string
		n    int
		ok   bool
	}{
		{"4096\n", 4096, true},
		{"128", 128, true},
		{"0\n", 0, true},
		{"", 0, false},
		{"-1\n", 0, false},
		{"lots\n", 0, false},
	} {
		n, err := parseSomaxconn([]byte(tc.text))
		if (err == nil) != tc.ok || n != tc.n {
			t.Errorf("%q: want %d (ok %v), have %d, %v", tc.text, tc.n, tc.ok, n, err)
		}
		if err != nil && !strings.Contains(err.Error(), somaxconnPath) {
			t.Errorf("%q: the error does not name the file: %v", tc.text, err)
		}
	}
}

func TestSomaxconnReadsSysctl(t *testing.T) {
	b, err := os.ReadFile(somaxconnPath)
	if err != nil {
		if have := Somaxconn(); have != defaultSomaxconn {
			t.Fatalf("no %s (%v): want the default %d, have %d", somaxconnPath, err, defaultSomaxconn, have)
		}
		t.Skipf("no %s: %v", somaxconnPath, err)
	}
	want, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if have := Somaxconn(); have != want {
		t.Fatalf("want %d, have %d", want, have)
	}
}
