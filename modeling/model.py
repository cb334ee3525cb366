"""A compact decoder-only transformer that trains E independent members as one computation.

Every parameter carries the ensemble on its leading dimension: a linear layer's weight is
(E, in, out) and runs as one ``baddbmm`` over (E, B·L, in) activations. (A broadcast
``matmul`` of (E, B, L, in) by (E, 1, in, out) gives the same forward but a backward pass
about 100x slower on CPU.) Members never interact: each has its own initialisation seed,
and the loss returned per member lets the optimizer treat them separately. A single model
is E = 1.

How a setting's sequences become tokens and which tokens predict is the setting's
(``Setting.token_layout`` and ``Setting.tokens``, in rational_icl.data.settings): L tokens
in, of features through a linear read-in and/or symbols through an embedding; P predictions
of O outcomes out, logits (trained on cross-entropy) or predicted means of y (squared error)
as the setting's ``facts.prediction_kind`` says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rational_icl.data import Batch, TokenLayout, Tokens, setting_class


@dataclass(frozen=True)
class TransformerConfig:
    setting: str
    num_dims: int  # K symbols (categorical) or d input features
    context_length: int  # T
    num_layers: int = 1
    hidden_size: int = 64
    num_heads: int = 1
    mlp_expansion_factor: float = 4.0
    position_encoding: str = "rotary"  # or "learned"
    regression_tokens: str = "interleaved"  # or "paired" (y tokens carry their x)
    num_members: int = 1  # E
    rotary_base: float = 10_000.0

    def __post_init__(self):
        setting_class(self.setting)  # ValueError naming the allowed settings
        if self.position_encoding not in ("rotary", "learned"):
            raise ValueError(f"position_encoding {self.position_encoding!r}: rotary or learned")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads {self.num_heads} does not divide {self.hidden_size}")
        if self.position_encoding == "rotary" and self.head_size % 2:
            raise ValueError(f"rotary positions need an even head size, got {self.head_size}")
        if self.regression_tokens not in ("interleaved", "paired"):
            raise ValueError(f"regression_tokens {self.regression_tokens!r}: interleaved or paired")
        if self.num_members < 1:
            raise ValueError(f"num_members must be >= 1, got {self.num_members}")

    @classmethod
    def from_spec(cls, spec, num_members: int = 1) -> TransformerConfig:
        """The model of a scalar ExperimentSpec (one value per grid field)."""
        m = spec.model
        return cls(
            setting=spec.setting,
            num_dims=spec.num_dims,
            context_length=spec.context_length,
            num_layers=m.num_layers,
            hidden_size=m.hidden_size,
            num_heads=m.num_heads,
            mlp_expansion_factor=m.mlp_expansion_factor,
            position_encoding=m.position_encoding,
            regression_tokens=m.regression_tokens or "interleaved",
            num_members=num_members,
        )

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_size(self) -> int:
        return max(1, round(self.hidden_size * self.mlp_expansion_factor))

    @property
    def layout(self) -> TokenLayout:
        """The setting's read-in and read-out sizes for this config."""
        cls = setting_class(self.setting)
        return cls.token_layout(self.num_dims, self.context_length, self.regression_tokens)

    @property
    def prediction_kind(self) -> str:  # "probabilities" (from logits) or "mean"
        return setting_class(self.setting).facts.prediction_kind

    @property
    def sequence_length(self) -> int:  # L, tokens the transformer reads
        return self.layout.sequence_length

    @property
    def num_predictions(self) -> int:  # P
        return self.layout.num_predictions

    @property
    def num_outcomes(self) -> int:  # O
        return self.layout.num_outcomes


# ---------------------------------------------------------------------------- layers


class EnsembleLinear(nn.Module):
    """E independent affine maps, applied to (E, N, in) as one baddbmm."""

    def __init__(self, num_members: int, in_size: int, out_size: int, init_std: float = 0.02):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_members, in_size, out_size))
        self.bias = nn.Parameter(torch.zeros(num_members, 1, out_size))
        self.init_std = init_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (E, N, in) -> (E, N, out)
        return torch.baddbmm(self.bias, x, self.weight)

    def reset_member(self, member: int, gen: torch.Generator) -> None:
        draw = torch.randn(self.weight.shape[1:], generator=gen) * self.init_std
        self.weight.data[member] = draw
        self.bias.data[member] = 0.0


