package tls

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// StatusFile is the file under Options.Dir where a running Source keeps its
// Status, so that another process (`mailbox status`) can show it.
const StatusFile = "status.json"

// StatusReport is what StatusFile holds.
type StatusReport struct {
	// Updated is when the running Source last wrote the report; it is
	// rewritten whenever a certificate is obtained, renewed, reloaded or
	// fails, and when the Source closes.
	Updated      time.Time    `json:"updated"`
	Mode         string       `json:"mode"`
	Certificates []CertStatus `json:"certificates"`
}

// ReadStatus reads the report a Source using dir (its Options.Dir) wrote.
func ReadStatus(dir string) (StatusReport, error) {
	var rep StatusReport
	data, err := os.ReadFile(filepath.Join(dir, StatusFile))
	if err != nil {
		return rep, fmt.Errorf("tls: %w", err)
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		return rep, fmt.Errorf("tls: %s: %w", StatusFile, err)
	}
	return rep, nil
}

// statusChanged asks the status writer for a new report. It never blocks,
// so it is safe from certmagic's event hook and from under our locks.
func (s *Source) statusChanged() {
	select {
	case s.statusKick <- struct{}{}:
	default:
	}
}

// statusWriter rewrites StatusFile on request until ctx ends.
func (s *Source) statusWriter(ctx context.Context) {
	defer s.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.statusKick:
			s.writeStatus()
		}
	}
}

func (s *Source) writeStatus() {
	s.statusMu.Lock()
	defer s.statusMu.Unlock()
	data, err := json.MarshalIndent(StatusReport{Updated: time.Now().UTC(), Mode: s.mode, Certificates: s.Status()}, "", "  ")
	if err == nil {
		err = writeFileAtomic(filepath.Join(s.opts.Dir, StatusFile), append(data, '\n'), 0o644)
	}
	if err != nil {
		s.log.Warn("write certificate status", "err", err)
	}
}
