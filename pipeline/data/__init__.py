"""Data building blocks: sources -> index, statistics, transforms, datamodule. No Hydra, no stages."""
