package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"golang.org/x/term"

	"mailbox/smtp"
	"mailbox/store"
)

// dbFile is the store's database file under data_dir; admin commands look
// for it to tell "no database here" from "empty database".
const dbFile = "mailbox.db"

// openStore opens the store named by the configuration. Commands that only
// read refuse to create a database (a mistyped --data would otherwise show
// an empty server); commands that write create it and say so.
func (c *cli) openStore(ctx context.Context, create bool) (*store.Store, Config, error) {
	cfg, err := c.config()
	if err != nil {
		return nil, cfg, err
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, dbFile)); errors.Is(err, fs.ErrNotExist) {
		if !create {
			return nil, cfg, fmt.Errorf("no mailbox database in %s: run 'mailbox serve' once, or point --data or --config at the right place", cfg.DataDir)
		}
		fmt.Fprintf(c.stderr, "mailbox: no database in %s yet, creating one\n", cfg.DataDir)
	}
	st, err := store.Open(ctx, store.Options{Dir: cfg.DataDir, Logger: newLogger(c.stderr, cfg.Log, slog.LevelWarn)})
	if err != nil {
		return nil, cfg, fmt.Errorf("open store in %s: %w", cfg.DataDir, err)
	}
	return st, cfg, nil
}

// withStore runs fn with an open store and closes it afterwards.
func (c *cli) withStore(ctx context.Context, create bool, fn func(st *store.Store) error) error {
	st, _, err := c.openStore(ctx, create)
	if err != nil {
		return err
	}
	err = fn(st)
	if cerr := st.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close store: %w", cerr)
	}
	return err
}

func domainOf(addr string) string {
	_, d, _ := strings.Cut(addr, "@")
	return d
}

func domainAddCommand() *command {
	return &command{
		path: "domain add", args: "DOMAIN", minArgs: 1, maxArgs: 1,
		summary: "receive mail for a domain",
		help: `Mail for accounts and aliases in DOMAIN is accepted once the domain is
added. Its DKIM keys (Ed25519 and RSA-2048) are made at the same time;
'mailbox domain dns DOMAIN' prints the records to publish.`,
		run: func(ctx context.Context, c *cli, args []string) error {
			st, cfg, err := c.openStore(ctx, true)
			if err != nil {
				return err
			}
			defer st.Close()
			err = st.AddDomain(ctx, args[0])
			switch {
			case errors.Is(err, store.ErrExists):
				return fmt.Errorf("domain %s already exists", args[0])
			case errors.Is(err, store.ErrInvalid):
				return &usageError{msg: fmt.Sprintf("%q is not a valid domain name", args[0])}
			case err != nil:
				return err
			}
			domain := strings.ToLower(args[0])
			if _, err := smtp.EnsureDKIMKeys(ctx, st, domain, cfg.Outbound.DKIMSelector); err != nil {
				return fmt.Errorf("added domain %s, but making its DKIM keys failed (mailbox domain dns %s retries): %w", domain, domain, err)
			}
			fmt.Fprintf(c.stdout, "added domain %s\n", domain)
			return st.Close()
		},
	}
}

func domainListCommand() *command {
	return &command{
		path: "domain list", maxArgs: 0,
		summary: "list the local domains",
		run: func(ctx context.Context, c *cli, args []string) error {
			return c.withStore(ctx, false, func(st *store.Store) error {
				domains, err := st.Domains(ctx)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "DOMAIN\tACCOUNTS\tALIASES\tCREATED")
				for _, d := range domains {
					fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", d.Name, d.Accounts, d.Aliases, d.Created.Format("2006-01-02"))
				}
				return tw.Flush()
			})
		},
	}
}

