// Package webui holds the browser client: plain ES modules, HTML and CSS under static/,
// embedded in the binary so that a clinic runs one file. See docs/ui.md.
package webui

import "embed"

// Static is the static/ tree: pages, scripts and styles.
//
//go:embed static
var Static embed.FS
