"""Merge methods against results worked out by hand on small tensors (trainers/merge_math.py)."""

import math

import pytest
import torch
from trainers.merge_math import MergeError, merge_state_dicts, merge_tensors, model_stock

BASE = torch.tensor([0.0, 0.0, 0.0, 0.0])
M1 = torch.tensor([3.0, -2.0, 1.0, 0.5])
M2 = torch.tensor([-1.0, 4.0, 2.0, -0.25])


def test_linear_soup_is_the_weighted_average():
    assert merge_tensors("linear", [M1, M2]).tolist() == [1.0, 1.0, 1.5, 0.125]
    assert merge_tensors("linear", [M1, M2], weights=[0.75, 0.25]).tolist() == [2.0, -0.5, 1.25, 0.3125]


def test_task_arithmetic_adds_weighted_task_vectors_to_the_base():
    base = torch.tensor([1.0, 1.0, 1.0, 1.0])
    # task vectors: M1 - base = [2, -3, 0, -0.5], M2 - base = [-2, 3, 1, -1.25]
    assert merge_tensors("task_arithmetic", [M1, M2], base=base).tolist() == [1.0, 1.0, 2.0, -0.75]
    assert merge_tensors("task_arithmetic", [M1, M2], base=base, weights=[0.5, 0.5]).tolist() == [1.0, 1.0, 1.5, 0.125]


def test_ties_trims_elects_a_sign_and_averages_the_agreeing_values():
    # density 0.5 keeps the 2 largest magnitudes of each task vector: [3, -2, 0, 0] and [0, 4, 2, 0].
    # Elected sign per entry (sign of the sum [3, 2, 2, 0]): all +. Entries that agree: 3 | 4 | 2 | none.
    assert merge_tensors("ties", [M1, M2], base=BASE, density=0.5).tolist() == [3.0, 4.0, 2.0, 0.0]


def test_dare_ties_without_dropping_is_ties_without_trimming():
    # sum [2, 2, 3, 0.25] -> all +; agreeing values: 3 | 4 | (1 + 2) / 2 | 0.5.
    assert merge_tensors("dare_ties", [M1, M2], base=BASE, density=1.0).tolist() == [3.0, 4.0, 1.5, 0.5]


def test_dare_drops_at_random_and_rescales_what_it_keeps():
    torch.manual_seed(0)
    delta = torch.linspace(0.1, 1.0, 10_000)
    merged = merge_tensors("dare_linear", [delta], base=torch.zeros_like(delta), density=0.25)
    kept = merged != 0
    assert 0.22 < kept.float().mean().item() < 0.28  # about a quarter survives
    assert torch.allclose(merged[kept], delta[kept] * 4)  # ... multiplied by 1 / density
    assert merge_tensors("dare_linear", [M1, M2], base=BASE, density=1.0).tolist() == (M1 + M2).tolist()


def test_model_stock_interpolates_by_the_angle_between_task_vectors():
    base = torch.zeros(2)
    # Orthogonal task vectors: cos = 0, t = 0 -> the base.
    assert model_stock([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])], base).tolist() == [0.0, 0.0]
    # Identical ones: cos = 1, t = 2 / 2 = 1 -> their average.
    assert model_stock([torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0])], base).tolist() == [1.0, 1.0]
    # [2, 0] and [1, 1]: cos = 2 / (2 * sqrt 2) = 1/sqrt 2, t = 2c / (1 + c) = 2 (sqrt 2 - 1) = 0.828427;
    # the average [1.5, 0.5] pulled toward the base by t.
    t = 2 * (math.sqrt(2) - 1)
    got = model_stock([torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])], base)
    assert got.tolist() == pytest.approx([1.5 * t, 0.5 * t], abs=1e-6)


def test_state_dicts_merge_per_tensor_and_copy_integer_buffers():
    base = {"w": BASE.clone(), "steps": torch.tensor(7)}
    models = [{"w": M1, "steps": torch.tensor(7)}, {"w": M2, "steps": torch.tensor(9)}]
    merged = merge_state_dicts("ties", models, base=base, density=0.5)
    assert merged["w"].tolist() == [3.0, 4.0, 2.0, 0.0] and merged["steps"].item() == 7


def test_bad_inputs_are_refused_with_the_tensor_named():
    with pytest.raises(MergeError, match="needs the base model"):
        merge_state_dicts("ties", [{"w": M1}, {"w": M2}])
    with pytest.raises(MergeError, match=r"model 2: tensor 'w' has shape \(2,\), model 1 has \(4,\)"):
        merge_state_dicts("linear", [{"w": M1}, {"w": torch.zeros(2)}])
    with pytest.raises(MergeError, match="does not have the same tensors"):
        merge_state_dicts("linear", [{"w": M1}, {"v": M1}])
    with pytest.raises(MergeError, match="density must be in"):
        merge_tensors("ties", [M1, M2], base=BASE, density=0.0)
    with pytest.raises(MergeError, match="unknown merge method"):
        merge_tensors("slerp", [M1, M2])
