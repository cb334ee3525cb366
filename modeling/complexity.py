"""K_Q: an upper bound on the Kolmogorov complexity of each strategy, in bits.

K_Q = best compressed size (lzma, bz2, zlib) of the strategy's source code with comments,
docstrings and layout removed, plus the best compressed size of its parameters. Any program
that prints the strategy is an upper bound on its Kolmogorov complexity; this is such a program
up to the constant size of a decompressor. The memorizing strategy stores the D-task table
(float64 bytes), so K_memorizing grows with D; the generalizing strategy stores only the prior.
"""

from __future__ import annotations

import ast
import bz2
import inspect
import lzma
import textwrap
import zlib

import numpy as np


def compressed_bits(data: bytes) -> int:
    """Smallest compressed size of ``data`` over lzma, bz2 and zlib, in bits."""
    sizes = [
        len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)),
        len(bz2.compress(data, 9)),
        len(zlib.compress(data, 9)),
    ]
    return 8 * min(sizes)


def stripped_source(function) -> str:
    """Source of a function with comments, docstrings and layout removed (via the AST)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and _is_docstring(body[0]):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def strategy_parameters(setting, tasks, strategy: str) -> np.ndarray:
    """The numbers a strategy stores: the task table for memorizing (and the setting's other
    ``table_strategies``), the prior otherwise."""
    prior = setting.prior_parameters()
    if strategy not in setting.table_strategies:
        return prior.astype(np.float64)
    table = tasks.tasks.double().numpy()
    if tasks.labels is not None:
        table = np.concatenate([table, tasks.labels.double().numpy()[:, None]], axis=1)
    return table.astype(np.float64)


def strategy_complexity(setting, tasks, strategy: str) -> float:
    """K_Q in bits: compressed stripped source plus compressed parameters.

    The source is that of the functions the setting names for the strategy
    (``Setting.strategy_sources``), helpers included: they are part of the code.
    """
    code = "\n".join(stripped_source(f) for f in setting.strategy_sources[strategy])
    parameters = strategy_parameters(setting, tasks, strategy).tobytes()
    return float(compressed_bits(code.encode()) + compressed_bits(parameters))


def _is_docstring(node) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(getattr(node, "value", None), ast.Constant)
        and isinstance(node.value.value, str)
    )
