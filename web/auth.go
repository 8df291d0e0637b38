package web

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"mailbox/store"
)

// Cookies. The session cookie holds a random token whose hash the store
// keeps; the login cookie is a double-submit CSRF secret for the sign-in
// form, used before there is a session.
const (
	sessionCookie = "mb_session"
	loginCookie   = "mb_login"
	csrfField     = "csrf"
	csrfHeader    = "X-CSRF-Token"
)

// reqCtx is what a signed-in request carries.
type reqCtx struct {
	acct  *store.Account
	sess  store.Session
	token string
}

type authedHandler func(http.ResponseWriter, *http.Request, *reqCtx)

// authed runs h for a signed-in user. A state-changing request must also
// carry the session's CSRF token (form field or header) and must not come
// from another site; the body is capped at MaxMessageBytes plus room for
// the form.
func (srv *Server) authed(h authedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rc, err := srv.session(r)
		if errors.Is(err, store.ErrNotFound) {
			srv.signIn(w, r)
			return
		} else if err != nil {
			srv.fail(w, r, err)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			r.Body = http.MaxBytesReader(w, r.Body, srv.opts.MaxMessageBytes+1<<20)
			if err := parseForm(r); err != nil {
				var tooBig *http.MaxBytesError
				if errors.As(err, &tooBig) {
					srv.errorPage(w, r, http.StatusRequestEntityTooLarge,
						fmt.Sprintf("That is too big: the limit for a message with its attachments is %s.", humanSize(srv.opts.MaxMessageBytes)))
				} else {
					srv.errorPage(w, r, http.StatusBadRequest, "The form could not be read. Please try again.")
				}
				return
			}
			if !srv.sameSite(r) || !validCSRF(r, rc.sess.CSRF) {
				srv.errorPage(w, r, http.StatusForbidden, "This form has expired. Go back, reload the page and try again.")
				return
			}
		}
		h(w, r, rc)
	}
}

func (srv *Server) session(r *http.Request) (*reqCtx, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil, store.ErrNotFound
	}
	acct, sess, err := srv.st.Session(r.Context(), c.Value, srv.opts.SessionIdle)
	if err != nil {
		return nil, err
	}
	return &reqCtx{acct: acct, sess: sess, token: c.Value}, nil
}

// signIn answers a request without a valid session: pages go to the
// sign-in form (coming back afterwards), everything else gets 401.
func (srv *Server) signIn(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path != "/events" && r.URL.Path != "/contacts" {
		http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		return
	}
	if r.Method == http.MethodPost {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	http.Error(w, "sign in first", http.StatusUnauthorized)
}

// sameSite refuses requests a browser says come from another site (Fetch
// Metadata), and requests whose Origin names another host.
func (srv *Server) sameSite(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s == "cross-site" || s == "same-site" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return false
		}
	}
	return true
}

// maxFormMemory is how much of a multipart form is kept in memory; larger
// uploads go to temporary files that net/http removes after the request.
const maxFormMemory = 8 << 20

// parseForm reads a urlencoded or multipart body once, so a body over
// the size limit is reported as such rather than as a missing token.
func parseForm(r *http.Request) error {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		return r.ParseMultipartForm(maxFormMemory)
	}
	return r.ParseForm()
}

func validCSRF(r *http.Request, want string) bool {
	got := r.Header.Get(csrfHeader)
	if got == "" {
		got = r.PostFormValue(csrfField)
	}
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// randomString returns n random bytes, base64url-encoded. crypto/rand.Read
// never returns an error (Go 1.24+: it crashes the program instead).
func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// newRef is a short reference that links an error shown to a user to its
// log line.
func newRef() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
}

// safeNext keeps a post-login redirect on this site.
func safeNext(next string) string {
	// Browsers drop tabs and line breaks from URLs and read "\" as "/", so
	// "/\t/evil" or "/\evil" would leave the site.
	if strings.ContainsFunc(next, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' }) ||
		!strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/login") {
		return "/"
	}
	return next
}

type loginData struct {
	Address string
	Next    string
	Error   string
}

func (srv *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, err := srv.session(r); err == nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	srv.renderLogin(w, r, http.StatusOK, loginData{Next: safeNext(r.URL.Query().Get("next"))})
}

func (srv *Server) renderLogin(w http.ResponseWriter, r *http.Request, code int, d loginData) {
	token := ""
	if c, err := r.Cookie(loginCookie); err == nil && len(c.Value) >= 32 {
		token = c.Value
	} else {
		token = randomString(32)
		setCookie(w, r, loginCookie, token, 0)
	}
	srv.render(w, r, code, "login", &view{Title: "Sign in", CSRF: token, Data: d})
}

func (srv *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	addr := strings.TrimSpace(r.PostFormValue("address"))
	pass := r.PostFormValue("password")
	d := loginData{Address: addr, Next: safeNext(r.PostFormValue("next"))}
	c, err := r.Cookie(loginCookie)
	if err != nil || !srv.sameSite(r) || subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.PostFormValue(csrfField))) != 1 {
		d.Error = "The sign-in form expired. Please try again."
		srv.renderLogin(w, r, http.StatusForbidden, d)
		return
	}
	remote := r.RemoteAddr
	if h, _, err := net.SplitHostPort(remote); err == nil {
		remote = h
	}
	if err := srv.lim.Wait(r.Context(), remote, strings.ToLower(addr)); err != nil {
		return
	}
	acct, err := srv.st.Login(r.Context(), addr, pass)
	if errors.Is(err, store.ErrAuthFailed) {
		srv.lim.Failure(remote, strings.ToLower(addr))
		srv.stats.loginFailed.Add(1)
		srv.log.Info("login failed", "remote", remote, "user", addr)
		d.Error = "Wrong address or password."
		srv.renderLogin(w, r, http.StatusUnauthorized, d)
		return
	} else if err != nil {
		srv.fail(w, r, err)
		return
	}
	srv.lim.Success(remote, acct.Address)
	token, _, err := acct.CreateSession(r.Context(), srv.opts.SessionIdle)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	srv.stats.loginOK.Add(1)
	srv.log.Info("login", "remote", remote, "user", acct.Address)
	setCookie(w, r, sessionCookie, token, 0)
	setCookie(w, r, loginCookie, "", -1)
	http.Redirect(w, r, d.Next, http.StatusSeeOther)
}

func (srv *Server) logout(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	if err := srv.st.DeleteSession(r.Context(), rc.token); err != nil {
		srv.fail(w, r, err)
		return
	}
	setCookie(w, r, sessionCookie, "", -1)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
