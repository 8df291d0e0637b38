package imap

import (
	"errors"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"mailbox/store"
)

// delim is the hierarchy separator (store.Separator as a rune).
const delim = '/'

// roleAttrs maps store roles to special-use attributes (RFC 6154).
var roleAttrs = map[string]imap.MailboxAttr{
	store.RoleSent:    imap.MailboxAttrSent,
	store.RoleDrafts:  imap.MailboxAttrDrafts,
	store.RoleTrash:   imap.MailboxAttrTrash,
	store.RoleJunk:    imap.MailboxAttrJunk,
	store.RoleArchive: imap.MailboxAttrArchive,
}

// mailboxName is how a store mailbox is named on the wire.
func mailboxName(mb store.Mailbox) string {
	if mb.Role == store.RoleInbox {
		return "INBOX"
	}
	return mb.Name
}

// cleanName drops a trailing separator (RFC 9051 §6.3.4: "foo/" creates
// "foo") and spells INBOX, which is case-insensitive also as a parent
// ("inbox/x" is "INBOX/x"), in capitals.
func cleanName(name string) string {
	name = strings.TrimSuffix(name, store.Separator)
	if len(name) >= 5 && strings.EqualFold(name[:5], "INBOX") && (len(name) == 5 || name[5:6] == store.Separator) {
		name = "INBOX" + name[5:]
	}
	return name
}

// List answers LIST and LSUB, with the LIST-EXTENDED selection and return
// options, LIST-STATUS and SPECIAL-USE (RFC 5258, 5819, 6154). Counts for
// RETURN (STATUS) come from the store's counts, never from messages.
func (sess *session) List(w *imapserver.ListWriter, ref string, patterns []string, options *imap.ListOptions) error {
	defer sess.enter("LIST")()
	if len(patterns) == 0 {
		// RFC 9051 §6.3.9: an empty pattern asks for the delimiter.
		return w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: delim})
	}
	all, err := sess.acct.Mailboxes(sess.ctx)
	if err != nil {
		return sess.replyFor(err)
	}
	names := make(map[string]bool, len(all))
	for _, mb := range all {
		names[mailboxName(mb)] = true
	}
	hasChildren := func(name string) bool {
		prefix := name + store.Separator
		for n := range names {
			if strings.HasPrefix(n, prefix) {
				return true
			}
		}
		return false
	}
	subscribedChild := func(name string) bool {
		prefix := name + store.Separator
		for _, mb := range all {
			if mb.Subscribed && strings.HasPrefix(mailboxName(mb), prefix) {
				return true
			}
		}
		return false
	}
	matches := func(name string) bool {
		for _, p := range patterns {
			// INBOX matches in any case (RFC 9051 §6.3.9).
			if imapserver.MatchList(name, delim, inboxPattern(ref), inboxPattern(p)) || imapserver.MatchList(name, delim, ref, p) {
				return true
			}
		}
		return false
	}
	for _, mb := range all {
		name := mailboxName(mb)
		if !matches(name) {
			continue
		}
		data := imap.ListData{Mailbox: name, Delim: delim}
		if options.SelectSubscribed && !mb.Subscribed {
			// RFC 5258 §3.5: with RECURSIVEMATCH a parent of a
			// subscribed mailbox is listed with CHILDINFO.
			if !options.SelectRecursiveMatch || !subscribedChild(name) {
				continue
			}
			data.ChildInfo = &imap.ListDataChildInfo{Subscribed: true}
		}
		attr, special := roleAttrs[mb.Role]
		if options.SelectSpecialUse && !special {
			continue
		}
		if hasChildren(name) {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasChildren)
		} else {
			data.Attrs = append(data.Attrs, imap.MailboxAttrHasNoChildren)
		}
		if mb.Subscribed && (options.SelectSubscribed || options.ReturnSubscribed) {
			data.Attrs = append(data.Attrs, imap.MailboxAttrSubscribed)
		}
		// Special-use attributes are always given: clients such as iOS
		// Mail look for them in a plain LIST (RFC 6154 §2 allows it).
		if special {
			data.Attrs = append(data.Attrs, attr)
		}
		if options.ReturnStatus != nil {
			data.Status = sess.statusData(mb, options.ReturnStatus)
		}
		if err := w.WriteList(&data); err != nil {
			return err
		}
	}
	return nil
}

// inboxPattern spells a leading "inbox" of a LIST reference or pattern
// in capitals when it can only mean INBOX or its children.
func inboxPattern(p string) string {
	if len(p) >= 5 && strings.EqualFold(p[:5], "INBOX") && (len(p) == 5 || strings.ContainsAny(p[5:6], store.Separator+"*%")) {
		return "INBOX" + p[5:]
	}
	return p
}

// Status answers STATUS from the mailbox's counts (RFC 9051 §6.3.11,
// STATUS=SIZE RFC 8438, APPENDLIMIT RFC 7889).
func (sess *session) Status(name string, options *imap.StatusOptions) (*imap.StatusData, error) {
	defer sess.enter("STATUS")()
	mb, err := sess.acct.Mailbox(sess.ctx, cleanName(name))
	if err != nil {
		return nil, sess.replyFor(err)
	}
	return sess.statusData(mb, options), nil
}

