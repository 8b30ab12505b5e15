"""Count the differing bytes of two items: the benchmark's Python callables.

``bitdiff`` takes the items' bytes and XORs them as big integers, whose zero
bytes are the positions where the items agree; ``bitdiff_batched`` does a whole
block with numpy. Both equal ``cmp -l a b | wc -l`` for equal-size files.
"""

from treadle.allpairs import batched, takes_bytes


@takes_bytes
def bitdiff(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    x = int.from_bytes(a[:n], "big") ^ int.from_bytes(b[:n], "big")
    return n - x.to_bytes(n, "big").count(0) + abs(len(a) - len(b))


@batched
@takes_bytes
def bitdiff_batched(items_a: list, items_b: list):
    import numpy

    cols = numpy.array([numpy.frombuffer(b, dtype=numpy.uint8) for b in items_b])
    return [numpy.count_nonzero(cols != numpy.frombuffer(a, dtype=numpy.uint8), axis=1)
            for a in items_a]
