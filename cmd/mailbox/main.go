// Command mailbox is a complete mail server in one binary: `mailbox serve`
// runs SMTP, POP3 (and IMAP and the web, as they land) over one store, and
// the other verbs administer that store, also while the server runs.
//
// This package alone knows every other package: it owns the configuration
// (TOML file, MAILBOX_* environment variables, flags), builds each server
// from an Options value, and handles signals and graceful shutdown.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the command failed; the message says why
	exitUsage = 2 // bad command line or configuration
)

func main() {
	c := &cli{
		stdin:   os.Stdin,
		stdout:  os.Stdout,
		stderr:  os.Stderr,
		getenv:  os.Getenv,
		environ: os.Environ(),
	}
	// serve handles its own signals (graceful shutdown); an admin command
	// interrupted by one just ends: each store change is one transaction.
	os.Exit(c.run(context.Background(), os.Args[1:]))
}

// cli is one invocation: its streams, environment and the flags every verb
// shares.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	environ        []string

	configPath string   // --config
	dataDir    string   // --data
	hostname   string   // --hostname
	sets       []string // --set key=value, in order
}

// command is one verb ("status") or verb and sub-verb ("user add").
type command struct {
	path    string // "user add"
	args    string // "ADDRESS"
	summary string // one line for `mailbox help`
	help    string // more, for `mailbox help user add`
	minArgs int
	maxArgs int // -1: no limit
	flags   func(fs *flag.FlagSet)
	run     func(ctx context.Context, c *cli, args []string) error
}

// usageError is a wrong command line: exit code 2, with a hint to -h.
type usageError struct {
	msg string
}

func (e *usageError) Error() string { return e.msg }

func (c *cli) commands() []*command {
	return []*command{
		serveCommand(),
		statusCommand(),
		domainAddCommand(), domainListCommand(), domainDelCommand(),
		userAddCommand(), userListCommand(), userPasswdCommand(), userDelCommand(),
		userQuotaCommand(), userPOP3DeleteCommand(),
		aliasAddCommand(), aliasListCommand(), aliasDelCommand(),
		domainDNSCommand(), queueListCommand(), queueRetryCommand(), queueDeleteCommand(),
		tlsCACommand(),
		configCommand(),
	}
}

// run executes one command line and returns the exit code.
func (c *cli) run(ctx context.Context, args []string) int {
	// The flag package prints a parse error itself, then calls Usage; the
	// usage text is printed here instead, to stdout when it was asked for.
	global := c.flagSet("mailbox")
	global.Usage = func() {}
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.usage(c.stdout)
			return exitOK
		}
		c.usage(c.stderr)
		return exitUsage
	}
	args = global.Args()
	if len(args) == 0 {
		c.usage(c.stderr)
		return exitUsage
	}
	if args[0] == "help" {
		return c.help(args[1:])
	}
	cmd, rest := c.find(args)
	if cmd == nil {
		if group := c.group(args[0]); len(group) > 0 {
			if len(args) > 1 {
				fmt.Fprintf(c.stderr, "mailbox %s: unknown command %q\n\n", args[0], args[1])
			}
			c.groupUsage(c.stderr, args[0], group)
			return exitUsage
		}
		fmt.Fprintf(c.stderr, "mailbox: unknown command %q\nRun 'mailbox help' for the list of commands.\n", args[0])
		return exitUsage
	}
	fs := c.flagSet("mailbox " + cmd.path)
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	fs.Usage = func() {}
	positional, err := parseInterleaved(fs, rest)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.commandUsage(c.stdout, cmd, fs)
			return exitOK
		}
		c.commandUsage(c.stderr, cmd, fs) // after flag's own message
		return exitUsage
	}
	if len(positional) < cmd.minArgs || (cmd.maxArgs >= 0 && len(positional) > cmd.maxArgs) {
		fmt.Fprintf(c.stderr, "mailbox %s: wrong number of arguments\n", cmd.path)
		c.commandUsage(c.stderr, cmd, fs)
		return exitUsage
	}
	if err := cmd.run(ctx, c, positional); err != nil {
		var ue *usageError
		var ce *configError
		switch {
		case errors.As(err, &ue):
			fmt.Fprintf(c.stderr, "mailbox %s: %s\nRun 'mailbox %s -h' for usage.\n", cmd.path, ue.msg, cmd.path)
			return exitUsage
		case errors.As(err, &ce):
			fmt.Fprintf(c.stderr, "mailbox: %v\n", err)
			return exitUsage
		default:
			fmt.Fprintf(c.stderr, "mailbox %s: %v\n", cmd.path, err)
			return exitError
		}
	}
	return exitOK
}

