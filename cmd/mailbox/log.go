package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// newLogger builds the one logger of a mailbox process from [log]. floor
// raises the level for commands that only want to hear of problems (admin
// commands log warnings and errors, whatever log.level says).
func newLogger(w io.Writer, cfg LogConfig, floor slog.Level) *slog.Logger {
	level, err := parseLevel(cfg.Level)
	if err != nil {
		level = slog.LevelInfo // validate has already refused a bad level
	}
	opts := &slog.HandlerOptions{Level: max(level, floor)}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf(`want "debug", "info", "warn" or "error"`)
}
