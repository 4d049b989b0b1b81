//go:build browser

package browser

import (
	"context"
	"regexp"
	"testing"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/bedside/bedside/internal/app/apptest"
	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/visit"
)

// TestDeviceCheckPermissionDenied: the patient's browser blocks camera and microphone. The
// device check says so and what to do, offers "Try again", and does not let them join;
// once they allow access (here through the DevTools protocol, as the address bar would),
// "Try again" brings the preview back and they can join.
//
// How to deny in headless Chromium 156: --use-fake-ui-for-media-stream=deny denies too, but
// for good (a later grant does not help), so the retry could not be tested. Without the fake
// UI, --deny-permission-prompts answers every prompt with "Block", and
// Browser.setPermission "granted" later works like the person's "Allow".
func TestDeviceCheckPermissionDenied(t *testing.T) {
	srv := apptest.Start(t, apptest.Options{})
	doc := srv.AddUser(t, clinicianEmail, "Dr Rivera", store.RoleClinician, clinicianPassword)
	_, token, err := srv.Visits().Create(context.Background(), visit.NewVisit{ClinicianID: doc.ID, PatientName: "Ada Lovelace"})
	if err != nil {
		t.Fatal(err)
	}
	p := newPage(t, "patient",
		chromedp.Flag("use-fake-ui-for-media-stream", false),
		chromedp.Flag("deny-permission-prompts", true))

	p.navigate(srv.PublicURL() + "/v/" + token)
	p.waitFor("the device check", visible("stage-check"))
	p.waitFor("#device-error and #retry-devices", visible("device-error")+` && `+visible("retry-devices")+
		` && !document.getElementById('retry-devices').disabled`)
	msg := mustEval[string](p, `document.getElementById('device-error').innerText`)
	t.Logf("#device-error: %q", msg)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?i)block|denied|not allowed`), // what went wrong
		regexp.MustCompile(`(?i)address bar`),              // where to fix it
		regexp.MustCompile(`(?i)allow`),                    // what to choose
		regexp.MustCompile(`(?i)try again`),                // what to do then
	} {
		if !want.MatchString(msg) {
			t.Errorf("#device-error does not say %v: %q", want, msg)
		}
	}
	if role := mustEval[string](p, `document.getElementById('device-error').getAttribute('role')`); role != "alert" {
		t.Errorf("#device-error role %q, want alert (read out by screen readers)", role)
	}
	if !mustEval[bool](p, `document.getElementById('join').disabled`) {
		t.Error("#join is enabled with no camera and no microphone")
	}

	// The patient allows camera and microphone, then presses "Try again".
	for _, name := range []string{"camera", "microphone"} {
		_, err := chromedp.CallBrowser(p.ctx, browser.SetPermission, browser.SetPermissionParams{
			Permission: &browser.PermissionDescriptor{Name: name}, Setting: browser.PermissionSettingGranted, Origin: srv.URL(),
		})
		if err != nil {
			t.Fatalf("grant %s: %v", name, err)
		}
	}
	p.click("#retry-devices")
	p.waitFor("the camera preview playing after Try again", `(() => { const v = document.getElementById('preview');
		return !v.paused && v.readyState >= 2 && v.videoWidth > 0; })()`)
	p.waitFor("#device-error and #retry-devices hidden, #join enabled", `!`+visible("device-error")+` && !`+visible("retry-devices")+
		` && !document.getElementById('join').disabled`)
	p.assertNoExceptions()
}
