"""Bytes -> lines, the pure part of the live tail (no I/O, no clock).

Blob appends arrive in arbitrary chunks: a line may span several appends, and so may one UTF-8
character. :class:`LineSplitter` keeps the unfinished line (and any unfinished character, via an
incremental decoder) until the rest arrives, so a chunk boundary never shows up in the output.
Invalid bytes become U+FFFD rather than an exception: output is shown, never lost to a decode
error. A trailing ``\\r`` is dropped from each line (Windows scripts end lines with CRLF).

A line that never ends (a binary dump, a progress bar without newlines) is cut every
``max_line_chars`` characters so memory stays bounded; the pieces still come out in order.
"""

from __future__ import annotations

import codecs
from collections import deque

__all__ = ["DEFAULT_MAX_LINE_CHARS", "LineSplitter", "TailLines", "contains_tail", "splice_tail", "split_text"]

DEFAULT_MAX_LINE_CHARS = 1 << 20  # 1 Mi characters


class LineSplitter:
    """Incrementally turn a byte stream into complete lines (without their newline).

    ``feed(chunk)`` returns the lines the chunk completed; ``flush()`` returns the unfinished last
    line (if any) once the stream has ended, and resets the splitter for reuse.
    """

    __slots__ = ("_cut_done", "_decoder", "_max", "_partial")

    def __init__(self, *, max_line_chars: int = DEFAULT_MAX_LINE_CHARS) -> None:
        if max_line_chars < 1:
            raise ValueError("max_line_chars must be positive")
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial: list[str] = []
        self._cut_done = False  # slices of the unfinished line were already emitted
        self._max = max_line_chars

    def __repr__(self) -> str:
        return f"LineSplitter(pending_chars={self.pending_chars})"

    @property
    def pending_chars(self) -> int:
        """Characters of the unfinished line held back (decoder state not counted)."""
        return sum(len(p) for p in self._partial)

    def feed(self, data: bytes) -> list[str]:
        """Add ``data``; return every line it completed, in order."""
        return self._split(self._decoder.decode(data, final=False))

    def flush(self) -> list[str]:
        """End of stream: return the unfinished last line (``[]`` if there is none) and reset."""
        lines = self._split(self._decoder.decode(b"", final=True))
        if self._partial:
            lines.extend(self._complete(""))
        self.reset()
        return lines

    def reset(self) -> None:
        """Forget the unfinished line and decoder state (the stream starts over)."""
        self._decoder.reset()
        self._partial = []
        self._cut_done = False

    def _split(self, text: str) -> list[str]:
        if not text:
            return []
        pieces = text.split("\n")
        lines: list[str] = []
        for piece in pieces[:-1]:
            lines.extend(self._complete(piece))
        if pieces[-1]:
            self._partial.append(pieces[-1])
            if self.pending_chars > self._max:
                lines.extend(self._cut_long())
        return lines

    def _complete(self, piece: str) -> list[str]:
        """The unfinished line plus ``piece`` is a whole line: return it (cut if over-long)."""
        self._partial.append(piece)
        line = _strip_cr("".join(self._partial))
        self._partial = []
        cut_before, self._cut_done = self._cut_done, False
        if not line and cut_before:
            return []  # its text already went out as slices
        return _cut(line, self._max)

    def _cut_long(self) -> list[str]:
        """Emit whole ``max_line_chars`` slices of an over-long unfinished line; keep the rest."""
        text = "".join(self._partial)
        whole = len(text) - len(text) % self._max
        if whole == len(text) and text.endswith("\r"):
            whole -= self._max  # a CR that may end the line stays behind, so it can be dropped
        self._partial = [text[whole:]] if whole < len(text) else []
        self._cut_done = self._cut_done or whole > 0
        return [text[i : i + self._max] for i in range(0, whole, self._max)]


def _strip_cr(line: str) -> str:
    return line[:-1] if line.endswith("\r") else line


def _cut(line: str, limit: int) -> list[str]:
    if len(line) <= limit:
        return [line]
    return [line[i : i + limit] for i in range(0, len(line), limit)]


def split_text(data: bytes) -> list[str]:
    """All lines of a complete byte string (what ``azrun logs`` prints)."""
    splitter = LineSplitter()
    return [*splitter.feed(data), *splitter.flush()]


_REPLACEMENT = "\ufffd".encode()


def contains_tail(have_end: bytes, tail_text: str) -> bool:
    """Does the end of a blob hold ``tail_text`` (an instance view's last 4 KB, maybe cut
    mid-character at its start, or recorded last lines)?"""
    want = tail_text.lstrip("\ufffd").strip()
    if not want:
        return True
    return want in have_end.decode("utf-8", errors="replace")


def splice_tail(have_end: bytes, tail_text: str, *, min_overlap: int = 16) -> tuple[bytes, bool]:
    """What ``tail_text`` (the end of a stream, e.g. the instance view's last 4 KB) has past the
    end of a blob that holds only a prefix of the stream.

    Returns ``(missing, joined)``: ``joined`` when the blob's end overlaps the start of
    ``tail_text`` by at least ``min_overlap`` bytes (or by all of the blob), so ``missing``
    continues the blob exactly; otherwise bytes were lost between the two and ``missing`` is all
    of ``tail_text`` (its first line may be a fragment).
    """
    want = tail_text.encode("utf-8")
    while want.startswith(_REPLACEMENT):  # a character the instance view cut at its start
        want = want[len(_REPLACEMENT) :]
    if not want or want in have_end:
        return b"", True
    for k in range(min(len(have_end), len(want)), 0, -1):
        if k < min_overlap and k < len(have_end):
            break
        if have_end.endswith(want[:k]):
            return want[k:], True
    return want, False


class TailLines:
    """The last ``limit`` lines seen (what results carry inline)."""

    __slots__ = ("_lines",)

    def __init__(self, limit: int = 20) -> None:
        self._lines: deque[str] = deque(maxlen=limit)

    def extend(self, lines: list[str]) -> None:
        self._lines.extend(lines)

    def clear(self) -> None:
        self._lines.clear()

    def text(self) -> str:
        return "\n".join(self._lines)

    def __len__(self) -> int:
        return len(self._lines)
