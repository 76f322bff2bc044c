"""torchdeq.dropout on eqkernels.nn.dropout: the same layers, constructed with `dropout=`."""
from __future__ import annotations

from eqkernels.nn import dropout as _d
from eqkernels.nn.dropout import reset_dropout as _reset_dropout


class _Compat:
    """torchdeq's names: the probability is `dropout`; reset_mask(x) draws anew."""

    @property
    def dropout(self):
        return self.p

    def reset_mask(self, x=None):  # the next forward draws the mask (for its input's shape)
        super().reset_mask()


class VariationalDropout(_Compat, _d.VariationalDropout):
    def __init__(self, dropout=0.5):
        super().__init__(dropout)


def _channel_or_token(base):
    class Layer(_Compat, base):
        def __init__(self, dropout=0.5, token_first=True):
            super().__init__(dropout, token_first=token_first)
    Layer.__name__ = Layer.__qualname__ = base.__name__
    Layer.__doc__ = base.__doc__
    return Layer


VariationalDropout1d = _channel_or_token(_d.VariationalDropout1d)
VariationalDropout2d = _channel_or_token(_d.VariationalDropout2d)
VariationalDropout3d = _channel_or_token(_d.VariationalDropout3d)
VariationalDropToken1d = _channel_or_token(_d.VariationalDropToken1d)
VariationalDropToken2d = _channel_or_token(_d.VariationalDropToken2d)
VariationalDropToken3d = _channel_or_token(_d.VariationalDropToken3d)

def reset_dropout(model):
    """Forget every variational-dropout mask in model: the next forward draws new ones."""
    return _reset_dropout(model)


__all__ = ["VariationalDropout", "VariationalDropout1d", "VariationalDropout2d",
           "VariationalDropout3d", "VariationalDropToken1d", "VariationalDropToken2d",
           "VariationalDropToken3d", "reset_dropout"]
