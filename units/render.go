package units

import (
	"bytes"
	"fmt"
	"strings"
)

// The unit templates are rendered here rather than with text/template: this
// package is linked into waiterd (its units subcommand), every worker is
// waiterd re-executed, and text/template's reflective method calls keep the
// linker from dropping unused methods, which grew the binary by 1.5 MB and
// each worker's memory with it. The templates use only three actions, in
// text/template's syntax: {{.Field}}, {{template "file" .}}, and a
// non-nested {{if .Field}} ... {{end}}; "{{-" and "-}}" trim white space as
// in text/template.

// render writes template file name, expanded with vars, to b.
func render(b *bytes.Buffer, name string, vars map[string]string) error {
	src, err := templateFS.ReadFile("templates/" + name)
	if err != nil {
		return err
	}
	text := string(src)
	skipping, inIf := false, false
	for {
		open := strings.Index(text, "{{")
		if open < 0 {
			if inIf {
				return fmt.Errorf("%s: {{if}} without {{end}}", name)
			}
			if !skipping {
				b.WriteString(text)
			}
			return nil
		}
		if !skipping {
			b.WriteString(text[:open])
		}
		end := strings.Index(text[open:], "}}")
		if end < 0 {
			return fmt.Errorf("%s: unclosed action", name)
		}
		action := text[open+2 : open+end]
		text = text[open+end+2:]
		if strings.HasPrefix(action, "-") {
			action = action[1:]
			trimRight(b)
		}
		if strings.HasSuffix(action, "-") {
			action = action[:len(action)-1]
			text = strings.TrimLeft(text, " \t\r\n")
		}
		action = strings.TrimSpace(action)
		switch f := strings.Fields(action); {
		case len(f) == 2 && f[0] == "if" && strings.HasPrefix(f[1], "."):
			if inIf {
				return fmt.Errorf("%s: nested {{if}}", name)
			}
			v, ok := vars[f[1][1:]]
			if !ok {
				return fmt.Errorf("%s: no field %s", name, f[1])
			}
			inIf, skipping = true, v == ""
		case action == "end":
			if !inIf {
				return fmt.Errorf("%s: {{end}} without {{if}}", name)
			}
			inIf, skipping = false, false
		case len(f) == 3 && f[0] == "template" && f[2] == ".":
			if !skipping {
				if err := render(b, strings.Trim(f[1], `"`), vars); err != nil {
					return err
				}
			}
		case strings.HasPrefix(action, ".") && len(f) == 1:
			v, ok := vars[action[1:]]
			if !ok {
				return fmt.Errorf("%s: no field %s", name, action)
			}
			if !skipping {
				b.WriteString(v)
			}
		default:
			return fmt.Errorf("%s: unsupported action {{%s}}", name, action)
		}
	}
}

// trimRight removes trailing white space from b, as "{{-" does.
func trimRight(b *bytes.Buffer) {
	s := b.Bytes()
	n := len(s)
	for n > 0 && strings.ContainsRune(" \t\r\n", rune(s[n-1])) {
		n--
	}
	b.Truncate(n)
}

// vars are the template fields.
func (d data) vars() map[string]string {
	return map[string]string{
		"Name": d.Name, "Port": fmt.Sprint(d.Port), "AcceptPort": fmt.Sprint(d.AcceptPort),
		"Exec": d.Exec, "Config": d.Config, "Desc": d.Desc, "Graceful": d.Graceful,
		"Margin": d.Margin, "Stop": d.Stop, "Watchdog": d.Watchdog,
		"Start": d.Start, "ReloadTimeout": d.ReloadTimeout, "Control": d.Control,
		"Waiterctl": d.Waiterctl, "NoWaiterctl": d.NoWaiterctl,
		"Socket": d.Socket, "NoSocket": yes(d.NoSocket), "Listen": d.Listen, "FDStoreMax": fmt.Sprint(FDStoreMax),
		"UnitExtra": d.UnitExtra, "ServiceExtra": d.ServiceExtra, "SocketExtra": d.SocketExtra,
	}
}

// yes is a bool for {{if}}: "yes" or "".
func yes(b bool) string {
	if b {
		return "yes"
	}
	return ""
}

// charset matches a string whose first byte is in first and the rest in
// rest, each given as a regexp-like class ("A-Za-z0-9_"): a regexp would be
// compiled at init in every worker for two checks.
type charset struct{ first, rest string }

func (c charset) MatchString(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		class := c.rest
		if i == 0 {
			class = c.first
		}
		if !inClass(s[i], class) {
			return false
		}
	}
	return true
}

func inClass(ch byte, class string) bool {
	for i := 0; i < len(class); i++ {
		if i+2 < len(class) && class[i+1] == '-' {
			if class[i] <= ch && ch <= class[i+2] {
				return true
			}
			i += 2
			continue
		}
		if class[i] == ch {
			return true
		}
	}
	return false
}
