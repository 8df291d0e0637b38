package main

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

func noEnv(string) string { return "" }

func writeConfig(t *testing.T, doc string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "mailbox.toml")
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultConfigIsValid(t *testing.T) {
	cfg, err := loadConfig("", noEnv, nil, nil)
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if cfg.Hostname != "localhost" || cfg.Listen.SMTP != ":2525" || cfg.Listen.POP3 != ":1100" || cfg.Listen.HTTPS != ":8443" {
		t.Errorf("defaults are not the local instance: %+v", cfg)
	}
}

func TestConfigFile(t *testing.T) {
	p := writeConfig(t, `
hostname = "mail.example.org"
data_dir = "/var/lib/mailbox"

[listen]
smtp = ":25"
imap = ""

[tls]
mode = "files"
cert_file = "/etc/ssl/mail.pem"
key_file = "/etc/ssl/mail.key"
extra_names = ["example.org"]

[smtp]
max_message_size = "50MiB"
max_recipients = 50
read_timeout = "5m"

[auth]
allow_plaintext = true

[log]
format = "json"
`)
	cfg, err := loadConfig(p, noEnv, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Hostname != "mail.example.org" || cfg.DataDir != "/var/lib/mailbox" {
		t.Errorf("top level: %q %q", cfg.Hostname, cfg.DataDir)
	}
	if cfg.Listen.SMTP != ":25" || cfg.Listen.IMAP != "" || cfg.Listen.POP3 != ":1100" {
		t.Errorf("listen: %+v", cfg.Listen)
	}
	if cfg.SMTP.MaxMessageSize != 50<<20 || cfg.SMTP.MaxRecipients != 50 || time.Duration(cfg.SMTP.ReadTimeout) != 5*time.Minute {
		t.Errorf("smtp: %+v", cfg.SMTP)
	}
	if !cfg.Auth.AllowPlaintext || cfg.Log.Format != "json" || cfg.TLS.Mode != "files" {
		t.Errorf("auth/log/tls: %+v %+v %+v", cfg.Auth, cfg.Log, cfg.TLS)
	}
	if !reflect.DeepEqual(cfg.TLS.ExtraNames, []string{"example.org"}) {
		t.Errorf("extra_names: %q", cfg.TLS.ExtraNames)
	}
}

// Every mistake stops start-up with a message naming the key and the value.
func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string // regexp
	}{
		{"unknown key", "[smtp]\nmax_mesage_size = \"1MiB\"\n", `^config: .*: smtp\.max_mesage_size: unknown key \(did you mean smtp\.max_message_size\?\)$`},
		{"unknown top-level key", "hostnme = \"x\"\n", `hostnme: unknown key \(did you mean hostname\?\)`},
		{"unknown section", "[smpt]\nmax_recipients = 3\n", `smpt: unknown section \(did you mean smtp\?\)`},
		{"bad size unit", "[smtp]\nmax_message_size = \"25 MB\"\n", `smtp\.max_message_size: "25 MB": unknown unit`},
		{"size without unit", "[smtp]\nmax_message_size = \"25\"\n", `smtp\.max_message_size: "25": missing unit`},
		{"size as number", "[smtp]\nmax_message_size = 25\n", `smtp\.max_message_size: 25: want a size with a unit`},
		{"bad duration", "[pop3]\nidle_timeout = \"10 minutes\"\n", `pop3\.idle_timeout: "10 minutes": want a duration like "30s"`},
		{"duration as number", "[pop3]\nidle_timeout = 600\n", `pop3\.idle_timeout: 600: want a duration`},
		{"negative duration", "[smtp]\nread_timeout = \"-1s\"\n", `smtp\.read_timeout: "-1s": must not be negative`},
		{"string for int", "[smtp]\nmax_recipients = \"100\"\n", `smtp\.max_recipients: "100": want a whole number`},
		{"negative int", "[smtp]\nmax_recipients = -1\n", `smtp\.max_recipients: -1: want a whole number`},
		{"bool as string", "[auth]\nallow_plaintext = \"yes\"\n", `auth\.allow_plaintext: "yes": want true or false`},
		{"bad listen address", "[listen]\nsmtp = \"25\"\n", `listen\.smtp: "25": want host:port`},
		{"bad port", "[listen]\npop3 = \":99999\"\n", `listen\.pop3: ":99999": bad port`},
		{"same address twice", "[listen]\npop3 = \":2525\"\n", `listen\.pop3: ":2525": already used by listen\.smtp`},
		{"bad tls mode", "[tls]\nmode = \"letsencrypt\"\n", `tls\.mode: "letsencrypt": want "acme", "files", "local"`},
		{"files without cert", "[tls]\nmode = \"files\"\n", `tls\.cert_file: "": required when tls\.mode is "files"`},
		{"acme without web listeners", "hostname = \"mail.example.org\"\n[listen]\nhttp = \"\"\nhttps = \"\"\n", `listen\.http: "": certificates from ACME .* need listen\.http`},
		{"bad log level", "[log]\nlevel = \"verbose\"\n", `log\.level: "verbose": want "debug"`},
		{"bad hostname", "hostname = \"mail example\"\n", `hostname: "mail example": not a valid host name`},
		{"toml syntax", "[smtp\n", `^config: .*: line \d+: expected`},
		{"section as key", "listen = \":25\"\n", `listen: is a section: write \[listen\]`},
		{"array of tables", "[[smtp]]\nmax_recipients = 5\n", `smtp: is a section: write \[smtp\]`},
		{"dotted keys", "smtp.max_recipients = 5\nsmtp.nope = 1\n", `smtp\.nope: unknown key`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(writeConfig(t, tt.doc), noEnv, nil, nil)
			if err == nil {
				t.Fatalf("no error for %q", tt.doc)
			}
			if !regexp.MustCompile(tt.want).MatchString(err.Error()) {
				t.Errorf("error\n  %v\nwant match\n  %s", err, tt.want)
			}
			var ce *configError
			if !errors.As(err, &ce) {
				t.Errorf("error %T is not a configError (exit code 2)", err)
			}
		})
	}
}

