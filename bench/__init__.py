"""Benchmarks run by `make bench`. Each `bench/bench_*.py` has `main(argv) -> None` printing a table."""
