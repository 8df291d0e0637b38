// Command mailbench is a load tool for any SMTP, POP3 and IMAP server, reached by
// host and port. It measures SMTP ingest (accepted messages per second and,
// with -verify-pop3, the end-to-end rate at which they become visible over
// POP3), POP3 download speed, and the memory cost of idle POP3 sessions.
//
// It is a pure client: it knows nothing of mailbox's packages, so the same
// run can be pointed at mailbox and at a reference server (Postfix delivering
// to Dovecot, see peers/). Every run prints one summary line of key=value
// fields that starts with the subcommand name, and exits non-zero when the
// run had more errors than -max-errors allows or did not finish in -timeout.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: mailbench <command> [flags]

commands:
  smtp          send messages over persistent SMTP connections (-verify-pop3 for end to end)
  pop3          download a mailbox over POP3, RETR one message at a time
  pop3-idle     hold many logged-in, idle POP3 sessions and watch the server's memory
  rss           print the resident memory of a process (and its children)
  fsync         measure small write+fsync operations per second in a directory
  maildir-fill  write messages straight into a Maildir (fast pre-fill for Dovecot)
  imap          time IMAP workloads (SELECT, FETCH, SEARCH, STORE) on a filled INBOX
  imap-idle     hold many IDLE sessions; memory, and the delay of a new message's EXISTS

Run "mailbench <command> -h" for the flags of a command.
`

// errUsage marks a bad command line; main exits with status 2 for it.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, errUsage), errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "mailbench: %v\n", err)
		os.Exit(1)
	}
}

// run dispatches one subcommand. The summary line goes to stdout, details
// and error samples to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"smtp":         runSMTP,
		"pop3":         runPOP3,
		"pop3-idle":    runPOP3Idle,
		"rss":          runRSS,
		"fsync":        runFsync,
		"maildir-fill": runMaildirFill,
		"imap":         runIMAP,
		"imap-idle":    runIMAPIdle,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			fmt.Fprint(stdout, usage)
			return nil
		}
		fmt.Fprintf(stderr, "mailbench: unknown command %q\n\n%s", args[0], usage)
		return errUsage
	}
	return cmd(ctx, args[1:], stdout, stderr)
}

// newFlagSet returns a flag set that reports errors to stderr and lets run
// decide the exit status.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args and refuses stray positional arguments, which are
// almost always a mistyped flag.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return errUsage
	}
	return nil
}