func TestConfigMissingFile(t *testing.T) {
	_, err := loadConfig(filepath.Join(t.TempDir(), "nope.toml"), noEnv, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "nope.toml") || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("err = %v", err)
	}
}

// Precedence: defaults < file < MAILBOX_* environment < flags.
func TestConfigOverrides(t *testing.T) {
	p := writeConfig(t, "hostname = \"file.example\"\n[smtp]\nmax_recipients = 10\nmax_message_size = \"1MiB\"\n[listen]\nimap = \":143\"\n")
	env := []string{
		"MAILBOX_SMTP_MAX_RECIPIENTS=20",
		"MAILBOX_DATA=/srv/mail",
		"MAILBOX_LISTEN_IMAP=",
		"MAILBOX_TLS_EXTRA_NAMES=a.example, b.example",
		"MAILBOX_CONFIG=/ignored/here",
		"HOME=/root",
	}
	cfg, err := loadConfig(p, noEnv, env, []string{"smtp.max_message_size=2MiB", "hostname=flag.example"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Hostname != "flag.example" || cfg.SMTP.MaxRecipients != 20 || cfg.SMTP.MaxMessageSize != 2<<20 || cfg.DataDir != "/srv/mail" || cfg.Listen.IMAP != "" {
		t.Errorf("got %+v", cfg)
	}
	if !reflect.DeepEqual(cfg.TLS.ExtraNames, []string{"a.example", "b.example"}) {
		t.Errorf("extra_names from env: %q", cfg.TLS.ExtraNames)
	}

	// $MAILBOX_CONFIG names the file when --config does not.
	cfg, err = loadConfig("", func(k string) string {
		if k == envConfig {
			return p
		}
		return ""
	}, nil, nil)
	if err != nil || cfg.Hostname != "file.example" {
		t.Errorf("MAILBOX_CONFIG: %v %q", err, cfg.Hostname)
	}

	for _, tt := range []struct {
		env, set []string
		want     string
	}{
		{env: []string{"MAILBOX_SMTP_MAX_RECIPEINTS=3"}, want: `environment variable MAILBOX_SMTP_MAX_RECIPEINTS: unknown setting \(did you mean MAILBOX_SMTP_MAX_RECIPIENTS\?\)`},
		{env: []string{"MAILBOX_POP3_IDLE_TIMEOUT=5"}, want: `pop3\.idle_timeout: "5": want a duration .*\(from MAILBOX_POP3_IDLE_TIMEOUT\)`},
		{set: []string{"smtp.max_message_size=25 MB"}, want: `smtp\.max_message_size: "25 MB": unknown unit`},
		{set: []string{"smtp.nope=1"}, want: `smtp\.nope: unknown key`},
		{set: []string{"novalue"}, want: `--set "novalue": want key=value`},
	} {
		_, err := loadConfig("", noEnv, tt.env, tt.set)
		if err == nil || !regexp.MustCompile(tt.want).MatchString(err.Error()) {
			t.Errorf("env %q set %q: err = %v, want %s", tt.env, tt.set, err, tt.want)
		}
	}
}

func TestSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{"0", 0, ""},
		{"1B", 1, ""},
		{"512KiB", 512 << 10, ""},
		{"25MiB", 25 << 20, ""},
		{"25mib", 25 << 20, ""},
		{"10MB", 10_000_000, ""},
		{"2GiB", 2 << 30, ""},
		{"1TB", 1_000_000_000_000, ""},
		{"25 MB", 0, "unknown unit"},
		{"25", 0, "missing unit"},
		{"MiB", 0, "want digits"},
		{"1.5MiB", 0, "unknown unit"},
		{"-1MiB", 0, "want digits"},
		{"99999999999999TiB", 0, "too large"},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseSize(%q) err = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	for _, n := range []Size{0, 1, 1000, 1 << 10, 25 << 20, 3 << 30, 1<<20 + 1} {
		back, err := parseSize(n.String())
		if err != nil || Size(back) != n {
			t.Errorf("round trip %d -> %q -> %d, %v", n, n.String(), back, err)
		}
	}
}

func TestDurationString(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 30 * time.Second: "30s", 10 * time.Minute: "10m", 2 * time.Hour: "2h",
		90 * time.Second: "90s", 1500 * time.Millisecond: "1.5s",
	} {
		if got := Duration(d).String(); got != want {
			t.Errorf("%v: %q, want %q", d, got, want)
		}
	}
}

