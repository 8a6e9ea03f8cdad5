"""Bounds on what a run, predict and serve decode: dependency-free, so that scripts/predict.py and the
config schema both read them without importing each other's worlds."""

# data.max_pixels' default; export writes the run's cap into the model, where predict and serve read it. The
# largest common camera sensors (~61 MP) pass; a 250 KB PNG can declare 144 megapixels (0.4 GB decoded).
MAX_PIXELS = 64_000_000
