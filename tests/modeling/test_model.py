import math

import pytest
import torch

from rational_icl.data import generator, make_setting, spec_from_dict
from rational_icl.errors import SpecError
from rational_icl.modeling.model import (
    EnsembleLinear,
    EnsembleTransformer,
    Rotary,
    TransformerConfig,
    count_flops,
    stack_batches,
)

SETTINGS = ["categorical-sequence", "linear-regression", "classification"]


def _spec(setting, position_encoding="rotary", **model):
    return spec_from_dict(
        {
            "setting": setting,
            "num_dims": 4,
            "context_length": 6,
            "model": {
                "num_layers": 2,
                "hidden_size": 16,
                "num_heads": 2,
                "position_encoding": position_encoding,
                **model,
            },
        }
    )


def _batch(spec, num_members, batch_size=3, seed=0):
    setting = make_setting(spec)
    tasks = setting.sample_tasks(5, generator(seed, "tasks"))
    batches = [
        setting.sample_batch(tasks, batch_size, generator(seed, "batch", e))
        for e in range(num_members)
    ]
    return stack_batches(batches), torch.stack([b.target for b in batches])


def _model(spec, seeds):
    config = TransformerConfig.from_spec(spec, num_members=len(seeds))
    return EnsembleTransformer(config, seeds).double()


@pytest.mark.parametrize("setting", SETTINGS)
def test_output_shapes_and_loss_per_member(setting):
    spec = _spec(setting)
    model = _model(spec, [1, 2, 3])
    batch, targets = _batch(spec, 3)
    output, loss = model(batch, targets)
    config = model.config
    assert output.shape == (3, 3, config.num_predictions, config.num_outcomes)
    assert loss.shape == (3,)
    # reference per member, in float64: mean negative log probability of the target, or MSE
    if setting == "linear-regression":
        reference = (output[..., 0] - targets).square().flatten(1).mean(1)
    else:
        log_p = output.log_softmax(-1).gather(-1, targets[..., None])
        reference = -log_p.flatten(1).mean(1)
    torch.testing.assert_close(loss, reference, rtol=1e-12, atol=1e-12)
    probabilities = model.predict(batch)
    if setting != "linear-regression":
        torch.testing.assert_close(probabilities.sum(-1), torch.ones(3, 3, config.num_predictions))


@pytest.mark.parametrize("position_encoding", ["rotary", "learned"])
@pytest.mark.parametrize("setting", ["categorical-sequence", "linear-regression"])
def test_changing_a_later_observation_never_changes_an_earlier_prediction(
    setting, position_encoding
):
    spec = _spec(setting, position_encoding)
    model = _model(spec, [7])
    batch, _ = _batch(spec, 1)
    before = model.predict(batch)
    changed = 3
    if setting == "categorical-sequence":
        batch.tokens[..., changed] = (batch.tokens[..., changed] + 1) % spec.num_dims
        # position t predicts symbol t from the symbols before it
        unchanged = slice(0, changed + 1)
    else:
        batch.y[..., changed] += 5.0  # y_t is read after the prediction of y_t
        unchanged = slice(0, changed + 1)
    after = model.predict(batch)
    torch.testing.assert_close(after[:, :, unchanged], before[:, :, unchanged], rtol=0, atol=0)
    assert not torch.allclose(after[:, :, changed + 1 :], before[:, :, changed + 1 :])


@pytest.mark.parametrize("position_encoding", ["rotary", "learned"])
def test_paired_regression_tokens_carry_x_on_the_y_token_and_stay_causal(position_encoding):
    spec = _spec("linear-regression", position_encoding, regression_tokens="paired")
    model = _model(spec, [7])
    batch, _ = _batch(spec, 1)
    read = []
    model.read_in.register_forward_hook(lambda module, inputs, output: read.append(inputs[0]))
    before = model.predict(batch)
    tokens = read[0].view(1, 3, 2 * spec.context_length - 1, spec.num_dims + 2)
    x, y = batch.x.double(), batch.y.double()  # (1, 3, T, d), (1, 3, T)
    torch.testing.assert_close(tokens[..., 0::2, :4], x)  # x_t tokens: x, y = 0, flag 0
    assert (tokens[..., 0::2, 4:] == 0).all()
    torch.testing.assert_close(tokens[..., 1::2, :4], x[..., :-1, :])  # y_t tokens: x_t, y_t, 1
    torch.testing.assert_close(tokens[..., 1::2, 4], y[..., :-1])
    assert (tokens[..., 1::2, 5] == 1).all()
    changed = 3
    batch.x[..., changed, :] += 1.0  # x_3 is read at the prediction of y_3 and after it
    batch.y[..., changed] += 5.0  # y_3 only after
    after = model.predict(batch)
    torch.testing.assert_close(after[:, :, :changed], before[:, :, :changed], rtol=0, atol=0)
    assert not torch.allclose(after[:, :, changed:], before[:, :, changed:])


def test_regression_tokens_is_a_regression_key():
    with pytest.raises(SpecError, match="model.regression_tokens' is for the linear-regression"):
        _spec("classification", regression_tokens="paired")
    with pytest.raises(SpecError, match="allowed: interleaved or paired"):
        _spec("linear-regression", regression_tokens="pairs")


