package web

import (
	"errors"
	"net"
	"net/http"
	"unicode/utf8"

	"mailbox/store"
)

// minPasswordRunes is the shortest new password the settings page takes.
const minPasswordRunes = 8

type settingsData struct {
	Info     store.AccountInfo
	Hostname string
	Ports    Ports
}

func (srv *Server) settingsPage(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	srv.renderSettings(w, r, rc, http.StatusOK, "")
}

func (srv *Server) renderSettings(w http.ResponseWriter, r *http.Request, rc *reqCtx, code int, msg string) {
	info, err := rc.acct.Info(r.Context())
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	v, err := srv.page(r, rc, "Settings", 0, settingsData{Info: info, Hostname: srv.opts.Hostname, Ports: srv.opts.Ports})
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	v.Error = msg
	srv.render(w, r, code, "settings", v)
}

func (srv *Server) settings(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	ctx := r.Context()
	switch r.PostFormValue("action") {
	case "password":
		cur, pw, again := r.PostFormValue("current"), r.PostFormValue("new"), r.PostFormValue("repeat")
		remote := r.RemoteAddr
		if h, _, err := net.SplitHostPort(remote); err == nil {
			remote = h
		}
		if err := srv.lim.Wait(ctx, remote, rc.acct.Address); err != nil {
			return
		}
		if _, err := srv.st.Login(ctx, rc.acct.Address, cur); errors.Is(err, store.ErrAuthFailed) {
			srv.lim.Failure(remote, rc.acct.Address)
			srv.renderSettings(w, r, rc, http.StatusForbidden, "The current password is wrong.")
			return
		} else if err != nil {
			srv.fail(w, r, err)
			return
		}
		if pw != again {
			srv.renderSettings(w, r, rc, http.StatusBadRequest, "The new passwords do not match.")
			return
		}
		if utf8.RuneCountInString(pw) < minPasswordRunes {
			srv.renderSettings(w, r, rc, http.StatusBadRequest, "The new password must have at least 8 characters.")
			return
		}
		if err := srv.st.SetPassword(ctx, rc.acct.Address, pw); err != nil {
			srv.fail(w, r, err)
			return
		}
		if err := rc.acct.DeleteOtherSessions(ctx, rc.token); err != nil {
			srv.fail(w, r, err)
			return
		}
		srv.log.Info("password changed", "user", rc.acct.Address)
		http.Redirect(w, r, "/settings?n=password", http.StatusSeeOther)
	case "pop3":
		mode := r.PostFormValue("pop3")
		if mode != store.POP3Expunge && mode != store.POP3Trash {
			srv.renderSettings(w, r, rc, http.StatusBadRequest, "Choose one of the POP3 options.")
			return
		}
		if err := srv.st.SetPOP3Delete(ctx, rc.acct.Address, mode); err != nil {
			srv.fail(w, r, err)
			return
		}
		http.Redirect(w, r, "/settings?n=pop3", http.StatusSeeOther)
	default:
		srv.errorPage(w, r, http.StatusBadRequest, "Unknown action.")
	}
}
