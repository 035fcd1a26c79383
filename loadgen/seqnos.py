"""Sets of seqNos as sorted, inclusive ``(first, last)`` ranges.

A transaction's acknowledged seqNos are almost always one run (0..n), so the ledger stores
them as ranges: one pair per transaction instead of one number per message. The CSMS side
(csms_stub's ``transaction_event`` table) is read in the same form, and reconciliation
compares the two without ever expanding a whole run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Ranges = list[tuple[int, int]]


def from_numbers(numbers: Iterable[int]) -> Ranges:
    """The ranges covering exactly ``numbers`` (any order, repeats allowed)."""
    ranges: Ranges = []
    for number in sorted(set(numbers)):
        if ranges and ranges[-1][1] + 1 == number:
            ranges[-1] = (ranges[-1][0], number)
        else:
            ranges.append((number, number))
    return ranges


def add(ranges: Ranges, number: int) -> None:
    """Add one number in place; O(1) for the usual case, the next number of the last run."""
    if ranges and ranges[-1][1] + 1 == number:
        ranges[-1] = (ranges[-1][0], number)
    elif not ranges or number > ranges[-1][1]:
        ranges.append((number, number))
    elif not contains(ranges, number):  # out of order: rare, so rebuilding is fine
        ranges[:] = merge(ranges, [(number, number)])


def normalize(pairs: Iterable[Sequence[int]]) -> Ranges:
    """Ranges as read back from msgpack / JSON (lists), sorted and merged."""
    return merge([(int(first), int(last)) for first, last in pairs])


def merge(*sets: Ranges) -> Ranges:
    """The union of range sets, sorted and with adjacent or overlapping runs joined."""
    merged: Ranges = []
    for first, last in sorted(pair for ranges in sets for pair in ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(last, merged[-1][1]))
        else:
            merged.append((first, last))
    return merged


def contains(ranges: Ranges, number: int) -> bool:
    return any(first <= number <= last for first, last in ranges)


def count(ranges: Ranges) -> int:
    return sum(last - first + 1 for first, last in ranges)


def missing(wanted: Ranges, have: Ranges) -> Ranges:
    """The numbers of ``wanted`` that ``have`` lacks, as ranges (both sorted and merged)."""
    result: Ranges = []
    for first, last in wanted:
        start = first
        for have_first, have_last in have:
            if have_last < start:
                continue
            if have_first > last:
                break
            if have_first > start:
                result.append((start, have_first - 1))
            start = max(start, have_last + 1)
            if start > last:
                break
        if start <= last:
            result.append((start, last))
    return result


def render(ranges: Ranges) -> str:
    """``0-2, 5``: how a person reads them."""
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)
