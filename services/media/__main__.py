"""``python -m services.media`` serves; ``python -m services.media fsck [--repair]`` checks."""

from __future__ import annotations

import sys

from services.media.settings import SERVICE, load_settings
from shared.service import load_or_exit, run


def main(argv: list[str]) -> int:
    if argv[:1] == ["fsck"]:
        from services.media.fsck import main as fsck_main

        return fsck_main(argv[1:])
    if argv:
        print("usage: python -m services.media [fsck [--repair]]", file=sys.stderr)
        return 2
    from services.media.app import create_app

    settings = load_or_exit(load_settings, SERVICE)
    run(create_app(settings), service=SERVICE, host=settings.common.host,
        port=settings.common.port, log_level=settings.common.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
