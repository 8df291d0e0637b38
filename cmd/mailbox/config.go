package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"mailbox/internal/throttle"
	"mailbox/store"
	mtls "mailbox/tls"
)

// Config is everything mailbox reads from its TOML file, the environment and
// flags. The toml tags are the public key names: the README's configuration
// reference lists every one of them (TestREADMEListsEveryKey checks it).
//
// Every field has a default (defaultConfig); a zero size, count or duration
// in a protocol section means that package's own default.
type Config struct {
	// Hostname is the name this server uses in greetings and Received:
	// headers, and the name its certificates cover.
	Hostname string `toml:"hostname"`
	// DataDir holds the database, message files and certificates.
	DataDir string `toml:"data_dir"`
	// ShutdownTimeout bounds how long a graceful shutdown waits for sessions
	// to finish before it closes them.
	ShutdownTimeout Duration `toml:"shutdown_timeout"`

	Listen ListenConfig `toml:"listen"`
	TLS    TLSConfig    `toml:"tls"`
	SMTP   SMTPConfig   `toml:"smtp"`
	POP3   POP3Config   `toml:"pop3"`
	IMAP   IMAPConfig   `toml:"imap"`
	Web    WebConfig    `toml:"web"`
	Auth   AuthConfig   `toml:"auth"`
	Log    LogConfig    `toml:"log"`

	DNS      DNSConfig      `toml:"dns"`      // outbound.go
	Outbound OutboundConfig `toml:"outbound"` // outbound.go
	Inbound  InboundConfig  `toml:"inbound"`  // outbound.go
}

// ListenConfig holds one address per listener; "" turns a listener off.
type ListenConfig struct {
	SMTP        string `toml:"smtp"`
	Submission  string `toml:"submission"`
	Submissions string `toml:"submissions"`
	POP3        string `toml:"pop3"`
	POP3S       string `toml:"pop3s"`
	IMAP        string `toml:"imap"`
	IMAPS       string `toml:"imaps"`
	HTTP        string `toml:"http"`
	HTTPS       string `toml:"https"`
}

// TLSConfig chooses where certificates come from (see mailbox/tls).
type TLSConfig struct {
	Mode          string   `toml:"mode"`
	ExtraNames    []string `toml:"extra_names"`
	ACMEEmail     string   `toml:"acme_email"`
	ACMEDirectory string   `toml:"acme_directory"`
	ACMECARoots   string   `toml:"acme_ca_roots"`
	CertFile      string   `toml:"cert_file"`
	KeyFile       string   `toml:"key_file"`
}

// SMTPConfig holds the limits and timeouts of all three SMTP listeners.
type SMTPConfig struct {
	MaxMessageSize      Size     `toml:"max_message_size"`
	MaxRecipients       int      `toml:"max_recipients"`
	MaxLineLength       Size     `toml:"max_line_length"`
	ReadTimeout         Duration `toml:"read_timeout"`
	WriteTimeout        Duration `toml:"write_timeout"`
	DataTimeout         Duration `toml:"data_timeout"`
	MaxConnections      int      `toml:"max_connections"`
	MaxConnectionsPerIP int      `toml:"max_connections_per_ip"`
	MaxCommands         int      `toml:"max_commands"`
	MaxErrors           int      `toml:"max_errors"`
}

// POP3Config holds the limits and timeouts of both POP3 listeners.
type POP3Config struct {
	IdleTimeout         Duration `toml:"idle_timeout"`
	AuthTimeout         Duration `toml:"auth_timeout"`
	MaxLineLength       Size     `toml:"max_line_length"`
	MaxConnections      int      `toml:"max_connections"`
	MaxConnectionsPerIP int      `toml:"max_connections_per_ip"`
	MaxErrors           int      `toml:"max_errors"`
}

// IMAPConfig holds the limits and timeouts of both IMAP listeners.
type IMAPConfig struct {
	IdleTimeout         Duration `toml:"idle_timeout"`
	AuthTimeout         Duration `toml:"auth_timeout"`
	WriteTimeout        Duration `toml:"write_timeout"`
	MaxConnections      int      `toml:"max_connections"`
	MaxConnectionsPerIP int      `toml:"max_connections_per_ip"`
	// AppendLimit is the largest APPEND; 0 means smtp.max_message_size, so
	// what can be delivered can also be uploaded.
	AppendLimit Size `toml:"append_limit"`
	// MaxPendingUpdates bounds the updates kept for a selected session
	// that does not read them (imap.Options.MaxPendingUpdates).
	MaxPendingUpdates int `toml:"max_pending_updates"`
}

