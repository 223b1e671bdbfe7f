"""The test suite. A package, so `tests` here wins over the top-level `tests` package that
torch-fidelity (FID / KID) installs into site-packages."""
