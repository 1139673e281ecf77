"""The compute limit a sweep is judged against: its FLOP count and the probes' rates."""

from __future__ import annotations

import pytest

from benchmarks.matmul_limit import EVAL_SHAPE, limit_seconds, prepared, rates, step_flops


def test_a_study_s_flops_count_two_matmuls_per_trained_and_one_per_evaluated_example():
    # 3 trial-epochs at batch 100 on 1,000 examples (10 steps each), 500 evaluated per epoch.
    rate = {100: 1e9, EVAL_SHAPE: 2e9}
    flops, seconds = limit_seconds({100: 3}, 8, 1000, 500, rate)
    train = 3 * 1000 * 2 * (2 * 784 * 10)
    evaluate = 3 * 500 * (2 * 784 * 10)
    assert flops == pytest.approx(train + evaluate)
    assert seconds == pytest.approx(train / 1e9 + evaluate / 2e9)
    # A last short batch is a whole step of the population's shape: 1,001 examples, 11 steps.
    assert limit_seconds({100: 1}, 8, 1001, 0, rate)[0] == pytest.approx(11 * step_flops(1, 100))


def test_the_probe_s_work_is_the_population_step_s_two_matmuls():
    work, flops = prepared(members=4, batch_size=16)
    assert flops == 2 * 2 * 784 * 10 * 4 * 16
    work()  # runs: the shapes fit (40 x 784) @ (784 x 16) and (40 x 16) @ (16 x 784)
    _, eval_flops = prepared(members=4, batch_size=EVAL_SHAPE)
    assert eval_flops > flops


@pytest.mark.timeout(120)
def test_probes_measure_one_and_all_processes_at_every_shape():
    measured = rates(members=2, batch_sizes=(64,), seconds=0.05, cores=2)
    assert [m.batch_size for m in measured] == [64, EVAL_SHAPE]
    for shape in measured:
        assert shape.processes == 2
        # Real rates: above a megaflop per second, below what 2 cores could ever do.
        assert 1e6 < shape.one_process < 1e12 and 1e6 < shape.all_processes < 2e12
