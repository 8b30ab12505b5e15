"""The FIXED-mode box of spec §1.3, rule by rule."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from treadle.queue import resources as res

WORKER = {"cores": 4, "memory": 8000, "disk": 10000, "gpus": 0}


def test_nothing_declared_gets_the_whole_worker():
    assert res.box({}, WORKER) == WORKER


def test_proportional_to_the_most_demanding_declared_resource():
    # memory 2000 of 8000 -> p = 0.25: cores 1, disk 2500, gpus 0
    assert res.box({"memory": 2000}, WORKER) == {"cores": 1, "memory": 2000, "disk": 2500, "gpus": 0}
    # cores 2 of 4 -> p = 0.5
    assert res.box({"cores": 2}, WORKER) == {"cores": 2, "memory": 4000, "disk": 5000, "gpus": 0}
    # the largest proportion wins
    assert res.box({"cores": 1, "disk": 5000}, WORKER) == {"cores": 1, "memory": 4000, "disk": 5000, "gpus": 0}


def test_unset_values_never_below_one():
    assert res.box({"memory": 1}, WORKER) == {"cores": 1, "memory": 1, "disk": 1, "gpus": 0}


def test_gpus_declared_means_no_cores_unless_asked():
    w = {**WORKER, "gpus": 2}
    assert res.box({"gpus": 1}, w) == {"cores": 0, "memory": 4000, "disk": 5000, "gpus": 1}


def test_declared_at_or_above_largest_takes_whole_worker_for_unset():
    assert res.box({"cores": 4}, WORKER) == {"cores": 4, "memory": 8000, "disk": 10000, "gpus": 0}
    assert res.box({"memory": 9000}, WORKER) == {"cores": 4, "memory": 9000, "disk": 10000, "gpus": 0}


def test_category_minimum_is_a_floor():
    assert res.box({"cores": 1}, WORKER, {"memory": 3000})["memory"] == 3000
    assert res.box({"cores": 2}, WORKER, {"memory": 3000})["memory"] == 4000


def test_fits_and_overcommit_never_for_disk():
    total = WORKER
    assert res.fits({"cores": 3}, {"cores": 1}, total)
    assert not res.fits({"cores": 4}, {"cores": 1}, total)
    assert res.fits({"cores": 4}, {"cores": 1}, total, overcommit=2)
    assert not res.fits({"disk": 10000}, {"disk": 1}, total, overcommit=2)


def test_never_fits_when_above_largest():
    assert res.never_fits({"cores": 5}, WORKER)
    assert not res.never_fits({"cores": 4}, WORKER)


@given(
    st.dictionaries(st.sampled_from(["cores", "memory", "disk"]), st.integers(1, 20000), min_size=1),
    st.integers(1, 64),
    st.integers(1, 100000),
    st.integers(1, 100000),
)
def test_box_properties(declared, cores, memory, disk):
    worker = {"cores": cores, "memory": memory, "disk": disk, "gpus": 0}
    b = res.box(declared, worker)
    for r, v in declared.items():
        assert b[r] == v  # declared values are kept
    for r in ("cores", "memory", "disk"):
        if r not in declared:
            assert 1 <= b[r] <= max(1, worker[r])  # unset: at least 1, at most the worker
    assert b["gpus"] == 0