// flagSet returns a FlagSet with the flags every command shares.
func (c *cli) flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.StringVar(&c.configPath, "config", c.configPath, "read the TOML config `file` (default $"+envConfig+")")
	fs.StringVar(&c.dataDir, "data", c.dataDir, "data `directory` (overrides data_dir and $"+envData+")")
	fs.StringVar(&c.hostname, "hostname", c.hostname, "host `name` (overrides hostname)")
	fs.Func("set", "override one config `key=value`, e.g. --set smtp.max_recipients=50 (repeatable)", func(s string) error {
		c.sets = append(c.sets, s)
		return nil
	})
	return fs
}

// parseInterleaved parses flags that may come before, between or after
// positional arguments ("user add alice@x --password-stdin"); "--" ends them.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		// Parse stops at the first non-flag, or just after a "--" it consumed.
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// config loads the effective configuration for this invocation.
func (c *cli) config() (Config, error) {
	overrides := append([]string(nil), c.sets...)
	if c.dataDir != "" {
		overrides = append(overrides, "data_dir="+c.dataDir)
	}
	if c.hostname != "" {
		overrides = append(overrides, "hostname="+c.hostname)
	}
	cfg, err := loadConfig(c.configPath, c.getenv, c.environ, overrides)
	if err != nil {
		return cfg, err
	}
	// An absolute data directory keeps every later message unambiguous and
	// the store's file: URIs valid whatever the working directory.
	abs, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return cfg, configErrorf("data_dir: %q: %v", cfg.DataDir, err)
	}
	cfg.DataDir = abs
	return cfg, nil
}

func (c *cli) find(args []string) (*command, []string) {
	cmds := c.commands()
	if len(args) >= 2 {
		for _, cmd := range cmds {
			if cmd.path == args[0]+" "+args[1] {
				return cmd, args[2:]
			}
		}
	}
	for _, cmd := range cmds {
		if cmd.path == args[0] {
			return cmd, args[1:]
		}
	}
	return nil, nil
}

// group lists the commands under a verb that has sub-verbs ("user").
func (c *cli) group(verb string) []*command {
	var out []*command
	for _, cmd := range c.commands() {
		if strings.HasPrefix(cmd.path, verb+" ") {
			out = append(out, cmd)
		}
	}
	return out
}

func (c *cli) help(args []string) int {
	if len(args) == 0 {
		c.usage(c.stdout)
		return exitOK
	}
	cmd, rest := c.find(args)
	if cmd == nil || len(rest) > 0 {
		if group := c.group(args[0]); len(group) > 0 && len(args) == 1 {
			c.groupUsage(c.stdout, args[0], group)
			return exitOK
		}
		fmt.Fprintf(c.stderr, "mailbox help: unknown command %q\n", strings.Join(args, " "))
		return exitUsage
	}
	fs := c.flagSet("mailbox " + cmd.path)
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	c.commandUsage(c.stdout, cmd, fs)
	return exitOK
}

func (c *cli) usage(w io.Writer) {
	fmt.Fprint(w, `mailbox is a mail server in one binary: SMTP, POP3, IMAP and webmail over one store.

Usage:
  mailbox COMMAND [flags] [arguments]

Commands:
`)
	for _, cmd := range c.commands() {
		fmt.Fprintf(w, "  %-40s %s\n", cmd.path+" "+cmd.args, cmd.summary)
	}
	fmt.Fprint(w, `
Flags every command takes:
  --config FILE     TOML configuration (default $MAILBOX_CONFIG; none: local defaults)
  --data DIR        data directory (default data_dir, $MAILBOX_DATA, ./data)
  --hostname NAME   host name (default hostname, localhost)
  --set KEY=VALUE   override any config key, e.g. --set listen.imap=""

Run 'mailbox help COMMAND' or 'mailbox COMMAND -h' for more.
Exit codes: 0 success, 1 failure, 2 bad command line or configuration.
`)
}

func (c *cli) groupUsage(w io.Writer, verb string, cmds []*command) {
	fmt.Fprintf(w, "Usage:\n")
	for _, cmd := range cmds {
		fmt.Fprintf(w, "  mailbox %-36s %s\n", cmd.path+" "+cmd.args, cmd.summary)
	}
	fmt.Fprintf(w, "\nRun 'mailbox %s SUBCOMMAND -h' for more.\n", verb)
}

func (c *cli) commandUsage(w io.Writer, cmd *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: mailbox %s [flags] %s\n\n%s\n", cmd.path, cmd.args, cmd.summary)
	if cmd.help != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(cmd.help))
	}
	fmt.Fprintf(w, "\nFlags:\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(c.stderr)
}
