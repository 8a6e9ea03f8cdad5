"""`python -m pipeline [overrides] --help`: the config groups and the composed config.

Not Hydra's own help: Hydra lists each group's options by deep-copying its config repository once per group,
hydra/ groups included, most of the time a `--help` takes (docs/design.md). Here the options are the file
names under conf/, and the config is composed once with the overrides given. `--hydra-help` is still Hydra's.

Hydra's compose API is imported only when help is asked for.
"""

import difflib
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "conf"
HELP_FLAGS = ("--help", "-h")


def wants_help(argv: list[str]) -> bool:
    return any(arg in HELP_FLAGS for arg in argv)


def config_groups(conf: Path = CONF) -> dict[str, list[str]]:
    """Group -> its options (YAML files), for every group folder under conf/ but Hydra's own."""
    groups: dict[str, list[str]] = {}
    for path in sorted(conf.rglob("*.yaml")):
        group = path.parent.relative_to(conf).as_posix()
        if group != "." and group.split("/")[0] != "hydra":
            groups.setdefault(group, []).append(path.stem)
    return groups


def help_text(argv: list[str]) -> str:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    overrides = [arg for arg in argv if not arg.startswith("-")]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    groups = "\n".join(f"{group}: {', '.join(options)}" for group, options in config_groups().items())
    return (
        "python -m pipeline [group=option ...] [key=value ...]   (make train ..., make smoke ...)\n\n"
        "== Configuration groups ==\nCompose your configuration from those groups (group=option)\n\n"
        f"{groups}\n\n== Config ==\nOverride anything in the config (foo.bar=value)\n\n"
        f"{OmegaConf.to_yaml(cfg)}"
    )


def nearest_key(key: str, argv: list[str]) -> str | None:
    """The config key closest to a mistyped `key` (data.batchsize -> data.batch_size): the config composed
    from the other overrides, Hydra's own node included, its keys matched by spelling."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    others = [a for a in argv if not a.startswith("-") and "=" in a and a.split("=")[0].lstrip("+~") != key]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="config", overrides=others, return_hydra_config=True)
    except Exception:  # the other overrides are wrong too: no suggestion rather than a second error
        return None
    keys = list(dotted_keys(OmegaConf.to_container(cfg, resolve=False)))
    parent, _, leaf = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in keys if k.rpartition(".")[0] == parent}
    if siblings:  # a known section: the nearest of its own keys, or none (a shared prefix proves nothing)
        close = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.7)
        return siblings[close[0]] if close else None
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    return close[0] if close else None


def dotted_keys(node, prefix: str = ""):
    if isinstance(node, dict):
        for name, value in node.items():
            yield f"{prefix}{name}"
            yield from dotted_keys(value, f"{prefix}{name}.")
