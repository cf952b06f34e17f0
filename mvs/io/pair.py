"""``pair.txt`` view selection files.

Layout::

    N                          <- number of reference views
    ref_id                     <- then, per view, two lines
    M src_id score src_id score ...
"""

from __future__ import annotations

from pathlib import Path

from mvs.errors import MVSInputError

# ref view id -> source views (id, score), best first
ViewPairs = dict[int, list[tuple[int, float]]]


def read_pair(path: str | Path) -> ViewPairs:
    """Read ``pair.txt`` into ``{ref_id: [(src_id, score), ...]}`` in file order."""
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text().splitlines()]
    except FileNotFoundError:
        raise MVSInputError("pair file not found", path) from None
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise MVSInputError("pair file is empty", path)

    def integer(token: str, line: int, what: str) -> int:
        try:
            return int(token)
        except ValueError:
            raise MVSInputError(f"{what} must be an integer, found {token!r}", path, line) from None

    count = integer(lines[0], 1, "view count")
    if count < 1:
        raise MVSInputError(f"view count must be >= 1, got {count}", path, 1)
    if len(lines) < 1 + 2 * count:
        raise MVSInputError(
            f"declares {count} views but has only {(len(lines) - 1) // 2} complete entries",
            path,
            len(lines) + 1,
        )
    pairs: ViewPairs = {}
    for k in range(count):
        ref_line, src_line = 2 + 2 * k, 3 + 2 * k
        ref = integer(lines[ref_line - 1], ref_line, "reference view id")
        if ref in pairs:
            raise MVSInputError(f"reference view {ref} is listed twice", path, ref_line)
        tokens = lines[src_line - 1].split()
        if not tokens:
            raise MVSInputError(f"missing source list for view {ref}", path, src_line)
        n = integer(tokens[0], src_line, "source count")
        if len(tokens) != 1 + 2 * n:
            raise MVSInputError(
                f"declares {n} source views but has {len(tokens) - 1} values (expected {2 * n})",
                path,
                src_line,
            )
        sources = []
        for j in range(n):
            src = integer(tokens[1 + 2 * j], src_line, "source view id")
            try:
                score = float(tokens[2 + 2 * j])
            except ValueError:
                raise MVSInputError(
                    f"score must be a number, found {tokens[2 + 2 * j]!r}", path, src_line
                ) from None
            if src == ref:
                raise MVSInputError(f"view {ref} lists itself as a source", path, src_line)
            sources.append((src, score))
        pairs[ref] = sources
    return pairs


def write_pair(path: str | Path, pairs: ViewPairs) -> None:
    out = [str(len(pairs))]
    for ref, sources in pairs.items():
        out.append(str(ref))
        out.append(" ".join([str(len(sources))] + [f"{s} {score:.4f}" for s, score in sources]))
    Path(path).write_text("\n".join(out) + "\n")
