"""Measure training and data throughput: `python src/benchmark.py [overrides]`.

Hydra composes `conf/benchmark.yaml` (sections template, data, twins, epoch, towers, decode,
memory; see docs/performance/index.md); the tables go to benchmark.md and benchmark.csv in
logs/benchmark/runs/<time>/.
"""

from classicnets.cli import benchmark_main

if __name__ == "__main__":
    benchmark_main()
