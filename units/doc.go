// Package units writes the systemd units that run a daemon built on waiter,
// for systemd 252 (Debian 12) and later:
//
//   - NAME.socket and NAME.service: systemd holds the listening socket and
//     starts the daemon's master (Type=notify), which runs its pool of
//     workers on it, with its control socket in RuntimeDirectory=NAME;
//     reload is `waiterctl reload` on that socket when Params.Waiterctl is
//     set (so that a refused reload fails `systemctl reload`), else -check
//     then SIGHUP; stop is a graceful SIGTERM to the master alone
//     (KillMode=mixed).
//   - NAME-accept.socket and NAME-accept@.service: inetd style
//     (Accept=yes), one process per connection; Params.NoAccept leaves
//     them out.
//
// A daemon's own settings go into the same files (Params.Directives:
// StateDirectory=, Environment=, ...) or beside them as drop-ins
// (Params.DropIns, written as NAME.service.d/FILE.conf), so that nobody has
// to edit a generated unit.
//
// Both services run in the same tight sandbox (DynamicUser=, no
// capabilities, a read-only file system, @system-service system calls ...):
// systemd-analyze security rates them 1.1 on its scale of 0 to 10.
//
// The units in this directory are waiterd's, exactly as
// Generate(Waiterd()) writes them; a test keeps them so. For your own
// daemon:
//
//	p := units.Params{
//		Name:            "myd",
//		Port:            7000,
//		GracefulTimeout: 20 * time.Second, // the daemon's graceful_timeout
//		Directives:      []units.Directive{{"Service", "StateDirectory", "myd"}},
//	}
//	files, err := units.Generate(p)
//	if err != nil {
//		return err // a *units.ParamError naming the bad field
//	}
//	for _, name := range p.Files() {
//		path := filepath.Join(dir, name) // a drop-in goes into NAME.service.d/
//		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
//			return err
//		}
//		if err := os.WriteFile(path, files[name], 0o644); err != nil {
//			return err
//		}
//	}
//
// or, from a shell, `waiterd units -name myd -port 7000 -out DIR`.
// Analyze runs systemd-analyze verify and security on a set of units.
package units
