"""Drift detection on a simulated year of 311 traffic: delay and false alarms, over several seeds.

For each seed, :func:`monitoring.simulation.simulate_year` makes last year's traffic (the reference, no new
complaint) and this year's, where rental e-scooter complaints appear in Riverside from week 30 (30% of that
district's traffic on top of the usual); a small router trained on last year answers this year. The monitor
(:func:`monitoring.monitor`, weekly windows, the policy's ``drift_p`` and calibration) then reports drift per
column, district and week. Printed per seed and over all:

* detection delay: windows from the new complaint's first week until ``description`` is flagged in Riverside
  (0: flagged in its first week);
* false-alarm rate: the share of weeks with at least one drifted cell that the new complaint did not touch
  (every cell before week 30; after it, every district but Riverside, and in all districts together the
  columns the new complaint does not move: channel, hour, weekday), with seasons, holidays and the weekly
  cycle all present; the goal is at most 5%;
* the per-test false-alarm rate, and the estimated vs real accuracy gap (cells with >= 30 labels).

    PYTHONPATH=. .venv/bin/python bench/bench_monitoring.py [--seeds 1,2,3,4,5] [--quantile 0.9] [--drift-p 0.01]
"""

from __future__ import annotations

import argparse
import statistics
import time

from monitoring import MonitoringPolicy, monitor
from monitoring.simulation import score_detection, simulate_year


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--quantile", type=float, default=MonitoringPolicy().quantile)
    parser.add_argument("--drift-p", type=float, default=MonitoringPolicy().drift_p)
    parser.add_argument("--min-count", type=int, default=MonitoringPolicy().min_count)
    args = parser.parse_args()
    policy = MonitoringPolicy(drift_p=args.drift_p, quantile=args.quantile, min_count=args.min_count)
    print(f"policy: drift_p {policy.drift_p}, quantile {policy.quantile}, min_count {policy.min_count}, window 7d")
    delays, rates, tests, gaps = [], [], [], []
    for seed in [int(s) for s in args.seeds.split(",")]:
        started = time.perf_counter()
        sim = simulate_year(seed)
        report = monitor(sim.records, sim.reference, policy=policy)
        score = score_detection(report.drift, sim.season)
        gap = report.estimate_check["gap"].abs().mean() if len(report.estimate_check) else float("nan")
        delays.append(score.delay)
        rates.append(score.false_alarm_rate)
        tests.append(score.per_test_rate)
        gaps.append(gap)
        print(f"seed {seed}: delay {score.delay} windows (onset {score.onset}), false alarms "
              f"{score.false_alarm_windows}/{score.windows} weeks ({score.false_alarm_rate:.1%}), "
              f"{score.false_alarm_tests}/{score.tests} tests ({score.per_test_rate:.2%}), "
              f"|estimate - real| {gap:.3f}, {time.perf_counter() - started:.0f} s")
        for window, column, group in score.alarms:
            print(f"    false alarm: {window} {column} in {group}")
    found = [d for d in delays if d is not None]
    print(f"over {len(delays)} seeds: detected in {len(found)}, delay max {max(found) if found else '-'} "
          f"windows (mean {statistics.mean(found) if found else float('nan'):.1f}); false-alarm weeks "
          f"mean {statistics.mean(rates):.1%} (max {max(rates):.1%}); per test {statistics.mean(tests):.2%}; "
          f"mean |estimated - real accuracy| {statistics.mean(gaps):.3f}")


if __name__ == "__main__":
    main()
