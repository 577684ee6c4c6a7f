"""The processing core of text-stats: one pass over the input in chunks, bounded memory.

    size limit -> read a chunk -> (first chunk) is it text? -> NUL check -> incremental
    UTF-8 decode -> count lines, characters, words -> next chunk ... -> stats.json

The input is never read whole: it is decoded ``CHUNK_BYTES`` at a time, a word cut by a
chunk boundary is carried into the next chunk, and the word counts are bounded by
``MAX_TRACKED_WORDS`` (past it, the rarest words are dropped and the ranking is marked
approximate). Bad input is classified here, and only here:

- not text at all (a NUL byte, or not UTF-8 in the first bytes) -> ``UnsupportedInput``
- text that turns invalid later (a stray Latin-1 byte, a cut multi-byte character)
  -> ``CorruptInput``, naming the byte offset and the line
- larger than the ``max_bytes`` option -> ``LimitExceeded(limit="max_bytes")``
"""

from __future__ import annotations

import codecs
import json
import re
from collections import Counter
from typing import Any

from mountworks_text_stats.options import Options
from mountworks_text_stats.sniff import UTF8_BOM, text_problem
from shared.errors import CorruptInput, LimitExceeded, UnsupportedInput
from shared.runs import OutputDir
from shared.worker import SNIFF_BYTES, InputFile, RunContext

CHUNK_BYTES = 1 << 20  # read (and decode) this much at a time
MAX_TRACKED_WORDS = 200_000  # distinct words counted at once (bounds memory: ~30 MB)
MAX_WORD_CHARS = 64  # longer tokens (hashes, base64) count as words but are not ranked
MAX_CARRY_CHARS = 4096  # a token longer than this is counted as several words (memory stays bounded)
DEADLINE_MARGIN = 1.0  # seconds left at which the run stops as retryable
STATS_NAME = "stats.json"
STATS_SCHEMA = "mountworks-text-stats/1"

# A word: letters and digits (any script), with inner apostrophes ("don't", "l’eau").
WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
# Where a chunk's text may be cut without cutting a word: the last character that can
# never be part of one.
NOT_WORDISH = re.compile(r"[^\w'’]")

class TextCounter:
    """Running counts over decoded text handed in piece by piece."""

    def __init__(self) -> None:
        self.chars = 0
        self.newlines = 0
        self.words = 0
        self.max_line_chars = 0
        self.line_chars = 0  # of the line being read
        self.last_char = ""
        self.counts: Counter[str] = Counter()
        self.exact = True
        self._carry = ""

    def feed(self, text: str, *, final: bool = False) -> None:
        if not text and not final:
            return
        if text:
            self.chars += len(text)
            self.last_char = text[-1]
            self._lines(text)
        text = self._carry + text
        cut = len(text) if final else self._cut(text)
        self._carry = text[cut:]
        self._words(text[:cut])

    def _lines(self, text: str) -> None:
        parts = text.split("\n")
        self.newlines += len(parts) - 1
        if len(parts) == 1:
            self.line_chars += len(parts[0])
            return
        longest = max(self.line_chars + len(parts[0]), max(map(len, parts[1:-1]), default=0))
        self.max_line_chars = max(self.max_line_chars, longest)
        self.line_chars = len(parts[-1])

    @staticmethod
    def _cut(text: str) -> int:
        """Where to stop counting words in this piece: after its last non-word character."""
        tail = text[-MAX_CARRY_CHARS:]
        found = NOT_WORDISH.search(tail[::-1])
        if found is None:
            return len(text) if len(tail) == MAX_CARRY_CHARS else 0  # a giant token is cut
        return len(text) - found.start()

    def _words(self, text: str) -> None:
        tokens = WORD.findall(text.casefold())
        self.words += len(tokens)
        self.counts.update(t for t in tokens if len(t) <= MAX_WORD_CHARS)
        if len(self.counts) > MAX_TRACKED_WORDS:  # keep the most frequent half; ranks become approximate
            self.counts = Counter(dict(self.counts.most_common(MAX_TRACKED_WORDS // 2)))
            self.exact = False

    @property
    def lines(self) -> int:
        """Lines as people count them: newline-ended ones, plus a last one without a newline."""
        return self.newlines + (1 if self.last_char not in ("", "\n") else 0)

    def top(self, n: int) -> list[dict[str, Any]]:
        ranked = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))[:n]
        return [{"word": word, "count": count} for word, count in ranked]


def _line_of(counter: TextCounter, decoded_prefix: bytes) -> int:
    return counter.newlines + decoded_prefix.count(b"\n") + 1


def process(source: InputFile, out: OutputDir, options: Options, ctx: RunContext) -> dict[str, Any]:
    """Count ``source`` in one streaming pass; write ``stats.json``; return the facts."""
    if source.size > options.max_bytes:
        raise LimitExceeded(
            f"the input is {source.size:,} bytes, over max_bytes={options.max_bytes:,}; "
            "raise the max_bytes option to process it", limit="max_bytes")
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    counter = TextCounter()
    consumed = 0  # bytes read before the current chunk
    is_ascii = True
    bom = False
    with source.open() as f:
        while chunk := f.read(CHUNK_BYTES):
            ctx.deadline.check(DEADLINE_MARGIN, doing="counting text")
            if consumed == 0:
                problem = text_problem(chunk[:SNIFF_BYTES])
                if problem is not None:
                    raise UnsupportedInput(f"not UTF-8 text: {problem}")
                bom = chunk.startswith(UTF8_BOM)
            if consumed + len(chunk) > options.max_bytes:  # the file grew after it was hashed
                raise LimitExceeded(f"the input grew past max_bytes={options.max_bytes:,} while it was read",
                                    limit="max_bytes")
            nul = chunk.find(b"\x00")
            if nul >= 0:
                raise UnsupportedInput(f"not text: a NUL byte at byte offset {consumed + nul:,} (binary data)")
            is_ascii = is_ascii and chunk.isascii()
            pending = decoder.getstate()[0]
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                data = pending + chunk
                offset = consumed - len(pending) + exc.start
                raise CorruptInput(
                    f"invalid UTF-8 at byte offset {offset:,} (line {_line_of(counter, data[:exc.start]):,}): "
                    f"{exc.reason} (byte 0x{data[exc.start]:02x}); the text is not UTF-8 throughout"
                ) from exc
            if consumed == 0 and bom:
                text = text[1:]  # the byte order mark is not a character of the text
            counter.feed(text)
            consumed += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        offset = consumed - len(exc.object) + exc.start
        raise CorruptInput(f"the text ends inside a UTF-8 character (byte offset {offset:,}): "
                           "the file may be truncated") from exc
    counter.feed("", final=True)

    encoding = "ascii" if is_ascii else ("utf-8-sig" if bom else "utf-8")
    facts: dict[str, Any] = {
        "bytes": consumed,
        "chars": counter.chars,
        "lines": counter.lines,
        "words": counter.words,
        "distinct_words": len(counter.counts) if counter.exact else None,
        "max_line_chars": max(counter.max_line_chars, counter.line_chars),
        "encoding": encoding,
    }
    stats = {"schema": STATS_SCHEMA, **facts, "top_words": counter.top(options.top),
             "top_words_exact": counter.exact}
    data = (json.dumps(stats, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    out.write_bytes(STATS_NAME, data, "application/json", lines=counter.lines, words=counter.words)
    return facts
