"""The privacy processors at run time: one request through one walk, and two processors fused.

secret_mask and uuid_normalize are each a `Stage`: where they look on the wire (`spec`), what
they do with one request (`prepare` gives the walker its run, None when there is nothing to do)
and what follows the walk (`finish`). `process` takes a request through the walk of one or more
stages:

* the request's wire bytes as the receiver handed them on (a request that only exists decoded is
  encoded once first);
* one walk of the stages' runs; bytes the walker refuses (`WireFallback`: a KeyValue with two keys,
  an AnyValue with two values, ...) are valid protobuf often enough that the request is decoded and
  encoded again the way protobuf does, which resolves them (or refuses the request, as the decoder
  always did), and that is walked;
* the new bytes replace the old ones; nothing else is decoded or encoded.

`PrivacyProcessor` is the component. When secret_mask and uuid_normalize are adjacent in a
pipeline (either order), the graph asks the first to `fuse` with the second: it then runs both
stages in one scan and one walk and marks each request it did so as done for the second, which
hands exactly those on untouched (its counters still count what it did). Not for metrics:
uuid_normalize merges the points that normalization made one series, which needs the request as it
was between the two processors.

There is no decoded-message path: every option runs on the wire bytes (user `blocked_values` and
`patterns` as rules that look at every selected string). Only summary attributes decode the request,
after the walk, to add `otelpipe.masked.count` to the items that had something masked. The decoded
walk of the same rules is the tests' oracle (tests/unit/processors/privacy/oracle.py).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from pipeline.component import FuncProcessor, Host, Settings
from pipeline.model import Payload, Signal
from pipeline.telemetry import CountsByLabel
from pipeline.wire import LEN, decode_varint, skip_field
from processors.privacy.walker import PlanSpec, Run, Walker, WireFallback, wire_plan


class Stage(Protocol):
    """What a privacy processor is to the walk (see the module docstring). `idle()` is a run that
    changes nothing, for a stage with nothing to do in a walk it shares."""

    signal: Signal
    #: the owner messages whose changes `finish` needs counted (full protobuf type names)
    owners: tuple[str, ...]

    def spec(self) -> PlanSpec | None: ...

    def prepare(self, raw: bytes) -> Run | None: ...

    def idle(self) -> Run: ...

    def checkpoint(self) -> dict[str, int]: ...

    def restore(self, counts: dict[str, int]) -> None: ...

    def finish(self, payload: Payload, walked: bytes, new: bytes | None, run: Run) -> None: ...

    def describe(self) -> dict[str, str]: ...


def make_walker(stages: Sequence[Stage], native: bool | None = None) -> Walker:
    signal = stages[0].signal
    owners = {o for s in stages for o in s.owners}
    return Walker(wire_plan(signal.request_type.DESCRIPTOR, [s.spec() for s in stages], owners), len(stages),
                  native=native)


def request_bytes(payload: Payload) -> bytes:
    """The request's wire bytes: as the receiver handed them on, or encoded once if it only exists decoded."""
    raw = payload.raw_cached
    return payload.serialize() if raw is None else raw


def process(stages: Sequence[Stage], walker: Walker, payload: Payload, raw: bytes, runs: Sequence[Run | None]
            ) -> Payload:
    """`payload` (its bytes `raw`, the stages' runs for them) through one walk of `stages` (see the module
    docstring)."""
    if all(r is None for r in runs):
        return payload
    checkpoints = [s.checkpoint() for s in stages]
    try:
        new = walker.rewrite(raw, _busy(stages, runs))
    except WireFallback:
        for s, cp in zip(stages, checkpoints):
            s.restore(cp)  # forget what the abandoned walk counted
        raw = payload.message.SerializeToString()  # decodes as before, or raises DecodeError as before
        runs = [s.prepare(raw) for s in stages]
        if all(r is None for r in runs):
            return payload
        new = walker.rewrite(raw, _busy(stages, runs))
    if new is not None:
        payload.replace_raw(new)
    for s, run in zip(stages, runs):
        if run is not None:
            s.finish(payload, raw, new, run)
    return payload


def _busy(stages: Sequence[Stage], runs: Sequence[Run | None]) -> list[Run]:
    return [s.idle() if r is None else r for s, r in zip(stages, runs)]


class Single:
    """One stage, its own walk."""

    def __init__(self, stage: Stage, native: bool | None = None) -> None:
        self.stage = stage
        self.walker = make_walker([stage], native)

    def __call__(self, payload: Payload) -> Payload:
        raw = request_bytes(payload)
        return process((self.stage,), self.walker, payload, raw, (self.stage.prepare(raw),))


