package tls

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// certmagic's zap records arrive in slog with level, logger name and fields.
func TestZapBridge(t *testing.T) {
	var buf bytes.Buffer
	zl := newZapLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	zl.Debug("dropped below the slog level")
	zl.Named("obtain").With(zap.String("identifier", "mail.example.com")).
		Error("could not get certificate", zap.Error(errors.New("connection refused")), zap.Duration("retry", time.Minute))
	zl.Warn("warned", zap.Strings("names", []string{"a", "b"}))
	out := buf.String()
	for _, want := range []string{
		`level=ERROR msg="could not get certificate" identifier=mail.example.com logger=obtain error="connection refused" retry=1m0s`,
		`level=WARN msg=warned names="[a b]"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "dropped") {
		t.Errorf("debug record passed an info handler:\n%s", out)
	}
}
