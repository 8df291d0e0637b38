package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"mailbox/store"
)

// eventJSON is one change as the page script sees it.
type eventJSON struct {
	Kind    string   `json:"kind"`
	Mailbox int64    `json:"mailbox"`
	UID     uint32   `json:"uid,omitempty"`
	Flags   []string `json:"flags,omitempty"`
}

var eventKinds = map[store.EventKind]string{
	store.MessageAdded:    "added",
	store.FlagsChanged:    "flags",
	store.MessageExpunged: "expunged",
	store.MailboxCreated:  "mailbox",
	store.MailboxRenamed:  "mailbox",
	store.MailboxDeleted:  "mailbox",
}

// events streams the account's changes as Server-Sent Events, whoever made
// them (SMTP, IMAP, POP3, another tab). The stream ends when the client
// goes, the server shuts down, or the session would have expired; the
// browser then reconnects and signs in again if needed.
func (srv *Server) events(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	rctl := http.NewResponseController(w)
	sub := srv.st.Hub().Subscribe(rc.acct.ID)
	defer sub.Close()
	srv.stats.streams.Add(1)
	defer srv.stats.streams.Add(-1)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// No write deadline for a stream; each write below is small.
	rctl.SetWriteDeadline(time.Time{})
	fmt.Fprint(w, "retry: 3000\n\n")
	if err := rctl.Flush(); err != nil {
		return
	}
	keep := time.NewTicker(srv.opts.EventsKeepAlive)
	defer keep.Stop()
	end := time.NewTimer(srv.opts.SessionIdle)
	defer end.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-srv.closing:
			return
		case <-end.C:
			return
		case <-keep.C:
			// A sign-out (here or in another tab) or an expired session
			// ends the stream; the browser's reconnect then gets 401.
			if ok, err := srv.st.SessionAlive(r.Context(), rc.token, srv.opts.SessionIdle); err == nil && !ok {
				return
			}
			fmt.Fprint(w, ": keep-alive\n\n")
		case <-sub.Ready():
			for _, ev := range sub.Next() {
				kind, ok := eventKinds[ev.Kind]
				if !ok {
					continue
				}
				b, _ := json.Marshal(eventJSON{Kind: kind, Mailbox: ev.MailboxID, UID: ev.UID, Flags: ev.Flags})
				fmt.Fprintf(w, "data: %s\n\n", b)
			}
		}
		if err := rctl.Flush(); err != nil {
			return
		}
	}
}
