package signal

import (
	"testing"

	"go.uber.org/goleak"
)

// Every actor, reader and pinger goroutine must have ended when the tests are done.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
