"""Every loss against a hand-written, loop-by-loop reference on random tensors."""

import math

import pytest
import torch

from distilnlp.distill.losses import (
    ATTENTION_LOSSES,
    HIDDEN_LOSSES,
    LossRegistry,
    attention_kl_loss,
    attention_mse_loss,
    hidden_cosine_loss,
    hidden_mse_loss,
    logit_binary_kl_loss,
    logit_kl_loss,
    logit_mse_loss,
)

torch.manual_seed(0)


def lengths_mask(lengths, max_len):
    return torch.tensor([[1] * n + [0] * (max_len - n) for n in lengths])


def softmax_list(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def ref_kl(student_row, teacher_row, t):
    p_t = softmax_list([x / t for x in teacher_row])
    p_s = softmax_list([x / t for x in student_row])
    return t * t * sum(a * math.log(a / b) for a, b in zip(p_t, p_s, strict=True))


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_logit_kl_matches_reference_per_example(temperature):
    s, t = torch.randn(5, 4) * 3, torch.randn(5, 4) * 3
    expected = sum(ref_kl(s[i].tolist(), t[i].tolist(), temperature) for i in range(5)) / 5
    assert logit_kl_loss(s, t, temperature).item() == pytest.approx(expected, rel=1e-5)
    assert logit_kl_loss(s, t, temperature, reduction="sum").item() == pytest.approx(5 * expected, rel=1e-5)


def test_logit_kl_token_level_masks_padding():
    s, t = torch.randn(3, 6, 4), torch.randn(3, 6, 4)
    lengths = [6, 2, 4]
    mask = lengths_mask(lengths, 6)
    s_garbage = s.clone()
    s_garbage[mask == 0] = 1e4  # padding must not matter
    terms = [ref_kl(s[b, i].tolist(), t[b, i].tolist(), 2.0) for b in range(3) for i in range(lengths[b])]
    assert logit_kl_loss(s_garbage, t, 2.0, mask).item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_logit_kl_is_zero_for_identical_logits_and_scales_with_t_squared():
    z = torch.randn(4, 5)
    assert logit_kl_loss(z, z.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    # Same softened distributions (logits scaled by T) -> KL differs exactly by the T^2 factor.
    assert logit_kl_loss(2 * s, 2 * t, 2.0).item() == pytest.approx(
        4 * logit_kl_loss(s, t, 1.0).item(), rel=1e-5
    )


def test_logit_binary_kl_matches_reference():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    temperature = 2.0
    total = 0.0
    for i in range(4):
        for c in range(3):
            p = 1 / (1 + math.exp(-t[i, c].item() / temperature))
            q = 1 / (1 + math.exp(-s[i, c].item() / temperature))
            total += p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    expected = temperature**2 * total / 4
    assert logit_binary_kl_loss(s, t, temperature).item() == pytest.approx(expected, rel=1e-5)


def test_logit_mse_matches_reference():
    s, t = torch.randn(6, 1), torch.randn(6, 1)
    expected = sum((s[i, 0].item() - t[i, 0].item()) ** 2 for i in range(6)) / 6
    assert logit_mse_loss(s, t, temperature=5.0).item() == pytest.approx(expected, rel=1e-5)


def test_hidden_mse_matches_reference_with_mask():
    batch, length, hidden = 3, 7, 5
    s, t = torch.randn(batch, length, hidden), torch.randn(batch, length, hidden)
    lengths = [7, 3, 5]
    mask = lengths_mask(lengths, length)
    s[mask == 0] = 1e3
    total = sum(
        (s[b, i, h].item() - t[b, i, h].item()) ** 2
        for b in range(batch)
        for i in range(lengths[b])
        for h in range(hidden)
    )
    expected = total / (sum(lengths) * hidden)
    assert hidden_mse_loss(s, t, mask).item() == pytest.approx(expected, rel=1e-5)
    assert hidden_mse_loss(s, t, mask, reduction="sum").item() == pytest.approx(
        expected * sum(lengths), rel=1e-5
    )


def test_hidden_cosine_matches_reference_with_mask():
    s, t = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    lengths = [5, 2]
    mask = lengths_mask(lengths, 5)
    terms = []
    for b in range(2):
        for i in range(lengths[b]):
            u, v = s[b, i].tolist(), t[b, i].tolist()
            dot = sum(a * c for a, c in zip(u, v, strict=True))
            terms.append(1 - dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(c * c for c in v))))
    assert hidden_cosine_loss(s, t, mask).item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    assert hidden_cosine_loss(t, t, mask).item() == pytest.approx(0.0, abs=1e-6)


