"""`python -m benchmarks [--quick]`: see benchmarks.suite."""

from benchmarks.suite import main

main()
