"""What the benchmarks, the device check and the tests build to measure on: small bases and one-off specs."""
