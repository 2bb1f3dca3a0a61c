"""Drift detection on a simulated year of 311 traffic: delay and false alarms, over several seeds.

For each seed, :func:`monitoring.simulation.simulate_year` makes last year's traffic (the reference, with
seasons, holidays and the weekly cycle, and no new complaint) and two years to watch, answered by a small
router trained on last year:

* a **shifted** year, where rental e-scooter complaints appear in Riverside from week 30 (30% of that
  district's traffic on top of the usual): the **detection delay** is the number of weekly windows from the
  complaint's first week until ``description`` is flagged in Riverside (0: flagged in its first week);
  ``--share 0.1`` makes the new complaint a tenth of the district's traffic instead;
* a **control** year (another draw of the same city: seasons, holidays, weekly cycle, nothing new): the
  **false-alarm rate** is the share of its weeks in which any cell (any column, any district or all of them
  together) is flagged; the goal is at most 5%.

The monitor is :func:`monitoring.monitor` with weekly windows and the default policy (``drift_p`` 0.01,
Benjamini-Hochberg across columns and districts, calibration on last year's weeks). Printed as well: the
shifted year's false discoveries outside the shifted cells (after the onset Benjamini-Hochberg admits a
few beside the true ones, as a false-discovery rate does), and the gap between the accuracy estimated from
confidence and the real one (cells with >= 30 labels).

``--recorder`` measures instead what recording costs serving's hot path: 32 threads each call
``Recording.record`` (policy ``all``, the 311 masking, SQLite under a temporary home) for their share of
``--records`` answered rows; printed: microseconds per ``record`` call as the threads see it, and how many
records per second the writer thread masks and stores. (The end-to-end c32 throughput with recording off and
on is for ``bench/bench_serving.py`` once serving calls a recorder.)

    PYTHONPATH=. .venv/bin/python bench/bench_monitoring.py [--seeds 1,2,3,4,5] [--drift-p 0.01]
    PYTHONPATH=. .venv/bin/python bench/bench_monitoring.py --recorder [--records 20000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

from monitoring import MonitoringPolicy, monitor
from monitoring.simulation import score_detection, simulate_year
from projects.service_requests.season import SeasonSettings


def recording_cost(records: int) -> None:
    import tempfile
    import threading

    from monitoring import Recording, RecordMasking, RecordStore, new_answer_id
    from projects.service_requests import ServiceRequests

    masking = RecordMasking.for_use_case(ServiceRequests())
    row = {"description": "Pothole on Elm Street, call me at (555) 201-3344", "district": "Riverside",
           "channel": "web", "hour": 9, "weekday": 2}
    with tempfile.TemporaryDirectory() as home:
        recorder = Recording(RecordStore(f"sqlite:///{home}/records.db"), "all", masking, queue_size=records)
        per_thread = records // 32
        spent = [0.0] * 32

        def answer(i: int) -> None:
            for _ in range(per_thread):
                item = {"answer_id": new_answer_id(), "model": "service-requests-router", "version": "3",
                        "inputs": row, "answer": "roads", "confidence": 0.9, "latency_ms": 2.0}
                started = time.perf_counter()
                recorder.record(item)
                spent[i] += time.perf_counter() - started

        started = time.perf_counter()
        threads = [threading.Thread(target=answer, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        recorder.close()
        elapsed = time.perf_counter() - started
        stats = recorder.stats()
    print(f"record(): {sum(spent) / (per_thread * 32) * 1e6:.1f} us per call over {per_thread * 32} calls from 32 "
          f"threads; writer: {stats['written'] / elapsed:.0f} records/s masked and stored "
          f"({stats['written']} written, {stats['dropped']} dropped, {stats['failed']} failed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--drift-p", type=float, default=MonitoringPolicy().drift_p)
    parser.add_argument("--min-count", type=int, default=MonitoringPolicy().min_count)
    parser.add_argument("--share", type=float, default=0.3, help="the new complaint's share of its district")
    parser.add_argument("--recorder", action="store_true", help="measure what recording costs the hot path")
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args()
    if args.recorder:
        recording_cost(args.records)
        return
    policy = MonitoringPolicy(drift_p=args.drift_p, min_count=args.min_count)
    print(f"policy: drift_p {policy.drift_p}, min_count {policy.min_count}, window 7d; new complaint: "
          f"{args.share:.0%} of Riverside's traffic from week 30")
    delays, rates, collateral, gaps = [], [], [], []
    for seed in [int(s) for s in args.seeds.split(",")]:
        started = time.perf_counter()
        shifted = simulate_year(seed, SeasonSettings(new_kind_share=args.share))
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
