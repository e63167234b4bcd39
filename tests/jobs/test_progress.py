"""The live progress line: rates from the first finished shard (start-up apart), silent off a terminal."""

import io
import time

from phifleet.jobs.progress import Progress


def test_rates_exclude_start_up_and_the_line_says_done_total_rate_and_eta():
    out = io.StringIO()
    progress = Progress(total=40, stream=out, enabled=True)
    time.sleep(0.3)  # start-up: reading, the model's load
    progress.update(10, 100)
    time.sleep(0.2)
    progress.update(10, 100)
    assert progress.rates() == (0.0, 0.0)  # blocks 0.2 s apart: no span worth a rate
    time.sleep(1.0)
    progress.update(10, 100)
    rows_s, tokens_s = progress.rates()
    assert 13 < rows_s < 17.5 and 130 < tokens_s < 175  # 20 rows / ~1.2 s, not 30 rows / 1.5 s
    assert progress.startup_s >= 0.3
    line = progress.line()
    assert line.startswith("30/40 rows (75%)") and "rows/s" in line and "tokens/s" in line and "ETA " in line
    progress.close()
    assert out.getvalue().startswith("\r10/40 rows") and out.getvalue().endswith("\n")


def test_silent_when_not_a_terminal():
    out = io.StringIO()  # isatty() is False: a log file, CI
    progress = Progress(total=2, stream=out)
    progress.update(2, 5)
    progress.close()
    assert out.getvalue() == "" and progress.line().startswith("2/2 rows (100%)") and progress.line().endswith("done")


def manifest(wall: float, startup: float, processing_rows_s: float) -> dict:
    return {
        "counts": {"input": 300, "ok": 300, "errors": 0, "resumed": 0, "processed": 300, "accounted": True},
        "wall_seconds": wall,
        "startup_seconds": startup,
        "processing": {"rows_per_s": processing_rows_s, "tokens_per_s": 45.0 * processing_rows_s},
        "throughput": {"rows_per_s": 300 / wall, "tokens_per_s": 13500 / wall},
        "job": {"task": {"kind": "label"}, "output": {"path": "out"}},
    }


def test_the_summary_gives_the_processing_rate_or_says_why_there_is_none():
    from phifleet.jobs.pipeline import summary_text

    timed = summary_text(manifest(wall=40.0, startup=30.0, processing_rows_s=29.5)).splitlines()[0]
    assert timed.endswith("start-up 30.0s (Ray, the duplicate-id pass, loading the model, the first block), "
                          "then 29.5 rows/s, 1328 tokens/s")  # fmt: skip
    # A job whose blocks all finished together: no rate passed off as the processing rate (300 rows / 30.4 s).
    small = summary_text(manifest(wall=30.4, startup=30.3, processing_rows_s=0.0)).splitlines()[0]
    assert (
        "then every block within 0.1s of the first (too short to rate; 9.9 rows/s, 444 tokens/s over the whole job)"
        in small
    )
    assert "then 9.9" not in small
    resumed = manifest(wall=3.0, startup=3.0, processing_rows_s=0.0)
    resumed["counts"] |= {"resumed": 300, "processed": 0}
    assert summary_text(resumed).splitlines()[0].endswith("the first block), nothing left to do")
