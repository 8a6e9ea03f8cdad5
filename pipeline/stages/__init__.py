"""The six stages. Each exposes `run(cfg, ctx, tracker) -> ctx` and never imports another stage."""