class EnsembleLayerNorm(nn.Module):
    def __init__(self, num_members: int, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_members, 1, size))
        self.bias = nn.Parameter(torch.zeros(num_members, 1, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (E, N, H)
        return torch.addcmul(self.bias, F.layer_norm(x, x.shape[-1:]), self.weight)

    def reset_member(self, member: int, gen: torch.Generator) -> None:
        self.weight.data[member] = 1.0
        self.bias.data[member] = 0.0


class EnsembleEmbedding(nn.Module):
    """E lookup tables of (num_embeddings, size): one ``F.embedding`` over E·V rows."""

    def __init__(self, num_members: int, num_embeddings: int, size: int, init_std: float = 0.02):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_members, num_embeddings, size))
        self.init_std = init_std

    def forward(self, index: torch.Tensor) -> torch.Tensor:  # (E, ...) int -> (E, ..., H)
        num_members, num_embeddings, size = self.weight.shape
        offset = torch.arange(num_members, device=index.device) * num_embeddings
        offset = offset.view(-1, *([1] * (index.dim() - 1)))
        return F.embedding(index + offset, self.weight.view(-1, size))

    def reset_member(self, member: int, gen: torch.Generator) -> None:
        draw = torch.randn(self.weight.shape[1:], generator=gen) * self.init_std
        self.weight.data[member] = draw


