import pytest

from lorasweep.analysis import metrics
from lorasweep.definitions import stopping


def records(rewards, step_s=0.5, t0=0.0):
    return [
        {"step": i + 1, "reward_mean": r, "step_s": step_s, "t_start": t0 + i * step_s, "t_end": t0 + (i + 1) * step_s}
        for i, r in enumerate(rewards)
    ]


def test_trailing_means_wait_for_a_full_window():
    assert stopping.trailing_means([1, 2, 3, 4], 2) == [None, 1.5, 2.5, 3.5]


def test_steps_to_target_is_the_first_step_whose_trailing_mean_reaches_it():
    rewards = [0.2, 0.9, 0.95, 0.7, 0.95, 0.95]
    # windows of 2: -, .55, .925 -> step 3
    assert stopping.steps_to_target(rewards, 0.9, 2) == 3
    # window 3: -, -, .683, .85, .867, .867 -> never
    assert stopping.steps_to_target(rewards, 0.9, 3) is None


def test_a_single_high_step_does_not_reach_the_target_with_a_window():
    assert stopping.steps_to_target([0.1, 1.0, 0.1, 0.1], 0.9, 2) is None


def test_censored_workers_are_counted_not_averaged():
    by_seed = {0: records([0.9] * 5), 1: records([0.1] * 8), 2: records([0.5, 0.95, 0.95])}
    outcome = metrics.cell_outcome(by_seed, target=0.9, window=2, warmup=1)
    assert [w.steps_to_target for w in outcome.workers] == [2, None, 3]
    assert outcome.censored == 1 and outcome.converged == [2, 3]
    # the censored seed counts as its 8 steps (the horizon), never dropped: (2 + 8 + 3) / 3
    observations = metrics.seed_observations(outcome.workers, 8)
    assert metrics.restricted_mean(observations, 8) == pytest.approx(13 / 3)
    assert outcome.workers[1].censored and outcome.workers[1].steps_run == 8


def test_all_censored_cell_has_no_average_and_no_wall():
    outcome = metrics.cell_outcome({0: records([0.1] * 4)}, 0.9, 2, 0)
    estimate = metrics.steps_estimate(metrics.seed_observations(outcome.workers, 4), 4)
    assert outcome.converged == [] and outcome.censored == 1
    assert not estimate.reached and metrics.wall_interval(estimate, 0.5) is None


def test_median_step_time_drops_warmup_steps():
    recs = records([0.1] * 5)
    for r, s in zip(recs, [9.0, 8.0, 1.0, 2.0, 3.0]):
        r["step_s"] = s
    assert metrics.median_step_time(recs, warmup=2) == 2.0


def test_cell_step_time_uses_the_interval_where_all_workers_step():
    # seed 0 runs alone (fast) after seed 1 stopped; only the shared interval counts
    shared = records([0.1] * 4, step_s=1.0, t0=0.0)
    alone = [{"step": 5 + i, "reward_mean": 0.1, "step_s": 0.2, "t_start": 4.0 + 0.2 * i, "t_end": 4.2 + 0.2 * i} for i in range(10)]
    by_seed = {0: shared + alone, 1: records([0.1] * 4, step_s=1.0, t0=0.0)}
    assert metrics.cell_step_time(by_seed, warmup=1) == pytest.approx(1.0)
    assert metrics.median_step_time(by_seed[0], warmup=1) == pytest.approx(0.2)


def test_per_worker_step_times_are_the_figures_behind_the_cell_step_time():
    by_seed = {0: records([0.1] * 6, step_s=1.0), 1: records([0.1] * 6, step_s=3.0), 2: records([0.1] * 6, step_s=2.0)}
    for r, s in zip(by_seed[2], [2.0, 2.0, 2.0, 2.5, 2.5, 2.5]):  # a worker slowing down
        r["step_s"] = s
    outcome = metrics.cell_outcome(by_seed, target=0.9, window=2, warmup=2)
    # past warm-up the three never step at once here (seed 0 ends at 6 s, when seed 1's
    # third step starts), so each worker's post-warm-up steps count: seed 2's 2.0, 2.5 x3
    assert outcome.worker_step_times == pytest.approx({0: 1.0, 1: 3.0, 2: 2.5})
    assert outcome.step_time == pytest.approx(2.5) == metrics.cell_step_time(by_seed, warmup=2)
    assert metrics.worker_steady_step_times({0: records([0.1], step_s=1.0)}, warmup=2) == {0: None}


def test_wall_is_avg_steps_times_step_time():
    outcome = metrics.cell_outcome({0: records([1.0] * 3, step_s=0.5), 1: records([0.0, 1.0, 1.0, 1.0], step_s=0.5)}, 0.9, 2, 0)
    estimate = metrics.steps_estimate(metrics.seed_observations(outcome.workers, 10), 10)
    assert estimate.value == pytest.approx(2.5)
    assert metrics.wall_interval(estimate, outcome.step_time)[0] == pytest.approx(2.5 * 0.5)


def test_early_reward_is_the_mean_of_the_first_steps_rewards():
    rewards = [0.1, 0.2, 0.6, 0.9, 0.9]
    assert metrics.early_reward(rewards, 3) == pytest.approx(0.3)
    assert metrics.early_reward(rewards, 5) == pytest.approx(0.54)
    assert metrics.early_reward(rewards, 6) is None  # a seed with fewer steps has none
    assert metrics.early_reward(rewards, None) is None
    outcome = metrics.cell_outcome({0: records(rewards)}, 0.9, 2, 0, early_steps=2)
    assert outcome.workers[0].early_reward == pytest.approx(0.15)


