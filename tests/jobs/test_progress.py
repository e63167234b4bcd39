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
