"""Drift detection on a simulated year of 311 traffic: delay and false alarms, over several seeds.

For each seed, :func:`monitoring.simulation.simulate_year` makes last year's traffic (the reference, with
seasons, holidays and the weekly cycle, and no new complaint) and two years to watch, answered by a small
router trained on last year:

* a **shifted** year, where rental e-scooter complaints appear in Riverside from week 30 (30% of that
  district's traffic on top of the usual): the **detection delay** is the number of weekly windows from the
  complaint's first week until ``description`` is flagged in Riverside (0: flagged in its first week);
* a **control** year (another draw of the same city: seasons, holidays, weekly cycle, nothing new): the
  **false-alarm rate** is the share of its weeks in which any cell (any column, any district or all of them
  together) is flagged; the goal is at most 5%.

The monitor is :func:`monitoring.monitor` with weekly windows and the default policy (``drift_p`` 0.01,
Benjamini-Hochberg across columns and districts, calibration on last year's weeks). Printed as well: the
shifted year's false discoveries outside the shifted cells (after the onset Benjamini-Hochberg admits a
few beside the true ones, as a false-discovery rate does), and the gap between the accuracy estimated from
confidence and the real one (cells with >= 30 labels).

    PYTHONPATH=. .venv/bin/python bench/bench_monitoring.py [--seeds 1,2,3,4,5] [--drift-p 0.01]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

from monitoring import MonitoringPolicy, monitor
from monitoring.simulation import score_detection, simulate_year


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--drift-p", type=float, default=MonitoringPolicy().drift_p)
    parser.add_argument("--min-count", type=int, default=MonitoringPolicy().min_count)
    args = parser.parse_args()
    policy = MonitoringPolicy(drift_p=args.drift_p, min_count=args.min_count)
    print(f"policy: drift_p {policy.drift_p}, min_count {policy.min_count}, window 7d")
    delays, rates, collateral, gaps = [], [], [], []
    for seed in [int(s) for s in args.seeds.split(",")]:
        started = time.perf_counter()
        shifted = simulate_year(seed)
        report = monitor(shifted.records, shifted.reference, policy=policy)
        score = score_detection(report.drift, shifted.season)
        control = simulate_year(seed + 500, replace(shifted.season, new_kind_week=None), base=shifted)
        quiet = score_detection(monitor(control.records, control.reference, policy=policy).drift, control.season)
        gap = report.estimate_check["gap"].abs().mean() if len(report.estimate_check) else float("nan")
        delays.append(score.delay)
        rates.append(quiet.false_alarm_rate)
        collateral.append(score.per_test_rate)
        gaps.append(gap)
        print(f"seed {seed}: delay {score.delay} windows (onset {score.onset}); control year: false alarms in "
              f"{quiet.false_alarm_windows}/{quiet.windows} weeks ({quiet.false_alarm_rate:.1%}), "
              f"{quiet.false_alarm_tests}/{quiet.tests} tests; shifted year outside the shift: "
              f"{score.false_alarm_tests}/{score.tests} tests ({score.per_test_rate:.2%}); "
              f"|estimate - real| {gap:.3f}; {time.perf_counter() - started:.0f} s")
        for window, column, group in quiet.alarms:
            print(f"    control false alarm: {window} {column} in {group}")
    found = [d for d in delays if d is not None]
    print(f"over {len(delays)} seeds: detected in {len(found)}/{len(delays)}, delay max "
          f"{max(found) if found else '-'} windows (mean {statistics.mean(found) if found else float('nan'):.1f}); "
          f"control false-alarm weeks mean {statistics.mean(rates):.1%} (max {max(rates):.1%}); shifted year "
          f"outside the shift per test {statistics.mean(collateral):.2%}; mean |estimated - real accuracy| "
          f"{statistics.mean(gaps):.3f}")


if __name__ == "__main__":
    main()
