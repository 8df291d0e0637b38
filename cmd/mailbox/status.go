package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	mtls "mailbox/tls"
)

// probeTimeout bounds each connection attempt of `mailbox status`.
const probeTimeout = 500 * time.Millisecond

func statusCommand() *command {
	return &command{
		path: "status", maxArgs: 0,
		summary: "show accounts, message counts, sizes, listeners and certificates",
		help: `status reads the database and the certificate report directly, so it works
whether or not the server runs; it tries to connect to each configured
listener to show whether something answers there.`,
		run: runStatus,
	}
}

func runStatus(ctx context.Context, c *cli, args []string) error {
	cfg, err := c.config()
	if err != nil {
		return err
	}
	out := c.stdout
	fmt.Fprintf(out, "hostname  %s\ndata_dir  %s\n", cfg.Hostname, cfg.DataDir)

	fmt.Fprintf(out, "\nListeners (configured):\n")
	addrs := map[string]string{}
	for _, l := range cfg.listeners() {
		addrs[l.key] = l.addr
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, svc := range services() {
		addr := addrs[svc.key]
		state := svc.state(addr)
		switch {
		case state != "":
			if addr == "" {
				addr = "-"
			}
		case probe(ctx, addr):
			state = "answering"
		default:
			state = "not answering"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", svc.key, addr, state, svc.what)
	}
	tw.Flush()

	if _, err := os.Stat(filepath.Join(cfg.DataDir, dbFile)); errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(out, "\nNo database in %s yet: 'mailbox serve' creates it.\n", cfg.DataDir)
	} else {
		st, _, err := c.openStore(ctx, false)
		if err != nil {
			return err
		}
		defer st.Close()
		domains, err := st.Domains(ctx)
		if err != nil {
			return err
		}
		aliases, err := st.Aliases(ctx)
		if err != nil {
			return err
		}
		accts, err := st.Accounts(ctx)
		if err != nil {
			return err
		}
		names := make([]string, len(domains))
		for i, d := range domains {
			names[i] = d.Name
		}
		fmt.Fprintf(out, "\nDomains (%d): %s\nAliases: %d\n\nAccounts (%d):\n", len(domains), strings.Join(names, ", "), len(aliases), len(accts))
		if err := writeAccounts(out, accts); err != nil {
			return err
		}
	}

	fmt.Fprintf(out, "\nCertificates:\n")
	rep, err := mtls.ReadStatus(filepath.Join(cfg.DataDir, "tls"))
	if err != nil {
		fmt.Fprintf(out, "  none reported yet (the server writes its certificate report when it starts)\n")
		return nil
	}
	fmt.Fprintf(out, "  mode %s, report updated %s\n", rep.Mode, rep.Updated.Local().Format(time.DateTime))
	for _, cs := range rep.Certificates {
		serving := ""
		if cs.Serving {
			serving = ", serving"
		}
		fmt.Fprintf(out, "  %s: %s%s\n", cs.Source, strings.Join(cs.Names, ", "), serving)
		if cs.Issuer != "" {
			fmt.Fprintf(out, "    issuer %q, valid %s to %s\n", cs.Issuer, cs.NotBefore.Local().Format(time.DateOnly), cs.NotAfter.Local().Format(time.DateOnly))
		} else {
			fmt.Fprintf(out, "    not obtained yet\n")
		}
		if !cs.NextRenewal.IsZero() {
			fmt.Fprintf(out, "    next renewal %s\n", cs.NextRenewal.Local().Format(time.DateTime))
		}
		if cs.LastError != "" {
			fmt.Fprintf(out, "    last error (%s): %s\n", cs.LastErrorAt.Local().Format(time.DateTime), cs.LastError)
		}
	}
	return nil
}

// probe reports whether something accepts TCP connections at a listen
// address; ":2525" and "0.0.0.0:2525" are tried on the loopback address.
func probe(ctx context.Context, addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "0" {
		return false
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	d := net.Dialer{Timeout: probeTimeout}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, port))
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

func tlsCACommand() *command {
	return &command{
		path: "tls ca", maxArgs: 0,
		summary: "print the local CA certificate (PEM) to install on devices",
		help: `In tls.mode "local" (the default for localhost, IP addresses and .lan,
.home.arpa, .local names) mailbox issues its certificates from a CA of its own,
kept under data_dir/tls. Install this CA certificate on your devices and mail
clients trust the server:
  mailbox tls ca > mailbox-ca.crt`,
		run: func(ctx context.Context, c *cli, args []string) error {
			cfg, err := c.config()
			if err != nil {
				return err
			}
			pem, err := mtls.ExportCA(filepath.Join(cfg.DataDir, "tls"))
			if err != nil {
				return fmt.Errorf("local CA: %w", err)
			}
			_, err = c.stdout.Write(pem)
			return err
		},
	}
}

func configCommand() *command {
	return &command{
		path: "config", maxArgs: 0,
		summary: "check the configuration and print the effective settings",
		help: `config loads the file, MAILBOX_* variables and flags exactly as serve does,
and prints the result as TOML, or the first error (exit code 2).`,
		run: func(ctx context.Context, c *cli, args []string) error {
			cfg, err := c.config()
			if err != nil {
				return err
			}
			doc, err := cfg.encodeTOML()
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(c.stdout, doc)
			return err
		},
	}
}
