"""Training progress on the driver's console: rank 0 sends it, the driver prints it once.

Ray would forward every worker's stdout to the driver (`log_to_driver`), with Ray Train's
per-rank INFO lines and Ray Data's per-epoch plans, and Ray Train's print patch echoes each
`print` twice. The entry points switch that forwarding off (`pipelines.cluster.init_ray`),
so Ray's own detail stays in its session logs, and progress travels as data instead:

- rank 0 of the training loop sends `Progress` and `Resumed` events (`ProgressSender`) to
  a named inbox actor in the driver's namespace (`INBOX`, created by `ProgressConsole`);
- a driver thread drains the inbox and prints one line per event, rewritten in place on a
  terminal (one live line per stage), one line each otherwise (logs, pipes, tests).

Without an inbox (a Tune trial, a test's own Ray) rank 0 prints the same line to its real
stdout, once (`sys.__stdout__` bypasses Ray Train's print patch).
"""
from __future__ import annotations

import math
import sys
import threading
from dataclasses import dataclass
from typing import Optional, TextIO, Union

import ray

INBOX = "pag-progress"
RESUME_HINT = (
    "interrupted: re-run the same command to resume (finished stages are skipped, the stage "
    "in progress continues from its last checkpoint)"
)


@dataclass(frozen=True)
class Progress:
    """One progress report of a stage (rank 0, every `train.log_every` iterations).

    Args:
        stage: stage name.
        iteration: iterations done.
        iterations: the stage's total.
        loss: mean training loss (task + sparsity) since the previous report.
        density: mean gate density over the gated layers (fraction of pixels computed);
            None when the stage has no gates.
        sec_per_iter: wall-clock seconds per iteration since the previous report.
    """

    stage: str
    iteration: int
    iterations: int
    loss: float
    density: Optional[float]
    sec_per_iter: float


@dataclass(frozen=True)
class Resumed:
    """The loop started from a checkpoint of its own stage (a re-run or a worker restart)."""

    stage: str
    iteration: int


Event = Union[Progress, Resumed]


def format_eta(seconds: float) -> str:
    """`m:ss` under an hour, `h:mm:ss` above; `?` when unknown (nan/inf/negative)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_event(event: Event) -> str:
    """The console line of one event (no density for a stage without gates)."""
    if isinstance(event, Resumed):
        return f"resuming stage {event.stage} from iteration {event.iteration}"
    density = "" if event.density is None else f"  density {event.density:.2f}"
    eta = format_eta((event.iterations - event.iteration) * event.sec_per_iter)
    return (
        f"[{event.stage}] iteration {event.iteration}/{event.iterations}  loss {event.loss:.4f}"
        f"{density}  {event.sec_per_iter:.3f} s/it  ETA {eta}"
    )


class ProgressSender:
    """Worker side: rank 0 sends events to the driver's inbox; other ranks send nothing."""

    def __init__(
        self,
        rank: int,
    ) -> None:
        """
        Args:
            rank: this worker's world rank.
        """
        self.active = rank == 0
        self.inbox = _find_inbox() if self.active else None

    def send(self, event: Event) -> None:
        if not self.active:
            return
        if self.inbox is not None:
            self.inbox.put.remote(event)  # fire and forget: training never waits on the console
        else:
            print(format_event(event), file=sys.__stdout__, flush=True)


def _find_inbox() -> Optional["ray.actor.ActorHandle"]:
    try:
        return ray.get_actor(INBOX)
    except ValueError:  # no console on the driver (a Tune trial, a test's own Ray)
        return None


@ray.remote(num_cpus=0)
class _Inbox:
    """Events from rank 0, kept until the driver drains them."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def put(self, event: Event) -> None:
        self.events.append(event)

    def drain(self) -> list[Event]:
        events, self.events = self.events, []
        return events


class ProgressConsole:
    """Driver side: the one place that prints while a pipeline runs.

    Use as a context manager around `run_pipeline(config, progress=console.line)`: inside
    it, the inbox exists and a thread prints its events every `poll_s` seconds. `line`
    prints a stage message after the events that came before it.
    """

    def __init__(
        self,
        stream: TextIO = sys.stdout,
        live: Optional[bool] = None,
        poll_s: float = 0.5,
        prefix: str = "",
    ) -> None:
        """
        Args:
            stream: where to print.
            live: rewrite the progress line in place (default: whether `stream` is a terminal).
            poll_s: seconds between drains of the inbox.
            prefix: put before every line (the demo's `[demo] `).
        """
        self.stream = stream
        self.prefix = prefix
        self.live = stream.isatty() if live is None else live
        self.poll_s = poll_s
        self.open = False  # a live line is on screen without its newline
        self.lock = threading.Lock()  # one writer at a time
        self.drain_lock = threading.Lock()  # events printed in the order rank 0 sent them
        self.stop = threading.Event()
        self.inbox: Optional["ray.actor.ActorHandle"] = None
        self.thread: Optional[threading.Thread] = None

    def __enter__(self) -> "ProgressConsole":
        # One inbox per driver (its namespace), kept for the driver's lifetime: a second
        # console in the same driver reuses it, dropping what an earlier one left.
        self.inbox = _Inbox.options(name=INBOX, get_if_exists=True).remote()
        ray.get(self.inbox.drain.remote())  # created and named before any worker looks
        self.thread = threading.Thread(target=self._poll, name="pag-progress", daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
        self._drain()
        with self.lock:
            self._end_live_line()
        self.inbox = None

    def line(self, text: str) -> None:
        """Print a message on its own line (after any events still in the inbox)."""
        self._drain()
        with self.lock:
            self._end_live_line()
            self.stream.write(self.prefix + text + "\n")
            self.stream.flush()

    def show(self, event: Event) -> None:
        """Print one event: resumptions on their own line, progress in place when live."""
        text = self.prefix + format_event(event)
        with self.lock:
            if self.live and isinstance(event, Progress):
                self.stream.write("\r\x1b[2K" + text)  # carriage return, erase the line
                self.open = True
            else:
                self._end_live_line()
                self.stream.write(text + "\n")
            self.stream.flush()

    def _end_live_line(self) -> None:
        if self.open:
            self.stream.write("\n")
            self.open = False

    def _poll(self) -> None:
        while not self.stop.wait(self.poll_s):
            self._drain()

    def _drain(self) -> None:
        inbox = self.inbox
        if inbox is None:
            return
        with self.drain_lock:
            try:
                events = ray.get(inbox.drain.remote(), timeout=5)
            except (ray.exceptions.RayError, TimeoutError):
                return  # Ray is going down (Ctrl-C): these lines are lost, training is not
            for event in events:
                self.show(event)
