package web

import (
	"html/template"
	"io/fs"
	"net/http"
)

func (s *Server) home(w http.ResponseWriter, r *http.Request, _ *caller) {
	http.Redirect(w, r, "/console", http.StatusSeeOther)
}

// page serves one HTML file of the browser client.
func (s *Server) page(name string) func(http.ResponseWriter, *http.Request, *caller) {
	return func(w http.ResponseWriter, r *http.Request, _ *caller) {
		s.servePage(w, r, name)
	}
}

func (s *Server) servePage(w http.ResponseWriter, r *http.Request, name string) {
	body, err := fs.ReadFile(s.files, name)
	if err != nil {
		s.log.Error("page missing from the build", "page", name, "err", err)
		s.errorPage(w, http.StatusInternalServerError, "Something went wrong", "This page is missing. Please tell your clinic.")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(body)
}

// patientPage serves the patient page for a working link, and a clear page saying what to
// do for one that does not work.
func (s *Server) patientPage(w http.ResponseWriter, r *http.Request, _ *caller) {
	err := s.linkGuard(r, r.PathValue("token"))
	if err == nil {
		if _, err = s.cfg.Visits.ResolveLink(r.Context(), r.PathValue("token")); err != nil {
			s.linkFailed(r, err)
		}
	}
	if err != nil {
		ae := httpError(err)
		if ae.status == http.StatusTooManyRequests {
			s.errorPage(w, ae.status, "Too many attempts", "Too many visit links that do not work were tried from here. Wait a quarter of an hour, then open your link again.")
			return
		}
		if ae.status >= 500 {
			s.log.Error("patient page", "err", err)
		}
		title := map[string]string{
			"link_unknown": "This link does not work",
			"link_expired": "This link has expired",
			"link_revoked": "This link was withdrawn",
			"visit_ended":  "This visit has ended",
		}[ae.code]
		if title == "" {
			title = "Something went wrong"
		}
		s.errorPage(w, ae.status, title, ae.message)
		return
	}
	s.servePage(w, r, "patient.html")
}

func (s *Server) static(w http.ResponseWriter, r *http.Request, _ *caller) {
	w.Header().Set("Cache-Control", "no-cache")
	s.static_.ServeHTTP(w, r)
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	if len(r.URL.Path) >= 5 && r.URL.Path[:5] == "/api/" {
		s.fail(w, r, errNotFound)
		return
	}
	s.errorPage(w, http.StatusNotFound, "Page not found", "There is no page at this address.")
}

var errorTemplate = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} - Bedside</title>
<link rel="stylesheet" href="/static/css/bedside.css">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
</head>
<body>
<main class="message-page">
<h1>{{.Title}}</h1>
<p id="error-message">{{.Message}}</p>
</main>
</body>
</html>
`))

// errorPage writes a plain HTML page with a title and a message: never a stack trace.
func (s *Server) errorPage(w http.ResponseWriter, status int, title, message string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	errorTemplate.Execute(w, struct{ Title, Message string }{title, message})
}
