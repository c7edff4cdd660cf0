"""Dense (per-patch) features from an open_clip ``VisionTransformer``, with last-block variants.

Training-free open-vocabulary segmentation methods keep every CLIP block but the last as it is and
change how the last block mixes tokens:

===========  ==========================================  ========  =====
mode         attention weights of the last block          residual  FFN
===========  ==========================================  ========  =====
vanilla      softmax(q k^T s)                             kept      kept
maskclip     identity (each token keeps its own value)    kept      kept
sclip        softmax(q q^T s) + softmax(k k^T s)          kept      kept
clearclip    softmax(q q^T s)                             dropped   dropped
naclip       softmax(k k^T s + G)                         dropped   dropped
===========  ==========================================  ========  =====

``s`` is ``head_dim ** -0.5`` and ``G`` a Gaussian neighbourhood bias over the patch grid
(:func:`gaussian_neighbourhood_bias`). The output of the last block then goes through ``ln_post``
and the visual projection, exactly as the class token does in CLIP, giving tokens in the joint
image-text space.

Tensors: images ``(B, 3, H, W)`` normalised with the model's mean/std; token sequences
``(B, 1 + h*w, C)`` batch-first with the class token first and patches in row-major order.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ovseg.errors import ConfigError

DENSE_MODES = ("vanilla", "maskclip", "sclip", "clearclip", "naclip")

# (residual kept, FFN kept) for each mode's last block.
_LAST_BLOCK_SKIPS = {
    "vanilla": (True, True),
    "maskclip": (True, True),
    "sclip": (True, True),
    "clearclip": (False, False),
    "naclip": (False, False),
}


def check_dense_mode(mode: str) -> str:
    if mode not in DENSE_MODES:
        raise ConfigError(f"Unknown dense_mode {mode!r}; choose one of {', '.join(DENSE_MODES)}.")
    return mode


def interpolate_pos_embed(pos_embed: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Resize a positional embedding ``(1 + g*g, C)`` to a ``(h, w)`` patch grid -> ``(1 + h*w, C)``.

    The class-token entry is kept. The patch entries are resized bicubically
    (``align_corners=False``) with the scale factor ``((h + 0.1) / g, (w + 0.1) / g)``, as the
    reference code of SCLIP, ClearCLIP and NACLIP does it; the output grid is ``(h, w)`` but the
    sampling positions follow that factor, which differs slightly from ``size=(h, w)``.
    Unchanged when the grid already matches.
    """
    num_patches = pos_embed.shape[0] - 1
    src = int(round(math.sqrt(num_patches)))
    if src * src != num_patches:
        raise ConfigError(f"Positional embedding of {num_patches} patches is not a square grid.")
    h, w = grid_hw
    if (src, src) == (h, w):
        return pos_embed
    cls_pos, patch_pos = pos_embed[:1], pos_embed[1:]
    patch_pos = patch_pos.reshape(1, src, src, -1).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(
        patch_pos.float(),
        scale_factor=((h + 0.1) / src, (w + 0.1) / src),
        mode="bicubic",
        align_corners=False,
    )
    if patch_pos.shape[-2:] != (h, w):
        raise AssertionError(f"interpolated grid {tuple(patch_pos.shape[-2:])} != {(h, w)}")
    patch_pos = patch_pos.to(pos_embed.dtype).permute(0, 2, 3, 1).reshape(h * w, -1)
    return torch.cat([cls_pos, patch_pos], dim=0)


def gaussian_neighbourhood_bias(
    grid_hw: tuple[int, int], std: float = 5.0, *, device=None, dtype=torch.float32
) -> torch.Tensor:
    """NACLIP's neighbourhood bias over a patch grid, padded with zeros for the class token.

    Entry ``[i, j]`` (patches ``i``, ``j`` at grid coordinates ``p_i``, ``p_j``) is
    ``exp(-||p_i - p_j||^2 / (2 std^2))``: 1 on the diagonal, falling with grid distance.
    Row and column 0 (the class token) are 0. Shape ``(1 + h*w, 1 + h*w)``.
    """
    h, w = grid_hw
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float64),
        torch.arange(w, device=device, dtype=torch.float64),
        indexing="ij",
    )
    coords = torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=1)
    dist2 = torch.cdist(coords, coords).pow(2)
    bias = torch.zeros(h * w + 1, h * w + 1, device=device, dtype=torch.float64)
    bias[1:, 1:] = torch.exp(-dist2 / (2.0 * std**2))
    return bias.to(dtype)


