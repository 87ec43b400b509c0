#!/usr/bin/env bash
# Builds fastrnn's extension with AddressSanitizer + UndefinedBehaviorSanitizer into a venv
# of its own and runs the kernel tests under the sanitizers. Exits non-zero on any
# sanitizer report (and on any test failure).
#
#   bash .ci/sanitize.sh            # build (incremental) + run
#
# Environment:
#   FASTRNN_SANITIZE_VENV       venv to build into (default .venv-sanitize)
#   FASTRNN_SANITIZE_BUILD_DIR  CMake build directory (default build/sanitize; kept between
#                               runs, so a second run only recompiles what changed)
#   FASTRNN_SANITIZE_PYTEST     extra pytest arguments (e.g. "-x")
#   CXX                         compiler (default g++; its own libasan is preloaded)
#   FASTRNN_FUZZ_*              passed on to tests/test_fuzz.py (e.g. FASTRNN_FUZZ_EXAMPLES=1000)
#
# Runs: tests/test_parity.py without its hypothesis test, tests/test_api_errors.py,
# tests/test_fuzz.py, tests/test_training_kernels.py, tests/test_token_ids.py and
# tests/test_language_model.py and tests/test_train_step.py. On the
# 2-vCPU development machine: about 1 min to build from scratch (venv included), then
# about 20 s of tests; an incremental rebuild takes seconds.
#
# How it works:
# * CMakeLists.txt's option FASTRNN_SANITIZE (set from the environment variable of the same
#   name through pyproject's [tool.scikit-build.cmake.define]) adds
#   -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined to
#   every target of _core. This script checks that the flags really reached the compile
#   commands and that the built module links the ASan runtime.
# * CPython is not built with ASan, so the ASan runtime must be the first library loaded:
#   LD_PRELOAD=$(g++ -print-file-name=libasan.so), with libstdc++ right after it (see below).
#   libubsan comes in as a dependency.
# * ASAN_OPTIONS=detect_leaks=0: CPython deliberately never frees a great deal at exit
#   (interned strings, static types, module state, arenas), so LeakSanitizer would report
#   thousands of "leaks" that are not fastrnn's. Memory growth across calls is checked
#   by tests/test_memory.py instead.
#   allocator_may_return_null=1: ASan's malloc refuses requests above 1 TiB; by default it
#   aborts the process, but tests/test_fuzz.py asks for absurd sizes on purpose and expects
#   a MemoryError, which is what a NULL return becomes.
#   handle_segv=1:allow_user_segv_handler=0 keep ASan's own SIGSEGV report (pytest's
#   faulthandler is disabled as well).
# * UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1: the first undefined behaviour aborts
#   (the objects are compiled with -fno-sanitize-recover=undefined as well).
# * pytest runs with --capture=sys: its default capture of file descriptor 2 would swallow
#   a report written just before the process ends. ASan's reports also go to files
#   (log_path, child processes included). The output and those files are scanned for a
#   report, so one from a child process (the absurd-size tests run in subprocesses) fails
#   the script too, whatever the tests concluded.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

VENV=${FASTRNN_SANITIZE_VENV:-$ROOT/.venv-sanitize}
BUILD_DIR=${FASTRNN_SANITIZE_BUILD_DIR:-build/sanitize}
export CXX=${CXX:-g++}
PYTHON=${PYTHON:-python3}
LOG=$(mktemp -t fastrnn-sanitize.XXXXXX.log)
T0=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - T0 ))s] $*"; }
# pip, quiet, without the warnings about configured local index folders that do not exist.
pipq() {
    "$VENV/bin/python" -m pip --quiet "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
    return "${PIPESTATUS[0]}"
}