class Fused:
    """Two adjacent stages in one scan and one walk; a request for which one of them has nothing to do
    goes through the other's walk alone. Without the C walker the stages run one after the other: the
    Python walk of two stages costs more than two walks of one (bench/RESULTS.md, issue 17), and only
    secret_mask scans, so the scan is still made once."""

    def __init__(self, first: Single, second: Single) -> None:
        self.singles = (first, second)
        self.stages = (first.stage, second.stage)
        self.walker = make_walker(self.stages, first.walker.native)

    def __call__(self, payload: Payload) -> Payload:
        if not self.walker.native:
            return self.singles[1](self.singles[0](payload))
        raw = request_bytes(payload)
        runs = [s.prepare(raw) for s in self.stages]
        if runs[0] is not None and runs[1] is not None:
            return process(self.stages, self.walker, payload, raw, runs)
        for single, run in zip(self.singles, runs):
            if run is not None:
                return process((single.stage,), single.walker, payload, raw, (run,))
        return payload


def owner_offsets(raw: bytes, path: Sequence[int]) -> list[int]:
    """The content offsets of the messages at `path` (field numbers from the request down: (1, 2, 2)
    for spans), in order: the owner messages the walker reports changes in by their offset."""
    out: list[int] = []

    def walk(s: int, e: int, depth: int) -> None:
        i = s
        while i < e:
            tag, i = decode_varint(raw, i)
            if tag & 7 != LEN:
                i = skip_field(raw, i, tag)
                continue
            n, cs = decode_varint(raw, i)
            i = cs + n
            if tag >> 3 == path[depth]:
                if depth + 1 == len(path):
                    out.append(cs)
                else:
                    walk(cs, i, depth + 1)

    walk(0, len(raw), 0)
    return out


class PrivacyProcessor(FuncProcessor):
    """A privacy processor: its stage's walk (`Single`), the counter of what it did by detector, and
    what runs (logged once at start, and under `status` on /status).

    Fused (`fuse`, called by the graph with the processor right after this one): while that one
    runs, this one runs both stages in one walk (`Fused`) and tells it, per request, that its work
    on that request is done (`mark_done`); it then hands that request on as it came. The mark is
    the request object itself and lives only from this processor's hand-off to the next one's
    call, which follows without a suspension point: a request that reached the next one any other
    way (during a reload, from another graph's processor) is processed by it as usual.
    """

    def __init__(self, settings: Settings, single: Single, next_consumer: object, *, counter: str,
                 take_counts: Callable[[], dict[str, int]], drop_reason: str = "filtered") -> None:
        super().__init__(settings, self._apply, next_consumer, mutates_data=True,  # type: ignore[arg-type]
                         drop_reason=drop_reason)
        self.single = single
        self.running = False
        self._partner: PrivacyProcessor | None = None
        self._fused: Fused | None = None
        self._done: Payload | None = None
        self._fused_from = ""
        self._take_counts = take_counts
        self._counts = CountsByLabel(settings.telemetry.counter(counter), str(settings.id), settings.pipeline)

    def _apply(self, payload: Payload) -> Payload:
        if self._done is payload:  # the processor before this one ran this stage in its walk
            self._done = None
            out = payload
        elif self._fused is not None and self._partner is not None and self._partner.running:
            out = self._fused(payload)
            self._partner.mark_done(out)
        else:
            out = self.single(payload)
        counts = self._take_counts()
        if counts:
            self._counts.add(counts)
        return out

    def mark_done(self, payload: Payload) -> None:
        """The processor before this one ran this one's stage on `payload` in its own walk."""
        self._done = payload

    def fusable_with(self, other: PrivacyProcessor) -> bool:
        """Whether this processor can run `other`'s stage in its walk: the other privacy processor, in
        the same traces or logs pipeline (not metrics: uuid_normalize merges the points normalization
        made one series, which needs the request as it is between the two)."""
        return (type(other.single.stage) is not type(self.single.stage)
                and self.settings.signal is other.settings.signal is not Signal.METRICS
                and self.settings.pipeline == other.settings.pipeline)

    def fuse(self, nxt: object) -> bool:
        """Run the stage of `nxt`, the processor right after this one in its pipeline, in this one's walk
        if it is the other privacy processor (see the class docstring); anything else (or None) undoes
        an earlier fusion. Whether it fused."""
        partner = nxt if isinstance(nxt, PrivacyProcessor) and self.fusable_with(nxt) else None
        if partner is self._partner:
            return partner is not None
        if self._partner is not None:
            self._partner.fused_from("")
        self._partner = partner
        self._fused = None if partner is None else Fused(self.single, partner.single)
        if partner is not None:
            partner.fused_from(str(self.settings.id))
        return partner is not None

    def fused_from(self, name: str) -> None:
        """For `status`: the processor before this one runs this one's stage in its walk ("" if none)."""
        self._fused_from = name

    def status(self) -> Mapping[str, str]:
        """What runs (the scanner, the walker, the fusion), for the log line at start and /status."""
        out = dict(self.single.stage.describe())
        out["walker"] = "C" if self.single.walker.native else "Python"
        if self._partner is not None:
            out["fused"] = f"runs the walk of {self._partner.settings.id} too"
        elif self._fused_from:
            out["fused"] = f"its walk runs in {self._fused_from}'s"
        return out

    async def start(self, host: Host) -> None:
        self.running = True
        self.settings.logger.info("started: %s", ", ".join(f"{k} {v}" for k, v in self.status().items()))

    async def shutdown(self) -> None:
        self.running = False