// WebConfig holds the webmail's limits and timeouts (both web listeners).
type WebConfig struct {
	SessionIdle       Duration `toml:"session_idle"`
	PageSize          int      `toml:"page_size"`
	MaxMessageSize    Size     `toml:"max_message_size"`
	ReadHeaderTimeout Duration `toml:"read_header_timeout"`
	IdleTimeout       Duration `toml:"idle_timeout"`
	EventsKeepAlive   Duration `toml:"events_keepalive"`
}

// AuthConfig holds what every protocol's login shares.
type AuthConfig struct {
	// AllowPlaintext permits passwords over unencrypted connections from
	// non-loopback addresses (Dovecot's disable_plaintext_auth = no).
	AllowPlaintext      bool     `toml:"allow_plaintext"`
	FailedLoginFree     int      `toml:"failed_login_free"`
	FailedLoginDelay    Duration `toml:"failed_login_delay"`
	FailedLoginMaxDelay Duration `toml:"failed_login_max_delay"`
	FailedLoginWindow   Duration `toml:"failed_login_window"`
	// HashMemoryRelease: once no password has been hashed for this long,
	// the memory of the last burst of logins goes back to the system; 0
	// never (store.Options.HashMemoryRelease).
	HashMemoryRelease Duration `toml:"hash_memory_release"`
}

// LogConfig sets up the one logger.
type LogConfig struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // text, json
}

// Defaults that belong to the binary rather than to a package.
const (
	defaultHostname        = "localhost"
	defaultDataDir         = "data"
	defaultShutdownTimeout = 30 * time.Second
	defaultLogLevel        = "info"
	defaultLogFormat       = "text"
)

// Environment variables that are not a config key.
const (
	envConfig = "MAILBOX_CONFIG" // path of the config file
	envData   = "MAILBOX_DATA"   // data_dir (the documented name)
	envPrefix = "MAILBOX_"       // MAILBOX_SMTP_MAX_MESSAGE_SIZE sets smtp.max_message_size
)

// defaultConfig is what `mailbox serve` runs with when nothing is configured:
// a local instance on unprivileged ports.
func defaultConfig() Config {
	return Config{
		Hostname:        defaultHostname,
		DataDir:         defaultDataDir,
		ShutdownTimeout: Duration(defaultShutdownTimeout),
		Listen: ListenConfig{
			SMTP:        ":2525",
			Submission:  ":5870",
			Submissions: ":4650",
			POP3:        ":1100",
			POP3S:       ":9950",
			IMAP:        ":1430",
			IMAPS:       ":9930",
			HTTP:        ":8080",
			HTTPS:       ":8443",
		},
		TLS: TLSConfig{
			ACMEDirectory: mtls.DefaultACMEDirectory,
			ExtraNames:    []string{},
		},
		SMTP: defaultSMTPConfig(),
		POP3: defaultPOP3Config(),
		IMAP: defaultIMAPConfig(),
		Web:  defaultWebConfig(),
		Auth: AuthConfig{
			FailedLoginFree:     throttle.DefaultFree,
			FailedLoginDelay:    Duration(throttle.DefaultBaseDelay),
			FailedLoginMaxDelay: Duration(throttle.DefaultMaxDelay),
			FailedLoginWindow:   Duration(throttle.DefaultWindow),
			HashMemoryRelease:   Duration(store.DefaultHashMemoryRelease),
		},
		Log:      LogConfig{Level: defaultLogLevel, Format: defaultLogFormat},
		DNS:      defaultDNSConfig(),
		Outbound: defaultOutboundConfig(),
		Inbound:  InboundConfig{Checks: true, DMARCReject: true, DMARCQuarantine: true},
	}
}

// configError is a configuration problem: start-up stops and the exit code
// says "fix your configuration".
type configError struct{ msg string }

func (e *configError) Error() string { return "config: " + e.msg }

func configErrorf(format string, args ...any) error {
	return &configError{msg: fmt.Sprintf(format, args...)}
}

// setting is one config key bound to its field in a Config.
type setting struct {
	key   string        // "smtp.max_message_size"
	env   string        // "MAILBOX_SMTP_MAX_MESSAGE_SIZE"
	field reflect.Value // addressable field of the Config
}

// settings lists every key of c in declaration order.
func (c *Config) settings() []setting {
	var out []setting
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			name := f.Tag.Get("toml")
			if name == "" || name == "-" {
				continue
			}
			key := prefix + name
			fv := v.Field(i)
			if f.Type.Kind() == reflect.Struct {
				walk(key+".", fv)
				continue
			}
			env := envPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
			if key == "data_dir" {
				env = envData
			}
			out = append(out, setting{key: key, env: env, field: fv})
		}
	}
	walk("", reflect.ValueOf(c).Elem())
	return out
}