def test_the_stop_rule_waits_for_the_early_stretch_but_counts_the_first_crossing():
    rule = stopping.StopRule(target=0.5, window=2, min_steps=4)
    stops = [rule.add(r) for r in [0.6, 0.6, 0.0, 0.0, 0.0]]
    # reached at step 2 (trailing 0.6), stops only at step 4, although the trailing mean fell back
    assert stops == [False, False, False, True, True] and rule.reached_at == 2 and rule.reached
    assert stopping.steps_to_target([0.6, 0.6, 0.0, 0.0], 0.5, 2) == 2
    plain = stopping.StopRule(target=0.5, window=2)
    assert [plain.add(r) for r in [0.6, 0.6]] == [False, True]


def test_a_tie_with_the_target_is_decided_alike_by_the_worker_and_the_tables():
    # window 5, target 0.7: the last five sum to 3.5 (their mean is exactly 0.7 on paper);
    # a running sum (add .6, drop .53, ...) lands at 0.6999999999999998 and called this
    # seed censored although the worker, summing the window afresh, had stopped at step 6
    rewards = [0.53, 0.6, 0.65, 0.9, 0.75, 0.6]
    worker = stopping.TargetTracker(target=0.7, window=5)
    stopped_at = next(step for step, r in enumerate(rewards, start=1) if worker.add(r))  # as worker.train does
    assert stopped_at == 6 == stopping.steps_to_target(rewards, 0.7, 5)
    assert worker.trailing == 0.7 == stopping.trailing_means(rewards, 5)[-1]
    outcome = metrics.cell_outcome({0: records(rewards)}, target=0.7, window=5, warmup=0)
    assert outcome.workers[0].steps_to_target == 6 and outcome.censored == 0


def test_trailing_mean_is_the_exact_sum_of_the_window_rounded_once():
    assert stopping.trailing_mean([0.1, 0.2], 3) is None
    assert stopping.trailing_mean([0.9, 0.1, 0.2, 0.3], 3) == 0.6 / 3  # fsum(.1, .2, .3) is 0.6, not 0.6000000000000001
    tracker = stopping.TargetTracker(target=0.5, window=2)
    assert [tracker.add(r) for r in (0.9, 0.05, 0.5, 0.5)] == [False, False, False, True]
    assert tracker.trailing == 0.5


def timed(spans_and_times):
    """Records of one worker from (t_start, t_end, step_s) per step."""
    return [{"step": i + 1, "reward_mean": 0.1, "step_s": s, "t_start": a, "t_end": b}
            for i, (a, b, s) in enumerate(spans_and_times)]


def test_the_steady_window_runs_from_the_last_first_steady_step_to_the_first_last_step():
    # warm-up 1. Seed 0 steps each second from 0 to 7; seed 1 has a 2 s warm-up step and stops at 5.
    # The window: starts max(1, 2) = 2, ends min(7, 5) = 5. Steps inside [2, 5], ends included:
    # seed 0: [2,3] [3,4] [4,5] -> 2, 3, 4, median 3; seed 1: [2,3] [3,4] [4,5] -> 1.5, 2.5, 3.5, median 2.5.
    # The cell: median of 3 and 2.5 = 2.75 (all post-warm-up steps would give 3.5 for seed 0).
    by_seed = {
        0: timed([(0, 1, 10.0), (1, 2, 1.0), (2, 3, 2.0), (3, 4, 3.0), (4, 5, 4.0), (5, 6, 5.0), (6, 7, 6.0)]),
        1: timed([(0, 2, 10.0), (2, 3, 1.5), (3, 4, 2.5), (4, 5, 3.5)]),
    }
    assert metrics.steady_window(by_seed, warmup=1) == (2, 5)
    assert metrics.worker_steady_step_times(by_seed, warmup=1) == {0: 3.0, 1: 2.5}
    assert metrics.cell_step_time(by_seed, warmup=1) == 2.75
    assert metrics.steady_window({**by_seed, 2: timed([(0, 1, 1.0)])}, warmup=1) is None  # a worker never past warm-up


def test_workers_that_never_step_together_use_their_own_post_warm_up_steps():
    # seed 1 starts when seed 0 has stopped: the window [4, 3] holds no step of either, so each
    # worker's steps past warm-up count, the warm-up step (9 s) not among them
    by_seed = {0: timed([(0, 1, 9.0), (1, 2, 1.0), (2, 3, 2.0)]), 1: timed([(3, 4, 9.0), (4, 5, 4.0), (5, 6, 6.0)])}
    assert metrics.worker_steady_step_times(by_seed, warmup=1) == {0: 1.5, 1: 5.0}


def test_a_worker_outcome_carries_its_seed_steps_final_trailing_mean_and_median_step():
    recs = records([0.2, 0.4, 0.9, 0.6])
    for r, s in zip(recs, [5.0, 1.0, 2.0, 4.0]):
        r["step_s"] = s
    outcome = metrics.worker_outcome(7, recs, target=0.65, window=2, warmup=1)
    # trailing means (window 2): -, 0.3, 0.65 (reached at step 3), 0.75; median of 1, 2, 4 = 2
    assert outcome == metrics.WorkerOutcome(seed=7, steps_run=4, steps_to_target=3,
                                            final_trailing_reward=pytest.approx(0.75), median_step_s=2.0)
    assert metrics.worker_outcome(7, [], 0.65, 2, 1).final_trailing_reward is None
    assert metrics.median_step_time(recs, warmup=4) is None  # no step past warm-up
    cell = metrics.cell_outcome({5: recs, 3: records([0.1])}, target=0.65, window=2, warmup=1)
    assert [w.seed for w in cell.workers] == [3, 5]


def test_a_tracker_has_no_trailing_mean_before_its_window_is_full():
    tracker = stopping.TargetTracker(target=0.0, window=2)
    assert tracker.trailing is None and not tracker.reached
    assert not tracker.add(1.0) and tracker.trailing is None
