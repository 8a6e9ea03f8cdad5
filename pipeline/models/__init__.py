"""Model building blocks: factory, LightningModule, checkpoint loading."""