def attention_maps(batch, heads, length, lengths):
    """Real attention probabilities: softmax over keys with padding keys masked, garbage padded rows."""
    scores = torch.randn(batch, heads, length, length) * 2
    key_mask = lengths_mask(lengths, length)[:, None, None, :]
    probs = scores.masked_fill(key_mask == 0, float("-inf")).softmax(-1)
    for b, n in enumerate(lengths):
        probs[b, :, n:, :] = torch.rand(heads, length - n, length)  # padded query rows: anything
    return probs


def test_attention_mse_matches_reference_with_mask():
    batch, heads, length, lengths = 3, 2, 6, [6, 3, 4]
    a_s, a_t = attention_maps(batch, heads, length, lengths), attention_maps(batch, heads, length, lengths)
    mask = lengths_mask(lengths, length)
    total = sum(
        (a_s[b, h, q, k].item() - a_t[b, h, q, k].item()) ** 2
        for b in range(batch)
        for h in range(heads)
        for q in range(lengths[b])
        for k in range(lengths[b])
    )
    expected = total / sum(heads * n * n for n in lengths)
    assert attention_mse_loss(a_s, a_t, mask).item() == pytest.approx(expected, rel=1e-5)


def test_attention_kl_matches_reference_with_mask():
    batch, heads, length, lengths = 2, 3, 5, [5, 2]
    a_s, a_t = attention_maps(batch, heads, length, lengths), attention_maps(batch, heads, length, lengths)
    mask = lengths_mask(lengths, length)
    rows = []
    for b in range(batch):
        for h in range(heads):
            for q in range(lengths[b]):
                rows.append(
                    sum(
                        a_t[b, h, q, k].item() * math.log(a_t[b, h, q, k].item() / a_s[b, h, q, k].item())
                        for k in range(lengths[b])
                    )
                )
    assert attention_kl_loss(a_s, a_t, mask).item() == pytest.approx(sum(rows) / len(rows), rel=1e-5)
    assert attention_kl_loss(a_t, a_t, mask).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("loss_fn", [attention_mse_loss, attention_kl_loss])
def test_attention_losses_average_heads_when_head_counts_differ(loss_fn):
    lengths = [4, 3]
    mask = lengths_mask(lengths, 4)
    a_s, a_t = attention_maps(2, 2, 4, lengths), attention_maps(2, 6, 4, lengths)
    expected = loss_fn(a_s.mean(1, keepdim=True), a_t.mean(1, keepdim=True), mask)
    assert loss_fn(a_s, a_t, mask).item() == pytest.approx(expected.item(), rel=1e-6)


def test_gradients_flow_to_student_only():
    s = torch.randn(2, 4, 8, requires_grad=True)
    t = torch.randn(2, 4, 8, requires_grad=True)
    hidden_mse_loss(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    # The loss itself does not detach the teacher; the trainer runs the teacher under no_grad.
    assert t.grad is not None


def test_registry_fails_loudly_on_duplicates_and_lists_names_on_typo():
    assert HIDDEN_LOSSES.names() == ["cosine", "mse"]
    assert ATTENTION_LOSSES.names() == ["kl", "mse"]
    with pytest.raises(ValueError, match="Unknown attention loss 'kld'; choose one of \\['kl', 'mse'\\]"):
        ATTENTION_LOSSES.get("kld")
    registry = LossRegistry("test")
    registry.register("a", normalizer="tokens")(lambda: None)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a", normalizer="tokens")(lambda: None)
    with pytest.raises(ValueError, match="normalizer must be one of"):
        registry.register("b", normalizer="words")


def test_reduction_must_be_known():
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        hidden_mse_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), reduction="max")
