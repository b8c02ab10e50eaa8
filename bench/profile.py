"""Summaries of py-spy's raw (collapsed stack) profiles: where the hub spends its time.

``python -m bench.profile FILE`` prints the functions with the most samples,
on their own (self) and with what they call (inclusive).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

__all__ = ["summarize"]


def summarize(path: Path, top: int = 25) -> str:
    """Return the top functions of a py-spy raw profile, by self and inclusive share."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [_short(frame) for frame in stack.split(";")]
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "self  inclusive  function"]
    for frame, samples in own.most_common(top):
        lines.append(
            f"{samples / total:5.1%} {inclusive[frame] / total:7.1%}    {frame}"
        )
    lines += ["", "inclusive, top"]
    for frame, samples in inclusive.most_common(top):
        lines.append(f"{samples / total:7.1%}    {frame}")
    return "\n".join(lines)


def _short(frame: str) -> str:
    # "function (path/to/module.py:line)" -> "function (module.py)"
    name, _, where = frame.partition(" (")
    module = where.rsplit("/", 1)[-1].split(":", 1)[0].rstrip(")")
    return f"{name} ({module})" if module else name


if __name__ == "__main__":
    print(summarize(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 25))