# ---------------------------------------------------------------- sanitizer runtime
asan_path() { "$CXX" -print-file-name=libasan.so; }
have_runtime() {
    local p
    p=$(asan_path)
    # -print-file-name prints the bare name when the library is not found.
    [[ "$p" == /* && -e "$(readlink -f "$p")" ]] &&
        [[ "$("$CXX" -print-file-name=libubsan.so)" == /* ]]
}
if ! have_runtime; then
    major=$("$CXX" -dumpversion | cut -d. -f1)
    case "$major" in
        12) pkgs="libasan8 libubsan1" ;;
        *) pkgs="libgcc-$major-dev" ;;  # brings the libasan/libubsan matching this gcc
    esac
    stamp "installing the sanitizer runtime for $CXX $major: $pkgs"
    command -v apt-get >/dev/null || { echo "no sanitizer runtime and no apt-get" >&2; exit 2; }
    apt-get install -y --no-install-recommends $pkgs >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y --no-install-recommends $pkgs >/dev/null; }
    have_runtime || { echo "sanitizer runtime still missing after installing $pkgs" >&2; exit 2; }
fi
ASAN_LIB=$(readlink -f "$(asan_path)")
# libstdc++ is preloaded right after libasan: otherwise it is first loaded with the
# extension (dlopen), after ASan has set up its interceptors, and the first C++ exception
# (every rejected argument is one) aborts with "CHECK failed: ... real___cxa_throw != 0".
STDCXX_LIB=$(readlink -f "$("$CXX" -print-file-name=libstdc++.so)")
PRELOAD="$ASAN_LIB $STDCXX_LIB"
stamp "sanitizer runtime: $PRELOAD"

# ---------------------------------------------------------------- venv and build
if [[ ! -x "$VENV/bin/python" ]]; then
    stamp "creating $VENV"
    "$PYTHON" -m venv "$VENV"
    pipq install --upgrade pip
fi
stamp "build requirements and test tools"
pipq install "scikit-build-core>=0.10" "pybind11>=2.12" "cython>=3" \
    cmake ninja "numpy>=1.23" "tqdm>=4.60" "pytest>=7" "hypothesis>=6"

stamp "building fastrnn with FASTRNN_SANITIZE=ON into $BUILD_DIR"
# RelWithDebInfo: -O2 -g, so reports carry file:line; a fresh build dir takes ~1-2 min.
FASTRNN_SANITIZE=ON pipq install --no-build-isolation --no-deps \
    --force-reinstall -C build-dir="$BUILD_DIR" -C cmake.build-type=RelWithDebInfo .

# The flags must really be there: in the compile commands and in the module's dependencies.
grep -q -- "-fsanitize=address,undefined" "$BUILD_DIR/build.ninja" 2>/dev/null ||
    grep -rqs -- "-fsanitize=address,undefined" "$BUILD_DIR/CMakeFiles" ||
    { echo "FASTRNN_SANITIZE=ON did not add -fsanitize flags (see $BUILD_DIR)" >&2; exit 2; }
# Located without importing fastrnn (an ASan-built module cannot load without the preload).
CORE=$(cd / && "$VENV/bin/python" -c "import glob, importlib.util as u
d = u.find_spec('fastrnn').submodule_search_locations[0]
print(*glob.glob(d + '/_core.*.so'))")
case "$CORE" in "$VENV"/*) ;; *) echo "fastrnn._core resolves to $CORE, not the venv's" >&2; exit 2 ;; esac
ldd "$CORE" | grep -q libasan || { echo "$CORE does not link libasan" >&2; exit 2; }
ldd "$CORE" | grep -q libubsan || { echo "$CORE does not link libubsan" >&2; exit 2; }
stamp "built $CORE (links $(ldd "$CORE" | grep -o 'lib[a-z]*san[.a-z0-9]*' | sort -u | tr '\n' ' '))"

# ---------------------------------------------------------------- run
# ASan's reports also go to files (log_path), those of child processes included; UBSan's
# (in this combined runtime) go to standard error, which pytest below does not capture.
REPORTS=$(mktemp -d -t fastrnn-sanitize-reports.XXXXXX)
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1:allocator_may_return_null=1:handle_segv=1:allow_user_segv_handler=0:detect_stack_use_after_return=1:log_path=$REPORTS/asan
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=$REPORTS/ubsan
export PYTHONFAULTHANDLER=
export PYTHONDONTWRITEBYTECODE=1
stamp "pytest under ASan+UBSan (log: $LOG)"
set +e
# The venv's pytest script, not `python -m pytest`: the latter would put the repository root
# on sys.path, and its fastrnn/ (no compiled module) would shadow the sanitized install.
# --capture=sys: pytest's default (fd) capture would swallow a report that a sanitizer
# writes to file descriptor 2 just before it ends the process.
# shellcheck disable=SC2086
LD_PRELOAD="$PRELOAD" "$VENV/bin/pytest" -q -rfE --capture=sys -p no:cacheprovider -p no:faulthandler \
    tests/test_parity.py -k "not random_shapes" \
    tests/test_api_errors.py tests/test_fuzz.py tests/test_training_kernels.py tests/test_token_ids.py \
    tests/test_language_model.py tests/test_train_step.py \
    ${FASTRNN_SANITIZE_PYTEST:-} 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e

# A report is an ERROR or a runtime error; "WARNING: AddressSanitizer failed to allocate"
# (the absurd sizes of test_fuzz.py, returned as NULL, i.e. MemoryError) is not one.
PATTERN="==[0-9]+==ERROR: [A-Za-z]+Sanitizer|:[0-9]+(:[0-9]+)?: runtime error: |SUMMARY: [A-Za-z]+Sanitizer"
if grep -Eqs "$PATTERN" "$REPORTS"/* || grep -Eq "$PATTERN" "$LOG"; then
    stamp "FAILED: sanitizer report(s):"
    for f in $(grep -Els "$PATTERN" "$REPORTS"/* || true); do
        echo "---- $f"
        grep -v "WARNING: AddressSanitizer failed to allocate" "$f" | head -40
    done
    grep -E -A8 "$PATTERN" "$LOG" | head -60 || true
    [[ $status -eq 0 ]] && status=1
elif [[ $status -ne 0 ]]; then
    stamp "FAILED: pytest exited with $status (no sanitizer report)"
else
    stamp "clean: no sanitizer report, all tests passed"
fi
exit "$status"