// sections lists the table names of Config ("listen", "smtp", ...).
func (c *Config) sections() []string {
	var out []string
	t := reflect.TypeOf(*c)
	for i := range t.NumField() {
		if t.Field(i).Type.Kind() == reflect.Struct {
			out = append(out, t.Field(i).Tag.Get("toml"))
		}
	}
	return out
}

// listenAddr is one [listen] entry.
type listenAddr struct {
	key  string // "smtp", "pop3s", ...
	addr string // "" when off
}

// listeners lists the [listen] entries in declaration order.
func (c *Config) listeners() []listenAddr {
	var out []listenAddr
	for _, s := range c.settings() {
		if k, ok := strings.CutPrefix(s.key, "listen."); ok {
			out = append(out, listenAddr{key: k, addr: s.field.String()})
		}
	}
	return out
}

func (c *Config) lookup(key string) (setting, bool) {
	for _, s := range c.settings() {
		if s.key == key {
			return s, true
		}
	}
	return setting{}, false
}

// loadConfig builds the effective configuration: defaults, then the file
// (path, or $MAILBOX_CONFIG when path is ""), then MAILBOX_* variables from
// env, then the overrides given as flags (key=value, applied in order).
// Every error names the key and the value.
func loadConfig(path string, getenv func(string) string, environ []string, overrides []string) (Config, error) {
	cfg := defaultConfig()
	if path == "" {
		path = getenv(envConfig)
	}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return cfg, &configError{msg: fmt.Sprintf("read %s: %v", path, errors.Unwrap(err))}
		}
		if err := cfg.decodeTOML(string(data)); err != nil {
			var ce *configError
			if errors.As(err, &ce) {
				ce.msg = fmt.Sprintf("%s: %s", path, ce.msg)
			}
			return cfg, err
		}
	}
	if err := cfg.applyEnv(environ); err != nil {
		return cfg, err
	}
	for _, o := range overrides {
		key, value, ok := strings.Cut(o, "=")
		if !ok {
			return cfg, configErrorf("--set %q: want key=value", o)
		}
		key = strings.TrimSpace(key)
		s, ok := cfg.lookup(key)
		if !ok {
			return cfg, configErrorf("%s: unknown key (from --set)", key)
		}
		if err := setString(s.field, value); err != nil {
			return cfg, configErrorf("%s: %q: %v (from --set)", key, value, err)
		}
	}
	return cfg, cfg.validate()
}

// decodeTOML applies a TOML document on top of c. Unknown keys, wrong types
// and bad values are errors naming the key.
func (c *Config) decodeTOML(doc string) error {
	var raw map[string]any
	md, err := toml.Decode(doc, &raw)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return configErrorf("line %d: %s", pe.Position.Line, pe.Message)
		}
		return configErrorf("%v", err)
	}
	byKey := map[string]setting{}
	for _, s := range c.settings() {
		byKey[s.key] = s
	}
	sections := c.sections()
	// Keys in file order, so the first mistake reported is the first in the file.
	for _, k := range md.Keys() {
		key := k.String()
		v := lookupRaw(raw, k)
		if _, isTable := v.(map[string]any); isTable {
			if len(k) == 1 && slices.Contains(sections, key) {
				continue
			}
			return configErrorf("%s: unknown section%s", key, suggest(key, sections))
		}
		s, ok := byKey[key]
		if !ok && len(k) == 1 && slices.Contains(sections, key) {
			return configErrorf("%s: is a section: write [%s] (one pair of brackets)", key, key)
		}
		if !ok {
			if len(k) > 1 && !slices.Contains(sections, k[0]) {
				return configErrorf("%s: unknown section %q%s", key, k[0], suggest(k[0], sections))
			}
			return configErrorf("%s: unknown key%s", key, suggest(key, keysOf(byKey)))
		}
		if err := setTOML(s.field, v); err != nil {
			return configErrorf("%s: %s: %v", key, formatRaw(v), err)
		}
	}
	return nil
}

func lookupRaw(m map[string]any, k toml.Key) any {
	var v any = m
	for _, part := range k {
		t, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = t[part]
	}
	return v
}

func formatRaw(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(v)
}

