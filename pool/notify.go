package pool

import (
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/sirupsen/logrus"
)

// notify sends one sd_notify(3) message when NOTIFY_SOCKET is set. Only the
// master calls it: workers never have NOTIFY_SOCKET (workerEnv strips it).
func notify(log logrus.FieldLogger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warnf("waiter: sd_notify %q: %v", state, err)
	}
}

// watchdogInterval returns how often to ping systemd's watchdog (half of
// WATCHDOG_USEC, honouring WATCHDOG_PID), or 0 when it is off.
func watchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return 0
	}
	return d / 2
}

func notifyReady(log logrus.FieldLogger)    { notify(log, daemon.SdNotifyReady) }
func notifyStopping(log logrus.FieldLogger) { notify(log, daemon.SdNotifyStopping) }
