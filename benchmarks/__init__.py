"""The softmaxreg benchmark suite: every figure measured in one run, on the same data.

    python -m benchmarks                              # standard profile (~11 min, 2-core CPU)
    python -m benchmarks --profile full               # the committed report (35-45 min)
    python -m benchmarks --quick                      # smoke check, under a minute
    python -m benchmarks.compare BASE NEW             # two runs figure by figure, with noise
    python -m benchmarks --quick --synthetic --out /tmp/bench   # no data needed
    python -m benchmarks --data-root ./data --out benchmarks/report --sections scaling

Benchmarks (one module each): `tutorial_speed` (the tutorial's DataLoader pipeline vs the
trainer at bs 100), `scaling` (epoch time and throughput for bs 16-4096 vs a matmul floor),
`time_to_accuracy` (best lr per batch size, then seconds to 92% validation accuracy),
`tutorial_bug` (the tutorial's double softmax vs logits), `tracking_overhead` (MLflow logging
per trial), `sweep_throughput` (trials per minute of the default sweep), `sweep_workers` (the
same with 1 and 2 worker processes, side by side), `fashion_mnist` (the
time-to-accuracy table on Fashion-MNIST).

Output in `--out` (default ./benchmark-results): report.md, one CSV per table, PNG plots,
rounds.csv and environment.json (what `benchmarks.compare` reads), and an
MLflow store (sqlite:///<out>/mlflow.db, artifacts in <out>/mlartifacts) with experiment
`benchmarks`: one parent run per suite run, one child run per benchmark. The committed copy of
the report is benchmarks/report/report.md.
"""
