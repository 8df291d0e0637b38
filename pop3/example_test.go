package pop3_test

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"time"

	"mailbox/internal/throttle"
	"mailbox/pop3"
	"mailbox/store"
)

// One Server serves POP3 with STLS on one listener and POP3S on another;
// a signal handler would call Shutdown.
func Example() {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	st, err := store.Open(ctx, store.Options{Dir: "data", Logger: log})
	if err != nil {
		log.Error("open store", "err", err)
		return
	}
	defer st.Close()
	var tlsConfig *tls.Config // from the tls package

	srv := pop3.New(pop3.Options{
		Store:    st,
		TLS:      tlsConfig,
		Logger:   log,
		Limiter:  throttle.New(throttle.Options{}), // shared with SMTP and IMAP
		Hostname: "mail.example.org",
	})
	plain, err := net.Listen("tcp", ":1100")
	if err != nil {
		log.Error("listen", "err", err)
		return
	}
	secure, err := net.Listen("tcp", ":9950")
	if err != nil {
		log.Error("listen", "err", err)
		return
	}
	go srv.Serve(plain)
	go srv.Serve(tls.NewListener(secure, tlsConfig))

	// On SIGTERM: sessions finish their command; none that did not QUIT
	// deletes anything.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
}
