package main

import (
	"fmt"
	"time"
)

// size is a byte count as ps and top print it: 512B, 1.5K, 12.3M, 123M,
// 2.0G (binary units); 0, a size not sampled yet, is "-".
func size(b uint64) string {
	if b == 0 {
		return "-"
	}
	if b < 1024 {
		return fmt.Sprintf("%dB", b)
	}
	v := float64(b)
	for _, unit := range []string{"K", "M", "G", "T"} {
		v /= 1024
		// Past 1023.95 one decimal rounds up to the next unit's 1024.0:
		// move on then, so that no size prints as "1024.0K".
		if v < 1023.95 || unit == "T" {
			if v < 99.95 {
				return fmt.Sprintf("%.1f%s", v, unit)
			}
			return fmt.Sprintf("%.0f%s", v, unit)
		}
	}
	panic("unreachable")
}

// duration is short and to the precision an operator reads: 350ms, 2.5s,
// 45s, 3m05s, 2h03m, 3d04h.
func duration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < 9950*time.Millisecond: // not "10.0s"
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second).Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
	}
}

// cpu is CPU seconds: 0.42s, 9.87s, then as a duration (2m05s).
func cpu(s float64) string {
	if s < 9.995 { // not "10.00s"
		return fmt.Sprintf("%.2fs", s)
	}
	return duration(time.Duration(s * float64(time.Second)))
}
