package smtp

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"mailbox/internal/transcript"
)

// TestTranscripts replays testdata/*.txt, each against a fresh server and
// store (alice and bob in example.test, see newStore). Setup lines:
//
//	@server mode=mx|submission|submissions [max_recipients=N] [allow_plaintext=true]
//	@quota ADDR BYTES
//	@messages ADDR N            ADDR's INBOX holds N messages now
//	@contains ADDR I "TEXT"     its I-th message (from 1) contains TEXT (Go escapes)
func TestTranscripts(t *testing.T) {
	scripts, err := transcript.Glob(filepath.Join("testdata", "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(scripts) == 0 {
		t.Fatal("no transcripts")
	}
	for _, s := range scripts {
		t.Run(filepath.Base(s.Name), func(t *testing.T) {
			st := newStore(t)
			serverTLS, clientTLS := tlsPair(t)
			var h *harness
			run := &transcript.Runner{TLS: clientTLS}
			run.Dial = func() (net.Conn, error) {
				if h == nil {
					h = start(t, Options{Store: st, TLS: serverTLS, Hostname: "mx.example.test"})
				}
				return net.Dial("tcp", h.addr)
			}
			run.Setup = func(name string, args []string) error {
				switch name {
				case "server":
					if h != nil {
						return fmt.Errorf("@server after the first connection")
					}
					opts := Options{Store: st, TLS: serverTLS, Hostname: "mx.example.test"}
					for _, a := range args {
						k, v, _ := strings.Cut(a, "=")
						switch k {
						case "mode":
							opts.Mode = map[string]Mode{"mx": ModeMX, "submission": ModeSubmission, "submissions": ModeSubmissions}[v]
						case "max_recipients":
							opts.MaxRecipients, _ = strconv.Atoi(v)
						case "allow_plaintext":
							opts.AllowPlaintext = v == "true"
						default:
							return fmt.Errorf("unknown @server option %q", k)
						}
					}
					h = start(t, opts)
				case "quota":
					n, _ := strconv.ParseInt(args[1], 10, 64)
					return st.SetQuota(context.Background(), args[0], n)
				case "messages":
					want, _ := strconv.Atoi(args[1])
					if got := len(inboxOf(t, st, args[0])); got != want {
						return fmt.Errorf("%s has %d messages, want %d", args[0], got, want)
					}
				case "contains":
					i, _ := strconv.Atoi(args[1])
					text := args[2] // the parser has undone the quoting
					msgs := inboxOf(t, st, args[0])
					if i < 1 || i > len(msgs) {
						return fmt.Errorf("%s has %d messages, no #%d", args[0], len(msgs), i)
					}
					if !bytes.Contains(msgs[i-1], []byte(text)) {
						return fmt.Errorf("message %d of %s lacks %q:\n%s", i, args[0], text, msgs[i-1])
					}
				default:
					return fmt.Errorf("unknown setup @%s", name)
				}
				return nil
			}
			run.Test(t, s)
		})
	}
}