def last_block_attention(
    attn: nn.MultiheadAttention,
    x: torch.Tensor,
    mode: str,
    grid_hw: tuple[int, int],
    naclip_std: float = 5.0,
    fused: bool = False,
) -> torch.Tensor:
    """The modified self-attention of the last block, including its output projection.

    ``x`` is the already layer-normed input ``(B, L, C)``; returns ``(B, L, C)``. ``fused``
    runs the two projections through :func:`_linear` (ovseg's path; the bias inside the
    matrix product on the CPU), otherwise through ``F.linear`` and the ``out_proj`` module.
    """
    batch, length, width = x.shape
    heads = attn.num_heads
    head_dim = width // heads
    linear = _linear if fused else F.linear
    q, k, v = linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(batch, length, heads, head_dim).transpose(1, 2) for t in (q, k, v))
    # every branch uses the default attention scale head_dim ** -0.5
    if mode == "maskclip":
        out = v
    elif mode == "vanilla":
        out = F.scaled_dot_product_attention(q, k, v)
    elif mode == "sclip":
        # (softmax(qq^T s) + softmax(kk^T s)) v, as two fused attention calls
        out = F.scaled_dot_product_attention(q, q, v) + F.scaled_dot_product_attention(k, k, v)
    elif mode == "clearclip":
        out = F.scaled_dot_product_attention(q, q, v)
    elif mode == "naclip":
        bias = gaussian_neighbourhood_bias(grid_hw, naclip_std, device=x.device, dtype=x.dtype)
        out = F.scaled_dot_product_attention(k, k, v, attn_mask=bias)
    else:
        check_dense_mode(mode)
        raise AssertionError("unreachable")
    out = out.transpose(1, 2).reshape(batch, length, width)
    if fused:
        return _linear(out, attn.out_proj.weight, attn.out_proj.bias)
    return attn.out_proj(out)


def _fusable(block: nn.Module) -> bool:
    """Whether :func:`fused_block` computes ``block(x)``: an open_clip self-attention block
    (pre-norm, batch-first ``nn.MultiheadAttention`` with a packed input projection)."""
    attn = getattr(block, "attn", None)
    return (
        isinstance(attn, nn.MultiheadAttention)
        and attn.batch_first
        and attn.in_proj_weight is not None
        and attn.bias_k is None
        and not attn.add_zero_attn
        and not hasattr(block, "ln_1_kv")
        and all(hasattr(block, name) for name in ("ln_1", "ls_1", "ln_2", "mlp", "ls_2"))
    )


def _onednn_linear_available() -> bool:
    ops = getattr(torch.ops, "mkldnn", None)
    return torch.backends.mkldnn.is_available() and hasattr(ops, "_linear_pointwise")


def _onednn_bf16_available() -> bool:
    """Whether oneDNN has bfloat16 matrix kernels on this CPU (AVX-512 BF16 / AMX; on a CPU
    with AVX2 alone ``_linear_pointwise`` refuses bfloat16 inputs)."""
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


_ONEDNN_LINEAR = _onednn_linear_available()
_ONEDNN_DTYPES = (torch.float32, torch.bfloat16) if _onednn_bf16_available() else (torch.float32,)


def _linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False
) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, then exact GELU when ``gelu``, for ``(..., C_in)``.

    On the CPU (float32, and bfloat16 where oneDNN has bfloat16 kernels) this is one oneDNN
    call with the bias and the GELU applied inside the matrix product; PyTorch's ``addmm``
    first copies the bias into the whole output and GELU makes another pass over it. Elsewhere, or where the op is missing, it is
    ``F.linear`` (+ ``F.gelu``). Same arithmetic up to float32 summation order.
    """
    if (
        _ONEDNN_LINEAR
        and x.device.type == "cpu"
        and x.dtype in _ONEDNN_DTYPES
        and weight.dtype == x.dtype
        and not torch.is_grad_enabled()
    ):
        flat = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(
            flat, weight, bias, "gelu" if gelu else "none", [], "none"
        )
        return out.view(*x.shape[:-1], out.shape[-1])
    out = F.linear(x, weight, bias)
    return F.gelu(out) if gelu else out


def _exact_gelu_mlp(mlp: nn.Module) -> bool:
    """An open_clip MLP ``c_fc -> exact GELU -> c_proj`` (not QuickGELU or tanh GELU)."""
    act = getattr(mlp, "gelu", None)
    return (
        isinstance(getattr(mlp, "c_fc", None), nn.Linear)
        and isinstance(getattr(mlp, "c_proj", None), nn.Linear)
        and type(act) is nn.GELU
        and act.approximate == "none"
        and len(mlp) == 3
    )


def fused_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``block(x)`` for an open_clip ``ResidualAttentionBlock`` without an attention mask,
    with the attention as one fused :func:`F.scaled_dot_product_attention` call.

    ``nn.MultiheadAttention``'s inference fast path computes ``softmax(q k^T) v`` as two
    batched matrix products around a materialised ``(B, heads, L, L)`` score tensor; the fused
    kernel streams it (flash attention on CPU and GPU). Same arithmetic up to float32 summation
    order. ``x``: ``(B, L, C)``.
    """
    attn = block.attn
    batch, length, width = x.shape
    heads = attn.num_heads
    qkv = _linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v)
    out = out.transpose(1, 2).reshape(batch, length, width)
    out = _linear(out, attn.out_proj.weight, attn.out_proj.bias)
    x = x + block.ls_1(out)
    return x + block.ls_2(_mlp(block.mlp, block.ln_2(x), fused=True))


