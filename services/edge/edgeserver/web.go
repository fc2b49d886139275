package edgeserver

import (
	"embed"
	"io/fs"
	"net/http"
)

// web holds the chat page (index.html, app.js, style.css) and the client library (client.js),
// served as they are: no build step, nothing from a CDN.
//
//go:embed web
var web embed.FS

// webHandler serves the page and the library, with a content security policy that allows
// only this origin's scripts, styles and sockets.
func webHandler() http.Handler {
	sub, _ := fs.Sub(web, "web") // "web" is embedded above, so it exists
	files := http.FileServer(http.FS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
