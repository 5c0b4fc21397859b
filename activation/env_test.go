package activation

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	// As a child: take the fds the test passed, the way a daemon started by
	// systemd would, and print what FromEnv made of them.
	if os.Getenv("ACTTEST_CHILD") != "" {
		if os.Getenv("ACTTEST_PID") == "self" {
			os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
		}
		socks, err := FromEnv()
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(0)
		}
		for _, s := range socks {
			fmt.Printf("%s listening=%v inherited=%v\n", s.Name, s.Listening, s.Inherited)
		}
		fmt.Printf("env left: %q\n", os.Getenv("LISTEN_FDS")+os.Getenv("LISTEN_PID")+os.Getenv("LISTEN_FDNAMES"))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestCount(t *testing.T) {
	const me = 1234
	for _, tc := range []struct {
		name  string
		env   Env
		n     int
		names string
		err   string // the variable named in the error
	}{
		// Nothing set: not socket-activated.
		{"none", Env{}, 0, "", ""},
		// For another process (sd_listen_fds returns 0).
		{"other pid", Env{PID: "99", PIDSet: true, FDs: "2", FDsSet: true}, 0, "", ""},
		// LISTEN_FDS alone, as some supervisors leave behind: not for us.
		{"fds without pid", Env{FDs: "1", FDsSet: true}, 0, "", ""},
		{"one", Env{PID: "1234", PIDSet: true, FDs: "1", FDsSet: true}, 1, "unknown", ""},
		{"named", Env{PID: "1234", PIDSet: true, FDs: "2", FDsSet: true, FDNames: "a:b"}, 2, "a b", ""},
		// An empty entry is unnamed, like a missing LISTEN_FDNAMES: never "".
		{"empty name", Env{PID: "1234", PIDSet: true, FDs: "3", FDsSet: true, FDNames: "a::b"}, 3, "a unknown b", ""},
		{"empty names", Env{PID: "1234", PIDSet: true, FDs: "2", FDsSet: true, FDNames: ":"}, 2, "unknown unknown", ""},
		{"empty last", Env{PID: "1234", PIDSet: true, FDs: "2", FDsSet: true, FDNames: "web:"}, 2, "web unknown", ""},
		{"pid not a number", Env{PID: "x", PIDSet: true, FDs: "1", FDsSet: true}, 0, "", "LISTEN_PID"},
		{"fds not a number", Env{PID: "1234", PIDSet: true, FDs: "two", FDsSet: true}, 0, "", "LISTEN_FDS"},
		{"fds negative", Env{PID: "1234", PIDSet: true, FDs: "-1", FDsSet: true}, 0, "", "LISTEN_FDS"},
		{"fds too large", Env{PID: "1234", PIDSet: true, FDs: "100000", FDsSet: true}, 0, "", "LISTEN_FDS"},
		{"fds missing", Env{PID: "1234", PIDSet: true}, 0, "", "LISTEN_FDS"},
		{"names count", Env{PID: "1234", PIDSet: true, FDs: "2", FDsSet: true, FDNames: "a"}, 0, "", "LISTEN_FDNAMES"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, names, err := tc.env.Count(me)
			if tc.err != "" {
				var ee *EnvError
				if !errors.As(err, &ee) || ee.Var != tc.err {
					t.Fatalf("want an error naming %s, have %v", tc.err, err)
				}
				return
			}
			if err != nil || n != tc.n || strings.Join(names, " ") != tc.names {
				t.Fatalf("want %d %q, have %d %q %v", tc.n, tc.names, n, names, err)
			}
		})
	}
}

func FuzzCount(f *testing.F) {
	f.Add("1234", "1", "a")
	f.Add("1234", "3", "a:b:c")
	f.Add("x", "-1", "")
	f.Add("1234", "99999999999999999999", "::")
	f.Fuzz(func(t *testing.T, pid, fds, names string) {
		n, nm, err := Env{PID: pid, PIDSet: true, FDs: fds, FDsSet: true, FDNames: names}.Count(1234)
		if err != nil {
			var ee *EnvError
			if !errors.As(err, &ee) || ee.Var == "" {
				t.Fatalf("an error that names no variable: %v", err)
			}
			return
		}
		if n < 0 || n > maxListenFds || (n > 0 && len(nm) != n) {
			t.Fatalf("n %d with %d names", n, len(nm))
		}
	})
}

// child runs the test binary as a socket-activated process with files as
// fds 3, 4, ...
func child(t *testing.T, files []*os.File, env ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "ACTTEST_CHILD=1")
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = files
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return string(out)
}

func tcpFile(t *testing.T) *os.File {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, _ := ln.(*net.TCPListener).File()
	t.Cleanup(func() { f.Close() })
	return f
}

func TestFromEnvReal(t *testing.T) {
	pr, pw, _ := os.Pipe()
	defer pr.Close()
	defer pw.Close()
	udp, _ := net.ListenPacket("udp", "127.0.0.1:0")
	defer udp.Close()
	uf, _ := udp.(*net.UDPConn).File()
	defer uf.Close()
	for _, tc := range []struct {
		name  string
		files []*os.File
		env   []string
		want  string
	}{
		{"two named listeners", []*os.File{tcpFile(t), tcpFile(t)}, []string{"ACTTEST_PID=self", "LISTEN_FDS=2", "LISTEN_FDNAMES=web:admin"},
			"web listening=true inherited=true\nadmin listening=true inherited=true\nenv left: \"\""},
		{"an empty name", []*os.File{tcpFile(t), tcpFile(t)}, []string{"ACTTEST_PID=self", "LISTEN_FDS=2", "LISTEN_FDNAMES=:admin"},
			"unknown listening=true inherited=true\nadmin listening=true inherited=true\n"},
		{"another process's", []*os.File{tcpFile(t)}, []string{"LISTEN_PID=1", "LISTEN_FDS=1"}, "env left: \"\""},
		{"not a socket", []*os.File{pr}, []string{"ACTTEST_PID=self", "LISTEN_FDS=1"}, "error: activation: LISTEN_FDS=\"1\": fd 3 (unknown) is not a socket"},
		{"datagram", []*os.File{uf}, []string{"ACTTEST_PID=self", "LISTEN_FDS=1"}, "is not a stream socket"},
		{"fd not open", nil, []string{"ACTTEST_PID=self", "LISTEN_FDS=2"}, "error: activation: LISTEN_FDS=\"2\": fd 3"},
		{"bad count", []*os.File{tcpFile(t)}, []string{"ACTTEST_PID=self", "LISTEN_FDS=x"}, "error: activation: LISTEN_FDS=\"x\": not a number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if out := child(t, tc.files, tc.env...); !strings.Contains(out, tc.want) {
				t.Fatalf("want %q in:\n%s", tc.want, out)
			}
		})
	}
}

func TestBindInUseAndUnix(t *testing.T) {
	s, err := Bind("127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Bind(s.Addr.String(), 0); !errors.Is(err, ErrAddrInUse) {
		t.Fatalf("want ErrAddrInUse, have %v", err)
	}
	path := t.TempDir() + "/w.sock"
	u, err := Bind(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !u.Listening || u.Addr.String() != path {
		t.Fatalf("unix: %+v", u)
	}
	u.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("the socket file is left behind: %v", err)
	}
	// A stale file from a dead server is replaced.
	os.WriteFile(path, nil, 0o600)
	os.Remove(path)
	l, _ := net.Listen("unix", path)
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	u, err = Bind(path, 0)
	if err != nil {
		t.Fatalf("stale socket file: %v", err)
	}
	u.Close()
}
