package web

import (
	"encoding/xml"
	"io"
	"net/http"
	"strings"

	"mailbox/store"
)

// Mail client autoconfiguration: Thunderbird's autoconfig
// (config-v1.1.xml, also used by K-9/Thunderbird for Android and
// Evolution) and Outlook's POX autodiscover. Both describe this server's
// IMAP, POP3 and submission ports; neither says whether an account exists.

type acServer struct {
	Type           string `xml:"type,attr"`
	Hostname       string `xml:"hostname"`
	Port           int    `xml:"port"`
	SocketType     string `xml:"socketType"`
	Authentication string `xml:"authentication"`
	Username       string `xml:"username"`
}

type acConfig struct {
	XMLName  xml.Name `xml:"clientConfig"`
	Version  string   `xml:"version,attr"`
	Provider struct {
		ID          string     `xml:"id,attr"`
		Domain      string     `xml:"domain"`
		DisplayName string     `xml:"displayName"`
		Incoming    []acServer `xml:"incomingServer"`
		Outgoing    []acServer `xml:"outgoingServer"`
	} `xml:"emailProvider"`
}

// mailDomain is the domain of an address if it is one of ours, else "".
func (srv *Server) mailDomain(r *http.Request, addr string) string {
	addr = strings.TrimSpace(addr)
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	d, err := store.NormalizeDomain(addr[i+1:])
	if err != nil {
		return ""
	}
	if ok, err := srv.st.IsLocalDomain(r.Context(), d); err != nil || !ok {
		return ""
	}
	return d
}

// autoconfig answers Thunderbird's autoconfig request.
func (srv *Server) autoconfig(w http.ResponseWriter, r *http.Request) {
	domain := srv.mailDomain(r, r.URL.Query().Get("emailaddress"))
	if domain == "" {
		domain = srv.opts.Hostname
	}
	var c acConfig
	c.Version = "1.1"
	c.Provider.ID, c.Provider.Domain, c.Provider.DisplayName = domain, domain, domain+" mail"
	p, h := srv.opts.Ports, srv.opts.Hostname
	add := func(list *[]acServer, typ string, port int, socket string) {
		if port > 0 {
			*list = append(*list, acServer{Type: typ, Hostname: h, Port: port, SocketType: socket,
				Authentication: "password-cleartext", Username: "%EMAILADDRESS%"})
		}
	}
	add(&c.Provider.Incoming, "imap", p.IMAPS, "SSL")
	add(&c.Provider.Incoming, "imap", p.IMAP, "STARTTLS")
	add(&c.Provider.Incoming, "pop3", p.POP3S, "SSL")
	add(&c.Provider.Incoming, "pop3", p.POP3, "STARTTLS")
	add(&c.Provider.Outgoing, "smtp", p.SubmissionTLS, "SSL")
	add(&c.Provider.Outgoing, "smtp", p.Submission, "STARTTLS")
	writeXML(w, c)
}

type adProtocol struct {
	Type         string `xml:"Type"`
	Server       string `xml:"Server"`
	Port         int    `xml:"Port"`
	LoginName    string `xml:"LoginName"`
	SPA          string `xml:"SPA"`
	SSL          string `xml:"SSL"`
	Encryption   string `xml:"Encryption,omitempty"`
	AuthRequired string `xml:"AuthRequired"`
}

type adResponse struct {
	XMLName  xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Autodiscover"`
	Response struct {
		XMLName xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Response"`
		Account struct {
			AccountType string       `xml:"AccountType"`
			Action      string       `xml:"Action"`
			Protocol    []adProtocol `xml:"Protocol"`
		} `xml:"Account"`
	}
}

// maxAutodiscoverBytes caps an autodiscover request body.
const maxAutodiscoverBytes = 16 << 10

// autodiscover answers Outlook's POX autodiscover request.
func (srv *Server) autodiscover(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Request struct {
			EMailAddress string `xml:"EMailAddress"`
		} `xml:"Request"`
	}
	if r.Method == http.MethodPost {
		b, _ := io.ReadAll(io.LimitReader(r.Body, maxAutodiscoverBytes))
		xml.Unmarshal(b, &req) // a bad body just gets the generic answer
	}
	login := ""
	if srv.mailDomain(r, req.Request.EMailAddress) != "" {
		login = strings.TrimSpace(req.Request.EMailAddress)
	}
	var res adResponse
	res.Response.Account.AccountType, res.Response.Account.Action = "email", "settings"
	p, h := srv.opts.Ports, srv.opts.Hostname
	add := func(typ string, port int, tls bool) {
		if port <= 0 {
			return
		}
		pr := adProtocol{Type: typ, Server: h, Port: port, LoginName: login, SPA: "off", SSL: "on", AuthRequired: "on"}
		if !tls {
			pr.Encryption = "TLS" // STARTTLS
		}
		res.Response.Account.Protocol = append(res.Response.Account.Protocol, pr)
	}
	add("IMAP", p.IMAPS, true)
	add("POP3", p.POP3S, true)
	add("SMTP", p.SubmissionTLS, true)
	if p.SubmissionTLS <= 0 {
		add("SMTP", p.Submission, false)
	}
	writeXML(w, res)
}

func writeXML(w http.ResponseWriter, v any) {
	b, err := xml.MarshalIndent(v, "", " ")
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/xml; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	io.WriteString(w, xml.Header)
	w.Write(b)
}
