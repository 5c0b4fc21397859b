package activation

import (
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCheckNames(t *testing.T) {
	sk := func(fd int, name string) *Socket { return &Socket{Fd: fd, Name: name, Listening: true} }
	for _, tc := range []struct {
		name  string
		socks []*Socket
		want  string // "" for no error
		index int
	}{
		{"none", nil, "", 0},
		{"named", []*Socket{sk(3, "web"), sk(4, "admin")}, "", 0},
		// Several ListenStream= in one unit share its FileDescriptorName=.
		{"shared name", []*Socket{sk(3, "waiterd.socket"), sk(4, "waiterd.socket")}, "", 0},
		{"unknown", []*Socket{sk(3, DefaultName)}, "", 0},
		{"non-ASCII", []*Socket{sk(3, "café")}, "", 0},
		// The case that served nothing: one socket, no name, so the names
		// passed to workers are "" and split into no listener at all.
		{"empty alone", []*Socket{sk(7, "")}, `activation: socket 0 (fd 7, name ""): empty name`, 0},
		{"empty second", []*Socket{sk(3, "web"), sk(9, "")}, `activation: socket 1 (fd 9, name ""): empty name`, 1},
		{"colon", []*Socket{sk(3, "web"), sk(4, "a:b")}, `activation: socket 1 (fd 4, name "a:b"): a name must not contain ':'`, 1},
		{"newline", []*Socket{sk(3, "a\nb")}, `activation: socket 0 (fd 3, name "a\nb"): a name must not contain control characters ('\n')`, 0},
		{"NUL", []*Socket{sk(3, "a\x00")}, `control characters ('\x00')`, 0},
		{"DEL", []*Socket{sk(3, "a\x7f")}, `control characters`, 0},
		{"same fd twice", []*Socket{sk(3, "web"), sk(4, "admin"), sk(3, "web2")}, `activation: socket 2 (fd 3, name "web2"): the same fd as socket 0 (web)`, 2},
		{"nil", []*Socket{sk(3, "web"), nil}, `activation: socket 1 (fd -1, name ""): nil socket`, 1},
		{"closed", []*Socket{{Fd: -1, Name: "web"}}, `activation: socket 0 (fd -1, name "web"): closed socket`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckNames(tc.socks)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("want no error, have %v", err)
				}
				return
			}
			var ne *NameError
			if !errors.As(err, &ne) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want a *NameError with %q, have %v", tc.want, err)
			}
			if ne.Index != tc.index {
				t.Fatalf("want index %d, have %d", tc.index, ne.Index)
			}
		})
	}
}

// Whatever CheckNames accepts survives being ':'-joined and split, which is
// how a pool passes the names to its workers (WAITER_NAMES) and how
// LISTEN_FDNAMES carries them: one name per socket, in order.
func FuzzCheckNamesRoundTrip(f *testing.F) {
	f.Add("web", "admin", "")
	f.Add("", "", "")
	f.Add("a:b", "c", "d")
	f.Add("unknown", "unknown", "x")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		for n := 1; n <= 3; n++ {
			names := []string{a, b, c}[:n]
			var socks []*Socket
			for i, nm := range names {
				socks = append(socks, &Socket{Fd: 3 + i, Name: nm})
			}
			if CheckNames(socks) != nil {
				continue
			}
			joined := strings.Join(names, ":")
			var back []string
			if joined != "" { // as the pool's worker reads it
				back = strings.Split(joined, ":")
			}
			if !slices.Equal(back, names) {
				t.Fatalf("%q accepted, but %q splits into %q", names, joined, back)
			}
			n2, env, err := (Env{PID: "1", PIDSet: true, FDs: strconv.Itoa(n), FDsSet: true, FDNames: joined}).Count(1)
			if err != nil || n2 != n || !slices.Equal(env, names) {
				t.Fatalf("%q accepted, but LISTEN_FDNAMES=%q gives %d %q %v", names, joined, n2, env, err)
			}
		}
	})
}

// listenerFd returns a fresh listening TCP socket's fd, which the test owns.
func listenerFd(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fd, err := dupRaw(ln.(syscall.Conn))
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestFromFdNames(t *testing.T) {
	fd := listenerFd(t)
	s, err := FromFd(fd, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Name != "unknown" {
		t.Fatalf("an unnamed fd: want the name %q, have %q", DefaultName, s.Name)
	}
	if err := CheckNames([]*Socket{s}); err != nil {
		t.Fatalf("FromFd's own socket refused: %v", err)
	}

	fd2 := listenerFd(t)
	defer unix.Close(fd2)
	for _, bad := range []string{"a:b", ":", "x\n"} {
		_, err := FromFd(fd2, bad)
		var ne *NameError
		if !errors.As(err, &ne) || ne.Fd != fd2 || ne.Name != bad || !strings.Contains(err.Error(), "activation: fd ") {
			t.Fatalf("name %q: want a *NameError naming fd %d, have %v", bad, fd2, err)
		}
	}
	// Refused before it was touched: still the caller's, still open.
	if _, err := unix.GetsockoptInt(fd2, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil {
		t.Fatalf("a refused fd was closed: %v", err)
	}
}

func TestPickNames(t *testing.T) {
	web := &Socket{Fd: 3, Name: "web"}
	web6 := &Socket{Fd: 4, Name: "web"}
	admin := &Socket{Fd: 5, Name: "admin"}
	all := []*Socket{web, web6, admin}
	for _, names := range [][]string{{""}, {"web", ""}, {"", "admin"}} {
		_, err := Pick(all, names...)
		if err == nil || !strings.Contains(err.Error(), "is empty") {
			t.Fatalf("Pick(%q): want an empty name refused, have %v", names, err)
		}
	}
	// An unnamed socket is found under its default name, never under "".
	un := &Socket{Fd: 6, Name: DefaultName}
	if got, err := Pick(append(all, un), DefaultName); err != nil || len(got) != 1 || got[0] != un {
		t.Fatalf("Pick(unknown): have %v %v", got, err)
	}
	// A shared name gives every socket that has it; a name given twice
	// does not give its sockets twice (a worker would get the fd twice).
	got, err := Pick(all, "web", "admin", "web")
	if err != nil || !slices.Equal(got, []*Socket{web, web6, admin}) {
		t.Fatalf("Pick(web, admin, web): have %v %v", got, err)
	}
	if _, err := Pick(all, "nope"); err == nil || !strings.Contains(err.Error(), `no socket named "nope" (have web, web, admin)`) {
		t.Fatalf("unknown name: %v", err)
	}
}