func domainDelCommand() *command {
	return &command{
		path: "domain del", args: "DOMAIN", minArgs: 1, maxArgs: 1,
		summary: "stop receiving mail for a domain (it must have no accounts or aliases left)",
		run: func(ctx context.Context, c *cli, args []string) error {
			return c.withStore(ctx, false, func(st *store.Store) error {
				err := st.DeleteDomain(ctx, args[0])
				switch {
				case errors.Is(err, store.ErrNotFound):
					return fmt.Errorf("no domain %s (see 'mailbox domain list')", args[0])
				case errors.Is(err, store.ErrExists):
					return fmt.Errorf("domain %s still has accounts or aliases: delete them first (see 'mailbox user list' and 'mailbox alias list')", args[0])
				case err != nil:
					return err
				}
				fmt.Fprintf(c.stdout, "deleted domain %s\n", strings.ToLower(args[0]))
				return nil
			})
		},
	}
}

func userAddCommand() *command {
	var fromStdin bool
	var quota Size
	return &command{
		path: "user add", args: "ADDRESS", minArgs: 1, maxArgs: 1,
		summary: "create an account (asks for its password)",
		help: `The account's domain must have been added with 'mailbox domain add'.
The password is read from the terminal without echo (twice), or with
--password-stdin from the first line of standard input:
  printf '%s\n' "$PASS" | mailbox user add alice@example.org --password-stdin`,
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of standard input")
			fs.TextVar(&quota, "quota", Size(0), "storage limit with a unit, e.g. 2GiB (default 0: no limit)")
		},
		run: func(ctx context.Context, c *cli, args []string) error {
			addr, err := store.NormalizeAddress(args[0])
			if err != nil {
				return &usageError{msg: fmt.Sprintf("%q is not an address like alice@example.org", args[0])}
			}
			return c.withStore(ctx, true, func(st *store.Store) error {
				if _, err := st.AccountInfo(ctx, addr); err == nil {
					return fmt.Errorf("account %s already exists", addr)
				}
				pass, err := c.readPassword(fromStdin, addr)
				if err != nil {
					return err
				}
				_, err = st.CreateAccount(ctx, addr, pass)
				switch {
				case errors.Is(err, store.ErrNotFound):
					return fmt.Errorf("domain %s is not local: add it first with 'mailbox domain add %s'", domainOf(addr), domainOf(addr))
				case errors.Is(err, store.ErrExists):
					return fmt.Errorf("%s is taken by an account or an alias (see 'mailbox alias list')", addr)
				case err != nil:
					return err
				}
				if quota > 0 {
					if err := st.SetQuota(ctx, addr, int64(quota)); err != nil {
						return fmt.Errorf("account created, but setting its quota failed: %w", err)
					}
				}
				fmt.Fprintf(c.stdout, "created account %s\n", addr)
				return nil
			})
		},
	}
}

func userListCommand() *command {
	return &command{
		path: "user list", maxArgs: 0,
		summary: "list accounts with their mail and quota",
		run: func(ctx context.Context, c *cli, args []string) error {
			return c.withStore(ctx, false, func(st *store.Store) error {
				accts, err := st.Accounts(ctx)
				if err != nil {
					return err
				}
				return writeAccounts(c.stdout, accts)
			})
		},
	}
}

