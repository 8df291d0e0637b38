package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// Message shape. RFC 5322 §2.1.1 asks for lines of at most 78 characters
// before CRLF; we stay well inside it so no server has a reason to rewrite.
const (
	maxBodyLineChars = 72   // body line length before CRLF
	corpusLines      = 4096 // lines in the shared body corpus (~300 KiB)
	messageIDDomain  = "mailbench.invalid"

	// defaultRareWord opens the body of every defaultRareEvery-th message
	// (sequence numbers 0, N, 2N, ...) and of no other: it is not in the
	// vocabulary below, so a body search for it ("imap -op search") has a
	// known, small answer (10 of 10,000 messages).
	defaultRareWord  = "zanzibar"
	defaultRareEvery = 1000
)

// words is the vocabulary of generated bodies: plain lower-case ASCII so the
// body is 7bit text that no server needs to re-encode.
var words = strings.Fields(`the of and to in is was for on that with as by
at from this be are have not or an but which one all were when there can
been has their more if will would about out up what into its time only new
some could these two may first then do any like other such than over very
after also most made many before must through back years where much your way
well down should because each just those people mr how too little state good
world still own see men work long here get both between life being under
never day same another know while last might great old year off come since
against go came right used take three states himself few house use during
without again place around however home small found thought went say part
once general high upon school every does got united left number course war
until always away something fact though water less public put think almost
hand enough far took head yet government system better set told nothing night
end why called didn't eyes find going look asked later knew point next city
business give group toward young let room president side social given present
several order national possible rather second face per among form important
often things looking early white case john become large big need four within
felt along children saw best church ever least power development light thing
seemed family interest want members mind country area others done turned
although open god service certain kind problem began different door thus help
sense means whole matter perhaps itself york times law human line above name
example action company hands local show five history whether gave either act
feet across today past taken quite anything having seen death experience body
word half really week field car words already information themselves tell
together college shall money period held keep sure probably free seems real
behind cannot miss political air question making office brought whose special
major heard problems ago became federal moment study available known result
street economic boy reason change position south board individual job areas
society west close turn love community true court force full seem wife age`)

// corpus is a block of body lines shared by every message of a run. Each
// message copies whole lines from its own starting offset, so bodies differ
// between messages while generation stays a memory copy (the tool must not
// eat the CPU the server under test needs).
type corpus struct {
	text   []byte // lines, each ending in CRLF
	starts []int  // byte offset of each line in text
}

// newCorpus builds corpusLines lines of words, each at most maxBodyLineChars
// long, deterministically from seed.
func newCorpus(seed uint64) *corpus {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	c := &corpus{}
	var line []byte
	for range corpusLines {
		line = line[:0]
		target := 40 + rng.IntN(maxBodyLineChars-40) // leaves room for a '.'
		for {
			w := words[rng.IntN(len(words))]
			need := len(w)
			if len(line) > 0 {
				need++
			}
			if len(line)+need > target {
				break
			}
			if len(line) > 0 {
				line = append(line, ' ')
			}
			line = append(line, w...)
		}
		if rng.IntN(9) == 0 {
			line = append(line, '.')
		}
		c.starts = append(c.starts, len(c.text))
		c.text = append(c.text, line...)
		c.text = append(c.text, '\r', '\n')
	}
	return c
}

// line returns line i (modulo the corpus length) including its CRLF.
func (c *corpus) line(i int) []byte {
	i %= len(c.starts)
	end := len(c.text)
	if i+1 < len(c.starts) {
		end = c.starts[i+1]
	}
	return c.text[c.starts[i]:end]
}

// messageSpec says what every message of a run looks like.
type messageSpec struct {
	From  string   // header and envelope sender
	To    []string // header recipients
	Size  int      // exact message size in bytes, CRLF line ends
	RunID string   // unique per run; part of every Message-ID and Subject
	// RareWord, when not empty, is the first body line of every message
	// whose sequence number is a multiple of RareEvery (> 0).
	RareWord  string
	RareEvery int
}

// hasRare reports whether message seq opens its body with the rare word.
func (s messageSpec) hasRare(seq int) bool {
	return s.RareWord != "" && s.RareEvery > 0 && seq%s.RareEvery == 0
}

