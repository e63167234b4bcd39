"""The stderr filter that keeps Ray's C++ core_worker notice off a job's default output (jobs/stderr_filter.py).

Fast: a plain Python subprocess (no Ray) whose fd 2 is a pipe the test reads, so the filter works on a real fd.
"""

from __future__ import annotations

import subprocess
import sys

from phifleet.jobs.stderr_filter import RAY_CORE_NOTICES, LineFilter

NOTICE = (
    b"[2026-11-28 02:19:24,009 E 8923 8923] core_worker.cc:2465: Actor with class name: "
    b"'MapWorker(MapBatches(Replica))' and ID: 'fe58c73eb4345d8b6a9c318c01000000' has constructor arguments in the "
    b"object store and max_restarts > 0. If the arguments in the object store go out of scope or are lost, the actor "
    b"restart will fail. See https://github.com/ray-project/ray/issues/53727 for more details.\n"
)
# Everything but the notices, in the order written: other C++ and Python lines, the live progress line ("\r",
# no newline) with a notice appended to it, a partial line finished later, and an unterminated last chunk.
KEPT = [
    b"2026-11-28 02:19:14,001\tINFO worker.py:2038 -- Started a local Ray instance.\n",
    b"[2026-11-28 02:19:24,010 W 8923 8923] core_worker.cc:100: some other warning\n",
    b"\r10/300 rows (3%)  0.0 rows/s  0 tokens/s  ETA ?\x1b[K",
    b"\r20/300 rows (7%)  9.7 rows/s  438 tokens/s  ETA 29s\x1b[K",
    b"\n",
    b"half a line, ",
    b"then the rest\n",
    b"[no newline yet: starts like a C++ line",
    b" and ends without one \xe2\x9c\x93",
]
WRITES = [KEPT[0], NOTICE, KEPT[1], KEPT[2], NOTICE, KEPT[3], KEPT[4], KEPT[5], NOTICE, KEPT[6], KEPT[7], KEPT[8]]

CHILD = """
import os, sys, time
from phifleet.jobs.stderr_filter import RAY_CORE_NOTICES, filtered_stderr

writes = [bytes.fromhex(h) for h in sys.argv[1:]]
with filtered_stderr(RAY_CORE_NOTICES):
    for chunk in writes:
        os.write(2, chunk)
        time.sleep(0.01)
    print("via sys.stderr", file=sys.stderr)
os.write(2, b"|after\\n")
"""


def test_only_the_notice_is_dropped_and_every_other_byte_arrives_in_order():
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *(w.hex() for w in WRITES)], capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stderr == b"".join(KEPT) + b"via sys.stderr\n|after\n"


def test_the_filter_passes_partial_lines_at_once_and_holds_a_bracket_only_briefly():
    f = LineFilter(RAY_CORE_NOTICES, hold_s=0.2)
    assert f.feed(b"\r5/10 rows\x1b[K", now=0.0) == b"\r5/10 rows\x1b[K"  # the live line goes out at once
    assert f.feed(b"[2026-11-28 E] core_worker.cc:1: has constructor", now=0.0) == b""  # could be a notice
    assert f.deadline == 0.2
    assert f.feed(b" arguments in the object store\n\r6/10 rows\x1b[K", now=0.1) == b"\r6/10 rows\x1b[K"
    assert f.feed(b"[INFO] not a notice", now=1.0) == b""
    assert f.feed(b"", now=1.3) == b"[INFO] not a notice"  # time is up: forwarded as it is
    assert f.feed(b"\n", now=1.4) == b"\n" and f.deadline is None
    assert f.feed(b"[held]", now=2.0) == b"" and f.flush() == b"[held]"