func writeAccounts(w io.Writer, accts []store.AccountInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tMESSAGES\tSIZE\tQUOTA\tPOP3 DELETE\tCREATED")
	var msgs, size int64
	for _, a := range accts {
		quota := "none"
		if a.QuotaBytes > 0 {
			quota = humanBytes(a.QuotaBytes)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", a.Address, a.Messages, humanBytes(a.UsedBytes), quota, a.POP3Delete, a.Created.Format("2006-01-02"))
		msgs += a.Messages
		size += a.UsedBytes
	}
	if len(accts) > 1 {
		fmt.Fprintf(tw, "total: %d accounts\t%d\t%s\t\t\t\n", len(accts), msgs, humanBytes(size))
	}
	return tw.Flush()
}

// humanBytes writes n with a binary unit, one decimal.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

func userPasswdCommand() *command {
	var fromStdin bool
	return &command{
		path: "user passwd", args: "ADDRESS", minArgs: 1, maxArgs: 1,
		summary: "change an account's password",
		help:    "The password is read from the terminal without echo (twice), or with --password-stdin from the first line of standard input.",
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of standard input")
		},
		run: func(ctx context.Context, c *cli, args []string) error {
			return c.withStore(ctx, false, func(st *store.Store) error {
				info, err := st.AccountInfo(ctx, args[0])
				if err != nil {
					return accountError(args[0], err)
				}
				pass, err := c.readPassword(fromStdin, info.Address)
				if err != nil {
					return err
				}
				if err := st.SetPassword(ctx, info.Address, pass); err != nil {
					return accountError(args[0], err)
				}
				fmt.Fprintf(c.stdout, "changed the password of %s\n", info.Address)
				return nil
			})
		},
	}
}

func accountError(addr string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalid):
		return fmt.Errorf("no account %s (see 'mailbox user list')", addr)
	}
	return err
}

func userDelCommand() *command {
	return &command{
		path: "user del", args: "ADDRESS", minArgs: 1, maxArgs: 1,
		summary: "delete an account and all its mail",
		run: func(ctx context.Context, c *cli, args []string) error {
			return c.withStore(ctx, false, func(st *store.Store) error {
				info, err := st.AccountInfo(ctx, args[0])
				if err != nil {
					return accountError(args[0], err)
				}
				if err := st.DeleteAccount(ctx, info.Address); err != nil {
					return accountError(args[0], err)
				}
				fmt.Fprintf(c.stdout, "deleted account %s and its %d messages\n", info.Address, info.Messages)
				return nil
			})
		},
	}
}

func userQuotaCommand() *command {
	return &command{
		path: "user quota", args: "ADDRESS SIZE", minArgs: 2, maxArgs: 2,
		summary: "set an account's storage limit (SIZE like 2GiB; 0 or none: no limit)",
		help:    "Mail that would take the account over its quota is refused at SMTP RCPT (452 4.2.2) or after DATA (552 5.2.2).",
		run: func(ctx context.Context, c *cli, args []string) error {
			var quota int64
			if s := strings.ToLower(args[1]); s != "none" && s != "0" {
				n, err := parseSize(args[1])
				if err != nil {
					return &usageError{msg: fmt.Sprintf("size %q: %v", args[1], err)}
				}
				quota = n
			}
			return c.withStore(ctx, false, func(st *store.Store) error {
				if err := st.SetQuota(ctx, args[0], quota); err != nil {
					return accountError(args[0], err)
				}
				if quota == 0 {
					fmt.Fprintf(c.stdout, "%s has no quota\n", strings.ToLower(args[0]))
				} else {
					fmt.Fprintf(c.stdout, "quota of %s is %s\n", strings.ToLower(args[0]), humanBytes(quota))
				}
				return nil
			})
		},
	}
}

func userPOP3DeleteCommand() *command {
	return &command{
		path: "user pop3-delete", args: "ADDRESS expunge|trash", minArgs: 2, maxArgs: 2,
		summary: "choose what a POP3 deletion does for an account",
		help: `expunge (the default) removes messages a POP3 client deletes, as RFC 1939 says.
trash moves them to the account's Trash mailbox instead, so IMAP or the
webmail can still recover them.`,
		run: func(ctx context.Context, c *cli, args []string) error {
			mode := strings.ToLower(args[1])
			if mode != store.POP3Expunge && mode != store.POP3Trash {
				return &usageError{msg: fmt.Sprintf("mode %q: want expunge or trash", args[1])}
			}
			return c.withStore(ctx, false, func(st *store.Store) error {
				if err := st.SetPOP3Delete(ctx, args[0], mode); err != nil {
					return accountError(args[0], err)
				}
				fmt.Fprintf(c.stdout, "POP3 deletions of %s now %s\n", strings.ToLower(args[0]), map[string]string{
					store.POP3Expunge: "expunge messages",
					store.POP3Trash:   "move messages to Trash",
				}[mode])
				return nil
			})
		},
	}
}

