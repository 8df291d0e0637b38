package imap

import (
	"slices"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"

	"mailbox/store"
)

// Search answers SEARCH and UID SEARCH, with ESEARCH return options and
// SEARCHRES (RFC 4731, RFC 5182). The criteria are evaluated in the store
// in one SQL query (full-text index for BODY and TEXT); sequence numbers
// and "$" are turned into UIDs here first.
func (sess *session) Search(kind imapserver.NumKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (*imap.SearchData, error) {
	defer sess.enter("SEARCH")()
	c := sess.storeCriteria(criteria)
	found, err := sess.acct.Search(sess.ctx, sess.sel.id, c)
	if err != nil {
		return nil, sess.replyFor(err)
	}
	uids := sess.knownUIDs(found)

	data := &imap.SearchData{Count: uint32(len(uids))}
	var nums []uint32
	switch kind {
	case imapserver.NumKindUID:
		nums = uids
		data.All = uidSet(uids)
	default:
		seqs := sess.seqNums(uids)
		var set imap.SeqSet
		for _, s := range seqs {
			if s != 0 {
				nums = append(nums, s)
			}
		}
		slices.Sort(nums)
		for _, r := range toRanges(nums) {
			set = append(set, imap.SeqRange{Start: r.Start, Stop: r.Stop})
		}
		data.All = set
		data.Count = uint32(len(nums))
	}
	if len(nums) > 0 {
		data.Min, data.Max = nums[0], nums[len(nums)-1]
	}
	if options.ReturnSave {
		// RFC 5182 §2.4: with only MIN and/or MAX, only those are saved.
		saved := uids
		if (options.ReturnMin || options.ReturnMax) && !options.ReturnAll && !options.ReturnCount && len(uids) > 0 {
			saved = nil
			if options.ReturnMin {
				saved = append(saved, uids[0])
			}
			if options.ReturnMax && (len(saved) == 0 || uids[len(uids)-1] != saved[0]) {
				saved = append(saved, uids[len(uids)-1])
			}
		}
		sess.searchRes = slices.Clone(saved)
	}
	return data, nil
}

// storeCriteria converts library criteria to the store's, resolving
// sequence sets and "$" against this session's view.
func (sess *session) storeCriteria(in *imap.SearchCriteria) store.SearchCriteria {
	out := store.SearchCriteria{
		Since:      localDay(in.Since),
		Before:     localDay(in.Before),
		SentSince:  in.SentSince,
		SentBefore: in.SentBefore,
		Larger:     in.Larger,
		Smaller:    in.Smaller,
		Flags:      storeFlags(in.Flag),
		NotFlags:   storeFlags(in.NotFlag),
		Body:       in.Body,
		Text:       in.Text,
	}
	for _, set := range in.SeqNum {
		out.UIDs = append(out.UIDs, toRanges(sess.resolve(set)))
	}
	for _, set := range in.UID {
		if imap.IsSearchRes(set) {
			out.UIDs = append(out.UIDs, toRanges(sess.searchRes))
			continue
		}
		var s store.UIDSet
		for _, r := range set {
			s = append(s, store.UIDRange{Start: uint32(r.Start), Stop: uint32(r.Stop)})
		}
		out.UIDs = append(out.UIDs, s)
	}
	for _, h := range in.Header {
		out.Header = append(out.Header, store.HeaderMatch{Key: h.Key, Value: h.Value})
	}
	for i := range in.Not {
		out.Not = append(out.Not, sess.storeCriteria(&in.Not[i]))
	}
	for i := range in.Or {
		out.Or = append(out.Or, [2]store.SearchCriteria{
			sess.storeCriteria(&in.Or[i][0]),
			sess.storeCriteria(&in.Or[i][1]),
		})
	}
	return out
}

// localDay moves a SEARCH date (parsed as midnight UTC) to the same day
// in the server's time zone, which INTERNALDATE comparisons use (RFC
// 9051 §6.4.4).
func localDay(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.Local)
}
