#!/usr/bin/env bash
# Keep the disk busy: write and fsync 256 MiB files back to back, without pause,
# so the tests can be run while another process writes (as on a shared CI
# runner or a laptop that is syncing). Used to prove the suite does not depend
# on how fast an fsync returns; see docs/image-generation/testing-and-faults.md.
#
#   scripts/disk_pressure.sh [DURATION_S] [DIR]
#
# DURATION_S (default 1800) bounds the run: the writer stops by itself after it.
# DIR (default: the system temporary folder, where pytest keeps its tmp_path
# folders) must be on the disk under test. Ctrl-C, SIGTERM or SIGHUP stop it at
# once; the scratch file is removed on every exit.
set -euo pipefail

duration_s="${1:-1800}"
dir="${2:-${TMPDIR:-/tmp}}"
scratch="$(mktemp "${dir%/}/sakaibot-disk-pressure.XXXXXX")"
writer_pid=""

cleanup() {
    if [[ -n "$writer_pid" ]]; then
        kill "$writer_pid" 2>/dev/null || true
        wait "$writer_pid" 2>/dev/null || true
    fi
    rm -f "$scratch"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

deadline_s=$((SECONDS + duration_s))
rounds=0
echo "disk_pressure: writing ${scratch} for up to ${duration_s} s (pid $$)" >&2
while ((SECONDS < deadline_s)); do
    # In the background so a signal is handled at once, not after the file is synced.
    dd if=/dev/zero of="$scratch" bs=1M count=256 conv=fsync status=none &
    writer_pid=$!
    wait "$writer_pid"
    writer_pid=""
    rounds=$((rounds + 1))
done
echo "disk_pressure: done, ${rounds} x 256 MiB written and synced" >&2
