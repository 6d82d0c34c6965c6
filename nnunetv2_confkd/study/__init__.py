"""Studies: the benchmark runner (``confkd_benchmark``: benchmark, runs, runner) and its report (records, report),
presets, evaluation, training cost (``confkd_benchmark_cost``: benchmark_cost, cost_workers, cost_report, step_cost),
provenance, the demo."""
