# Thin wrapper: the build is CMake's, the tests are ctest's.
#   make        build everything into build/ (executables in build/bin)
#   make test   install missing Debian packages, build, run the whole suite
#   make demo   install, build, and run the demo (root: containerd, FUSE)
#   make demo-cli  the CLI-only demo (no root, no daemons)
#   make deb    build lazycrypt_<version>_amd64.deb into $(BUILD)/deb with dpkg-buildpackage (a full
#               build of the shipped binaries in a staged copy; DEB_FROM_BUILD=1 packages the
#               existing $(BUILD) instead, compiling nothing)
#   make bench  run the benchmarks (results in docs/BENCHMARKS.md)
#   make bench-coldstart  the cold-start benchmark (root; section 7 of docs/BENCHMARKS.md)
#   make bench-smallfiles  many small files through overlayfs (root; section 9 of docs/BENCHMARKS.md)
#   make bench-memory  snapshotter RSS, 20 mounted 1 GiB layers read (root; section 10 of docs/BENCHMARKS.md)
#   make fuzz-long  every fuzz target for FUZZ_SECONDS (default 600) each, FUZZ_JOBS processes
#                   (default: one per core); prints executions and crashes per target (not in CI)
BUILD      ?= build
FUZZ_BUILD ?= $(BUILD)/fuzz
JOBS       ?= $(shell nproc)
CTEST_ARGS ?=
FUZZ_SECONDS ?= 600
FUZZ_JOBS  ?= $(JOBS)

.PHONY: all build setup fuzz fuzz-long test demo demo-cli bench bench-coldstart bench-smallfiles bench-memory deb clean

all: build

setup:
	@bash scripts/setup.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DLAZYCRYPT_FUZZ_BIN_DIR=$(abspath $(FUZZ_BUILD))/bin

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

$(FUZZ_BUILD)/CMakeCache.txt:
	cmake -S . -B $(FUZZ_BUILD) -DLAZYCRYPT_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++

fuzz: $(FUZZ_BUILD)/CMakeCache.txt
	cmake --build $(FUZZ_BUILD) -j $(JOBS)

fuzz-long: fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) bash scripts/fuzz_long.sh $(FUZZ_BUILD)

test: setup
	$(MAKE) build fuzz
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

demo: setup
	$(MAKE) build
	bash scripts/demo.sh $(BUILD)

demo-cli: setup
	$(MAKE) build
	bash scripts/demo-cli.sh $(BUILD)

bench: setup
	$(MAKE) build
	bash bench/run.sh $(BUILD)

bench-coldstart: setup
	$(MAKE) build
	CS_PATHS="$${CS_PATHS:-lazy lazy-prefetch stargz stargz-optimized imgcrypt plain decoder}" \
	  CS_NETS="$${CS_NETS:-loopback shaped shaped-50}" \
	  CS_DOC=docs/BENCHMARKS.md CS_PLOT=docs/coldstart.png bash bench/coldstart/run.sh $(BUILD)

bench-smallfiles: setup
	$(MAKE) build
	bash bench/smallfiles/run.sh $(BUILD)

bench-memory: setup
	$(MAKE) build
	bash bench/memory/run.sh $(BUILD)

deb: setup
	bash scripts/build-deb.sh $(BUILD)/deb $(if $(DEB_FROM_BUILD),$(BUILD))

clean:
	rm -rf $(BUILD)
