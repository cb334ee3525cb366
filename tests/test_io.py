"""Compressed netCDF writes: lossless, chunked per checkpoint, smaller than plain files."""

import netCDF4
import numpy as np
import xarray as xr

from rational_icl import io


def _run_like(rng, num_checkpoints=6) -> xr.Dataset:
    """A predictions-like dataset: softmax probabilities over outcomes, tokens, a small
    variable and a string coordinate."""
    logits = rng.normal(size=(num_checkpoints, 2, 16, 32, 8)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return xr.Dataset(
        {
            "transformer_prediction": (
                ("checkpoint", "split", "sequence", "position", "outcome"),
                probs,
            ),
            "tokens": (("split", "sequence", "position"), rng.integers(0, 8, (2, 16, 32))),
            "transformer_loss": (("checkpoint", "split"), rng.random((num_checkpoints, 2))),
        },
        coords={"checkpoint": 20 * np.arange(1, num_checkpoints + 1), "split": ["id", "ood"]},
        attrs={"setting": "categorical-sequence"},
    )


def test_written_files_read_back_bit_for_bit(tmp_path):
    data = _run_like(np.random.default_rng(0))
    path = io.write_netcdf(data, tmp_path / "run.nc")
    back = io.load_netcdf(path)
    xr.testing.assert_identical(back, data)
    for name in data.variables:
        assert back[name].dtype == data[name].dtype
    # written again from what was read (the training loop's append): unchanged too
    xr.testing.assert_identical(io.load_netcdf(io.write_netcdf(back, tmp_path / "again.nc")), data)


def test_large_numeric_variables_are_compressed_ten_checkpoints_per_chunk(tmp_path):
    data = _run_like(np.random.default_rng(1), num_checkpoints=12)
    path = io.write_netcdf(data, tmp_path / "run.nc")
    with netCDF4.Dataset(path) as stored:
        prediction = stored["transformer_prediction"]
        assert prediction.filters()["zlib"] and prediction.filters()["shuffle"]
        assert prediction.chunking() == [10, 2, 16, 32, 8]  # as fits/runs.py reads them
        assert stored["tokens"].filters()["zlib"]
        assert stored["transformer_loss"].chunking() == "contiguous"  # 192 bytes: left alone


def test_compression_shrinks_redundant_values(tmp_path):
    data = _run_like(np.random.default_rng(2))
    # early checkpoints of a real run: near-uniform predictions with few distinct values
    data["transformer_prediction"][:] = np.float32(0.125)
    plain = tmp_path / "plain.nc"
    data.to_netcdf(plain)
    compressed = io.write_netcdf(data, tmp_path / "compressed.nc")
    assert compressed.stat().st_size < 0.2 * plain.stat().st_size


def test_chunks_stay_under_the_limit_along_the_leading_dims():
    big = xr.Variable(("chain", "draw", "cell"), np.zeros((4, 1000, 2000), np.float32))  # 32 MB
    chunks = io._chunks(big)
    assert chunks == (1, 524, 2000)  # 4 MiB // (2000 * 4 bytes) draws
    assert 4 * np.prod(chunks) <= 4 * 2**20
    small = xr.Variable(("checkpoint", "split"), np.zeros((40, 2)))
    assert io._chunks(small) == (10, 2)
    per_checkpoint = xr.Variable(("checkpoint", "sequence"), np.zeros((40, 2**18)))  # 2 MiB
    assert io._chunks(per_checkpoint) == (2, 2**18)


def test_encoding_keeps_the_stored_dtype_of_a_read_file(tmp_path):
    data = _run_like(np.random.default_rng(3))
    data["tokens"].encoding["dtype"] = "int16"  # as a file written elsewhere might have it
    encoding = io.compression_encoding(data)
    assert encoding["tokens"]["dtype"] == "int16"
    assert "transformer_loss" not in encoding  # below the size worth a chunk index
    assert "split" not in encoding  # strings are not compressed
    back = io.load_netcdf(io.write_netcdf(data, tmp_path / "run.nc"))
    np.testing.assert_array_equal(back.tokens.values, data.tokens.values)