func aliasAddCommand() *command {
	return &command{
		path: "alias add", args: "ADDRESS TARGET", minArgs: 2, maxArgs: 2,
		summary: "deliver mail for ADDRESS (or @domain: catch-all) to account TARGET",
		help: `ADDRESS is local@domain in a local domain, or @domain for a catch-all that
takes mail for every unknown local part of the domain. TARGET must be a local
account. An address may have several targets: add it once per target.`,
		run: func(ctx context.Context, c *cli, args []string) error {
			return c.withStore(ctx, false, func(st *store.Store) error {
				err := st.AddAlias(ctx, args[0], args[1])
				switch {
				case errors.Is(err, store.ErrNotFound):
					return fmt.Errorf("%v (check 'mailbox domain list' and 'mailbox user list')", err)
				case errors.Is(err, store.ErrExists):
					return fmt.Errorf("%v", err)
				case errors.Is(err, store.ErrInvalid):
					return &usageError{msg: err.Error()}
				case err != nil:
					return err
				}
				fmt.Fprintf(c.stdout, "mail for %s now goes to %s\n", strings.ToLower(args[0]), strings.ToLower(args[1]))
				return nil
			})
		},
	}
}

func aliasListCommand() *command {
	return &command{
		path: "alias list", maxArgs: 0,
		summary: "list aliases",
		run: func(ctx context.Context, c *cli, args []string) error {
			return c.withStore(ctx, false, func(st *store.Store) error {
				aliases, err := st.Aliases(ctx)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ALIAS\tTARGET")
				for _, a := range aliases {
					fmt.Fprintf(tw, "%s\t%s\n", a.Address, a.Target)
				}
				return tw.Flush()
			})
		},
	}
}

func aliasDelCommand() *command {
	return &command{
		path: "alias del", args: "ADDRESS [TARGET]", minArgs: 1, maxArgs: 2,
		summary: "delete an alias (all its targets, or just TARGET)",
		run: func(ctx context.Context, c *cli, args []string) error {
			target := ""
			if len(args) == 2 {
				target = args[1]
			}
			return c.withStore(ctx, false, func(st *store.Store) error {
				err := st.DeleteAlias(ctx, args[0], target)
				switch {
				case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalid):
					return fmt.Errorf("no alias %s (see 'mailbox alias list')", strings.TrimSpace(args[0]+" "+target))
				case err != nil:
					return err
				}
				fmt.Fprintf(c.stdout, "deleted alias %s\n", strings.TrimSpace(strings.ToLower(args[0]+" "+target)))
				return nil
			})
		},
	}
}

// readPassword gets a new password: the first line of stdin with
// --password-stdin, else twice from the terminal without echo. It never
// takes one from the command line, where other users could see it.
func (c *cli) readPassword(fromStdin bool, addr string) (string, error) {
	if fromStdin {
		line, err := bufio.NewReader(c.stdin).ReadString('\n')
		if err != nil && !(errors.Is(err, io.EOF) && line != "") {
			return "", errors.New("--password-stdin: no password on standard input")
		}
		pass := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if pass == "" {
			return "", errors.New("--password-stdin: the password is empty")
		}
		return pass, nil
	}
	f, ok := c.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", &usageError{msg: "standard input is not a terminal: pass the password with --password-stdin"}
	}
	fmt.Fprintf(c.stderr, "Password for %s: ", addr)
	p1, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(c.stderr)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	if len(p1) == 0 {
		return "", errors.New("the password is empty")
	}
	fmt.Fprintf(c.stderr, "Again: ")
	p2, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(c.stderr)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	if string(p1) != string(p2) {
		return "", errors.New("the passwords do not match")
	}
	return string(p1), nil
}
