package waiter_test

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReadmeProgram builds the README's program as written (the first Go
// block under "## A program"), checks a good and a bad file with -check,
// and serves a client with it, settings from a file.
func TestReadmeProgram(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "## A program")
	if i < 0 {
		t.Fatal("README.md has no \"## A program\" section")
	}
	s = s[i:]
	start := strings.Index(s, "```go\n")
	end := strings.Index(s[start+6:], "```")
	if start < 0 || end < 0 {
		t.Fatal("no Go block in the README's program section")
	}
	src := s[start+6 : start+6+end]
	// Inside this module, so that it builds against this tree.
	dir, err := os.MkdirTemp("tests", "readme-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "hellod")
	if out, err := exec.Command("go", "build", "-o", bin, "./"+dir).CombinedOutput(); err != nil {
		t.Fatalf("the README's program does not build: %v\n%s\n%s", err, out, src)
	}
	cfg := filepath.Join(t.TempDir(), "hellod.yaml")
	os.WriteFile(cfg, []byte("prefork: 2\ngreeting: hi from the file\n"), 0o600)
	if out, err := exec.Command(bin, "-check", "-config", cfg).CombinedOutput(); err != nil || !strings.Contains(string(out), "configuration ok") {
		t.Fatalf("-check of a good file: %v %q", err, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("greeting: hi\nprefork: -x\n"), 0o600)
	out, err := exec.Command(bin, "-check", "-config", bad).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), `bad.yaml:2: key "prefork"`) {
		t.Fatalf("-check of a bad file: want exit 1 naming bad.yaml:2 and the key, have %v %q", err, out)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "-config", cfg, "-listen", addr)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var line string
	for i := 0; i < 250; i++ {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, _ = bufio.NewReader(c).ReadString('\n')
			c.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if line != "hi from the file\n" {
		t.Fatalf("want the file's greeting, have %q\n%s", line, stderr.String())
	}
	cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGINT: %v\n%s", err, stderr.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatal("no exit after SIGINT")
	}
}

// -check reads the certificates as the master would: a broken one fails
// the check (so systemctl reload fails), naming the file.
func TestCheckReadsCertificates(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "waiterd")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/waiterd").CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	cert := filepath.Join(dir, "c.pem")
	os.WriteFile(cert, []byte("half a certificate\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "k.pem"), []byte("no key\n"), 0o600)
	cfg := filepath.Join(dir, "w.yaml")
	os.WriteFile(cfg, []byte("ssl: true\nssl_cert_file: "+cert+"\nssl_key_file: "+filepath.Join(dir, "k.pem")+"\n"), 0o600)
	out, err := exec.Command(bin, "-check", "-config", cfg).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "c.pem") {
		t.Fatalf("want exit 1 naming the certificate, have %v %q", err, out)
	}
}
