"""Streaming text as it is generated: tokens handed across threads, decoded incrementally, cut at stop strings.

Pure helpers of the text engine (no model needed), so they are tested on their own.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterable

DECODE = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}  # streamed == decoded at once
STOP_MARGIN_TOKENS = 8  # tokens decoded beyond a stop string's length when looking for it
_STREAM_INTERVAL_S = 0.02  # the reader wakes at most 50 times a second: invisible to a reader, cheap for the GIL


def cut_at_stop(text: str, stops: Iterable[str]) -> tuple[str, str | None]:
    """The text before the first stop string to be completed (earliest end, then earliest start), and which."""
    best: tuple[int, int, str] | None = None
    for stop in stops:
        start = text.find(stop) if stop else -1
        if start != -1:
            key = (start + len(stop), start, stop)
            best = key if best is None or key < best else best
    return (text, None) if best is None else (text[:best[1]], best[2])


def _partial_stop_length(text: str, stops: Iterable[str]) -> int:
    """Length of the longest end of `text` that could be the beginning of a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class StopFilter:
    """Passes streamed text through, holding back what may begin a stop string and ending at the first one.

    Joining what feed() and flush() return gives exactly cut_at_stop(whole text)[0].
    """

    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = [stop for stop in stops if stop]
        self.matched: str | None = None
        self._held = ""

    def feed(self, chunk: str) -> str:
        if self.matched is not None:
            return ""
        text = self._held + chunk
        before, stop = cut_at_stop(text, self.stops)
        if stop is not None:
            self.matched, self._held = stop, ""
            return before
        keep = _partial_stop_length(text, self.stops)
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def flush(self) -> str:
        """What was held back: the stream ended without completing a stop string."""
        held, self._held = self._held, ""
        return held


class IncrementalDecoder:
    """Text deltas of a growing token sequence, decoding only its last few tokens each time.

    A delta is released when the text decoded so far ends in a whole character (not U+FFFD, the mark of a
    character split across tokens), so joining every add() and the final flush() gives decode(all ids). The
    window starts a little before the new tokens, as text-generation-inference does, for decoders whose
    output depends on the token before.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self.decode = decode
        self.ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def add(self, ids: list[int]) -> str:
        self.ids.extend(ids)
        before = self.decode(self.ids[self._prefix:self._read])
        text = self.decode(self.ids[self._prefix:])
        if len(text) > len(before) and not text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self.ids)
            return text[len(before):]
        return ""

    def flush(self) -> str:
        before = self.decode(self.ids[self._prefix:self._read])
        text = self.decode(self.ids[self._prefix:])
        self._prefix = self._read = len(self.ids)
        return text[len(before):]


def token_queue_class():
    """A generate() streamer that only queues token ids: decoding and printing happen in the reading thread."""
    from transformers.generation.streamers import BaseStreamer

    class TokenQueue(BaseStreamer):
        def __init__(self) -> None:
            self.queue: queue.SimpleQueue = queue.SimpleQueue()
            self._prompt = True

        def put(self, value) -> None:
            if self._prompt:  # generate() hands over the prompt first
                self._prompt = False
                return
            self.queue.put(value.reshape(-1).tolist())

        def end(self) -> None:
            self.queue.put(None)

        def drain(self, on_ids: Callable[[list[int]], None]) -> None:
            """Hand over token ids until the end, in batches: a fast model is not slowed by a wake-up per token."""
            while True:
                batch: list[int] = []
                item = self.queue.get()
                while item is not None:
                    batch.extend(item)
                    try:
                        item = self.queue.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    on_ids(batch)
                if item is None:
                    return
                time.sleep(_STREAM_INTERVAL_S)

    return TokenQueue
