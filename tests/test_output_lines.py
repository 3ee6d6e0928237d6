"""LineSplitter: chunk boundaries (lines and UTF-8 characters) never show in the lines."""

from __future__ import annotations

import random

import pytest

from azrun.output import LineSplitter, TailLines, split_text
from azrun.output._fallback import instance_view_output


def _feed_in_chunks(data: bytes, sizes: list[int], max_line_chars: int | None = None) -> list[str]:
    splitter = LineSplitter() if max_line_chars is None else LineSplitter(max_line_chars=max_line_chars)
    lines: list[str] = []
    pos = 0
    for size in sizes:
        lines += splitter.feed(data[pos : pos + size])
        pos += size
    lines += splitter.feed(data[pos:])
    return lines + splitter.flush()


def _random_sizes(rng: random.Random, total: int) -> list[int]:
    sizes: list[int] = []
    while sum(sizes) < total:
        sizes.append(rng.choice([0, 1, 1, 2, 3, 5, 8, 13, 64, 4096]))
    return sizes


SAMPLE = (
    "plain ascii\n"
    "héllo wörld — ünïcode\r\n"
    "日本語のテキスト\n"
    "emoji 🎉🚀 and more 👩‍👩‍👧\n"
    "\n"
    "tabs\tand   spaces  \n"
    "no newline at the end ✓"
).encode()


def test_whole_input() -> None:
    assert split_text(SAMPLE) == [
        "plain ascii",
        "héllo wörld — ünïcode",
        "日本語のテキスト",
        "emoji 🎉🚀 and more 👩‍👩‍👧",
        "",
        "tabs\tand   spaces  ",
        "no newline at the end ✓",
    ]


def test_every_single_split_point_gives_the_same_lines() -> None:
    whole = split_text(SAMPLE)
    for cut in range(len(SAMPLE) + 1):
        assert _feed_in_chunks(SAMPLE, [cut]) == whole, cut


def test_byte_by_byte() -> None:
    assert _feed_in_chunks(SAMPLE, [1] * len(SAMPLE)) == split_text(SAMPLE)


@pytest.mark.parametrize("seed", range(30))
def test_random_chunking(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = ["a", "é", "日", "🎉", "\n", "\r\n", " ", "\t", "z" * 7]
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 400)))
    data = text.encode()
    assert _feed_in_chunks(data, _random_sizes(rng, len(data))) == split_text(data)
    assert "\n".join(split_text(data)) == text.replace("\r\n", "\n").removesuffix("\n") or not text


def test_multibyte_character_split_across_three_feeds() -> None:
    splitter = LineSplitter()
    euro = "€".encode()  # 3 bytes
    assert splitter.feed(b"price: " + euro[:1]) == []
    assert splitter.feed(euro[1:2]) == []
    assert splitter.feed(euro[2:] + b" 5\n") == ["price: € 5"]
    assert splitter.flush() == []


def test_invalid_bytes_become_replacement_characters_not_errors() -> None:
    assert split_text(b"ok\xff\xfe bad\n\xc3\n") == ["ok\ufffd\ufffd bad", "\ufffd"]


def test_truncated_character_at_end_of_stream_is_replaced() -> None:
    splitter = LineSplitter()
    assert splitter.feed("ab€".encode()[:-1]) == []
    assert splitter.flush() == ["ab\ufffd"]


def test_crlf_and_lone_cr() -> None:
    assert split_text(b"a\r\nb\rc\r\n\r\n") == ["a", "b\rc", ""]
    # a CR split from its LF across chunks is still dropped
    assert _feed_in_chunks(b"a\r\nb\r\n", [2]) == ["a", "b"]


def test_flush_resets_for_reuse() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"half") == []
    assert splitter.flush() == ["half"]
    assert splitter.feed(b"next\n") == ["next"]


def test_reset_drops_the_partial_line() -> None:
    splitter = LineSplitter()
    splitter.feed(b"stale partial")
    splitter.reset()
    assert splitter.feed(b"fresh\n") == ["fresh"]


def test_empty_feeds() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"") == []
    assert splitter.flush() == []
    assert split_text(b"") == []
    assert split_text(b"\n") == [""]


def test_long_line_is_cut_and_memory_stays_bounded() -> None:
    splitter = LineSplitter(max_line_chars=10)
    out: list[str] = []
    for _ in range(100):
        out += splitter.feed(b"x" * 7)
        assert splitter.pending_chars <= 10
    out += splitter.feed(b"\n")
    assert "".join(out) == "x" * 700
    assert all(len(piece) == 10 for piece in out)


@pytest.mark.parametrize("seed", range(20))
def test_long_line_cutting_does_not_depend_on_chunking(seed: int) -> None:
    rng = random.Random(seed)
    text = "".join(rng.choice(["ab", "é", "\r", "\r\n", "\n", "0123456789"]) for _ in range(200))
    data = text.encode()
    whole = _feed_in_chunks(data, [], max_line_chars=4)
    assert _feed_in_chunks(data, _random_sizes(rng, len(data)), max_line_chars=4) == whole
    assert all(len(line) <= 4 for line in whole)


def test_tail_lines_keeps_the_last() -> None:
    tail = TailLines(3)
    tail.extend([str(i) for i in range(10)])
    assert tail.text() == "7\n8\n9"
    assert len(tail) == 3


def test_instance_view_output_flags_possible_truncation() -> None:
    ref, out, err = instance_view_output("a\nb\n", "oops\n")
    assert (ref.truncated, ref.stdout_bytes, out, err) == (False, 4, "a\nb", "oops")
    full = "\ufffd" + "x" * 4094
    ref, out, _ = instance_view_output(full, "")
    assert ref.truncated and ref.stdout_url is None and out == full


def test_splice_tail_joins_where_the_blob_end_overlaps_the_instance_view() -> None:
    from azrun.output import splice_tail

    full = "".join(f"line {i}\n" for i in range(1000)).encode()
    iv = full[-4096:].decode()
    assert splice_tail(full[:-100], iv) == (full[-100:], True)
    assert splice_tail(full, iv) == (b"", True)  # nothing lost
    missing, joined = splice_tail(full[:-5000], iv)  # more than 4 KB lost: no overlap
    assert not joined and missing == full[-4096:]
    # the instance view cut a character at its start (U+FFFD): the rest still joins
    text = "".join(f"é{i}é\n" for i in range(1000)).encode()
    iv_cut = text[-4095:].decode("utf-8", errors="replace")
    assert iv_cut.startswith("\ufffd") and splice_tail(text[:-10], iv_cut) == (text[-10:], True)
    assert splice_tail(b"early\n", "early\nlate\n") == (b"late\n", True)  # a short blob, all overlapping
