package signal

import "strings"

// sdpSendsMedia reports whether a session description offers or accepts to send audio or
// video: an audio or video section with a non-zero port whose direction is sendrecv or
// sendonly (or missing, which means the session's direction, sendrecv by default). It reads
// only the m= and direction lines; an observer's descriptions must have none such.
func sdpSendsMedia(sdp string) bool {
	session, inSession := "", true
	inMedia, dir := false, ""
	sends := func() bool {
		d := dir
		if d == "" {
			d = session
		}
		return inMedia && (d == "" || d == "sendrecv" || d == "sendonly")
	}
	for line := range strings.Lines(sdp) {
		line = strings.TrimRight(line, "\r\n")
		switch {
		case strings.HasPrefix(line, "m="):
			if sends() {
				return true
			}
			inSession = false
			f := strings.Fields(line[2:])
			inMedia = len(f) >= 2 && (f[0] == "audio" || f[0] == "video") && f[1] != "0"
			dir = ""
		case line == "a=sendrecv", line == "a=sendonly", line == "a=recvonly", line == "a=inactive":
			if inSession {
				session = line[2:]
			} else {
				dir = line[2:]
			}
		}
	}
	return sends()
}
