# waiter's commands. On a fresh Debian 12 machine with Go:
#   make run    the demo daemon on 127.0.0.1:9123 (or systemd's socket)
#   make test   every test; installs what the tests need (apt) first
GO       ?= go
VERSION  ?= $(shell cat VERSION 2>/dev/null || echo 0.1.0)
LDFLAGS  := -s -w -X main.version=$(VERSION)
# A static binary: a worker is this binary re-executed, and a static one
# starts faster (no dynamic loader), which forking mode pays per client.
export CGO_ENABLED := 0

.PHONY: run build test deps unit race fuzz e2e e2e-keep bench soak deb clean

run:
	$(GO) run -trimpath -ldflags '$(LDFLAGS)' ./cmd/waiterd -config packaging/waiterd.yaml

build:
	mkdir -p bin
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/waiterd ./cmd/waiterd

# Everything CI runs, in order: tools, static checks and unit/process tests
# (with -race), then the end-to-end suite under a real systemd.
test: deps unit e2e

deps:
	tests/deps.sh

unit:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 20m ./...

e2e: deb
	tests/e2e/run.sh

# Leaves the container running for a person to explore (see tests/e2e/README).
e2e-keep: deb
	KEEP=1 tests/e2e/run.sh

bench:
	$(GO) run ./cmd/waiter-bench

soak:
	$(GO) test -count=1 -timeout 30m -tags soak -run Soak -v ./pool/

deb:
	packaging/build-deb.sh

clean:
	rm -rf bin dist
