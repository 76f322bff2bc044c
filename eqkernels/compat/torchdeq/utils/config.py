"""torchdeq.utils.config: DEQConfig, a dict view of any configuration object."""
from __future__ import annotations

from eqkernels.compat.torchdeq._options import to_dict


class DEQConfig:
    """config: None | dict | argparse.Namespace | DEQConfig | object with attributes.

    Holds a copy (torchdeq's holds the caller's dict, so its update() also changes the
    caller's Namespace; here the caller's object is left alone)."""

    def __init__(self, config):
        self.config = to_dict(config)

    def get(self, key, default=None):
        return self.config.get(key, default)

    def update(self, **kwargs):
        self.config.update(kwargs)

    def __contains__(self, key):
        return key in self.config

    def __repr__(self):
        return f"DEQConfig({self.config!r})"


__all__ = ["DEQConfig"]