def _mlp(mlp: nn.Module, x: torch.Tensor, fused: bool) -> torch.Tensor:
    """``mlp(x)``; with ``fused`` an exact-GELU open_clip MLP runs as two :func:`_linear` calls
    (GELU inside the first)."""
    if fused and _exact_gelu_mlp(mlp):
        hidden = _linear(x, mlp.c_fc.weight, mlp.c_fc.bias, gelu=True)
        return _linear(hidden, mlp.c_proj.weight, mlp.c_proj.bias)
    return mlp(x)


def vit_input_tokens(
    visual: nn.Module, images: torch.Tensor
) -> tuple[torch.Tensor, tuple[int, int]]:
    """The token sequence an open_clip ``VisionTransformer`` feeds its first block.

    Returns ``(x (B, 1 + h*w, C), (h, w))``: the class token and the patch tokens in row-major
    order after ``ln_pre``, with the positional embedding resized to the ``(h, w) = (H // p,
    W // p)`` grid by :func:`interpolate_pos_embed`. Checks that the model is a ViT whose dense
    tokens the training-free modes can read (``nn.MultiheadAttention`` blocks, class-token or
    mean pooling).
    """
    blocks = visual.transformer.resblocks
    last = blocks[-1]
    if not isinstance(getattr(last, "attn", None), nn.MultiheadAttention):
        raise ConfigError(
            "Dense modes need a CLIP ViT whose blocks use nn.MultiheadAttention "
            f"(got {type(getattr(last, 'attn', None)).__name__}); use a standard open_clip ViT."
        )
    pool_type = getattr(visual, "pool_type", "tok")
    if getattr(visual, "attn_pool", None) is not None or pool_type not in ("tok", "avg"):
        raise ConfigError(
            "Dense modes need a ViT that pools with its class token or the mean of its patch "
            "tokens (open_clip pool_type 'tok' or 'avg'), not an attentional pooler."
        )
    x = visual.conv1(images)
    batch, width, h, w = x.shape
    x = x.reshape(batch, width, h * w).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).reshape(1, 1, -1).expand(batch, -1, -1)
    x = torch.cat([cls, x], dim=1)
    x = x + interpolate_pos_embed(visual.positional_embedding, (h, w)).to(x.dtype)
    return visual.ln_pre(x), (h, w)


def vit_tokens_before_last_block(
    visual: nn.Module, images: torch.Tensor, fused: bool = False
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Run an open_clip ``VisionTransformer`` up to (not including) its last block.

    Returns ``(x (B, 1 + h*w, C), (h, w))`` as :func:`vit_input_tokens` does, after every
    block but the last. ``fused`` runs the blocks through :func:`fused_block` (ovseg's path;
    ``False`` is open_clip's own modules, as the reference code runs them).
    """
    x, grid = vit_input_tokens(visual, images)
    for block in visual.transformer.resblocks[:-1]:
        x = fused_block(block, x) if fused and _fusable(block) else block(x)
    return x, grid


def vit_dense_tokens(
    visual: nn.Module,
    images: torch.Tensor,
    mode: str = "vanilla",
    naclip_std: float = 5.0,
    keep_residual: bool | None = None,
    keep_ffn: bool | None = None,
    fused: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run an open_clip ``VisionTransformer`` and return ``(global (B, D), dense (B, D, h, w))``.

    ``global`` is what the model pools (its class token, or the mean of the patch tokens for
    ``pool_type='avg'`` models); it equals CLIP's image embedding only for ``vanilla``, for other
    modes it comes from the modified last block.
    Patch size ``p``: ``h = H // p``, ``w = W // p``; inputs not divisible by ``p`` are cropped at
    the bottom/right by the patch convolution, as in CLIP. ``keep_residual`` / ``keep_ffn``
    override the mode's defaults from the table above (``None`` keeps them). ``fused``: see
    :func:`vit_tokens_before_last_block`.
    """
    check_dense_mode(mode)
    x, (h, w) = vit_tokens_before_last_block(visual, images, fused)
    batch = x.shape[0]
    last = visual.transformer.resblocks[-1]
    pool_type = getattr(visual, "pool_type", "tok")

    residual, ffn = _LAST_BLOCK_SKIPS[mode]
    residual = residual if keep_residual is None else keep_residual
    ffn = ffn if keep_ffn is None else keep_ffn
    attn_out = last.ls_1(
        last_block_attention(last.attn, last.ln_1(x), mode, (h, w), naclip_std, fused)
    )
    x = x + attn_out if residual else attn_out
    if ffn:
        x = x + last.ls_2(_mlp(last.mlp, last.ln_2(x), fused))

    x = visual.ln_post(x)
    if visual.proj is not None:
        x = x @ visual.proj
    global_embed = x[:, 1:].mean(dim=1) if pool_type == "avg" else x[:, 0]
    dense = x[:, 1:].reshape(batch, h, w, -1).permute(0, 3, 1, 2)
    return global_embed, dense