// `mailbox config` output is itself a valid config equal to what it shows.
func TestConfigRoundTrip(t *testing.T) {
	cfg, err := loadConfig("", noEnv, []string{"MAILBOX_SMTP_MAX_MESSAGE_SIZE=7MiB", "MAILBOX_TLS_EXTRA_NAMES=x.example"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := cfg.encodeTOML()
	if err != nil {
		t.Fatal(err)
	}
	back, err := loadConfig(writeConfig(t, doc), noEnv, nil, nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	if !reflect.DeepEqual(cfg, back) {
		t.Errorf("round trip differs:\n%+v\n%+v", cfg, back)
	}
}

// The README's configuration reference lists every key, with its default
// value: it is parsed as TOML and must equal defaultConfig() exactly.
func TestREADMEListsEveryKey(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const heading = "## Configuration reference"
	_, after, ok := strings.Cut(string(readme), heading)
	if !ok {
		t.Fatalf("README.md has no %q section", heading)
	}
	m := regexp.MustCompile("(?s)```toml\n(.*?)```").FindStringSubmatch(after)
	if m == nil {
		t.Fatalf("no ```toml block after %q", heading)
	}
	block := m[1]

	var raw map[string]any
	md, err := toml.Decode(block, &raw)
	if err != nil {
		t.Fatalf("README reference block is not valid TOML: %v", err)
	}
	defaults := defaultConfig()
	var missing []string
	for _, s := range defaults.settings() {
		if !md.IsDefined(strings.Split(s.key, ".")...) {
			missing = append(missing, s.key)
		}
	}
	if len(missing) > 0 {
		t.Errorf("README configuration reference does not list: %s", strings.Join(missing, ", "))
	}
	cfg := defaultConfig()
	if err := cfg.decodeTOML(block); err != nil {
		t.Fatalf("README reference block: %v", err)
	}
	if !reflect.DeepEqual(cfg, defaults) {
		doc, _ := defaults.encodeTOML()
		t.Errorf("README reference values differ from the defaults; the defaults are:\n%s", doc)
	}
	// The two variables that do not follow the MAILBOX_<KEY> rule.
	for _, env := range []string{envConfig, envData} {
		if !strings.Contains(string(readme), env) {
			t.Errorf("README does not mention %s", env)
		}
	}
}

// .ci/run runs exactly the test command the README gives.
func TestCIRunsREADMETestCommand(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)Run the tests, as CI does:\\s*```sh\n([^\n]+)\n```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README has no test command under \"Run the tests, as CI does:\"")
	}
	ci, err := os.ReadFile("../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(string(m[1])) + `$`).Match(ci) {
		t.Errorf(".ci/run does not run the README's test command %q", m[1])
	}
	if !strings.Contains(string(m[1]), "-race") {
		t.Errorf("the test command %q lacks -race", m[1])
	}
}