// generator writes messages of one run. It is not safe for concurrent use;
// give each worker its own (they may share the corpus, which is read-only).
type generator struct {
	spec   messageSpec
	corpus *corpus
	buf    bytes.Buffer
}

func newGenerator(spec messageSpec, c *corpus) *generator {
	return &generator{spec: spec, corpus: c}
}

// header writes the header block of message seq, ending with the empty line.
func (g *generator) header(seq int, date time.Time) {
	b := &g.buf
	token := g.spec.RunID + "-" + strconv.Itoa(seq)
	fmt.Fprintf(b, "From: Mailbench <%s>\r\n", g.spec.From)
	b.WriteString("To: ")
	for i, to := range g.spec.To {
		if i > 0 {
			// RFC 5322 §2.2.3 folding keeps each address on its own line.
			b.WriteString(",\r\n ")
		}
		fmt.Fprintf(b, "<%s>", to)
	}
	b.WriteString("\r\n")
	fmt.Fprintf(b, "Subject: mailbench message %s\r\n", token)
	fmt.Fprintf(b, "Date: %s\r\n", date.Format(time.RFC1123Z))
	fmt.Fprintf(b, "Message-ID: <%s@%s>\r\n", token, messageIDDomain)
	b.WriteString("MIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: text/plain; charset=us-ascii\r\n")
	b.WriteString("Content-Transfer-Encoding: 7bit\r\n")
	fmt.Fprintf(b, "X-Mailbench: run=%s seq=%d size=%d\r\n", g.spec.RunID, seq, g.spec.Size)
	b.WriteString("\r\n")
}

// minSize is the smallest Size the spec allows: the headers of the largest
// sequence number plus one short body line.
func (g *generator) minSize(maxSeq int) int {
	g.buf.Reset()
	g.header(maxSeq, time.Date(2000, 12, 31, 23, 59, 59, 0, time.FixedZone("", -12*3600)))
	return g.buf.Len() + 2
}

// message returns message seq: exactly spec.Size bytes, CRLF line ends, no
// line longer than 78 characters, a unique Message-ID and Subject token. The
// returned slice is valid until the next call.
func (g *generator) message(seq int, date time.Time) ([]byte, error) {
	g.buf.Reset()
	g.header(seq, date)
	rem := g.spec.Size - g.buf.Len()
	if rem < 2 {
		return nil, fmt.Errorf("size %d is below the %d bytes the headers need", g.spec.Size, g.buf.Len()+2)
	}
	// Start each message at its own line of the corpus. Whole lines are
	// copied while more than two full lines remain, so the tail (2 to 148
	// bytes) can always be cut into one or two lines of legal length.
	line := int(uint64(seq) * 2654435761 % uint64(len(g.corpus.starts)))
	// The rare word takes a line of its own when it leaves room for at
	// least one more (a message of the minimum size goes without it).
	if g.spec.hasRare(seq) && rem >= len(g.spec.RareWord)+4 {
		g.buf.WriteString(g.spec.RareWord)
		g.buf.WriteString("\r\n")
		rem -= len(g.spec.RareWord) + 2
	}
	const fullLine = maxBodyLineChars + 2
	for rem > 2*fullLine {
		l := g.corpus.line(line)
		line++
		g.buf.Write(l)
		rem -= len(l)
	}
	if rem > fullLine {
		half := rem / 2
		g.fillLine(g.corpus.line(line), half-2)
		line++
		rem -= half
	}
	g.fillLine(g.corpus.line(line), rem-2)
	return g.buf.Bytes(), nil
}

// fillLine writes a body line of exactly n characters (0 <= n <=
// maxBodyLineChars) cut from the words of src, then CRLF.
func (g *generator) fillLine(src []byte, n int) {
	text := src[:len(src)-2]
	start := g.buf.Len()
	for g.buf.Len()-start < n {
		left := n - (g.buf.Len() - start)
		if g.buf.Len() > start {
			g.buf.WriteByte(' ')
			left--
		}
		g.buf.Write(text[:min(len(text), left)])
	}
	if out := g.buf.Bytes(); n > 0 && out[len(out)-1] == ' ' {
		out[len(out)-1] = '.' // no trailing white space
	}
	g.buf.WriteString("\r\n")
}
