"""The streaming trainer's background read-ahead: the same items in the same order, at most two
alive, the producer's errors raised in the consumer, and a closed consumer stops the producer."""

from __future__ import annotations

import threading
import time

import pytest

from bonmf_pipe.trainer.data import BUFFERS_ALIVE, read_ahead


def test_items_arrive_in_order():
    assert list(read_ahead(iter(range(50)))) == list(range(50))
    assert list(read_ahead(iter([]))) == []


def test_the_producer_never_runs_more_than_one_item_ahead():
    made, alive, most = [], set(), [0]

    def items():
        for i in range(8):
            alive.add(i)
            most[0] = max(most[0], len(alive))
            made.append(i)
            yield i

    for i in read_ahead(items()):
        time.sleep(0.02)  # the producer has every chance to run ahead
        assert made[-1] <= i + 1
        alive.discard(i)
    assert most[0] <= BUFFERS_ALIVE == 2


def test_an_error_in_the_producer_is_raised_in_the_consumer():
    def items():
        yield 1
        raise ValueError("row group 7 is corrupt")

    got = []
    with pytest.raises(ValueError, match="row group 7"):
        for x in read_ahead(items()):
            got.append(x)
    assert got == [1]


def test_closing_the_consumer_stops_the_producer():
    before = threading.active_count()
    gen = read_ahead(iter(range(1_000_000)))
    assert next(gen) == 0
    gen.close()
    assert threading.active_count() == before
