package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"mailbox/store"
)

// act applies one action to the selected messages of a folder (the list's
// check boxes, or the buttons of one open message), then goes back.
func (srv *Server) act(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	ctx := r.Context()
	id, err := strconv.ParseInt(r.PostFormValue("box"), 10, 64)
	if err != nil {
		srv.notFound(w, r)
		return
	}
	box, err := rc.acct.MailboxByID(ctx, id)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	var uids []uint32
	for _, s := range r.PostForm["uid"] {
		if u, err := strconv.ParseUint(s, 10, 32); err == nil && u > 0 {
			uids = append(uids, uint32(u))
		}
	}
	back := safeNext(r.PostFormValue("back"))
	if len(uids) == 0 {
		http.Redirect(w, r, withNotice(back, "nothing"), http.StatusSeeOther)
		return
	}
	action := r.PostFormValue("action")
	notice := "updated"
	switch action {
	case "read", "unread", "flag", "unflag":
		op, flag := store.FlagsAdd, store.FlagSeen
		switch action {
		case "unread":
			op = store.FlagsRemove
		case "flag":
			flag = store.FlagFlagged
		case "unflag":
			op, flag = store.FlagsRemove, store.FlagFlagged
		}
		_, err = rc.acct.SetFlags(ctx, box.ID, uids, op, []string{flag})
	case "delete":
		notice = "deleted"
		var trash store.Mailbox
		trash, err = rc.acct.MailboxByRole(ctx, store.RoleTrash)
		if errors.Is(err, store.ErrNotFound) || (err == nil && trash.ID == box.ID) {
			notice = "deleteperm"
			_, err = rc.acct.Expunge(ctx, box.ID, uids)
		} else if err == nil {
			_, err = rc.acct.Move(ctx, box.ID, trash.ID, uids)
		}
		back = afterRemove(back, box.ID)
	case "move", "junk", "archive":
		notice = "moved"
		var target store.Mailbox
		switch action {
		case "move":
			var tid int64
			if tid, err = strconv.ParseInt(r.PostFormValue("target"), 10, 64); err != nil {
				srv.errorPage(w, r, http.StatusBadRequest, "Choose a folder to move to.")
				return
			}
			target, err = rc.acct.MailboxByID(ctx, tid)
		case "junk":
			target, err = rc.acct.MailboxByRole(ctx, store.RoleJunk)
		case "archive":
			target, err = rc.acct.MailboxByRole(ctx, store.RoleArchive)
		}
		if err == nil && target.ID != box.ID {
			_, err = rc.acct.Move(ctx, box.ID, target.ID, uids)
			back = afterRemove(back, box.ID)
		}
	default:
		srv.errorPage(w, r, http.StatusBadRequest, "Unknown action.")
		return
	}
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	http.Redirect(w, r, withNotice(back, notice), http.StatusSeeOther)
}

// afterRemove leaves a message page whose message is gone for its list.
func afterRemove(back string, box int64) string {
	if strings.HasPrefix(back, "/msg/") {
		return fmt.Sprintf("/box/%d", box)
	}
	return back
}

func withNotice(u, key string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "/"
	}
	q := p.Query()
	q.Set("n", key)
	p.RawQuery = q.Encode()
	return p.String()
}

type foldersData struct {
	Folders []store.Mailbox
}

func (srv *Server) foldersPage(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	v, err := srv.page(r, rc, "Folders", 0, nil)
	if err != nil {
		srv.fail(w, r, err)
		return
	}
	v.Data = foldersData{Folders: v.Folders}
	srv.render(w, r, http.StatusOK, "folders", v)
}

// folders creates, renames, deletes and empties folders.
func (srv *Server) folders(w http.ResponseWriter, r *http.Request, rc *reqCtx) {
	ctx := r.Context()
	name := strings.TrimSpace(r.PostFormValue("name"))
	var err error
	notice := ""
	back := "/folders"
	switch r.PostFormValue("action") {
	case "create":
		notice = "created"
		_, err = rc.acct.CreateMailbox(ctx, name, "")
	case "rename":
		notice = "renamed"
		err = rc.acct.RenameMailbox(ctx, r.PostFormValue("from"), strings.TrimSpace(r.PostFormValue("to")))
	case "delete":
		notice = "removed"
		var mb store.Mailbox
		if mb, err = rc.acct.Mailbox(ctx, name); err == nil && mb.Role != "" {
			err = store.ErrInvalid
		} else if err == nil {
			err = rc.acct.DeleteMailbox(ctx, name)
		}
	case "empty":
		notice = "emptied"
		var id int64
		var mb store.Mailbox
		if id, err = strconv.ParseInt(r.PostFormValue("box"), 10, 64); err == nil {
			mb, err = rc.acct.MailboxByID(ctx, id)
		}
		if err == nil && mb.Role != store.RoleTrash && mb.Role != store.RoleJunk {
			err = store.ErrInvalid
		}
		if err == nil {
			var msgs []store.Message
			if msgs, err = rc.acct.Messages(ctx, mb.ID); err == nil && len(msgs) > 0 {
				uids := make([]uint32, len(msgs))
				for i, m := range msgs {
					uids[i] = m.UID
				}
				_, err = rc.acct.Expunge(ctx, mb.ID, uids)
			}
			back = fmt.Sprintf("/box/%d", mb.ID)
		}
	default:
		srv.errorPage(w, r, http.StatusBadRequest, "Unknown action.")
		return
	}
	switch {
	case errors.Is(err, store.ErrExists):
		srv.errorPage(w, r, http.StatusConflict, "A folder with that name exists already, or the folder still has subfolders.")
	case errors.Is(err, store.ErrInvalid):
		srv.errorPage(w, r, http.StatusBadRequest, "That cannot be done with this folder (special folders cannot be renamed or deleted; names must not be empty).")
	case errors.Is(err, store.ErrNotFound):
		srv.errorPage(w, r, http.StatusNotFound, "That folder does not exist.")
	case err != nil:
		srv.fail(w, r, err)
	default:
		http.Redirect(w, r, withNotice(back, notice), http.StatusSeeOther)
	}
}
