package store

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// TestDecodeEnvelope checks the reflection-free decoder against
// encoding/json on what json.Marshal writes and on hand-written JSON.
func TestDecodeEnvelope(t *testing.T) {
	zone := time.FixedZone("", -7*3600-30*60)
	envs := []Envelope{
		{},
		{
			Date:      time.Date(2026, 11, 22, 7, 28, 42, 0, time.UTC),
			Subject:   "mailbench message 00849134f975-6",
			From:      []Address{{Name: "Mailbench", Mailbox: "mailbench", Host: "mailbench.invalid"}},
			To:        []Address{{Mailbox: "dl", Host: "bench.test"}},
			MessageID: "00849134f975-6@mailbench.invalid",
		},
		{
			Date:      time.Date(1999, 1, 2, 3, 4, 5, 600, zone),
			Subject:   "Re: <tags> & \"quotes\" \\ back\tslash\nnew line – ünïcödé 😀 \u2028",
			From:      []Address{{Name: "Ölaf \"the\" <Viking>", Mailbox: "o", Host: "x.test"}, {Mailbox: "undisclosed"}},
			Sender:    []Address{},
			ReplyTo:   []Address{{Name: "a,b", Mailbox: "r", Host: "y.test"}},
			Cc:        []Address{{Mailbox: "c1", Host: "c.test"}, {Mailbox: "c2", Host: "c.test"}},
			Bcc:       []Address{{Name: "\x01ctl", Mailbox: "b", Host: "b.test"}},
			InReplyTo: []string{"a@b", "c@d<>"},
			MessageID: "id&<>@x",
		},
		{InReplyTo: []string{}},
	}
	for i, e := range envs {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		var want, got Envelope
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		d := jsonReader{b: b}
		if !d.envelope(&got) || !d.end() {
			t.Errorf("%d: fast path refused %s", i, b)
		}
		if !reflect.DeepEqual(got, want) || !got.Date.Equal(want.Date) {
			t.Errorf("%d: got %+v\nwant %+v", i, got, want)
		}
	}
	// Shapes json.Marshal does not write: decoded all the same, by the
	// fallback where needed.
	for _, in := range []string{
		` { "Subject" : "a" , "To" : [ { "Host" : "h" , "Mailbox":"m" } ] , "Unknown": 1 } `,
		`{"subject":"lower-case key"}`,
		`{"From":[null],"Date":null,"Subject":null}`,
		`{"To":[{"Name":"x"}],"To":null}`,
		`{"Subject":"\u00e9\ud83d\ude00"}`,
	} {
		var want, got Envelope
		wantErr := json.Unmarshal([]byte(in), &want)
		gotErr := decodeEnvelope([]byte(in), &got)
		if (wantErr == nil) != (gotErr == nil) || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %+v, %v; want %+v, %v", in, got, gotErr, want, wantErr)
		}
	}
	for _, in := range []string{``, `{`, `{"Subject":"a"`, `{"Subject":1}`, `[]`, `{"To":[{"Name":"x"]}`} {
		var got Envelope
		if err := decodeEnvelope([]byte(in), &got); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

func BenchmarkDecodeEnvelope(b *testing.B) {
	js, _ := json.Marshal(Envelope{
		Date:      time.Now(),
		Subject:   "mailbench message 00849134f975-6",
		From:      []Address{{Name: "Mailbench", Mailbox: "mailbench", Host: "mailbench.invalid"}},
		To:        []Address{{Mailbox: "dl", Host: "bench.test"}},
		MessageID: "00849134f975-6@mailbench.invalid",
	})
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			var e Envelope
			if err := decodeEnvelope(js, &e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			var e Envelope
			if err := json.Unmarshal(js, &e); err != nil {
				b.Fatal(err)
			}
		}
	})
}
