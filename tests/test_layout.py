"""oneDNN-packed linears: same results as nn.Linear, the packed path really taken, weights kept in sync."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import tiny_model
from medusa_runtime.layout import MIN_ROWS_ENV, PackedLinear, onednn_packing_available, pack_linears, packed_min_rows

pytestmark = pytest.mark.skipif(not onednn_packing_available(), reason="PyTorch built without oneDNN")


def packed_copy(linear: nn.Linear) -> PackedLinear:
    return PackedLinear.from_linear(linear)


@pytest.mark.parametrize("rows", [1, 2, 5, 32, 33, 200])
def test_packed_linear_matches_linear(rows):
    torch.manual_seed(0)
    linear = nn.Linear(48, 80)
    packed = packed_copy(linear)
    x = torch.randn(1, rows, 48)
    with torch.inference_mode():
        torch.testing.assert_close(packed(x), linear(x), rtol=1e-5, atol=1e-5)
        # a non-contiguous input (a transposed view) gives the same result
        xt = torch.randn(48, rows).t()
        torch.testing.assert_close(packed(xt), linear(xt), rtol=1e-5, atol=1e-5)


@pytest.fixture
def min_rows(monkeypatch):
    """Set MEDUSA_PACKED_MIN_ROWS for one test; the cached choice is cleared before and after."""
    def set_to(value: str | None):
        if value is None:
            monkeypatch.delenv(MIN_ROWS_ENV, raising=False)
        else:
            monkeypatch.setenv(MIN_ROWS_ENV, value)
        packed_min_rows.cache_clear()
    yield set_to
    monkeypatch.delenv(MIN_ROWS_ENV, raising=False)
    packed_min_rows.cache_clear()


@pytest.mark.parametrize("least", [1, 3])
def test_packed_path_is_taken_from_the_chosen_rows_without_autograd_only(monkeypatch, min_rows, least):
    min_rows(str(least))
    linear = packed_copy(nn.Linear(16, 16))
    calls = []
    original = PackedLinear._onednn_linear
    monkeypatch.setattr(PackedLinear, "_onednn_linear", staticmethod(lambda x, *a: calls.append(x.numel() // x.shape[-1]) or original(x, *a)))
    rows = (1, 2, 3, 4, 8, 32, 33)
    with torch.inference_mode():
        for n in rows:
            torch.testing.assert_close(linear(torch.randn(n, 16)).shape, (n, 16))
        linear(torch.randn(1, 2, 16))  # rows count across leading dimensions: 2
    assert calls == [n for n in rows if n >= least] + ([2] if least <= 2 else [])
    with torch.enable_grad():  # training falls back to autograd-capable F.linear
        linear(torch.randn(4, 16, requires_grad=True)).sum().backward()
    assert len(calls) == len([n for n in rows if n >= least]) + (least <= 2)


def test_packed_min_rows_is_measured_once_per_machine_or_read_from_the_environment(min_rows, monkeypatch, tmp_path):
    from medusa_runtime import layout

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    measured = []
    monkeypatch.setattr(layout, "measure_packed_min_rows", lambda: measured.append(1) or 2)
    min_rows(None)
    assert packed_min_rows() == 2 and measured == [1]
    assert json.loads(layout.kernel_cache_file().read_text()) == {layout.machine_key(): 2}
    packed_min_rows.cache_clear()  # a new process on the same machine reads the file
    assert packed_min_rows() == 2 and measured == [1]
    layout.kernel_cache_file().write_text("{not json")
    packed_min_rows.cache_clear()
    assert packed_min_rows() == 2 and measured == [1, 1]  # an unreadable file: measured again and rewritten
    assert json.loads(layout.kernel_cache_file().read_text()) == {layout.machine_key(): 2}
    min_rows("3")
    assert packed_min_rows() == 3
    for bad in ("0", "4", "two", ""):
        min_rows(bad)
        with pytest.raises(ValueError, match=f"{MIN_ROWS_ENV}=.*use 1, 2 or 3"):
            packed_min_rows()


def test_measurement_names_a_row_count():
    from medusa_runtime.layout import measure_packed_min_rows

    assert measure_packed_min_rows(matrices=4, repeats=2) in (1, 2, 3)


def test_pack_linears_keeps_model_outputs_state_dict_and_tied_weights():
    model = tiny_model("llama")
    model.config.tie_word_embeddings = True
    model.get_output_embeddings().weight = model.get_input_embeddings().weight
    keys = list(model.state_dict())
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.inference_mode():
        before = model(ids).logits
    swapped = pack_linears(model)
    assert swapped == 2 * 7 + 1  # 7 linears per layer, 2 layers, and the lm_head
    assert all(type(m) is not nn.Linear for m in model.modules() if isinstance(m, nn.Linear))
    assert list(model.state_dict()) == keys
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, before, rtol=1e-4, atol=1e-4)


def test_packed_copy_follows_load_state_dict_and_dtype_changes():
    torch.manual_seed(1)
    packed = packed_copy(nn.Linear(8, 8))
    other = nn.Linear(8, 8)
    packed.load_state_dict(other.state_dict())
    x = torch.randn(4, 8)
    with torch.inference_mode():
        torch.testing.assert_close(packed(x), other(x))
    packed.double()
    assert packed._packed is None  # not fp32: stock F.linear
    with torch.inference_mode():
        torch.testing.assert_close(packed(x.double()), other.double()(x.double()))
    packed.float()
    assert packed._packed is not None


def test_in_place_weight_edit_is_followed_by_the_packed_copy():
    linear = packed_copy(nn.Linear(16, 24))
    x = torch.randn(3, 16)
    with torch.no_grad():  # what an optimizer step does
        linear.weight.mul_(-2.0)
    with torch.inference_mode():
        torch.testing.assert_close(linear(x), F.linear(x, linear.weight, linear.bias), rtol=1e-5, atol=1e-5)


def test_a_packed_linear_over_an_inference_tensor_works():
    """The heads build their draft-vocabulary linear inside decoding's inference mode."""
    with torch.inference_mode():
        weight = torch.randn(24, 16)  # an inference tensor: no version counter
        linear = nn.Linear(16, 24, bias=False, device="meta")
        linear.weight = nn.Parameter(weight, requires_grad=False)
        packed = packed_copy(linear)
        x = torch.randn(3, 16)
        torch.testing.assert_close(packed(x), F.linear(x, weight), rtol=1e-5, atol=1e-5)
