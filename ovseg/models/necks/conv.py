"""``ConvNormAct``: convolution, optional BatchNorm and ReLU (mmcv's ``ConvModule`` defaults).

The convolution has a bias only without a norm layer; weights start from Kaiming-normal
(``fan_out``, ReLU gain), biases at 0, BatchNorm at (1, 0), as ``ConvModule.init_weights`` does.
The norm layer is named ``bn`` (parameter-wise optimiser rules that match ``norm`` by name leave
it alone, as in the reference).
"""

from __future__ import annotations

from torch import Tensor, nn


class ConvNormAct(nn.Module):
    """``(B, C_in, H, W)`` -> ``(B, C_out, H', W')``: conv -> BatchNorm (optional) -> ReLU (optional)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        padding: int = 0,
        norm: bool = True,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=padding, bias=not norm
        )
        self.bn = nn.BatchNorm2d(out_channels) if norm else None
        self.act = nn.ReLU(inplace=True) if act else None
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)
        if self.bn is not None:
            nn.init.ones_(self.bn.weight)
            nn.init.zeros_(self.bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.act is not None:
            x = self.act(x)
        return x