class Rotary(nn.Module):
    """Rotary position embedding over the whole head: each pair of dimensions (2i, 2i + 1)
    is rotated by the angle position x base^(-2i/hs). Real arithmetic rather than complex
    tensors, so bf16 activations need no float32 detour."""

    def __init__(self, head_size: int, max_length: int, base: float):
        super().__init__()
        inv_freq = base ** (-torch.arange(0, head_size, 2, dtype=torch.float64) / head_size)
        angle = torch.arange(max_length, dtype=torch.float64)[:, None] * inv_freq  # (L, hs/2)
        self.register_buffer("cos", angle.cos().float(), persistent=False)
        self.register_buffer("sin", angle.sin().float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, nh, L, hs)
        length, head_size = x.shape[-2], x.shape[-1]
        pairs = x.reshape(*x.shape[:-1], head_size // 2, 2)
        first, second = pairs[..., 0], pairs[..., 1]  # (N, nh, L, hs/2)
        cos, sin = self.cos[:length].to(x.dtype), self.sin[:length].to(x.dtype)
        rotated = torch.stack([first * cos - second * sin, first * sin + second * cos], -1)
        return rotated.flatten(-2)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        e, h = config.num_members, config.hidden_size
        self.num_heads, self.head_size = config.num_heads, config.head_size
        self.qkv = EnsembleLinear(e, h, 3 * h)
        self.proj = EnsembleLinear(e, h, h, init_std=0.02 / math.sqrt(2 * config.num_layers))
        self.rotary = None
        if config.position_encoding == "rotary":
            self.rotary = Rotary(config.head_size, config.sequence_length, config.rotary_base)

    def forward(self, x: torch.Tensor, batch_size: int) -> torch.Tensor:  # (E, B·L, H)
        num_members, tokens, hidden = x.shape
        length = tokens // batch_size
        qkv = self.qkv(x).view(num_members * batch_size, length, 3, self.num_heads, self.head_size)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (E·B, nh, L, hs)
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (E·B, nh, L, hs)
        y = y.transpose(1, 2).reshape(num_members, tokens, hidden)  # (E, B·L, H)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        e, h, m = config.num_members, config.hidden_size, config.mlp_size
        self.up = EnsembleLinear(e, h, m)
        self.down = EnsembleLinear(e, m, h, init_std=0.02 / math.sqrt(2 * config.num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (E, N, H)
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        e, h = config.num_members, config.hidden_size
        self.ln_attention = EnsembleLayerNorm(e, h)
        self.attention = CausalSelfAttention(config)
        self.ln_mlp = EnsembleLayerNorm(e, h)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, batch_size: int) -> torch.Tensor:  # (E, B·L, H)
        x = x + self.attention(self.ln_attention(x), batch_size)
        return x + self.mlp(self.ln_mlp(x))


# ---------------------------------------------------------------------------- model


class EnsembleTransformer(nn.Module):
    """E transformers with stacked parameters.

    Parameters
    ----------
    config : TransformerConfig
    seeds : sequence of int, optional
        One initialisation seed per member; member e's initial parameters depend on
        ``seeds[e]`` only, so a member equals a single model built with its seed.
    """

    def __init__(self, config: TransformerConfig, seeds=None):
        super().__init__()
        self.config = config
        self.setting = setting_class(config.setting)
        self.layout = layout = config.layout
        e, h = config.num_members, config.hidden_size
        # Features through a linear read-in, else symbols through an embedding; symbols
        # beside features are embedded and added ("label_in", the name saved states use).
        if layout.features:
            self.read_in = EnsembleLinear(e, layout.features, h)
        else:
            self.read_in = EnsembleEmbedding(e, layout.symbols, h)
        if layout.features and layout.symbols:
            self.label_in = EnsembleEmbedding(e, layout.symbols, h)
        self.position = None
        if config.position_encoding == "learned":
            self.position = EnsembleEmbedding(e, config.sequence_length, h)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.ln_final = EnsembleLayerNorm(e, h)
        self.read_out = EnsembleLinear(e, h, config.num_outcomes)
        seeds = range(e) if seeds is None else list(seeds)
        if len(seeds) != e:
            raise ValueError(f"got {len(seeds)} seeds for {e} members")
        for member, seed in enumerate(seeds):
            self.reset_member(member, seed)

    def reset_member(self, member: int, seed: int) -> None:
        """Draw member ``member``'s parameters from its own seed (modules in a fixed order)."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in self.modules():
                if hasattr(module, "reset_member") and module is not self:
                    module.reset_member(member, gen)

    def forward(self, batch: Batch, targets: torch.Tensor | None = None):
        """Predictions and, given targets, the training loss of every member.

        Parameters
        ----------
        batch : Batch
            The setting's batch, each field with the members on a leading dimension, e.g.
            tokens (E, B, T).
        targets : tensor (E, B, P), optional
            The batch's targets: symbols, y values or query labels.

        Returns
        -------
        output : tensor (E, B, P, O)
            Logits, or the predicted mean of y where the setting predicts means.
        loss : tensor (E,) or None
            Per member: cross-entropy in nats, or the mean squared error of y.
        """
        output = self.outputs(self.setting.tokens(batch, self.layout, self.read_out.weight.dtype))
        loss = None if targets is None else self.loss(output, targets)
        return output, loss

    def outputs(self, tokens: Tokens) -> torch.Tensor:
        """The read-out (E, B, P, O) of a batch already made tokens (``Setting.tokens``):
        logits, or the predicted mean of y. ``forward`` without the batch; the recorder
        (training/recorder.py) calls it on the tokens of a predictions file."""
        x = self._read_in(tokens)  # (E, B, L, H)
        num_members, batch_size, length, hidden = x.shape
        if self.position is not None:
            x = x + self.position.weight[:, None, :length]
        x = x.reshape(num_members, batch_size * length, hidden)  # (E, B·L, H)
        for block in self.blocks:
            x = block(x, batch_size)
        x = self.ln_final(x).view(num_members, batch_size, length, hidden)
        return self._read_out(x)  # (E, B, P, O)

    def loss(self, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean training loss per member, (E,), in float32 or better (bf16 outputs upcast)."""
        output = output.to(torch.promote_types(output.dtype, torch.float32))
        num_members = output.shape[0]
        if self.config.prediction_kind == "mean":
            return (
                (output[..., 0] - targets.to(output.dtype))
                .square()
                .reshape(num_members, -1)
                .mean(1)
            )
        # cross-entropy as log-sum-exp minus the target's logit: F.cross_entropy's log_softmax
        # over a last dimension of 2-8 outcomes is ~3x slower on CPU, forward and backward
        logits = output.reshape(-1, output.shape[-1])  # (E·B·P, O)
        shifted = logits - logits.detach().amax(-1, keepdim=True)
        target_logit = shifted.gather(-1, targets.reshape(-1, 1))[:, 0]
        loss = shifted.exp().sum(-1).log() - target_logit
        return loss.view(num_members, -1).mean(1)

    def predict(self, batch: Batch) -> torch.Tensor:
        """Probabilities over outcomes, or the predicted mean of y: (E, B, P, O)."""
        output, _ = self(batch)
        output = output.float()
        if self.config.prediction_kind == "mean":
            return output
        return output.softmax(-1)

    def _read_in(self, tokens: Tokens) -> torch.Tensor:  # (E, B, L, H)
        if tokens.features is None:
            return self.read_in(tokens.symbols)  # (E, B, L) -> (E, B, L, H)
        num_members, batch_size, length, features = tokens.features.shape
        x = self.read_in(tokens.features.reshape(num_members, batch_size * length, features))
        x = x.view(num_members, batch_size, length, -1)
        if tokens.symbols is not None:
            x = x + self.label_in(tokens.symbols)
        return x

    def _read_out(self, x: torch.Tensor) -> torch.Tensor:  # (E, B, L, H) -> (E, B, P, O)
        x = x[:, :, self.layout.predicted_tokens]
        num_members, batch_size, positions, hidden = x.shape
        out = self.read_out(x.reshape(num_members, batch_size * positions, hidden))
        return out.view(num_members, batch_size, positions, -1)


def stack_batches(batches) -> Batch:
    """One batch with a leading member dimension from E same-shaped batches."""
    first = batches[0]
    fields = first.__dataclass_fields__
    return type(first)(
        **{name: torch.stack([getattr(b, name) for b in batches]) for name in fields}
    )


def count_flops(config: TransformerConfig, batch_size: int) -> int:
    """Matmul FLOPs of one training step (forward + backward = 3x forward), all members."""
    c, length = config, config.sequence_length
    h, m = c.hidden_size, c.mlp_size
    per_token = 2 * (3 * h * h + h * h + 2 * h * m)  # qkv, proj, mlp up + down
    attention = 2 * 2 * length * h / 2  # scores and mixing, causal half
    # a linear read-in is a matmul; an embedding is a look-up
    read = 2 * h * c.layout.features * length + 2 * h * c.num_outcomes * c.num_predictions
    forward = batch_size * (c.num_layers * length * (per_token + attention) + read)
    return int(3 * forward * c.num_members)
