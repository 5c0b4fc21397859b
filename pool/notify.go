package pool

import (
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

func notifyReady(log logrus.FieldLogger)    { notify(log, daemon.SdNotifyReady) }
func notifyStopping(log logrus.FieldLogger) { notify(log, daemon.SdNotifyStopping) }
