# pogo — make run (the virtual board in a jmp shell) and make test.
SHELL := /bin/bash
GO ?= go
BIN := build/bin
JMP := $(BIN)/jmp
PROTOC_GEN_GO := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
PROTOS := $(wildcard api/pogo/v1/*.proto)
ACTIONLINT := github.com/rhysd/actionlint/cmd/actionlint@v1.7.7

.PHONY: all build deps preflight assets bundle generate check-generate lint test bench run fresh-check clean

all: build

# jmp with USB support (YKUSH power), which needs cgo and libusb: a build
# without them fails here, saying what to install.
build:
	@command -v gcc >/dev/null && pkg-config --exists libusb-1.0 || \
	  { echo "make build: jmp needs gcc, pkg-config and libusb-1.0-0-dev for USB (YKUSH) support: run make deps" >&2; exit 1; }
	CGO_ENABLED=1 $(GO) build -o $(JMP) ./cmd/jmp
	@$(JMP) version -v | grep -q '^usb: libusb' || { echo "make build: $(JMP) lacks USB support:" >&2; $(JMP) version -v >&2; exit 1; }

deps:
	@bash lab/host/deps.sh

# One line saying what to do when the host lacks something the tests need.
preflight: deps
	@bash lab/host/preflight.sh

# The virtual board: flasher kernel + initramfs and a demo OS disk, from
# Debian arm64 packages. Cached; rebuilt only when its inputs change.
assets: deps
	@bash lab/board/build.sh build/board

# The virtual board's flasher bundle (push it with jmp bundle push).
bundle: assets
	@bash bundles/qemu-arm64/build.sh build/board build/bundle/qemu-arm64

$(BIN)/protoc-gen-go:
	GOBIN=$(abspath $(BIN)) $(GO) install $(PROTOC_GEN_GO)

$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(abspath $(BIN)) $(GO) install $(PROTOC_GEN_GO_GRPC)

$(BIN)/actionlint:
	GOBIN=$(abspath $(BIN)) $(GO) install $(ACTIONLINT)

# Regenerates the committed protobuf code.
generate: $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc
	PATH=$(abspath $(BIN)):$$PATH protoc -I api \
	  --go_out=. --go_opt=module=github.com/pogolab/pogo \
	  --go-grpc_out=. --go-grpc_opt=module=github.com/pogolab/pogo $(PROTOS)

# Fails when the committed generated code does not match the protos.
check-generate: $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc
	@rm -rf build/_gen && mkdir -p build/_gen
	@PATH=$(abspath $(BIN)):$$PATH protoc -I api \
	  --go_out=build/_gen --go_opt=module=github.com/pogolab/pogo \
	  --go-grpc_out=build/_gen --go-grpc_opt=module=github.com/pogolab/pogo $(PROTOS)
	@diff -r build/_gen/api/pogo/v1 api/pogo/v1 -x '*.proto' >/dev/null || \
	  { echo "generated protobuf code is stale: run make generate and commit" >&2; diff -r build/_gen/api/pogo/v1 api/pogo/v1 -x '*.proto' | head -20; exit 1; }

lint: $(BIN)/actionlint
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	  if [ -n "$$out" ]; then echo "gofmt needed: $$out" >&2; exit 1; fi
	$(GO) vet ./...
	$(BIN)/actionlint .github/workflows/*.yml

# Installs what is missing, then runs every test. Ginkgo suites skip the
# hardware and long labels unless given -ginkgo.label-filter (specs/board).
# Packages whose tests boot QEMU run without the race detector (TCG is slow
# enough); every other package runs with it.
QEMU_PKGS := /drivers/qemu$$|/drivers/flasher$$|/specs/boot$$|/specs/flash$$
test: preflight check-generate lint build bundle
	$(GO) test -count=1 -timeout 30m -race $$($(GO) list ./... | grep -Ev '$(QEMU_PKGS)')
	$(GO) test -count=1 -timeout 30m $$($(GO) list ./... | grep -E '$(QEMU_PKGS)')

bench: preflight build bundle
	$(GO) test -run '^$$' -bench . -benchtime 3x ./...

# Opens a jmp shell on exporter.yaml: the virtual board.
run: preflight build bundle
	@bash lab/host/run-qemu.sh $(JMP) exporter.yaml

# Proves the README's set-up on a brand-new Debian 12 root (debootstrap):
# make test, then make run driven by a script. Slow; not part of make test.
fresh-check:
	@bash lab/host/fresh-check.sh

clean:
	rm -rf build
