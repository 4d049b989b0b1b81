package signal

import "testing"

func TestSDPSendsMedia(t *testing.T) {
	for _, tc := range []struct {
		name, sdp string
		want      bool
	}{
		{"recvonly audio and video", "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n", false},
		{"data channel only", "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n", false},
		{"sendrecv video", "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendrecv\r\n", true},
		{"sendonly audio", "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\n", true},
		{"no direction means sendrecv", "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n", true},
		{"session recvonly applies", "v=0\r\na=recvonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", false},
		{"rejected section", "v=0\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\na=sendrecv\r\n", false},
		{"inactive", "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=inactive\r\n", false},
		{"LF only", "v=0\nm=audio 9 UDP/TLS/RTP/SAVPF 111\na=sendrecv\n", true},
	} {
		if got := sdpSendsMedia(tc.sdp); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
