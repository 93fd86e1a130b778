"""bonmf-pipe benchmarks: `python -m benchmarks [--suite ...] [--quick]`.

Every speed figure is paired with a ceiling measured in the same run, and the ratio is
reported; results land in `benchmarks/results/<suite>-<machine>.json`.
"""
