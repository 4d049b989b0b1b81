package sfu

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/selfsign"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
)

// TestDirectKeysMatchDTLS: the keying material the direct send path derives from what the
// handshake shows it (key log, ServerHello) is what the DTLS connection itself exports,
// for a suite of each PRF hash; and a connection where the SFU was the DTLS client gives
// the direct path nothing to go on.
func TestDirectKeysMatchDTLS(t *testing.T) {
	for _, suite := range []dtls.CipherSuiteID{
		dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	} {
		t.Run(dtls.CipherSuiteName(suite), func(t *testing.T) {
			tx := &directTx{}
			tx.cryptex.set("v=0\r\n") // a negotiation without cryptex seen, as onSubAnswer does
			server, _ := handshakeDTLS(t, suite, &tx.keys, true)
			state, ok := server.ConnectionState()
			if !ok {
				t.Fatal("no connection state")
			}
			want, err := state.ExportKeyingMaterial("EXTRACTOR-dtls_srtp", nil, 60)
			if err != nil {
				t.Fatal(err)
			}
			k := &tx.keys
			k.mu.Lock()
			e := exporter{master: k.masterSecret, clientRandom: k.clientRandom, serverRandom: k.serverRandom, hash: prfHash(k.suite)}
			profile := k.profile
			k.mu.Unlock()
			if e.hash == nil || profile == 0 {
				t.Fatalf("suite %#x profile %v: not recognised", k.suite, profile)
			}
			got, err := e.ExportKeyingMaterial("EXTRACTOR-dtls_srtp", nil, 60)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("derived keying material differs from the connection's")
			}
			if _, err := tx.makeContext(); err != nil {
				t.Fatalf("makeContext: %v", err)
			}
		})
	}
	t.Run("client", func(t *testing.T) {
		tx := &directTx{}
		tx.cryptex.set("v=0\r\n")
		handshakeDTLS(t, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, &tx.keys, false)
		if _, err := tx.makeContext(); err == nil {
			t.Fatal("a context made where the SFU was the DTLS client")
		}
	})
}

// handshakeDTLS connects a DTLS client and server on loopback with one cipher suite and
// the SRTP extension; k gets the hooks of the server (asServer) or of the client.
func handshakeDTLS(t *testing.T, suite dtls.CipherSuiteID, k *dtlsSecrets, asServer bool) (server, client *dtls.Conn) {
	t.Helper()
	cert, err := selfsign.GenerateSelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	base := func() *dtls.Config {
		return &dtls.Config{
			Certificates:           []tls.Certificate{cert},
			CipherSuites:           []dtls.CipherSuiteID{suite},
			SRTPProtectionProfiles: []dtls.SRTPProtectionProfile{dtls.SRTP_AEAD_AES_128_GCM},
			InsecureSkipVerify:     true,
			ExtendedMasterSecret:   dtls.RequireExtendedMasterSecret,
		}
	}
	sc, cc := base(), base()
	hooked := cc
	if asServer {
		hooked = sc
	}
	hooked.KeyLogWriter = keyLog{k}
	hooked.ServerHelloMessageHook = func(m handshake.MessageServerHello) handshake.Message {
		k.onServerHello(&m)
		return &m
	}
	sp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	server, err = dtls.Server(sp, cp.LocalAddr(), sc)
	if err != nil {
		t.Fatal(err)
	}
	client, err = dtls.Client(cp, sp.LocalAddr(), cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close(); sp.Close(); cp.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- server.HandshakeContext(ctx) }()
	if err := client.HandshakeContext(ctx); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	return server, client
}

// TestSDPCryptex: the direct paths read RFC 9335 header extension encryption from the
// descriptions pion makes, as pion does: a=cryptex where the policy negotiates it (pion's
// default, which the SFU keeps), none where it is disabled.
func TestSDPCryptex(t *testing.T) {
	for _, c := range []struct {
		policy webrtc.RTPHeaderEncryptionPolicy
		want   srtp.CryptexMode
	}{
		{webrtc.RTPHeaderEncryptionPolicyNegotiate, srtp.CryptexModeEnabled},
		{webrtc.RTPHeaderEncryptionPolicyDisable, srtp.CryptexModeDisabled},
	} {
		pc, err := webrtc.NewPeerConnection(webrtc.Configuration{RTPHeaderEncryptionPolicy: c.policy})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo); err != nil {
			t.Fatal(err)
		}
		if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio); err != nil {
			t.Fatal(err)
		}
		offer, err := pc.CreateOffer(nil)
		pc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := sdpCryptex(offer.SDP); got != c.want {
			t.Errorf("policy %v: cryptex mode %v, want %v", c.policy, got, c.want)
		}
		var m cryptexMode
		if _, err := m.options(); err == nil {
			t.Error("options before any negotiation: no error")
		}
		m.set(offer.SDP)
		m.set("v=0\r\n") // a later negotiation is not followed
		if opts, err := m.options(); err != nil || (len(opts) > 0) != (c.want != srtp.CryptexModeDisabled) {
			t.Errorf("policy %v: options %d, %v", c.policy, len(opts), err)
		}
	}
}
