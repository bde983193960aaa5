"""What the two commands share: bad arguments and bad configuration files
are one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import sys

from . import config


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message}\n")


def load_config(prog: str, defaults: str, groups: str) -> config.Config | None:
    """Both files, or None after printing the one line that says what is
    wrong and where (the caller exits with 2)."""
    try:
        return config.load(defaults, groups)
    except config.ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return None