func keysOf(m map[string]setting) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// suggest names the closest known key when the unknown one is a likely typo.
func suggest(key string, known []string) string {
	best, bestDist := "", 4
	for _, k := range known {
		if d := editDistance(key, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// applyEnv applies MAILBOX_* variables from environ ("NAME=value" entries).
// An unknown MAILBOX_ name is an error, so a typo cannot go unnoticed.
func (c *Config) applyEnv(environ []string) error {
	byEnv := map[string]setting{}
	for _, s := range c.settings() {
		byEnv[s.env] = s
	}
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) || name == envConfig {
			continue
		}
		s, ok := byEnv[name]
		if !ok {
			envs := make([]string, 0, len(byEnv)+1)
			for e := range byEnv {
				envs = append(envs, e)
			}
			return configErrorf("environment variable %s: unknown setting%s", name, suggest(name, envs))
		}
		if err := setString(s.field, value); err != nil {
			return configErrorf("%s: %q: %v (from %s)", s.key, value, err, name)
		}
	}
	return nil
}

var (
	sizeType     = reflect.TypeFor[Size]()
	durationType = reflect.TypeFor[Duration]()
)

// setString sets a field from an environment variable or flag value.
func setString(f reflect.Value, s string) error {
	switch f.Type() {
	case sizeType, durationType:
		return f.Addr().Interface().(interface{ UnmarshalText([]byte) error }).UnmarshalText([]byte(s))
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return errors.New("want true or false")
		}
		f.SetBool(b)
	case reflect.Int:
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return errors.New("want a whole number, 0 or more")
		}
		f.SetInt(int64(n))
	case reflect.Slice:
		list := []string{}
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				list = append(list, part)
			}
		}
		f.Set(reflect.ValueOf(list))
	default:
		return fmt.Errorf("unsupported field type %s", f.Type())
	}
	return nil
}

// setTOML sets a field from a decoded TOML value, checking its type.
func setTOML(f reflect.Value, v any) error {
	switch f.Type() {
	case sizeType:
		s, ok := v.(string)
		if !ok {
			if n, isInt := v.(int64); isInt && n == 0 {
				f.SetInt(0)
				return nil
			}
			return errors.New(`want a size with a unit in quotes, like "25MiB"`)
		}
		return setString(f, s)
	case durationType:
		s, ok := v.(string)
		if !ok {
			return errors.New(`want a duration in quotes, like "30s" or "10m"`)
		}
		return setString(f, s)
	}
	switch f.Kind() {
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			return errors.New("want a string in quotes")
		}
		f.SetString(s)
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			return errors.New("want true or false")
		}
		f.SetBool(b)
	case reflect.Int:
		n, ok := v.(int64)
		if !ok || n < 0 || n > 1<<31-1 {
			return errors.New("want a whole number, 0 or more, without quotes")
		}
		f.SetInt(n)
	case reflect.Slice:
		arr, ok := v.([]any)
		if !ok {
			return errors.New(`want a list of strings, like ["a", "b"]`)
		}
		list := make([]string, 0, len(arr))
		for _, e := range arr {
			s, ok := e.(string)
			if !ok {
				return errors.New(`want a list of strings, like ["a", "b"]`)
			}
			list = append(list, s)
		}
		f.Set(reflect.ValueOf(list))
	default:
		return fmt.Errorf("unsupported field type %s", f.Type())
	}
	return nil
}

// validate checks what a single key's type cannot: allowed words, address
// syntax, and keys that depend on each other.
func (c *Config) validate() error {
	if _, err := store.NormalizeDomain(c.Hostname); err != nil && net.ParseIP(c.Hostname) == nil {
		return configErrorf("hostname: %q: not a valid host name", c.Hostname)
	}
	if strings.TrimSpace(c.DataDir) == "" {
		return configErrorf(`data_dir: "": must name a directory`)
	}
	seen := map[string]string{}
	for _, l := range c.listeners() {
		if l.addr == "" {
			continue
		}
		host, port, err := net.SplitHostPort(l.addr)
		if err != nil {
			return configErrorf("listen.%s: %q: want host:port or :port", l.key, l.addr)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return configErrorf("listen.%s: %q: bad port %q", l.key, l.addr, port)
		}
		if host != "" && net.ParseIP(host) == nil {
			if _, err := store.NormalizeDomain(host); err != nil {
				return configErrorf("listen.%s: %q: bad host %q", l.key, l.addr, host)
			}
		}
		if port != "0" {
			if other, dup := seen[l.addr]; dup {
				return configErrorf("listen.%s: %q: already used by listen.%s", l.key, l.addr, other)
			}
			seen[l.addr] = l.key
		}
	}
	switch c.TLS.Mode {
	case "", mtls.ModeACME, mtls.ModeLocal:
		mode := c.TLS.Mode
		if mode == "" {
			mode = mtls.DefaultMode(c.Hostname)
		}
		if mode == mtls.ModeACME && c.Listen.HTTP == "" && c.Listen.HTTPS == "" {
			return configErrorf(`listen.http: "": certificates from ACME (tls.mode %q for hostname %q) need listen.http (HTTP-01 on port 80) or listen.https (TLS-ALPN-01 on port 443)`, c.TLS.Mode, c.Hostname)
		}
	case mtls.ModeFiles:
		if c.TLS.CertFile == "" {
			return configErrorf(`tls.cert_file: "": required when tls.mode is "files"`)
		}
		if c.TLS.KeyFile == "" {
			return configErrorf(`tls.key_file: "": required when tls.mode is "files"`)
		}
	default:
		return configErrorf(`tls.mode: %q: want "acme", "files", "local" or "" (automatic)`, c.TLS.Mode)
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		return configErrorf("log.level: %q: %v", c.Log.Level, err)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return configErrorf(`log.format: %q: want "text" or "json"`, c.Log.Format)
	}
	return c.validateOutbound()
}

