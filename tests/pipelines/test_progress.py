"""The console's lines: hand-written expected strings for events, the ETA, live rewriting."""
from __future__ import annotations

import io
import math

import pytest

from pipelines.train.loop import _progress
from pipelines.train.progress import Progress, ProgressConsole, Resumed, format_eta, format_event


@pytest.mark.parametrize(
    "seconds, text",
    [(0, "0:00"), (59.6, "1:00"), (61, "1:01"), (3599, "59:59"), (3661, "1:01:01"), (math.nan, "?"),
     (math.inf, "?"), (-1, "?")],
)
def test_eta_reads_minutes_and_hours(seconds, text):
    assert format_eta(seconds) == text


def test_progress_line_holds_iteration_loss_density_speed_and_eta():
    # 15 iterations left at 1.2 s each: 18 s.
    event = Progress("rho-0_5", 5, 20, 3.14159, 0.534, 1.2)
    assert format_event(event) == "[rho-0_5] iteration 5/20  loss 3.1416  density 0.53  1.200 s/it  ETA 0:18"


def test_progress_line_of_a_stage_without_gates_has_no_density():
    assert format_event(Progress("base", 20, 20, 4.0, None, 0.5)) == "[base] iteration 20/20  loss 4.0000  0.500 s/it  ETA 0:00"


def test_resumption_line_names_stage_and_iteration():
    assert format_event(Resumed("gate-res5", 40)) == "resuming stage gate-res5 from iteration 40"


def test_density_is_the_mean_over_gated_layers():
    metrics = {"train/loss": 2.0, "train/sec_per_iter": 0.25, "train/density/res4.0": 0.5, "train/density/res5.1": 0.7}
    event = _progress("s", 3, 10, metrics, gates=2)
    assert event == Progress("s", 3, 10, 2.0, pytest.approx(0.6), 0.25)
    assert _progress("s", 3, 10, {"train/loss": 2.0, "train/sec_per_iter": 0.25}, gates=0).density is None


def test_piped_console_prints_one_line_per_event_in_order():
    out = io.StringIO()
    console = ProgressConsole(out, live=False, prefix="[demo] ")
    console.line("stage 1/1 base: training 4 iterations")
    console.show(Resumed("base", 2))
    console.show(Progress("base", 4, 4, 1.0, None, 0.1))
    console.line("stage 1/1 base: done")
    assert out.getvalue().splitlines() == [
        "[demo] stage 1/1 base: training 4 iterations",
        "[demo] resuming stage base from iteration 2",
        "[demo] [base] iteration 4/4  loss 1.0000  0.100 s/it  ETA 0:00",
        "[demo] stage 1/1 base: done",
    ]


def test_terminal_console_rewrites_the_progress_line_in_place():
    out = io.StringIO()
    console = ProgressConsole(out, live=True)
    console.show(Progress("base", 1, 2, 2.0, None, 1.0))
    console.show(Progress("base", 2, 2, 1.0, None, 1.0))
    console.line("stage 1/1 base: done")
    erase = "\r\x1b[2K"
    assert out.getvalue() == (
        f"{erase}[base] iteration 1/2  loss 2.0000  1.000 s/it  ETA 0:01"
        f"{erase}[base] iteration 2/2  loss 1.0000  1.000 s/it  ETA 0:00\n"
        "stage 1/1 base: done\n"
    )
