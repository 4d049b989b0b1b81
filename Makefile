# Bedside. `make test` is the whole test suite (what CI runs); `make serve` runs the server.
GO ?= go
export CGO_ENABLED ?= 0

.PHONY: all build serve test deps check-js vet unit browser netns bench bench-latency bench-e2ee bench-turn bench-sfu bench-narrow fuzz clean

all: build

build:
	$(GO) build -o bedside ./cmd/bedside

serve:
	$(GO) run ./cmd/bedside serve

# Everything: static checks, unit and in-process end-to-end tests with the race detector,
# then the real-browser tests, then the network-namespace tests (root). Installs Chromium,
# coturn's client tools, iproute2, nftables and TypeScript first when missing.
test: deps vet check-js unit browser netns

deps:
	./scripts/test-deps.sh

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './node_modules/*')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags browser ./test/browser/...
	$(GO) vet -tags browser,netns ./test/browser/...

check-js:
	./node_modules/.bin/tsc -p tsconfig.json

# -race needs cgo. The SFU churn test makes 30 join/leave cycles under the race detector;
# it runs again without it for the full 200 (goroutines and heap back where they were).
unit:
	CGO_ENABLED=1 $(GO) test -race -count=1 ./...
	$(GO) test -count=1 -run '^TestSFUChurn$$' ./internal/app

browser:
	$(GO) test -tags browser -count=1 -timeout 15m ./test/browser/...

# Two real browsers on hosts that cannot reach each other (network namespaces; needs root):
# the relay, TURN off, UDP blocked, revocation. They make and remove their own namespaces.
netns:
	$(GO) test -tags browser,netns -count=1 -timeout 15m -run Netns ./test/browser/...

bench:
	$(GO) test -tags browser -run '^$$' -bench AdmitToFirstFrame -benchtime 20x ./test/browser

# Video latency in a visit, capture to presentation, peer to peer and through the SFU.
bench-latency:
	$(GO) test -tags browser -run '^$$' -bench CaptureToPresentation -benchtime 3x -v ./test/browser

# What the end-to-end encryption costs per frame in Chromium (docs/benchmarks.md).
bench-e2ee:
	$(GO) test -tags browser -run '^$$' -bench SFrame -benchtime 2000x ./test/browser

# What a patient hears and sees through the SFU while the link to it is narrowed to 100, 300
# and 800 kbit/s for a minute, then freed (network namespaces, root; docs/benchmarks.md).
bench-narrow:
	$(GO) test -tags browser,netns -run '^$$' -bench NetnsNarrowLink -benchtime 1x -timeout 30m -v ./test/browser

# Bedside's TURN relay against coturn, side by side (docs/benchmarks.md).
bench-turn:
	./scripts/bench-turn.sh

# The SFU under load against a bare UDP relay, side by side (docs/benchmarks.md).
bench-sfu:
	./scripts/bench-sfu.sh

clean:
	rm -rf bedside test/browser/artifacts