// Size is a byte count written with a unit: "25MiB", "10MB", "512KiB",
// "1000B". "0" means the package default (or no limit, where documented).
type Size int64

var sizeUnits = []struct {
	name string
	mult int64
}{
	{"B", 1},
	{"KB", 1000}, {"KiB", 1 << 10},
	{"MB", 1000 * 1000}, {"MiB", 1 << 20},
	{"GB", 1000 * 1000 * 1000}, {"GiB", 1 << 30},
	{"TB", 1000 * 1000 * 1000 * 1000}, {"TiB", 1 << 40},
}

// UnmarshalText parses a size: digits directly followed by a unit (B, KB,
// KiB, MB, MiB, GB, GiB, TB, TiB; case does not matter).
func (s *Size) UnmarshalText(text []byte) error {
	n, err := parseSize(string(text))
	if err != nil {
		return err
	}
	*s = Size(n)
	return nil
}

// MarshalText writes the size with the largest binary unit that divides it.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s Size) String() string {
	n := int64(s)
	if n == 0 {
		return "0"
	}
	for i := len(sizeUnits) - 1; i > 0; i-- {
		u := sizeUnits[i]
		if strings.Contains(u.name, "i") && n%u.mult == 0 {
			return fmt.Sprintf("%d%s", n/u.mult, u.name)
		}
	}
	return fmt.Sprintf("%dB", n)
}

func parseSize(s string) (int64, error) {
	if s == "0" {
		return 0, nil
	}
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, errors.New(`want digits and a unit, like "25MiB"`)
	}
	num, unit := s[:i], s[i:]
	if unit == "" {
		return 0, errors.New(`missing unit (B, KB, KiB, MB, MiB, GB, GiB, TB, TiB), like "25MiB"`)
	}
	for _, u := range sizeUnits {
		if strings.EqualFold(unit, u.name) {
			n, err := strconv.ParseInt(num, 10, 64)
			if err != nil || n > (1<<62)/u.mult {
				return 0, errors.New("too large")
			}
			return n * u.mult, nil
		}
	}
	return 0, fmt.Errorf("unknown unit %q (want B, KB, KiB, MB, MiB, GB, GiB, TB or TiB, right after the number)", unit)
}

// Duration is a time span in Go syntax: "30s", "10m", "1h30m", "250ms".
type Duration time.Duration

// UnmarshalText parses a Go duration; negative ones are refused.
func (d *Duration) UnmarshalText(text []byte) error {
	s := string(text)
	if s == "0" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return errors.New(`want a duration like "30s", "10m" or "1h"`)
	}
	if v < 0 {
		return errors.New("must not be negative")
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration in its shortest whole unit.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

func (d Duration) String() string {
	v := time.Duration(d)
	switch {
	case v == 0:
		return "0s"
	case v%time.Hour == 0:
		return fmt.Sprintf("%dh", v/time.Hour)
	case v%time.Minute == 0:
		return fmt.Sprintf("%dm", v/time.Minute)
	case v%time.Second == 0:
		return fmt.Sprintf("%ds", v/time.Second)
	}
	return v.String()
}

// encodeTOML writes c as a TOML document (mailbox config).
func (c *Config) encodeTOML() (string, error) {
	var b strings.Builder
	enc := toml.NewEncoder(&b)
	enc.Indent = ""
	if err := enc.Encode(c); err != nil {
		return "", err
	}
	return b.String(), nil
}