func (sess *session) statusData(mb store.Mailbox, options *imap.StatusOptions) *imap.StatusData {
	data := &imap.StatusData{Mailbox: mailboxName(mb)}
	num := func(n int64) *uint32 {
		v := uint32(min(max(n, 0), 1<<32-1))
		return &v
	}
	if options.NumMessages {
		data.NumMessages = num(mb.Messages)
	}
	if options.UIDNext {
		data.UIDNext = imap.UID(mb.UIDNext)
	}
	if options.UIDValidity {
		data.UIDValidity = mb.UIDValidity
	}
	if options.NumUnseen {
		data.NumUnseen = num(mb.Unseen)
	}
	if options.NumDeleted {
		data.NumDeleted = num(mb.Deleted)
	}
	if options.Size {
		size := mb.Size
		data.Size = &size
	}
	if options.AppendLimit {
		data.AppendLimit = num(int64(sess.AppendLimit()))
	}
	if options.DeletedStorage {
		size := mb.DeletedSize
		data.DeletedStorage = &size
	}
	if options.NumRecent {
		data.NumRecent = num(0) // \Recent is not kept (RFC 9051 dropped it)
	}
	return data
}

// useRoles maps CREATE-SPECIAL-USE attributes to store roles (RFC 6154 §3).
var useRoles = map[imap.MailboxAttr]string{
	imap.MailboxAttrSent:    store.RoleSent,
	imap.MailboxAttrDrafts:  store.RoleDrafts,
	imap.MailboxAttrTrash:   store.RoleTrash,
	imap.MailboxAttrJunk:    store.RoleJunk,
	imap.MailboxAttrArchive: store.RoleArchive,
}

// roleFor maps a special-use attribute, in any case, to a store role.
func roleFor(attr imap.MailboxAttr) (string, bool) {
	for a, r := range useRoles {
		if strings.EqualFold(string(a), string(attr)) {
			return r, true
		}
	}
	return "", false
}

// Create makes a mailbox and its missing parents, with an optional
// special-use role (CREATE-SPECIAL-USE).
func (sess *session) Create(name string, options *imap.CreateOptions) error {
	defer sess.enter("CREATE")()
	name = cleanName(name)
	role := ""
	if options != nil {
		for _, attr := range options.SpecialUse {
			r, ok := roleFor(attr)
			if !ok || (role != "" && role != r) {
				return &imap.Error{Type: imap.StatusResponseTypeNo, Code: "USEATTR", Text: "Unsupported special-use attribute"}
			}
			role = r
		}
	}
	if _, err := sess.acct.CreateMailbox(sess.ctx, name, role); err != nil {
		return sess.replyFor(err)
	}
	return nil
}

// Delete removes a mailbox with its messages. A mailbox with children is
// refused (RFC 9051 §6.3.5 allows it), as is INBOX.
func (sess *session) Delete(name string) error {
	defer sess.enter("DELETE")()
	err := sess.acct.DeleteMailbox(sess.ctx, cleanName(name))
	switch {
	case errors.Is(err, store.ErrExists):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeHasChildren, Text: "Mailbox has children"}
	case errors.Is(err, store.ErrInvalid):
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: "INBOX cannot be deleted"}
	case err != nil:
		return sess.replyFor(err)
	}
	sess.as.sync()
	return nil
}

// Rename renames a mailbox and its children, keeping UIDVALIDITY.
// Renaming INBOX moves its messages to a new mailbox and leaves INBOX
// empty (RFC 9051 §6.3.6).
func (sess *session) Rename(from, to string, options *imap.RenameOptions) error {
	defer sess.enter("RENAME")()
	from, to = cleanName(from), cleanName(to)
	if strings.EqualFold(from, "INBOX") {
		return sess.renameInbox(to)
	}
	if err := sess.acct.RenameMailbox(sess.ctx, from, to); err != nil {
		return sess.replyFor(err)
	}
	sess.as.sync()
	return nil
}

func (sess *session) renameInbox(to string) error {
	inbox, err := sess.acct.MailboxByRole(sess.ctx, store.RoleInbox)
	if err != nil {
		return sess.replyFor(err)
	}
	dest, err := sess.acct.CreateMailbox(sess.ctx, to, "")
	if err != nil {
		return sess.replyFor(err)
	}
	uids, err := sess.acct.UIDs(sess.ctx, inbox.ID)
	if err != nil {
		return sess.replyFor(err)
	}
	if len(uids) > 0 {
		if _, err := sess.acct.Move(sess.ctx, inbox.ID, dest.ID, uids); err != nil {
			return sess.replyFor(err)
		}
	}
	sess.as.sync()
	return nil
}

// Subscribe and Unsubscribe set a mailbox's subscription.
func (sess *session) Subscribe(name string) error {
	defer sess.enter("SUBSCRIBE")()
	if err := sess.acct.SetSubscribed(sess.ctx, cleanName(name), true); err != nil {
		return sess.replyFor(err)
	}
	return nil
}

func (sess *session) Unsubscribe(name string) error {
	defer sess.enter("UNSUBSCRIBE")()
	if err := sess.acct.SetSubscribed(sess.ctx, cleanName(name), false); err != nil {
		return sess.replyFor(err)
	}
	return nil
}
