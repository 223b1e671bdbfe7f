"""`python -m benchmarks [NAME ...] [--quick] [--out DIR] [--list]`: benchmarks.harness.main."""

from benchmarks.harness import main

if __name__ == "__main__":
    main()
