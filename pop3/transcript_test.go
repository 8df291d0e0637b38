package pop3

import (
	"path/filepath"
	"strings"
	"testing"

	"mailbox/internal/transcript"
)

// TestTranscripts replays every testdata/*.txt against a fresh store and
// server; see harness.setup for the @ lines.
func TestTranscripts(t *testing.T) {
	scripts, err := transcript.Glob("testdata/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range scripts {
		t.Run(strings.TrimSuffix(filepath.Base(s.Name), ".txt"), func(t *testing.T) {
			t.Parallel()
			newHarness(t).runner().Test(t, s)
		})
	}
}