@pytest.mark.parametrize("position_encoding", ["rotary", "learned"])
def test_classification_is_causal_over_pair_tokens(position_encoding):
    spec = _spec("classification", position_encoding)
    model = _model(spec, [7])
    batch, _ = _batch(spec, 1)
    hidden = []
    model.ln_final.register_forward_hook(lambda module, inputs, output: hidden.append(output))
    model.predict(batch)
    batch.context_items[:, :, 2] += 1.0
    model.predict(batch)
    length = model.config.sequence_length
    before, after = (h.view(1, 3, length, -1) for h in hidden)
    torch.testing.assert_close(after[:, :, :2], before[:, :, :2], rtol=0, atol=0)
    assert not torch.allclose(after[:, :, 2:], before[:, :, 2:])


@pytest.mark.parametrize("setting", SETTINGS)
def test_member_of_an_ensemble_equals_a_single_model_with_its_seed(setting):
    spec = _spec(setting)
    ensemble = _model(spec, [11, 12, 13])
    batch, targets = _batch(spec, 3)
    output, loss = ensemble(batch, targets)
    for e, seed in enumerate([11, 12, 13]):
        single = _model(spec, [seed])
        member_batch = type(batch)(**{k: v[e : e + 1] for k, v in vars(batch).items()})
        single_output, single_loss = single(member_batch, targets[e : e + 1])
        torch.testing.assert_close(single_output[0], output[e], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(single_loss[0], loss[e], rtol=1e-10, atol=1e-12)


def test_members_do_not_interact():
    spec = _spec("categorical-sequence")
    model = _model(spec, [1, 2])
    batch, targets = _batch(spec, 2)
    _, loss = model(batch, targets)
    loss[0].backward()
    for p in model.parameters():
        assert p.grad[1].abs().max() == 0  # member 1 gets no gradient from member 0's loss
    first, _ = model(batch)
    batch.tokens[1] = (batch.tokens[1] + 1) % spec.num_dims
    second, _ = model(batch)
    torch.testing.assert_close(first[0], second[0], rtol=0, atol=0)


def test_ensemble_linear_matches_per_member_affine_map_in_value_and_gradient():
    gen = torch.Generator().manual_seed(0)
    layer = EnsembleLinear(3, 4, 5).double()
    for e in range(3):
        layer.reset_member(e, gen)
    layer.bias.data.normal_(generator=gen)
    x = torch.randn(3, 7, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    reference = torch.stack([x[e] @ layer.weight[e] + layer.bias[e] for e in range(3)])
    torch.testing.assert_close(layer(x), reference)
    (grad_fast,) = torch.autograd.grad(layer(x).square().sum(), x)
    (grad_reference,) = torch.autograd.grad(reference.square().sum(), x)
    torch.testing.assert_close(grad_fast, grad_reference)


def test_rotary_scores_depend_only_on_the_relative_offset():
    rotary = Rotary(head_size=8, max_length=12, base=10_000.0)
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 8, generator=gen)
    # the same q and k at every position: after rotation, q_i . k_j depends on i - j only
    q_rot = rotary(q.expand(1, 1, 12, 8))[0, 0]
    k_rot = rotary(k.expand(1, 1, 12, 8))[0, 0]
    scores = q_rot @ k_rot.T  # (12, 12)
    torch.testing.assert_close(scores[5, 2], scores[9, 6], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scores[3, 3], q @ k, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(q_rot.norm(dim=-1), q.norm().expand(12), rtol=1e-5, atol=1e-5)


def test_rotary_is_a_complex_rotation_of_each_pair_of_dimensions():
    rotary = Rotary(head_size=6, max_length=5, base=100.0)
    x = torch.randn(2, 1, 5, 6, generator=torch.Generator().manual_seed(1))
    # float64 reference: pair (2i, 2i + 1) is the complex number x_2i + i x_2i+1, times
    # exp(i * position * 100^(-2i/6))
    position = torch.arange(5, dtype=torch.float64)[:, None]
    angle = position * 100.0 ** (-torch.arange(0, 6, 2, dtype=torch.float64) / 6)  # (5, 3)
    pairs = torch.view_as_complex(x.double().reshape(2, 1, 5, 3, 2).contiguous())
    reference = torch.view_as_real(pairs * torch.polar(torch.ones_like(angle), angle))
    torch.testing.assert_close(rotary(x).double(), reference.flatten(-2), rtol=1e-6, atol=1e-6)


def test_initialisation_is_seeded_per_member():
    spec = _spec("linear-regression")
    a, b = _model(spec, [1, 2]), _model(spec, [2, 1])
    torch.testing.assert_close(a.read_in.weight[0], b.read_in.weight[1], rtol=0, atol=0)
    assert not torch.equal(a.read_in.weight[0], a.read_in.weight[1])
    std = a.blocks[0].mlp.up.weight.std().item()
    assert 0.015 < std < 0.025  # N(0, 0.02^2) draws
    assert a.blocks[0].mlp.down.init_std == pytest.approx(0.02 / math.sqrt(4))


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="num_heads"):
        TransformerConfig("categorical-sequence", 4, 8, hidden_size=10, num_heads=3)
    with pytest.raises(ValueError, match="setting"):
        TransformerConfig("poetry", 4, 8)
    with pytest.raises(ValueError, match="seeds"):
        EnsembleTransformer(TransformerConfig("categorical-sequence", 4, 8, num_members=2), [1])


def test_flop_count_of_one_layer_by_hand():
    config = TransformerConfig("categorical-sequence", 8, 4, hidden_size=2, mlp_expansion_factor=2)
    # per token: qkv 2*2*6 + proj 2*2*2 + mlp 2*2*4*2 = 24 + 8 + 32 = 64; attention 2*2*4*2/2 = 16
    # read-out 2*2*8 per position; forward = 4 * (64 + 16) + 4 * 32 = 448; training = 3x
    assert count_flops(config, batch_size=1) == 3 * 448
