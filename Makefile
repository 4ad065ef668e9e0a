# The commands users type. CMake + Ninja do the building underneath.
#   make run      install what is missing, build, run the main job on the built-in defaults
#   make test     install what is missing, build, run every test
#   make asan     the whole suite under ASan+UBSan (clang, libFuzzer targets included)
#   make tsan     the threaded tests (the NIC's engines, the daemon's threads) under ThreadSanitizer
#   make bench    every sanperf suite: JSON lines on stdout, nothing else (building goes to stderr)
#   make install PREFIX=DIR
#   make format / make format-check

BUILD ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
# The tests whose threads share state in one process: the NIC's engines against the daemon's loop,
# libsan's threads, the machine's allocator and the registration cache's watcher.
TSAN_TESTS ?= test_sock$$|test_sock_epoll|test_sock_connect|test_sock_rdma|test_nic_linger|test_nic|test_nic_stress|test_nic_endpoints|test_daemon_threads|test_phys_mt|test_rcache_daemon|test_memwatch
PREFIX ?= /usr/local
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps build run test asan tsan bench install format format-check clean

all: build

deps:
	@bash scripts/install-deps

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

run: build
	@bash scripts/run $(BUILD)

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

$(ASAN_BUILD)/build.ninja:
	CC=clang cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSAN_SANITIZE=ON -DSAN_FUZZ=ON $(CMAKE_FLAGS)

asan: deps $(ASAN_BUILD)/build.ninja
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS)

$(TSAN_BUILD)/build.ninja:
	CC=clang cmake -S . -B $(TSAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSAN_TSAN=ON $(CMAKE_FLAGS)

tsan: deps $(TSAN_BUILD)/build.ninja
	cmake --build $(TSAN_BUILD) -j $(JOBS)
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:die_after_fork=0 \
		ctest --test-dir $(TSAN_BUILD) --output-on-failure -j $(JOBS) -R '$(TSAN_TESTS)'

bench:
	@$(MAKE) --no-print-directory build >&2
	@$(BUILD)/bin/sanperf all --json

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

FORMAT_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	clang-format -i $(FORMAT_FILES)

format-check:
	clang-format --dry-run -Werror $(FORMAT_FILES)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD)
