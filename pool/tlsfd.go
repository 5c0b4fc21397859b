package pool

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/waiter-go/waiter/activation"
)

// tlsMemfd writes what the master read of the TLS files into a sealed memfd
// for one worker: sealed, so that neither the worker nor a program a hook
// starts can change what later workers would read. The spawner closes it
// in the master once the worker has it.
func tlsMemfd(b []byte) (int, error) {
	fd, err := unix.MemfdCreate("waiter-tls", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, fmt.Errorf("pool: TLS memfd: %w", err)
	}
	for off := 0; off < len(b); {
		n, err := unix.Pwrite(fd, b[off:], int64(off))
		if err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("pool: TLS memfd: %w", err)
		}
		off += n
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SEAL|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("pool: TLS memfd seals: %w", err)
	}
	return fd, nil
}

// readTLSFd reads and closes the memfd a worker was given; with ssl on and
// none given the master is of another version, and the worker refuses.
func readTLSFd(fd int, ssl bool) (activation.TLSPEM, error) {
	var p activation.TLSPEM
	if fd < 0 {
		if ssl {
			return p, fmt.Errorf("pool: worker: ssl is on and %s is not set", envTLS)
		}
		return p, nil
	}
	f := os.NewFile(uintptr(fd), "waiter-tls")
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<24))
	if err != nil {
		return p, fmt.Errorf("pool: worker: %s: %w", envTLS, err)
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("pool: worker: %s: %w", envTLS, err)
	}
	return p, nil
}
