package web

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"
)

// metrics are the web server's own counters; store figures are read when
// /metrics is scraped.
type metrics struct {
	requests2xx, requests3xx, requests4xx, requests5xx atomic.Int64
	loginOK, loginFailed                               atomic.Int64
	sent                                               atomic.Int64
	streams                                            atomic.Int64
}

func (m *metrics) request(code int) {
	switch {
	case code >= 500:
		m.requests5xx.Add(1)
	case code >= 400:
		m.requests4xx.Add(1)
	case code >= 300:
		m.requests3xx.Add(1)
	default:
		m.requests2xx.Add(1)
	}
}

// healthzTimeout bounds the store check of /healthz.
const healthzTimeout = 2 * time.Second

// healthz reports whether the store answers.
func (srv *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), healthzTimeout)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if _, err := srv.st.Domains(ctx); err != nil {
		srv.log.Error("health check", "err", err)
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "store unavailable")
		return
	}
	fmt.Fprintln(w, "ok")
}

// metrics writes the Prometheus text exposition format (version 0.0.4).
func (srv *Server) metrics(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	accts, err := srv.st.Accounts(ctx)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	domains, err := srv.st.Domains(ctx)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	var msgs, bytes int64
	for _, a := range accts {
		msgs += a.Messages
		bytes += a.UsedBytes
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	gauge := func(name, help string, v int64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %d\n", name, help, name, name, v)
	}
	gauge("mailbox_accounts", "Accounts in the store.", int64(len(accts)))
	gauge("mailbox_domains", "Local mail domains.", int64(len(domains)))
	gauge("mailbox_messages", "Messages in all mailboxes of all accounts.", msgs)
	gauge("mailbox_stored_bytes", "Bytes of messages counted against account quotas.", bytes)
	gauge("mailbox_web_event_streams", "Open webmail live-update streams.", srv.stats.streams.Load())
	st := &srv.stats
	fmt.Fprint(w, "# HELP mailbox_web_requests_total HTTP requests answered, by status class.\n# TYPE mailbox_web_requests_total counter\n")
	for _, c := range []struct {
		class string
		v     *atomic.Int64
	}{{"2xx", &st.requests2xx}, {"3xx", &st.requests3xx}, {"4xx", &st.requests4xx}, {"5xx", &st.requests5xx}} {
		fmt.Fprintf(w, "mailbox_web_requests_total{code=%q} %d\n", c.class, c.v.Load())
	}
	fmt.Fprint(w, "# HELP mailbox_web_logins_total Webmail sign-in attempts, by result.\n# TYPE mailbox_web_logins_total counter\n")
	fmt.Fprintf(w, "mailbox_web_logins_total{result=\"ok\"} %d\nmailbox_web_logins_total{result=\"failed\"} %d\n", st.loginOK.Load(), st.loginFailed.Load())
	fmt.Fprintf(w, "# HELP mailbox_web_messages_sent_total Messages sent from the webmail.\n# TYPE mailbox_web_messages_sent_total counter\nmailbox_web_messages_sent_total %d\n", st.sent.Load())
}
