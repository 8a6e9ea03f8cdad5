"""Entry point: `python -m pipeline [hydra overrides]`.

Heavy libraries load only after the config composed, so a bad override fails in about a second.
Known failures (bad config, bad input, failed checks) print one line and exit non-zero.
"""

import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach main(), which prints one line

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from pipeline.schema import register  # noqa: E402

register()


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    from pipeline.runner import run

    return run(cfg)


def one_line(err: BaseException) -> str:
    """Fold an exception (and a config error's cause) into one readable line."""
    parts = []
    while err is not None and len(parts) < 3:
        text = " ".join(line.strip() for line in str(err).strip().splitlines() if line.strip())
        if text and text not in parts:
            parts.append(text)
        err = err.__cause__
    return ": ".join(parts) or "unknown error"


def main() -> None:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from pipeline.errors import PipelineError

    try:
        _hydra_main()
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except (HydraException, OmegaConfBaseException) as err:
        print(f"config error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
